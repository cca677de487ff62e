"""Ridge-penalized Cox regression against R survival::coxph with a ridge() term."""

from __future__ import annotations

import numpy as np
import pytest

from deepnomo.ridge_cox import fit_ridge_cox

COLS = "karno", "age", "diagtime", "prior", "trt"


def _veteran_scaled():
    """Standardized veteran covariates (R scale()), time and status, from R."""
    from deepnomo.bridge.rconvert import r_session

    ro = r_session()
    ro.r(f"""X <- scale(as.matrix(survival::veteran[, c({', '.join(repr(c) for c in COLS)})]))
             tt <- survival::veteran$time; st <- survival::veteran$status""")
    return ro, np.array(ro.r("X")), np.array(ro.r("tt"), float), np.array(ro.r("st"), float)


@pytest.mark.parametrize("ties", ["efron", "breslow"])
@pytest.mark.parametrize("penalty", [0.01, 0.1])
def test_ridge_cox_matches_r_coxph_ridge(ties, penalty):
    ro, x, time, status = _veteran_scaled()
    # coxph's ridge term adds theta / 2 * sum(beta^2) to minus the log partial likelihood
    theta = float(2 * status.sum() * penalty)
    r_coef = np.array(ro.r(f"""coef(survival::coxph(survival::Surv(tt, st) ~
        survival::ridge(X, theta = {theta!r}, scale = FALSE), ties = "{ties}"))"""))
    ours = fit_ridge_cox(x, time, status, penalty, ties=ties)
    np.testing.assert_allclose(ours, r_coef, atol=1e-4, rtol=0)
    unpenalized = fit_ridge_cox(x, time, status, 0.0, ties=ties)
    assert np.linalg.norm(ours) < np.linalg.norm(unpenalized) - 0.01  # the penalty shrinks


def test_ridge_cox_refuses_bad_input():
    x = np.random.default_rng(0).normal(size=(20, 2))
    t, e = np.arange(1.0, 21.0), np.tile([0.0, 1.0], 10)
    with pytest.raises(ValueError, match="x: contains NaN"):
        fit_ridge_cox(np.where(x == x.max(), np.nan, x), t, e, 0.1)
    with pytest.raises(ValueError, match="penalty: must be >= 0"):
        fit_ridge_cox(x, t, e, -1.0)
    with pytest.raises(ValueError, match="event: no events"):
        fit_ridge_cox(x, t, np.zeros(20), 0.1)
    with pytest.raises(ValueError, match=r"x: expected shape \(n, p\)"):
        fit_ridge_cox(x[:5], t, e, 0.1)
