"""Backbones: the published architectures' parameter counts, shapes, gradients."""

from __future__ import annotations

import pytest
import torch

from deepnomo.losses import dice_loss
from deepnomo.nn.backbones import UNet3D, build_backbone, roi_statistics_pool

# Parameter counts of the reference architectures without their 1000-class
# classifier (ImageNet models: ResNet-18 11,689,512 - 513,000;
# SE-ResNeXt-50 32x4d 27,559,896 - 2,049,000; EfficientNet-lite0 4,652,008 - 1,281,000).
PUBLISHED = {"resnet18": 11_176_512, "se_resnext": 25_510_896, "efficientnet_lite0": 3_371_008}


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_default_size_is_the_published_architecture(name):
    model = build_backbone(name, in_channels=3)
    assert sum(p.numel() for p in model.parameters()) == PUBLISHED[name]


SMALL = {
    "resnet18": ({"width": 8, "stem": "small"}, (3, 1, 32, 32), 64),
    "se_resnext": ({"width": 32, "layers": (1, 1, 1), "cardinality": 4}, (3, 1, 32, 32), 128),
    "efficientnet_lite0": ({"in_channels": 3, "width_mult": 0.5, "n_stages": 4,
                            "head_channels": 64}, (3, 3, 32, 32), 64),
    "unet3d": ({"width": 4, "depth": 2}, (2, 1, 16, 16, 16), 16),
}


@pytest.mark.parametrize("name", sorted(SMALL))
def test_small_backbones_shapes_and_backward(name):
    torch.manual_seed(0)
    kwargs, shape, feat = SMALL[name]
    model = build_backbone(name, **kwargs)
    x = torch.randn(*shape, requires_grad=True)
    y = model(x)
    assert y.shape == (shape[0], feat) and model.out_features == feat
    y.pow(2).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    used = model.unet.down if name == "unet3d" else model  # the decoder is for segmentation
    assert all(p.grad is not None for p in used.parameters())


def test_multisequence_encoder_concatenates_sequences():
    torch.manual_seed(0)
    model = build_backbone("unet3d", sequences=3, width=4, depth=2).eval()
    x = torch.randn(2, 3, 16, 16, 16)
    y = model(x)
    assert y.shape == (2, 48)
    torch.testing.assert_close(y[:, 16:32], model.encoders[1](x[:, 1:2]))


def test_unet_segments_and_learns_a_blob():
    torch.manual_seed(0)
    net = UNet3D(1, 1, width=4, depth=2)
    zz, yy, xx = torch.meshgrid(*[torch.arange(16.0)] * 3, indexing="ij")
    mask = (((zz - 8) ** 2 + (yy - 7) ** 2 + (xx - 9) ** 2) < 16).float()[None, None]
    img = mask * 2.0 + 0.3 * torch.randn(1, 1, 16, 16, 16)
    assert net(img).shape == (1, 1, 16, 16, 16)
    opt = torch.optim.Adam(net.parameters(), lr=0.05)
    first = float(dice_loss(net(img), mask).detach())
    for _ in range(60):
        opt.zero_grad()
        loss = dice_loss(net(img), mask)
        loss.backward()
        opt.step()
    assert float(loss.detach()) < 0.2 < first
    with pytest.raises(ValueError, match=r"divisible by \(4, 4, 4\)"):
        net(torch.zeros(1, 1, 10, 16, 16))


def test_unet_in_plane_levels_keep_each_section_apart():
    """With ``in_plane_levels=1`` the first level reads each section alone (a change in
    one section moves that section's level-1 features only) and down-samples in-plane,
    so the depth needs one factor of 2 fewer; segmentation keeps the input's shape."""
    torch.manual_seed(0)
    x = torch.randn(1, 1, 6, 16, 16)
    moved = x.clone()
    moved[0, 0, 3] += 1.0
    touched = {}
    for levels in (1, 0):
        net = UNet3D(1, 1, width=4, depth=2, norm="batch", in_plane_levels=levels).eval()
        if levels == 0:
            with pytest.raises(ValueError, match=r"divisible by \(4, 4, 4\)"):
                net(x)
            x, moved = (torch.cat([t, t[:, :, :2]], dim=2) for t in (x, moved))  # depth 8
        skip, skip_moved = net.encode(x)[1][0], net.encode(moved)[1][0]
        diff = (skip - skip_moved).abs().amax(dim=(0, 1, 3, 4))
        touched[levels] = [int(z) for z in torch.nonzero(diff > 1e-6).flatten()]
        assert net(x).shape == x.shape
        bottleneck = net.encode(x)[0]
        assert bottleneck.shape[2:] == ((2, 4, 4) if levels == 0 else (3, 4, 4))
    assert touched[1] == [3]
    assert touched[0] == [1, 2, 3, 4, 5]
    with pytest.raises(ValueError, match="in_plane_levels: expected 0..depth"):
        UNet3D(1, 1, width=4, depth=2, in_plane_levels=3)


def test_unet_instance_norm_pools_away_the_contrast_that_batch_norm_keeps():
    """Instance norm standardises every feature map per patient, so the pooled
    bottleneck of a patch is the same at any contrast (bias-free convolutions);
    batch norm (locked statistics) keeps the contrast, which carries risk."""
    torch.manual_seed(0)
    x = torch.randn(2, 1, 16, 16, 16)
    pooled = {}
    for norm in ("instance", "batch"):
        net = build_backbone("unet3d", width=4, depth=2, norm=norm)
        net.train()
        net(torch.randn(8, 1, 16, 16, 16))  # batch norm: running statistics from a batch
        net.eval()
        pooled[norm] = (net(x), net(3.0 * x))
    change = {k: float((high - low).norm() / low.norm()) for k, (low, high) in pooled.items()}
    assert change["instance"] < 1e-3
    assert change["batch"] > 0.5
    with pytest.raises(ValueError, match="norm: expected one of"):
        UNet3D(1, 1, width=4, depth=2, norm="group")


def test_roi_statistics_pool_matches_weighted_moments_over_the_roi():
    gen = torch.Generator().manual_seed(0)
    f = torch.randn(2, 3, 4, 4, generator=gen)
    roi = torch.zeros(2, 1, 8, 8)
    roi[0, 0, 2:6, 0:4] = 1.0  # covers map pixels (1-2, 0-1) fully
    roi[1, 0, :, :] = 1.0
    roi[1, 0, 0, 0] = 0.0  # map pixel (0, 0) is 3/4 inside
    out = roi_statistics_pool(f, roi)
    assert out.shape == (2, 9)
    # independent computation: area-averaged ROI weights, weighted mean and SD
    for i in range(2):
        w = roi[i, 0].reshape(4, 2, 4, 2).mean(dim=(1, 3)).double()
        w = w / w.sum()
        for c in range(3):
            x = f[i, c].double()
            mean = (w * x).sum()
            sd = torch.sqrt((w * (x - mean) ** 2).sum() + 1e-4)
            assert abs(float(out[i, c]) - float(mean)) < 1e-5
            assert abs(float(out[i, 3 + c]) - float(sd)) < 1e-5
            assert abs(float(out[i, 6 + c]) - float(x.mean())) < 1e-5  # whole crop
    # what lies outside the ROI does not count in the ROI moments, only in the crop mean
    g = f.clone()
    g[0, :, 0, :] += 100.0
    h = roi_statistics_pool(g, roi)
    torch.testing.assert_close(h[0, :6], out[0, :6])
    torch.testing.assert_close(h[0, 6:], out[0, 6:] + 100.0 / 4)


def test_roi_stats_pooling_sees_texture_that_global_mean_pooling_averages_away():
    """A fixed Laplacian filter as the "network": inside the ROI a fine checkerboard
    texture of amplitude a; the pooled SD grows in proportion to a, the global mean
    of the map does not (it is ~0 for every amplitude)."""
    net = build_backbone("resnet18", in_channels=2, width=8, layers=(1,), stem="small",
                         pool="roi_stats")
    assert net.out_features == 24
    yy, xx = torch.meshgrid(torch.arange(16), torch.arange(16), indexing="ij")
    roi = ((yy - 8) ** 2 + (xx - 8) ** 2 < 25).float()
    checker = ((yy + xx) % 2 * 2 - 1).float()
    lap = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]])[None, None]
    sds, means = [], []
    for a in (0.5, 1.0, 2.0):
        x = torch.stack([a * checker * roi, roi])[None]
        fmap = torch.nn.functional.conv2d(x[:, :1], lap, padding=1)
        pooled = roi_statistics_pool(fmap, x[:, -1:])
        means.append(float(fmap.mean()))
        sds.append(float(pooled[0, 1]))
    assert sds[1] / sds[0] == pytest.approx(2.0, rel=0.01)
    assert sds[2] / sds[0] == pytest.approx(4.0, rel=0.01)
    assert max(abs(m) for m in means) < 0.5 < sds[0]
    y = net(torch.randn(3, 2, 16, 16))
    assert y.shape == (3, 24) and bool((y[:, 8:16] > 0).all())  # SDs are positive


def test_roi_statistics_pool_in_3d_matches_weighted_moments():
    gen = torch.Generator().manual_seed(1)
    f = torch.randn(1, 2, 2, 4, 4, generator=gen)
    roi = torch.zeros(1, 1, 4, 8, 8)
    roi[0, 0, 0:2, 0:4, 2:6] = 1.0  # map voxels (0, 0-1, 1-2) fully
    roi[0, 0, 2, 0, 0] = 1.0  # 1/8 of map voxel (1, 0, 0)
    out = roi_statistics_pool(f, roi)
    w = roi[0, 0].reshape(2, 2, 4, 2, 4, 2).mean(dim=(1, 3, 5)).double()
    w = w / w.sum()
    for c in range(2):
        x = f[0, c].double()
        mean = (w * x).sum()
        assert float(out[0, c]) == pytest.approx(float(mean), abs=1e-5)
        assert float(out[0, 2 + c]) == pytest.approx(
            float(torch.sqrt((w * (x - mean) ** 2).sum() + 1e-4)), abs=1e-5)
        assert float(out[0, 4 + c]) == pytest.approx(float(x.mean()), abs=1e-5)
    with pytest.raises(ValueError, match="roi: expected"):
        roi_statistics_pool(f, roi[:, :, 0])


def test_unet_roi_stats_pools_its_bottleneck_over_an_roi_it_does_not_read():
    """The ROI channel weights the pooling of the bottleneck; the U-Net reads only the
    image, so its bottleneck, and with it the crop-mean part of the output, is the same
    whatever the ROI."""
    torch.manual_seed(0)
    model = build_backbone("unet3d", sequences=2, width=4, depth=2, pool="roi_stats").eval()
    assert model.out_features == 2 * 48
    x = torch.randn(2, 2, 16, 16, 16)
    roi = torch.zeros(2, 1, 16, 16, 16)
    roi[:, :, 4:12, 4:12, 4:12] = 1.0
    y = model(torch.cat([x, roi], dim=1))
    enc = model.encoders[1]
    fmap = enc.unet.encode(x[:, 1:2])[0]
    torch.testing.assert_close(y[:, 48:], roi_statistics_pool(fmap, roi))
    torch.testing.assert_close(y[:, 48 + 32:], fmap.mean(dim=(2, 3, 4)))
    moved = roi.roll(4, dims=4)
    y2 = model(torch.cat([x, moved], dim=1))
    assert not torch.allclose(y2[:, :32], y[:, :32])  # ROI moments follow the ROI
    torch.testing.assert_close(y2[:, 32:48], y[:, 32:48])  # crop means do not
    with pytest.raises(ValueError, match="2 sequences and the ROI"):
        model(x)


def test_bad_backbone_arguments():
    with pytest.raises(ValueError, match="unknown name"):
        build_backbone("vgg")
    with pytest.raises(ValueError, match="pool: expected"):
        build_backbone("efficientnet_lite0", pool="max")
    with pytest.raises(ValueError, match="cardinality"):
        build_backbone("se_resnext", width=32, cardinality=5)
