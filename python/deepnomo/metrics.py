"""Small survival statistics: Harrell's C, Kaplan-Meier, reverse-KM follow-up.

Harrell's concordance index and the Kaplan-Meier estimator (with its
reverse-KM use for median follow-up). Times are in months; risk scores follow
the package convention: higher = higher risk = shorter survival.
"""

from __future__ import annotations

import numpy as np

_BLOCK = 512


def _check_survival(time: np.ndarray, event: np.ndarray,
                    name: str) -> tuple[np.ndarray, np.ndarray]:
    time = np.asarray(time, dtype=float)
    event = np.asarray(event)
    if time.ndim != 1 or time.shape != event.shape:
        raise ValueError(f"{name}: 'time' and 'event' must be 1-d arrays of one length, "
                         f"got shapes {time.shape} and {event.shape}")
    if not np.isfinite(time).all() or (time < 0).any():
        raise ValueError(f"{name}: 'time' must be finite and >= 0")
    if not np.isin(event, (0, 1)).all():
        raise ValueError(f"{name}: 'event' must be 0/1")
    return time, event.astype(bool)


def harrell_c(risk: np.ndarray, time: np.ndarray, event: np.ndarray) -> float:
    """Harrell's concordance index.

    A pair (i, j) is comparable when patient i has an event and
    ``time[i] < time[j]``, or ``time[i] == time[j]`` with patient j censored
    (j is known to outlive i). It is concordant when ``risk[i] > risk[j]``;
    a tie in risk counts 1/2. Pairs with tied event times are not comparable,
    as in ``survival::concordance``.

    Parameters
    ----------
    risk : array, shape (n,)
        Risk score, higher = shorter expected survival.
    time : array, shape (n,)
        Follow-up time (any unit).
    event : array, shape (n,)
        1 = event, 0 = censored.

    Returns
    -------
    float
        C = (concordant + ties / 2) / comparable; NaN when no pair is comparable.

    References
    ----------
    Harrell FE, Lee KL, Mark DB. Multivariable prognostic models. Stat Med 1996;15:361-87.
    """
    time, event = _check_survival(time, event, "harrell_c")
    risk = np.asarray(risk, dtype=float)
    if risk.shape != time.shape or not np.isfinite(risk).all():
        raise ValueError("harrell_c: 'risk' must be finite with the shape of 'time'")
    idx = np.flatnonzero(event)
    num = 0.0
    den = 0.0
    for start in range(0, idx.size, _BLOCK):
        rows = idx[start:start + _BLOCK]
        ti, ri = time[rows, None], risk[rows, None]
        comparable = (ti < time[None, :]) | ((ti == time[None, :]) & ~event[None, :])
        num += float(np.sum(comparable * ((ri > risk[None, :]) + 0.5 * (ri == risk[None, :]))))
        den += float(np.sum(comparable))
    return num / den if den > 0 else float("nan")


def kaplan_meier(time: np.ndarray, event: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Kaplan-Meier estimate of S(t) with Greenwood standard errors.

    Returns
    -------
    times : array, shape (k,)
        Distinct event times, increasing.
    surv : array, shape (k,)
        S(t) just after each time.
    se : array, shape (k,)
        Greenwood standard error of ``surv``.
    """
    time, event = _check_survival(time, event, "kaplan_meier")
    times = np.unique(time[event])
    at_risk = time.size - np.searchsorted(np.sort(time), times, side="left")
    deaths = np.array([np.count_nonzero(event & (time == t)) for t in times], dtype=float)
    surv = np.cumprod(1.0 - deaths / at_risk)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(at_risk > deaths, deaths / (at_risk * (at_risk - deaths)), np.inf)
        se = surv * np.sqrt(np.cumsum(terms))
    return times, surv, np.nan_to_num(se, nan=0.0, posinf=0.0)


def km_at(time: np.ndarray, event: np.ndarray, t: float) -> tuple[float, float]:
    """Kaplan-Meier S(t) and its Greenwood standard error at one time point."""
    times, surv, se = kaplan_meier(time, event)
    k = np.searchsorted(times, t, side="right")
    return (1.0, 0.0) if k == 0 else (float(surv[k - 1]), float(se[k - 1]))


def median_followup(time: np.ndarray, event: np.ndarray) -> float:
    """Median follow-up by the reverse Kaplan-Meier method (censoring as the event).

    Returns NaN when the reverse-KM curve never falls to 0.5.
    """
    time, event = _check_survival(time, event, "median_followup")
    times, surv, _ = kaplan_meier(time, (~event).astype(int))
    below = np.flatnonzero(surv <= 0.5)
    return float(times[below[0]]) if below.size else float("nan")
