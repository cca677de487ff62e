"""Cohort runs: failures with reasons, resume, crash recovery, pools, dask, CLI."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk
from typer.testing import CliRunner

from deepnomo.cli import app
from deepnomo.commands.imaging import run_preprocess, run_radiomics
from deepnomo.extract import FAILED_DIR, RESULT_FILE, is_done, load_result, run_tasks

PARAMS = """
imageType:
  Original: {}
setting:
  label: 1
  binWidth: 10
featureClass:
  shape: [VoxelVolume]
  firstorder: [Mean, Maximum]
"""


def square(payload: int, staging: Path) -> dict:
    (staging / "value.txt").write_text(str(payload * payload))
    return {"square": payload * payload, "pid": os.getpid()}


def crash_on_three(payload: int, staging: Path) -> dict:
    if payload == 3:
        os._exit(13)  # the whole worker process dies
    return square(payload, staging)


def fail_on_two(payload: int, staging: Path) -> dict:
    (staging / "partial.txt").write_text("half-written")
    if payload == 2:
        raise ValueError("bad case 2")
    return square(payload, staging)


def test_failures_recorded_nothing_partial_and_resume(tmp_path):
    tasks = {f"c{i}": i for i in range(5)}
    s = run_tasks(tasks, fail_on_two, tmp_path, workers=0, progress=False)
    assert sorted(s.done) == ["c0", "c1", "c3", "c4"] and s.failed == {"c2": "ValueError: bad "
                                                                         "case 2"}
    assert not (tmp_path / "c2").exists()
    assert json.loads((tmp_path / FAILED_DIR / "c2.json").read_text())["reason"] == \
        "ValueError: bad case 2"
    assert (tmp_path / "c4" / "value.txt").read_text() == "16"
    assert load_result(tmp_path, "c4")["result"]["square"] == 16
    mtime = (tmp_path / "c0" / RESULT_FILE).stat().st_mtime_ns
    s2 = run_tasks(tasks, square, tmp_path, workers=0, progress=False)
    assert s2.done == ["c2"] and sorted(s2.skipped) == ["c0", "c1", "c3", "c4"]
    assert not (tmp_path / FAILED_DIR / "c2.json").exists()
    assert (tmp_path / "c0" / RESULT_FILE).stat().st_mtime_ns == mtime
    s3 = run_tasks(tasks, square, tmp_path, workers=0,
                   prefailed={"c1": "duplicate manifest rows"}, progress=False)
    assert s3.failed == {"c1": "duplicate manifest rows"} and len(s3.skipped) == 4


def test_process_pool_crash_loses_only_cases_in_flight(tmp_path):
    tasks = {f"c{i}": i for i in range(6)}
    s = run_tasks(tasks, crash_on_three, tmp_path, workers=1, progress=False)
    assert {"c0", "c1", "c2"} <= set(s.done)
    assert "c3" in s.failed and "worker process died" in s.failed["c3"]
    s2 = run_tasks(tasks, square, tmp_path, workers=2, progress=False)
    assert set(s2.skipped) == set(s.done)
    assert set(s2.done) == set(tasks) - set(s.done) and not s2.failed
    assert all(is_done(tmp_path, k) for k in tasks)
    assert not list((tmp_path / ".staging").glob("*"))
    pids = {load_result(tmp_path, k)["result"]["pid"] for k in s2.done}
    assert os.getpid() not in pids


def test_dask_local_cluster(tmp_path):
    from distributed import LocalCluster

    with LocalCluster(n_workers=1, threads_per_worker=2, processes=False,
                      dashboard_address=None) as cluster:
        s = run_tasks({f"c{i}": i for i in range(4)}, fail_on_two, tmp_path,
                      scheduler=cluster.scheduler_address, progress=False)
    assert sorted(s.done) == ["c0", "c1", "c3"] and list(s.failed) == ["c2"]
    assert [load_result(tmp_path, f"c{i}")["result"]["square"] for i in (0, 1, 3)] == [0, 1, 9]


def _img(arr, spacing=(1.0, 1.0, 1.0), origin=(0.0, 0.0, 0.0)) -> sitk.Image:
    im = sitk.GetImageFromArray(arr)
    im.SetSpacing(spacing)
    im.SetOrigin(origin)
    return im


def _bad_cohort(folder: Path) -> tuple[Path, dict[str, str]]:
    """Good patients plus one patient per kind of bad input; returns manifest and reasons."""
    rng = np.random.default_rng(0)
    rows, expected = [], {}

    def add(pid, img, msk, mod="CT", reader="r1", why=None, img_name=None):
        ip = folder / (img_name or f"{pid}_{mod}_img.nii.gz")
        mp = folder / f"{pid}_{mod}_{reader}_msk.nii.gz"
        if img is not None:
            sitk.WriteImage(img, str(ip))
        sitk.WriteImage(msk, str(mp))
        rows.append({"patient_id": pid, "modality": mod, "image": ip.name, "mask": mp.name,
                     "reader": reader})
        if why:
            expected[pid] = why

    def good_arrays():
        a = rng.normal(100, 10, (12, 16, 16)).astype(np.float32)
        m = np.zeros(a.shape, np.uint8)
        m[3:9, 4:12, 4:12] = 1
        return a, m

    for i in range(3):
        a, m = good_arrays()
        add(f"good{i}", _img(a), _img(m))
    a, m = good_arrays()
    add("empty", _img(a), _img(np.zeros_like(m)), why="empty mask")
    add("label2", _img(a), _img(m * 2), why="label 1 absent")
    m3 = m.copy()
    m3[5, 5, 5] = 3
    add("nonbinary", _img(a), _img(m3), why="non-binary mask")
    an = a.copy()
    an[0, 0, 0] = np.nan
    add("nan", _img(an), _img(m), why="NaN/infinite voxel")
    add("nannrrd", _img(an), _img(m), why="NaN/infinite voxel", img_name="nannrrd.nrrd")
    add("shifted", _img(a), _img(m, origin=(4.0, 0.0, 0.0)), why="geometry mismatch")
    add("coarse", _img(a), resample_mask(_img(m)))  # same extent on another grid: fine
    add("trunc", _img(a), _img(m), why="truncated")
    raw = (folder / "trunc_CT_img.nii.gz").read_bytes()
    (folder / "trunc_CT_img.nii.gz").write_bytes(raw[: len(raw) // 2])
    add("dup", _img(a), _img(m), why="duplicate manifest rows")
    add("dup", _img(a), _img(m))
    manifest = folder / "cases.csv"
    pd.DataFrame(rows).to_csv(manifest, index=False)
    return manifest, expected


def resample_mask(mask: sitk.Image) -> sitk.Image:
    from deepnomo.preprocess import resample

    return resample(mask, (2.0, 2.0, 2.0), "nearest")


def test_radiomics_bad_inputs_recorded_and_exit_codes(tmp_path):
    manifest, expected = _bad_cohort(tmp_path)
    (tmp_path / "p.yaml").write_text(PARAMS)
    out = tmp_path / "feat.csv"
    summary, paths, tables = run_radiomics(manifest, tmp_path / "p.yaml", out, workers=0,
                                           progress=False)
    failed = {k.split("__")[0]: why for k, why in summary.failed.items()}
    assert set(failed) == set(expected)
    for pid, why in expected.items():
        assert why in failed[pid], (pid, failed[pid])
    t = pd.read_csv(out)
    assert t["patient_id"].tolist() == ["coarse", "good0", "good1", "good2"]
    vol = 6 * 8 * 8
    assert t["CT_original_shape_VoxelVolume"].tolist() == [vol] * 4
    # the CLI: non-zero exit with failures, zero with --allow-failures; the rerun resumes
    args = ["radiomics", "--cases", str(manifest), "--params", str(tmp_path / "p.yaml"),
            "--out", str(out), "--workers", "0"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 1
    assert "4 already done (skipped), 8 failed" in res.output
    assert "FAILED empty__r1: CaseError: CT: mask: empty mask" in res.output
    res = CliRunner().invoke(app, args + ["--allow-failures"])
    assert res.exit_code == 0
    assert "reader r1: 4 patients x 3 features (CT: 3)" in res.output
    # bias-corrected features are other features: they keep their own resumable folder
    res = CliRunner().invoke(app, args + ["--allow-failures", "--bias-order", "1"])
    assert res.exit_code == 0 and "4 done, 0 already done (skipped), 8 failed" in res.output
    works = sorted(p.name for p in tmp_path.glob(".feat.work-*"))
    assert len(works) == 2 and works[1] == works[0] + "-bias1"
    with pytest.raises(ValueError, match="bias_order: expected 0 .off. to 3, got 4"):
        run_radiomics(manifest, tmp_path / "p.yaml", out, workers=0, bias_order=4)


def test_preprocess_cli_histogram_fit_then_locked(tmp_path):
    rng = np.random.default_rng(1)
    rows = []
    for i in range(4):
        scale, shift = (1.0, 0.0) if i % 2 == 0 else (2.0, 300.0)
        a = np.zeros((10, 24, 24), np.float32)
        a[2:8, 4:20, 4:20] = rng.normal(100, 15, (6, 16, 16)) * scale + shift
        m = np.zeros(a.shape, np.uint8)
        m[4:6, 8:14, 8:14] = 1
        sitk.WriteImage(_img(a, (0.5, 0.5, 1.0)), str(tmp_path / f"i{i}.nii.gz"))
        sitk.WriteImage(_img(m, (0.5, 0.5, 1.0)), str(tmp_path / f"m{i}.nii.gz"))
        rows.append({"patient_id": f"p{i}", "modality": "MR", "image": f"i{i}.nii.gz",
                     "mask": f"m{i}.nii.gz", "reader": ""})
    pd.DataFrame(rows).to_csv(tmp_path / "cases.csv", index=False)
    (tmp_path / "cfg.yaml").write_text(
        "spacing: [1.0, 1.0, 1.0]\nnormalize: histogram\nhistogram: {fit: true}\n")
    res = CliRunner().invoke(app, ["preprocess", "--cases", str(tmp_path / "cases.csv"),
                                   "--config", str(tmp_path / "cfg.yaml"),
                                   "--out", str(tmp_path / "out"), "--workers", "0"])
    assert res.exit_code == 0, res.output
    out_manifest = pd.read_csv(tmp_path / "out" / "cases.csv")
    assert out_manifest["patient_id"].tolist() == ["p0", "p1", "p2", "p3"]
    rec = json.loads((tmp_path / "out" / "cases" / "p0__r1" / "record.json").read_text())
    steps = [s["step"] for s in rec["series"][0]["steps"]]
    assert steps == ["align_mask", "reorient", "resample", "histogram_standardize"]
    medians = []
    for r in out_manifest.itertuples():
        img = sitk.ReadImage(str(tmp_path / "out" / r.image))
        msk = sitk.ReadImage(str(tmp_path / "out" / r.mask))
        assert img.GetSpacing() == (1.0, 1.0, 1.0) and msk.GetSize() == img.GetSize()
        assert sitk.GetArrayViewFromImage(msk).sum() == 2 * 3 * 3
        medians.append(np.median(sitk.GetArrayViewFromImage(img)[2:8, 2:10, 2:10]))
    # the two "centres" differ by x2 + 300 before; after standardisation medians agree
    assert np.ptp(medians) < 3.0
    # apply the learned landmarks, locked, to a new manifest
    std_file = tmp_path / "out" / "histogram_standardizer.json"
    summary = run_preprocess(tmp_path / "cases.csv",
                             {"spacing": [1.0, 1.0, 1.0], "normalize": "histogram",
                              "histogram": {"landmarks": str(std_file)}},
                             tmp_path / "out2", workers=0, progress=False)
    assert not summary.failed
    a = sitk.ReadImage(str(tmp_path / "out" / out_manifest.loc[1, "image"]))
    b = sitk.ReadImage(str(tmp_path / "out2" / out_manifest.loc[1, "image"]))
    np.testing.assert_array_equal(sitk.GetArrayFromImage(a), sitk.GetArrayFromImage(b))


def test_changed_inputs_are_redone(tmp_path):
    src = tmp_path / "in.txt"
    src.write_text("a")
    from deepnomo.extract import fingerprint

    fp1 = fingerprint([src], {"k": 1})
    s = run_tasks({"c0": 2}, square, tmp_path / "out", workers=0, progress=False,
                  fingerprints={"c0": fp1})
    assert s.done == ["c0"]
    s = run_tasks({"c0": 2}, square, tmp_path / "out", workers=0, progress=False,
                  fingerprints={"c0": fp1})
    assert s.skipped == ["c0"]
    assert fingerprint([src], {"k": 2}) != fp1  # other settings
    src.write_text("bb")
    fp2 = fingerprint([src], {"k": 1})
    assert fp2 != fp1  # other file content (size)
    s = run_tasks({"c0": 3}, square, tmp_path / "out", workers=0, progress=False,
                  fingerprints={"c0": fp2})
    assert s.done == ["c0"] and load_result(tmp_path / "out", "c0")["result"]["square"] == 9


def test_preprocess_landmarks_file_relative_and_missing_modality(tmp_path):
    a = np.zeros((8, 16, 16), np.float32)
    a[2:6, 3:13, 3:13] = np.random.default_rng(2).normal(100, 10, (4, 10, 10))
    m = (a > 0).astype(np.uint8)
    sitk.WriteImage(_img(a), str(tmp_path / "i.nii.gz"))
    sitk.WriteImage(_img(m), str(tmp_path / "m.nii.gz"))
    pd.DataFrame([{"patient_id": "p", "modality": "CT", "image": "i.nii.gz",
                   "mask": "m.nii.gz", "reader": ""}]).to_csv(tmp_path / "c.csv", index=False)
    cfg_dir = tmp_path / "cfg"
    cfg_dir.mkdir()
    (cfg_dir / "lm.json").write_text(json.dumps({"MR": {
        "method": "nyul_udupa", "percentiles": [1, 50, 99], "scale_min": 0, "scale_max": 100,
        "landmarks": [0, 40, 100]}}))
    (cfg_dir / "pre.yaml").write_text("normalize: histogram\nhistogram: {landmarks: lm.json}\n")
    s = run_preprocess(tmp_path / "c.csv", cfg_dir / "pre.yaml", tmp_path / "out", workers=0,
                       progress=False)
    assert s.failed == {"p__r1": "CaseError: CT: no histogram landmarks for this modality "
                                 "(landmarks exist for ['MR'])"}
    assert pd.read_csv(tmp_path / "out" / "cases.csv").empty
