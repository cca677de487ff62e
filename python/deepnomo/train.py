"""Training survival CNNs under multiple-instance learning.

The pieces, each usable alone:

* :class:`TrainConfig` -- every knob of a run, read from YAML; its hash ties
  checkpoints to the configuration that wrote them.
* :class:`BagData` and :func:`load_bags` -- patients as bags of instances
  (tumour-centred slices, 3D patches, multi-channel crops or pathology tiles)
  with their endpoint, built from ``cohort.csv`` and ``cases.csv``.
* :func:`augment` -- random flips, small rotations, intensity jitter, blur, noise.
* :func:`fit` -- optional segmentation (Dice) and k-year pretraining phases,
  then Cox partial-likelihood training with early stopping on the validation
  C-index; a checkpoint after every epoch; resume; DDP under ``torchrun``;
  AMP on CUDA. A diverging loss stops the run with the last good checkpoint kept.
  With ``ensemble: K`` it trains a K-fold cross-validation ensemble, one
  member per fold (``repeats: R`` deals the folds R times), and locks their
  mean standardized risk.
* :func:`predict_risk` -- scoring, optionally averaged over the eight in-plane
  flips and quarter turns (Harrell's C: :func:`deepnomo.metrics.harrell_c`).

Runs are deterministic on CPU for a given seed: every epoch reseeds the
generators from ``(seed, epoch)``, so a resumed run continues exactly as an
uninterrupted one would have.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import math
import os
import random
import re
import time as _time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
import yaml
from torch import nn

from deepnomo.atomic import atomic_write
from deepnomo.losses import cox_ph_loss, dice_loss, kyear_labels, smoothed_bce
from deepnomo.metrics import harrell_c
from deepnomo.nn.backbones import MultiSequenceEncoder, UNetEncoder, build_backbone
from deepnomo.nn.mil import RiskEnsemble, SurvivalMIL, collate_bags
from deepnomo.nn.multitask import MultiTaskCox, MultiTaskEnsemble
from deepnomo.nn.shape import ROIShapeEncoder
from deepnomo.ridge_cox import fit_ridge_cox

INPUTS = ("slices", "patch", "multichannel", "tiles")
NORMALIZE = ("zscore", "background", "none")
CHECKPOINT = "last.pt"
MODEL = "model.pt"


class TrainingError(RuntimeError):
    """Training cannot go on (diverging loss, NaN weights)."""


class ConfigMismatchError(ValueError):
    """A checkpoint or model was written by a different configuration."""


@dataclass
class TrainConfig:
    """Configuration of one deep-learning signature.

    Attributes
    ----------
    name : str
        Signature name; the table column is ``sig_dl_<name>``.
    endpoint : str
        Endpoint stem: ``<endpoint>_time`` (months) and ``<endpoint>_event``.
    input : {"slices", "patch", "multichannel", "tiles"}
        Instances: tumour-centred 2D slices of one sequence; one 3D patch (one
        channel per modality); 2D slices with one channel per modality plus the
        ROI; or pathology tiles (PNG, RGB).
    modalities : list of str
        Values of ``cases.csv``'s ``modality`` column used, in channel order.
    backbone, backbone_args : str, dict
        Encoder name and keyword arguments (see ``deepnomo.nn.backbones``);
        ``pool: roi_stats`` pools the last feature map to its mean and SD over
        the ROI and its mean over the crop; the ROI is the instance's last
        channel (``multichannel`` input; ``patch`` input with backbone
        ``unet3d`` appends the ROI patch after the sequences).
    pooling : {"mean", "max", "attention"}
    crop_size : int
        Side of 2D crops / tiles in pixels.
    patch_size : list of int
        (D, H, W) of 3D patches.
    max_slices : int or None
        Most slices per bag (the largest tumour sections are kept by the crops).
    roi_patch : list of int or None
        (D, H, W) of a 3D patch of the ROI mask, centred on the tumour's 3D
        centroid (on the ``spacing_mm`` grid), read by a shape encoder
        (:class:`deepnomo.nn.shape.ROIShapeEncoder`) whose features join the
        pooled instance features (``slices``, ``multichannel`` and ``patch``
        input; H = W).
        None: no shape encoder.
    roi_width : int
        Channels of the shape encoder's first block.
    spacing_mm : list of float or None
        (x, y, z) voxel spacing, mm: images (linearly) and masks (nearest
        neighbour) are resampled to it before cropping, so that a crop spans the
        same physical extent, and a tumour the same number of voxels, at every
        center. None crops each volume on its own grid.
    slice_interpolation : {"linear", "nearest"}
        Interpolation of images across slices when resampling to ``spacing_mm``
        (in-plane stays linear): ``"nearest"`` keeps every slice one the scanner
        acquired (:func:`deepnomo.preprocess.resample`, ``slice_interpolator``).
    bias_order : int
        0: images as read. 1-3: before normalization, each volume (on the
        ``spacing_mm`` grid) is divided by a smooth multiplicative bias field, a
        polynomial of this degree fitted to the log intensities outside the ROI
        (:func:`deepnomo.preprocess.polynomial_bias_correct`). For MR, whose coil
        sensitivity varies over the field of view.
    normalize : {"zscore", "background", "none"}
        Per image volume, before cropping. ``"zscore"``: subtract its mean and
        divide by its SD (removes scanner scale and offset). ``"background"``:
        divide by the mean outside the ROI and subtract 1, so the tissue around
        the tumour reads 0 and a voxel at twice its intensity 1, whatever the
        tumour's own size and uptake (PET's tumour-to-background ratio; for
        positive intensities such as SUV). Tiles are always scaled to [0, 1].
    epochs, batch_size, lr, weight_decay, dropout : training schedule
        ``batch_size`` counts patients (bags).
    ties : {"efron", "breslow"}
    val_fraction : float
        Share of the training cohort held out for early stopping (single model).
    ensemble : int
        Members of a cross-validation ensemble. With ``K > 1`` the training
        cohort is split into ``K`` event-stratified folds; member ``k`` starts
        from seed ``seed + k``, trains on the other folds and stops early on
        fold ``k``; the signature is the mean of the members' standardized risks
        (:class:`deepnomo.nn.mil.RiskEnsemble`). Averaging members removes most
        of the seed-to-seed spread that small cohorts give a single network.
    repeats : int
        Repeated cross-validation: ``R > 1`` deals the training cohort into ``K``
        folds ``R`` times, each time in a new order, and trains ``R K`` members
        (member ``r K + k`` holds out fold ``k`` of deal ``r``, from seed
        ``seed + r K + k``). Every patient then validates ``R`` members, and the
        signature averages over partitions as well as over starts. Needs
        ``ensemble > 1``.
    tta : bool
        Score patients (signature tables, ensemble standardization) as the
        mean risk over the eight in-plane flips and quarter turns of their
        instances (:func:`dihedral_views`); validation during training does not.
    patience : int
        Epochs without a better validation C-index before stopping.
    min_epochs : int
        Cox epochs before a model may be locked or training stopped (guards
        against a lucky early peak on a small validation share).
    seed : int
    flip, rotate_deg, intensity, blur, noise : augmentation
        Flip probability 0.5 per axis when ``flip``; rotations uniform in
        +-``rotate_deg``; intensity ``x (1 + a) + b`` with ``a, b`` uniform in
        +-``intensity``; Gaussian blur with sigma uniform in [0, ``blur``] pixels;
        white Gaussian noise added last, its SD uniform in [0, ``noise``] per
        instance, in normalized intensity units (after the z-score, SD of the volume).
    pretrain_epochs, pretrain_horizon, label_smoothing : k-year pretraining
        Binary "event before ``pretrain_horizon`` months" with smoothed BCE.
    seg_epochs : int
        Dice-loss segmentation epochs first (``unet3d`` backbones only), run once
        on every training patient's mask (no outcomes); each ensemble member
        starts its Cox epochs from the segmenting U-Nets.
    head_ridge : float
        0 keeps the risk head the network trained. Above 0, once a network is
        locked, its linear risk head is refit by a ridge-penalized Cox model
        with this penalty on the pooled features of the patients it trained on
        (:func:`refit_risk_head`): full risk sets instead of batch ones, and a
        penalty that shares weight among correlated features.
    aux_components, aux_weight : int, float
        Auxiliary task: with ``aux_components = A > 0`` the network also predicts,
        by a linear head on its pooled features, ``A`` targets per training
        patient (``BagData.aux``; :func:`deepnomo.feature_targets.feature_targets`:
        principal components of the ROI's handcrafted features), and the
        pretraining and Cox losses gain ``aux_weight`` times their mean squared
        error. Scoring ignores that head.
    seg_lr, seg_batch_size : float, int or None
        Learning rate and batch size of the segmentation epochs (None: ``lr``,
        ``batch_size``). Dice on single patches learns from many small steps,
        the Cox loss needs batches large enough to hold risk sets.
    max_loss : float
        A batch loss above this (or non-finite) stops the run.
    grad_clip : float
        Gradient-norm clipping (0 disables).
    amp : bool
        bfloat16 autocast when running on CUDA.
    """

    name: str = "dl"
    endpoint: str = "dfs"
    input: str = "slices"
    modalities: list[str] = field(default_factory=lambda: ["T1"])
    backbone: str = "resnet18"
    backbone_args: dict[str, Any] = field(default_factory=dict)
    pooling: str = "attention"
    crop_size: int = 64
    patch_size: list[int] = field(default_factory=lambda: [32, 32, 32])
    max_slices: int | None = 8
    roi_patch: list[int] | None = None
    roi_width: int = 8
    spacing_mm: list[float] | None = None
    slice_interpolation: str = "linear"
    bias_order: int = 0
    normalize: str = "zscore"
    epochs: int = 30
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 1e-4
    dropout: float = 0.25
    ties: str = "efron"
    val_fraction: float = 0.2
    ensemble: int = 1
    repeats: int = 1
    tta: bool = False
    patience: int = 8
    min_epochs: int = 1
    seed: int = 0
    flip: bool = True
    rotate_deg: float = 10.0
    intensity: float = 0.1
    blur: float = 0.5
    noise: float = 0.0
    pretrain_epochs: int = 0
    pretrain_horizon: float = 36.0
    label_smoothing: float = 0.1
    seg_epochs: int = 0
    head_ridge: float = 0.0
    aux_components: int = 0
    aux_weight: float = 1.0
    seg_lr: float | None = None
    seg_batch_size: int | None = None
    max_loss: float = 1e4
    grad_clip: float = 5.0
    amp: bool = True

    def __post_init__(self) -> None:
        if self.input not in INPUTS:
            raise ValueError(f"config 'input': expected one of {INPUTS}, got {self.input!r}")
        if self.normalize not in NORMALIZE:
            raise ValueError(f"config 'normalize': expected one of {NORMALIZE}, "
                             f"got {self.normalize!r}")
        if not self.modalities:
            raise ValueError("config 'modalities': at least one modality is needed")
        if self.input == "slices" and len(self.modalities) != 1:
            raise ValueError("config 'modalities': input 'slices' takes one modality "
                             "(use 'multichannel' for several)")
        if not 0.0 < self.val_fraction < 1.0:
            raise ValueError(f"config 'val_fraction': must be in (0, 1), got {self.val_fraction}")
        if self.backbone_args.get("pool") == "roi_stats" and not (
                self.input == "multichannel"
                or (self.input == "patch" and self.backbone == "unet3d")):
            raise ValueError("config 'backbone_args': pool 'roi_stats' needs input "
                             "'multichannel', or 'patch' with backbone 'unet3d' (an ROI channel)")
        if self.roi_patch is not None:
            if self.input == "tiles":
                raise ValueError("config 'roi_patch': a shape encoder needs an ROI mask; "
                                 "input 'tiles' has none")
            if (len(self.roi_patch) != 3 or min(self.roi_patch) < 1
                    or self.roi_patch[1] != self.roi_patch[2]):
                raise ValueError("config 'roi_patch': expected three positive ints (D, H, W) "
                                 f"with H = W, got {self.roi_patch}")
            if self.roi_width < 1:
                raise ValueError(f"config 'roi_width': must be >= 1, got {self.roi_width}")
        if self.bias_order not in (0, 1, 2, 3):
            raise ValueError(f"config 'bias_order': expected 0 (off) to 3, got {self.bias_order}")
        if self.bias_order and self.input == "tiles":
            raise ValueError("config 'bias_order': bias correction fits around an ROI mask; "
                             "input 'tiles' has none")
        if self.seg_epochs and self.backbone != "unet3d":
            raise ValueError("config 'seg_epochs': segmentation pretraining needs backbone unet3d")
        for key in ("seg_lr", "seg_batch_size"):
            value = getattr(self, key)
            if value is not None and not value > 0:
                raise ValueError(f"config '{key}': must be positive, got {value}")
            if value is not None and not self.seg_epochs:
                raise ValueError(f"config '{key}': set without segmentation epochs (seg_epochs)")
        for key in ("epochs", "batch_size", "patience", "min_epochs", "ensemble", "repeats"):
            if getattr(self, key) < 1:
                raise ValueError(f"config '{key}': must be >= 1, got {getattr(self, key)}")
        if self.repeats > 1 and self.ensemble == 1:
            raise ValueError("config 'repeats': repeated cross-validation needs an ensemble "
                             "of K > 1 folds (ensemble)")
        if self.slice_interpolation not in ("linear", "nearest"):
            raise ValueError(f"config 'slice_interpolation': expected 'linear' or 'nearest', "
                             f"got {self.slice_interpolation!r}")
        if self.spacing_mm is not None and (len(self.spacing_mm) != 3
                                            or min(self.spacing_mm) <= 0):
            raise ValueError(f"config 'spacing_mm': expected three positive spacings (x, y, z) "
                             f"in mm, got {self.spacing_mm}")
        if self.aux_components < 0:
            raise ValueError(f"config 'aux_components': must be >= 0, got {self.aux_components}")
        if not self.aux_weight > 0:
            raise ValueError(f"config 'aux_weight': must be positive, got {self.aux_weight}")
        for key in ("rotate_deg", "intensity", "blur", "noise"):
            if not getattr(self, key) >= 0:
                raise ValueError(f"config '{key}': must be >= 0, got {getattr(self, key)}")
        if not self.head_ridge >= 0:
            raise ValueError(f"config 'head_ridge': must be >= 0, got {self.head_ridge}")
        if self.min_epochs > self.epochs:
            raise ValueError(f"config 'min_epochs': {self.min_epochs} exceeds epochs "
                             f"{self.epochs}")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"config: unknown key(s) {unknown}; known: {sorted(known)}")
        return cls(**data)

    @classmethod
    def from_yaml(cls, path: str | os.PathLike) -> TrainConfig:
        """Read a YAML mapping of the attributes above (missing keys take defaults)."""
        try:
            data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ValueError(f"config: cannot read {path}: {exc}") from exc
        if not isinstance(data, dict):
            raise ValueError(f"config: {path} must hold a YAML mapping")
        return cls.from_dict(data)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def hash(self) -> str:
        """SHA-256 (first 16 hex digits) of the canonical JSON of the configuration.

        Without a shape encoder (``roi_patch`` None), an auxiliary task
        (``aux_components`` 0), bias correction (``bias_order`` 0), noise
        augmentation (``noise`` 0) or repeated cross-validation (``repeats`` 1)
        their keys are left out, so that a configuration keeps the hash it had
        before they existed."""
        data = self.to_dict()
        for key, off in (("bias_order", 0), ("noise", 0.0), ("repeats", 1)):
            if data[key] == off:
                data.pop(key)
        if data["roi_patch"] is None:
            for key in ("roi_patch", "roi_width"):
                data.pop(key)
        if not data["aux_components"]:
            for key in ("aux_components", "aux_weight"):
                data.pop(key)
        text = json.dumps(data, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    @property
    def members(self) -> int:
        """Networks trained: ``ensemble`` folds times ``repeats`` deals (1: a single model)."""
        return self.ensemble * self.repeats

    def single(self, **changes: Any) -> TrainConfig:
        """This configuration for one network of its ensemble (with ``changes``)."""
        return dataclasses.replace(self, ensemble=1, repeats=1, **changes)

    @property
    def roi_channel(self) -> bool:
        """Whether each instance ends with an ROI channel (0-1), after the image channels."""
        return self.input == "multichannel" or self.backbone_args.get("pool") == "roi_stats"

    @property
    def in_channels(self) -> int:
        if self.input == "tiles":
            return 3
        if self.input == "multichannel":
            return len(self.modalities) + 1
        return 1


@dataclass
class BagData:
    """Patients as bags of instances, with their endpoint.

    Attributes
    ----------
    ids : list of str, length n
    bags : list of ndarray, bag ``i`` of shape (k_i, C, *spatial), float32
    time : ndarray, shape (n,), months
    event : ndarray, shape (n,), 0/1
    masks : list of ndarray or None
        Segmentation targets shaped like the bags (for ``seg_epochs``).
    cohort : list of str or None
    rois : list of ndarray or None
        One 3D ROI patch per patient, shape (1, D, H, W), 0/1 float32 (for a
        shape encoder, ``roi_patch``).
    aux : ndarray or None
        Auxiliary regression targets, shape (n, A), float32 (``aux_components``).
    """

    ids: list[str]
    bags: list[np.ndarray]
    time: np.ndarray
    event: np.ndarray
    masks: list[np.ndarray] | None = None
    cohort: list[str] | None = None
    rois: list[np.ndarray] | None = None
    aux: np.ndarray | None = None

    def __post_init__(self) -> None:
        n = len(self.ids)
        if n == 0:
            raise ValueError("bags: no patients")
        if not (len(self.bags) == len(self.time) == len(self.event) == n):
            raise ValueError(f"bags: {n} ids, {len(self.bags)} bags, {len(self.time)} times, "
                             f"{len(self.event)} events")
        if len(set(self.ids)) != n:
            raise ValueError("bags: duplicate patient ids")
        self.time = np.asarray(self.time, dtype=np.float64)
        self.event = np.asarray(self.event, dtype=np.float64)
        for pid, bag in zip(self.ids, self.bags, strict=True):
            if bag.ndim < 3 or bag.shape[0] == 0:
                raise ValueError(f"patient '{pid}': bag with zero instances (shape {bag.shape})")
            if not np.isfinite(bag).all():
                raise ValueError(f"patient '{pid}': image crops contain NaN or infinite values")
        if self.rois is not None:
            if len(self.rois) != n:
                raise ValueError(f"rois: {len(self.rois)} ROI patches for {n} patients")
            for pid, roi in zip(self.ids, self.rois, strict=True):
                if roi.ndim != 4 or roi.shape[0] != 1 or roi.shape != self.rois[0].shape:
                    raise ValueError(f"patient '{pid}': ROI patch of shape {roi.shape}; expected "
                                     f"(1, D, H, W) like the others {self.rois[0].shape}")
                if not roi.any():
                    raise ValueError(f"patient '{pid}': ROI patch is empty (tumour outside it)")
        if self.aux is not None:
            self.aux = np.asarray(self.aux, dtype=np.float32)
            if self.aux.ndim != 2 or self.aux.shape[0] != n:
                raise ValueError(f"aux: targets of shape {self.aux.shape} for {n} patients; "
                                 "expected (n, A)")
            bad = ~np.isfinite(self.aux).all(axis=1)
            if bad.any():
                raise ValueError(f"aux: NaN or infinite targets for patient(s) "
                                 f"{[self.ids[i] for i in np.flatnonzero(bad)[:5]]}")
        bad = ~np.isfinite(self.time) | (self.time < 0)
        if bad.any():
            raise ValueError(f"time: missing or negative for patient(s) "
                             f"{[self.ids[i] for i in np.flatnonzero(bad)[:5]]}")
        if not np.isin(self.event, (0, 1)).all():
            raise ValueError("event: values must be 0 or 1")

    def __len__(self) -> int:
        return len(self.ids)

    def subset(self, idx: Sequence[int]) -> BagData:
        pick = [int(i) for i in idx]
        return BagData([self.ids[i] for i in pick], [self.bags[i] for i in pick],
                       self.time[pick], self.event[pick],
                       None if self.masks is None else [self.masks[i] for i in pick],
                       None if self.cohort is None else [self.cohort[i] for i in pick],
                       None if self.rois is None else [self.rois[i] for i in pick],
                       None if self.aux is None else self.aux[pick])

    def digest(self) -> str:
        """SHA-256 of ids, endpoints and instance arrays: identifies the training data."""
        h = hashlib.sha256()
        for pid, bag, t, e in zip(self.ids, self.bags, self.time, self.event, strict=True):
            h.update(pid.encode())
            h.update(np.float64([t, e]).tobytes())
            h.update(str(bag.shape).encode())
            h.update(np.ascontiguousarray(bag, dtype=np.float32).tobytes())
        for roi in self.rois or []:
            h.update(np.ascontiguousarray(roi, dtype=np.float32).tobytes())
        if self.aux is not None:
            h.update(np.ascontiguousarray(self.aux, dtype=np.float32).tobytes())
        return h.hexdigest()


# ----------------------------------------------------------------------------- data

def _read_image(path: Path, spacing: Sequence[float] | None = None,
                interpolator: str = "linear", slice_interpolator: str | None = None
                ) -> np.ndarray:
    """A PNG as (H, W, 3), or a volume as (z, y, x), optionally resampled to ``spacing``
    (:func:`deepnomo.preprocess.resample`)."""
    if not path.is_file():
        raise FileNotFoundError(f"cases: image file {path} does not exist")
    if path.suffix.lower() == ".png":
        from PIL import Image

        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"), dtype=np.float32)
    import SimpleITK as sitk

    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as exc:
        raise ValueError(f"cases: cannot read image {path}: {exc}") from exc
    if spacing is not None:
        from deepnomo.preprocess import resample

        if image.GetDimension() != 3:
            raise ValueError(f"cases: image {path} has {image.GetDimension()} dimensions; "
                             "config 'spacing_mm' needs 3D volumes")
        image = resample(image, spacing, interpolator, slice_interpolator=slice_interpolator)
    return sitk.GetArrayFromImage(image).astype(np.float32)


def _tile(image: np.ndarray, size: int) -> np.ndarray:
    """An RGB tile (H, W, 3) in [0, 255] -> (3, size, size) scaled to [0, 1]."""
    x = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))[None] / 255.0
    if x.shape[-2:] != (size, size):
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    return x[0].numpy()


def background_ratio(image: np.ndarray, mask: np.ndarray, what: str = "image") -> np.ndarray:
    """Intensity relative to the tissue around the tumour: ``image / b - 1``.

    Parameters
    ----------
    image : ndarray, shape (D, H, W)
        One volume, positive intensities (e.g. SUV).
    mask : ndarray of bool, shape (D, H, W)
        The ROI; ``b`` is the mean of ``image`` outside it.
    what : str
        Names the volume in errors.

    Raises
    ------
    ValueError
        When the ROI covers the whole volume or ``b`` is not positive.
    """
    outside = image[~mask]
    if outside.size == 0:
        raise ValueError(f"normalize 'background': {what}: the ROI covers the whole volume")
    level = float(outside.mean())
    if not level > 0:
        raise ValueError(f"normalize 'background': {what}: mean intensity outside the ROI "
                         f"is {level:.4g}; a ratio needs a positive background")
    return image / np.float32(level) - np.float32(1.0)


def _instances(rows: pd.DataFrame, root: Path, cfg: TrainConfig, with_mask: bool
               ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """One patient's bag, segmentation target (3D patches, ``with_mask``) and ROI patch
    (``cfg.roi_patch``)."""
    by_mod = {m: rows[rows["modality"] == m] for m in cfg.modalities}
    if cfg.input == "tiles":
        tiles = pd.concat(by_mod.values())
        bag = np.stack([_tile(_read_image(root / p), cfg.crop_size) for p in tiles["image"]])
        return bag, None, None
    from deepnomo import crops  # imaging side: tumour-centred crops

    first = by_mod[cfg.modalities[0]].iloc[0]
    mask = _read_image(root / first["mask"], cfg.spacing_mm, "nearest") > 0
    images = [_read_image(root / by_mod[m].iloc[0]["image"], cfg.spacing_mm,
                          slice_interpolator=cfg.slice_interpolation) for m in cfg.modalities]
    if cfg.bias_order:
        from deepnomo.preprocess import polynomial_bias_correct

        images = [polynomial_bias_correct(im, mask, cfg.bias_order) for im in images]
    if cfg.normalize == "zscore":
        images = [(im - im.mean()) / (im.std() + 1e-6) for im in images]
    elif cfg.normalize == "background":
        images = [background_ratio(im, mask, f"{rows.iloc[0]['patient_id']} {m}")
                  for im, m in zip(images, cfg.modalities, strict=True)]
    roi = None
    if cfg.roi_patch is not None:
        roi = crops.tumor_patch(mask.astype(np.float32), mask, size=tuple(cfg.roi_patch))[None]
    if cfg.input == "slices":
        bag = crops.tumor_slices(images[0], mask, size=cfg.crop_size,
                                 max_slices=cfg.max_slices)[:, None]
        return np.asarray(bag, dtype=np.float32), None, roi
    if cfg.input == "multichannel":
        bag = crops.multichannel_slices(images, mask, size=cfg.crop_size)
        if cfg.max_slices and len(bag) > cfg.max_slices:  # largest ROI sections, in z order
            area = bag[:, -1].sum(axis=(1, 2))
            bag = bag[np.sort(np.argsort(-area, kind="stable")[:cfg.max_slices])]
        return np.asarray(bag, dtype=np.float32), None, roi
    size = tuple(cfg.patch_size)
    channels = [crops.tumor_patch(im, mask, size=size) for im in images]
    seg = None
    if with_mask or cfg.roi_channel:
        m = np.asarray(crops.tumor_patch(mask.astype(np.float32), mask, size=size))
        m = (m > 0.5 * (m.max() + m.min())).astype(np.float32)
        seg = m[None, None] if with_mask else None
        channels += [m] if cfg.roi_channel else []
    return np.asarray(np.stack(channels)[None], dtype=np.float32), seg, roi


def load_bags(cohort: pd.DataFrame, cases_csv: str | os.PathLike, cfg: TrainConfig,
              with_masks: bool = False, only_cohort: str | None = None) -> BagData:
    """Build bags for the patients of ``cohort`` from ``cases.csv``.

    Parameters
    ----------
    cohort : DataFrame
        Cohort table (``patient_id``, ``cohort``, ``<endpoint>_time``/``_event``).
    cases_csv : path
        Columns ``patient_id``, ``modality``, ``image``, ``mask`` (paths
        relative to the file's folder) and optionally ``reader`` (the first
        reader's masks are used).
    cfg : TrainConfig
    with_masks : bool
        Also build segmentation targets (3D patches only).
    only_cohort : str, optional
        Build bags only for rows whose ``cohort`` is this label (e.g. ``"train"``);
        identifiers are still checked against the whole table.

    Raises
    ------
    ValueError
        On missing columns, patients without images of a modality, case rows
        for patients absent from the cohort, or unreadable / non-finite images.
    """
    cases_csv = Path(cases_csv)
    try:
        cases = pd.read_csv(cases_csv, dtype={"patient_id": str})
    except (OSError, pd.errors.ParserError) as exc:
        raise ValueError(f"cases: cannot read {cases_csv}: {exc}") from exc
    need = {"patient_id", "modality", "image"} | ({"mask"} if cfg.input != "tiles" else set())
    missing = sorted(need - set(cases.columns))
    if missing:
        raise ValueError(f"cases ({cases_csv}): missing column(s) {missing}")
    for col in (f"{cfg.endpoint}_time", f"{cfg.endpoint}_event", "patient_id"):
        if col not in cohort.columns:
            raise ValueError(f"cohort table: column '{col}' is missing (endpoint "
                             f"'{cfg.endpoint}' in the config)")
    if "reader" in cases.columns:  # first reader's masks; rows without a reader (tiles) stay
        reader = pd.to_numeric(cases["reader"], errors="coerce")
        cases = cases[reader.isna() | (reader == reader.min())]
    cases = cases[cases["modality"].isin(cfg.modalities)]
    ids = cohort["patient_id"].astype(str).tolist()
    extra = sorted(set(cases["patient_id"]) - set(ids))
    if extra:
        raise ValueError(f"cases ({cases_csv}): patient_id(s) not in the cohort table: {extra[:5]}"
                         + (f" and {len(extra) - 5} more" if len(extra) > 5 else ""))
    if only_cohort is not None:
        if "cohort" not in cohort.columns:
            raise ValueError("cohort table: column 'cohort' is missing")
        cohort = cohort[cohort["cohort"].astype(str) == only_cohort]
        if len(cohort) == 0:
            raise ValueError(f"cohort table: no patients in cohort '{only_cohort}'")
        ids = cohort["patient_id"].astype(str).tolist()
    groups = dict(tuple(cases.groupby("patient_id")))
    bags, masks, rois = [], [], []
    for pid in ids:
        rows = groups.get(pid)
        have = set() if rows is None else set(rows["modality"])
        lacking = [m for m in cfg.modalities if m not in have]
        if lacking:
            raise ValueError(f"cases ({cases_csv}): patient '{pid}' of the cohort table has no "
                             f"{lacking} image")
        try:
            bag, seg, roi = _instances(rows, cases_csv.parent, cfg, with_masks)
        except (ValueError, FileNotFoundError) as exc:
            raise ValueError(f"patient '{pid}': {exc}") from exc
        bags.append(bag)
        masks.append(seg)
        rois.append(roi)
    return BagData(ids, bags, cohort[f"{cfg.endpoint}_time"].to_numpy(float),
                   cohort[f"{cfg.endpoint}_event"].to_numpy(float),
                   masks if with_masks and cfg.input == "patch" else None,
                   cohort["cohort"].astype(str).tolist() if "cohort" in cohort else None,
                   rois if cfg.roi_patch is not None else None)


# ----------------------------------------------------------------------------- augmentation

def _gaussian_kernel(sigma: float, device: torch.device) -> torch.Tensor:
    radius = max(1, int(math.ceil(2 * sigma)))
    x = torch.arange(-radius, radius + 1, dtype=torch.float32, device=device)
    k = torch.exp(-0.5 * (x / sigma) ** 2)
    return k / k.sum()


def augment(x: torch.Tensor, cfg: TrainConfig, gen: torch.Generator) -> torch.Tensor:
    """Randomly flip, rotate (in-plane), jitter intensity, blur and add noise to each instance.

    Flips and rotations move every channel together; intensity jitter, blur and
    noise change only the image channels: the ROI channel (the last, see
    ``TrainConfig.roi_channel``) keeps its 0/1 values, since it is a region,
    not a signal (it also weights the ``roi_stats`` pooling).

    Parameters
    ----------
    x : Tensor, shape (m, C, H, W) or (m, C, D, H, W)
    gen : torch.Generator (CPU)
        Source of every random draw, for reproducibility.
    """
    m, nd = x.shape[0], x.ndim - 2
    dev = x.device
    n_image = x.shape[1] - 1 if cfg.roi_channel else x.shape[1]
    per_instance = (-1, *[1] * (x.ndim - 1))  # one draw per instance, broadcast over the rest

    def uniform(*shape: int) -> torch.Tensor:
        return torch.rand(*shape, generator=gen).to(dev)

    if cfg.flip:
        for axis in range(2, x.ndim):
            flip = uniform(m) < 0.5
            x = torch.where(flip.view(per_instance), x.flip(axis), x)
    if cfg.rotate_deg > 0:
        ang = (uniform(m) * 2 - 1) * math.radians(cfg.rotate_deg)
        c, s = torch.cos(ang), torch.sin(ang)
        theta = torch.zeros(m, nd, nd + 1, device=dev)
        # affine_grid orders coordinates (W, H[, D]): rows 0-1 rotate the in-plane axes
        theta[:, 0, 0], theta[:, 0, 1], theta[:, 1, 0], theta[:, 1, 1] = c, -s, s, c
        if nd == 3:
            theta[:, 2, 2] = 1.0
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    image, roi = x[:, :n_image], x[:, n_image:]
    if cfg.intensity > 0:
        a = (uniform(m) * 2 - 1) * cfg.intensity
        b = (uniform(m) * 2 - 1) * cfg.intensity
        image = image * (1 + a.view(per_instance)) + b.view(per_instance)
    if cfg.blur > 0:
        sigma = float(torch.rand(1, generator=gen)) * cfg.blur
        if sigma > 0.1:
            k = _gaussian_kernel(sigma, dev)
            for axis in range(nd):
                shape = [1] * nd
                shape[axis] = k.numel()
                w = k.view(1, 1, *shape).repeat(n_image, 1, *[1] * nd)
                pad = [0] * (2 * nd)
                pad[2 * (nd - 1 - axis)] = pad[2 * (nd - 1 - axis) + 1] = k.numel() // 2
                conv = F.conv2d if nd == 2 else F.conv3d
                image = conv(F.pad(image, pad, mode="replicate"), w, groups=n_image)
    if cfg.noise > 0:  # after the blur: acquisition noise is white
        sd = uniform(m) * cfg.noise
        white = torch.randn(image.shape, generator=gen).to(dev)
        image = image + sd.view(per_instance) * white
    return torch.cat([image, roi], dim=1)


def augment_roi(roi: torch.Tensor, cfg: TrainConfig, gen: torch.Generator) -> torch.Tensor:
    """Randomly flip each ROI patch ``(n, 1, D, H, W)`` along every axis and swap its
    in-plane axes (when ``cfg.flip``): exact moves of a binary mask, which keep its
    shape descriptors; no rotation by other angles, which would blur it."""
    if not cfg.flip:
        return roi
    n = roi.shape[0]

    def coin() -> torch.Tensor:
        return (torch.rand(n, generator=gen) < 0.5).to(roi.device).view(-1, 1, 1, 1, 1)

    for axis in (2, 3, 4):
        roi = torch.where(coin(), roi.flip(axis), roi)
    return torch.where(coin(), roi.transpose(3, 4), roi)


# ----------------------------------------------------------------------------- model

def build_model(cfg: TrainConfig) -> SurvivalMIL | RiskEnsemble:
    """The network a configuration describes: one :class:`SurvivalMIL`, or an
    ensemble of ``cfg.members`` of them."""
    if cfg.members > 1:
        return RiskEnsemble([build_model(cfg.single()) for _ in range(cfg.members)])
    sequences = len(cfg.modalities) if cfg.input == "patch" else 1
    encoder = build_backbone(cfg.backbone, in_channels=cfg.in_channels, sequences=sequences,
                             **cfg.backbone_args)
    shape = ROIShapeEncoder(cfg.roi_width) if cfg.roi_patch is not None else None
    return SurvivalMIL(encoder, pooling=cfg.pooling, dropout=cfg.dropout, shape_encoder=shape,
                       aux_outputs=cfg.aux_components)


class Segmenter(nn.Module):
    """The U-Nets of a model's encoder as one module: ``(N, S, D, H, W)`` -> logits per sequence.

    Segmentation pretraining runs through this view, so that data-parallel
    training wraps (and synchronizes) exactly the parameters it uses.
    """

    def __init__(self, model: SurvivalMIL) -> None:
        super().__init__()
        enc = model.encoder
        encs = enc.encoders if isinstance(enc, MultiSequenceEncoder) else [enc]
        if not all(isinstance(e, UNetEncoder) for e in encs):
            raise ValueError("config 'seg_epochs': segmentation needs backbone unet3d")
        self.unets = nn.ModuleList([e.unet for e in encs])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([u(x[:, s:s + 1]) for s, u in enumerate(self.unets)], dim=1)


def _seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def resolve_device(device: str) -> torch.device:
    """``"auto"`` -> CUDA when present, else CPU; otherwise the named device."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if not re.fullmatch(r"cpu|cuda(:\d+)?", device):
        raise ValueError(f"device: expected 'auto', 'cpu', 'cuda' or 'cuda:N', got {device!r}")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device: {device!r} requested but CUDA is not available")
    return torch.device(device)


def process_device(dev: torch.device) -> torch.device:
    """This process's device: under ``torchrun`` (``WORLD_SIZE`` > 1) a bare ``cuda``
    means GPU ``LOCAL_RANK``, one GPU per process; otherwise ``dev`` itself."""
    if dev.type == "cuda" and dev.index is None and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return dev


def _batch(data: BagData, idx: Sequence[int], device: torch.device
           ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Instances, bag index, time, event and (when the data have them) ROI patches."""
    x, bag_index = collate_bags([torch.from_numpy(data.bags[i]) for i in idx])
    roi = None if data.rois is None else torch.from_numpy(
        np.stack([data.rois[i] for i in idx])).to(device)
    return (x.to(device), bag_index.to(device),
            torch.as_tensor(data.time[list(idx)], device=device),
            torch.as_tensor(data.event[list(idx)], device=device), roi)


def _autocast(device: torch.device, cfg: TrainConfig):
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16,
                          enabled=cfg.amp and device.type == "cuda")


def batch_loss(model: nn.Module, data: BagData, idx: Sequence[int], phase: str,
               cfg: TrainConfig, device: torch.device,
               gen: torch.Generator | None = None) -> torch.Tensor:
    """Loss of one batch of patients in a phase (``"seg"``, ``"pretrain"``, ``"cox"``).

    A Cox batch without events contributes a zero loss (kept in the graph so
    that data-parallel processes stay in step).
    """
    x, bag_index, time, event, roi = _batch(data, idx, device)
    if gen is not None:  # masks are not transformed: no spatial augmentation while segmenting
        spatial = phase != "seg"
        x = augment(x, cfg if spatial else dataclasses.replace(cfg, flip=False, rotate_deg=0.0),
                    gen)
        if roi is not None and spatial:  # the segmenter does not read ROI patches
            roi = augment_roi(roi, cfg, gen)
    with _autocast(device, cfg):
        if phase == "seg":  # model is a Segmenter; one target mask for every sequence
            target = torch.cat([torch.from_numpy(data.masks[i]) for i in idx]).to(device)
            logits = model(x).float()
            return dice_loss(logits, target.expand_as(logits))
        out = model(x, bag_index, len(idx), roi)
    if phase == "pretrain":
        label, known = kyear_labels(time, event, cfg.pretrain_horizon)
        loss = (out.logit.float().sum() * 0.0 if float(known.sum()) == 0 else
                smoothed_bce(out.logit.float(), label, cfg.label_smoothing, weight=known))
    elif float(event.sum()) == 0:
        loss = out.risk.float().sum() * 0.0
    else:
        loss = cox_ph_loss(out.risk.float(), time, event, ties=cfg.ties)
    if not cfg.aux_components:
        return loss
    target = torch.from_numpy(data.aux[list(idx)]).to(device)  # mean squared error of the head
    return loss + cfg.aux_weight * torch.mean((out.aux.float() - target) ** 2)


def dihedral_views(x: torch.Tensor) -> list[torch.Tensor]:
    """The eight in-plane flips and quarter turns of instances ``(m, C, ..., H, W)``.

    Tumours have no preferred in-plane orientation, so each view is an equally
    valid image of the same patient (test-time augmentation).
    """
    if x.shape[-1] != x.shape[-2]:
        raise ValueError(f"instances: quarter turns need square planes, got {tuple(x.shape[-2:])}")
    turns = [torch.rot90(x, k, dims=(-2, -1)) for k in range(4)]
    return turns + [t.flip(-1) for t in turns]


@torch.no_grad()
def _bag_outputs(model: nn.Module, data: BagData, device: str | torch.device, batch_size: int,
                 field: str, autocast: bool, tta: bool = False) -> np.ndarray:
    """One field of the model's output (``risk`` or ``embedding``) for every bag, in order;
    with ``tta`` the mean over :func:`dihedral_views`."""
    device = torch.device(device)
    model.eval()
    out = []
    for start in range(0, len(data), batch_size):
        idx = list(range(start, min(start + batch_size, len(data))))
        x, bag_index, _, _, roi = _batch(data, idx, device)
        views = dihedral_views(x) if tta else [x]
        if roi is None:
            roi_views = [None] * len(views)
        else:  # each ROI patch turns with its bag
            roi_views = dihedral_views(roi) if tta else [roi]
        with _autocast(device, TrainConfig(amp=autocast)):
            values = [getattr(model(v, bag_index, len(idx), r), field).float()
                      for v, r in zip(views, roi_views, strict=True)]
        out.append(torch.stack(values).mean(0).cpu())
    return torch.cat(out).numpy().astype(np.float64)


def predict_risk(model: nn.Module, data: BagData, device: str | torch.device = "cpu",
                 batch_size: int = 32, tta: bool = False) -> np.ndarray:
    """Risk score (log relative hazard, higher = higher risk) per patient, model in eval mode.

    ``tta``: mean over the eight in-plane flips and quarter turns of the instances.
    """
    risk = _bag_outputs(model, data, device, batch_size, "risk", autocast=True, tta=tta)
    if not np.isfinite(risk).all():
        bad = [data.ids[i] for i in np.flatnonzero(~np.isfinite(risk))[:5]]
        raise TrainingError(f"model produced non-finite risk for patient(s) {bad}")
    return risk


def predict_embedding(model: SurvivalMIL | RiskEnsemble, data: BagData,
                      device: str | torch.device = "cpu", batch_size: int = 32,
                      tta: bool = False) -> np.ndarray:
    """Pooled bag features ``(n, F)`` (the input of the risk head), model in eval mode
    (full precision: they feed the multi-task network).

    ``tta``: mean over the eight in-plane flips and quarter turns of the instances.
    """
    return _bag_outputs(model, data, device, batch_size, "embedding", autocast=False, tta=tta)


def refit_risk_head(model: SurvivalMIL, data: BagData, fit_idx: np.ndarray, cfg: TrainConfig,
                    device: str | torch.device = "cpu") -> np.ndarray:
    r"""Refit a locked network's linear risk head by ridge Cox on its pooled features.

    With the patients' pooled features :math:`z_i` (:func:`predict_embedding`, over
    the eight in-plane views when ``cfg.tta``), standardized by their mean
    :math:`\mu` and SD :math:`s` over the patients ``fit_idx``, the head becomes
    :math:`\eta = \sum_f \beta_f (z_f - \mu_f) / s_f`, with :math:`\beta` from
    :func:`deepnomo.ridge_cox.fit_ridge_cox` on those patients (penalty
    ``cfg.head_ridge``, ties ``cfg.ties``); constant features get no weight. The
    encoder and pooling are not changed. Since the risk is linear in the pooled
    features, the mean risk over views equals the head applied to the mean
    features, so the new risks come from the same forward pass.

    Parameters
    ----------
    model : SurvivalMIL
        Modified in place.
    data : BagData
        Patients to score with the new head.
    fit_idx : ndarray of int
        Those of ``data`` the network trained on (never validation or test
        patients): the head is fitted on them alone.

    Returns
    -------
    ndarray, shape (len(data),)
        The new risk of every patient of ``data``, as :func:`predict_risk` gives it
        (with ``tta=cfg.tta``) up to rounding.
    """
    z = predict_embedding(model, data, device, tta=cfg.tta)
    fit = z[fit_idx]
    mu, sd = fit.mean(0), fit.std(0)
    keep = sd > 1e-8 * max(1.0, float(np.abs(fit).max()))
    weight = np.zeros_like(mu)
    beta = fit_ridge_cox((fit[:, keep] - mu[keep]) / sd[keep], data.time[fit_idx],
                         data.event[fit_idx], cfg.head_ridge, ties=cfg.ties)
    weight[keep] = beta / sd[keep]
    head = model.risk_head
    with torch.no_grad():
        head.weight.copy_(torch.as_tensor(weight, dtype=head.weight.dtype).view_as(head.weight))
        head.bias.fill_(float(-(weight * mu).sum()))
    return (z - mu) @ weight


def fit_multitask(features: np.ndarray, time: np.ndarray, event: np.ndarray,
                  treated: np.ndarray, hidden: Sequence[int] = (32,), dropout: float = 0.1,
                  lr: float = 1e-2, weight_decay: float = 1e-3, epochs: int = 500,
                  val_fraction: float = 0.2, patience: int = 50, seed: int = 0,
                  ties: str = "efron", ensemble: int = 1
                  ) -> tuple[MultiTaskCox | MultiTaskEnsemble, dict[str, Any]]:
    """Train the prognostic / predictive network on deep features of the training cohort.

    Full-batch AdamW on the Cox loss of ``g(x) + (treated - 1/2) f(x)``
    (:mod:`deepnomo.nn.multitask`); features are standardized with the
    training share's mean and SD (stored in the model); early stopping on the
    validation C-index of that log hazard. With ``ensemble = K > 1``, K networks
    are trained on a K-fold split stratified by event (member ``k`` validates on
    fold ``k`` and starts from seed ``seed + k``) and their scores are averaged
    (:class:`~deepnomo.nn.multitask.MultiTaskEnsemble`): one network's early
    stopping rests on a fifth of the patients, the ensemble's on all of them.

    Parameters
    ----------
    features : ndarray, shape (n, F)
        Per-sequence deep features concatenated (:func:`predict_embedding`).
    time, event : ndarray, shape (n,)
    treated : ndarray, shape (n,), 0 = control, 1 = treated
    ensemble : int
        1 for a single network on a random ``val_fraction`` hold-out; K > 1 for
        a K-fold cross-validation ensemble.

    Returns
    -------
    model : MultiTaskCox or MultiTaskEnsemble
        Each network at its best validation epoch, in eval mode.
    info : dict
        ``best_epoch`` (a list for an ensemble), ``val_c_index`` (for an
        ensemble, out-of-fold: every patient scored by the member that
        validated on it), ``history`` (loss per epoch; a list per member).
    """
    x = np.asarray(features, dtype=np.float64)
    n = x.shape[0]
    if x.ndim != 2 or not np.isfinite(x).all():
        raise ValueError("features: expected a finite (n, F) array")
    treated = np.asarray(treated, dtype=np.float64)
    if len(time) != n or len(event) != n or len(treated) != n:
        raise ValueError(f"features, time, event, treated: lengths differ ({n}, {len(time)}, "
                         f"{len(event)}, {len(treated)})")
    if not np.isin(treated, (0, 1)).all() or len(np.unique(treated)) < 2:
        raise ValueError("treated: must be 0/1 with both arms present")
    if not isinstance(ensemble, int) or ensemble < 1:
        raise ValueError(f"ensemble: must be a positive integer, got {ensemble!r}")
    dummy = BagData([str(i) for i in range(n)], [np.zeros((1, 1, 1), np.float32)] * n,
                    time, event)
    cfg = TrainConfig(val_fraction=val_fraction, seed=seed, ensemble=ensemble)
    splits = [split_train_validation(dummy, cfg, k) for k in range(ensemble)]
    tensors = tuple(torch.tensor(a) for a in (x, dummy.time, dummy.event, treated))
    fits = [_fit_multitask_member(tensors, splits[k],
                                  f" (member {k + 1}/{ensemble})" if ensemble > 1 else "",
                                  seed=seed + k, hidden=hidden, dropout=dropout, lr=lr,
                                  weight_decay=weight_decay, epochs=epochs, patience=patience,
                                  ties=ties) for k in range(ensemble)]
    if ensemble == 1:
        model, best_epoch, best_c, history = fits[0]
        return model, {"best_epoch": best_epoch, "val_c_index": best_c, "history": history}
    tx, _, _, tr = tensors
    out_of_fold = np.zeros(n)
    for (model, *_), (_, val_idx) in zip(fits, splits, strict=True):
        with torch.no_grad():
            out_of_fold[val_idx] = model.log_hazard(tx[val_idx], tr[val_idx]).numpy()
    return MultiTaskEnsemble([f[0] for f in fits]).eval(), {
        "best_epoch": [f[1] for f in fits], "history": [f[3] for f in fits],
        "val_c_index": harrell_c(out_of_fold, dummy.time, dummy.event)}


def _fit_multitask_member(tensors: tuple[torch.Tensor, ...],
                          split: tuple[np.ndarray, np.ndarray], label: str, *, seed: int,
                          hidden: Sequence[int], dropout: float, lr: float,
                          weight_decay: float, epochs: int, patience: int, ties: str
                          ) -> tuple[MultiTaskCox, int, float, list[float]]:
    """One multi-task network on ``split`` (training, validation indices) of
    ``tensors`` (features, time, event, treated); returns it at its best
    validation epoch (eval mode), that epoch, its validation C and the loss per epoch."""
    tx, tt, te, tr = tensors
    train_idx, val_idx = split
    x_train = tx[train_idx].numpy()
    _seed_all(seed)
    model = MultiTaskCox(tx.shape[1], hidden=hidden, dropout=dropout).double()
    model.shift.copy_(torch.as_tensor(x_train.mean(0)))
    model.scale.copy_(torch.as_tensor(x_train.std(0) + 1e-8))
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    best, best_epoch, best_state, history = -1.0, 0, None, []
    for epoch in range(epochs):
        model.train()
        opt.zero_grad()
        loss = cox_ph_loss(model.log_hazard(tx[train_idx], tr[train_idx]), tt[train_idx],
                           te[train_idx], ties=ties)
        if not torch.isfinite(loss):
            raise TrainingError(f"multi-task loss diverged at epoch {epoch + 1}{label}")
        loss.backward()
        opt.step()
        history.append(float(loss.detach()))
        model.eval()
        with torch.no_grad():
            c = harrell_c(model.log_hazard(tx[val_idx], tr[val_idx]).numpy(),
                          tt[val_idx].numpy(), te[val_idx].numpy())
        if c > best + 1e-9:
            best, best_epoch = c, epoch + 1
            best_state = {key: v.clone() for key, v in model.state_dict().items()}
        elif epoch + 1 - best_epoch >= patience:
            break
    model.load_state_dict(best_state)
    return model.eval(), best_epoch, best, history


# ----------------------------------------------------------------------------- loop

def _save(obj: Any, path: Path) -> None:
    atomic_write(path, lambda tmp: torch.save(obj, tmp))


def split_train_validation(data: BagData, cfg: TrainConfig,
                           member: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Training and validation indices, stratified by event and fixed by ``cfg.seed``.

    A single model (``cfg.ensemble == 1``) holds out a random ``val_fraction``
    of each event class. Ensemble member ``r K + k`` holds out fold ``k`` of
    the ``K = cfg.ensemble`` folds of deal ``r``: each event class is permuted
    (deal 0 by ``cfg.seed``, deal ``r`` by the seed sequence ``(cfg.seed, r)``)
    and dealt round-robin, so every patient validates one member per deal.
    """
    if not 0 <= member < cfg.members:
        raise ValueError(f"member: must be in [0, {cfg.members}), got {member}")
    deal, fold = divmod(member, cfg.ensemble)
    rng = np.random.default_rng(cfg.seed if deal == 0 else [cfg.seed, deal])
    val = []
    for e in (0, 1):
        perm = rng.permutation(np.flatnonzero(data.event == e))
        if cfg.ensemble == 1:
            val.extend(perm[:int(round(cfg.val_fraction * len(perm)))].tolist())
        else:
            val.extend(perm[fold::cfg.ensemble].tolist())
    val_idx = np.sort(np.array(val, dtype=int))
    train_idx = np.setdiff1d(np.arange(len(data)), val_idx)
    if data.event[train_idx].sum() < 2 or data.event[val_idx].sum() < 1:
        raise ValueError(f"event: too few events to train ({int(data.event.sum())} in "
                         f"{len(data)} patients; need >= 2 for training and >= 1 for validation"
                         + (f" in each of {cfg.ensemble} folds" if cfg.ensemble > 1 else "") + ")")
    return train_idx, val_idx


def _phase(epoch: int, cfg: TrainConfig) -> str:
    """Phase of a network's ``epoch`` after segmentation: k-year pretraining, then Cox."""
    return "pretrain" if epoch < cfg.pretrain_epochs else "cox"


def _dist() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def init_distributed(device: torch.device) -> bool:
    """Join the process group ``torchrun`` describes (gloo on CPU, NCCL on CUDA)."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    if not torch.distributed.is_initialized():
        torch.distributed.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return True


def train_epoch(model: nn.Module, opt: torch.optim.Optimizer, data: BagData,
                train_idx: np.ndarray, epoch: int, phase: str, cfg: TrainConfig,
                device: torch.device, progress: bool = False) -> float:
    """One pass over the training patients in ``phase`` (``"seg"``, ``"pretrain"``,
    ``"cox"``); returns the mean batch loss.

    The phase sets the learning rate and batch size (``seg_lr`` and
    ``seg_batch_size`` while segmenting, else ``lr`` and ``batch_size``).
    Batches are drawn from a permutation fixed by ``(seed, epoch)``; under DDP
    each process takes every ``world``-th patient of each batch.
    """
    rank, world = _dist()
    torch.manual_seed(cfg.seed * 100_003 + epoch * 1_009 + rank)  # dropout
    gen = torch.Generator().manual_seed(cfg.seed * 7_919 + epoch * 104_729 + rank)
    order = train_idx[torch.randperm(len(train_idx),
                                     generator=torch.Generator().manual_seed(cfg.seed + epoch))]
    seg = phase == "seg"
    for group in opt.param_groups:
        group["lr"] = cfg.seg_lr if seg and cfg.seg_lr else cfg.lr
    size = cfg.seg_batch_size if seg and cfg.seg_batch_size else cfg.batch_size
    batches = [order[i:i + size] for i in range(0, len(order), size)]
    batches = [b for b in batches if len(b) >= 2 * world]
    model.train()
    losses = []
    bar = None
    if progress and rank == 0:
        from tqdm import tqdm

        bar = tqdm(total=len(batches), desc=f"{cfg.name} epoch {epoch + 1} ({phase})",
                   leave=False, dynamic_ncols=True)
    for b, batch in enumerate(batches):
        mine = batch[rank::world]
        opt.zero_grad(set_to_none=True)
        try:
            loss = batch_loss(model, data, mine, phase, cfg, device, gen)
        except ValueError as exc:
            raise TrainingError(f"epoch {epoch + 1}, batch {b + 1} ({phase}): {exc}") from exc
        value = float(loss.detach())
        if not math.isfinite(value) or value > cfg.max_loss:
            raise TrainingError(f"loss diverged at epoch {epoch + 1}, batch {b + 1} ({phase} "
                                f"loss {value:.4g}; limit max_loss={cfg.max_loss:g})")
        loss.backward()
        if cfg.grad_clip > 0:
            nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        losses.append(value)
        if bar is not None:
            bar.set_postfix(loss=f"{value:.4f}")
            bar.update()
    if bar is not None:
        bar.close()
    if not all(torch.isfinite(p).all() for p in model.parameters()):
        raise TrainingError(f"weights became NaN or infinite at epoch {epoch + 1}")
    return float(np.mean(losses)) if losses else float("nan")


def _log(msg: str) -> None:
    if _dist()[0] == 0:
        print(msg, flush=True)


def _load_checkpoint(path: Path, cfg: TrainConfig) -> dict[str, Any]:
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    if ckpt.get("config_hash") != cfg.hash():
        old = ckpt.get("config", {})
        diff = sorted(k for k in set(old) | set(cfg.to_dict())
                      if old.get(k) != cfg.to_dict().get(k))
        raise ConfigMismatchError(f"checkpoint {path} was written with a different config "
                                  f"(hash {ckpt.get('config_hash')} vs {cfg.hash()}; "
                                  f"differing keys: {diff})")
    return ckpt


def _ddp(module: nn.Module, dev: torch.device) -> nn.Module:
    return nn.parallel.DistributedDataParallel(
        module, device_ids=[dev.index] if dev.type == "cuda" else None,
        find_unused_parameters=True)


def _fit_segmentation(cfg: TrainConfig, data: BagData, out: Path, dev: torch.device,
                      distributed: bool, resume: bool, progress: bool,
                      callback: Callable[[dict[str, Any]], None] | None) -> dict[str, Any]:
    """Dice-loss segmentation epochs of the U-Nets, once for every network of the run.

    Trains on all of ``data``'s patients (masks, no outcomes), from the
    network that seed ``cfg.seed`` builds. Every ensemble member then starts its
    Cox phase from these U-Nets and this optimizer state, each with its own
    seed's risk head. Returns ``unets`` (the :class:`Segmenter` weights),
    ``optimizer``, ``history`` and ``seconds``; ``out/last.pt`` is rewritten
    after every epoch and a finished stage is not rerun on resume.
    """
    out.mkdir(parents=True, exist_ok=True)
    rank, _ = _dist()
    _seed_all(cfg.seed)
    model = build_model(cfg.single()).to(dev)
    seg = Segmenter(model)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    state: dict[str, Any] = {"epoch": 0, "history": [], "seconds": 0.0}
    ckpt_path = out / CHECKPOINT
    if resume and ckpt_path.is_file():
        ckpt = _load_checkpoint(ckpt_path, cfg)
        seg.load_state_dict(ckpt["unets"])
        opt.load_state_dict(ckpt["optimizer"])
        state.update({k: ckpt[k] for k in state})
        _log(f"[{cfg.name} segmentation] resumed from {ckpt_path} after epoch {state['epoch']}")
    net = _ddp(seg, dev) if distributed else seg
    everyone = np.arange(len(data))
    start = _time.time() - state["seconds"]
    while state["epoch"] < cfg.seg_epochs:
        epoch = state["epoch"]
        loss = train_epoch(net, opt, data, everyone, epoch, "seg", cfg, dev, progress)
        record = {"epoch": epoch + 1, "phase": "seg", "loss": loss}
        state["epoch"] = epoch + 1
        state["history"].append(record)
        state["seconds"] = _time.time() - start
        if rank == 0:
            _save({"config": cfg.to_dict(), "config_hash": cfg.hash(), "unets": seg.state_dict(),
                   "optimizer": opt.state_dict(), **state}, ckpt_path)
        if progress:
            _log(f"[{cfg.name} segmentation] epoch {epoch + 1}/{cfg.seg_epochs}: "
                 f"Dice loss {loss:.4f}")
        if callback is not None:
            callback(record)
    return {"unets": seg.state_dict(), "optimizer": opt.state_dict(), **state}


def _fit_member(cfg: TrainConfig, data: BagData, member: int,
                split: tuple[np.ndarray, np.ndarray], out: Path, dev: torch.device,
                distributed: bool, resume: bool, progress: bool,
                callback: Callable[[dict[str, Any]], None] | None,
                segmentation: dict[str, Any] | None = None) -> dict[str, Any]:
    """Train one network (a single model, or member ``member`` of an ensemble) in ``out``.

    ``segmentation`` (from :func:`_fit_segmentation`) gives the U-Nets and optimizer
    state to start from. Returns the training state: ``best_state`` (weights at
    the best validation C), ``best_c``, ``best_epoch`` (counting this network's
    pretraining and Cox epochs), ``history`` and ``seconds``.
    """
    out.mkdir(parents=True, exist_ok=True)
    rank, _ = _dist()
    run_cfg = cfg.single(seed=cfg.seed + member)  # member's streams
    label = cfg.name if cfg.members == 1 else f"{cfg.name} member {member + 1}/{cfg.members}"
    train_idx, val_idx = split
    _seed_all(run_cfg.seed)
    model = build_model(run_cfg).to(dev)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    state = {"epoch": 0, "best_c": -1.0, "best_epoch": -1, "bad_epochs": 0, "history": [],
             "best_state": None, "seconds": 0.0}
    ckpt_path = out / CHECKPOINT
    if resume and ckpt_path.is_file():
        ckpt = _load_checkpoint(ckpt_path, cfg)
        if ckpt.get("member", 0) != member:
            raise ConfigMismatchError(f"checkpoint {ckpt_path} belongs to ensemble member "
                                      f"{ckpt.get('member', 0)}, not {member}")
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
        state.update({k: ckpt[k] for k in state})
        _log(f"[{label}] resumed from {ckpt_path} after epoch {state['epoch']}")
    else:
        if resume:
            _log(f"[{label}] no checkpoint in {out}; starting afresh")
        if segmentation is not None:  # a copy: the optimizer updates its state in place
            Segmenter(model).load_state_dict(segmentation["unets"])
            opt.load_state_dict(copy.deepcopy(segmentation["optimizer"]))
    net = _ddp(model, dev) if distributed else model
    val = data.subset(val_idx)
    total = cfg.pretrain_epochs + cfg.epochs
    start = _time.time() - state["seconds"]
    stopped = state["bad_epochs"] >= cfg.patience
    while state["epoch"] < total and not stopped:
        epoch = state["epoch"]
        phase = _phase(epoch, cfg)
        loss = train_epoch(net, opt, data, train_idx, epoch, phase, run_cfg, dev, progress)
        c = harrell_c(predict_risk(model, val, dev), val.time, val.event)
        record = {"epoch": epoch + 1, "phase": phase, "loss": loss, "val_c_index": c}
        if cfg.ensemble > 1:
            record["member"] = member
        cox_epochs = epoch + 1 - cfg.pretrain_epochs
        if phase == "cox" and cox_epochs >= cfg.min_epochs:
            if c > state["best_c"] + 1e-9:
                state.update(best_c=c, best_epoch=epoch + 1, bad_epochs=0,
                             best_state={k: v.detach().cpu().clone()
                                         for k, v in model.state_dict().items()})
            else:
                state["bad_epochs"] += 1
            stopped = state["bad_epochs"] >= cfg.patience
        state["epoch"] = epoch + 1
        state["history"].append(record)
        state["seconds"] = _time.time() - start
        if rank == 0:
            _save({"config": cfg.to_dict(), "config_hash": cfg.hash(), "member": member,
                   "model": model.state_dict(), "optimizer": opt.state_dict(), **state},
                  ckpt_path)
        if progress:
            _log(f"[{label}] epoch {epoch + 1}/{total} {phase}: loss {loss:.4f}, "
                 f"validation C-index {c:.3f}" + (" (early stop)" if stopped else ""))
        if callback is not None:
            callback(record)
    if state["best_state"] is None:
        raise TrainingError(f"[{label}] no Cox training epoch completed; nothing to lock")
    return state


def fit(cfg: TrainConfig, data: BagData, out_dir: str | os.PathLike, device: str = "auto",
        resume: bool = False, progress: bool = True,
        callback: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Train a signature network on the training cohort and lock the best model.

    Parameters
    ----------
    cfg : TrainConfig
    data : BagData
        Training-cohort patients only; validation patients are held out for
        early stopping (:func:`split_train_validation`).
    out_dir : path
        Receives ``last.pt`` (checkpoint after every epoch; for an ensemble one
        per member, in ``member_<k>/``; the segmentation epochs in
        ``segmentation/``) and, when training finishes, ``model.pt`` (the
        locked model: every member at its best validation C).
    device : str
        ``"auto"``, ``"cpu"``, ``"cuda"``...
    resume : bool
        Continue from the checkpoints in ``out_dir`` (refused if written by
        another config); finished ensemble members are not retrained.
    progress : bool
        Progress bar per epoch and one line with loss and validation C.
    callback : callable, optional
        Called after each epoch (and its checkpoint) with the epoch record.

    Returns
    -------
    dict
        The content of ``model.pt`` without the weights: config, hashes,
        history (the segmentation epochs first), best epoch (counted after
        segmentation) and validation C-index, split, training time,
        device type and whether bf16 autocast was on (CUDA with ``cfg.amp``). For
        an ensemble, ``best_epoch`` lists the members', ``val_c_index`` is the
        C-index of the out-of-fold risks (each patient scored by the member
        that validated on it, standardized like the ensemble does; with
        repeats, the mean over deals) and
        ``members`` holds each member's record.

    Raises
    ------
    TrainingError
        Diverging loss or NaN weights; ``last.pt`` keeps the last good epoch.
    ConfigMismatchError
        Resuming from a checkpoint of another configuration.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    dev = process_device(resolve_device(device))
    if dev.type == "cuda" and dev.index is not None:
        torch.cuda.set_device(dev)  # NCCL and the default CUDA stream use this process's GPU
    distributed = init_distributed(dev)
    rank, _ = _dist()
    if cfg.seg_epochs and data.masks is None:
        raise ValueError("config 'seg_epochs': segmentation needs masks (load_bags with_masks)")
    if cfg.roi_patch is not None and (data.rois is None
                                      or data.rois[0].shape[1:] != tuple(cfg.roi_patch)):
        raise ValueError(f"config 'roi_patch': the shape encoder needs {cfg.roi_patch} ROI "
                         "patches; build the data with load_bags and this config")
    if cfg.roi_patch is None and data.rois is not None:
        raise ValueError("data: ROI patches given, but the config has no shape encoder "
                         "(roi_patch)")
    if not cfg.aux_components and data.aux is not None:
        raise ValueError("data: auxiliary targets given, but the config has no auxiliary task "
                         "(aux_components)")
    if cfg.aux_components and (data.aux is None or data.aux.shape[1] != cfg.aux_components):
        raise ValueError(f"config 'aux_components': the auxiliary task needs "
                         f"{cfg.aux_components} targets per patient (data.aux; "
                         f"deepnomo.feature_targets), got "
                         f"{'none' if data.aux is None else data.aux.shape[1]}")
    splits = [split_train_validation(data, cfg, k) for k in range(cfg.members)]
    data_hash = data.digest()
    info: dict[str, Any] = {"config": cfg.to_dict(), "config_hash": cfg.hash(),
                            "data_hash": data_hash, "seed": cfg.seed}
    seg = None
    if cfg.seg_epochs:
        seg = _fit_segmentation(cfg, data, out / "segmentation", dev, distributed, resume,
                                progress, callback)
    seg_history, seg_seconds = (seg["history"], seg["seconds"]) if seg else ([], 0.0)
    if cfg.ensemble == 1:
        state = _fit_member(cfg, data, 0, splits[0], out, dev, distributed, resume, progress,
                            callback, seg)
        model = build_model(cfg)
        model.load_state_dict(state["best_state"])
        train_idx, val_idx = splits[0]
        if cfg.head_ridge:
            risk = refit_risk_head(model.to(dev), data, train_idx, cfg, dev)
            model.cpu()
            state["best_c"] = harrell_c(risk[val_idx], data.time[val_idx], data.event[val_idx])
        info.update(best_epoch=state["best_epoch"], val_c_index=state["best_c"],
                    history=seg_history + state["history"],
                    train_ids=[data.ids[i] for i in train_idx],
                    val_ids=[data.ids[i] for i in val_idx],
                    train_seconds=seg_seconds + state["seconds"])
    else:
        model = build_model(cfg)
        out_of_fold = np.zeros(len(data))  # mean over deals of each patient's held-out risk
        records, history = [], list(seg_history)
        for k, (train_idx, val_idx) in enumerate(splits):
            state = _fit_member(cfg, data, k, (train_idx, val_idx), out / f"member_{k}", dev,
                                distributed, resume, progress, callback, seg)
            net = model.members[k]
            net.load_state_dict(state["best_state"])
            if cfg.head_ridge:  # its folds and fold k, in the refit's own forward pass
                risk = refit_risk_head(net.to(dev), data, train_idx, cfg, dev)
            else:
                risk = predict_risk(net.to(dev), data, dev, tta=cfg.tta)
            net.cpu()
            shift, scale = float(risk[train_idx].mean()), float(risk[train_idx].std())
            if not scale > 0:
                raise TrainingError(f"[{cfg.name} member {k + 1}/{cfg.members}] gives the "
                                    "same risk to every training patient; nothing to lock")
            model.shift[k], model.scale[k] = shift, scale
            out_of_fold[val_idx] += (risk[val_idx] - shift) / scale / cfg.repeats
            records.append({"member": k, "seed": cfg.seed + k, "best_epoch": state["best_epoch"],
                            "val_c_index": state["best_c"], "shift": shift, "scale": scale,
                            "val_ids": [data.ids[i] for i in val_idx],
                            "train_seconds": state["seconds"]})
            history.extend(state["history"])
        info.update(best_epoch=[r["best_epoch"] for r in records],
                    val_c_index=harrell_c(out_of_fold, data.time, data.event),
                    history=history, members=records, train_ids=list(data.ids),
                    val_ids=list(data.ids),
                    train_seconds=seg_seconds + float(sum(r["train_seconds"] for r in records)))
    info.update(torch=torch.__version__, device=dev.type, amp=cfg.amp and dev.type == "cuda")
    if rank == 0:
        _save({**info, "model": model.state_dict()}, out / MODEL)
    return info


def load_model(model_dir: str | os.PathLike
               ) -> tuple[SurvivalMIL | RiskEnsemble, TrainConfig, dict[str, Any]]:
    """The locked model of a finished training run, its config and record.

    Raises
    ------
    FileNotFoundError
        When ``model.pt`` is absent (training did not finish).
    ConfigMismatchError
        When the stored weights do not fit the stored configuration.
    """
    path = Path(model_dir) / MODEL
    if not path.is_file():
        hint = " (a checkpoint last.pt exists: resume training with --resume)" if (
            Path(model_dir) / CHECKPOINT).is_file() else ""
        raise FileNotFoundError(f"model: {path} not found; training did not finish{hint}")
    info = torch.load(path, map_location="cpu", weights_only=False)
    cfg = TrainConfig.from_dict(info["config"])
    if cfg.hash() != info.get("config_hash"):
        raise ConfigMismatchError(f"model: {path} was written with a configuration this version "
                                  f"reads differently (hash {info.get('config_hash')} vs "
                                  f"{cfg.hash()}); retrain it")
    model = build_model(cfg)
    try:
        model.load_state_dict(info.pop("model"))
    except RuntimeError as exc:
        raise ConfigMismatchError(f"model: weights in {path} do not fit its config: {exc}") from exc
    model.eval()
    return model, cfg, info
