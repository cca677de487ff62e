"""Synthetic cohort tables: design shapes, truth columns, calibration of the signal."""

import numpy as np
import pytest

from deepnomo.bridge.schema import validate_cohort
from deepnomo.synth import DESIGNS, SynthError, get_design, harrell_c, km_at, simulate

# The papers' cohort sizes and primary-event rates (STUDIES.md).
PAPER = {
    "multiscale": ({"train": 132, "internal_test": 44, "external_test": 44}, 0.25, 37),
    "t3n1": ({"train": 447, "test": 191}, 0.18, 65.5),
    "stage2": ({"train": 575, "external_test": 497}, 0.07, 80),
    "recurrent": ({"train": 269, "test": 151}, 0.42, 36),
    "cptdn": ({"train": 684, "internal_test": 324, "external_test": 198}, 0.16, 64),
}
STUDIES = sorted(DESIGNS)


def cox_fit(x, time, event, iters=50):
    """Breslow partial-likelihood Newton-Raphson; x (n, p) -> beta (p,)."""
    x = np.asarray(x, dtype=float).reshape(len(time), -1)
    order = np.argsort(-np.asarray(time), kind="stable")
    x, event = x[order], np.asarray(event)[order].astype(bool)
    beta = np.zeros(x.shape[1])
    for _ in range(iters):
        w = np.exp(x @ beta - (x @ beta).max())
        s0 = np.cumsum(w)
        s1 = np.cumsum(w[:, None] * x, axis=0)
        s2 = np.cumsum(w[:, None, None] * x[:, :, None] * x[:, None, :], axis=0)
        xbar = s1[event] / s0[event, None]
        grad = (x[event] - xbar).sum(axis=0)
        info = (s2[event] / s0[event, None, None] - xbar[:, :, None] * xbar[:, None, :]).sum(0)
        step = np.linalg.solve(info, grad)
        beta += step
        if np.abs(step).max() < 1e-10:
            break
    return beta


@pytest.fixture(scope="module", params=STUDIES)
def quick(request):
    return simulate(request.param, "quick", seed=11)


@pytest.mark.parametrize("study", STUDIES)
def test_paper_preset_has_paper_shape(study):
    sc = simulate(study, "paper", seed=3)
    sizes, rate, followup = PAPER[study]
    counts = sc.table["cohort"].value_counts().to_dict()
    assert counts == sizes
    assert sc.manifest["cohorts"] == list(sizes)
    ep = sc.design.primary
    observed = sc.table[f"{ep}_event"].mean()
    n = len(sc.table)
    assert abs(observed - rate) < 3 * np.sqrt(rate * (1 - rate) / n) + 0.01
    from deepnomo.metrics import median_followup
    fu = median_followup(sc.table[f"{ep}_time"].to_numpy(), sc.table[f"{ep}_event"].to_numpy())
    assert abs(fu - followup) / followup < 0.12


def test_quick_shapes_and_events(quick):
    sc, t = quick, quick.table
    ep = sc.design.primary
    train = t[t["cohort"] == "train"]
    assert train[f"{ep}_event"].sum() >= 55
    for cohort in sc.preset.cohorts:
        d = t[t["cohort"] == cohort.label]
        assert d["center"].value_counts().to_dict() == dict(cohort.centers)
    roles = validate_cohort(t, sc.manifest)
    assert set(roles["endpoints"]) == set(sc.design.endpoints)
    assert not [c for c in t.columns if c.startswith("sig_")]
    for name in sc.design.endpoints:  # secondary endpoints never precede censoring end
        assert (t[f"{name}_time"] <= t[f"{ep}_time"].max() + 1e-9).all()
    if sc.design.name in ("cptdn", "stage2", "recurrent"):
        assert set(t["treatment"]) <= set(sc.manifest["covariates"]["treatment"]["levels"])


def test_no_time_is_shorter_than_the_recording_unit():
    from deepnomo.synth.survival import TIME_RESOLUTION, simulate_endpoints

    design = get_design("multiscale")[0]
    n = 2000
    lp = np.full(n, 6.0)  # median failure time about 0.002 months: most round to 0.00
    out = simulate_endpoints(np.random.default_rng(0), design, lp, np.full(n, 60.0), 1.0)
    for name in design.endpoints:
        times = out[f"{name}_time"].to_numpy()
        assert times.min() == TIME_RESOLUTION
    primary = out[f"{design.primary}_time"].to_numpy()
    assert (primary == TIME_RESOLUTION).sum() > n / 4  # floored, not dropped
    assert out[f"{design.primary}_event"].all()
    # the quick multiscale cohort of seed 4 had a failure time that rounded to 0.00
    table = simulate("multiscale", "quick", seed=4).table
    assert (table[[f"{e}_time" for e in design.endpoints]] >= TIME_RESOLUTION).all().all()


def test_same_seed_same_table_other_seed_differs():
    a = simulate("cptdn", "quick", seed=5).table
    b = simulate("cptdn", "quick", seed=5).table
    c = simulate("cptdn", "quick", seed=6).table
    assert a.to_csv(index=False) == b.to_csv(index=False)
    assert a.to_csv(index=False) != c.to_csv(index=False)


def test_truth_survival_agrees_with_kaplan_meier(quick):
    t = quick.table
    train = t[t["cohort"] == "train"]
    ep = quick.design.primary
    horizons = (36,) if quick.design.name == "recurrent" else (36, 60)
    for h in horizons:
        km, se = km_at(train[f"{ep}_time"].to_numpy(), train[f"{ep}_event"].to_numpy(), h)
        truth = train[f"truth_surv_{h}"].mean()
        assert abs(km - truth) < 3 * se + 0.01, (h, km, truth, se)


def test_cox_on_true_phenotype_reaches_oracle_and_clinical_is_below(quick):
    t = quick.table
    ep = quick.design.primary
    z_cols = [c for c in t.columns if c.startswith("truth_z_")]
    tr = t[t["cohort"] == "train"]
    beta = cox_fit(tr[z_cols], tr[f"{ep}_time"], tr[f"{ep}_event"])
    time, event = t[f"{ep}_time"].to_numpy(), t[f"{ep}_event"].to_numpy()
    oracle = harrell_c(t["truth_lp_imaging"].to_numpy(), time, event)
    fitted = harrell_c(t[z_cols].to_numpy() @ beta, time, event)
    clinical = harrell_c(t["truth_lp_clinical"].to_numpy(), time, event)
    assert fitted > oracle - 0.01
    assert 0.72 < oracle < 0.86
    assert clinical < oracle - 0.06


@pytest.mark.parametrize("study", ["cptdn", "stage2"])
def test_treatment_benefit_depends_on_predictive_phenotype(study):
    sc = simulate(study, "paper", seed=2, event_rate=0.25)
    t = sc.table
    arms = sc.design.arms
    key = {"CCRT": "ccrt", "ICT+CCRT": "ict_ccrt", "none": "none", "DDP/NDP": "ddp_ndp"}
    gain = t[f"truth_surv_60_{key[arms[1]]}"] - t[f"truth_surv_60_{key[arms[0]]}"]
    assert 0.3 < (gain > 0).mean() < 0.95  # some benefit, some do not
    z = t["truth_z_enhancement"]
    assert np.corrcoef(gain, z)[0, 1] > 0.5
    # in the data: the added treatment's log-HR is lower where the predictive trait is high
    ep = sc.design.primary
    keep = t["treatment"].isin(arms[:2]).to_numpy()
    hr = []
    for part in (z > 0, z <= 0):
        d = t[keep & part.to_numpy()]
        x = (d["treatment"] == arms[1]).to_numpy(float)
        hr.append(cox_fit(x[:, None], d[f"{ep}_time"], d[f"{ep}_event"])[0])
    assert hr[0] < hr[1] - 0.3
    # the actual arm's truth column is the matching counterfactual one
    for arm in arms:
        rows = (t["treatment"] == arm).to_numpy()
        if arm in key and study == "cptdn":
            np.testing.assert_allclose(t.loc[rows, "truth_surv_60"],
                                       t.loc[rows, f"truth_surv_60_{key[arm]}"])


def test_covariate_distributions_follow_table_1():
    t = simulate("t3n1", "paper", seed=1).table
    assert abs((t["sex"] == "male").mean() - 0.69) < 0.05
    assert abs(t["age"].median() - 41) <= 2
    assert abs(t["ebv_dna_4000"].mean() - 0.47) < 0.06
    assert abs(t["ldh"].median() - 176) < 10
    s = simulate("stage2", "paper", seed=1).table
    ext = s[s["cohort"] == "external_test"]
    assert 0.08 < ext["ebv_dna_detectable"].isna().mean() < 0.18  # "Unknown" 13.1%
    assert s.loc[s["cohort"] == "train", "ldh_abnormal"].isna().sum() == 0
    m = simulate("multiscale", "paper", seed=1).table
    anemia = m.groupby("cohort")["anemia"].mean()  # worse anemia in the external cohort
    assert anemia["external_test"] > 0.45 and anemia["train"] < 0.32
    assert 0.4 < m["ebv_dna"].isna().mean() < 0.6  # EBV DNA measured in about half
    r = simulate("recurrent", "paper", seed=1).table
    assert abs((r["rt_stage"] == "T3").mean() - 0.43) < 0.06
    assert (r.loc[r["n_stage"] == "N0", "node_suv_max"].dropna() == 0).all()


@pytest.mark.parametrize("kwargs, match", [
    ({"study": "lung"}, "unknown design 'lung'"),
    ({"study": "t3n1", "preset": "huge"}, "unknown preset 'huge'"),
    ({"study": "t3n1", "sizes": {"train": {"center1": -5}}}, "positive integer"),
    ({"study": "t3n1", "sizes": {"validation": {"center1": 5}}}, "unknown cohort"),
    ({"study": "t3n1", "event_rate": 1.2}, r"event_rate must be in \(0, 1\)"),
    ({"study": "t3n1", "event_rate": 0.0}, r"event_rate must be in \(0, 1\)"),
    ({"study": "t3n1", "seed": -1}, "seed"),
])
def test_bad_requests_are_refused(kwargs, match):
    with pytest.raises(SynthError, match=match):
        simulate(**kwargs)


def test_get_design_overrides_sizes():
    _, preset = get_design("stage2", "quick", sizes={"external_test": {"center2": 4, "center3": 3}})
    assert [c.n for c in preset.cohorts] == [360, 7]
