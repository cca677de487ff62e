"""Radiomics runner: IBSI digital phantom, readers, prefixes, known values."""

from __future__ import annotations

import math
import os
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk
from typer.testing import CliRunner

from deepnomo.cli import app
from deepnomo.radiomics import PRESET_DIR, PRESETS, feature_count, make_extractor, params_file

SHARED = os.environ.get("DEEPNOMO_SHARED")
PHANTOM = Path(SHARED) / "data" / "ibsi_phantom" if SHARED else None

# IBSI features pyradiomics is known not to reproduce on the phantom, with the factor
# that explains the difference (pyradiomics value * factor ~= IBSI value).
N_PHANTOM = 74
COV_FACTOR = math.sqrt(N_PHANTOM / (N_PHANTOM - 1))
EXPECTED_DEVIATIONS = {
    "Minor axis length": ("original_shape_MinorAxisLength", COV_FACTOR,
                          "covariance divided by N, IBSI by N - 1"),
    "Least axis length": ("original_shape_LeastAxisLength", COV_FACTOR,
                          "covariance divided by N, IBSI by N - 1"),
}

REDUCED_PARAMS = """
imageType:
  Original: {}
setting:
  label: 1
  binWidth: 10
featureClass:
  shape: [VoxelVolume, MeshVolume]
  firstorder: [Mean, Maximum, Minimum]
  glcm: [Contrast]
"""


def sig3(x: float) -> float:
    return 0.0 if x == 0 else float(f"{x:.3g}")


def ibsi_comparison(features: pd.Series, prefix: str) -> pd.DataFrame:
    """Every mapped IBSI feature: reference, tolerance, pyradiomics value, match flag."""
    ref = pd.read_csv(PHANTOM / "ibsi1_digital_phantom_reference_values.csv")
    mapping = pd.read_csv(PHANTOM / "ibsi_to_pyradiomics_mapping.csv")
    mapping = mapping[~mapping["relation"].str.startswith("not implemented")]
    rows = []
    for m in mapping.itertuples(index=False):
        sel = (ref["feature_family"] == m.feature_family) & (ref["ibsi_feature"] == m.ibsi_feature)
        if isinstance(m.compare_aggregation, str):
            sel &= ref["aggregation"] == m.compare_aggregation
        r = ref[sel]
        assert len(r) == 1, (m.ibsi_feature, len(r))
        r = r.iloc[0]
        value = float(features[f"{prefix}{m.pyradiomics_output_key}"])
        if m.relation.startswith("offset"):
            value -= 3.0
        elif m.relation.startswith("derived"):
            value -= 1.0
        if r["tolerance"] > 0:
            ok = abs(value - r["value"]) <= r["tolerance"]
        else:
            ok = sig3(value) == r["value"]
        rows.append({"family": m.feature_family, "ibsi_feature": m.ibsi_feature,
                     "key": m.pyradiomics_output_key, "reference": r["value"],
                     "tolerance": r["tolerance"], "value": value, "match": ok})
    return pd.DataFrame(rows)


@pytest.mark.skipif(PHANTOM is None, reason="DEEPNOMO_SHARED not set")
def test_ibsi_phantom_via_cli(tmp_path):
    cases = tmp_path / "cases.csv"
    pd.DataFrame({"patient_id": ["phantom"], "modality": ["CT"],
                  "image": [str(PHANTOM / "phantom.nii.gz")],
                  "mask": [str(PHANTOM / "mask.nii.gz")], "reader": [""]}).to_csv(cases,
                                                                                  index=False)
    out = tmp_path / "features.csv"
    res = CliRunner().invoke(app, ["radiomics", "--cases", str(cases), "--params",
                                   "ibsi_phantom", "--out", str(out), "--workers", "0"])
    assert res.exit_code == 0, res.output
    assert "1 patients x 107 features" in res.output
    table = pd.read_csv(out)
    assert table["patient_id"].tolist() == ["phantom"]
    cmp = ibsi_comparison(table.iloc[0], "CT_")
    assert len(cmp) == 109
    failing = cmp.loc[~cmp["match"], "ibsi_feature"].tolist()
    # every failing feature is a documented expected deviation, and each one does deviate
    assert sorted(failing) == sorted(EXPECTED_DEVIATIONS)
    assert cmp["match"].sum() == 107
    for name, (key, factor, _why) in EXPECTED_DEVIATIONS.items():
        row = cmp.set_index("ibsi_feature").loc[name]
        assert abs(row["value"] - row["reference"]) > row["tolerance"]
        assert abs(row["value"] * factor - row["reference"]) <= row["tolerance"]
        assert row["key"] == key


def test_deviation_table_in_docs_matches_test():
    text = (PRESET_DIR / "IBSI_DEVIATIONS.md").read_text(encoding="utf-8")
    listed = re.findall(r"^\| ([A-Z][^|]+?) \| [A-Z0-9]{4} \| `(original_[^`]+)`", text, re.M)
    assert {n: k for n, k in listed} == {n: v[0] for n, v in EXPECTED_DEVIATIONS.items()}


def test_presets_load():
    for name in PRESETS:
        ex = make_extractor(name)
        assert params_file(name).is_file()
        assert "Original" in ex.enabledImagetypes
    ms = make_extractor("multiscale")
    assert set(ms.enabledImagetypes) == {"Original", "Wavelet", "LoG"}
    assert set(ms.enabledFeatures) == {"shape", "firstorder", "glcm", "glrlm", "glszm",
                                       "gldm", "ngtdm"}
    st = make_extractor("stage2")
    assert st.settings["resampledPixelSpacing"] == [3.0, 3.0, 3.0]
    assert st.settings["binWidth"] == 25
    with pytest.raises(FileNotFoundError, match="neither a file nor a preset"):
        params_file("no_such_preset")


def _cube_case(folder: Path, pid: str, side: int, offset: float, reader_shift: int = 0):
    rng = np.random.default_rng(len(pid) + side)
    img = rng.normal(100 + offset, 10, size=(20, 20, 20)).astype(np.float32)
    msk = np.zeros((20, 20, 20), np.uint8)
    z0 = 5 + reader_shift
    msk[z0:z0 + side, 5:5 + side, 5:5 + side] = 1
    paths = {}
    for name, arr in (("img", img), ("msk", msk)):
        im = sitk.GetImageFromArray(arr)
        im.SetSpacing((1.0, 1.0, 2.0))
        p = folder / f"{pid}_{name}_{offset:g}_{reader_shift}.nii.gz"
        sitk.WriteImage(im, str(p))
        paths[name] = p.name
    return img, msk, paths


def test_two_readers_two_tables_with_prefixes(tmp_path):
    rows, truth = [], {}
    for pid, side in (("p1", 4), ("p2", 6)):
        for reader, shift in (("r1", 0), ("r2", 1)):
            for mod, off in (("T1", 0.0), ("T2", 50.0)):
                img, msk, paths = _cube_case(tmp_path, pid, side, off, shift)
                rows.append({"patient_id": pid, "modality": mod, "image": paths["img"],
                             "mask": paths["msk"], "reader": reader})
                truth[(pid, reader, mod)] = (msk.sum() * 2.0, img[msk > 0].mean())
    pd.DataFrame(rows).to_csv(tmp_path / "cases.csv", index=False)
    (tmp_path / "reduced.yaml").write_text(REDUCED_PARAMS)
    res = CliRunner().invoke(app, ["radiomics", "--cases", str(tmp_path / "cases.csv"),
                                   "--params", str(tmp_path / "reduced.yaml"),
                                   "--out", str(tmp_path / "feat.csv"), "--workers", "0"])
    assert res.exit_code == 0, res.output
    for reader in ("r1", "r2"):
        t = pd.read_csv(tmp_path / f"feat_{reader}.csv")
        assert t["patient_id"].tolist() == ["p1", "p2"]
        assert feature_count(t) == 12 and feature_count(t, "T2") == 6
        for i, pid in enumerate(("p1", "p2")):
            for mod in ("T1", "T2"):
                vol, mean = truth[(pid, reader, mod)]
                assert t.loc[i, f"{mod}_original_shape_VoxelVolume"] == pytest.approx(vol)
                assert t.loc[i, f"{mod}_original_firstorder_Mean"] == pytest.approx(mean,
                                                                                    rel=1e-5)
    assert not (tmp_path / "feat.csv").exists()


def test_multiscale_feature_families(tmp_path):
    rng = np.random.default_rng(0)
    arr = rng.normal(100, 20, (16, 24, 24)).astype(np.float32)
    msk = np.zeros(arr.shape, np.uint8)
    msk[5:11, 7:17, 7:17] = 1
    from deepnomo.radiomics import extract_series

    feats = extract_series(sitk.GetImageFromArray(arr), sitk.GetImageFromArray(msk),
                           make_extractor("multiscale"))
    # 14 shape features once, 93 intensity/texture features per image:
    # original, 8 wavelet decompositions, LoG at 3 scales
    assert len(feats) == 14 + 93 * 12 == 1130
    kinds = pd.Series([k.split("_")[0] for k in feats]).value_counts()
    assert kinds["original"] == 107
    assert sum(v for k, v in kinds.items() if k.startswith("wavelet-")) == 8 * 93
    assert sum(v for k, v in kinds.items() if k.startswith("log-sigma-")) == 3 * 93
    assert {k.split("_")[1] for k in feats} == {"shape", "firstorder", "glcm", "glrlm",
                                                "glszm", "gldm", "ngtdm"}


def test_bias_order_gives_a_scan_under_a_coil_field_the_features_of_the_flat_scan():
    from deepnomo.radiomics import extract_series

    rng = np.random.default_rng(1)
    shape = (16, 32, 32)
    z, y, x = np.indices(shape).astype(float)
    msk = (((x - 15) / 8) ** 2 + ((y - 16) / 7) ** 2 + ((z - 8) / 5) ** 2 <= 1).astype(np.uint8)
    flat = 100 * (1 + 0.05 * rng.standard_normal(shape))
    flat[msk > 0] = 150 * (1 + 0.2 * rng.standard_normal(int(msk.sum())))
    coil = flat * np.exp(0.5 * (x - 15.5) / 15.5 + 0.3 * ((y - 15.5) / 15.5) ** 2)
    ext = make_extractor("quick")

    def feats(arr: np.ndarray, order: int) -> pd.Series:
        img = sitk.GetImageFromArray(arr.astype(np.float32))
        img.SetSpacing((2.0, 2.0, 4.0))
        m = sitk.GetImageFromArray(msk)
        m.CopyInformation(img)
        return pd.Series(extract_series(img, m, ext, bias_order=order))

    ref = feats(flat, 2)
    keys = ["original_firstorder_Mean", "original_firstorder_Variance",
            "original_glcm_Contrast", "original_firstorder_Skewness"]
    rel_before = ((feats(coil, 0)[keys] - ref[keys]) / ref[keys]).abs()
    rel_after = ((feats(coil, 2)[keys] - ref[keys]) / ref[keys]).abs()
    # measured: relative errors 0.74-2.6 as scanned, below 1e-6 corrected (the field is of
    # the fitted order; what differs is a global scale that the normalization removes)
    assert (rel_after < 1e-4).all()
    assert rel_before.min() > 0.5
    shape_keys = [k for k in ref.index if "_shape_" in k]
    assert (feats(coil, 2)[shape_keys] == ref[shape_keys]).all()
