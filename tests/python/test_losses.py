"""Cox partial likelihood, Dice and smoothed BCE against independent references."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from deepnomo.losses import cox_ph_loss, dice_loss, kyear_labels, smoothed_bce
from deepnomo.ridge_cox import fit_ridge_cox


def naive_neg_loglik(risk, time, event, ties):
    """Direct O(n^2) evaluation of the partial likelihood, loop over distinct event times."""
    total = 0.0
    for t in sorted({float(x) for x, e in zip(time, event, strict=True) if e == 1}):
        dead = [i for i in range(len(time)) if time[i] == t and event[i] == 1]
        at_risk = [i for i in range(len(time)) if time[i] >= t]
        a = sum(math.exp(risk[i]) for i in at_risk)
        b = sum(math.exp(risk[i]) for i in dead)
        total += sum(risk[i] for i in dead)
        d = len(dead)
        for l in range(d):
            total -= math.log(a - (l / d) * b) if ties == "efron" else math.log(a)
    return -total


@pytest.mark.parametrize("ties", ["breslow", "efron"])
def test_loss_matches_direct_formula_with_ties(ties):
    rng = np.random.default_rng(3)
    time = np.array([1, 2, 2, 2, 3, 3, 4, 5, 5, 6, 7, 7], dtype=float)
    event = np.array([1, 1, 1, 0, 1, 1, 0, 1, 1, 0, 1, 0])
    risk = rng.normal(size=time.size)
    perm = rng.permutation(time.size)  # order of rows must not matter
    got = cox_ph_loss(torch.tensor(risk[perm]), torch.tensor(time[perm]),
                      torch.tensor(event[perm]), ties=ties, reduction="sum")
    assert float(got) == pytest.approx(naive_neg_loglik(risk, time, event, ties), abs=1e-12)
    mean = cox_ph_loss(torch.tensor(risk), torch.tensor(time), torch.tensor(event), ties=ties)
    assert float(mean) == pytest.approx(float(got) / event.sum(), rel=1e-12)


def test_breslow_and_efron_agree_without_ties():
    rng = np.random.default_rng(0)
    t = torch.tensor(rng.permutation(20).astype(float) + 1)
    e = torch.tensor(rng.integers(0, 2, 20))
    e[0] = 1
    r = torch.tensor(rng.normal(size=20))
    assert float(cox_ph_loss(r, t, e, "breslow")) == pytest.approx(
        float(cox_ph_loss(r, t, e, "efron")), abs=1e-12)


def test_loss_is_stable_for_huge_scores():
    time = torch.tensor([1.0, 2.0, 2.0, 3.0])
    event = torch.tensor([1, 1, 1, 0])
    risk = torch.tensor([800.0, 790.0, 805.0, 780.0], dtype=torch.float64, requires_grad=True)
    for ties in ("breslow", "efron"):
        loss = cox_ph_loss(risk, time, event, ties, reduction="sum")
        shifted = cox_ph_loss(risk.detach() - 800.0, time, event, ties, reduction="sum")
        assert torch.isfinite(loss)
        assert float(loss.detach()) == pytest.approx(float(shifted), rel=1e-12)  # shift invariance
        loss.backward()
        assert torch.isfinite(risk.grad).all()
        assert float(risk.grad.sum()) == pytest.approx(0.0, abs=1e-9)
        risk.grad = None


def test_loss_rejects_bad_input():
    t = torch.tensor([1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="no events"):
        cox_ph_loss(torch.zeros(3), t, torch.zeros(3))
    with pytest.raises(ValueError, match="NaN"):
        cox_ph_loss(torch.tensor([0.0, float("nan"), 1.0]), t, torch.ones(3))
    with pytest.raises(ValueError, match="lengths differ"):
        cox_ph_loss(torch.zeros(2), t, torch.ones(3))
    with pytest.raises(ValueError, match="ties"):
        cox_ph_loss(torch.zeros(3), t, torch.ones(3), ties="exact")


def _veteran():
    from deepnomo.bridge.rconvert import from_r, r_session

    ro = r_session()
    d = from_r(ro.r("survival::veteran"))
    cols = ["karno", "age", "diagtime", "prior", "trt"]
    return ro, d, cols


def _fit_linear_cox(x, time, event, ties):
    """Linear model exp(x b) fitted with the loss (standardized x; no penalty)."""
    mu, sd = x.mean(0), x.std(0)
    return fit_ridge_cox((x - mu) / sd, time, event, 0.0, ties=ties) / sd


@pytest.mark.parametrize("ties", ["breslow", "efron"])
def test_linear_cox_reproduces_r_coxph(ties):
    ro, d, cols = _veteran()
    r_coef = np.array(ro.r(f"""coef(survival::coxph(survival::Surv(time, status) ~
        karno + age + diagtime + prior + trt, data = survival::veteran, ties = "{ties}"))"""))
    x = d[cols].to_numpy(float)
    time = d["time"].to_numpy(float)
    assert len(np.unique(time)) < len(time)  # the data set has tied times
    ours = _fit_linear_cox(x, time, d["status"].to_numpy(float), ties)
    np.testing.assert_allclose(ours, r_coef, atol=1e-3, rtol=0)
    # both tie methods differ on this data, so the comparison is not vacuous
    other = "efron" if ties == "breslow" else "breslow"
    r_other = np.array(ro.r(f"""coef(survival::coxph(survival::Surv(time, status) ~
        karno + age + diagtime + prior + trt, data = survival::veteran, ties = "{other}"))"""))
    assert np.max(np.abs(r_other - r_coef)) > 1e-3


def test_dice_loss_values():
    target = torch.zeros(1, 1, 4, 4)
    target[..., :2, :] = 1
    perfect = torch.where(target > 0, 50.0, -50.0)
    assert float(dice_loss(perfect, target)) == pytest.approx(0.0, abs=1e-6)
    half = torch.zeros(1, 1, 4, 4)  # p = 0.5 everywhere: Dice = 2*4 / (8 + 8)
    assert float(dice_loss(half, target, eps=0.0)) == pytest.approx(0.5, abs=1e-6)
    with pytest.raises(ValueError, match="shapes differ"):
        dice_loss(torch.zeros(1, 1, 4), target)


def test_smoothed_bce_and_kyear_labels():
    logits = torch.tensor([0.3, -1.2, 2.0])
    y = torch.tensor([1.0, 0.0, 1.0])
    s = 0.2
    soft = y * (1 - s) + s / 2
    p = torch.sigmoid(logits)
    direct = -(soft * torch.log(p) + (1 - soft) * torch.log(1 - p)).mean()
    assert float(smoothed_bce(logits, y, s)) == pytest.approx(float(direct), rel=1e-6)
    label, known = kyear_labels(torch.tensor([10.0, 40.0, 20.0, 50.0]),
                                torch.tensor([1, 1, 0, 0]), 36.0)
    assert label.tolist() == [1, 0, 0, 0]
    assert known.tolist() == [1, 1, 0, 1]
    with pytest.raises(ValueError, match="zero weight"):
        smoothed_bce(logits, y, 0.1, weight=torch.zeros(3))
