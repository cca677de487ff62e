"""Preprocessing steps against known answers."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from deepnomo.preprocess import (
    CaseError,
    HistogramStandardizer,
    align_mask,
    check_image,
    check_mask,
    load_config,
    n4_correct,
    physical_corners,
    polynomial_bias_correct,
    prepare_pair,
    reorient,
    resample,
    zscore,
)


def _image(arr: np.ndarray, spacing=(1.0, 1.0, 1.0), origin=(0.0, 0.0, 0.0),
           direction=None) -> sitk.Image:
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing(spacing)
    img.SetOrigin(origin)
    if direction is not None:
        img.SetDirection(direction)
    return img


def _sphere(shape=(24, 32, 32), spacing=(1.0, 1.0, 2.5), radius=9.0) -> np.ndarray:
    z, y, x = np.indices(shape).astype(float)
    c = [(s - 1) / 2 for s in shape]
    d2 = ((x - c[2]) * spacing[0]) ** 2 + ((y - c[1]) * spacing[1]) ** 2 \
        + ((z - c[0]) * spacing[2]) ** 2
    return (d2 <= radius ** 2).astype(np.uint8)


def _volume(img: sitk.Image) -> float:
    return float(sitk.GetArrayViewFromImage(img).sum() * np.prod(img.GetSpacing()))


def test_resample_keeps_extent_and_mask_volume():
    sp = (1.0, 1.0, 2.5)
    mask = _image(_sphere(spacing=sp), sp, origin=(-12.0, 4.0, 30.0))
    for new in [(0.5, 0.5, 0.5), (2.0, 2.0, 2.0), (0.8, 1.25, 1.0)]:
        out = resample(mask, new, "nearest")
        assert out.GetSpacing() == pytest.approx(new)
        # physical extent (outer voxel edges) kept within half a new voxel
        err = np.abs(physical_corners(out) - physical_corners(mask)).max()
        assert err <= max(new) / 2 + 1e-9
        rel = abs(_volume(out) - _volume(mask)) / _volume(mask)
        assert rel < 0.03, (new, rel)
    # a box whose faces lie on both grids keeps its volume to within one voxel
    box = np.zeros((20, 20, 20), np.uint8)
    box[4:12, 2:18, 6:10] = 1
    bimg = _image(box)
    for new in [(2.0, 2.0, 2.0), (0.5, 0.5, 0.5)]:
        out = resample(bimg, new, "nearest")
        assert abs(_volume(out) - _volume(bimg)) <= np.prod(new) + 1e-9
        assert np.abs(physical_corners(out) - physical_corners(bimg)).max() < 1e-9


def test_linear_resampling_reproduces_a_linear_ramp():
    z, y, x = np.indices((10, 12, 14)).astype(np.float32)
    img = _image(3 * x + 2 * y - z, (1.0, 1.0, 1.0), origin=(5.0, -3.0, 2.0))
    out = resample(img, (0.5, 0.5, 0.5), "linear")
    arr = sitk.GetArrayFromImage(out)
    zz, yy, xx = np.indices(arr.shape)
    # interior voxels only (the outermost half voxel is extrapolated with the default)
    pts = np.array([out.TransformIndexToPhysicalPoint((int(i), int(j), int(k)))
                    for k, j, i in zip(zz.ravel(), yy.ravel(), xx.ravel(), strict=True)])
    cont = np.array([img.TransformPhysicalPointToContinuousIndex(p) for p in pts])
    inside = np.all((cont >= 0) & (cont <= np.array(img.GetSize()) - 1), axis=1)
    expected = 3 * cont[:, 0] + 2 * cont[:, 1] - cont[:, 2]
    np.testing.assert_allclose(arr.ravel()[inside], expected[inside], atol=1e-3)
    assert inside.mean() > 0.7
    bs = resample(img, (2.0, 2.0, 2.0), "bspline")
    assert bs.GetSize() == (7, 6, 5)
    with pytest.raises(ValueError, match="interpolator"):
        resample(img, (1, 1, 1), "cubic")
    with pytest.raises(ValueError, match="spacing"):
        resample(img, (1, 1), "linear")


def test_slice_interpolator_keeps_acquired_sections():
    """5 mm slices to a 4 mm grid: with nearest-neighbour slices every output
    slice is one acquired section, resampled in-plane only; linear slices
    blend two sections."""
    z, y, x = np.indices((9, 10, 12)).astype(np.float32)
    img = _image(100 * z + 3 * x, (1.75, 1.75, 5.0), origin=(1.0, 2.0, -20.0))
    new = (2.0, 2.0, 4.0)
    out = resample(img, new, "linear", slice_interpolator="nearest")
    mixed = resample(img, new, "linear")
    assert out.GetSize() == mixed.GetSize() == (10, 9, 11)
    arr, mix = sitk.GetArrayFromImage(out), sitk.GetArrayFromImage(mixed)
    inplane = sitk.GetArrayFromImage(resample(img, (2.0, 2.0, 5.0), "linear"))
    source = [[j for j in range(inplane.shape[0]) if np.array_equal(arr[k], inplane[j])]
              for k in range(arr.shape[0])]
    assert all(len(s) == 1 for s in source)  # each output slice is one section
    source = [s[0] for s in source]
    assert source == sorted(source) and source[0] == 0 and source[-1] == 8
    blends = sum(not any(np.allclose(m, sec) for sec in inplane) for m in mix)
    assert blends >= 6  # linear slices between sections are neither
    with pytest.raises(ValueError, match="slice_interpolator"):
        resample(img, new, "linear", slice_interpolator="cubic")


def test_resampling_an_integer_scan_interpolates_without_truncation():
    fine = np.random.default_rng(3).integers(-300, 300, (8, 16, 16)).astype(np.int16)
    img = _image(fine, (1.0, 1.0, 2.0))
    # each 2 x 2 x 4 mm voxel centre is the centre of 2 x 2 x 2 fine voxels: their mean
    block = fine.reshape(4, 2, 8, 2, 8, 2).astype(float).mean(axis=(1, 3, 5))
    out = resample(img, (2.0, 2.0, 4.0), "linear")
    assert out.GetPixelID() == sitk.sitkFloat32
    np.testing.assert_allclose(sitk.GetArrayFromImage(out), block, atol=1e-3)
    same = resample(img, (1.0, 1.0, 2.0), "linear")  # already on the grid: values as stored
    np.testing.assert_array_equal(sitk.GetArrayFromImage(same), fine)
    assert resample(img, (2.0, 2.0, 4.0), "nearest").GetPixelID() == sitk.sitkInt16


def test_reorient_keeps_physical_positions():
    arr = np.zeros((6, 7, 8), np.float32)
    arr[1, 2, 3] = 5.0
    ras = (-1.0, 0, 0, 0, -1.0, 0, 0, 0, 1.0)  # RAS axes expressed in LPS coordinates
    img = _image(arr, (1.0, 2.0, 3.0), (10.0, 20.0, 30.0), ras)
    point = img.TransformIndexToPhysicalPoint((3, 2, 1))
    out = reorient(img, "LPS")
    assert np.allclose(out.GetDirection(), np.eye(3).ravel())
    idx = out.TransformPhysicalPointToIndex(point)
    assert sitk.GetArrayFromImage(out)[idx[2], idx[1], idx[0]] == 5.0
    assert sitk.GetArrayFromImage(out).sum() == 5.0


def test_n4_removes_multiplicative_bias():
    rng = np.random.default_rng(0)
    shape = (32, 48, 48)
    z, y, x = np.indices(shape).astype(float)
    body = ((x - 23.5) / 21) ** 2 + ((y - 23.5) / 21) ** 2 + ((z - 15.5) / 14) ** 2 <= 1
    tissue = 100 + 60 * (((x - 20) / 8) ** 2 + ((y - 26) / 10) ** 2 <= 1) \
        + 30 * ((np.floor(x / 6) + np.floor(y / 6) + np.floor(z / 6)) % 2)
    truth = np.where(body, tissue + rng.normal(0, 3, shape), 0).astype(np.float32)
    bias = np.exp(0.35 * (x - 24) / 24 - 0.25 * (y - 24) / 24 + 0.2 * ((z - 16) / 16) ** 2)
    biased = (truth * bias).astype(np.float32)
    img = _image(biased, (1.5, 1.5, 2.0))
    msk = _image(body.astype(np.uint8), (1.5, 1.5, 2.0))
    out = sitk.GetArrayFromImage(n4_correct(img, msk, shrink_factor=2, iterations=(40, 40, 20)))
    r_before = np.corrcoef(biased[body], truth[body])[0, 1]
    r_after = np.corrcoef(out[body], truth[body])[0, 1]
    # measured: 0.774 -> 0.999
    assert r_before < 0.80
    assert r_after > 0.995
    assert r_after - r_before > 0.1


def _tumour_in_bias(order_field: int, seed: int = 0):
    """Tissue (background with structure, a brighter tumour with texture) times a smooth field."""
    rng = np.random.default_rng(seed)
    shape = (16, 36, 36)
    z, y, x = np.indices(shape).astype(float)
    tumour = ((x - 17) / 9) ** 2 + ((y - 19) / 8) ** 2 + ((z - 8) / 5) ** 2 <= 1
    truth = 100 * (1 + 0.05 * rng.standard_normal(shape))
    truth[tumour] = 160 * (1 + 0.2 * rng.standard_normal(int(tumour.sum())))
    u, v, w = (z - 7.5) / 7.5, (y - 17.5) / 17.5, (x - 17.5) / 17.5
    log_field = 0.3 * w - 0.2 * v + 0.1 * u
    if order_field == 2:
        log_field = log_field + 0.25 * w * v - 0.2 * u ** 2 + 0.15 * w ** 2
    return truth, tumour, truth * np.exp(log_field)


@pytest.mark.parametrize("order", [1, 2])
def test_polynomial_bias_correction_recovers_the_tissue_under_a_known_field(order):
    truth, tumour, biased = _tumour_in_bias(order)
    out = polynomial_bias_correct(biased, tumour, order=order)
    assert out.dtype == np.float32 and out.shape == truth.shape
    ratio = out / truth  # a constant when the field is removed
    cv_before = np.std(biased / truth) / np.mean(biased / truth)
    cv_after = np.std(ratio) / np.mean(ratio)
    # measured: order 1, 0.22 -> 0.0003; order 2, 0.24 -> 0.0011 (residual from the
    # background's 5% noise in the fit)
    assert cv_before > 0.2
    assert cv_after < 0.005
    # the tumour's contrast with its surroundings is that of the tissue itself
    contrast = out[tumour].mean() / out[~tumour].mean()
    assert contrast == pytest.approx(truth[tumour].mean() / truth[~tumour].mean(), rel=0.005)


def test_polynomial_bias_correction_needs_a_field_of_its_order_and_tissue_to_fit():
    truth, tumour, biased = _tumour_in_bias(2)
    planar = polynomial_bias_correct(biased, tumour, order=1)
    quadratic = polynomial_bias_correct(biased, tumour, order=2)
    cv = [np.std(o / truth) / np.mean(o / truth) for o in (planar, quadratic)]
    assert cv[0] > 50 * cv[1]  # a plane cannot follow a curved field (0.12 against 0.001)
    with pytest.raises(ValueError, match="order must be 1, 2 or 3"):
        polynomial_bias_correct(biased, tumour, order=4)
    with pytest.raises(ValueError, match="one shape"):
        polynomial_bias_correct(biased, tumour[:, :, :-1])
    with pytest.raises(ValueError, match="positive voxels outside the mask"):
        polynomial_bias_correct(biased, np.ones_like(tumour))
    with pytest.raises(ValueError, match="positive voxels outside the mask"):
        polynomial_bias_correct(-biased, tumour)


def _center_images(seed: int, center: str) -> list[sitk.Image]:
    """Same tissue mixture, scanned at two centres with different intensity responses."""
    rng = np.random.default_rng(seed)
    imgs = []
    for _ in range(3):
        tissue = np.concatenate([rng.normal(40, 5, 3000), rng.normal(80, 8, 2000),
                                 rng.normal(120, 6, 1000)])
        v = tissue if center == "A" else 3.0 * tissue ** 0.8 + 200.0
        arr = np.full(6000 + 2000, 0.0, np.float32)
        arr[:6000] = rng.permutation(v)
        imgs.append(_image(arr.reshape(20, 20, 20)))
    return imgs


def _quantile_distance(a: sitk.Image, b: sitk.Image, mask: np.ndarray) -> float:
    p = np.arange(5, 96, 5)
    qa = np.percentile(sitk.GetArrayViewFromImage(a)[mask], p)
    qb = np.percentile(sitk.GetArrayViewFromImage(b)[mask], p)
    return float(np.mean(np.abs(qa - qb)) / (qa[-1] - qa[0]))


def test_histogram_standardisation_aligns_two_centres(tmp_path):
    train = _center_images(1, "A") + _center_images(2, "B")
    test_a, test_b = _center_images(3, "A")[0], _center_images(4, "B")[0]
    mask = np.zeros((20, 20, 20), bool)
    mask.ravel()[:6000] = True
    mimg = [_image(mask.astype(np.uint8))] * len(train)
    std = HistogramStandardizer().fit(train, mimg)
    landmarks = std.landmarks_.copy()
    ma = _image(mask.astype(np.uint8))
    out_a, out_b = std.transform(test_a, ma), std.transform(test_b, ma)
    before = _quantile_distance(test_a, test_b, mask)
    after = _quantile_distance(out_a, out_b, mask)
    # measured: before 2.44 (in units of centre A's 5-95% range), after 0.001
    assert before > 1.0
    assert after < 0.03
    np.testing.assert_array_equal(std.landmarks_, landmarks)  # applying does not refit
    path = tmp_path / "hs.json"
    std.save(path)
    again = HistogramStandardizer.load(path).transform(test_b, ma)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(again), sitk.GetArrayFromImage(out_b))
    with pytest.raises(RuntimeError, match="fit"):
        HistogramStandardizer().transform(test_a)
    with pytest.raises(ValueError, match="percentiles"):
        HistogramStandardizer(percentiles=(50, 10, 90))


def test_zscore_inside_mask():
    rng = np.random.default_rng(3)
    arr = rng.normal(500, 40, (10, 10, 10)).astype(np.float32)
    m = np.zeros_like(arr, np.uint8)
    m[2:8, 2:8, 2:8] = 1
    out = sitk.GetArrayFromImage(zscore(_image(arr), _image(m)))
    assert out[m > 0].mean() == pytest.approx(0, abs=1e-5)
    assert out[m > 0].std() == pytest.approx(1, abs=1e-5)


def test_align_mask_geometry_cases():
    img = _image(np.zeros((16, 16, 16), np.float32), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0))
    box = np.zeros((16, 16, 16), np.uint8)
    box[4:12, 4:12, 2:10] = 1
    # same grid, tiny origin noise: geometry copied
    same = _image(box, origin=(1e-6, 0, 0))
    np.testing.assert_array_equal(sitk.GetArrayFromImage(align_mask(img, same)), box)
    # coarser grid over the same extent: resampled onto the image grid, volume exact
    coarse = resample(_image(box), (2.0, 2.0, 2.0), "nearest")
    out = align_mask(img, coarse)
    assert out.GetSize() == img.GetSize()
    np.testing.assert_array_equal(sitk.GetArrayFromImage(out), box)
    # flipped x axis covering the same extent: same voxels once aligned
    flip = _image(box[:, :, ::-1].copy(), origin=(15.0, 0, 0),
                  direction=(-1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0))
    np.testing.assert_array_equal(sitk.GetArrayFromImage(align_mask(img, flip)), box)
    # shifted origin: a per-case error naming what differs
    with pytest.raises(CaseError, match=r"geometry mismatch \(origin differ\).*3 mm"):
        align_mask(img, _image(box, origin=(3.0, 0, 0)))
    with pytest.raises(CaseError, match="size, spacing"):
        align_mask(img, _image(box[:, :, :8], spacing=(1.5, 1.0, 1.0)))


def test_bad_masks_and_voxels():
    base = np.zeros((5, 5, 5), np.uint8)
    with pytest.raises(CaseError, match="empty mask"):
        check_mask(_image(base))
    lab2 = base.copy()
    lab2[2, 2, 2] = 2
    with pytest.raises(CaseError, match=r"label 1 absent \(mask values \[0, 2\]\)"):
        check_mask(_image(lab2))
    multi = lab2.copy()
    multi[1, 1, 1] = 1
    with pytest.raises(CaseError, match="non-binary mask"):
        check_mask(_image(multi))
    soft = np.zeros((5, 5, 5), np.float32)
    soft[2, 2, 2], soft[2, 2, 3] = 1.0, 0.5
    with pytest.raises(CaseError, match="non-binary"):
        check_mask(_image(soft))
    arr = np.ones((5, 5, 5), np.float32)
    arr[0, 0, 0] = np.nan
    with pytest.raises(CaseError, match="1 NaN/infinite voxel"):
        check_image(_image(arr))


def test_prepare_pair_records_steps():
    rng = np.random.default_rng(5)
    arr = rng.normal(100, 5, (12, 16, 16)).astype(np.float32)
    m = np.zeros_like(arr, np.uint8)
    m[4:8, 5:11, 5:11] = 1
    cfg = load_config({"spacing": [2.0, 2.0, 2.0], "orientation": "LPS"})
    img, msk, steps = prepare_pair(_image(arr), _image(m), cfg)
    assert [s["step"] for s in steps] == ["align_mask", "reorient", "resample"]
    assert steps[2]["spacing"] == [2.0, 2.0, 2.0] and steps[2]["mask_interpolator"] == "nearest"
    assert img.GetSize() == (8, 8, 6) and msk.GetSize() == img.GetSize()
    assert _volume(msk) == pytest.approx(_volume(_image(m)), abs=8.0)
    with pytest.raises(ValueError, match="unknown key"):
        load_config({"spacingg": [1, 1, 1]})
    with pytest.raises(ValueError, match="'normalize'"):
        load_config({"normalize": "minmax"})
