"""Macenko normalisation against a known stain change; ROI tile extraction."""

from __future__ import annotations

import numpy as np
import pytest

from deepnomo.pathology import MacenkoNormalizer, extract_tiles

IO = 240.0
# columns: haematoxylin and eosin optical-density vectors (unit length)
STAIN_A = np.array([[0.56, 0.22], [0.72, 0.80], [0.41, 0.56]])
STAIN_B = np.array([[0.65, 0.30], [0.70, 0.85], [0.29, 0.43]])


def _unit(m: np.ndarray) -> np.ndarray:
    return m / np.linalg.norm(m, axis=0)


def _concentrations(seed: int, h: int = 96, w: int = 96) -> np.ndarray:
    """Smooth nuclei/stroma concentration maps with some background, shape (2, h*w)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    hem = np.zeros((h, w))
    for _ in range(25):
        cy, cx = rng.uniform(0, h), rng.uniform(0, w)
        hem += 1.2 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * 3.0 ** 2))
    eos = 0.9 + 0.5 * np.sin(xx / 7.0 + rng.uniform(0, 6)) ** 2 + rng.normal(0, 0.03, (h, w))
    eos *= np.clip(1.0 - hem, 0.0, 1.0)  # nuclei push the stroma aside
    tissue = (xx < 0.85 * w).astype(float)
    return np.clip(np.stack([hem * tissue, eos * tissue]).reshape(2, -1), 0, None)


def _render(conc: np.ndarray, stain: np.ndarray, h: int = 96, w: int = 96) -> np.ndarray:
    od = _unit(stain) @ conc
    rgb = np.clip(IO * np.exp(-od), 0, 255)
    return rgb.T.reshape(h, w, 3).astype(np.uint8)


def test_macenko_undoes_a_stain_change():
    reference = _render(_concentrations(1), STAIN_A)
    conc = _concentrations(2)
    source = _render(conc, STAIN_B)
    truth = _render(conc, STAIN_A)
    norm = MacenkoNormalizer(io=IO).fit(reference)
    out = norm.transform(source)
    before = np.abs(source.astype(float) - truth).mean()
    after = np.abs(out.astype(float) - truth).mean()
    assert out.shape == source.shape and out.dtype == np.uint8
    # mean absolute RGB error against the same tissue in reference staining: 11.5 -> 0.93
    assert before > 8
    assert after < 0.15 * before
    # the learned stain vectors are the reference's (up to sign/order conventions)
    est = _unit(norm.stain_matrix_)
    cos = np.abs(np.sum(est * _unit(STAIN_A), axis=0))
    assert np.all(cos > 0.999)
    # locked: round trip through to_dict gives the same output
    again = MacenkoNormalizer.from_dict(norm.to_dict()).transform(source)
    np.testing.assert_array_equal(again, out)


def test_macenko_bad_input():
    with pytest.raises(ValueError, match="reference: expected an RGB"):
        MacenkoNormalizer().fit(np.zeros((8, 8), np.uint8))
    with pytest.raises(ValueError, match="fewer than 10 stained"):
        MacenkoNormalizer().fit(np.full((8, 8, 3), 250, np.uint8))
    with pytest.raises(RuntimeError, match="fit"):
        MacenkoNormalizer().transform(np.zeros((8, 8, 3), np.uint8))


def test_extract_tiles_known_roi():
    img = np.arange(100 * 120 * 3, dtype=np.int64).reshape(100, 120, 3) % 251
    img = img.astype(np.uint8)
    roi = np.zeros((100, 120), bool)
    roi[20:60, 30:90] = True  # 40 x 60 box
    tiles, coords = extract_tiles(img, roi, tile_size=20, min_roi_fraction=1.0)
    assert coords.tolist() == [[20, 40], [20, 60], [40, 40], [40, 60]]
    np.testing.assert_array_equal(tiles[1], img[20:40, 60:80])
    # half-covered tiles count with min_roi_fraction 0.5 (columns 20-40 cover 30-40)
    _, coords_half = extract_tiles(img, roi, tile_size=20, min_roi_fraction=0.5)
    assert [20, 20] in coords_half.tolist() and [0, 40] not in coords_half.tolist()
    with pytest.raises(ValueError, match="roi: empty"):
        extract_tiles(img, np.zeros_like(roi), tile_size=20)
    with pytest.raises(ValueError, match="roi: shape"):
        extract_tiles(img, roi[:50], tile_size=20)
