"""Ridge-penalized linear Cox regression (full risk sets, float64).

The fit that :func:`deepnomo.train.refit_risk_head` uses to set a locked
network's linear risk head from its pooled features.
"""

from __future__ import annotations

import numpy as np
import torch

from deepnomo.losses import cox_ph_loss


def fit_ridge_cox(x: np.ndarray, time: np.ndarray, event: np.ndarray, penalty: float,
                  ties: str = "efron", max_iter: int = 500) -> np.ndarray:
    r"""Coefficients of a linear Cox model with a ridge penalty.

    Minimizes

    .. math:: -\frac{1}{d}\,\ell(\beta) + \lambda \lVert\beta\rVert_2^2,

    where :math:`\ell` is the log partial likelihood of :math:`\eta = x\beta`
    over the whole cohort (Breslow or Efron ties; :func:`deepnomo.losses.cox_ph_loss`),
    :math:`d` the number of events and :math:`\lambda` ``penalty``. Scaling by
    :math:`d` keeps one penalty meaning the same at every cohort size; it equals
    R ``survival::coxph(... ridge(x, theta = 2 * d * penalty, scale = FALSE))``
    (Verweij and Van Houwelingen 1994, Stat Med 13:2427). The objective is
    strictly convex for ``penalty > 0``; it is minimized by L-BFGS.

    Parameters
    ----------
    x : ndarray, shape (n, p)
        Covariates (standardize them first for the penalty to treat them alike).
    time : ndarray, shape (n,)
    event : ndarray, shape (n,), 0/1
    penalty : float
        :math:`\lambda \ge 0`; 0 gives the unpenalized maximum partial likelihood.
    ties : {"efron", "breslow"}
    max_iter : int
        L-BFGS iterations per pass (up to three passes, until the gradient is flat).

    Returns
    -------
    ndarray, shape (p,)

    Raises
    ------
    ValueError
        Non-finite or mis-shaped input, a negative penalty, or no events.
    """
    x = np.asarray(x, dtype=np.float64)
    time = np.asarray(time, dtype=np.float64)
    event = np.asarray(event, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] != time.shape[0] or time.shape != event.shape:
        raise ValueError(f"x: expected shape (n, p) with n = {time.shape[0]} rows of time and "
                         f"event, got {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError("x: contains NaN or infinite values")
    if not penalty >= 0:
        raise ValueError(f"penalty: must be >= 0, got {penalty}")
    if event.sum() == 0:
        raise ValueError("event: no events; a Cox model cannot be fitted")
    xs = torch.from_numpy(x)
    t, e = torch.from_numpy(time), torch.from_numpy(event)
    beta = torch.zeros(x.shape[1], dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([beta], lr=1, max_iter=max_iter, tolerance_grad=1e-10,
                            tolerance_change=1e-14, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = cox_ph_loss(xs @ beta, t, e, ties=ties) + penalty * (beta ** 2).sum()
        loss.backward()
        return loss

    for _ in range(3):
        opt.step(closure)
        if float(beta.grad.abs().max()) < 1e-8:
            break
    return beta.detach().numpy().copy()
