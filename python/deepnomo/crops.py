"""Tumour-centred crops for deep learning.

Arrays are numpy volumes indexed (z, y, x), as ``SimpleITK.GetArrayFromImage``
returns them. Boxes are centred on the mask centroid (rounded to the nearest
voxel) and zero-padded where they leave the volume.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def _check(image: np.ndarray, mask: np.ndarray, name: str = "image") -> np.ndarray:
    image = np.asarray(image)
    mask = np.asarray(mask)
    if image.ndim != 3:
        raise ValueError(f"{name}: expected a 3D (z, y, x) array, got shape {image.shape}")
    if mask.shape != image.shape:
        raise ValueError(f"mask: shape {mask.shape} differs from {name} shape {image.shape}")
    m = mask > 0
    if not m.any():
        raise ValueError("mask: empty (no voxel > 0)")
    return m


def _box(arr: np.ndarray, centre: Sequence[int], size: Sequence[int]) -> np.ndarray:
    """Zero-padded box of ``size`` whose centre voxel is ``centre`` (index ``size // 2``)."""
    out = np.zeros(tuple(size), dtype=np.float32)
    src, dst = [], []
    for c, s, n in zip(centre, size, arr.shape, strict=True):
        lo = int(c) - s // 2
        a, b = max(lo, 0), min(lo + s, n)
        if b <= a:
            return out
        src.append(slice(a, b))
        dst.append(slice(a - lo, b - lo))
    out[tuple(dst)] = arr[tuple(src)]
    return out


def _centroid(m: np.ndarray) -> np.ndarray:
    return np.rint(np.argwhere(m).mean(axis=0)).astype(int)


def tumor_slices(image: np.ndarray, mask: np.ndarray, size: int = 64,
                 max_slices: int | None = None) -> np.ndarray:
    """Fixed-size axial boxes, one per slice containing tumour.

    Parameters
    ----------
    image : array (z, y, x).
    mask : array (z, y, x), tumour where > 0.
    size : box side, voxels.
    max_slices : keep at most this many slices, those with the largest tumour area
        (returned in ascending z order); None keeps all.

    Returns
    -------
    numpy.ndarray, shape (k, size, size), float32
        Slice ``i`` is centred on the mask centroid of its own slice.
    """
    m = _check(image, mask)
    if size < 1:
        raise ValueError(f"size: must be >= 1, got {size}")
    area = m.sum(axis=(1, 2))
    zs = np.flatnonzero(area)
    if max_slices is not None:
        if max_slices < 1:
            raise ValueError(f"max_slices: must be >= 1 or None, got {max_slices}")
        keep = np.argsort(-area[zs], kind="stable")[:max_slices]
        zs = np.sort(zs[keep])
    img = np.asarray(image, dtype=np.float32)
    return np.stack([_box(img[z], _centroid(m[z]), (size, size)) for z in zs])


def tumor_patch(image: np.ndarray, mask: np.ndarray, size: tuple[int, int, int]) -> np.ndarray:
    """A 3D box of shape ``size`` (D, H, W) centred on the tumour's 3D centroid, float32."""
    m = _check(image, mask)
    if len(size) != 3 or min(size) < 1:
        raise ValueError(f"size: expected three positive ints (D, H, W), got {size}")
    return _box(np.asarray(image, dtype=np.float32), _centroid(m), tuple(int(s) for s in size))


def multichannel_slices(images: list[np.ndarray], mask: np.ndarray, size: int = 64,
                        max_slices: int | None = None) -> np.ndarray:
    """Co-registered channels (e.g. PET, CT) plus the ROI mask, per tumour slice.

    Parameters
    ----------
    images : C arrays (z, y, x) on the mask's grid.
    mask : array (z, y, x).
    size, max_slices : as in :func:`tumor_slices`.

    Returns
    -------
    numpy.ndarray, shape (k, C + 1, size, size), float32
        Channels in the order of ``images``, the binary ROI mask last.
    """
    if not images:
        raise ValueError("images: need at least one channel")
    for i, img in enumerate(images):
        _check(img, mask, name=f"images[{i}]")
    roi = (np.asarray(mask) > 0).astype(np.float32)
    chans = [tumor_slices(img, mask, size, max_slices) for img in images]
    chans.append(tumor_slices(roi, mask, size, max_slices))
    return np.stack(chans, axis=1)
