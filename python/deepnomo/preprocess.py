"""Image preprocessing: reorientation, resampling, N4, intensity normalisation, checks.

Every step is a function of an image and explicit parameters that returns a new
image; :func:`preprocess_case` chains them from a configuration and records each
step with its parameters. Histogram standardisation (Nyul & Udupa 1999; Nyul,
Udupa & Zhang 2000) is a fit/apply object: :class:`HistogramStandardizer` learns
its landmarks on training images and is then applied unchanged.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

INTERPOLATORS = {
    "nearest": sitk.sitkNearestNeighbor,
    "linear": sitk.sitkLinear,
    "bspline": sitk.sitkBSpline,
}
DEFAULT_PERCENTILES = (1.0, 10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0, 80.0, 90.0, 99.0)


class CaseError(ValueError):
    """A case that cannot be processed: bad mask, bad voxels, mismatched geometry."""


# ---------------------------------------------------------------- geometry ----

def reorient(image: sitk.Image, orientation: str = "LPS") -> sitk.Image:
    """Permute/flip axes so that the direction matrix matches ``orientation``.

    Parameters
    ----------
    image : SimpleITK.Image (3D).
    orientation : three-letter DICOM orientation code (``"LPS"``, ``"RAS"``, ...), the
        anatomical direction each index axis points to.
    """
    return sitk.DICOMOrient(image, orientation)


def resample(image: sitk.Image, spacing: Sequence[float], interpolator: str = "linear",
             default_value: float = 0.0, slice_interpolator: str | None = None) -> sitk.Image:
    """Resample onto a grid of the given spacing covering the same physical extent.

    The new grid keeps the direction and the outer voxel edges of the old one: its
    size is ``round(size * old_spacing / spacing)`` and its first voxel centre sits
    half a new voxel inside the old grid's first edge.

    Parameters
    ----------
    image : SimpleITK.Image.
    spacing : target spacing per axis (x, y, z), mm.
    interpolator : ``"linear"`` or ``"bspline"`` for images, ``"nearest"`` for masks.
    default_value : value outside the old grid.
    slice_interpolator : str, optional
        Another interpolator across slices (the third axis of a 3D image): the
        image is first resampled in-plane with ``interpolator``, then along z
        with this one. ``"nearest"`` keeps every output slice a section the
        scanner acquired, as nnU-Net does for thick-slice images (Isensee et al.
        2021, Nat Methods 18:203): linear interpolation between slices 5 mm apart
        averages two sections and flattens the texture they show.

    Returns
    -------
    SimpleITK.Image
        float32 for ``"linear"`` and ``"bspline"`` (interpolating into an integer
        type would truncate), the input's pixel type for ``"nearest"``. An image
        already on ``spacing`` (within 1e-6 mm) keeps its voxel values exactly.
    """
    for name, value in (("interpolator", interpolator), ("slice_interpolator",
                                                         slice_interpolator or interpolator)):
        if value not in INTERPOLATORS:
            raise ValueError(f"{name}: {value!r}; expected one of {list(INTERPOLATORS)}")
    spacing = np.asarray(spacing, dtype=float)
    old_spacing = np.asarray(image.GetSpacing(), dtype=float)
    if spacing.shape != old_spacing.shape or np.any(spacing <= 0):
        raise ValueError(f"spacing: {spacing.tolist()} must have {old_spacing.size} positive "
                         "values (mm)")
    if slice_interpolator not in (None, interpolator):
        if spacing.size != 3:
            raise ValueError(f"slice_interpolator: needs a 3D image, got {spacing.size}D")
        inplane = resample(image, [spacing[0], spacing[1], old_spacing[2]], interpolator,
                           default_value)
        return resample(inplane, spacing, slice_interpolator, default_value)
    if interpolator != "nearest":
        image = sitk.Cast(image, sitk.sitkFloat32)
    if np.allclose(old_spacing, spacing, rtol=0.0, atol=1e-6):  # the same grid
        return sitk.Image(image)
    old_size = np.asarray(image.GetSize(), dtype=float)
    size = np.maximum(np.round(old_size * old_spacing / spacing), 1).astype(int)
    direction = np.asarray(image.GetDirection(), dtype=float).reshape(old_spacing.size, -1)
    first_edge = np.asarray(image.GetOrigin()) - direction @ (old_spacing / 2)
    origin = first_edge + direction @ (spacing / 2)
    out = sitk.Resample(image, [int(s) for s in size], sitk.Transform(),
                        INTERPOLATORS[interpolator], origin.tolist(), spacing.tolist(),
                        image.GetDirection(), float(default_value), image.GetPixelID())
    return out


def physical_corners(image: sitk.Image) -> np.ndarray:
    """Physical coordinates (mm) of the outer voxel-edge corners, shape (2**dim, dim)."""
    dim = image.GetDimension()
    size = np.asarray(image.GetSize(), dtype=float)
    corners = []
    for bits in range(2 ** dim):
        idx = [(-0.5 if not (bits >> d) & 1 else size[d] - 0.5) for d in range(dim)]
        corners.append(image.TransformContinuousIndexToPhysicalPoint(idx))
    return np.asarray(corners)


def same_grid(a: sitk.Image, b: sitk.Image, tol: float = 1e-4) -> bool:
    """Whether two images share size, and spacing/origin/direction within ``tol``."""
    return (a.GetSize() == b.GetSize()
            and np.allclose(a.GetSpacing(), b.GetSpacing(), atol=tol)
            and np.allclose(a.GetOrigin(), b.GetOrigin(), atol=tol)
            and np.allclose(a.GetDirection(), b.GetDirection(), atol=tol))


def align_mask(image: sitk.Image, mask: sitk.Image, tol_mm: float = 0.01) -> sitk.Image:
    """Put a mask on its image's voxel grid.

    A mask on the same grid (within ``1e-4``) gets the image's geometry copied. A mask
    on another grid whose physical extent is the image's (every outer corner within
    ``tol_mm``) is resampled onto the image grid by nearest neighbour. Anything else
    is a :class:`CaseError` naming what differs.

    Parameters
    ----------
    image, mask : SimpleITK.Image of the same dimension.
    tol_mm : tolerance on the physical extent, mm.
    """
    if image.GetDimension() != mask.GetDimension():
        raise CaseError(f"mask has {mask.GetDimension()} dimensions, image has "
                        f"{image.GetDimension()}")
    if same_grid(image, mask):
        out = sitk.Image(mask)
        out.CopyInformation(image)
        return out
    ci, cm = physical_corners(image), physical_corners(mask)
    dist = np.sqrt(((ci[:, None, :] - cm[None, :, :]) ** 2).sum(-1)).min(axis=1).max()
    if dist > tol_mm:
        diffs = [name for name, fa, fb in (
            ("size", image.GetSize(), mask.GetSize()),
            ("spacing", image.GetSpacing(), mask.GetSpacing()),
            ("origin", image.GetOrigin(), mask.GetOrigin()),
            ("direction", image.GetDirection(), mask.GetDirection()))
            if not np.allclose(fa, fb, atol=1e-4)]
        raise CaseError(f"image/mask geometry mismatch ({', '.join(diffs)} differ) and the "
                        f"physical extents differ by up to {dist:.3g} mm (> {tol_mm} mm)")
    return sitk.Resample(mask, image, sitk.Transform(), sitk.sitkNearestNeighbor, 0.0,
                         mask.GetPixelID())


# ------------------------------------------------------------------ checks ----

def check_image(image: sitk.Image, name: str = "image") -> None:
    """Raise :class:`CaseError` when the image holds NaN or infinite voxels."""
    arr = sitk.GetArrayViewFromImage(image)
    if np.issubdtype(arr.dtype, np.floating):
        bad = int(np.count_nonzero(~np.isfinite(arr)))
        if bad:
            raise CaseError(f"{name}: {bad} NaN/infinite voxel(s)")


def check_mask(mask: sitk.Image, label: int = 1, name: str = "mask") -> None:
    """Raise :class:`CaseError` for an empty, label-less or non-binary mask.

    A valid mask holds only the values 0 and ``label``, and at least one voxel of
    ``label``.
    """
    arr = sitk.GetArrayViewFromImage(mask)
    if np.issubdtype(arr.dtype, np.floating) and not np.all(np.isfinite(arr)):
        raise CaseError(f"{name}: NaN/infinite values")
    values = np.unique(arr)
    nonzero = values[values != 0]
    if nonzero.size == 0:
        raise CaseError(f"{name}: empty mask (no non-zero voxel)")
    if label not in nonzero:
        raise CaseError(f"{name}: label {label} absent (mask values {_show(values)})")
    if nonzero.size > 1:
        raise CaseError(f"{name}: non-binary mask (values {_show(values)}; expected 0 and "
                        f"{label})")


def _show(values: np.ndarray, n: int = 6) -> str:
    shown = ", ".join(f"{v:g}" for v in values[:n])
    return f"[{shown}{', ...' if values.size > n else ''}]"


# -------------------------------------------------------------- intensities ----

def n4_correct(image: sitk.Image, mask: sitk.Image | None = None, shrink_factor: int = 2,
               iterations: Sequence[int] = (50, 50, 30), fitting_levels: int | None = None,
               ) -> sitk.Image:
    """N4 bias-field correction (Tustison et al. 2010, IEEE TMI 29:1310).

    The bias field is estimated on an image shrunk by ``shrink_factor`` per axis and
    divided out of the full-resolution image: ``corrected = image / exp(log_bias)``.

    Parameters
    ----------
    image : SimpleITK.Image with positive intensities in the body.
    mask : voxels used to fit the field; default: Otsu foreground (:func:`body_mask`).
    shrink_factor : per-axis shrink for the fit (speed).
    iterations : maximum iterations per fitting level (one entry per level).
    fitting_levels : number of fitting levels; default ``len(iterations)``.

    Returns
    -------
    SimpleITK.Image, float32.
    """
    img = sitk.Cast(image, sitk.sitkFloat32)
    mask = body_mask(img) if mask is None else sitk.Cast(mask > 0, sitk.sitkUInt8)
    small = sitk.Shrink(img, [shrink_factor] * img.GetDimension())
    small_mask = sitk.Shrink(mask, [shrink_factor] * img.GetDimension())
    n4 = sitk.N4BiasFieldCorrectionImageFilter()
    n4.SetMaximumNumberOfIterations([int(i) for i in iterations])
    if fitting_levels is not None:
        n4.SetNumberOfFittingLevels(int(fitting_levels))
    n4.Execute(small, small_mask)
    log_bias = n4.GetLogBiasFieldAsImage(img)
    return sitk.Cast(img / sitk.Exp(log_bias), sitk.sitkFloat32)


def polynomial_bias_correct(image: np.ndarray, exclude: np.ndarray, order: int = 2
                            ) -> np.ndarray:
    """Divide out a smooth multiplicative bias field fitted to the tissue around a ROI.

    The log bias field is a polynomial of degree ``order`` in the voxel coordinates,
    each axis scaled to [-1, 1], fitted by least squares to ``log(image)`` over the
    voxels outside ``exclude`` (Styner et al. 2000, IEEE TMI 19:153, fit a Legendre
    polynomial field in the same spirit):

    ``log I(x) = sum_k b_k p_k(x) + e(x)``,  ``corrected = I / exp(sum_{k>0} b_k p_k)``.

    The constant term stays, so the surrounding tissue keeps its mean level. On a
    crop of tens of millimetres around a tumour the field is close to a low-order
    polynomial, and the fit takes milliseconds where N4 (:func:`n4_correct`) takes
    a fraction of a second per volume.

    Parameters
    ----------
    image : ndarray, shape (z, y, x)
        Intensities, positive in the tissue that is fitted.
    exclude : ndarray of bool, shape (z, y, x)
        Voxels left out of the fit (the tumour, whose own signal is not bias).
    order : int
        Polynomial degree, 1 (planar field) to 3.

    Returns
    -------
    ndarray, shape (z, y, x), float32.

    Raises
    ------
    ValueError
        On a shape mismatch, an ``order`` outside 1-3, or fewer positive voxels
        outside ``exclude`` than ten per coefficient.
    """
    image = np.asarray(image, dtype=np.float64)
    exclude = np.asarray(exclude, dtype=bool)
    if image.ndim != 3 or image.shape != exclude.shape:
        raise ValueError(f"bias correction: image {image.shape} and mask {exclude.shape} must "
                         "be 3D arrays of one shape")
    if order not in (1, 2, 3):
        raise ValueError(f"bias correction: order must be 1, 2 or 3, got {order}")
    axes = [np.linspace(-1.0, 1.0, n) if n > 1 else np.zeros(1) for n in image.shape]
    coords = [c.ravel() for c in np.meshgrid(*axes, indexing="ij")]
    terms = [np.ones(image.size)]
    for degree in range(1, order + 1):  # every monomial z^a y^b x^c with a + b + c = degree
        for a in range(degree + 1):
            for b in range(degree + 1 - a):
                terms.append(coords[0] ** a * coords[1] ** b * coords[2] ** (degree - a - b))
    design = np.stack(terms, axis=1)
    values = image.ravel()
    fit = ~exclude.ravel() & (values > 0)
    if fit.sum() < 10 * design.shape[1]:
        raise ValueError(f"bias correction: {int(fit.sum())} positive voxels outside the mask; "
                         f"an order-{order} field needs at least {10 * design.shape[1]}")
    coef, *_ = np.linalg.lstsq(design[fit], np.log(values[fit]), rcond=None)
    log_field = design[:, 1:] @ coef[1:]
    return (values / np.exp(log_field)).reshape(image.shape).astype(np.float32)


def body_mask(image: sitk.Image) -> sitk.Image:
    """Foreground (body) mask by Otsu's threshold, uint8 (1 = body)."""
    return sitk.OtsuThreshold(sitk.Cast(image, sitk.sitkFloat32), 0, 1)


def zscore(image: sitk.Image, mask: sitk.Image | None = None) -> sitk.Image:
    """``(image - mean) / sd`` with mean and SD taken inside ``mask`` (default: body mask).

    Returns a float32 image; the whole image is transformed.
    """
    arr = sitk.GetArrayFromImage(image).astype(np.float64)
    m = sitk.GetArrayFromImage(body_mask(image) if mask is None else mask) > 0
    if not m.any():
        raise CaseError("zscore: the body mask is empty")
    vals = arr[m]
    sd = vals.std()
    if sd == 0:
        raise CaseError("zscore: constant intensities inside the body mask")
    out = sitk.GetImageFromArray(((arr - vals.mean()) / sd).astype(np.float32))
    out.CopyInformation(image)
    return out


class HistogramStandardizer:
    """Nyul-Udupa piecewise-linear histogram standardisation.

    ``fit`` maps each training image's ``percentiles[0]``..``percentiles[-1]`` range
    linearly onto ``[scale_min, scale_max]`` and averages the mapped landmarks
    (the percentiles in between) over images. ``transform`` maps a new image's own
    landmarks onto the learned ones piecewise linearly, extending the end segments
    linearly beyond the outer percentiles. Landmarks are taken inside a mask
    (default: the Otsu body mask).

    Parameters
    ----------
    percentiles : increasing percentiles, the first and last bound the mapped range.
    scale_min, scale_max : standard scale.

    References
    ----------
    Nyul LG, Udupa JK, Zhang X. New variants of a method of MRI scale standardization.
    IEEE Trans Med Imaging 2000;19(2):143-150.
    """

    def __init__(self, percentiles: Sequence[float] = DEFAULT_PERCENTILES,
                 scale_min: float = 0.0, scale_max: float = 100.0) -> None:
        p = np.asarray(percentiles, dtype=float)
        if p.ndim != 1 or p.size < 3 or np.any(np.diff(p) <= 0) or p[0] < 0 or p[-1] > 100:
            raise ValueError("percentiles: need >= 3 increasing values within [0, 100]")
        if not scale_max > scale_min:
            raise ValueError("scale_max must exceed scale_min")
        self.percentiles = p
        self.scale_min = float(scale_min)
        self.scale_max = float(scale_max)
        self.landmarks_: np.ndarray | None = None
        self.n_fit_: int = 0

    @staticmethod
    def _values(image: sitk.Image, mask: sitk.Image | None) -> np.ndarray:
        arr = sitk.GetArrayViewFromImage(image)
        m = sitk.GetArrayFromImage(body_mask(image) if mask is None else mask) > 0
        vals = np.asarray(arr[m], dtype=np.float64)
        if vals.size == 0:
            raise CaseError("histogram standardisation: empty mask")
        return vals

    def fit(self, images: Sequence[sitk.Image],
            masks: Sequence[sitk.Image | None] | None = None) -> HistogramStandardizer:
        """Learn the standard landmarks from training images."""
        masks = [None] * len(images) if masks is None else list(masks)
        if len(images) == 0 or len(masks) != len(images):
            raise ValueError("images: need >= 1 image and one mask (or None) per image")
        mapped = []
        for img, msk in zip(images, masks, strict=True):
            land = np.percentile(self._values(img, msk), self.percentiles)
            if land[-1] <= land[0]:
                raise CaseError("histogram standardisation: constant training image")
            mapped.append(self.scale_min + (land - land[0]) / (land[-1] - land[0])
                          * (self.scale_max - self.scale_min))
        self.landmarks_ = np.mean(mapped, axis=0)
        self.n_fit_ = len(images)
        return self

    def transform(self, image: sitk.Image, mask: sitk.Image | None = None) -> sitk.Image:
        """Map an image onto the learned scale (float32); the fitted state is unchanged."""
        if self.landmarks_ is None:
            raise RuntimeError("HistogramStandardizer: call fit() (or load()) before transform()")
        land = np.percentile(self._values(image, mask), self.percentiles)
        if np.any(np.diff(land) <= 0):
            land = land + np.arange(land.size) * 1e-9 * max(1.0, abs(land[-1]))
        arr = sitk.GetArrayFromImage(image).astype(np.float64)
        out = np.interp(arr, land, self.landmarks_)
        std = self.landmarks_
        lo, hi = arr < land[0], arr > land[-1]
        out[lo] = std[0] + (arr[lo] - land[0]) * (std[1] - std[0]) / (land[1] - land[0])
        out[hi] = std[-1] + (arr[hi] - land[-1]) * (std[-1] - std[-2]) / (land[-1] - land[-2])
        res = sitk.GetImageFromArray(out.astype(np.float32))
        res.CopyInformation(image)
        return res

    def to_dict(self) -> dict[str, Any]:
        """Parameters and learned landmarks, JSON-serialisable."""
        if self.landmarks_ is None:
            raise RuntimeError("HistogramStandardizer: not fitted")
        return {"method": "nyul_udupa", "percentiles": self.percentiles.tolist(),
                "scale_min": self.scale_min, "scale_max": self.scale_max,
                "landmarks": self.landmarks_.tolist(), "n_fit": self.n_fit_}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> HistogramStandardizer:
        """Rebuild a fitted standardiser from :meth:`to_dict` output."""
        obj = cls(d["percentiles"], d["scale_min"], d["scale_max"])
        land = np.asarray(d["landmarks"], dtype=float)
        if land.shape != obj.percentiles.shape:
            raise ValueError("landmarks: one value per percentile is required")
        obj.landmarks_ = land
        obj.n_fit_ = int(d.get("n_fit", 0))
        return obj

    def save(self, path: str | Path) -> None:
        """Write the fitted state as JSON."""
        Path(path).write_text(json.dumps(self.to_dict(), indent=2), encoding="utf-8")

    @classmethod
    def load(cls, path: str | Path) -> HistogramStandardizer:
        """Read a fitted state written by :meth:`save`."""
        return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))


# ----------------------------------------------------------------- pipeline ----

DEFAULT_CONFIG: dict[str, Any] = {
    "label": 1,
    "orientation": "LPS",
    "spacing": None,
    "interpolator": "linear",
    "n4": None,
    "normalize": "none",
    "histogram": None,
    "geometry_tolerance_mm": 0.01,
}
NORMALIZE = ("none", "zscore", "histogram")


def load_config(config: str | Path | Mapping[str, Any] | None) -> dict[str, Any]:
    """Merge a preprocessing configuration (YAML path or mapping) over the defaults.

    Keys: ``label``, ``orientation`` (code or null), ``spacing`` ([x, y, z] mm or null),
    ``interpolator`` (linear | bspline), ``n4`` (null or mapping of :func:`n4_correct`
    arguments), ``normalize`` (none | zscore | histogram), ``histogram`` (mapping with
    ``landmarks``: per-modality landmarks file written by ``deepnomo preprocess``
    (relative to the YAML's folder), or ``fit: true`` to
    learn it on the cases being processed, with optional ``percentiles``),
    ``geometry_tolerance_mm``.
    """
    import yaml

    if config is None:
        raw: Mapping[str, Any] = {}
    elif isinstance(config, Mapping):
        raw = config
    else:
        raw = yaml.safe_load(Path(config).read_text(encoding="utf-8")) or {}
        if not isinstance(raw, Mapping):
            raise ValueError(f"config {config}: expected a YAML mapping")
    unknown = sorted(set(raw) - set(DEFAULT_CONFIG))
    if unknown:
        raise ValueError(f"config: unknown key(s) {unknown}; known: {sorted(DEFAULT_CONFIG)}")
    cfg = {**DEFAULT_CONFIG, **raw}
    hist = cfg["histogram"]
    if isinstance(hist, Mapping) and hist.get("landmarks") and not isinstance(config, Mapping) \
            and config is not None and not Path(hist["landmarks"]).is_absolute():
        cfg["histogram"] = {**hist, "landmarks": str(Path(config).parent / hist["landmarks"])}
    if cfg["normalize"] not in NORMALIZE:
        raise ValueError(f"config 'normalize': {cfg['normalize']!r}; expected one of {NORMALIZE}")
    if cfg["interpolator"] not in ("linear", "bspline"):
        raise ValueError(f"config 'interpolator': {cfg['interpolator']!r}; expected linear or "
                         "bspline")
    if cfg["normalize"] == "histogram" and not cfg["histogram"]:
        raise ValueError("config 'histogram': needed when normalize is 'histogram' "
                         "({landmarks: FILE} or {fit: true})")
    return cfg


def prepare_pair(image: sitk.Image, mask: sitk.Image | None, cfg: Mapping[str, Any],
                 ) -> tuple[sitk.Image, sitk.Image | None, list[dict[str, Any]]]:
    """Checks, mask alignment, reorientation, resampling and N4 (no normalisation).

    Returns the image (float32), the mask (uint8, or None) and the step records.
    """
    steps: list[dict[str, Any]] = []
    check_image(image)
    image = sitk.Cast(image, sitk.sitkFloat32)
    if mask is not None:
        mask = align_mask(image, mask, cfg["geometry_tolerance_mm"])
        check_mask(mask, cfg["label"])
        mask = sitk.Cast(mask == cfg["label"], sitk.sitkUInt8)
        steps.append({"step": "align_mask", "tol_mm": cfg["geometry_tolerance_mm"],
                      "label": cfg["label"]})
    if cfg["orientation"]:
        image = reorient(image, cfg["orientation"])
        mask = reorient(mask, cfg["orientation"]) if mask is not None else None
        steps.append({"step": "reorient", "orientation": cfg["orientation"]})
    if cfg["spacing"]:
        image = resample(image, cfg["spacing"], cfg["interpolator"])
        mask = resample(mask, cfg["spacing"], "nearest") if mask is not None else None
        steps.append({"step": "resample", "spacing": list(cfg["spacing"]),
                      "interpolator": cfg["interpolator"], "mask_interpolator": "nearest"})
        if mask is not None:
            check_mask(mask, 1, name="mask after resampling")
    if cfg["n4"]:
        n4 = dict(cfg["n4"])
        image = n4_correct(image, **n4)
        steps.append({"step": "n4", **{"shrink_factor": 2, "iterations": [50, 50, 30]}, **n4})
    return image, mask, steps


def normalize(image: sitk.Image, cfg: Mapping[str, Any],
              standardizer: HistogramStandardizer | None = None,
              ) -> tuple[sitk.Image, list[dict[str, Any]]]:
    """Apply the configured intensity normalisation; returns the image and its step record."""
    how = cfg["normalize"]
    if how == "zscore":
        return zscore(image), [{"step": "zscore", "mask": "otsu_body"}]
    if how == "histogram":
        if standardizer is None:
            raise ValueError("normalize: 'histogram' needs a fitted HistogramStandardizer")
        return standardizer.transform(image), [{"step": "histogram_standardize",
                                                **standardizer.to_dict()}]
    return image, []
