"""deepnomo.metrics against survival::concordance reference values and hand counts."""

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from deepnomo.metrics import harrell_c, kaplan_meier, km_at, median_followup

SHARED = os.environ.get("DEEPNOMO_SHARED")
CASES = sorted(Path(SHARED, "reference", "cases", "survcomp_concordance").glob("*.json")) \
    if SHARED else []


@pytest.mark.skipif(not CASES, reason="DEEPNOMO_SHARED reference cases not available")
@pytest.mark.parametrize("case", CASES, ids=lambda p: p.stem)
def test_harrell_c_matches_survival_concordance(case):
    ref = json.loads(case.read_text())
    d = pd.read_csv(case.parent.parent.parent / ref["input_csv"])
    for score, expect in ref["outputs"]["cross_check_survival_concordance"].items():
        got = harrell_c(d[score].to_numpy(), d["time"].to_numpy(), d["event"].to_numpy())
        assert got == pytest.approx(expect["concordance"], abs=1e-12), score


def test_harrell_c_hand_count_with_ties():
    time = np.array([1.0, 2.0, 3.0, 3.0, 5.0])
    event = np.array([1, 1, 1, 0, 0])
    risk = np.array([5.0, 3.0, 3.0, 1.0, 3.0])
    # comparable pairs: (0,1..4) 4, (1,2..4) 3, (2,3) tied time with censored 3, (2,4) -> 9
    # concordant: 0>all 4; 1 vs 2 tie .5, 1>3, 1 vs 4 tie .5; 2>3, 2 vs 4 tie .5 -> 7.5
    assert harrell_c(risk, time, event) == pytest.approx(7.5 / 9)
    assert harrell_c(-risk, time, event) == pytest.approx(1.5 / 9)


def test_harrell_c_refuses_bad_input():
    with pytest.raises(ValueError, match="event"):
        harrell_c([1, 2], [1.0, 2.0], [1, 2])
    with pytest.raises(ValueError, match="risk"):
        harrell_c([1.0, np.nan], [1.0, 2.0], [1, 0])
    with pytest.raises(ValueError, match="time"):
        harrell_c([1.0, 2.0], [-1.0, 2.0], [1, 0])


def test_kaplan_meier_hand_computed():
    time = np.array([1, 2, 2, 3, 4, 5], dtype=float)
    event = np.array([1, 1, 0, 1, 0, 1])
    times, surv, se = kaplan_meier(time, event)
    np.testing.assert_allclose(times, [1, 2, 3, 5])
    expect = np.cumprod([5 / 6, 4 / 5, 2 / 3, 0.0])
    np.testing.assert_allclose(surv, expect)
    greenwood = expect[1] * np.sqrt(1 / (6 * 5) + 1 / (5 * 4))
    assert se[1] == pytest.approx(greenwood)
    assert km_at(time, event, 2.5) == (pytest.approx(expect[1]), pytest.approx(greenwood))
    assert km_at(time, event, 0.5) == (1.0, 0.0)


def test_median_followup_reverse_km():
    # censoring is the "event": censored at 2 (n at risk 5), 4 (n at risk 2)
    time = np.array([1, 2, 2, 3, 4, 5], dtype=float)
    event = np.array([1, 1, 0, 1, 0, 1])
    # reverse KM: 1 - 1/5 = .8 at t=2, .8 * (1 - 1/2) = .4 at t=4 -> median 4
    assert median_followup(time, event) == 4.0
