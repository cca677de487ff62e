"""pandas -> R data.frame -> pandas through rpy2 keeps values, NA, levels and types."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from deepnomo.bridge.rconvert import from_r, manifest_to_r, r_session, to_r


@pytest.fixture(scope="module")
def ro():
    return r_session()


def mixed_frame() -> pd.DataFrame:
    return pd.DataFrame({
        "patient_id": ["a", "b", None, "d"],
        "n_int": np.array([1, -2, 3, 2**31 - 1], dtype="int64"),
        "n_int_na": pd.array([1, None, 3, 4], dtype="Int64"),
        "x": [0.1, np.nan, -1e300, 1 / 3],
        "flag": [True, False, True, True],
        "flag_na": pd.array([True, None, False, True], dtype="boolean"),
        "stage": pd.Categorical(["II", "I", None, "III"], categories=["I", "II", "III"],
                                ordered=True),
        "arm": pd.Categorical(["ccrt", "ict", "ccrt", "ict"], categories=["ccrt", "ict"]),
    })


def test_round_trip_is_lossless(ro) -> None:
    df = mixed_frame()
    back = from_r(to_r(df))
    assert list(back.columns) == list(df.columns)
    assert back["n_int"].dtype == np.int64 and back["n_int"].tolist() == df["n_int"].tolist()
    assert str(back["n_int_na"].dtype) == "Int64"
    assert back["n_int_na"].isna().tolist() == [False, True, False, False]
    np.testing.assert_array_equal(back["x"].to_numpy(), df["x"].to_numpy())
    assert back["flag"].dtype == bool
    assert str(back["flag_na"].dtype) == "boolean"
    assert back["patient_id"].tolist() == ["a", "b", None, "d"]
    assert list(back["stage"].cat.categories) == ["I", "II", "III"] and back["stage"].cat.ordered
    assert back["stage"].isna().tolist() == [False, False, True, False]
    assert not back["arm"].cat.ordered and back["arm"].tolist() == df["arm"].tolist()


def test_r_sees_the_right_types_and_na(ro) -> None:
    rdf = to_r(mixed_frame())
    types = dict(zip(ro.r("names")(rdf), ro.r("function(d) sapply(d, typeof)")(rdf), strict=True))
    assert types["n_int"] == "integer" and types["x"] == "double" and types["flag"] == "logical"
    assert ro.r("function(d) sum(is.na(d$x))")(rdf)[0] == 1
    assert ro.r("function(d) is.ordered(d$stage)")(rdf)[0]
    assert list(ro.r("function(d) levels(d$arm)")(rdf)) == ["ccrt", "ict"]
    # NaN in pandas becomes NA (not NaN) in R
    assert ro.r("function(d) sum(is.nan(d$x))")(rdf)[0] == 0


def test_r_side_validates_the_same_table(ro) -> None:
    table = pd.DataFrame({"patient_id": ["p1", "p1"], "cohort": ["train", "train"],
                          "os_time": [1.0, 2.0], "os_event": [1, 0]})
    manifest = manifest_to_r({"endpoints": {"os": {"description": "overall survival"}}})
    from rpy2.rinterface_lib.embedded import RRuntimeError

    with pytest.raises(RRuntimeError, match="column 'patient_id'"):
        ro.r("deepnomo::validate_cohort")(to_r(table), manifest)


def test_mixed_object_column_is_refused(ro) -> None:
    with pytest.raises(TypeError, match="column 'bad'"):
        to_r(pd.DataFrame({"bad": ["a", 1]}))
