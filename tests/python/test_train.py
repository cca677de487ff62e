"""Training loop: learning a known risk, determinism, resume, DDP, bad input."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from deepnomo.metrics import harrell_c
from deepnomo.nn.mil import members
from deepnomo.train import (
    CHECKPOINT,
    MODEL,
    BagData,
    ConfigMismatchError,
    TrainConfig,
    TrainingError,
    augment,
    batch_loss,
    build_model,
    fit,
    load_bags,
    load_model,
    predict_risk,
    process_device,
    resolve_device,
)


def blob_data(n: int, seed: int, size: int = 32, k: int = 3) -> tuple[BagData, np.ndarray]:
    """Bags of noisy images with a dark blob whose radius sets a Weibull hazard.

    Returns the bags and the true log relative hazard of each patient.
    """
    rng = np.random.default_rng(seed)
    radius = rng.uniform(2.0, 8.0, n)
    eta = 0.6 * (radius - 5.0)
    # Weibull(shape 1.5) proportional hazards: S(t) = exp(-(t / 40)^1.5 exp(eta))
    t = 40.0 * (rng.exponential(size=n) / np.exp(eta)) ** (1 / 1.5)
    cens = rng.uniform(10.0, 90.0, n)
    yy, xx = np.mgrid[:size, :size]
    bags = []
    for i in range(n):
        inst = []
        for _ in range(k):
            cy, cx = rng.uniform(size * 0.35, size * 0.65, 2)
            r = radius[i] * rng.uniform(0.8, 1.0)  # sections of the tumour differ in size
            blob = ((yy - cy) ** 2 + (xx - cx) ** 2) <= r ** 2
            img = rng.normal(0.0, 0.3, (size, size)) - 1.5 * blob
            inst.append(img[None].astype(np.float32))
        bags.append(np.stack(inst))
    data = BagData([f"p{seed}_{i:03d}" for i in range(n)], bags, np.minimum(t, cens).round(1),
                   (t <= cens).astype(float))
    return data, eta


SMALL_NET = {"backbone": "resnet18", "pooling": "attention",
             "backbone_args": {"width": 8, "layers": [1, 1, 1], "stem": "small"}}


def small_config(**kw) -> TrainConfig:
    base = dict(name="blob", epochs=6, batch_size=32, lr=3e-3, patience=6, dropout=0.1,
                **SMALL_NET)
    base.update(kw)
    return TrainConfig(**base)


def test_cnn_learns_known_blob_risk_near_oracle(tmp_path):
    train, _ = blob_data(200, seed=1)
    test, truth = blob_data(150, seed=2)
    info = fit(small_config(), train, tmp_path, device="cpu", progress=False)
    model, cfg, saved = load_model(tmp_path)
    c = harrell_c(predict_risk(model, test), test.time, test.event)
    oracle = harrell_c(truth, test.time, test.event)
    assert oracle > 0.7
    assert c >= 0.9 * oracle
    assert saved["val_c_index"] == info["val_c_index"] > 0.6
    assert len(info["history"]) == cfg.epochs and set(info["val_ids"]).isdisjoint(info["train_ids"])


def test_concordance_index_matches_r_survival():
    from deepnomo.bridge.rconvert import from_r, r_session

    ro = r_session()
    d = from_r(ro.r("survival::lung"))
    d = d.dropna(subset=["ph.karno"])
    ref = float(ro.r("""function() { d <- survival::lung[!is.na(survival::lung$ph.karno), ]
        survival::concordance(survival::Surv(time, status) ~ ph.karno, data = d,
                              reverse = TRUE)$concordance }""")()[0])
    ours = harrell_c(d["ph.karno"].to_numpy(), d["time"].to_numpy(),
                             (d["status"] == 2).to_numpy(float))
    assert ours == pytest.approx(ref, abs=1e-12)


def test_resume_after_interruption_gives_identical_weights(tmp_path):
    data, _ = blob_data(48, seed=3, size=16, k=2)
    cfg = small_config(epochs=4, batch_size=12, patience=10)
    fit(cfg, data, tmp_path / "full", device="cpu", progress=False)

    def interrupt(record):
        if record["epoch"] == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fit(cfg, data, tmp_path / "cut", device="cpu", progress=False, callback=interrupt)
    assert not (tmp_path / "cut" / MODEL).exists()
    assert torch.load(tmp_path / "cut" / CHECKPOINT, weights_only=False)["epoch"] == 2
    info = fit(cfg, data, tmp_path / "cut", device="cpu", progress=False, resume=True)
    assert [h["epoch"] for h in info["history"]] == [1, 2, 3, 4]
    full = torch.load(tmp_path / "full" / MODEL, weights_only=False)
    cut = torch.load(tmp_path / "cut" / MODEL, weights_only=False)
    for key, value in full["model"].items():
        assert torch.equal(value, cut["model"][key]), key
    assert full["history"] == cut["history"]
    with pytest.raises(ConfigMismatchError, match=r"differing keys: \['lr'\]"):
        fit(small_config(epochs=4, batch_size=12, patience=10, lr=1e-2), data, tmp_path / "cut",
            device="cpu", progress=False, resume=True)


def test_diverging_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
    data, _ = blob_data(40, seed=4, size=16, k=2)

    def poison(record):  # the inputs blow up after the first epoch
        for bag in data.bags:
            bag *= 1e38

    with pytest.raises(TrainingError, match="epoch 2"):
        fit(small_config(epochs=3, batch_size=10), data, tmp_path, device="cpu",
            progress=False, callback=poison)
    assert torch.load(tmp_path / CHECKPOINT, weights_only=False)["epoch"] == 1
    assert not (tmp_path / MODEL).exists()
    with pytest.raises(FileNotFoundError, match="training did not finish"):
        load_model(tmp_path)


def test_bad_training_input_is_refused():
    data, _ = blob_data(20, seed=5, size=16, k=2)
    bags = [b.copy() for b in data.bags]
    bags[3][0, 0, 2, 2] = np.nan
    with pytest.raises(ValueError, match=f"patient '{data.ids[3]}': image crops contain NaN"):
        BagData(data.ids, bags, data.time, data.event)
    with pytest.raises(ValueError, match=f"patient '{data.ids[0]}': bag with zero instances"):
        BagData(data.ids, [np.zeros((0, 1, 16, 16), np.float32)] + data.bags[1:],
                data.time, data.event)
    no_events = BagData(data.ids, data.bags, data.time, np.zeros(20))
    with pytest.raises(ValueError, match="too few events"):
        fit(small_config(), no_events, "/nonexistent-never-written", device="cpu")
    with pytest.raises(ValueError, match="unknown key"):
        TrainConfig.from_dict({"epochs": 3, "learning_rate": 0.1})
    with pytest.raises(ValueError, match="input"):
        TrainConfig(input="video")
    with pytest.raises(ValueError, match="'min_epochs': 4 exceeds epochs 3"):
        TrainConfig(epochs=3, min_epochs=4)
    with pytest.raises(ValueError, match="pool 'roi_stats' needs input 'multichannel'"):
        TrainConfig(input="slices", backbone_args={"pool": "roi_stats"})
    with pytest.raises(ValueError, match="or 'patch' with backbone 'unet3d'"):
        TrainConfig(input="patch", backbone="resnet18", backbone_args={"pool": "roi_stats"})
    with pytest.raises(ValueError, match="'seg_lr': set without segmentation epochs"):
        TrainConfig(backbone="unet3d", input="patch", seg_lr=0.01)
    with pytest.raises(ValueError, match="'seg_batch_size': must be positive, got 0"):
        TrainConfig(backbone="unet3d", input="patch", seg_epochs=2, seg_batch_size=0)
    with pytest.raises(ValueError, match="'slice_interpolation': expected 'linear' or 'nearest'"):
        TrainConfig(slice_interpolation="bspline")


def test_device_names_are_checked():
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(ValueError, match="device: expected 'auto', 'cpu', 'cuda' or 'cuda:N', "
                                         "got 'tpu'"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="'cuda:1' requested but CUDA is not available"):
            resolve_device("cuda:1")
        assert resolve_device("auto") == torch.device("cpu")


def test_each_torchrun_process_takes_its_own_gpu(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_RANK", "2")
    assert process_device(torch.device("cuda")) == torch.device("cuda", 2)
    assert process_device(torch.device("cuda", 1)) == torch.device("cuda", 1)  # named: kept
    assert process_device(torch.device("cpu")) == torch.device("cpu")
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert process_device(torch.device("cuda")) == torch.device("cuda")


def test_config_yaml_round_trip_and_hash(tmp_path):
    cfg = small_config(epochs=7)
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg.to_dict()))
    back = TrainConfig.from_yaml(path)
    assert back == cfg and back.hash() == cfg.hash()
    assert small_config(epochs=8).hash() != cfg.hash()


def test_default_configs_build_their_networks():
    from deepnomo.paths import PACKAGE_DIR

    files = sorted((PACKAGE_DIR / "data" / "dl").glob("*.yaml"))
    assert len(files) >= 5
    for f in files:
        cfg = TrainConfig.from_yaml(f)
        model = build_model(cfg)
        nets = members(model)
        assert len(nets) == cfg.ensemble
        assert sum(p.numel() for p in nets[0].parameters()) < 3_000_000, f.name


def test_augmentation_is_reproducible_and_label_preserving():
    x = torch.randn(4, 1, 16, 16)
    cfg = small_config()
    a = augment(x, cfg, torch.Generator().manual_seed(0))
    b = augment(x, cfg, torch.Generator().manual_seed(0))
    assert torch.equal(a, b) and not torch.equal(a, x)
    flips = small_config(rotate_deg=0.0, intensity=0.0, blur=0.0)
    y = augment(x, flips, torch.Generator().manual_seed(1))
    for i in range(4):  # each instance is one of the four flips of itself
        assert any(torch.equal(y[i], x[i].flip(dims)) if dims else torch.equal(y[i], x[i])
                   for dims in ((), (1,), (2,), (1, 2)))
    const = torch.full((2, 1, 8, 8, 8), 3.0)
    z = augment(const, small_config(intensity=0.0), torch.Generator().manual_seed(2))
    torch.testing.assert_close(z, const)  # rotation, flips and blur keep a constant volume


def test_augmentation_leaves_the_roi_channel_a_region():
    x = torch.randn(6, 3, 16, 16)
    x[:, 2] = (torch.rand(6, 16, 16) < 0.3).float()  # ROI channel of PET/CT/ROI input
    jitter = small_config(input="multichannel", modalities=["pet", "ct"], flip=False,
                          rotate_deg=0.0, intensity=0.5, blur=2.0)
    y = augment(x, jitter, torch.Generator().manual_seed(3))
    assert torch.equal(y[:, 2], x[:, 2])  # no jitter or blur: still exactly 0/1
    assert not torch.allclose(y[:, :2], x[:, :2], atol=0.05)  # the images are changed
    geometric = dataclasses.replace(jitter, flip=True, intensity=0.0, blur=0.0)
    z = augment(x, geometric, torch.Generator().manual_seed(4))
    for i in range(6):  # flips move the ROI with its image
        views = [x[i].flip(d) if d else x[i] for d in ((), (1,), (2,), (1, 2))]
        assert any(torch.equal(z[i], v) for v in views)
    same = augment(x, dataclasses.replace(jitter, input="slices", modalities=["pet"]),
                   torch.Generator().manual_seed(3))
    assert not torch.equal(same[:, 2], x[:, 2])  # other inputs jitter every channel
    patches = torch.randn(2, 3, 8, 16, 16)  # two sequences and the ROI (U-Net ROI pooling)
    patches[:, 2] = (torch.rand(2, 8, 16, 16) < 0.3).float()
    roi_pooled = small_config(input="patch", backbone="unet3d", modalities=["t1", "t2"],
                              backbone_args={"width": 4, "depth": 2, "pool": "roi_stats"},
                              flip=False, rotate_deg=0.0, intensity=0.5, blur=2.0)
    y = augment(patches, roi_pooled, torch.Generator().manual_seed(3))
    assert torch.equal(y[:, 2], patches[:, 2])
    assert not torch.allclose(y[:, :2], patches[:, :2], atol=0.05)


def test_noise_augmentation_is_white_with_a_uniform_sd_per_instance():
    x = torch.zeros(400, 2, 16, 16)
    x[:, 1] = (torch.rand(400, 16, 16) < 0.3).float()  # ROI channel
    cfg = small_config(input="multichannel", modalities=["pet"], flip=False, rotate_deg=0.0,
                       intensity=0.0, blur=0.0, noise=0.6)
    y = augment(x, cfg, torch.Generator().manual_seed(5))
    assert torch.equal(y[:, 1], x[:, 1])  # the ROI stays a region
    sd = y[:, 0].flatten(1).std(dim=1)
    # SD uniform in [0, 0.6]: mean 0.3, quartiles 0.15 / 0.45 (sampling error ~0.01-0.02)
    assert abs(float(sd.mean()) - 0.3) < 0.03
    q = torch.quantile(sd, torch.tensor([0.25, 0.75]))
    assert abs(float(q[0]) - 0.15) < 0.04 and abs(float(q[1]) - 0.45) < 0.04
    assert float(sd.max()) < 0.6 * 1.25
    z = y[:, 0] / sd.clamp_min(1e-6).view(-1, 1, 1)
    lag1 = float((z[:, :, 1:] * z[:, :, :-1]).mean())  # neighbours uncorrelated: white
    assert abs(lag1) < 0.02
    quiet = augment(x, dataclasses.replace(cfg, noise=0.0), torch.Generator().manual_seed(5))
    assert torch.equal(quiet, x)
    with pytest.raises(ValueError, match="'noise'"):
        small_config(noise=-0.1)


def test_tiles_are_loaded_and_ids_checked(tmp_path):
    from PIL import Image

    rows = []
    for pid, n in (("a", 2), ("b", 3)):
        for j in range(n):
            name = f"{pid}_{j}.png"
            Image.fromarray(np.full((20, 20, 3), 40 * j, np.uint8)).save(tmp_path / name)
            rows.append({"patient_id": pid, "modality": "HE", "image": name, "mask": "",
                         "reader": None})  # tiles have no reader
    pd.DataFrame(rows).to_csv(tmp_path / "cases.csv", index=False)
    cohort = pd.DataFrame({"patient_id": ["a", "b"], "cohort": ["train", "test"],
                           "os_time": [5.0, 7.0], "os_event": [1, 0]})
    cfg = TrainConfig(input="tiles", modalities=["HE"], endpoint="os", crop_size=10)
    data = load_bags(cohort, tmp_path / "cases.csv", cfg)
    assert [b.shape for b in data.bags] == [(2, 3, 10, 10), (3, 3, 10, 10)]
    assert data.bags[1][2].max() == pytest.approx(80 / 255)
    only = load_bags(cohort, tmp_path / "cases.csv", cfg, only_cohort="train")
    assert only.ids == ["a"]
    with pytest.raises(ValueError, match=r"patient_id\(s\) not in the cohort table: \['b'\]"):
        load_bags(cohort.iloc[:1], tmp_path / "cases.csv", cfg)
    cohort2 = pd.concat([cohort, cohort.iloc[:1].assign(patient_id="c")])
    with pytest.raises(ValueError, match=r"patient 'c' of the cohort table has no \['HE'\]"):
        load_bags(cohort2, tmp_path / "cases.csv", cfg)


def test_spacing_mm_gives_every_center_the_same_physical_crop(tmp_path):
    """One 12 mm sphere (off the voxel centres) scanned on 2 x 2 x 4 mm and 1 x 1 x 2 mm grids."""
    import SimpleITK as sitk

    rows = []
    for pid, spacing in (("coarse", (2.0, 2.0, 4.0)), ("fine", (1.0, 1.0, 2.0))):
        size = [int(64 / s) for s in spacing]  # a 64 mm cube centred on the origin
        axes = [(np.arange(n) - (n - 1) / 2) * s for n, s in zip(size, spacing, strict=True)]
        z, y, x = np.meshgrid(axes[2], axes[1], axes[0], indexing="ij")
        inside = ((x - 3.3) ** 2 + (y + 2.7) ** 2 + (z - 1.1) ** 2) <= 12.0 ** 2
        for name, arr in (("img", 50.0 + x - 0.5 * y), ("mask", inside)):
            im = sitk.GetImageFromArray(arr.astype(np.float32 if name == "img" else np.uint8))
            im.SetSpacing(spacing)
            im.SetOrigin([-(n - 1) / 2 * s for n, s in zip(size, spacing, strict=True)])
            sitk.WriteImage(im, str(tmp_path / f"{pid}_{name}.nii.gz"))
        rows.append({"patient_id": pid, "modality": "t1", "image": f"{pid}_img.nii.gz",
                     "mask": f"{pid}_mask.nii.gz"})
    pd.DataFrame(rows).to_csv(tmp_path / "cases.csv", index=False)
    cohort = pd.DataFrame({"patient_id": ["coarse", "fine"], "cohort": ["train", "test"],
                           "os_time": [5.0, 7.0], "os_event": [1, 0]})
    base = dict(input="multichannel", modalities=["t1"], endpoint="os", crop_size=20,
                max_slices=None, normalize="none")
    native = load_bags(cohort, tmp_path / "cases.csv", TrainConfig(**base))
    same = load_bags(cohort, tmp_path / "cases.csv",
                     TrainConfig(**base, spacing_mm=[2.0, 2.0, 4.0]))
    roi = [b[:, -1].sum() for b in native.bags]  # ROI voxels of the kept sections
    assert roi[1] / roi[0] == pytest.approx(4.0 * 2.0, rel=0.15)  # 4x in-plane, 2x the slices
    coarse, fine = same.bags
    assert coarse.shape == fine.shape == native.bags[0].shape
    assert fine[:, -1].sum() == pytest.approx(coarse[:, -1].sum(), rel=0.1)
    # the image 50 + x - y / 2 (mm) is linear: linear resampling reproduces the coarse scan
    np.testing.assert_allclose(fine[:, 0], coarse[:, 0], atol=0.6)
    with pytest.raises(ValueError, match="config 'spacing_mm': expected three positive"):
        TrainConfig(spacing_mm=[2.0, 2.0])


def test_bias_order_removes_a_coil_field_before_the_zscore(tmp_path):
    """One tissue volume scanned twice, once under a smooth multiplicative field."""
    import SimpleITK as sitk

    rng = np.random.default_rng(3)
    shape = (16, 36, 36)
    z, y, x = np.indices(shape).astype(float)
    tumour = ((x - 17) / 9) ** 2 + ((y - 19) / 8) ** 2 + ((z - 8) / 5) ** 2 <= 1
    tissue = 100 * (1 + 0.05 * rng.standard_normal(shape))
    tissue[tumour] = 130 * (1 + 0.2 * rng.standard_normal(int(tumour.sum())))
    field = np.exp(0.4 * (x - 17.5) / 17.5 - 0.3 * ((y - 17.5) / 17.5) ** 2)
    rows = []
    for pid, arr in (("flat", tissue), ("coil", tissue * field)):
        for name, a in (("img", arr.astype(np.float32)), ("mask", tumour.astype(np.uint8))):
            sitk.WriteImage(sitk.GetImageFromArray(a), str(tmp_path / f"{pid}_{name}.nii.gz"))
        rows.append({"patient_id": pid, "modality": "t1", "image": f"{pid}_img.nii.gz",
                     "mask": f"{pid}_mask.nii.gz"})
    pd.DataFrame(rows).to_csv(tmp_path / "cases.csv", index=False)
    cohort = pd.DataFrame({"patient_id": ["flat", "coil"], "cohort": ["train", "train"],
                           "os_time": [5.0, 7.0], "os_event": [1, 0]})
    base = dict(input="patch", modalities=["t1"], endpoint="os", patch_size=[12, 24, 24],
                backbone="unet3d")
    gaps = {}
    for order in (0, 2):
        flat, coil = load_bags(cohort, tmp_path / "cases.csv",
                               TrainConfig(**base, bias_order=order)).bags
        gaps[order] = float(np.abs(coil - flat).mean())
    # measured: mean |difference| 0.77 z units as read, 3e-7 after the correction (the
    # fit to the same tissue under a field of the fitted order differs by the field alone)
    assert gaps[0] > 0.3
    assert gaps[2] < 1e-4
    assert TrainConfig(**base).hash() == TrainConfig(**base, bias_order=0).hash()
    assert TrainConfig(**base).hash() != TrainConfig(**base, bias_order=2).hash()
    with pytest.raises(ValueError, match="config 'bias_order': expected 0"):
        TrainConfig(**base, bias_order=5)
    with pytest.raises(ValueError, match="config 'bias_order': bias correction fits around an "
                                         "ROI mask"):
        TrainConfig(input="tiles", modalities=["he"], bias_order=1)


def test_roi_stats_patches_end_with_the_reader_mask(tmp_path):
    """U-Net ROI pooling: each patch carries the first reader's mask, cropped like the
    images, after its sequences; it is the segmentation target too."""
    import SimpleITK as sitk

    rng = np.random.default_rng(4)
    shape = (14, 30, 30)
    z, y, x = np.indices(shape).astype(float)
    tumour = ((x - 14) / 7) ** 2 + ((y - 16) / 6) ** 2 + ((z - 7) / 4) ** 2 <= 1
    rows = []
    for seq in ("t1", "t2"):
        img = rng.normal(100.0, 5.0, shape) + 30.0 * tumour
        sitk.WriteImage(sitk.GetImageFromArray(img.astype(np.float32)),
                        str(tmp_path / f"{seq}.nii.gz"))
        rows.append({"patient_id": "p1", "modality": seq, "image": f"{seq}.nii.gz",
                     "mask": "mask.nii.gz"})
    sitk.WriteImage(sitk.GetImageFromArray(tumour.astype(np.uint8)), str(tmp_path / "mask.nii.gz"))
    pd.DataFrame(rows).to_csv(tmp_path / "cases.csv", index=False)
    cohort = pd.DataFrame({"patient_id": ["p1"], "cohort": ["train"], "os_time": [5.0],
                           "os_event": [1]})
    base = dict(input="patch", modalities=["t1", "t2"], endpoint="os", patch_size=[8, 16, 16],
                backbone="unet3d")
    plain = load_bags(cohort, tmp_path / "cases.csv",
                      TrainConfig(**base, backbone_args={"width": 4, "depth": 2}),
                      with_masks=True)
    pooled = load_bags(cohort, tmp_path / "cases.csv",
                       TrainConfig(**base, backbone_args={"width": 4, "depth": 2,
                                                          "pool": "roi_stats"}),
                       with_masks=True)
    assert plain.bags[0].shape == (1, 2, 8, 16, 16)
    assert pooled.bags[0].shape == (1, 3, 8, 16, 16)
    np.testing.assert_array_equal(pooled.bags[0][:, :2], plain.bags[0])
    np.testing.assert_array_equal(pooled.bags[0][:, 2:], plain.masks[0])
    roi = pooled.bags[0][0, 2]
    assert set(np.unique(roi)) == {0.0, 1.0}
    # the mask marks the bright tumour: its voxels are about 30 / 5 SDs brighter
    t1 = pooled.bags[0][0, 0]
    assert t1[roi == 1].mean() - t1[roi == 0].mean() > 1.0


def _ddp_worker(rank, init_file, cfg_dict, out_dir):
    torch.distributed.init_process_group("gloo", init_method=f"file://{init_file}",
                                         rank=rank, world_size=2)
    torch.set_num_threads(1)
    cfg = TrainConfig.from_dict(cfg_dict)
    data, _ = blob_data(16, seed=6, size=16, k=2)
    torch.manual_seed(0)
    model = build_model(cfg)
    ddp = torch.nn.parallel.DistributedDataParallel(model, find_unused_parameters=True)
    batch = np.arange(16)
    loss = batch_loss(ddp, data, batch[rank::2], "cox", cfg, torch.device("cpu"))
    loss.backward()
    torch.save({n: p.grad for n, p in model.named_parameters() if p.grad is not None},
               f"{out_dir}/grad{rank}.pt")
    del ddp  # release the reducer, then leave together: one rank tearing gloo down
    torch.distributed.barrier()  # while the other still talks aborts the process
    torch.distributed.destroy_process_group()


def test_ddp_two_processes_average_gradients(tmp_path):
    cfg = small_config(dropout=0.0)
    torch.multiprocessing.spawn(_ddp_worker, args=(str(tmp_path / "init"), cfg.to_dict(),
                                                   str(tmp_path)), nprocs=2)
    data, _ = blob_data(16, seed=6, size=16, k=2)
    grads = []
    for rank in range(2):  # each process's shard, one process at a time
        torch.manual_seed(0)
        model = build_model(cfg)
        batch_loss(model, data, np.arange(16)[rank::2], "cox", cfg,
                   torch.device("cpu")).backward()
        grads.append({n: p.grad for n, p in model.named_parameters() if p.grad is not None})
    g0 = torch.load(tmp_path / "grad0.pt")
    g1 = torch.load(tmp_path / "grad1.pt")
    assert set(g0) == set(grads[0])
    for name in g0:
        expected = (grads[0][name] + grads[1][name]) / 2
        torch.testing.assert_close(g0[name], expected, rtol=1e-5, atol=1e-7)
        torch.testing.assert_close(g1[name], g0[name])


def _blob_volumes(n: int, seed: int) -> tuple[BagData, np.ndarray]:
    """3D patches (1 instance, 1 channel, 16^3) with a dark ball; radius sets the hazard."""
    rng = np.random.default_rng(seed)
    radius = rng.uniform(2.0, 6.0, n)
    eta = 0.8 * (radius - 4.0)
    t = 40.0 * rng.exponential(size=n) / np.exp(eta)
    cens = rng.uniform(10.0, 90.0, n)
    zz, yy, xx = np.mgrid[:16, :16, :16]
    bags, masks = [], []
    for r in radius:
        ball = ((zz - 8) ** 2 + (yy - 8) ** 2 + (xx - 8) ** 2) <= r ** 2
        img = rng.normal(0.0, 0.3, ball.shape) - 1.5 * ball
        bags.append(img[None, None].astype(np.float32))
        masks.append(ball[None, None].astype(np.float32))
    data = BagData([f"v{i}" for i in range(n)], bags, np.minimum(t, cens).round(1),
                   (t <= cens).astype(float), masks=masks)
    return data, eta


@pytest.mark.parametrize("pool", ["mean", "roi_stats"])
def test_unet_segmentation_then_cox_phases(tmp_path, pool):
    data, _ = _blob_volumes(40, seed=8)
    if pool == "roi_stats":  # the mask rides along as the last channel; the U-Net never reads it
        data = dataclasses.replace(data, bags=[np.concatenate([b, m], axis=1)
                                               for b, m in zip(data.bags, data.masks,
                                                               strict=True)])
    cfg = TrainConfig(name="u", input="patch", backbone="unet3d", pooling="mean",
                      backbone_args={"width": 4, "depth": 2, "pool": pool},
                      patch_size=[16, 16, 16], seg_epochs=6, epochs=2, batch_size=5, lr=3e-2)
    info = fit(cfg, data, tmp_path, device="cpu", progress=False)
    phases = [h["phase"] for h in info["history"]]
    assert phases == ["seg"] * 6 + ["cox"] * 2
    dice = [h["loss"] for h in info["history"][:6]]
    assert dice[-1] < 0.5 < dice[0]  # the U-Net learns to segment the ball
    assert info["best_epoch"] in (1, 2)  # counted after segmentation
    with pytest.raises(ValueError, match="segmentation needs masks"):
        fit(cfg, BagData(data.ids, data.bags, data.time, data.event), tmp_path / "x",
            device="cpu", progress=False)


def test_ensemble_members_start_from_one_segmentation_stage_and_resume(tmp_path):
    """The Dice epochs run once, on every training patient; each member starts its
    Cox epochs from those U-Nets (its own risk head). Interrupted in member 2, a
    resumed run neither repeats the segmentation nor member 1, and locks the
    same weights as an uninterrupted run."""
    data, _ = _blob_volumes(36, seed=8)
    cfg = TrainConfig(name="u", input="patch", backbone="unet3d", pooling="mean",
                      backbone_args={"width": 4, "depth": 2}, patch_size=[16, 16, 16],
                      seg_epochs=3, seg_lr=3e-2, seg_batch_size=6, epochs=2, batch_size=12,
                      lr=1e-3, ensemble=2, patience=5)
    full = fit(cfg, data, tmp_path / "full", device="cpu", progress=False)
    assert [h["phase"] for h in full["history"]] == ["seg"] * 3 + ["cox"] * 4
    seg = torch.load(tmp_path / "full" / "segmentation" / CHECKPOINT, weights_only=False)
    assert seg["epoch"] == 3 and seg["history"] == full["history"][:3]
    unet = {name.removeprefix("unets.0."): value for name, value in seg["unets"].items()}
    for k in range(2):  # Cox epochs leave the decoder as segmentation left it
        member = torch.load(tmp_path / "full" / f"member_{k}" / CHECKPOINT,
                            weights_only=False)["model"]
        assert torch.equal(member["encoder.unet.seg_head.weight"], unet["seg_head.weight"])
        assert torch.equal(member["encoder.unet.dec.0.0.weight"], unet["dec.0.0.weight"])
        assert not torch.equal(member["encoder.unet.down.0.0.weight"], unet["down.0.0.weight"])

    def stop_at(member, epoch):
        def callback(record):
            if record.get("member") == member and record["epoch"] == epoch:
                raise KeyboardInterrupt
        return callback

    # stopped when member 1 is done: member 2 then starts from the stored segmentation,
    # which must equal the one member 2 started from in the uninterrupted run
    with pytest.raises(KeyboardInterrupt):
        fit(cfg, data, tmp_path / "cut", device="cpu", progress=False, callback=stop_at(0, 2))
    with pytest.raises(KeyboardInterrupt):  # and again within member 2
        fit(cfg, data, tmp_path / "cut", device="cpu", progress=False, resume=True,
            callback=stop_at(1, 1))
    rerun = []
    info = fit(cfg, data, tmp_path / "cut", device="cpu", progress=False, resume=True,
               callback=rerun.append)
    assert [(h["phase"], h["epoch"]) for h in rerun] == [("cox", 2)]  # member 2's last epoch
    assert info["history"] == full["history"]
    a = torch.load(tmp_path / "full" / MODEL, weights_only=False)["model"]
    b = torch.load(tmp_path / "cut" / MODEL, weights_only=False)["model"]
    for key, value in a.items():
        assert torch.equal(value, b[key]), key


def _ddp_fit_worker(rank, port, cfg_dict, out_dir):
    import os
    os.environ.update(WORLD_SIZE="2", RANK=str(rank), LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    data, _ = _blob_volumes(24, seed=8)
    try:
        fit(TrainConfig.from_dict(cfg_dict), data, out_dir, device="cpu", progress=False)
    finally:
        torch.distributed.destroy_process_group()


def test_segmentation_stage_under_ddp_matches_one_process(tmp_path):
    """Two gloo processes, each segmenting every other patch of a batch, average
    their Dice gradients: without batch statistics or augmentation the shared
    segmentation stage ends where one process on whole batches does; the Cox
    members then train and rank 0 alone writes the locked model."""
    import socket

    cfg = TrainConfig(name="u", input="patch", backbone="unet3d", pooling="mean",
                      backbone_args={"width": 4, "depth": 2, "norm": "instance"},
                      patch_size=[16, 16, 16], seg_epochs=2, seg_lr=3e-2, seg_batch_size=6,
                      epochs=1, batch_size=12, lr=1e-3, ensemble=2, patience=5,
                      flip=False, rotate_deg=0.0, intensity=0.0, blur=0.0)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    torch.multiprocessing.spawn(_ddp_fit_worker, args=(port, cfg.to_dict(),
                                                       str(tmp_path / "ddp")), nprocs=2)
    data, _ = _blob_volumes(24, seed=8)
    one = fit(cfg, data, tmp_path / "one", device="cpu", progress=False)
    a = torch.load(tmp_path / "ddp" / "segmentation" / CHECKPOINT, weights_only=False)
    b = torch.load(tmp_path / "one" / "segmentation" / CHECKPOINT, weights_only=False)
    assert a["epoch"] == b["epoch"] == 2
    assert a["history"][1]["loss"] < a["history"][0]["loss"]
    for key, value in b["unets"].items():
        # Adam's steps amplify rounding where gradients are near zero (4e-5 at most here);
        # processes that do not average, each on its own half, fail at the first weight
        torch.testing.assert_close(a["unets"][key], value, rtol=0.0, atol=1e-4, msg=key)
    locked = torch.load(tmp_path / "ddp" / MODEL, weights_only=False)
    assert [h["phase"] for h in locked["history"]] == ["seg"] * 2 + ["cox"] * 2
    assert len(locked["members"]) == len(one["members"]) == 2


def test_segmentation_epochs_take_their_own_learning_rate_and_batch_size(tmp_path):
    """At the Cox phase's rate and batch size (lr 1e-3, 20 patients: 2 steps per
    epoch) six Dice epochs barely move; at seg_lr 3e-2 and seg_batch_size 5 the
    U-Net segments the balls. The Cox epochs that follow run at ``lr``."""
    data, _ = _blob_volumes(40, seed=8)
    base = dict(name="u", input="patch", backbone="unet3d", pooling="mean",
                backbone_args={"width": 4, "depth": 2},
                patch_size=[16, 16, 16], seg_epochs=6, epochs=1, batch_size=20, lr=1e-3)
    slow = fit(TrainConfig(**base), data, tmp_path / "slow", device="cpu", progress=False)
    fast = fit(TrainConfig(**base, seg_lr=3e-2, seg_batch_size=5), data, tmp_path / "fast",
               device="cpu", progress=False)
    dice_slow = [h["loss"] for h in slow["history"] if h["phase"] == "seg"]
    dice_fast = [h["loss"] for h in fast["history"] if h["phase"] == "seg"]
    assert dice_fast[-1] < 0.5 < dice_slow[-1]
    ckpt = torch.load(tmp_path / "fast" / "last.pt", weights_only=False)
    assert [g["lr"] for g in ckpt["optimizer"]["param_groups"]] == [1e-3]


def test_kyear_pretraining_precedes_cox_training(tmp_path):
    data, _ = blob_data(60, seed=10, size=16, k=2)
    info = fit(small_config(pretrain_epochs=2, epochs=2, batch_size=20, min_epochs=2), data,
               tmp_path, device="cpu", progress=False)
    assert [h["phase"] for h in info["history"]] == ["pretrain"] * 2 + ["cox"] * 2
    assert info["best_epoch"] == 4  # neither pretraining nor Cox epochs before min_epochs lock
    assert info["val_c_index"] == info["history"][3]["val_c_index"]
    assert all(0.0 < h["loss"] < 1.0 for h in info["history"][:2])  # smoothed BCE range


def test_background_normalization_reads_uptake_relative_to_the_surrounding_tissue(tmp_path):
    """PET-like volumes: tissue SUV 1.3, tumour 5.2 (ratio 4) with a cold core of 0.65;
    a small and a large tumour, and the small one again under a 1.7x calibration."""
    import SimpleITK as sitk

    from deepnomo.train import background_ratio

    shape = (20, 48, 48)
    z, y, x = np.indices(shape).astype(float)
    dist = np.sqrt(((x - 24) / 2) ** 2 + ((y - 24) / 2) ** 2 + (z - 10) ** 2)
    rows, cases = [], {"small": (4.0, 1.0), "large": (8.0, 1.0), "scaled": (4.0, 1.7)}
    for pid, (radius, gain) in cases.items():
        tumour = dist <= radius
        suv = np.where(tumour, 5.2, 1.3)
        suv[dist <= radius / 2] = 0.65
        for name, a in (("img", gain * suv), ("mask", tumour)):
            sitk.WriteImage(sitk.GetImageFromArray(a.astype(np.float32 if name == "img"
                                                            else np.uint8)),
                            str(tmp_path / f"{pid}_{name}.nii.gz"))
        rows.append({"patient_id": pid, "modality": "pet", "image": f"{pid}_img.nii.gz",
                     "mask": f"{pid}_mask.nii.gz"})
    pd.DataFrame(rows).to_csv(tmp_path / "cases.csv", index=False)
    cohort = pd.DataFrame({"patient_id": list(cases), "cohort": "train",
                           "os_time": [5.0, 7.0, 9.0], "os_event": [1, 0, 1]})
    base = dict(input="multichannel", modalities=["pet"], endpoint="os", crop_size=40,
                max_slices=None)
    middle = {}  # the central section's tumour rim, core and tissue, per normalization
    for how in ("background", "zscore"):
        bags = load_bags(cohort, tmp_path / "cases.csv", TrainConfig(**base, normalize=how))
        for pid, bag in zip(cases, bags.bags, strict=True):
            image = bag[len(bag) // 2, 0]
            rim = 20 + int(1.5 * cases[pid][0])  # 3/4 of the radius (2 pixels per unit)
            middle[how, pid] = (image[rim, 20], image[20, 20], image[0, 0])
    for pid in cases:  # ratio 4 -> 3, 0.5 -> -0.5, tissue 0, whatever the size or calibration
        rim, core, tissue = middle["background", pid]
        assert (rim, core, tissue) == pytest.approx((3.0, -0.5, 0.0), abs=1e-5)
    # the z-score divides by an SD that the tumour's own size sets: the large tumour's rim
    # reads lower than the small one's (measured: 2.3 against 7.0 z units)
    assert middle["zscore", "large"][0] < 0.5 * middle["zscore", "small"][0]
    assert middle["zscore", "scaled"][0] == pytest.approx(middle["zscore", "small"][0], rel=1e-4)
    with pytest.raises(ValueError, match="'background': p1 pet: the ROI covers the whole"):
        background_ratio(np.ones((2, 3, 3)), np.ones((2, 3, 3), bool), "p1 pet")
    with pytest.raises(ValueError, match="outside the ROI is -5; a ratio needs a positive"):
        background_ratio(np.full((2, 3, 3), -5.0), np.zeros((2, 3, 3), bool))
    with pytest.raises(ValueError, match="config 'normalize': expected one of"):
        TrainConfig(normalize="tumour")
