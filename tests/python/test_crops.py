"""Tumour-centred crops on blobs with known centres."""

from __future__ import annotations

import numpy as np
import pytest

from deepnomo.crops import multichannel_slices, tumor_patch, tumor_slices

SHAPE = (20, 40, 50)


def _coords_image() -> np.ndarray:
    """Voxel value encodes its index: z * 1e4 + y * 1e2 + x + 1 (so 0 means padding)."""
    z, y, x = np.indices(SHAPE)
    return (z * 10_000 + y * 100 + x + 1).astype(np.float64)


def _blob(center, radii) -> np.ndarray:
    z, y, x = np.indices(SHAPE).astype(float)
    d = sum(((a - c) / r) ** 2 for a, c, r in zip((z, y, x), center, radii, strict=True))
    return (d <= 1).astype(np.uint8)


def _decode(v: float) -> tuple[int, int, int]:
    v = int(round(v)) - 1
    return v // 10_000, (v // 100) % 100, v % 100


def test_tumor_slices_centred_per_slice():
    mask = _blob((10, 18, 25), (4, 6, 9))
    mask[12, 18:24, 30:40] = 1  # moves slice 12's centroid to the right
    out = tumor_slices(_coords_image(), mask, size=16)
    zs = np.flatnonzero(mask.sum(axis=(1, 2)))
    assert zs.tolist() == list(range(6, 15))
    assert out.shape == (9, 16, 16) and out.dtype == np.float32
    centres = [_decode(float(out[k, 8, 8])) for k in range(len(zs))]
    expected = [(z, 18, 25) for z in zs]
    ys, xs = np.nonzero(mask[12])
    expected[6] = (12, int(np.rint(ys.mean())), int(np.rint(xs.mean())))
    assert expected[6][2] > 25
    assert centres == expected
    # each box is the volume around its centre: top-left pixel is centre - 8
    assert _decode(float(out[0, 0, 0])) == (6, 10, 17)


def test_tumor_slices_zero_padding_and_max_slices():
    img = np.ones(SHAPE, np.float32)
    mask = np.zeros(SHAPE, np.uint8)
    mask[5, 0:3, 0:3] = 1  # corner tumour, centroid (1, 1)
    mask[6, 0:2, 0:2] = 1
    mask[7, 0:4, 0:4] = 1
    out = tumor_slices(img, mask, size=10)
    # box rows/cols start at centroid - 5; the first 4 rows/cols fall outside -> zeros
    assert out.shape == (3, 10, 10)
    assert out[0, :4].sum() == 0 and out[0, :, :4].sum() == 0
    assert out[0, 4:, 4:].min() == 1.0
    top2 = tumor_slices(img, mask, size=10, max_slices=2)
    assert top2.shape == (2, 10, 10)
    # the two largest slices (z = 5: 9 voxels, z = 7: 16 voxels), in z order
    np.testing.assert_array_equal(top2[0], out[0])
    np.testing.assert_array_equal(top2[1], out[2])


def test_tumor_patch_centred_in_3d():
    img = _coords_image()
    mask = _blob((9, 21, 30), (3, 5, 7))
    patch = tumor_patch(img, mask, (8, 12, 14))
    assert patch.shape == (8, 12, 14) and patch.dtype == np.float32
    centre = tuple(int(v) for v in np.rint(np.argwhere(mask).mean(axis=0)))
    assert centre == (9, 21, 30)
    assert _decode(float(patch[4, 6, 7])) == centre
    # near the border: zero padding, content still aligned
    mask2 = _blob((1, 1, 1), (1, 1, 1))
    p2 = tumor_patch(img, mask2, (6, 6, 6))
    assert p2[:2].sum() == 0 and _decode(float(p2[3, 3, 3])) == (1, 1, 1)


def test_multichannel_slices_mask_last():
    pet = np.full(SHAPE, 7.0, np.float32)
    ct = _coords_image()
    mask = _blob((10, 20, 25), (2, 4, 4))
    out = multichannel_slices([pet, ct], mask, 12)
    zs = np.flatnonzero(mask.sum(axis=(1, 2)))
    assert out.shape == (len(zs), 3, 12, 12)
    assert np.all(out[:, 0] == 7.0)
    np.testing.assert_array_equal(out[:, 1], tumor_slices(ct, mask, 12))
    assert set(np.unique(out[:, 2])) == {0.0, 1.0}
    assert out[:, 2].sum() == mask.sum()


def test_crop_bad_input():
    img = np.zeros(SHAPE, np.float32)
    with pytest.raises(ValueError, match="mask: empty"):
        tumor_slices(img, np.zeros(SHAPE, np.uint8))
    with pytest.raises(ValueError, match="mask: shape"):
        tumor_patch(img, np.ones((2, 2, 2)), (4, 4, 4))
    with pytest.raises(ValueError, match="3D"):
        tumor_slices(img[0], np.ones(SHAPE[1:]))
    with pytest.raises(ValueError, match="images: need"):
        multichannel_slices([], np.ones(SHAPE), 8)
