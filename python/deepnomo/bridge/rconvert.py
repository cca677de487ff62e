"""In-process transfer of cohort tables between pandas and R (rpy2).

Column types are mapped explicitly, so that values, missing values, factor
levels and integer/double types survive a round trip:

============================  ===============================
pandas                        R
============================  ===============================
int64 / Int64 (nullable)      integer (NA_integer_)
float64 (NaN)                 double (NA_real_)
bool / boolean                logical (NA)
object / string (None)        character (NA_character_)
Categorical (ordered or not)  factor / ordered with its levels
============================  ===============================

Back from R: integer -> int64 (Int64 when it holds NA), double -> float64,
logical -> bool (boolean when it holds NA), character -> object, factor ->
Categorical with the same levels and order flag.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

_R = None


def r_session() -> Any:
    """The embedded R session (rpy2 ``robjects``), started once, with deepnomo loaded."""
    global _R
    if _R is None:
        # rpy2 prepends R's and the system's library folders to LD_LIBRARY_PATH
        # when it starts R; child processes (worker pools) would then load the
        # system's libpython instead of this interpreter's. R is loaded by then,
        # so the variable is put back as it was.
        saved = os.environ.get("LD_LIBRARY_PATH")
        import rpy2.rinterface_lib.callbacks as callbacks
        import rpy2.robjects as ro

        callbacks.consolewrite_warnerror = lambda s: None  # R messages go to the caller's log
        ro.r("suppressPackageStartupMessages(library(deepnomo))")
        if saved is None:
            os.environ.pop("LD_LIBRARY_PATH", None)
        else:
            os.environ["LD_LIBRARY_PATH"] = saved
        _R = ro
    return _R


def _int_to_r(s: pd.Series, ro: Any) -> Any:
    vals = [None if pd.isna(v) else int(v) for v in s]
    if any(v is not None and abs(v) > 2**31 - 1 for v in vals):
        raise OverflowError(f"column '{s.name}': integer outside R's 32-bit range")
    return ro.IntVector([ro.NA_Integer if v is None else v for v in vals])


def series_to_r(s: pd.Series) -> Any:
    """One pandas column as an R vector."""
    ro = r_session()
    dtype = s.dtype
    if isinstance(dtype, pd.CategoricalDtype):
        levels = [str(c) for c in dtype.categories]
        codes = s.cat.codes.to_numpy()
        vec = ro.IntVector([ro.NA_Integer if c < 0 else int(c) + 1 for c in codes])
        return ro.r["structure"](vec, levels=ro.StrVector(levels),
                                 **{"class": ro.StrVector(
                                     ["ordered", "factor"] if dtype.ordered else ["factor"])})
    if pd.api.types.is_bool_dtype(dtype):
        return ro.BoolVector([ro.NA_Logical if pd.isna(v) else bool(v) for v in s])
    if pd.api.types.is_integer_dtype(dtype):
        return _int_to_r(s, ro)
    if pd.api.types.is_float_dtype(dtype):
        return ro.FloatVector([ro.NA_Real if np.isnan(v) else float(v)
                               for v in s.to_numpy(dtype=float, na_value=np.nan)])
    if pd.api.types.is_object_dtype(dtype) or pd.api.types.is_string_dtype(dtype):
        bad = [v for v in s if not (v is None or (isinstance(v, float) and np.isnan(v))
                                   or isinstance(v, str))]
        if bad:
            raise TypeError(f"column '{s.name}': object column mixes strings with "
                            f"{type(bad[0]).__name__}; convert it first")
        return ro.StrVector([ro.NA_Character if not isinstance(v, str) else v for v in s])
    raise TypeError(f"column '{s.name}': dtype {dtype} has no R counterpart")


def to_r(df: pd.DataFrame) -> Any:
    """A pandas DataFrame as an R ``data.frame`` (explicit, lossless types)."""
    ro = r_session()
    cols = {str(c): series_to_r(df[c]) for c in df.columns}
    rdf = ro.r["data.frame"](**{"check.names": False, "stringsAsFactors": False},
                             **cols) if cols else ro.r("data.frame()")
    return rdf


def _r_vector_to_series(name: str, vec: Any) -> pd.Series:
    ro = r_session()
    rclass = list(ro.r["class"](vec))
    if "factor" in rclass:
        levels = list(ro.r["levels"](vec))
        codes = np.array(ro.r["as.integer"](vec), dtype=object)
        vals = [None if c == ro.NA_Integer else levels[int(c) - 1] for c in codes]
        return pd.Series(pd.Categorical(vals, categories=levels, ordered="ordered" in rclass),
                         name=name)
    rtype = ro.r["typeof"](vec)[0]
    is_na = np.array(ro.r["is.na"](vec), dtype=bool)
    if rtype == "integer":
        raw = np.array(vec, dtype=object)
        if is_na.any():
            return pd.Series(pd.array([None if m else int(v) for v, m in zip(raw, is_na,
                                                                             strict=True)],
                                      dtype="Int64"), name=name)
        return pd.Series(raw.astype("int64"), name=name)
    if rtype == "double":
        vals = np.array(vec, dtype=float)
        vals[is_na] = np.nan
        return pd.Series(vals, name=name)
    if rtype == "logical":
        raw = list(vec)
        if is_na.any():
            return pd.Series(pd.array([None if m else bool(v) for v, m in zip(raw, is_na,
                                                                              strict=True)],
                                      dtype="boolean"), name=name)
        return pd.Series(np.array(raw, dtype=bool), name=name)
    if rtype == "character":
        raw = list(vec)
        return pd.Series([None if m else str(v) for v, m in zip(raw, is_na, strict=True)],
                         name=name, dtype=object)
    raise TypeError(f"R column '{name}' of type {rtype} has no pandas counterpart")


def from_r(rdf: Any) -> pd.DataFrame:
    """An R ``data.frame`` as a pandas DataFrame (inverse of :func:`to_r`)."""
    ro = r_session()
    names = list(ro.r["names"](rdf))
    cols = {n: _r_vector_to_series(n, rdf.rx2(n)) for n in names}
    return pd.DataFrame(cols)


def manifest_to_r(manifest: Mapping[str, Any]) -> Any:
    """A manifest mapping as an R list (through JSON, as R's own reader sees it)."""
    ro = r_session()
    parse = ro.r("function(s) jsonlite::fromJSON(s, simplifyVector = FALSE)")
    return parse(json.dumps(dict(manifest)))
