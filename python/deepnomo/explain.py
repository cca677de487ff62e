"""Grad-CAM heat maps of a survival network's risk, per patient, as PNG overlays.

Grad-CAM (Selvaraju et al. 2017): with activations :math:`A^k` of the
encoder's last spatial layer and the bag's risk :math:`\\eta`, the map is
:math:`\\mathrm{ReLU}(\\sum_k \\alpha_k A^k)` with
:math:`\\alpha_k = \\operatorname{mean}_{xy} \\partial\\eta / \\partial A^k_{xy}`,
upsampled to the input size. Bright = regions that raise the predicted risk.
For an ensemble the gradients are those of the ensemble's risk, taken at every
member's layer, and the members' maps are summed. A network with a shape encoder
(``roi_patch``) is run with the patient's ROI patch; the maps show the instance
encoder's part of the risk.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from deepnomo.nn.mil import RiskEnsemble, SurvivalMIL, members
from deepnomo.train import BagData

MAX_TILES = 8
MIN_PANEL_PX = 128  # small crops are enlarged (nearest neighbour) to at least this height


def grad_cam(model: SurvivalMIL | RiskEnsemble, instances: torch.Tensor,
             roi: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Grad-CAM of one bag's risk for each of its instances.

    Parameters
    ----------
    model : SurvivalMIL or RiskEnsemble
        Its encoders expose ``cam_layer``.
    instances : Tensor, shape (k, C, *spatial)
        One patient's bag.
    roi : Tensor, shape (1, D, H, W), optional
        The patient's ROI patch, for a network with a shape encoder.

    Returns
    -------
    cam : Tensor, shape (k, *spatial)
        Heat maps scaled to [0, 1] by the bag's maximum (0 everywhere when
        nothing raises the risk).
    weights : Tensor, shape (k,)
        The instances' pooling weights.
    """
    if instances.ndim < 4 or instances.shape[0] == 0:
        raise ValueError(f"instances: expected a non-empty bag (k, C, *spatial), got "
                         f"{tuple(instances.shape)}")
    model.eval()
    captured: list[torch.Tensor] = []
    handles = [m.encoder.cam_layer.register_forward_hook(lambda m, i, o: captured.append(o))
               for m in members(model)]
    try:
        with torch.enable_grad():
            out = model(instances, torch.zeros(instances.shape[0], dtype=torch.long,
                                               device=instances.device), 1,
                        None if roi is None else roi[None])
            grads = torch.autograd.grad(out.risk[0], captured)
    finally:
        for handle in handles:
            handle.remove()
    mode = "bilinear" if instances.ndim == 4 else "trilinear"
    cam = 0
    for act, grad in zip(captured, grads, strict=True):
        alpha = grad.mean(dim=tuple(range(2, act.ndim)), keepdim=True)
        layer_cam = torch.relu((alpha * act).sum(1, keepdim=True)).detach()
        cam = cam + F.interpolate(layer_cam, size=instances.shape[2:], mode=mode,
                                  align_corners=False)[:, 0]
    peak = cam.max()
    return (cam / peak if peak > 0 else cam), out.weights.detach()


def _colormap(v: np.ndarray) -> np.ndarray:
    """Blue -> cyan -> yellow -> red for ``v`` in [0, 1]; returns (..., 3) in [0, 1]."""
    r = np.clip(1.5 - np.abs(4 * v - 3), 0, 1)
    g = np.clip(1.5 - np.abs(4 * v - 2), 0, 1)
    b = np.clip(1.5 - np.abs(4 * v - 1), 0, 1)
    return np.stack([r, g, b], -1)


def overlay(image: np.ndarray, cam: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """Gray image (H, W) with the heat map (H, W) blended in proportion to its value.

    Returns an (H, W, 3) uint8 array; where ``cam == 0`` the pixel is the gray image.
    """
    lo, hi = np.percentile(image, [1, 99])
    gray = np.clip((image - lo) / (hi - lo + 1e-8), 0, 1)[..., None].repeat(3, -1)
    w = alpha * np.clip(cam, 0, 1)[..., None]
    return np.round(255 * ((1 - w) * gray + w * _colormap(cam))).astype(np.uint8)


def _plane(x: np.ndarray, cam: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """First channel of a 2D instance, or the 3D patch's axial slice where the map peaks."""
    img = x[0]
    if img.ndim == 3:
        z = int(np.argmax(cam.reshape(cam.shape[0], -1).max(1)))
        return img[z], cam[z]
    return img, cam


def save_heatmaps(model: SurvivalMIL | RiskEnsemble, data: BagData, out_dir: str | os.PathLike,
                  device: str = "cpu", alpha: float = 0.5) -> list[Path]:
    """One PNG per patient (``<patient_id>.png``): the bag's most-weighted instances.

    Up to eight instances, ordered by pooling weight, side by side; panels
    smaller than 128 pixels are enlarged by an integer factor.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.to(device)
    paths = []
    rois = data.rois or [None] * len(data)
    for pid, bag, roi in zip(data.ids, data.bags, rois, strict=True):
        cam, weights = grad_cam(model, torch.from_numpy(bag).to(device),
                                None if roi is None else torch.from_numpy(roi).to(device))
        order = torch.argsort(weights, descending=True)[:MAX_TILES].cpu().numpy()
        panels = [overlay(*_plane(bag[i], cam[i].cpu().numpy()), alpha=alpha) for i in order]
        path = out / f"{pid}.png"
        im = Image.fromarray(np.concatenate(panels, axis=1))
        zoom = max(1, -(-MIN_PANEL_PX // im.height))
        im.resize((im.width * zoom, im.height * zoom), Image.Resampling.NEAREST).save(path)
        paths.append(path)
    return paths
