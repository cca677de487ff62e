"""Signature tables and model cards from a locked deep-learning model.

:func:`score_cohort` scores every patient of a cohort table (all cohorts:
training, internal and external tests) with the model as it was locked at the
end of training, and returns

* the signature table: ``patient_id`` and ``sig_dl_<name>`` (log relative
  hazard, or an ensemble's mean standardized one; higher = higher risk),
  checked with the bridge schema's rules, and
* the model card: configuration, seed, training-data hash, model-file hash,
  C-index per cohort, training and scoring time.

:func:`write_signatures` writes both atomically; nothing is written when any
step fails.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from deepnomo.atomic import atomic_write_text
from deepnomo.bridge.schema import validate_cohort
from deepnomo.metrics import harrell_c
from deepnomo.train import MODEL, load_bags, load_model, predict_risk

_NAME = re.compile(r"^[A-Za-z0-9_]+$")


def signature_column(name: str) -> str:
    """``sig_dl_<name>``; ``name`` may hold letters, digits and underscores."""
    if not _NAME.match(name):
        raise ValueError(f"config 'name': {name!r} must be letters, digits or underscores")
    return f"sig_dl_{name}"


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def cohort_metrics(table: pd.DataFrame, cohort: pd.DataFrame, column: str,
                   endpoint: str) -> dict[str, dict[str, float]]:
    """Patients, events and Harrell's C-index of ``column`` per cohort label."""
    merged = cohort[["patient_id", "cohort", f"{endpoint}_time", f"{endpoint}_event"]].merge(
        table, on="patient_id", validate="one_to_one")
    out = {}
    for label, part in merged.groupby("cohort", sort=False):
        out[str(label)] = {
            "n": int(len(part)),
            "events": int(part[f"{endpoint}_event"].sum()),
            "c_index": harrell_c(part[column].to_numpy(), part[f"{endpoint}_time"],
                                         part[f"{endpoint}_event"]),
        }
    return out


def score_cohort(model_dir: str | os.PathLike, cohort: pd.DataFrame,
                 cases_csv: str | os.PathLike,
                 device: str = "cpu") -> tuple[pd.DataFrame, dict[str, Any]]:
    """Score every patient of ``cohort`` with the locked model of ``model_dir``.

    Parameters
    ----------
    model_dir : path
        Folder written by :func:`deepnomo.train.fit` (needs ``model.pt``).
    cohort : DataFrame
        Validated cohort table (``patient_id``, ``cohort``, the model's endpoint).
    cases_csv : path
        Image table (see :func:`deepnomo.train.load_bags`).
    device : str

    Returns
    -------
    table : DataFrame, shape (n_patients, 2)
        ``patient_id`` and ``sig_dl_<name>``, in the cohort table's order.
    card : dict
        The model card (JSON-serializable).
    """
    start = time.time()
    model, cfg, info = load_model(model_dir)
    column = signature_column(cfg.name)
    data = load_bags(cohort, cases_csv, cfg)
    model.to(device)
    risk = predict_risk(model, data, device, tta=cfg.tta)
    table = pd.DataFrame({"patient_id": data.ids, column: risk})
    endpoint = cfg.endpoint
    check = cohort[["patient_id", "cohort", f"{endpoint}_time", f"{endpoint}_event"]].merge(
        table, on="patient_id", validate="one_to_one")
    validate_cohort(check, {"endpoints": {endpoint: {"description": endpoint}},
                            "signatures": {column: {"model": cfg.backbone,
                                                    "config_hash": cfg.hash()}}})
    card = {
        "signature": column,
        "description": f"deep-learning signature ({cfg.backbone}, {cfg.pooling} pooling, "
                       f"{cfg.input} of {', '.join(cfg.modalities)}); " + (
                           "log relative hazard" if cfg.ensemble == 1 else
                           f"mean standardized log relative hazard of a {cfg.ensemble}-fold "
                           "cross-validation ensemble" + (
                               f" ({cfg.repeats} deals, {cfg.members} members)"
                               if cfg.repeats > 1 else "")) + (
                           ", averaged over 8 in-plane flips / turns" if cfg.tta else "")
                       + "; higher = higher risk",
        "endpoint": endpoint,
        "config": cfg.to_dict(),
        "config_hash": cfg.hash(),
        "seed": cfg.seed,
        "data_hash": info["data_hash"],
        "model_sha256": _file_sha256(Path(model_dir) / MODEL),
        "best_epoch": info["best_epoch"],
        "validation_c_index": info["val_c_index"],
        "n_train": len(info["train_ids"]),
        "n_validation": len(info["val_ids"]),
        "ensemble_members": info.get("members", []),
        "metrics": cohort_metrics(table, cohort, column, endpoint),
        "train_seconds": info["train_seconds"],
        "train_device": info.get("device", "cpu"),
        "train_amp": info.get("amp", False),
        "score_seconds": time.time() - start,
        "score_device": str(device),
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "torch": torch.__version__,
    }
    return table, card


def card_path_for(csv_path: str | os.PathLike) -> Path:
    """``signatures.csv`` -> ``signatures.model_card.json`` beside it."""
    p = Path(csv_path)
    return p.with_name(p.stem + ".model_card.json")


def write_signatures(table: pd.DataFrame, card: dict[str, Any],
                     csv_path: str | os.PathLike) -> Path:
    """Write the signature table (CSV) and its model card (JSON) atomically."""
    values = table.drop(columns="patient_id").to_numpy(float)
    if not np.isfinite(values).all():
        raise ValueError("signature table: non-finite scores; nothing written")
    csv_path = Path(csv_path)
    atomic_write_text(card_path_for(csv_path), json.dumps(card, indent=2, default=float))
    atomic_write_text(csv_path, table.to_csv(index=False, float_format="%.17g"))
    return csv_path
