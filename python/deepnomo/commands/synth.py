"""``deepnomo synth``: write a synthetic study-shaped cohort with images."""

from __future__ import annotations

import json
from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    @app.command("synth")
    def synth(
        study: str = typer.Option(
            ..., help="design: multiscale | t3n1 | stage2 | recurrent | cptdn"),
        preset: str = typer.Option("quick", help="quick (small, fast) | paper (papers' sizes)"),
        seed: int = typer.Option(0, help="random seed; the same seed gives identical files"),
        out: Path = typer.Option(..., help="output folder (must not exist or be empty)"),
        overwrite: bool = typer.Option(False, help="replace a non-empty output folder"),
    ) -> None:
        """Simulate a study-shaped cohort (tables, images, masks, truth) into OUT."""
        from tqdm import tqdm

        from deepnomo.synth import SynthError, generate

        bar = tqdm(total=0, unit="patient", desc=f"synth {study}", disable=None)

        def progress(done: int, total: int) -> None:
            bar.total = total
            bar.update(done - bar.n)

        try:
            summary = generate(study, preset, seed, out, overwrite=overwrite, progress=progress)
        except SynthError as exc:
            bar.close()
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from exc
        bar.close()
        typer.echo(json.dumps({k: summary[k] for k in
                               ("design", "preset", "seed", "cohorts", "generation_seconds",
                                "disk_bytes")}, indent=2))
