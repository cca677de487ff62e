"""Command-line interface: ``deepnomo <command>``.

Each module in :mod:`deepnomo.commands` contributes its commands through a
``register(app)`` function, so every area of the package owns its own CLI.
"""

from __future__ import annotations

import importlib
import pkgutil

import typer

import deepnomo.commands

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="deepnomo: imaging signatures and clinical records to validated nomograms.")


@app.callback()
def _root() -> None:
    """deepnomo: imaging signatures and clinical records to validated nomograms."""


def _register_all() -> None:
    for info in sorted(pkgutil.iter_modules(deepnomo.commands.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"deepnomo.commands.{info.name}")
        module.register(app)


_register_all()


def main() -> None:
    """Entry point of the ``deepnomo`` console script."""
    app()
