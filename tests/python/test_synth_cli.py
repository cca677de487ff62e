"""``deepnomo synth`` on the command line: success, refusals, nothing half-written."""

import json

import pandas as pd
from typer.testing import CliRunner

from deepnomo.cli import app

runner = CliRunner()


def test_cli_writes_a_recurrent_cohort(tmp_path):
    out = tmp_path / "rec"
    res = runner.invoke(app, ["synth", "--study", "recurrent", "--preset", "quick",
                              "--seed", "5", "--out", str(out)])
    assert res.exit_code == 0, res.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["design"] == "recurrent" and summary["seed"] == 5
    assert summary["cohorts"]["train"]["n"] == 180 and summary["cohorts"]["test"]["n"] == 120
    assert summary["cohorts"]["train"]["events"] >= 55
    cases = pd.read_csv(out / "cases.csv")
    assert set(cases["modality"]) == {"pet", "ct"} and len(cases) == 300 * 2 * 2
    printed = json.loads(res.stdout[res.stdout.index("{"):])
    assert printed["cohorts"] == summary["cohorts"]


def test_cli_refuses_unknown_study_and_non_empty_output(tmp_path):
    res = runner.invoke(app, ["synth", "--study", "lung", "--out", str(tmp_path / "x")])
    assert res.exit_code == 2 and "unknown design 'lung'" in res.output
    assert not (tmp_path / "x").exists()
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("keep")
    res = runner.invoke(app, ["synth", "--study", "t3n1", "--out", str(busy)])
    assert res.exit_code == 2 and "not empty" in res.output and "--overwrite" in res.output
    assert [p.name for p in busy.iterdir()] == ["notes.txt"]
    res = runner.invoke(app, ["synth", "--study", "t3n1", "--preset", "huge",
                              "--out", str(tmp_path / "y")])
    assert res.exit_code == 2 and "unknown preset 'huge'" in res.output
