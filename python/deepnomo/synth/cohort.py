"""Assemble a synthetic study cohort and write it to disk.

:func:`simulate` builds the tables (clinical covariates, endpoints, truth
columns) without images; :func:`write_cohort_dir` renders every patient's
images and writes the whole folder atomically; :func:`generate` does both.

Random streams are keyed by (seed, purpose, patient), so the same seed gives
byte-identical tables and images, and one patient's images do not depend on
any other patient.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import SimpleITK as sitk
from PIL import Image

from deepnomo.bridge.schema import write_cohort
from deepnomo.metrics import harrell_c, median_followup
from deepnomo.synth import clinical as clin
from deepnomo.synth import images as img
from deepnomo.synth.designs import ACQUISITIONS, Design, Preset, SynthError, get_design
from deepnomo.synth.phenotype import imaging_lp, sample_traits, tumor_parameters
from deepnomo.synth.survival import (
    calibrate_scale,
    censoring_times,
    simulate_endpoints,
    survival_probability,
    treatment_lp,
)

HORIZONS = (36, 60)
_STREAM = {"traits": 1, "clinical": 2, "censoring": 3, "endpoints": 4, "images": 5}


@dataclass
class SynthCohort:
    """A simulated cohort before it is written.

    Attributes
    ----------
    table : one row per patient: ids, cohort, center, treatment, covariates,
        endpoints, ``truth_*`` columns.
    manifest : bridge manifest (endpoints, covariate types and levels, cohorts).
    tumors : physical tumor parameters per patient (rows aligned with ``table``).
    scale : Weibull scale of the primary endpoint (shape is ``design.shape``).
    """

    design: Design
    preset_name: str
    preset: Preset
    seed: int
    table: pd.DataFrame
    manifest: dict
    tumors: pd.DataFrame
    scale: float


def _rng(seed: int, purpose: str, *more: int) -> np.random.Generator:
    return np.random.default_rng([seed, _STREAM[purpose], *more])


def _arm_key(arm: str) -> str:
    return "".join(ch if ch.isalnum() else "_" for ch in arm.lower()).strip("_")


def simulate(study: str, preset: str = "quick", seed: int = 0, **overrides) -> SynthCohort:
    """Simulate the tables of one design (no images).

    Parameters
    ----------
    study, preset : design and preset names (see :mod:`deepnomo.synth.designs`).
    seed : non-negative integer.
    **overrides : ``sizes``, ``event_rate``, ``images`` passed to ``get_design``.
    """
    if not isinstance(seed, int | np.integer) or seed < 0:
        raise SynthError(f"seed: must be a non-negative integer, got {seed!r}")
    seed = int(seed)
    design, chosen = get_design(study, preset, **overrides)
    cohort_lab = np.concatenate([[c.label] * c.n for c in chosen.cohorts])
    center = np.concatenate([[ctr] * k for c in chosen.cohorts for ctr, k in c.centers.items()])
    n = cohort_lab.size
    traits = sample_traits(_rng(seed, "traits"), n, pathology="he" in design.modalities)
    tumors = tumor_parameters(traits, design.volume_ml)
    rng = _rng(seed, "clinical")
    sampler = clin.SAMPLERS[design.name]
    extra = {"tumors": tumors} if design.name == "recurrent" else {}
    cl = sampler(rng, center, cohort_lab, traits, **extra)
    if "atypia" in tumors.columns:
        tumors["til_high"] = (cl.table["til_grade"] == "high").to_numpy()

    lp_img = imaging_lp(traits)
    z_pred = traits["z_enhancement"].to_numpy()
    lp_trt = (treatment_lp(design, cl.treatment, z_pred, cl.dose) if design.arms
              else np.zeros(n))
    lp = cl.lp + lp_img + lp_trt
    censor = censoring_times(_rng(seed, "censoring"), n, design)
    scale = calibrate_scale(lp, censor, design.shape, chosen.event_rate)
    endpoints = simulate_endpoints(_rng(seed, "endpoints"), design, lp, censor, scale)

    ids = [f"{design.name}{i + 1:04d}" for i in range(n)]
    table = pd.DataFrame({"patient_id": ids, "cohort": cohort_lab, "center": center})
    levels = list(design.arms) or list(clin.OBSERVED_TREATMENTS.get(design.name, ()))
    if levels:
        table["treatment"] = cl.treatment
    table = pd.concat([table, cl.table.reset_index(drop=True), endpoints], axis=1)
    truth = {"truth_lp": lp, "truth_lp_imaging": lp_img, "truth_lp_clinical": cl.lp}
    if design.arms:
        truth["truth_lp_treatment"] = lp_trt
    for t in HORIZONS:
        truth[f"truth_surv_{t}"] = survival_probability(t, lp, scale, design.shape)
    for arm in design.arms:
        lp_arm = cl.lp + lp_img + treatment_lp(design, np.full(n, arm, dtype=object), z_pred)
        for t in HORIZONS:
            truth[f"truth_surv_{t}_{_arm_key(arm)}"] = survival_probability(
                t, lp_arm, scale, design.shape)
    for col in traits.columns:
        truth[f"truth_{col}"] = traits[col].to_numpy()
    truth["truth_volume_ml"] = tumors["volume_ml"].to_numpy()
    table = pd.concat([table, pd.DataFrame(truth).round(10)], axis=1)

    covariates = dict(cl.covariates)
    if levels:
        covariates = {"treatment": {"type": "factor", "levels": levels,
                                    "description": "treatment received"}, **covariates}
    manifest = {
        "study": design.name,
        "time_unit": "months",
        "endpoints": {name: {"description": desc + (" (primary)" if name == design.primary
                                                     else "")}
                      for name, desc in design.endpoints.items()},
        "covariates": covariates,
        "cohorts": [c.label for c in chosen.cohorts],
    }
    return SynthCohort(design, preset, chosen, seed, table, manifest, tumors, scale)


def _finite(x: float, digits: int) -> float | None:
    return round(float(x), digits) if np.isfinite(x) else None


def cohort_summary(sc: SynthCohort) -> dict:
    """Per-cohort n, events, event rate, median follow-up (reverse KM) and oracle C.

    Undefined figures (no comparable pair, reverse KM above 0.5) are ``None``.
    """
    ep = sc.design.primary
    out = {}
    for label in sc.manifest["cohorts"]:
        d = sc.table[sc.table["cohort"] == label]
        time_, event = d[f"{ep}_time"].to_numpy(), d[f"{ep}_event"].to_numpy()
        out[label] = {
            "n": int(len(d)), "events": int(event.sum()),
            "event_rate": round(float(event.mean()), 4),
            "median_followup": _finite(median_followup(time_, event), 2),
            "oracle_c": {"imaging": _finite(harrell_c(d["truth_lp_imaging"].to_numpy(),
                                                      time_, event), 4),
                         "total": _finite(harrell_c(d["truth_lp"].to_numpy(), time_, event), 4)},
        }
    return out


def _write_nifti(array: np.ndarray, grid: img.Grid, path: Path) -> None:
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(tuple(float(s) for s in grid.spacing))
    image.SetOrigin(tuple(float(o) for o in grid.origin))
    sitk.WriteImage(image, str(path), True)


def _render_patient(sc: SynthCohort, i: int, root: Path) -> list[dict]:
    row = sc.table.iloc[i]
    pid = str(row["patient_id"])
    acq = ACQUISITIONS[str(row["center"])]
    params = sc.tumors.iloc[i].to_dict()
    rng = _rng(sc.seed, "images", i)
    folder = root / "images" / pid
    folder.mkdir(parents=True)
    rel = Path("images") / pid
    rows: list[dict] = []
    volumes = [m for m in sc.design.modalities if m != "he"]
    if volumes:
        grid = img.make_grid(acq, sc.preset.images, sc.design.fov_mm)
        tumor = img.render_tumor(rng, grid, params)
        masks = img.reader_masks(rng, grid, tumor)
        for r, mask in enumerate(masks, start=1):
            _write_nifti(mask, grid, folder / f"mask_r{r}.nii.gz")
        for modality in volumes:
            if modality == "pet":
                array = img.render_pet(rng, grid, tumor, params, acq)
            elif modality == "ct":
                array = img.render_ct(rng, grid, tumor, params, acq)
            else:
                array = img.render_mr(rng, grid, tumor, params, acq, modality)
            _write_nifti(array, grid, folder / f"{modality}.nii.gz")
            rows += [{"patient_id": pid, "modality": modality,
                      "image": str(rel / f"{modality}.nii.gz"),
                      "mask": str(rel / f"mask_r{r}.nii.gz"), "reader": r} for r in (1, 2)]
    if "he" in sc.design.modalities:
        spec = sc.preset.images
        for k in range(1, spec.tiles_per_patient + 1):
            tile = img.render_tile(rng, spec.tile_px, float(params["atypia"]),
                                   bool(params["til_high"]), acq)
            Image.fromarray(tile, "RGB").save(folder / f"he_{k}.png", optimize=False)
            rows.append({"patient_id": pid, "modality": "he", "image": str(rel / f"he_{k}.png"),
                         "mask": None, "reader": None})
    return rows


def _prepare_out(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise SynthError(f"out: {out} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise SynthError(f"out: {out} exists and is not empty; pass overwrite=True "
                         "(--overwrite) to replace it")


def _disk_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


def write_cohort_dir(sc: SynthCohort, out: str | os.PathLike, overwrite: bool = False,
                     progress: Callable[[int, int], None] | None = None) -> dict:
    """Render images and write ``cohort.csv`` (+ manifest), ``cases.csv``, ``images/``,
    ``summary.json`` into ``out``.

    Everything is written into a temporary folder beside ``out`` and renamed at
    the end, so ``out`` is either untouched or complete.

    ``cases.csv`` has one row per (image, reader): ``patient_id``, ``modality``
    (``t1``, ``t2``, ``t1c``, ``pet``, ``ct``), ``image`` and ``mask`` paths
    relative to ``out``, ``reader`` (1 or 2); H&E tiles (``he``) have one row per
    tile with empty ``mask`` and ``reader``. ``summary.json`` holds the design,
    preset, seed, target event rate, Weibull parameters, per-cohort figures
    (:func:`cohort_summary`), ``disk_bytes`` (every file but the summary itself)
    and ``generation_seconds``.

    Returns
    -------
    dict
        The summary written to ``summary.json``.
    """
    out = Path(out)
    _prepare_out(out, overwrite)
    start = time.perf_counter()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.tmp-"))
    try:
        cases: list[dict] = []
        n = len(sc.table)
        for i in range(n):
            cases += _render_patient(sc, i, tmp)
            if progress is not None:
                progress(i + 1, n)
        write_cohort(sc.table, sc.manifest, tmp / "cohort.csv")
        pd.DataFrame(cases, columns=["patient_id", "modality", "image", "mask", "reader"]).astype(
            {"reader": "Int64"}).to_csv(tmp / "cases.csv", index=False)
        summary = {
            "design": sc.design.name, "title": sc.design.title, "preset": sc.preset_name,
            "seed": sc.seed, "primary_endpoint": sc.design.primary,
            "target_event_rate": sc.preset.event_rate,
            "weibull": {"scale": sc.scale, "shape": sc.design.shape},
            "modalities": list(sc.design.modalities),
            "cohorts": cohort_summary(sc),
        }
        summary["disk_bytes"] = _disk_bytes(tmp)
        summary["generation_seconds"] = round(time.perf_counter() - start, 2)
        (tmp / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
        _swap_in(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return summary


def _swap_in(tmp: Path, out: Path) -> None:
    if out.exists():
        trash = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.old-"))
        os.replace(out, trash / "old")
        os.replace(tmp, out)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.replace(tmp, out)


def generate(study: str, preset: str = "quick", seed: int = 0,
             out: str | os.PathLike = "synth", overwrite: bool = False,
             progress: Callable[[int, int], None] | None = None, **overrides) -> dict:
    """Simulate one design and write it to ``out``; returns the summary."""
    _prepare_out(Path(out), overwrite)
    return write_cohort_dir(simulate(study, preset, seed, **overrides), out, overwrite, progress)
