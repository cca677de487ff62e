"""ROI shape encoder: learns margin irregularity from 3D masks; joins the MIL network."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
import torch

from deepnomo.explain import grad_cam
from deepnomo.nn.shape import ROIShapeEncoder
from deepnomo.synth.images import plane_wave_field
from deepnomo.train import (
    BagData,
    TrainConfig,
    augment_roi,
    build_model,
    fit,
    load_bags,
    load_model,
    predict_risk,
)

PATCH = (12, 24, 24)


def lobulated_masks(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """3D masks ``(n, 1, *PATCH)`` of tumours ``|x| / R < 1 + a tanh(g(x))`` (the simulator's
    margin, voxels twice as thick as wide) with irregularity ``a`` uniform in [0, 0.3] and
    radius R uniform in 4.5-8 voxels; returns the masks and ``a``."""
    rng = np.random.default_rng(seed)
    z, y, x = np.meshgrid(*(np.arange(s) - s / 2 + 0.5 for s in PATCH), indexing="ij")
    coords = np.stack([x.ravel(), y.ravel(), 2.0 * z.ravel()], axis=1).astype(np.float32)
    irregularity = rng.uniform(0.0, 0.3, n)
    out = []
    for a, radius in zip(irregularity, rng.uniform(4.5, 8.0, n), strict=True):
        lobes = plane_wave_field(rng, coords, 1.3 * radius, waves=10)
        level = np.linalg.norm(coords, axis=1) / radius - 1.0 - a * np.tanh(lobes)
        out.append((level < 0).reshape(PATCH)[None].astype(np.float32))
    return np.stack(out), irregularity


def test_shape_encoder_learns_margin_irregularity_that_volume_does_not_show():
    train, a_train = lobulated_masks(160, seed=0)
    test, a_test = lobulated_masks(80, seed=1)
    torch.manual_seed(0)
    enc = ROIShapeEncoder(width=4)
    head = torch.nn.Linear(enc.out_features, 1)
    opt = torch.optim.Adam([*enc.parameters(), *head.parameters()], lr=1e-2)
    x, y = torch.from_numpy(train), torch.tensor((a_train - 0.15) / 0.09, dtype=torch.float32)
    gen = torch.Generator().manual_seed(0)
    for _ in range(120):
        i = torch.randperm(len(x), generator=gen)[:32]
        loss = ((head(enc(x[i])).squeeze(1) - y[i]) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    enc.eval()
    with torch.no_grad():
        pred = head(enc(torch.from_numpy(test))).squeeze(1).numpy()
    volume = test.sum(axis=(1, 2, 3, 4))
    assert abs(np.corrcoef(np.log(volume), a_test)[0, 1]) < 0.3  # size does not tell it
    assert np.corrcoef(pred, a_test)[0, 1] > 0.8


def test_shape_encoder_output_and_input_checks():
    enc = ROIShapeEncoder(width=2).eval()
    out = enc(torch.zeros(3, 1, *PATCH))  # no ROI at all: finite (log floor)
    assert out.shape == (3, 8) and torch.isfinite(out).all()
    with pytest.raises(ValueError, match=r"roi: expected ROI patches \(n, 1, D, H, W\)"):
        enc(torch.zeros(3, *PATCH))
    with pytest.raises(ValueError, match="width: must be >= 1"):
        ROIShapeEncoder(width=0)


def test_roi_augmentation_moves_the_mask_exactly():
    masks, _ = lobulated_masks(6, seed=2)
    roi = torch.from_numpy(masks)
    cfg = TrainConfig(input="multichannel", modalities=["pet"], roi_patch=list(PATCH))
    out = augment_roi(roi, cfg, torch.Generator().manual_seed(0))
    assert not torch.equal(out, roi)
    for i in range(len(roi)):  # each patch is one of the 16 flips / in-plane swaps of itself
        views = []
        for dims in ((), (1,), (2,), (3,), (1, 2), (1, 3), (2, 3), (1, 2, 3)):
            v = roi[i].flip(dims) if dims else roi[i]
            views += [v, v.transpose(2, 3)]
        assert any(torch.equal(out[i], v) for v in views)
    off = TrainConfig(input="multichannel", modalities=["pet"], roi_patch=list(PATCH), flip=False)
    assert torch.equal(augment_roi(roi, off, torch.Generator().manual_seed(0)), roi)


def test_config_checks_and_unchanged_hash_without_a_shape_encoder():
    with pytest.raises(ValueError, match="config 'roi_patch': a shape encoder needs an ROI mask"):
        TrainConfig(input="tiles", modalities=["he"], roi_patch=[8, 16, 16])
    with pytest.raises(ValueError, match=r"config 'roi_patch': expected three positive ints"):
        TrainConfig(input="slices", modalities=["t1"], roi_patch=[8, 16, 12])
    with pytest.raises(ValueError, match="config 'roi_width': must be >= 1"):
        TrainConfig(input="slices", modalities=["t1"], roi_patch=[8, 16, 16], roi_width=0)
    # a configuration without the encoder keeps the hash it had before the encoder existed
    # (locked models still load): the value this version's predecessor computed
    plain = TrainConfig(input="slices", modalities=["t1"])
    assert plain.hash() == "2d4f262b5619affe"
    with_roi = TrainConfig(input="slices", modalities=["t1"], roi_patch=[8, 16, 16])
    assert with_roi.hash() != plain.hash()
    assert TrainConfig.from_dict({**with_roi.to_dict(), "roi_width": 4}).hash() != with_roi.hash()
    assert TrainConfig(input="slices", modalities=["t1"], noise=0.2).hash() != plain.hash()


def _cases(tmp_path, n: int) -> tuple[pd.DataFrame, np.ndarray]:
    """n patients' PET volumes and lobulated masks on a 2 x 2 x 4 mm grid."""
    import SimpleITK as sitk

    masks, _ = lobulated_masks(n, seed=3)
    rng = np.random.default_rng(4)
    rows = []
    for i, m in enumerate(masks[:, 0]):
        vol = np.zeros((18, 32, 32), np.uint8)
        dz, dy, dx = rng.integers(0, 4, 3)
        vol[dz:dz + PATCH[0], dy:dy + PATCH[1], dx:dx + PATCH[2]] = m
        for name, arr in (("pet", rng.normal(0, 1, vol.shape) + 3 * vol), ("mask", vol)):
            im = sitk.GetImageFromArray(arr.astype(np.float32 if name == "pet" else np.uint8))
            im.SetSpacing((2.0, 2.0, 4.0))
            sitk.WriteImage(im, str(tmp_path / f"p{i}_{name}.nii.gz"))
        rows.append({"patient_id": f"p{i}", "modality": "pet", "image": f"p{i}_pet.nii.gz",
                     "mask": f"p{i}_mask.nii.gz"})
    pd.DataFrame(rows).to_csv(tmp_path / "cases.csv", index=False)
    cohort = pd.DataFrame({"patient_id": [f"p{i}" for i in range(n)], "cohort": "train",
                           "os_time": rng.uniform(5, 50, n), "os_event": rng.integers(0, 2, n)})
    return cohort, masks


def test_roi_patches_are_loaded_centred_and_scored_with_their_bags(tmp_path):
    cohort, masks = _cases(tmp_path, 6)
    cfg = TrainConfig(input="multichannel", modalities=["pet"], endpoint="os", crop_size=16,
                      backbone="efficientnet_lite0", pooling="attention",
                      backbone_args={"width_mult": 0.25, "depth_mult": 0.25, "n_stages": 2,
                                     "head_channels": 8},
                      roi_patch=[16, 30, 30], roi_width=2, dropout=0.0)
    data = load_bags(cohort, tmp_path / "cases.csv", cfg)
    assert len(data.rois) == 6 and data.rois[0].shape == (1, 16, 30, 30)
    for roi, m in zip(data.rois, masks, strict=True):
        assert roi.sum() == m.sum()  # the whole tumour, nothing else
        centre = np.argwhere(roi[0]).mean(axis=0)
        np.testing.assert_allclose(centre, [8, 15, 15], atol=0.5)  # on the patch centre
    digest = data.digest()
    moved = [np.roll(r, 1, axis=3) for r in data.rois]
    assert BagData(data.ids, data.bags, data.time, data.event, rois=moved).digest() != digest
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    # with test-time augmentation, turning every bag and ROI patch a quarter turn in-plane
    # leaves the risk unchanged: bag and ROI views are paired
    tta = predict_risk(model, data, tta=True)
    turned = BagData(data.ids, [np.ascontiguousarray(np.rot90(b, 1, axes=(-2, -1)))
                                for b in data.bags], data.time, data.event,
                     rois=[np.ascontiguousarray(np.rot90(r, 1, axes=(-2, -1)))
                           for r in data.rois])
    np.testing.assert_allclose(predict_risk(model, turned, tta=True), tta, rtol=1e-5, atol=1e-6)
    assert not np.allclose(predict_risk(model, turned), predict_risk(model, data))
    # the ROI patch matters: the same bags with other patients' ROIs score differently
    swapped = BagData(data.ids, data.bags, data.time, data.event, rois=data.rois[::-1])
    assert not np.allclose(predict_risk(model, swapped), predict_risk(model, data))
    plain = BagData(data.ids, data.bags, data.time, data.event)
    with pytest.raises(ValueError, match=r"config 'roi_patch': the shape encoder needs "
                                         r"\[16, 30, 30\] ROI patches"):
        fit(cfg, plain, tmp_path / "m", device="cpu", progress=False)
    with pytest.raises(ValueError, match="data: ROI patches given, but the config has no"):
        fit(dataclasses.replace(cfg, roi_patch=None), data, tmp_path / "m", device="cpu",
            progress=False)
    bag = torch.from_numpy(data.bags[0])
    cam, weights = grad_cam(model, bag, torch.from_numpy(data.rois[0]))
    assert cam.shape == (bag.shape[0], 16, 16) and float(weights.sum()) == pytest.approx(1.0)
    x = torch.cat([bag, bag])
    index = torch.tensor([0] * len(bag) + [1] * len(bag))
    with pytest.raises(ValueError, match="roi: the network has a shape encoder"):
        model(x, index, 2)
    with pytest.raises(ValueError, match="roi: 1 ROI patches for 2 bags"):
        model(x, index, 2, torch.from_numpy(data.rois[0])[None])


def test_3d_patches_carry_roi_patches_through_segmentation_and_cox_training(tmp_path):
    cohort, masks = _cases(tmp_path, 12)
    cohort["os_event"] = 1  # every validation pair comparable
    cfg = TrainConfig(input="patch", modalities=["pet"], endpoint="os", patch_size=[12, 24, 24],
                      backbone="unet3d", backbone_args={"width": 2, "depth": 2},
                      pooling="mean", roi_patch=[16, 30, 30], roi_width=2, epochs=1,
                      min_epochs=1, seg_epochs=1, batch_size=8, seg_batch_size=4, dropout=0.0,
                      val_fraction=0.25)
    data = load_bags(cohort, tmp_path / "cases.csv", cfg, with_masks=True)
    assert data.bags[0].shape == (1, 1, 12, 24, 24) and data.masks[0].shape == (1, 1, 12, 24, 24)
    for roi, m in zip(data.rois, masks, strict=True):
        assert roi.shape == (1, 16, 30, 30) and roi.sum() == m.sum()
    info = fit(cfg, data, tmp_path / "m", device="cpu", progress=False)
    assert [h["phase"] for h in info["history"]] == ["seg", "cox"]
    model, _, _ = load_model(tmp_path / "m")
    risk = predict_risk(model, data, tta=True)
    # each ROI patch turns with its 3D patch under test-time augmentation
    turned = BagData(data.ids, [np.ascontiguousarray(np.rot90(b, 1, axes=(-2, -1)))
                                for b in data.bags], data.time, data.event,
                     rois=[np.ascontiguousarray(np.rot90(r, 1, axes=(-2, -1)))
                           for r in data.rois])
    np.testing.assert_allclose(predict_risk(model, turned, tta=True), risk, rtol=1e-5,
                               atol=1e-6)
    swapped = BagData(data.ids, data.bags, data.time, data.event, rois=data.rois[::-1])
    assert not np.allclose(predict_risk(model, swapped, tta=True), risk)


def test_bad_roi_patches_are_refused():
    ids, bags = ["a", "b"], [np.ones((1, 2, 4, 4), np.float32)] * 2
    rois = [np.zeros((1, 4, 8, 8), np.float32), np.ones((1, 4, 8, 8), np.float32)]
    with pytest.raises(ValueError, match="patient 'a': ROI patch is empty"):
        BagData(ids, bags, [1.0, 2.0], [1, 0], rois=rois)
    with pytest.raises(ValueError, match="rois: 1 ROI patches for 2 patients"):
        BagData(ids, bags, [1.0, 2.0], [1, 0], rois=rois[1:])
    with pytest.raises(ValueError, match=r"patient 'b': ROI patch of shape \(1, 4, 8, 9\)"):
        BagData(ids, bags, [1.0, 2.0], [1, 0],
                rois=[rois[1], np.ones((1, 4, 8, 9), np.float32)])
