"""Losses for survival deep learning.

* :func:`cox_ph_loss` -- negative Cox partial log-likelihood of a batch of risk
  scores (DeepSurv), with Breslow or Efron handling of tied event times.
* :func:`dice_loss` -- soft Dice loss for segmentation pretraining (3D U-Net).
* :func:`smoothed_bce` -- binary cross-entropy with label smoothing, for the
  k-year event pretraining task; :func:`kyear_labels` builds its targets.

All functions are pure: tensors in, a scalar tensor out.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

TIES = ("breslow", "efron")


def _segment_logsumexp(x: torch.Tensor, index: torch.Tensor, n: int) -> torch.Tensor:
    """``out[j] = log(sum(exp(x[index == j])))``; ``-inf`` for empty segments."""
    peak = torch.full((n,), -torch.inf, dtype=x.dtype, device=x.device)
    peak = peak.scatter_reduce(0, index, x.detach(), reduce="amax", include_self=True)
    safe = torch.where(torch.isfinite(peak), peak, torch.zeros_like(peak))
    total = torch.zeros(n, dtype=x.dtype, device=x.device).index_add(0, index,
                                                                     torch.exp(x - safe[index]))
    return torch.log(total) + safe


def cox_ph_loss(risk: torch.Tensor, time: torch.Tensor, event: torch.Tensor,
                ties: str = "efron", reduction: str = "mean") -> torch.Tensor:
    r"""Negative Cox partial log-likelihood.

    With risk scores :math:`\eta_i`, distinct event times :math:`t_j`, the
    :math:`d_j` events :math:`D_j` at :math:`t_j` and the risk set
    :math:`R_j = \{i: T_i \ge t_j\}`, the log partial likelihood is

    * Breslow: :math:`\sum_j [\sum_{i\in D_j}\eta_i - d_j \log\sum_{i\in R_j} e^{\eta_i}]`
    * Efron: :math:`\sum_j [\sum_{i\in D_j}\eta_i - \sum_{l=0}^{d_j-1}
      \log(\sum_{R_j} e^{\eta_i} - \tfrac{l}{d_j}\sum_{D_j} e^{\eta_i})]`

    (Cox 1972; Breslow 1974; Efron 1977), computed in log space
    (log-sum-exp over reverse-cumulated risk sets), so that large scores do not
    overflow. Censored subjects enter only risk sets.

    Parameters
    ----------
    risk : Tensor, shape (n,) or (n, 1)
        Log relative hazards (higher = higher risk).
    time : Tensor, shape (n,)
        Follow-up times (any unit).
    event : Tensor, shape (n,)
        1 = event, 0 = censored.
    ties : {"efron", "breslow"}
    reduction : {"mean", "sum"}
        ``"mean"`` divides by the number of events.

    Returns
    -------
    Tensor, scalar
        The negative log partial likelihood.

    Raises
    ------
    ValueError
        On mismatched shapes, an unknown ``ties``/``reduction``, non-finite
        inputs, or no events (the partial likelihood is then undefined).
    """
    if ties not in TIES:
        raise ValueError(f"ties: expected one of {TIES}, got {ties!r}")
    if reduction not in ("mean", "sum"):
        raise ValueError(f"reduction: expected 'mean' or 'sum', got {reduction!r}")
    risk = risk.reshape(-1)
    time = time.reshape(-1).to(risk.device)
    event = event.reshape(-1).to(risk.device)
    if not (risk.shape == time.shape == event.shape):
        raise ValueError(f"risk, time, event: lengths differ ({risk.numel()}, {time.numel()}, "
                         f"{event.numel()})")
    if not torch.isfinite(risk).all():
        raise ValueError("risk: contains NaN or infinite scores (diverging model?)")
    if not torch.isfinite(time).all():
        raise ValueError("time: contains NaN or infinite values")
    is_event = event > 0.5
    n_events = int(is_event.sum())
    if n_events == 0:
        raise ValueError("event: no events, the Cox partial likelihood is undefined")

    uniq, inv = torch.unique(time, sorted=True, return_inverse=True)
    m = uniq.numel()
    # log sum_{T_i >= t_u} exp(risk): per-time log-sum-exp, then reverse cumulative
    per_time = _segment_logsumexp(risk, inv, m)
    log_risk_set = torch.logcumsumexp(per_time.flip(0), 0).flip(0)

    ev_risk = risk[is_event]
    ev_time = inv[is_event]
    log_set = log_risk_set[ev_time]
    if ties == "breslow":
        loglik = ev_risk.sum() - log_set.sum()
    else:
        d = torch.zeros(m, dtype=risk.dtype, device=risk.device).index_add(
            0, ev_time, torch.ones_like(ev_risk))
        log_tied = _segment_logsumexp(ev_risk, ev_time, m)[ev_time]
        # rank l of each event within its tie group: 0 .. d_j - 1
        order = torch.argsort(ev_time, stable=True)
        sorted_t = ev_time[order]
        first = torch.searchsorted(sorted_t, sorted_t, right=False)
        rank = torch.empty_like(order)
        rank[order] = torch.arange(order.numel(), device=risk.device) - first
        frac = rank.to(risk.dtype) / d[ev_time]
        # log(A - f B) = log A + log1p(-f exp(log B - log A)), with f B < A always
        log_den = log_set + torch.log1p(-frac * torch.exp(log_tied - log_set))
        loglik = ev_risk.sum() - log_den.sum()
    loss = -loglik
    return loss / n_events if reduction == "mean" else loss


def dice_loss(logits: torch.Tensor, target: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    r"""Soft Dice loss :math:`1 - \frac{2\sum p g + \epsilon}{\sum p + \sum g + \epsilon}`.

    Computed per sample and channel (sigmoid probabilities, binary targets),
    then averaged.

    Parameters
    ----------
    logits : Tensor, shape (B, C, *spatial)
    target : Tensor, same shape, values in {0, 1}
    eps : float
        Smoothing term; an empty prediction of an empty target scores 0.
    """
    if logits.shape != target.shape:
        raise ValueError(f"logits and target: shapes differ ({tuple(logits.shape)} vs "
                         f"{tuple(target.shape)})")
    prob = torch.sigmoid(logits).flatten(2)
    tgt = target.to(prob.dtype).flatten(2)
    inter = (prob * tgt).sum(-1)
    denom = prob.sum(-1) + tgt.sum(-1)
    return (1.0 - (2.0 * inter + eps) / (denom + eps)).mean()


def smoothed_bce(logits: torch.Tensor, target: torch.Tensor, smoothing: float = 0.1,
                 weight: torch.Tensor | None = None) -> torch.Tensor:
    """Binary cross-entropy with label smoothing.

    Targets ``y`` become ``y (1 - s) + s / 2``.

    Parameters
    ----------
    logits, target : Tensor, shape (n,)
    smoothing : float in [0, 1)
    weight : Tensor, shape (n,), optional
        Per-sample weights (0 drops a sample, e.g. censored before the horizon).
    """
    if not 0.0 <= smoothing < 1.0:
        raise ValueError(f"smoothing: must be in [0, 1), got {smoothing}")
    logits = logits.reshape(-1)
    soft = target.reshape(-1).to(logits.dtype) * (1.0 - smoothing) + 0.5 * smoothing
    if weight is None:
        return F.binary_cross_entropy_with_logits(logits, soft)
    weight = weight.reshape(-1).to(logits.dtype)
    if float(weight.sum()) <= 0:
        raise ValueError("weight: all samples have zero weight (every patient censored "
                         "before the horizon?)")
    per = F.binary_cross_entropy_with_logits(logits, soft, reduction="none")
    return (per * weight).sum() / weight.sum()


def kyear_labels(time: torch.Tensor, event: torch.Tensor,
                 horizon: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Binary targets for "event before ``horizon``" and which patients are usable.

    Returns
    -------
    label : Tensor, shape (n,)
        1 if an event occurred at or before ``horizon``, else 0.
    known : Tensor, shape (n,)
        1 where the label is known (event before the horizon or follow-up
        beyond it); 0 for patients censored before the horizon.
    """
    label = ((event > 0.5) & (time <= horizon)).to(torch.float32)
    known = ((label > 0) | (time > horizon)).to(torch.float32)
    return label, known
