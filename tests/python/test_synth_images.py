"""Synthetic cohort folders: files, geometry, readers, determinism, and image-borne signal."""

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk
from PIL import Image

from deepnomo.bridge.schema import read_cohort
from deepnomo.synth import SynthError, generate, harrell_c, simulate
from deepnomo.synth import cohort as cohort_module
from test_synth_designs import cox_fit

TINY = {"multiscale": {"train": {"center1": 4}, "internal_test": {"center1": 2},
                       "external_test": {"center2": 3}},
        "recurrent": {"train": {"center1": 4}, "test": {"center1": 3}}}


@pytest.fixture(scope="module")
def multiscale(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth") / "multiscale"
    summary = generate("multiscale", "quick", seed=7, out=out)
    return out, summary


def _read(path):
    image = sitk.ReadImage(str(path))
    return image, sitk.GetArrayFromImage(image)


def _digests(root: Path) -> dict:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and p.name != "summary.json"}


def test_folder_layout_and_bridge(multiscale):
    out, summary = multiscale
    table, manifest = read_cohort(out / "cohort.csv")
    assert len(table) == 320 and manifest["study"] == "multiscale"
    expected = simulate("multiscale", "quick", seed=7).table
    np.testing.assert_allclose(table["truth_lp"], expected["truth_lp"])
    cases = pd.read_csv(out / "cases.csv")
    assert list(cases.columns) == ["patient_id", "modality", "image", "mask", "reader"]
    mr = cases[cases["modality"] != "he"]
    assert mr.groupby("patient_id").size().eq(6).all()  # t1, t2, t1c x 2 readers
    assert (mr.groupby(["patient_id", "reader"])["mask"].nunique() == 1).all()
    tiles = cases[cases["modality"] == "he"]
    assert tiles.groupby("patient_id").size().ge(2).all()
    assert set(cases["patient_id"]) == set(table["patient_id"])
    for rel in pd.concat([cases["image"], mr["mask"]]).unique():
        assert not Path(rel).is_absolute() and (out / rel).is_file()
    s = json.loads((out / "summary.json").read_text())
    assert s == summary and s["seed"] == 7 and s["preset"] == "quick"
    assert s["cohorts"]["train"]["n"] == 200
    assert s["cohorts"]["train"]["events"] == int(table.loc[table.cohort == "train",
                                                            "ffs_event"].sum())
    assert s["disk_bytes"] == sum(p.stat().st_size for p in out.rglob("*") if p.is_file()
                                  and p.name != "summary.json")


def test_geometry_and_intensity_differ_by_center(multiscale):
    out, _ = multiscale
    table, _ = read_cohort(out / "cohort.csv")
    geometry, background = {}, {}
    for center, group in table.groupby("center"):
        for pid in group["patient_id"].iloc[:5]:
            image, arr = _read(out / "images" / pid / "t1.nii.gz")
            _, mask = _read(out / "images" / pid / "mask_r1.nii.gz")
            geometry.setdefault(center, set()).add((image.GetSpacing(), image.GetSize()))
            background.setdefault(center, []).append(np.median(arr[mask == 0]))
    assert all(len(g) == 1 for g in geometry.values())  # one grid per center
    (sp1, size1), (sp2, size2) = geometry["center1"].pop(), geometry["center2"].pop()
    assert sp1 != sp2 and size1[2] != size2[2]  # spacing and slice count differ
    ratio = np.median(background["center2"]) / np.median(background["center1"])
    assert ratio > 1.2  # intensity scale differs between scanners


def test_zscored_tumour_contrast_still_differs_by_center(multiscale):
    # the volume SD grows with the center's bias field (center 2: 0.25, center 1: 0.15),
    # so a per-volume z-score leaves center 2's tumours less contrasted (why stage2's and
    # cptdn's networks train with +-30% intensity jitter)
    out, _ = multiscale
    table, _ = read_cohort(out / "cohort.csv")
    contrast = {}
    for center, group in table.groupby("center"):
        for pid in group["patient_id"].iloc[:20]:
            _, arr = _read(out / "images" / pid / "t1.nii.gz")
            _, mask = _read(out / "images" / pid / "mask_r1.nii.gz")
            z = (arr - arr.mean()) / arr.std()
            contrast.setdefault(center, []).append(np.median(z[mask > 0]))
    ratio = np.median(contrast["center2"]) / np.median(contrast["center1"])
    assert ratio < 0.8


def test_readers_disagree_slightly_and_masks_measure_volume(multiscale):
    out, _ = multiscale
    table, _ = read_cohort(out / "cohort.csv")
    dice, measured = [], []
    for pid in table["patient_id"].iloc[::4]:
        image, m1 = _read(out / "images" / pid / "mask_r1.nii.gz")
        _, m2 = _read(out / "images" / pid / "mask_r2.nii.gz")
        dice.append(2 * np.sum(m1 & m2) / (m1.sum() + m2.sum()))
        measured.append(0.5 * (m1.sum() + m2.sum()) * np.prod(image.GetSpacing()) / 1000)
    dice = np.array(dice)
    assert 0.85 <= np.median(dice) <= 0.95 and dice.min() > 0.7 and dice.max() < 0.99
    true_ml = table["truth_volume_ml"].to_numpy()[::4]
    assert np.corrcoef(np.log(measured), np.log(true_ml))[0, 1] > 0.95
    assert 0.8 < np.median(np.array(measured) / true_ml) < 1.25


def _tumor_statistics(out: Path, pid: str) -> list[float]:
    image, arr = _read(out / "images" / pid / "t1c.nii.gz")
    _, mask = _read(out / "images" / pid / "mask_r1.nii.gz")
    inside = arr[mask == 1] / np.median(arr[mask == 0])  # relative to the patient's background
    volume = mask.sum() * np.prod(image.GetSpacing())
    return [np.log(volume), inside.mean(), inside.std(), np.mean(inside < 0.7)]


def test_simple_tumor_statistics_recover_part_of_the_signal(multiscale):
    out, _ = multiscale
    table, _ = read_cohort(out / "cohort.csv")
    feats = np.array([_tumor_statistics(out, pid) for pid in table["patient_id"]])
    train = (table["cohort"] == "train").to_numpy()
    feats = (feats - feats[train].mean(0)) / feats[train].std(0)
    time, event = table["ffs_time"].to_numpy(), table["ffs_event"].to_numpy()
    beta = cox_fit(feats[train], time[train], event[train])
    clinical = table["truth_lp_clinical"].to_numpy()
    for rows in (train, ~train):
        c_stats = harrell_c(feats[rows] @ beta, time[rows], event[rows])
        c_oracle = harrell_c(table["truth_lp_imaging"].to_numpy()[rows], time[rows], event[rows])
        c_clin = harrell_c(clinical[rows], time[rows], event[rows])
        assert c_clin + 0.04 < c_stats < c_oracle - 0.01, (c_clin, c_stats, c_oracle)


def test_tiles_show_stain_and_atypia(multiscale):
    out, _ = multiscale
    table, _ = read_cohort(out / "cohort.csv")
    colour, dark = {}, []
    for pid, center in zip(table["patient_id"], table["center"], strict=True):
        tile = np.asarray(Image.open(out / "images" / pid / "he_1.png"))
        assert tile.shape == (64, 64, 3) and tile.dtype == np.uint8
        colour.setdefault(center, []).append(tile.reshape(-1, 3).mean(0))
        dark.append(np.mean(tile.sum(axis=2) < 330))
    c1, c2 = (np.mean(colour[c], axis=0) for c in ("center1", "center2"))
    assert np.abs(c1 - c2).max() > 8  # stain colour differs between centers
    assert np.corrcoef(dark, table["truth_z_pathology"])[0, 1] > 0.3


@pytest.mark.parametrize("study", ["multiscale", "recurrent"])
def test_same_seed_byte_identical_other_seed_differs(tmp_path, study):
    a = generate(study, "quick", 3, tmp_path / "a", sizes=TINY[study])
    b = generate(study, "quick", 3, tmp_path / "b", sizes=TINY[study])
    generate(study, "quick", 4, tmp_path / "c", sizes=TINY[study])
    da, db, dc = (_digests(tmp_path / k) for k in "abc")
    assert da == db and len(da) > 10
    assert set(da) == set(dc) and all(da[k] != dc[k] for k in da if k.endswith(".nii.gz"))
    a.pop("generation_seconds"), b.pop("generation_seconds")
    assert a == b
    if study == "recurrent":
        pet_image, pet = _read(tmp_path / "a" / "images" / "recurrent0001" / "pet.nii.gz")
        ct_image, ct = _read(tmp_path / "a" / "images" / "recurrent0001" / "ct.nii.gz")
        _, mask = _read(tmp_path / "a" / "images" / "recurrent0001" / "mask_r1.nii.gz")
        assert pet.dtype == np.float32 and ct.dtype == np.int16
        assert pet_image.GetSpacing() == ct_image.GetSpacing() and pet.shape == mask.shape
        assert pet[mask == 1].max() > 2 * np.median(pet[mask == 0])


def test_refuses_non_empty_output_and_overwrites_on_request(tmp_path):
    out = tmp_path / "cohort"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    with pytest.raises(SynthError, match="not empty"):
        generate("recurrent", "quick", 1, out, sizes=TINY["recurrent"])
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    generate("recurrent", "quick", 1, out, overwrite=True, sizes=TINY["recurrent"])
    assert not (out / "keep.txt").exists() and (out / "cohort.csv").is_file()
    assert [p.name for p in tmp_path.iterdir()] == ["cohort"]


def test_failure_leaves_nothing_half_written(tmp_path, monkeypatch):
    real = cohort_module._render_patient

    def flaky(sc, i, root):
        if i == 3:
            raise OSError("disk full")
        return real(sc, i, root)

    monkeypatch.setattr(cohort_module, "_render_patient", flaky)
    with pytest.raises(OSError, match="disk full"):
        generate("recurrent", "quick", 1, tmp_path / "cohort", sizes=TINY["recurrent"])
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("study", sorted(TINY) + ["cptdn", "stage2", "t3n1"])
def test_largest_tumors_fit_inside_every_center_grid(study):
    from deepnomo.synth import images
    from deepnomo.synth.designs import ACQUISITIONS

    sc = simulate(study, "quick", seed=2)
    for i in np.argsort(-sc.tumors["volume_ml"].to_numpy())[:6]:
        for acq in ACQUISITIONS.values():
            grid = images.make_grid(acq, sc.preset.images, sc.design.fov_mm)
            tumor = images.render_tumor(np.random.default_rng(i), grid,
                                        sc.tumors.iloc[i].to_dict())
            inside = (tumor.level < 0.1).reshape(grid.shape)
            faces = [inside[0], inside[-1], inside[:, 0], inside[:, -1],
                     inside[:, :, 0], inside[:, :, -1]]
            assert not any(f.any() for f in faces), (study, i, acq.spacing)
