"""Validate cohort tables and manifests against ``bridge/cohort_schema.json``.

A cohort table has one row per patient (``patient_id``, ``cohort``, endpoint
pairs ``<name>_time`` / ``<name>_event``, covariates, ``sig_*`` signatures).
The manifest describes endpoints, covariate types and levels, and signature
provenance. The same rules are enforced by the R package's
``validate_cohort()``; every refusal names the column and the first
offending rows (1-based data rows, with their ``patient_id``).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from deepnomo.atomic import atomic_write_text
from deepnomo.paths import schema_path

MAX_ROWS_SHOWN = 5


class CohortError(ValueError):
    """A cohort table or manifest that breaks the bridge contract."""


@lru_cache(maxsize=1)
def load_schema() -> dict[str, Any]:
    """The parsed schema file shared with R."""
    with open(schema_path(), encoding="utf-8") as fh:
        return json.load(fh)


def _rows(df: pd.DataFrame, bad: np.ndarray) -> str:
    idx = np.flatnonzero(np.asarray(bad, dtype=bool))
    shown = idx[:MAX_ROWS_SHOWN]
    if "patient_id" in df.columns:
        ids = df["patient_id"].iloc[shown].astype(str).tolist()
        parts = [f"{i + 1} ({pid})" for i, pid in zip(shown, ids, strict=True)]
    else:
        parts = [str(i + 1) for i in shown]
    more = f" and {len(idx) - len(shown)} more" if len(idx) > len(shown) else ""
    return "rows " + ", ".join(parts) + more


def _fail(column: str, problem: str, df: pd.DataFrame | None = None,
          bad: np.ndarray | None = None) -> None:
    where = f"; {_rows(df, bad)}" if df is not None and bad is not None else ""
    raise CohortError(f"cohort table, column '{column}': {problem}{where}")


def _is_numeric(s: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(s) and not pd.api.types.is_bool_dtype(s)


def _as_float(s: pd.Series) -> np.ndarray:
    return pd.to_numeric(s, errors="coerce").to_numpy(dtype=float, na_value=np.nan)


def validate_manifest(manifest: Mapping[str, Any]) -> None:
    """Check the manifest's keys and covariate declarations.

    Raises
    ------
    CohortError
        On an unknown key, missing ``endpoints``, or a malformed covariate.
    """
    spec = load_schema()["manifest"]
    if not isinstance(manifest, Mapping):
        raise CohortError("manifest: must be a mapping (YAML/JSON object)")
    unknown = sorted(set(manifest) - set(spec["keys"]))
    if unknown:
        raise CohortError(f"manifest: unknown key(s) {unknown}; known: {sorted(spec['keys'])}")
    for key in spec["required"]:
        if key not in manifest or not manifest[key]:
            raise CohortError(f"manifest: required key '{key}' is missing or empty")
    types = load_schema()["covariate_types"]
    for name, cov in (manifest.get("covariates") or {}).items():
        ctype = (cov or {}).get("type")
        if ctype not in types:
            raise CohortError(
                f"manifest: covariate '{name}' has type {ctype!r}; expected one of {types}")
        if ctype in ("factor", "ordered") and not cov.get("levels"):
            raise CohortError(f"manifest: covariate '{name}' of type {ctype} needs 'levels'")


def validate_cohort(df: pd.DataFrame, manifest: Mapping[str, Any]) -> dict[str, list[str]]:
    """Validate a cohort table against the schema and its manifest.

    Parameters
    ----------
    df : pandas.DataFrame, shape (n_patients, n_columns)
    manifest : mapping
        Parsed manifest (see ``bridge/cohort_schema.json``).

    Returns
    -------
    dict
        Column roles: ``endpoints`` (names), ``signatures``, ``covariates``, ``truth``.

    Raises
    ------
    CohortError
        Naming the column and the first offending rows.
    """
    if not isinstance(df, pd.DataFrame):
        raise CohortError(f"cohort table: expected a pandas DataFrame, got {type(df).__name__}")
    validate_manifest(manifest)
    schema = load_schema()
    if len(df) == 0:
        raise CohortError("cohort table: has no rows")
    for col, rule in schema["columns"].items():
        if col not in df.columns:
            if rule["required"]:
                _fail(col, "required column is missing")
            continue
        s = df[col]
        if not rule["missing"]:
            bad = s.isna().to_numpy()
            if bad.any():
                _fail(col, "missing values are not allowed", df, bad)
        if rule.get("unique"):
            bad = s.duplicated(keep=False).to_numpy()
            if bad.any():
                _fail(col, "values must be unique (duplicate patient_id)", df, bad)

    roles: dict[str, list[str]] = {"endpoints": [], "signatures": [], "covariates": [], "truth": []}
    for col in df.columns:
        for pat in schema["patterns"]:
            m = re.match(pat["regex"], col)
            if not m:
                continue
            s = df[col]
            if pat["role"] in ("signature", "truth"):
                if not _is_numeric(s):
                    _fail(col, f"{pat['role']} columns must be numeric, found dtype {s.dtype}")
                roles["signatures" if pat["role"] == "signature" else "truth"].append(col)
                break
            stem = m.group(1)
            partner = f"{stem}_{pat['pair']}"
            if partner not in df.columns:
                _fail(col, f"has no partner column '{partner}'")
            if not _is_numeric(s):
                _fail(col, f"must be numeric, found dtype {s.dtype}",
                      df, pd.to_numeric(s, errors="coerce").isna().to_numpy())
            x = _as_float(s)
            if not pat["missing"] and np.isnan(x).any():
                _fail(col, "missing values are not allowed", df, np.isnan(x))
            if "minimum" in pat and (x < pat["minimum"]).any():
                _fail(col, f"must be >= {pat['minimum']} (negative time)", df, x < pat["minimum"])
            if not np.isfinite(x).all():
                _fail(col, "must be finite", df, ~np.isfinite(x))
            if "allowed" in pat:
                bad = ~np.isin(x, pat["allowed"])
                if bad.any():
                    _fail(col, f"values must be in {pat['allowed']}", df, bad)
            if pat["role"] == "endpoint_time":
                roles["endpoints"].append(stem)
            break

    for name in manifest["endpoints"]:
        for suffix in ("time", "event"):
            if f"{name}_{suffix}" not in df.columns:
                _fail(f"{name}_{suffix}", f"required by manifest endpoint '{name}' but missing")

    for name, cov in (manifest.get("covariates") or {}).items():
        if name not in df.columns:
            _fail(name, "declared in the manifest but missing from the table")
        s = df[name]
        present = s.notna().to_numpy()
        ctype = cov["type"]
        if ctype == "numeric":
            if not _is_numeric(s):
                _fail(name, f"numeric covariate has dtype {s.dtype}",
                      df, present & pd.to_numeric(s, errors="coerce").isna().to_numpy())
        elif ctype == "binary":
            x = _as_float(s)
            bad = present & ~np.isin(x, [0, 1])
            if bad.any():
                _fail(name, "binary covariate must be 0/1", df, bad)
        else:
            levels = [str(v) for v in cov["levels"]]
            vals = s.astype(object).where(s.notna(), None)
            bad = np.array([v is not None and str(v) not in levels for v in vals], dtype=bool)
            if bad.any():
                first = str(vals[np.flatnonzero(bad)[0]])
                _fail(name, f"level '{first}' is not among the manifest levels {levels}", df, bad)
        roles["covariates"].append(name)
    return roles


def read_manifest(path: str | os.PathLike) -> dict[str, Any]:
    """Read a manifest written as YAML or JSON."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise CohortError(f"manifest: cannot read {path}: {exc}") from exc
    data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    validate_manifest(data)
    return data


def manifest_path_for(csv_path: str | os.PathLike) -> Path:
    """``cohort.csv`` -> ``cohort.manifest.yaml`` beside it."""
    csv_path = Path(csv_path)
    return csv_path.with_name(csv_path.stem + ".manifest.yaml")


def apply_types(df: pd.DataFrame, manifest: Mapping[str, Any]) -> pd.DataFrame:
    """Cast columns to the types the manifest declares (factors -> Categorical)."""
    out = df.copy()
    for col in ("patient_id", "cohort", "center"):
        if col in out.columns:
            out[col] = out[col].astype(object).where(out[col].notna(), None)
            out[col] = out[col].map(lambda v: v if v is None else str(v))
    for col in out.columns:
        if col.endswith("_event"):
            out[col] = out[col].astype("int64")
    for name, cov in (manifest.get("covariates") or {}).items():
        if cov["type"] in ("factor", "ordered") and name in out.columns:
            levels = [str(v) for v in cov["levels"]]
            vals = out[name].map(lambda v: None if pd.isna(v) else str(v))
            out[name] = pd.Categorical(vals, categories=levels, ordered=cov["type"] == "ordered")
    return out


def read_cohort(csv_path: str | os.PathLike,
                manifest_path: str | os.PathLike | None = None) -> tuple[pd.DataFrame, dict]:
    """Read ``cohort.csv`` and its manifest, validate, and type the columns."""
    csv_path = Path(csv_path)
    manifest = read_manifest(manifest_path or manifest_path_for(csv_path))
    try:
        df = pd.read_csv(csv_path, dtype={"patient_id": str, "cohort": str, "center": str},
                         keep_default_na=True, na_values=["NA"])
    except (OSError, pd.errors.ParserError) as exc:
        raise CohortError(f"cohort table: cannot read {csv_path}: {exc}") from exc
    validate_cohort(df, manifest)
    return apply_types(df, manifest), manifest


def write_cohort(df: pd.DataFrame, manifest: Mapping[str, Any],
                 csv_path: str | os.PathLike) -> Path:
    """Validate, then write ``cohort.csv`` and ``cohort.manifest.yaml`` atomically.

    Missing values are written as ``NA`` (read by R and pandas alike);
    doubles are written in their shortest round-trip form.
    """
    validate_cohort(df, manifest)
    csv_path = Path(csv_path)
    text = df.to_csv(index=False, na_rep="NA")
    atomic_write_text(csv_path, text)
    atomic_write_text(manifest_path_for(csv_path),
                       yaml.safe_dump(dict(manifest), sort_keys=False))
    return csv_path
