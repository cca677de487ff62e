"""Images rendered from a tumor's physical parameters, with per-center acquisition effects.

Geometry: every volume covers the design's field of view, centred on the
origin (LPS, identity direction), sampled on the center's grid (in-plane
spacing / ``inplane_factor``; slice thickness, hence slice count, per center).
The tumor is the level set ``f(x) = |x - c| / R - 1 - irregularity * tanh(g(x)) < 0``
of a smooth random field ``g``; its necrotic core is ``f(x) + 1 < fraction^(1/3)``;
texture ``t(x)`` of wavelength ``texture_mm`` modulates viable tumor by
``1 + heterogeneity * t(x)``: the heterogeneity trait mostly sets the texture's
coarseness, which first-order intensity statistics do not see.
Smooth fields are sums of random plane waves, so they do not depend on the grid.

MR (T1, T2, CE-T1, co-registered; one mask pair per patient):
``I = scale_seq * signal * exp(bias * b(x)) + offset + noise * scale * N(0, 1)``, int16.
PET (SUV, float32, PSF blur, Poisson-like noise) and CT (HU, int16) share a grid.
Reader masks threshold ``f`` after a small reader-specific smooth perturbation and
offset, so two readers agree with Dice about 0.9. H&E tiles: Beer-Lambert mixture
of the center's hematoxylin and eosin optical-density vectors; tumor nuclei whose
density, size spread and darkness grow with atypia, and lymphocytes by TIL grade.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.ndimage import gaussian_filter
from scipy.special import expit

from deepnomo.synth.designs import Acquisition, ImageSpec

SEQUENCE_GAIN = {"t1": 1.0, "t2": 1.3, "t1c": 1.1}
# signal levels: background tissue, viable tumor, necrotic core (relative units)
MR_LEVELS = {"t1": (0.50, 0.62, 0.30), "t2": (0.35, 0.80, 1.05), "t1c": (0.55, 0.62, 0.28)}
TEXTURE_WEIGHT = {"t1": 0.8, "t2": 1.0, "t1c": 1.2}
EDGE_MM = 0.8
READER_OFFSET = (-0.035, 0.035)
READER_WOBBLE = 0.05


@dataclass
class Grid:
    """Voxel-centre coordinates (mm) of one volume, shape (nz, ny, nx, 3) flattened."""

    spacing: tuple[float, float, float]
    size: tuple[int, int, int]  # (nx, ny, nz)
    coords: np.ndarray  # (nz*ny*nx, 3), x-y-z order, float32

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.size[2], self.size[1], self.size[0]

    @property
    def origin(self) -> tuple[float, float, float]:
        return tuple(-(n - 1) / 2.0 * s for n, s in zip(self.size, self.spacing, strict=True))


def make_grid(acq: Acquisition, spec: ImageSpec, fov_mm: tuple[float, float, float]) -> Grid:
    """The center's sampling grid over a field of view (mm, x-y-z)."""
    sx, sy, sz = acq.spacing
    spacing = (sx / spec.inplane_factor, sy / spec.inplane_factor, sz)
    size = tuple(max(4, int(round(f / s))) for f, s in zip(fov_mm, spacing, strict=True))
    axes = [((np.arange(n) - (n - 1) / 2.0) * s).astype(np.float32)
            for n, s in zip(size, spacing, strict=True)]
    z, y, x = np.meshgrid(axes[2], axes[1], axes[0], indexing="ij")
    coords = np.stack([x.ravel(), y.ravel(), z.ravel()], axis=1)
    return Grid(spacing, size, coords)


def plane_wave_field(rng: np.random.Generator, coords: np.ndarray, wavelength: float,
                     waves: int = 12) -> np.ndarray:
    """Smooth random field with unit variance at ``coords`` (n, d), length scale in mm."""
    d = coords.shape[1]
    direction = rng.standard_normal((d, waves))
    direction /= np.linalg.norm(direction, axis=0, keepdims=True)
    freq = 2.0 * np.pi / wavelength * rng.uniform(0.7, 1.3, waves)
    phase = rng.uniform(0.0, 2.0 * np.pi, waves)
    w = (direction * freq).astype(np.float32)
    return (np.sqrt(2.0 / waves) * np.cos(coords @ w + phase.astype(np.float32)).sum(axis=1))


@dataclass
class Tumor:
    """Rendered tumor maps on one grid, each shape (nz*ny*nx,)."""

    level: np.ndarray  # f(x): < 0 inside
    inside: np.ndarray  # soft membership 0-1
    core: np.ndarray  # soft core membership 0-1 (within the tumor)
    texture: np.ndarray  # unit-variance texture
    anatomy: np.ndarray  # unit-variance coarse background structure
    radius: float


def render_tumor(rng: np.random.Generator, grid: Grid, params: dict) -> Tumor:
    """Tumor level set, core, texture and background structure on a grid."""
    radius = float(params["radius_mm"])
    centre = rng.uniform(-1.0, 1.0, 3) * np.array([6.0, 6.0, 3.0])
    rel = grid.coords - centre.astype(np.float32)
    dist = np.sqrt((rel**2).sum(axis=1)) / radius
    lobes = plane_wave_field(rng, rel, wavelength=1.3 * radius, waves=10)
    level = dist - 1.0 - float(params["irregularity"]) * np.tanh(lobes)
    sharp = radius / EDGE_MM
    inside = expit(-level * sharp)
    core_radius = float(params["necrotic_fraction"]) ** (1.0 / 3.0)
    core = expit(-((level + 1.0) - core_radius) * sharp)
    texture = plane_wave_field(rng, rel, wavelength=float(params["texture_mm"]), waves=24)
    anatomy = plane_wave_field(rng, grid.coords, wavelength=35.0, waves=8)
    return Tumor(level.astype(np.float32), inside.astype(np.float32), core.astype(np.float32),
                 texture.astype(np.float32), anatomy.astype(np.float32), radius)


def reader_masks(rng: np.random.Generator, grid: Grid, tumor: Tumor) -> list[np.ndarray]:
    """Two readers' binary masks (uint8, shape (nz, ny, nx)) that differ slightly."""
    masks = []
    for offset in READER_OFFSET:
        wobble = plane_wave_field(rng, grid.coords, wavelength=0.8 * tumor.radius, waves=8)
        mask = (tumor.level + offset + READER_WOBBLE * wobble) < 0
        masks.append(mask.reshape(grid.shape).astype(np.uint8))
    return masks


def render_mr(rng: np.random.Generator, grid: Grid, tumor: Tumor, params: dict,
              acq: Acquisition, sequence: str) -> np.ndarray:
    """One MR sequence (int16, shape (nz, ny, nx)) with the center's acquisition effects."""
    bg, viable, necrotic = MR_LEVELS[sequence]
    if sequence == "t1c":
        viable = viable * float(params["enhancement"])
    het = float(params["heterogeneity"]) * TEXTURE_WEIGHT[sequence]
    tumor_signal = (1 - tumor.core) * viable * (1 + het * tumor.texture) + tumor.core * necrotic
    signal = (1 - tumor.inside) * bg * (1 + 0.06 * tumor.anatomy) + tumor.inside * tumor_signal
    bias = acq.bias * plane_wave_field(rng, grid.coords, wavelength=220.0, waves=4)
    scale = acq.scale * SEQUENCE_GAIN[sequence]
    image = scale * signal * np.exp(bias) + acq.offset
    image = image + acq.noise * scale * rng.standard_normal(image.size).astype(np.float32)
    return np.clip(np.rint(image), -32768, 32767).astype(np.int16).reshape(grid.shape)


def render_pet(rng: np.random.Generator, grid: Grid, tumor: Tumor, params: dict,
               acq: Acquisition) -> np.ndarray:
    """PET in SUV (float32, shape (nz, ny, nx)): point-spread blur and count noise."""
    viable = float(params["uptake"]) * (1 + 1.5 * float(params["heterogeneity"]) * tumor.texture)
    tumor_suv = (1 - tumor.core) * viable + tumor.core * 0.8
    suv = (1 - tumor.inside) * 1.3 * (1 + 0.1 * tumor.anatomy) + tumor.inside * tumor_suv
    sigma_vox = [2.5 / s for s in grid.spacing[::-1]]
    suv = gaussian_filter(suv.reshape(grid.shape), sigma_vox, mode="nearest")
    suv = suv + 3.0 * acq.noise * np.sqrt(np.clip(suv, 0, None)) * rng.standard_normal(suv.shape)
    return np.clip(suv, 0, None).astype(np.float32)


def render_ct(rng: np.random.Generator, grid: Grid, tumor: Tumor, params: dict,
              acq: Acquisition) -> np.ndarray:
    """CT in HU (int16, shape (nz, ny, nx)): soft tissue, weakly contrasting tumor."""
    het = float(params["heterogeneity"])
    tumor_hu = (1 - tumor.core) * (62 + 60 * het * tumor.texture) + tumor.core * 25
    hu = (1 - tumor.inside) * (42 + 12 * tumor.anatomy) + tumor.inside * tumor_hu
    hu = hu + 300 * acq.noise * rng.standard_normal(hu.size)
    return np.clip(np.rint(hu), -1024, 3071).astype(np.int16).reshape(grid.shape)


def _unit(v) -> np.ndarray:
    v = np.asarray(v, dtype=float)
    return v / np.linalg.norm(v)


def render_tile(rng: np.random.Generator, size: int, atypia: float, til_high: bool,
                acq: Acquisition) -> np.ndarray:
    """One H&E-like ROI tile, RGB uint8 of shape (size, size, 3).

    Tumor nuclei: count ~ Poisson(density), radius lognormal whose median and
    spread grow with ``atypia`` (pleomorphism), darker with atypia
    (hyperchromasia). Lymphocytes: small, round, very dark; more with high TIL.
    Colour by Beer-Lambert with the center's stain vectors.
    """
    area = (size / 64.0) ** 2
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    pix = np.stack([xx.ravel(), yy.ravel()], axis=1)
    eosin = 0.45 + 0.18 * plane_wave_field(rng, pix, wavelength=size / 3.0, waves=6)
    hema = np.zeros((size, size), dtype=np.float32)
    n_tumor = rng.poisson(area * (12 + 36 * atypia))
    n_lymph = rng.poisson(area * (14 if til_high else 4))
    radii = np.concatenate([
        np.exp(np.log(2.6 + 1.6 * atypia) + (0.08 + 0.3 * atypia) * rng.standard_normal(n_tumor)),
        np.full(n_lymph, 1.5)])
    darkness = np.concatenate([np.full(n_tumor, 0.45 + 0.8 * atypia), np.full(n_lymph, 1.3)])
    centres = rng.uniform(0, size, (radii.size, 2)).astype(np.float32)
    stretch = rng.uniform(1.0, 1.0 + 0.6 * atypia, radii.size)
    angle = rng.uniform(0, np.pi, radii.size)
    for k in range(radii.size):
        reach = radii[k] + 4.0  # the soft edge is negligible beyond this
        x0, x1 = (int(np.clip(centres[k, 0] + d, 0, size)) for d in (-reach, reach + 1))
        y0, y1 = (int(np.clip(centres[k, 1] + d, 0, size)) for d in (-reach, reach + 1))
        dx, dy = xx[y0:y1, x0:x1] - centres[k, 0], yy[y0:y1, x0:x1] - centres[k, 1]
        c, s = np.cos(angle[k]), np.sin(angle[k])
        u, v = dx * c + dy * s, (-dx * s + dy * c) * stretch[k]
        blob = darkness[k] * expit((radii[k] - np.sqrt(u * u + v * v)) / 0.6)
        hema[y0:y1, x0:x1] = np.maximum(hema[y0:y1, x0:x1], blob)
    h_vec, e_vec = (_unit(v) for v in acq.stain)
    od = (hema.ravel()[:, None] * h_vec[None, :]
          + np.clip(eosin, 0.05, None)[:, None] * e_vec[None, :])
    rgb = 255.0 * np.exp(-od) + rng.normal(0.0, 3.0, od.shape)
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8).reshape(size, size, 3)
