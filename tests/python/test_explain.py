"""Grad-CAM: equals the class activation map where that is exact; finds the risky blob."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from deepnomo.explain import grad_cam, overlay, save_heatmaps
from deepnomo.nn.mil import SurvivalMIL
from deepnomo.train import fit, load_model
from test_train import blob_data, small_config


class _ConvGap(nn.Module):
    """conv -> ReLU -> global average pool: Grad-CAM reduces to CAM (Zhou et al. 2016)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Sequential(nn.Conv2d(1, 5, 3, padding=1), nn.ReLU())
        self.out_features = 5
        self.cam_layer = self.conv

    def forward(self, x):
        return self.conv(x).mean(dim=(2, 3))


def test_grad_cam_equals_class_activation_map():
    torch.manual_seed(0)
    model = SurvivalMIL(_ConvGap(), pooling="mean", dropout=0.0).double()
    x = torch.randn(1, 1, 12, 12, dtype=torch.float64)
    cam, weights = grad_cam(model, x)
    act = model.encoder.conv(x)[0]
    w = model.risk_head.weight[0].detach()
    direct = torch.relu((w[:, None, None] * act).sum(0)).detach()
    assert direct.max() > 0
    torch.testing.assert_close(cam[0], direct / direct.max())
    assert weights.tolist() == [1.0]


def test_heatmaps_highlight_the_blob_that_drives_risk(tmp_path):
    train, _ = blob_data(200, seed=1)
    fit(small_config(), train, tmp_path / "m", device="cpu", progress=False)
    model, _, _ = load_model(tmp_path / "m")
    test, _ = blob_data(20, seed=9)
    inside, outside = [], []
    for bag in test.bags:
        cam, _ = grad_cam(model, torch.from_numpy(bag))
        for inst, c in zip(bag, cam.numpy(), strict=True):
            blob = inst[0] < -0.9  # the dark disc (noise sd 0.3 around 0 outside)
            inside.append(c[blob].mean())
            outside.append(c[~blob].mean())
    inside, outside = np.array(inside), np.array(outside)
    assert np.mean(inside > outside) > 0.8
    paths = save_heatmaps(model, test.subset(range(3)), tmp_path / "cam")
    assert [p.name for p in paths] == [f"{pid}.png" for pid in test.ids[:3]]
    with Image.open(paths[0]) as im:
        assert im.size == (128 * 3, 128) and im.mode == "RGB"  # 32-pixel panels x 4


def test_overlay_blends_only_where_the_map_is_positive():
    img = np.linspace(0, 1, 64).reshape(8, 8)
    cam = np.zeros((8, 8))
    cam[2, 3] = 1.0
    rgb = overlay(img, cam, alpha=0.5)
    assert rgb.shape == (8, 8, 3) and rgb.dtype == np.uint8
    gray = np.delete(rgb.reshape(-1, 3), 2 * 8 + 3, axis=0)
    assert (gray[:, 0] == gray[:, 1]).all() and (gray[:, 1] == gray[:, 2]).all()
    r, g, b = rgb[2, 3].astype(int)
    assert r > g and r > b
    with pytest.raises(ValueError, match="non-empty bag"):
        grad_cam(SurvivalMIL(_ConvGap(), pooling="mean"), torch.zeros(0, 1, 8, 8))
