"""The five study designs as data: cohort shapes, follow-up, endpoints, arms, modalities.

Each design is a :class:`Design`; its presets (:class:`Preset`) fix cohort
sizes, the target event rate of the primary endpoint and image sizes.
``quick`` presets keep every design small (seconds to generate) with at least
about 60 training events, which for the low-event designs needs a higher event
rate than the paper's; ``paper`` presets use the papers' sizes and rates.

====================  =========================  ================  =========  ==========
design                cohorts (quick / paper)    event rate        median FU  modalities
                                                 quick / paper     (months)
====================  =========================  ================  =========  ==========
multiscale            200/60/60 ; 132/44/44      0.37 / 0.25       37         T1 T2 CE-T1 H&E
t3n1                  300/130 ; 447/191          0.25 / 0.18       65         T1 T2 CE-T1
stage2                360/300 ; 575/497          0.21 / 0.07       80         T1 T2 CE-T1
recurrent             180/120 ; 269/151          0.45 / 0.42       36         PET CT
cptdn                 300/140/100 ; 684/324/198  0.25 / 0.16       64         T1 T2 CE-T1
====================  =========================  ================  =========  ==========

Why quick rates are higher: at the papers' rates, 60 training events would
need 240 (multiscale), 330 (t3n1), 860 (stage2) and 375 (cptdn) training
patients; raising the rate (shorter time to failure at the same follow-up)
keeps cohorts and generation small while the statistics stay stable. The
paper rates are the fractions of patients with a primary event (stage2: 5-year
DMFS ~93%). ``paper`` images are finer in-plane (x1.5) and carry four 128-px
H&E tiles instead of two 64-px ones.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field


class SynthError(ValueError):
    """An impossible synthetic-cohort request (unknown design, bad sizes or rates)."""


@dataclass(frozen=True)
class Acquisition:
    """Per-center acquisition effects that preprocessing has to remove.

    Attributes
    ----------
    spacing : (x, y, z) voxel spacing in mm at the ``quick`` resolution.
    scale, offset : MR intensity = scale * signal * bias + offset (arbitrary units).
    bias : amplitude (log scale) of the smooth multiplicative bias field.
    noise : Gaussian noise SD as a fraction of ``scale``.
    stain : (hematoxylin, eosin) RGB optical-density vectors of the center's H&E scanner.
    """

    spacing: tuple[float, float, float]
    scale: float
    offset: float
    bias: float
    noise: float
    stain: tuple[tuple[float, float, float], tuple[float, float, float]]


ACQUISITIONS: dict[str, Acquisition] = {
    "center1": Acquisition((2.0, 2.0, 4.0), 900.0, 40.0, 0.15, 0.030,
                           ((0.65, 0.70, 0.29), (0.07, 0.99, 0.11))),
    "center2": Acquisition((1.75, 1.75, 5.0), 1400.0, 0.0, 0.25, 0.045,
                           ((0.55, 0.78, 0.30), (0.10, 0.90, 0.40))),
    "center3": Acquisition((2.4, 2.4, 3.5), 650.0, 90.0, 0.10, 0.025,
                           ((0.72, 0.62, 0.31), (0.05, 0.95, 0.30))),
    "center4": Acquisition((1.9, 1.9, 4.5), 1150.0, 20.0, 0.20, 0.050,
                           ((0.60, 0.72, 0.35), (0.15, 0.85, 0.50))),
}


@dataclass(frozen=True)
class Cohort:
    """One cohort of a design: its label and patients per center."""

    label: str
    centers: Mapping[str, int]

    @property
    def n(self) -> int:
        return int(sum(self.centers.values()))


@dataclass(frozen=True)
class ImageSpec:
    """Image sizes of a preset.

    In-plane spacing is the center's divided by ``inplane_factor`` (slices keep
    the center's thickness); H&E tiles are ``tile_px`` square.
    """

    inplane_factor: float = 1.0
    tiles_per_patient: int = 2
    tile_px: int = 64


@dataclass(frozen=True)
class Preset:
    cohorts: tuple[Cohort, ...]
    event_rate: float
    images: ImageSpec = field(default_factory=ImageSpec)


@dataclass(frozen=True)
class Design:
    """Shape of one study design.

    Attributes
    ----------
    name : design name (``multiscale``, ``t3n1``, ``stage2``, ``recurrent``, ``cptdn``).
    primary : primary endpoint name; ``endpoints`` maps every endpoint to its description.
    causes : first-failure causes of the primary endpoint and their probabilities
        (``distant``, ``locoregional``, ``death``).
    followup : (min, max) months of potential follow-up (uniform accrual, administrative end).
    dropout : monthly hazard of loss to follow-up.
    shape : Weibull shape of the primary endpoint's baseline hazard.
    modalities : image modalities per patient (``t1``, ``t2``, ``t1c``, ``pet``, ``ct``, ``he``).
    arms : treatment arms whose effect is modelled (first = reference), empty if none.
    volume_ml : median tumor volume (mL).
    fov_mm : field of view (x, y, z) in mm, large enough for the largest tumors.
    """

    name: str
    title: str
    primary: str
    endpoints: Mapping[str, str]
    causes: Mapping[str, float]
    followup: tuple[float, float]
    dropout: float
    shape: float
    modalities: tuple[str, ...]
    arms: tuple[str, ...]
    volume_ml: float
    presets: Mapping[str, Preset]
    fov_mm: tuple[float, float, float] = (96.0, 96.0, 88.0)


def _c(label: str, **centers: int) -> Cohort:
    return Cohort(label, dict(centers))


_MR = ("t1", "t2", "t1c")
_DFS = {"dfs": "disease-free survival: locoregional or distant failure, or death",
        "os": "overall survival: death from any cause",
        "dmfs": "distant metastasis-free survival: distant failure or death",
        "lrfs": "locoregional relapse-free survival: locoregional failure or death"}
_FAIL = {"distant": 0.5, "locoregional": 0.3, "death": 0.2}
_PAPER_IMAGES = ImageSpec(inplane_factor=1.5, tiles_per_patient=4, tile_px=128)

DESIGNS: dict[str, Design] = {
    "multiscale": Design(
        "multiscale", "MRI radiomics + pathology deep learning, FFS", "ffs",
        {"ffs": "failure-free survival: locoregional or distant failure, or death",
         "os": _DFS["os"],
         "dffs": "distant failure-free survival: distant failure or death",
         "lrffs": "locoregional failure-free survival: locoregional failure or death"},
        _FAIL, (18.0, 56.0), 0.001, 1.0, _MR + ("he",), (), 12.0,
        {"quick": Preset((_c("train", center1=200), _c("internal_test", center1=60),
                          _c("external_test", center2=60)), 0.37),
         "paper": Preset((_c("train", center1=132), _c("internal_test", center1=44),
                          _c("external_test", center2=44)), 0.25, _PAPER_IMAGES)},
        fov_mm=(80.0, 80.0, 72.0)),
    "t3n1": Design(
        "t3n1", "T3N1M0, ICT+CCRT, MRI deep learning nomogram, DFS", "dfs", _DFS,
        _FAIL, (42.0, 89.0), 0.001, 0.9, _MR, (), 24.0,
        {"quick": Preset((_c("train", center1=300), _c("test", center1=130)), 0.25),
         "paper": Preset((_c("train", center1=447), _c("test", center1=191)), 0.18,
                         _PAPER_IMAGES)}),
    "stage2": Design(
        "stage2", "stage II, 3D U-Net vs radiomics, chemotherapy benefit, DMFS", "dmfs",
        {"dmfs": _DFS["dmfs"], "os": _DFS["os"]},
        {"distant": 0.85, "death": 0.15}, (47.0, 113.0), 0.0008, 0.9, _MR,
        ("none", "DDP/NDP", "non-DDP/NDP"), 8.0,
        {"quick": Preset((_c("train", center1=360),
                          _c("external_test", center2=170, center3=130)), 0.21),
         "paper": Preset((_c("train", center1=575),
                          _c("external_test", center2=285, center3=212)), 0.07, _PAPER_IMAGES)},
        fov_mm=(72.0, 72.0, 64.0)),
    "recurrent": Design(
        "recurrent", "recurrent disease, PET/CT deep learning, OS", "os",
        {"os": _DFS["os"]}, {"death": 1.0}, (12.0, 60.0), 0.001, 1.1, ("pet", "ct"), (), 15.0,
        {"quick": Preset((_c("train", center1=180), _c("test", center1=120)), 0.45),
         "paper": Preset((_c("train", center1=269), _c("test", center1=151)), 0.42,
                         _PAPER_IMAGES)},
        fov_mm=(84.0, 84.0, 76.0)),
    "cptdn": Design(
        "cptdn", "T3N1M0, CCRT vs ICT+CCRT, prognosis and treatment decision, DFS", "dfs",
        _DFS, _FAIL, (39.0, 89.0), 0.001, 0.9, _MR, ("CCRT", "ICT+CCRT"), 24.0,
        {"quick": Preset((_c("train", center1=300), _c("internal_test", center1=140),
                          _c("external_test", center2=35, center3=35, center4=30)), 0.25),
         "paper": Preset((_c("train", center1=684), _c("internal_test", center1=324),
                          _c("external_test", center2=80, center3=60, center4=58)), 0.16,
                         _PAPER_IMAGES)}),
}


def check_preset(name: str, preset: Preset) -> None:
    """Refuse impossible preset parameters with a message naming the field."""
    if not preset.cohorts:
        raise SynthError(f"design '{name}': preset has no cohorts")
    for cohort in preset.cohorts:
        for center, n in cohort.centers.items():
            if not isinstance(n, int) or isinstance(n, bool) or n < 1:
                raise SynthError(f"design '{name}': cohort '{cohort.label}' center '{center}' "
                                 f"size must be a positive integer, got {n!r}")
            if center not in ACQUISITIONS:
                raise SynthError(f"design '{name}': unknown center '{center}'; "
                                 f"known: {sorted(ACQUISITIONS)}")
    if not 0.0 < float(preset.event_rate) < 1.0:
        raise SynthError(f"design '{name}': event_rate must be in (0, 1), "
                         f"got {preset.event_rate!r}")
    img = preset.images
    if img.tiles_per_patient < 2 or img.tile_px < 16 or img.inplane_factor <= 0:
        raise SynthError(f"design '{name}': image spec needs tiles_per_patient >= 2, "
                         f"tile_px >= 16 and inplane_factor > 0, got {img}")


def get_design(study: str, preset: str = "quick", *,
               sizes: Mapping[str, Mapping[str, int]] | None = None,
               event_rate: float | None = None,
               images: ImageSpec | None = None) -> tuple[Design, Preset]:
    """Look up a design and one of its presets, optionally overriding parts of the preset.

    Parameters
    ----------
    study : design name (see ``DESIGNS``).
    preset : ``quick`` or ``paper``.
    sizes : cohort label -> {center: n}; replaces those cohorts' sizes.
    event_rate : target fraction of primary events, in (0, 1).
    images : replacement :class:`ImageSpec`.

    Raises
    ------
    SynthError
        Unknown study, preset or cohort label; negative sizes; event rate outside (0, 1).
    """
    if study not in DESIGNS:
        raise SynthError(f"study: unknown design '{study}'; known: {sorted(DESIGNS)}")
    design = DESIGNS[study]
    if preset not in design.presets:
        raise SynthError(f"preset: unknown preset '{preset}'; known: {sorted(design.presets)}")
    chosen = design.presets[preset]
    if sizes:
        labels = [c.label for c in chosen.cohorts]
        unknown = sorted(set(sizes) - set(labels))
        if unknown:
            raise SynthError(f"sizes: unknown cohort(s) {unknown} for '{study}'; known: {labels}")
        chosen = dataclasses.replace(chosen, cohorts=tuple(
            Cohort(c.label, dict(sizes[c.label])) if c.label in sizes else c
            for c in chosen.cohorts))
    if event_rate is not None:
        chosen = dataclasses.replace(chosen, event_rate=event_rate)
    if images is not None:
        chosen = dataclasses.replace(chosen, images=images)
    check_preset(study, chosen)
    return design, chosen
