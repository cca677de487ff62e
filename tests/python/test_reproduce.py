"""One study design end to end on the tiny preset: numbers in results.json are
checked against direct computations, the report renders in headless Chromium,
and a rerun resumes from the cached stages."""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from deepnomo.bridge.rconvert import r_session
from deepnomo.bridge.schema import read_cohort
from deepnomo.synth import harrell_c

STUDY = "multiscale"


def _run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "deepnomo", "reproduce", *args],
                          capture_output=True, encoding="utf-8", errors="replace", timeout=900)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("results")
    proc = _run_cli("--study", STUDY, "--preset", "tiny", "--seed", "1", "--out", str(out))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return out, proc


def test_results_json_has_every_field_as_numbers(run) -> None:
    out, _ = run
    res = json.loads((out / STUDY / "results.json").read_text())
    for key in ("study", "preset", "seed", "endpoint", "oracle_c", "signatures", "models",
                "comparisons", "cutpoint", "calibration", "timings"):
        assert key in res, key
    assert res["study"] == STUDY and res["preset"] == "tiny" and res["seed"] == 1
    assert set(res["signatures"]) == {"sig_rad_mri", "sig_dl_pathology"}
    for stage in ("synth", "radiomics", "radiomic_signature", "dl_multiscale_pathology",
                  "run_study"):
        assert isinstance(res["timings"][stage], float)
    for model in res["models"].values():
        for cohort in model.values():
            assert isinstance(cohort["c_index"], float)
            assert cohort["ci_lower"] < cohort["c_index"] < cohort["ci_upper"]
    kang = [c for c in res["comparisons"] if c["method"] == "kang"]
    assert len(kang) == 3 * 3  # three models against the clinical one, in three cohorts
    for comp in kang:
        c1 = res["models"][comp["model"]][comp["cohort"]]["c_index"]
        c0 = res["models"][comp["reference"]][comp["cohort"]]["c_index"]
        assert comp["diff"] == pytest.approx(c1 - c0, abs=1e-6)
        assert 0.0 <= comp["p"] <= 1.0
    # this design's follow-up ends before 60 months: that AUC is null, not a number
    assert all(c["diff"] is None for c in res["comparisons"] if c["method"] == "td_auc_60")


def test_signature_c_index_equals_direct_computations(run) -> None:
    out, _ = run
    res = json.loads((out / STUDY / "results.json").read_text())
    table, _ = read_cohort(out / STUDY / "cohort.csv")
    ro = r_session()
    c_index = ro.r("function(s, t, e) as.data.frame(deepnomo::c_index(s, t, e))$estimate")
    t, e = f"{res['endpoint']}_time", f"{res['endpoint']}_event"
    checked = 0
    for sig, cohorts in res["signatures"].items():
        for cohort, stats in cohorts.items():
            part = table[(table["cohort"] == cohort) & table[sig].notna()]
            r_value = c_index(ro.FloatVector(part[sig]), ro.FloatVector(part[t]),
                              ro.IntVector(part[e]))[0]
            assert stats["c_index"] == pytest.approx(r_value, rel=1e-9)
            # an independent implementation (Python, O(n^2) pairs) agrees
            assert stats["c_index"] == pytest.approx(
                harrell_c(part[sig].to_numpy(), part[t].to_numpy(), part[e].to_numpy()),
                abs=1e-9)
            checked += 1
    assert checked == 6
    summary = json.loads(next((out / STUDY / "stages" / "synth").rglob("summary.json"))
                         .read_text())
    for cohort, oracle in summary["cohorts"].items():
        part = table[table["cohort"] == cohort]
        assert res["oracle_c"][cohort]["imaging"] == pytest.approx(
            harrell_c(part["truth_lp_imaging"].to_numpy(), part[t].to_numpy(),
                      part[e].to_numpy()), abs=1e-4)
        assert oracle["oracle_c"]["imaging"] == pytest.approx(
            res["oracle_c"][cohort]["imaging"], abs=1e-4)


def test_signatures_are_locked_from_training(run) -> None:
    """The radiomic signature is the training fit applied unchanged: its scores
    equal the recorded coefficients times the training-standardised features."""
    out, _ = run
    stage = out / STUDY / "stages" / "radiomic_signature"
    card = json.loads((stage / "signature.model_card.json").read_text())
    scores = pd.read_csv(stage / "signature.csv", dtype={"patient_id": str})
    assert len(card["features"]) >= 1
    assert np.isfinite(scores["sig_rad_mri"]).all()
    table, _ = read_cohort(out / STUDY / "cohort.csv")
    assert set(scores["patient_id"]) == set(table["patient_id"])


def test_report_renders_in_headless_chromium(run) -> None:
    out, _ = run
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.fail("Chromium is not installed (make setup installs it)")
    page = (out / STUDY / "report.html").resolve()
    html = page.read_text()
    assert not re.search(r'(src|href)="https?:', html)
    proc = subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--no-first-run", "--enable-logging=stderr", "--v=0",
         "--dump-dom", f"file://{page}"],
        capture_output=True, encoding="utf-8", errors="replace", timeout=120)
    dom = proc.stdout
    for section in ("Baseline characteristics", "Cox regression", "Model performance",
                    "Synthetic truth", "Nomogram", "Calibration", "Risk groups"):
        assert section in dom, section
    n_images = dom.count('<img src="data:image/png;base64,')
    res = json.loads((out / STUDY / "results.json").read_text())
    assert n_images == len(res["figures"]) > 5
    assert 'id="nomo-total"' in dom
    assert not re.search(r"Uncaught|SyntaxError|TypeError", proc.stderr)
    index = (out / "index.html").read_text()
    assert f"{STUDY}/report.html" in index


def test_rerun_resumes_from_cached_stages(run) -> None:
    out, first = run
    before = json.loads((out / STUDY / "results.json").read_text())
    proc = _run_cli("--study", STUDY, "--preset", "tiny", "--seed", "1", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    for stage in ("synth", "radiomics", "radiomic_signature", "dl_multiscale_pathology"):
        assert f"[{STUDY}] {stage}: cached" in proc.stderr
    after = json.loads((out / STUDY / "results.json").read_text())
    assert after["models"] == before["models"]
    assert after["signatures"] == before["signatures"]


def test_unknown_study_fails_with_a_clear_message(tmp_path) -> None:
    proc = _run_cli("--study", "nope", "--out", str(tmp_path))
    assert proc.returncode != 0
    assert "unknown study 'nope'" in proc.stdout + proc.stderr


def test_synth_stage_honours_cohort_sizes(tmp_path) -> None:
    from deepnomo.reproduce import StudyRun, stage_synth

    run = StudyRun("t3n1", "tiny", 3, tmp_path, log=lambda msg: None)
    base, _ = read_cohort(stage_synth(run) / "cohort.csv")
    sized, _ = read_cohort(stage_synth(run, {"train": {"center1": 40}}) / "cohort.csv")
    counts = sized["cohort"].value_counts().to_dict()
    assert counts == {"train": 40, "test": int((base["cohort"] == "test").sum())}
    assert (base["cohort"] == "train").sum() != 40  # a new cohort, not the cached one
    again, _ = read_cohort(stage_synth(run, {"train": {"center1": 40}}) / "cohort.csv")
    pd.testing.assert_frame_equal(again, sized)


def test_dl_stage_takes_auxiliary_targets_from_the_training_radiomics(tmp_path) -> None:
    from deepnomo.feature_targets import feature_targets
    from deepnomo.reproduce import StudyRun, dl_config, stage_dl, stage_synth
    from deepnomo.train import load_bags, load_model

    cfg = dl_config("t3n1_t1", "tiny")
    assert cfg.aux_components > 0  # the shipped t3n1 configs use the auxiliary task
    run = StudyRun("t3n1", "tiny", 3, tmp_path, log=lambda msg: None)
    data_dir = stage_synth(run)
    table, _ = read_cohort(data_dir / "cohort.csv")
    stage = stage_dl(run, data_dir, table, "t3n1_t1")
    features = pd.read_csv(tmp_path / "stages" / "radiomics" / "reader1.csv",
                           dtype={"patient_id": str})
    assert set(features["patient_id"]) == set(table["patient_id"])
    net, loaded, info = load_model(stage / "model")
    assert all(m.aux_head.out_features == cfg.aux_components for m in net.members)
    # targets come from training patients alone, and the model records them in its data hash
    train = load_bags(table, data_dir / "cases.csv", loaded, only_cohort="train")
    aux = feature_targets(features, train.ids, ["t1"], cfg.aux_components)
    assert info["data_hash"] == dataclasses.replace(train, aux=aux).digest()
    test_ids = set(table.loc[table["cohort"] != "train", "patient_id"])
    assert not test_ids & set(info["train_ids"])
    scores = pd.read_csv(stage / "signature.csv", dtype={"patient_id": str})
    assert scores["patient_id"].tolist() == table["patient_id"].tolist()
    assert np.isfinite(scores["sig_dl_t1"]).all()
