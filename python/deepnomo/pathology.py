"""H&E pathology: Macenko stain normalisation and tile extraction from ROIs.

Images are RGB arrays of shape (H, W, 3), dtype uint8.
"""

from __future__ import annotations

from typing import Any

import numpy as np


class MacenkoNormalizer:
    """Macenko stain normalisation fitted on a reference tile (torchstain, numpy backend).

    ``fit`` estimates the reference's H&E stain vectors (optical-density plane of the
    two leading eigenvectors, extreme angles at the ``alpha`` percentiles) and the
    99th-percentile stain concentrations; ``transform`` unmixes a tile with its own
    stain vectors, rescales its concentrations to the reference's, and re-renders it
    with the reference's stain vectors.

    Parameters
    ----------
    io : transmitted light intensity (background brightness), 0-255.
    alpha : angular percentile for the stain vectors, percent.
    beta : optical-density threshold below which pixels count as background.

    References
    ----------
    Macenko M, Niethammer M, Marron JS, et al. A method for normalizing histology
    slides for quantitative analysis. Proc IEEE ISBI 2009:1107-1110.
    """

    def __init__(self, io: float = 240.0, alpha: float = 1.0, beta: float = 0.15) -> None:
        self.io, self.alpha, self.beta = float(io), float(alpha), float(beta)
        self.stain_matrix_: np.ndarray | None = None
        self.max_concentrations_: np.ndarray | None = None

    @staticmethod
    def _check(tile: np.ndarray, name: str) -> np.ndarray:
        tile = np.asarray(tile)
        if tile.ndim != 3 or tile.shape[-1] != 3:
            raise ValueError(f"{name}: expected an RGB array (H, W, 3), got shape {tile.shape}")
        if tile.dtype != np.uint8:
            raise ValueError(f"{name}: expected dtype uint8, got {tile.dtype}")
        return tile

    def _backend(self):
        from torchstain.numpy.normalizers import NumpyMacenkoNormalizer

        return NumpyMacenkoNormalizer()

    def fit(self, reference: np.ndarray) -> MacenkoNormalizer:
        """Learn the reference stain vectors and concentration scale."""
        ref = self._check(reference, "reference")
        od = -np.log((ref.reshape(-1, 3).astype(float) + 1) / self.io)
        if np.count_nonzero(~np.any(od < self.beta, axis=1)) < 10:
            raise ValueError("reference: fewer than 10 stained (non-background) pixels")
        norm = self._backend()
        norm.fit(ref, Io=self.io, alpha=self.alpha, beta=self.beta)
        self.stain_matrix_ = np.asarray(norm.HERef, dtype=float)
        self.max_concentrations_ = np.asarray(norm.maxCRef, dtype=float)
        return self

    def transform(self, tile: np.ndarray) -> np.ndarray:
        """Normalise a tile to the reference's staining; returns uint8 (H, W, 3)."""
        if self.stain_matrix_ is None:
            raise RuntimeError("MacenkoNormalizer: call fit() before transform()")
        tile = self._check(tile, "tile")
        norm = self._backend()
        norm.HERef = self.stain_matrix_.copy()
        norm.maxCRef = self.max_concentrations_.copy()
        out, _, _ = norm.normalize(tile, Io=self.io, alpha=self.alpha, beta=self.beta,
                                   stains=False)
        return out

    def to_dict(self) -> dict[str, Any]:
        """Fitted state, JSON-serialisable."""
        if self.stain_matrix_ is None:
            raise RuntimeError("MacenkoNormalizer: not fitted")
        return {"method": "macenko", "io": self.io, "alpha": self.alpha, "beta": self.beta,
                "stain_matrix": self.stain_matrix_.tolist(),
                "max_concentrations": self.max_concentrations_.tolist()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> MacenkoNormalizer:
        """Rebuild a fitted normaliser from :meth:`to_dict` output."""
        obj = cls(d["io"], d["alpha"], d["beta"])
        obj.stain_matrix_ = np.asarray(d["stain_matrix"], dtype=float)
        obj.max_concentrations_ = np.asarray(d["max_concentrations"], dtype=float)
        return obj


def extract_tiles(image: np.ndarray, roi: np.ndarray, tile_size: int = 224,
                  stride: int | None = None, min_roi_fraction: float = 0.5,
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Tiles of a grid over an image, kept where the ROI covers enough of the tile.

    Parameters
    ----------
    image : array (H, W, 3) (or (H, W)).
    roi : array (H, W), ROI where > 0.
    tile_size : tile side, pixels.
    stride : grid step, pixels; default ``tile_size`` (non-overlapping).
    min_roi_fraction : keep a tile when at least this fraction of its pixels is ROI.

    Returns
    -------
    tiles : array (n, tile_size, tile_size, 3), image dtype
    coords : array (n, 2), int — (row, col) of each tile's top-left pixel
    """
    image = np.asarray(image)
    roi = np.asarray(roi) > 0
    if roi.shape != image.shape[:2]:
        raise ValueError(f"roi: shape {roi.shape} differs from image shape {image.shape[:2]}")
    if tile_size < 1 or (stride is not None and stride < 1):
        raise ValueError("tile_size and stride must be >= 1")
    if not 0 < min_roi_fraction <= 1:
        raise ValueError(f"min_roi_fraction: must be in (0, 1], got {min_roi_fraction}")
    if not roi.any():
        raise ValueError("roi: empty")
    step = stride or tile_size
    h, w = roi.shape
    ii = np.cumsum(np.cumsum(np.pad(roi, ((1, 0), (1, 0))).astype(np.int64), 0), 1)
    coords = []
    for r in range(0, h - tile_size + 1, step):
        for c in range(0, w - tile_size + 1, step):
            area = (ii[r + tile_size, c + tile_size] - ii[r, c + tile_size]
                    - ii[r + tile_size, c] + ii[r, c])
            if area >= min_roi_fraction * tile_size * tile_size:
                coords.append((r, c))
    coords_arr = np.asarray(coords, dtype=int).reshape(-1, 2)
    tiles = np.stack([image[r:r + tile_size, c:c + tile_size] for r, c in coords]) if coords \
        else np.zeros((0, tile_size, tile_size) + image.shape[2:], dtype=image.dtype)
    return tiles, coords_arr
