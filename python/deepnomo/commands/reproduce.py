"""``deepnomo reproduce``: re-run study designs end to end and write a report."""

from __future__ import annotations

import time
import traceback
from pathlib import Path

import typer

from deepnomo.reproduce import STUDIES, reproduce_study, write_index
from deepnomo.stages import StageError


def _headline(res: dict) -> str:
    parts = []
    for name, cohorts in (res.get("models") or {}).items():
        cs = [f"{c} {v['c_index']:.3f}" for c, v in cohorts.items()
              if isinstance(v, dict) and v.get("c_index") is not None]
        if cs:
            parts.append(f"{name}: " + ", ".join(cs))
    return "; ".join(parts)


def register(app: typer.Typer) -> None:
    @app.command("reproduce")
    def reproduce(
        study: str = typer.Option("all", help=f"one of {', '.join(STUDIES)}, or 'all'"),
        preset: str = typer.Option("quick", help="quick | paper (tiny: for tests)"),
        seed: int = typer.Option(1, help="seed of the synthetic cohorts and the models"),
        out: Path = typer.Option(Path("results"), help="output folder"),
        device: str = typer.Option("auto", help="where networks train: auto (CUDA when "
                                   "present) | cpu | cuda"),
    ) -> None:
        """Re-run study designs end to end: cohort, signatures, R statistics, report."""
        if preset not in ("quick", "paper", "tiny"):
            raise typer.BadParameter(f"unknown preset {preset!r} (quick | paper | tiny)")
        studies = list(STUDIES) if study == "all" else [study]
        unknown = [s for s in studies if s not in STUDIES]
        if unknown:
            raise typer.BadParameter(f"unknown study '{unknown[0]}'; known: "
                                     f"{', '.join(STUDIES)}")
        from deepnomo.train import resolve_device

        try:
            resolve_device(device)
        except ValueError as exc:
            raise typer.BadParameter(str(exc)) from exc
        failed: dict[str, str] = {}
        start = time.perf_counter()
        for name in studies:
            typer.echo(f"== {name} ({preset} preset, seed {seed})")
            try:
                res = reproduce_study(name, preset, seed, out,
                                      log=lambda s: typer.echo(s, err=True), device=device)
            except Exception as exc:
                # a StageError names the study and stage already; other failures get the study
                why = str(exc) if isinstance(exc, StageError) else f"study '{name}': {exc}"
                failed[name] = why
                typer.echo(f"FAILED: {why}", err=True)
                traceback.print_exception(exc)
                continue
            typer.echo(f"   {_headline(res)}")
            typer.echo(f"   report: {out / name / 'report.html'}")
        index = write_index(out, studies)
        typer.echo(f"index: {index} ({time.perf_counter() - start:.0f} s)")
        if failed:
            for name, why in failed.items():
                typer.echo(f"failed: {name}: {why}", err=True)
            raise typer.Exit(code=1)
