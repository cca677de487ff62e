"""``deepnomo train`` and ``deepnomo score``: deep-learning signatures from images.

``train`` fits a network on the training cohort only (``cohort == "train"``;
the validation share for early stopping is carved from it) and locks it in
``MODEL_DIR/model.pt``. ``score`` applies the locked model to every cohort and
writes the signature table with its model card. Under ``torchrun`` training
runs data-parallel (gloo on CPU, NCCL on CUDA).
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import typer

TRAIN_COHORT = "train"


def _fail(exc: Exception) -> None:
    typer.echo(f"error: {exc}", err=True)
    raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    @app.command("train")
    def train(
        cohort: Path = typer.Option(..., help="cohort.csv (manifest beside it)"),
        cases: Path = typer.Option(..., help="cases.csv: patient_id, modality, image, mask"),
        config: Path = typer.Option(..., help="training configuration (YAML)"),
        out: Path = typer.Option(..., help="model folder (checkpoints and model.pt)"),
        device: str = typer.Option("auto", help="auto | cpu | cuda"),
        resume: bool = typer.Option(False, help="continue from out/last.pt"),
        quiet: bool = typer.Option(False, help="no progress output"),
        aux_features: Path | None = typer.Option(
            None, help="radiomic features (CSV: patient_id, <modality>_<feature>...) whose "
            "principal components are the auxiliary targets of a config with aux_components"),
    ) -> None:
        """Train a deep-learning signature on the training cohort and lock it."""
        import pandas as pd
        import torch

        from deepnomo.bridge.schema import CohortError, read_cohort
        from deepnomo.feature_targets import feature_targets
        from deepnomo.train import (
            ConfigMismatchError,
            TrainConfig,
            TrainingError,
            fit,
            load_bags,
        )

        try:
            cfg = TrainConfig.from_yaml(config)
            table, _ = read_cohort(cohort)
            data = load_bags(table, cases, cfg, with_masks=cfg.seg_epochs > 0,
                             only_cohort=TRAIN_COHORT)
            if (aux_features is None) != (cfg.aux_components == 0):
                raise ValueError("--aux-features: the config's auxiliary task (aux_components "
                                 f"{cfg.aux_components}) needs a feature table" if aux_features
                                 is None else "--aux-features: given, but the config has no "
                                 "auxiliary task (aux_components)")
            if aux_features is not None:
                try:
                    features = pd.read_csv(aux_features, dtype={"patient_id": str})
                except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
                    raise ValueError(f"--aux-features: cannot read {aux_features}: {exc}") from exc
                try:
                    aux = feature_targets(features, data.ids, cfg.modalities, cfg.aux_components)
                except ValueError as exc:
                    raise ValueError(f"--aux-features ({aux_features}): {exc}") from exc
                data = dataclasses.replace(data, aux=aux)
            info = fit(cfg, data, out, device=device, resume=resume, progress=not quiet)
        except (ValueError, FileNotFoundError, CohortError, TrainingError,
                ConfigMismatchError) as exc:
            _fail(exc)
        finally:
            if torch.distributed.is_available() and torch.distributed.is_initialized():
                torch.distributed.destroy_process_group()
        if int(os.environ.get("RANK", "0")) == 0:  # one report under torchrun
            what = ("validation C-index" if cfg.members == 1
                    else f"{cfg.members}-member out-of-fold C-index")
            typer.echo(f"[{cfg.name}] locked model {out / 'model.pt'}: best epoch "
                       f"{info['best_epoch']}, {what} "
                       f"{info['val_c_index']:.3f}, {info['train_seconds']:.0f} s")

    @app.command("score")
    def score(
        model: Path = typer.Option(..., help="model folder written by 'deepnomo train'"),
        cohort: Path = typer.Option(..., help="cohort.csv (manifest beside it)"),
        cases: Path = typer.Option(..., help="cases.csv"),
        out: Path = typer.Option(..., help="signature table to write (CSV)"),
        device: str = typer.Option("cpu", help="auto | cpu | cuda"),
        heatmaps: Path | None = typer.Option(None, help="folder for Grad-CAM PNG overlays, "
                                             "one per patient"),
    ) -> None:
        """Score every cohort with a locked model: signature table + model card."""
        from deepnomo.bridge.schema import CohortError, read_cohort
        from deepnomo.signatures import card_path_for, score_cohort, write_signatures
        from deepnomo.train import ConfigMismatchError, TrainingError, resolve_device

        try:
            table, _ = read_cohort(cohort)
            sig, card = score_cohort(model, table, cases, device=str(resolve_device(device)))
            write_signatures(sig, card, out)
            if heatmaps is not None:
                from deepnomo.explain import save_heatmaps
                from deepnomo.train import load_bags, load_model

                net, cfg, _ = load_model(model)
                save_heatmaps(net, load_bags(table, cases, cfg), heatmaps,
                              device=str(resolve_device(device)))
        except (ValueError, FileNotFoundError, CohortError, TrainingError,
                ConfigMismatchError) as exc:
            _fail(exc)
        summary = ", ".join(f"{k} C {v['c_index']:.3f} (n={v['n']})"
                            for k, v in card["metrics"].items())
        typer.echo(f"{card['signature']}: {summary}; wrote {out} and {card_path_for(out)}")
