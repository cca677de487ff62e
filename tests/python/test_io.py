"""Case manifests and image readers."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk
from PIL import Image

from deepnomo.io import (
    ImageReadError,
    ManifestError,
    check_manifest,
    manifest_cases,
    read_image,
    read_manifest,
    read_tile,
)


def _volume(seed: int = 0) -> sitk.Image:
    arr = np.random.default_rng(seed).integers(-500, 1500, (6, 9, 11)).astype(np.int16)
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing((0.7, 0.8, 2.5))
    img.SetOrigin((-10.0, 5.0, 30.0))
    return img


def _write_dicom_series(img: sitk.Image, folder: Path) -> None:
    folder.mkdir()
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    uid = "1.2.826.0.1.3680043.2.1125.1.42"
    for k in range(img.GetDepth()):
        sl = img[:, :, k]
        pos = img.TransformIndexToPhysicalPoint((0, 0, k))
        for tag, val in {
            "0008|0060": "CT", "0020|000d": uid + ".1", "0020|000e": uid + ".2",
            "0020|0013": str(k + 1), "0020|0032": "\\".join(f"{p:.6f}" for p in pos),
            "0020|0037": "1\\0\\0\\0\\1\\0", "0028|0030": "0.8\\0.7",
            "0018|0050": "2.5", "0008|0018": f"{uid}.3.{k + 1}",
        }.items():
            sl.SetMetaData(tag, val)
        writer.SetFileName(str(folder / f"slice{k:03d}.dcm"))
        writer.Execute(sl)


@pytest.mark.parametrize("ext", ["nii.gz", "nii", "nrrd", "mha"])
def test_volume_formats_round_trip(tmp_path, ext):
    img = _volume()
    path = tmp_path / f"img.{ext}"
    sitk.WriteImage(img, str(path))
    back = read_image(path)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(back), sitk.GetArrayFromImage(img))
    assert back.GetSpacing() == pytest.approx(img.GetSpacing())
    assert back.GetOrigin() == pytest.approx(img.GetOrigin(), abs=1e-4)


def test_dicom_series_folder(tmp_path):
    img = _volume(1)
    _write_dicom_series(img, tmp_path / "dcm")
    back = read_image(tmp_path / "dcm")
    np.testing.assert_array_equal(sitk.GetArrayFromImage(back), sitk.GetArrayFromImage(img))
    assert back.GetSpacing() == pytest.approx(img.GetSpacing(), abs=1e-4)
    assert back.GetOrigin() == pytest.approx(img.GetOrigin(), abs=1e-4)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ImageReadError, match="no DICOM series"):
        read_image(tmp_path / "empty")


@pytest.mark.parametrize("ext", ["png", "tif"])
def test_tiles(tmp_path, ext):
    rgb = np.random.default_rng(2).integers(0, 256, (24, 32, 3)).astype(np.uint8)
    Image.fromarray(rgb).save(tmp_path / f"t.{ext}")
    np.testing.assert_array_equal(read_tile(tmp_path / f"t.{ext}"), rgb)
    Image.fromarray(rgb[..., 0]).save(tmp_path / f"g.{ext}")
    with pytest.raises(ImageReadError, match="expected an RGB tile"):
        read_tile(tmp_path / f"g.{ext}")


@pytest.mark.parametrize("ext", ["nii.gz", "nii", "nrrd", "mha"])
def test_truncated_files_are_refused(tmp_path, ext):
    path = tmp_path / f"img.{ext}"
    sitk.WriteImage(_volume(), str(path))
    data = path.read_bytes()
    if ext == "nii.gz":  # a gzip stream that ends early
        raw = gzip.decompress(data)
        data = gzip.compress(raw)[: len(gzip.compress(raw)) * 2 // 3]
    else:
        data = data[: len(data) * 2 // 3]
    path.write_bytes(data)
    with pytest.raises(ImageReadError, match=r"img\.(nii|nrrd|mha).*(truncated|unreadable)"):
        read_image(path)


def test_missing_and_unknown_files(tmp_path):
    with pytest.raises(ImageReadError, match="file not found"):
        read_image(tmp_path / "nope.nii.gz")
    (tmp_path / "a.xyz").write_text("x")
    with pytest.raises(ImageReadError, match="unknown image type"):
        read_image(tmp_path / "a.xyz")


def _manifest(tmp_path: Path, rows: list[dict]) -> Path:
    for r in rows:
        for col in ("image", "mask"):
            if r.get(col) and not r[col].startswith("missing"):
                p = tmp_path / r[col]
                p.parent.mkdir(parents=True, exist_ok=True)
                p.write_text("x")
    path = tmp_path / "cases.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def test_manifest_paths_and_checks(tmp_path):
    rows = [
        {"patient_id": "p1", "modality": "T1", "image": "img/p1_t1.nii.gz",
         "mask": "msk/p1_t1.nii.gz", "reader": "r1"},
        {"patient_id": "p1", "modality": "T2", "image": "img/p1_t2.nii.gz",
         "mask": "msk/p1_t2.nii.gz", "reader": "r1"},
        {"patient_id": "p2", "modality": "T1", "image": "img/p2_t1.nii.gz",
         "mask": "msk/p2_t1.nii.gz", "reader": "r1"},  # no T2
        {"patient_id": "p3", "modality": "T1", "image": "img/p3_t1.nii.gz",
         "mask": "msk/p3_t1.nii.gz", "reader": "r1"},
        {"patient_id": "p3", "modality": "T2", "image": "img/p3_t2.nii.gz",
         "mask": "msk/p3_t2.nii.gz", "reader": "r1"},
        {"patient_id": "p3", "modality": "T2", "image": "img/p3_t2b.nii.gz",
         "mask": "msk/p3_t2b.nii.gz", "reader": "r1"},  # duplicate (p3, T2, r1)
        {"patient_id": "p4", "modality": "T1", "image": "missing.nii.gz",
         "mask": "msk/p4_t1.nii.gz", "reader": "r1"},
        {"patient_id": "p4", "modality": "T2", "image": "img/p4_t2.nii.gz",
         "mask": "", "reader": "r1"},
    ]
    path = _manifest(tmp_path, rows)
    df = read_manifest(path)
    assert Path(df.loc[0, "image"]) == tmp_path.resolve() / "img" / "p1_t1.nii.gz"
    assert df["row"].tolist() == list(range(1, 9))
    bad = check_manifest(df)
    assert set(bad) == {"p2", "p3", "p4"}
    assert "missing modality ['T2']" in bad["p2"]
    assert "duplicate manifest rows [5, 6] (modality 'T2', reader 'r1')" in bad["p3"]
    assert "row 7: image file not found" in bad["p4"] and "row 8: no mask path" in bad["p4"]
    assert check_manifest(df, require_mask=False).get("p4", "").count("no mask") == 0
    cases = manifest_cases(df)
    assert [(c.patient_id, c.reader, [s.modality for s in c.series]) for c in cases][0] == \
        ("p1", "r1", ["T1", "T2"])
    assert cases[0].key == "p1__r1"


def test_manifest_errors(tmp_path):
    p = tmp_path / "m.csv"
    p.write_text("patient_id,image\np1,a.nii\n")
    with pytest.raises(ManifestError, match=r"missing column\(s\) \['modality'\]"):
        read_manifest(p)
    p.write_text("patient_id,modality,image\np1,,a.nii\n")
    with pytest.raises(ManifestError, match=r"column 'modality' is empty in rows \[1\]"):
        read_manifest(p)
    with pytest.raises(ManifestError, match="cannot be read"):
        read_manifest(tmp_path / "absent.csv")
    p.write_text("patient_id,modality,image\np1,CT,a.nii\n")
    df = read_manifest(p)
    assert df.loc[0, "reader"] == "r1" and df.loc[0, "mask"] == ""


@pytest.mark.parametrize("ext", ["nii.gz", "nii"])
def test_nifti_nan_voxels_refused(tmp_path, ext):
    # ITK would read these NaN voxels as 0; the reader refuses the file instead
    arr = np.ones((4, 5, 6), np.float32)
    arr[1, 2, 3] = np.nan
    arr[0, 0, 0] = np.inf
    sitk.WriteImage(sitk.GetImageFromArray(arr), str(tmp_path / f"n.{ext}"))
    with pytest.raises(ImageReadError, match="2 NaN/infinite voxel"):
        read_image(tmp_path / f"n.{ext}")
    sitk.WriteImage(sitk.GetImageFromArray(np.nan_to_num(arr, posinf=1.0)),
                    str(tmp_path / f"ok.{ext}"))
    assert sitk.GetArrayFromImage(read_image(tmp_path / f"ok.{ext}")).sum() == 119.0
