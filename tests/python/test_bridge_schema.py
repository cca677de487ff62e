"""The bridge contract on the Python side: refusals name the column and rows."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from deepnomo.bridge.schema import CohortError, read_cohort, validate_cohort, write_cohort

MANIFEST = {
    "study": "toy",
    "endpoints": {"os": {"description": "overall survival"}},
    "covariates": {
        "age": {"type": "numeric"},
        "male": {"type": "binary"},
        "stage": {"type": "ordered", "levels": ["I", "II", "III"]},
    },
    "signatures": {"sig_dl_t1": {"model": "toy", "config_hash": "abc"}},
}


def toy_table() -> pd.DataFrame:
    return pd.DataFrame({
        "patient_id": ["p1", "p2", "p3", "p4"],
        "cohort": ["train", "train", "internal_test", "internal_test"],
        "os_time": [12.5, 30.0, 7.25, 60.0],
        "os_event": [1, 0, 1, 0],
        "age": [50.0, 61.0, np.nan, 44.0],
        "male": [1, 0, 1, 1],
        "stage": ["I", "III", "II", None],
        "sig_dl_t1": [0.3, -1.2, 2.0, np.nan],
    })


def test_valid_table_roles() -> None:
    roles = validate_cohort(toy_table(), MANIFEST)
    assert roles["endpoints"] == ["os"]
    assert roles["signatures"] == ["sig_dl_t1"]
    assert roles["covariates"] == ["age", "male", "stage"]


@pytest.mark.parametrize(
    ("mutate", "column", "rows"),
    [
        (lambda d: d.assign(patient_id=["p1", "p2", "p2", "p4"]), "patient_id",
         "rows 2 (p2), 3 (p2)"),
        (lambda d: d.drop(columns="cohort"), "cohort", None),
        (lambda d: d.assign(os_event=[1, 2, 0, 1]), "os_event", "rows 2 (p2)"),
        (lambda d: d.assign(os_time=[1.0, -3.0, 2.0, 4.0]), "os_time", "rows 2 (p2)"),
        (lambda d: d.assign(os_time=[1.0, 2.0, np.nan, 4.0]), "os_time", "rows 3 (p3)"),
        (lambda d: d.assign(sig_dl_t1=["a", "b", "c", "d"]), "sig_dl_t1", None),
        (lambda d: d.assign(stage=["I", "IV", "II", "II"]), "stage", "rows 2 (p2)"),
        (lambda d: d.assign(male=[1, 0, 2, 1]), "male", "rows 3 (p3)"),
        (lambda d: d.drop(columns="os_event"), "os_time", None),
    ],
)
def test_bad_tables_are_refused_naming_column_and_rows(mutate, column, rows) -> None:
    with pytest.raises(CohortError) as err:
        validate_cohort(mutate(toy_table()), MANIFEST)
    msg = str(err.value)
    assert f"column '{column}'" in msg
    if rows:
        assert rows in msg


def test_manifest_unknown_key_and_missing_endpoints() -> None:
    with pytest.raises(CohortError, match="unknown key"):
        validate_cohort(toy_table(), {**MANIFEST, "colour": "red"})
    with pytest.raises(CohortError, match="endpoints"):
        validate_cohort(toy_table(), {"covariates": {}})
    with pytest.raises(CohortError, match="os2_time"):
        validate_cohort(toy_table(), {**MANIFEST, "endpoints": {"os": {}, "os2": {}}})


def test_csv_round_trip_keeps_values_and_types(tmp_path) -> None:
    table = toy_table()
    write_cohort(table, MANIFEST, tmp_path / "cohort.csv")
    back, manifest = read_cohort(tmp_path / "cohort.csv")
    assert manifest == MANIFEST
    assert back["os_event"].dtype == np.int64
    np.testing.assert_array_equal(back["os_time"].to_numpy(), table["os_time"].to_numpy())
    np.testing.assert_array_equal(back["sig_dl_t1"].isna(), table["sig_dl_t1"].isna())
    assert list(back["stage"].cat.categories) == ["I", "II", "III"]
    assert back["stage"].cat.ordered
    assert back["stage"].isna().tolist() == [False, False, False, True]


def test_unreadable_files(tmp_path) -> None:
    with pytest.raises(CohortError, match="cannot read"):
        read_cohort(tmp_path / "missing.csv", tmp_path / "missing.yaml")
