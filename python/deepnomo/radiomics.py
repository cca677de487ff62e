"""Radiomic features with pyradiomics, per case and as wide tables.

Extraction is driven by a pyradiomics parameter file: a path, or the name of a
preset shipped in ``deepnomo/data/radiomics/`` (``multiscale``, ``stage2``,
``ibsi_phantom``). Each case's features are prefixed with its modality
(``<modality>_<pyradiomics key>``, e.g. ``T2_original_glcm_Contrast``); the table
has one row per patient and one table per mask reader.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import SimpleITK as sitk

from deepnomo.io import Case, read_image
from deepnomo.preprocess import (
    CaseError,
    align_mask,
    check_image,
    check_mask,
    polynomial_bias_correct,
)

PRESET_DIR = Path(__file__).resolve().parent / "data" / "radiomics"
PRESETS = ("multiscale", "stage2", "quick", "ibsi_phantom")


def params_file(params: str | Path) -> Path:
    """Path of a parameter file, or of the shipped preset named ``params``."""
    if str(params) in PRESETS:
        return PRESET_DIR / f"{params}.yaml"
    path = Path(params)
    if not path.is_file():
        raise FileNotFoundError(f"params: {params!r} is neither a file nor a preset "
                                f"({', '.join(PRESETS)})")
    return path


def params_digest(params: str | Path) -> str:
    """Short SHA-256 of the parameter file's bytes (identifies a feature configuration)."""
    return hashlib.sha256(params_file(params).read_bytes()).hexdigest()[:12]


def make_extractor(params: str | Path):
    """A pyradiomics ``RadiomicsFeatureExtractor`` configured by ``params`` (quiet logging)."""
    import radiomics
    from radiomics.featureextractor import RadiomicsFeatureExtractor

    radiomics.setVerbosity(logging.ERROR)
    logging.getLogger("radiomics").setLevel(logging.ERROR)
    return RadiomicsFeatureExtractor(str(params_file(params)))


def extract_series(image: sitk.Image, mask: sitk.Image, extractor,
                   tol_mm: float = 0.01, bias_order: int = 0) -> dict[str, float]:
    """Features of one image under one mask.

    The image is checked for NaN voxels, the mask is put on the image grid
    (:func:`deepnomo.preprocess.align_mask`) and checked for emptiness, the label and
    binarity; with ``bias_order`` 1-3 the image is divided by a polynomial bias field
    fitted around the ROI (:func:`deepnomo.preprocess.polynomial_bias_correct`); then
    pyradiomics runs.

    Returns
    -------
    dict
        pyradiomics feature keys (``diagnostics_*`` dropped) -> float.
    """
    label = int(extractor.settings.get("label", 1))
    check_image(image)
    mask = align_mask(image, mask, tol_mm)
    check_mask(mask, label)
    mask = sitk.Cast(mask, sitk.sitkUInt8)
    if bias_order:
        corrected = sitk.GetImageFromArray(polynomial_bias_correct(
            sitk.GetArrayFromImage(image), sitk.GetArrayFromImage(mask) == label, bias_order))
        corrected.CopyInformation(image)
        image = corrected
    try:
        res = extractor.execute(image, mask, label=label)
    except (ValueError, RuntimeError, IndexError) as exc:
        raise CaseError(f"pyradiomics: {exc}") from exc
    out = {k: float(np.asarray(v)) for k, v in res.items() if not k.startswith("diagnostics_")}
    bad = [k for k, v in out.items() if not np.isfinite(v)]
    if bad:
        raise CaseError(f"pyradiomics returned non-finite values for {bad[:3]}")
    return out


def extract_case(case: Case, params: str | Path, bias_order: int = 0) -> dict[str, float]:
    """All series of a case, features prefixed ``<modality>_`` (``bias_order``: see
    :func:`extract_series`).

    Raises
    ------
    deepnomo.io.ImageReadError, deepnomo.preprocess.CaseError
        With the modality in the message.
    """
    extractor = make_extractor(params)
    feats: dict[str, float] = {}
    for s in case.series:
        if s.mask is None:
            raise CaseError(f"{s.modality}: no mask")
        try:
            vals = extract_series(read_image(s.image), read_image(s.mask), extractor,
                                  bias_order=bias_order)
        except ValueError as exc:
            raise type(exc)(f"{s.modality}: {exc}") from exc
        feats.update({f"{s.modality}_{k}": v for k, v in vals.items()})
    return feats


def feature_tables(rows: Sequence[Mapping[str, Any]]) -> dict[str, pd.DataFrame]:
    """Wide feature tables, one per reader.

    Parameters
    ----------
    rows : mappings with ``patient_id``, ``reader`` and ``features`` (name -> value).

    Returns
    -------
    dict
        reader -> DataFrame with ``patient_id`` then the features in sorted order, one
        row per patient (sorted by ``patient_id``).

    Raises
    ------
    ValueError
        When a patient appears twice for a reader or the feature sets differ between
        patients of a reader (naming the patient and the missing features).
    """
    by_reader: dict[str, list[Mapping[str, Any]]] = {}
    for r in rows:
        by_reader.setdefault(str(r["reader"]), []).append(r)
    tables = {}
    for reader, rs in sorted(by_reader.items()):
        names = sorted(rs[0]["features"])
        seen: set[str] = set()
        for r in rs:
            if r["patient_id"] in seen:
                raise ValueError(f"patient_id {r['patient_id']!r}: twice for reader {reader!r}")
            seen.add(r["patient_id"])
            if sorted(r["features"]) != names:
                diff = sorted(set(names) ^ set(r["features"]))[:5]
                raise ValueError(f"patient_id {r['patient_id']!r} (reader {reader!r}): feature "
                                 f"set differs from {rs[0]['patient_id']!r} (e.g. {diff})")
        df = pd.DataFrame([[r["features"][n] for n in names] for r in rs], columns=names)
        df.insert(0, "patient_id", [str(r["patient_id"]) for r in rs])
        tables[reader] = df.sort_values("patient_id", kind="stable").reset_index(drop=True)
    return tables


def table_paths(out: str | Path, readers: Sequence[str]) -> dict[str, Path]:
    """Output path per reader: ``out`` itself for one reader, ``<stem>_<reader>.csv`` else."""
    out = Path(out)
    if len(readers) == 1:
        return {readers[0]: out}
    return {r: out.with_name(f"{out.stem}_{r}{out.suffix or '.csv'}") for r in readers}


def feature_count(table: pd.DataFrame, modality: str | None = None) -> int:
    """Number of feature columns, optionally of one modality (by prefix)."""
    cols = [c for c in table.columns if c != "patient_id"]
    if modality is not None:
        cols = [c for c in cols if c.startswith(f"{modality}_")]
    return len(cols)
