"""Survival times from a Weibull proportional-hazards model.

The primary endpoint's hazard is

    h(t | x) = lambda * k * t^(k - 1) * exp(lp),   S(t | x) = exp(-lambda * t^k * exp(lp)),

with ``lp = lp_clinical + lp_imaging + lp_treatment``. The scale ``lambda`` is
solved so that the expected fraction of observed primary events equals the
preset's event rate given each patient's censoring time. Censoring is
independent: uniform administrative follow-up (accrual) combined with
exponential loss to follow-up. The first failure's cause (distant,
locoregional, death) is drawn with fixed probabilities, which keeps every
cause-specific hazard proportional; secondary endpoints follow from the
failure history (later distant or locoregional failure, death after failure).

References
----------
Bender R, Augustin T, Blettner M. Generating survival times to simulate Cox
proportional hazards models. Stat Med 2005;24:1713-23.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.optimize import brentq

from deepnomo.synth.designs import Design

POST_FAILURE_DEATH_MEDIAN = 30.0
LATER_FAILURE_MEDIAN = 18.0
P_DISTANT_AFTER_LOCAL = 0.35
P_LOCAL_AFTER_DISTANT = 0.20
TIME_RESOLUTION = 0.01  # months: times are recorded to this unit, and none is shorter


def treatment_lp(design: Design, arm: np.ndarray, z_predictive: np.ndarray,
                 dose: np.ndarray | None = None) -> np.ndarray:
    """Log-hazard ratio of the received arm against the reference arm, shape (n,).

    ``cptdn``: ICT+CCRT vs CCRT, ``-0.30 - 0.55 z`` (patients with
    ``z < -0.55`` are harmed by the added induction chemotherapy).
    ``stage2``: chemotherapy vs none, ``(0.05 - 0.60 z) * clip(dose / 160, 0.5, 1.5)``
    for DDP/NDP (dose = cumulative cisplatin dose, 160 mg/m2 when unknown) and
    half that for non-DDP/NDP regimens. ``z`` is the predictive (enhancement) trait.
    Designs without modelled arms get zeros.
    """
    arm = np.asarray(arm, dtype=object)
    z = np.asarray(z_predictive, dtype=float)
    if design.name == "cptdn":
        return np.where(arm == "ICT+CCRT", -0.30 - 0.55 * z, 0.0)
    if design.name == "stage2":
        d = np.full(z.shape, 160.0) if dose is None else np.where(np.isnan(dose), 160.0, dose)
        effect = (0.05 - 0.60 * z) * np.clip(d / 160.0, 0.5, 1.5)
        return np.select([arm == "DDP/NDP", arm == "non-DDP/NDP"], [effect, 0.5 * effect], 0.0)
    return np.zeros(z.shape)


def censoring_times(rng: np.random.Generator, n: int, design: Design) -> np.ndarray:
    """Potential follow-up (months), shape (n,): administrative end or loss to follow-up."""
    lo, hi = design.followup
    admin = rng.uniform(lo, hi, n)
    lost = rng.exponential(1.0 / design.dropout, n)
    return np.minimum(admin, lost)


def calibrate_scale(lp: np.ndarray, censor: np.ndarray, shape: float, event_rate: float) -> float:
    """Weibull scale lambda with mean_i P(T_i <= C_i) = event_rate."""
    base = censor**shape * np.exp(lp)

    def gap(log_lam: float) -> float:
        return float(np.mean(-np.expm1(-np.exp(log_lam) * base)) - event_rate)

    return float(np.exp(brentq(gap, -40.0, 20.0, xtol=1e-12)))


def survival_probability(t: float, lp: np.ndarray, scale: float, shape: float) -> np.ndarray:
    """True S(t | lp) of the primary endpoint, shape (n,)."""
    return np.exp(-scale * t**shape * np.exp(lp))


def simulate_endpoints(rng: np.random.Generator, design: Design, lp: np.ndarray,
                       censor: np.ndarray, scale: float) -> pd.DataFrame:
    """All endpoints as ``<name>_time`` (months, 2 decimals) / ``<name>_event`` columns.

    A time that rounds to zero is recorded as ``TIME_RESOLUTION``: a follow-up of
    0 months is not a recordable observation, and Cox LASSO fits refuse it.
    """
    n = lp.size
    t_fail = (-np.log(rng.random(n)) / (scale * np.exp(lp))) ** (1.0 / design.shape)
    causes = list(design.causes)
    cause = np.asarray(causes, dtype=object)[
        rng.choice(len(causes), n, p=np.array([design.causes[c] for c in causes]))]
    later = rng.exponential(LATER_FAILURE_MEDIAN / np.log(2), (2, n))
    after = rng.random((2, n))
    death = np.where(cause == "death", t_fail,
                     t_fail + rng.exponential(POST_FAILURE_DEATH_MEDIAN / np.log(2), n))
    distant = np.select([cause == "distant",
                         (cause == "locoregional") & (after[0] < P_DISTANT_AFTER_LOCAL)],
                        [t_fail, t_fail + later[0]], np.inf)
    local = np.select([cause == "locoregional",
                       (cause == "distant") & (after[1] < P_LOCAL_AFTER_DISTANT)],
                      [t_fail, t_fail + later[1]], np.inf)
    event_time = {"os": death, "dmfs": np.minimum(distant, death),
                  "lrfs": np.minimum(local, death), "dfs": t_fail}
    aliases = {"ffs": "dfs", "dffs": "dmfs", "lrffs": "lrfs"}
    out = {}
    for name in design.endpoints:
        t = event_time[aliases.get(name, name)]
        if name == design.primary:
            t = t_fail
        out[f"{name}_time"] = np.maximum(np.round(np.minimum(t, censor), 2), TIME_RESOLUTION)
        out[f"{name}_event"] = (t <= censor).astype("int64")
    return pd.DataFrame(out)
