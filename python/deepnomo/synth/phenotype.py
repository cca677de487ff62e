"""Latent tumor phenotype: what the images show and what drives the hazard.

Each patient has a standard-normal (truncated at +-2.8), correlated vector of
tumor traits. Traits map to physical tumor parameters that the image renderer
draws (:mod:`deepnomo.synth.images`) and enter the hazard linearly
(:func:`imaging_lp`).

=============  ==========================================  ======================
trait          visible as                                   log-HR per SD
=============  ==========================================  ======================
volume         tumor size (mL); log-volume = log(median) + 0.55 z      0.45
necrosis       dark, non-enhancing core (T2-bright, PET-cold)           0.40
heterogeneity  finer (shorter-wavelength), slightly stronger texture     0.75
irregularity   lobulated, irregular margin                              0.85
enhancement    CE-T1 enhancement ratio; PET uptake (recurrent)          0.20
pathology      nuclear density / atypia on H&E (multiscale only)        0.60
=============  ==========================================  ======================

For the treatment designs the enhancement trait is also the predictive
phenotype: it modifies the added treatment's effect (see
:func:`deepnomo.synth.survival.treatment_lp`).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.special import ndtr

TRAITS = ("volume", "necrosis", "heterogeneity", "irregularity", "enhancement")
BETA = {"volume": 0.45, "necrosis": 0.40, "heterogeneity": 0.75, "irregularity": 0.85,
        "enhancement": 0.20, "pathology": 0.60}
CORR = np.array([
    [1.00, 0.30, 0.10, 0.10, 0.10],
    [0.30, 1.00, 0.10, 0.00, 0.00],
    [0.10, 0.10, 1.00, 0.10, 0.00],
    [0.10, 0.00, 0.10, 1.00, 0.00],
    [0.10, 0.00, 0.00, 0.00, 1.00],
])
Z_LIMIT = 2.8


def sample_traits(rng: np.random.Generator, n: int, pathology: bool) -> pd.DataFrame:
    """Draw n patients' latent traits (columns ``z_<trait>``), shape (n, 5 or 6)."""
    z = rng.standard_normal((n, len(TRAITS))) @ np.linalg.cholesky(CORR).T
    out = pd.DataFrame(np.clip(z, -Z_LIMIT, Z_LIMIT), columns=[f"z_{t}" for t in TRAITS])
    if pathology:
        path = 0.3 * out["z_necrosis"] + np.sqrt(1 - 0.09) * rng.standard_normal(n)
        out["z_pathology"] = np.clip(path, -Z_LIMIT, Z_LIMIT)
    return out


def imaging_lp(traits: pd.DataFrame) -> np.ndarray:
    """Imaging part of the true log-hazard, shape (n,): sum of BETA[t] * z_t."""
    return sum(BETA[c[2:]] * traits[c].to_numpy() for c in traits.columns)


def tumor_parameters(traits: pd.DataFrame, volume_ml: float) -> pd.DataFrame:
    """Physical tumor parameters, one row per patient.

    Columns: ``volume_ml``, ``radius_mm`` (sphere of that volume),
    ``necrotic_fraction`` (volume fraction of the core, 0-1),
    ``heterogeneity`` (relative texture amplitude), ``texture_mm`` (texture
    wavelength; shorter = more heterogeneous), ``irregularity`` (margin
    perturbation, fraction of the radius), ``enhancement`` (CE-T1 / T1 tumor
    signal ratio), ``uptake`` (viable-tumor SUV), ``atypia`` (0-1, H&E).
    """
    z = traits
    vol = volume_ml * np.exp(0.55 * z["z_volume"].to_numpy())
    out = pd.DataFrame({
        "volume_ml": vol,
        "radius_mm": np.cbrt(3.0 * vol * 1000.0 / (4.0 * np.pi)),
        "necrotic_fraction": 1.0 / (1.0 + np.exp(1.7 - 0.8 * z["z_necrosis"].to_numpy())),
        "heterogeneity": 0.15 * np.exp(0.2 * z["z_heterogeneity"].to_numpy()),
        "texture_mm": 10.0 * np.exp(-0.3 * z["z_heterogeneity"].to_numpy()),
        "irregularity": 0.30 * ndtr(z["z_irregularity"].to_numpy()),
        "enhancement": 1.0 + 0.5 * np.exp(0.35 * z["z_enhancement"].to_numpy()),
        "uptake": 4.5 * np.exp(0.35 * z["z_enhancement"].to_numpy()),
    })
    if "z_pathology" in z.columns:
        out["atypia"] = ndtr(z["z_pathology"].to_numpy())
    return out
