"""Multi-task Cox network: with linear heads it is the Cox model with interactions."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from deepnomo.losses import cox_ph_loss
from deepnomo.metrics import harrell_c
from deepnomo.nn.multitask import MultiTaskCox, treatment_interaction


def _simulate(n=400, seed=7):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3))
    treated = rng.integers(0, 2, n)
    t_code = treated - 0.5
    # prognostic 0.8 x1 - 0.5 x2; treatment helps when x3 > 0 (log HR -1.2 x3 - 0.3)
    lp = 0.8 * x[:, 0] - 0.5 * x[:, 1] + t_code * (-1.2 * x[:, 2] - 0.3)
    time = rng.exponential(1.0 / np.exp(lp)) * 12
    cens = rng.uniform(0, 30, n)
    return x, treated, np.minimum(time, cens).round(1), (time <= cens).astype(float)


def test_linear_heads_reproduce_r_coxph_with_interaction():
    from deepnomo.bridge.rconvert import r_session, to_r

    x, treated, time, event = _simulate()
    torch.manual_seed(0)
    model = MultiTaskCox([2, 1], hidden=()).double()  # two "sequences": 2 + 1 features
    feats = [torch.tensor(x[:, :2]), torch.tensor(x[:, 2:])]
    tr, t, e = torch.tensor(treated), torch.tensor(time), torch.tensor(event)
    opt = torch.optim.LBFGS(model.parameters(), lr=1, max_iter=300, tolerance_grad=1e-12,
                            tolerance_change=1e-14, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = cox_ph_loss(model.log_hazard(feats, tr), t, e, ties="efron", reduction="sum")
        loss.backward()
        return loss

    for _ in range(3):
        opt.step(closure)
    d = pd.DataFrame({"time": time, "event": event, "x1": x[:, 0], "x2": x[:, 1],
                      "x3": x[:, 2], "tr": treated - 0.5})
    ro = r_session()
    coef = np.array(ro.r("""function(d) coef(survival::coxph(survival::Surv(time, event) ~
        x1 + x2 + x3 + tr + tr:x1 + tr:x2 + tr:x3, data = d, ties = "efron"))""")(to_r(d)))
    prog = model.prognostic.weight.detach().numpy().ravel()
    pred = model.predictive.weight.detach().numpy().ravel()
    np.testing.assert_allclose(prog, coef[:3], atol=1e-3)
    np.testing.assert_allclose(float(model.predictive.bias.detach()), coef[3], atol=1e-3)
    np.testing.assert_allclose(pred, coef[4:], atol=1e-3)
    assert pred[2] < -0.8  # the simulated treatment interaction is recovered


def test_trunk_shapes_and_bad_input():
    model = MultiTaskCox(6, hidden=(8, 4), dropout=0.1)
    g, f = model(torch.randn(5, 6))
    assert g.shape == f.shape == (5,)
    risk = treatment_interaction(torch.zeros(2), torch.tensor([2.0, 2.0]), torch.tensor([1, 0]))
    assert risk.tolist() == [1.0, -1.0]
    with pytest.raises(ValueError, match="treated"):
        treatment_interaction(torch.zeros(2), torch.zeros(2), torch.tensor([1, 2]))
    with pytest.raises(ValueError, match=r"features: expected \(n, 6\)"):
        model(torch.randn(5, 5))


def test_fit_multitask_recovers_prognostic_and_predictive_scores():
    from deepnomo.train import fit_multitask

    def simulate(n, seed):
        rng = np.random.default_rng(seed)
        x = rng.normal(size=(n, 5)) * np.array([1.0, 1.0, 1.0, 5.0, 0.1])  # scales differ
        treated = rng.integers(0, 2, n)
        g = 0.9 * x[:, 0] + 0.5 * np.tanh(2 * x[:, 1])
        f = -1.0 * x[:, 2] - 0.4
        lp = g + (treated - 0.5) * f
        t = rng.exponential(1.0 / np.exp(lp)) * 20
        cens = rng.uniform(5, 60, n)
        return x, treated, np.minimum(t, cens), (t <= cens).astype(float), g, f

    x, tr, t, e, _, _ = simulate(1200, 1)
    model, info = fit_multitask(x, t, e, tr, hidden=(16,), seed=0)
    assert info["val_c_index"] > 0.6
    xt, trt, tt, et, g, f = simulate(600, 2)
    with torch.no_grad():
        prog, pred = (v.numpy() for v in model(torch.as_tensor(xt)))
    assert np.corrcoef(pred, f)[0, 1] > 0.8  # the treatment effect per patient
    assert np.corrcoef(prog, g)[0, 1] > 0.8
    oracle = harrell_c(g + (trt - 0.5) * f, tt, et)
    assert harrell_c(prog + (trt - 0.5) * pred, tt, et) > 0.9 * oracle
    with pytest.raises(ValueError, match="both arms"):
        fit_multitask(x, t, e, np.ones(len(t)))


def test_fit_multitask_ensemble_averages_fold_members():
    from deepnomo.nn.multitask import MultiTaskEnsemble
    from deepnomo.train import BagData, TrainConfig, fit_multitask, split_train_validation

    x, tr, t, e = _simulate(n=600, seed=3)
    model, info = fit_multitask(x, t, e, tr, hidden=(8,), seed=4, ensemble=4)
    assert isinstance(model, MultiTaskEnsemble) and len(model.members) == 4
    assert len(info["best_epoch"]) == 4 and len(info["history"]) == 4
    # members differ (other folds, other seeds); the ensemble is their plain mean
    xt, trt, tt, et = _simulate(n=400, seed=5)
    with torch.no_grad():
        g, f = model(torch.as_tensor(xt))
        parts = [m(torch.as_tensor(xt)) for m in model.members]
        hazard = model.log_hazard(torch.as_tensor(xt), torch.as_tensor(trt))
    assert not torch.allclose(parts[0][0], parts[1][0])
    torch.testing.assert_close(g, torch.stack([p[0] for p in parts]).mean(0))
    torch.testing.assert_close(f, torch.stack([p[1] for p in parts]).mean(0))
    torch.testing.assert_close(hazard, g + (torch.as_tensor(trt) - 0.5) * f)
    # the predictive score is the simulated log HR of treatment, -1.2 x3 - 0.3
    assert np.corrcoef(f.numpy(), xt[:, 2])[0, 1] < -0.9
    truth = 0.8 * xt[:, 0] - 0.5 * xt[:, 1] + (trt - 0.5) * (-1.2 * xt[:, 2] - 0.3)
    assert harrell_c(hazard.numpy(), tt, et) > 0.95 * harrell_c(truth, tt, et)
    # out-of-fold C: every training patient scored once, by the member that held it out
    dummy = BagData([str(i) for i in range(len(t))], [np.zeros((1, 1, 1), np.float32)] * len(t),
                    t, e)
    oof = np.full(len(t), np.nan)
    for k, member in enumerate(model.members):
        _, val = split_train_validation(dummy, TrainConfig(seed=4, ensemble=4), k)
        with torch.no_grad():
            oof[val] = member.log_hazard(torch.as_tensor(x[val]), torch.as_tensor(tr[val])).numpy()
    assert not np.isnan(oof).any()
    assert info["val_c_index"] == pytest.approx(harrell_c(oof, t, e), abs=1e-12)
    with pytest.raises(ValueError, match="ensemble"):
        fit_multitask(x, t, e, tr, ensemble=0)
    with pytest.raises(ValueError, match="input widths differ"):
        MultiTaskEnsemble([MultiTaskCox(3), MultiTaskCox(4)])
