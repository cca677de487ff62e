"""Clinical covariates of each design, with the papers' distributions and coding.

Each sampler returns a :class:`Clinical`: the covariate columns (with missing
values where the paper reports "Unknown"), their manifest declarations, the
clinical part of the true log-hazard (computed from the complete values,
so missingness is completely at random), and the treatment actually received
(``None`` for single-treatment designs). Stage correlates with tumor volume,
as it does in patients.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.special import ndtri


@dataclass
class Clinical:
    table: pd.DataFrame
    covariates: dict[str, dict]
    lp: np.ndarray
    treatment: np.ndarray | None = None
    dose: np.ndarray | None = None


def _normal(rng, n, mean, sd, lo, hi) -> np.ndarray:
    return np.round(np.clip(rng.normal(mean, sd, n), lo, hi))


def _lognormal(rng, n, median, sigma, lo, hi, digits=1) -> np.ndarray:
    return np.round(np.clip(median * np.exp(sigma * rng.standard_normal(n)), lo, hi), digits)


def _binary(rng, n, p) -> np.ndarray:
    return (rng.random(n) < p).astype(float)


def _categorical(rng, n, levels, probs) -> np.ndarray:
    probs = np.asarray(probs, dtype=float)
    return np.asarray(levels, dtype=object)[rng.choice(len(levels), n, p=probs / probs.sum())]


def _ordinal(rng, latent_driver, levels, probs, weight=0.6) -> np.ndarray:
    """Ordered levels with the given marginal probabilities, correlated with a driver."""
    n = latent_driver.size
    latent = weight * latent_driver + np.sqrt(1 - weight**2) * rng.standard_normal(n)
    cuts = ndtri(np.cumsum(probs)[:-1] / np.sum(probs))
    return np.asarray(levels, dtype=object)[np.searchsorted(cuts, latent)]


def _code(values: np.ndarray, levels) -> np.ndarray:
    return np.array([list(levels).index(v) for v in values], dtype=float)


def _with_missing(rng, values: np.ndarray, rate: np.ndarray | float) -> np.ndarray:
    out = values.astype(object if values.dtype == object else float).copy()
    gone = rng.random(values.size) < rate
    out[gone] = None if values.dtype == object else np.nan
    return out


def _ebv_copies(rng, n, p_zero, median, sigma) -> np.ndarray:
    copies = np.round(median * np.exp(sigma * rng.standard_normal(n)), -1)
    copies[rng.random(n) < p_zero] = 0.0
    return np.clip(copies, 0, 1e7)


def _num(unit, description):
    return {"type": "numeric", "unit": unit, "description": description}


def _bin(description):
    return {"type": "binary", "description": description}


def _fac(levels, description, ordered=False):
    return {"type": "ordered" if ordered else "factor", "levels": list(levels),
            "description": description}


def multiscale(rng, center, cohort, traits) -> Clinical:
    n = center.size
    ext = center != "center1"
    age = _normal(rng, n, 46, 10, 18, 75)
    sex = _categorical(rng, n, ["male", "female"], [0.72, 0.28])
    t = _ordinal(rng, traits["z_volume"].to_numpy(), ["T1", "T2", "T3", "T4"], [.1, .2, .4, .3])
    nst = _categorical(rng, n, ["N0", "N1", "N2", "N3"], [.15, .45, .28, .12])
    til = _categorical(rng, n, ["low", "high"], [0.5, 0.5])
    anemia = (rng.random(n) < np.where(ext, 0.61, 0.22)).astype(float)
    ebv = _ebv_copies(rng, n, 0.2, 3000, 2.0)
    who = _categorical(rng, n, ["I-II", "III"], [0.05, 0.95])
    lp = (0.015 * (age - 46) - 0.5 * (sex == "female") + 0.2 * _code(t, ["T1", "T2", "T3", "T4"])
          + 0.35 * _code(nst, ["N0", "N1", "N2", "N3"]) - 0.5 * (til == "high")
          + 0.2 * anemia + 0.25 * (ebv >= 4000))
    table = pd.DataFrame({"age": age, "sex": sex, "t_stage": t, "n_stage": nst, "til_grade": til,
                          "anemia": anemia, "ebv_dna": _with_missing(rng, ebv, 0.5),
                          "who_type": who})
    cov = {"age": _num("years", "age at diagnosis"), "sex": _fac(["male", "female"], "sex"),
           "t_stage": _fac(["T1", "T2", "T3", "T4"], "T stage (AJCC 8th)", True),
           "n_stage": _fac(["N0", "N1", "N2", "N3"], "N stage (AJCC 8th)", True),
           "til_grade": _fac(["low", "high"], "tumor-infiltrating lymphocytes grade", True),
           "anemia": _bin("hemoglobin below the sex-specific normal range"),
           "ebv_dna": _num("copies/mL", "pretreatment plasma EBV DNA (measured in half)"),
           "who_type": _fac(["I-II", "III"], "WHO pathology type")}
    return Clinical(table, cov, lp)


def _t3n1_labs(rng, n, sex):
    female = sex == "female"
    hgb = np.where(female, _normal(rng, n, 128, 11, 67, 179), _normal(rng, n, 147, 12, 67, 179))
    hgb_abn = np.where(female, hgb < 115, hgb < 130).astype(float)
    alb = np.round(np.clip(rng.normal(44.5, 3.0, n), 30, 56), 1)
    crp = _lognormal(rng, n, 1.76, 1.3, 0.03, 250, 2)
    ldh = _lognormal(rng, n, 176, 0.25, 75, 760)
    ebv = _ebv_copies(rng, n, 0.15, 5000, 2.2)
    return hgb, hgb_abn, alb, crp, ldh, ebv


_FLAG_COV = {
    "hgb_abnormal": _bin("HGB abnormal (< 130 g/L male, < 115 g/L female)"),
    "family_history": _bin("family history of cancer"),
    "smoking": _bin("smoking"), "drinking": _bin("drinking"),
    "who_type": _fac(["I-II", "III"], "WHO pathology type"),
    "alb_abnormal": _bin("albumin < 40 g/L"), "crp_abnormal": _bin("CRP > 3 mg/L"),
    "ldh_abnormal": _bin("LDH > 250 U/L"), "ebv_dna_4000": _bin("pre-EBV DNA >= 4000 copies/mL"),
}


def t3n1(rng, center, cohort, traits) -> Clinical:
    n = center.size
    age = _normal(rng, n, 41.6, 10.2, 10, 69)
    sex = _categorical(rng, n, ["male", "female"], [0.69, 0.31])
    hgb, hgb_abn, alb, crp, ldh, ebv = _t3n1_labs(rng, n, sex)
    table = pd.DataFrame({
        "age": age, "sex": sex, "hgb": hgb, "hgb_abnormal": hgb_abn,
        "family_history": _binary(rng, n, 0.29), "smoking": _binary(rng, n, 0.29),
        "drinking": _binary(rng, n, 0.09),
        "who_type": _categorical(rng, n, ["I-II", "III"], [0.02, 0.98]),
        "alb": alb, "alb_abnormal": (alb < 40).astype(float), "crp": crp,
        "crp_abnormal": (crp > 3).astype(float), "ldh": ldh, "ldh_abnormal": (ldh > 250) * 1.0,
        "ebv_dna": ebv, "ebv_dna_4000": (ebv >= 4000).astype(float)})
    lp = (0.03 * (age - 41) - 0.3 * (sex == "female") + 0.25 * table["crp_abnormal"]
          + 0.5 * table["ldh_abnormal"] + 0.7 * table["ebv_dna_4000"] + 0.1 * table["smoking"])
    cov = {"age": _num("years", "age at diagnosis"), "sex": _fac(["male", "female"], "sex"),
           "hgb": _num("g/L", "hemoglobin"),
           **{k: _FLAG_COV[k] for k in ("hgb_abnormal", "family_history", "smoking", "drinking",
                                         "who_type")},
           "alb": _num("g/L", "albumin"), "alb_abnormal": _FLAG_COV["alb_abnormal"],
           "crp": _num("mg/L", "C-reactive protein"), "crp_abnormal": _FLAG_COV["crp_abnormal"],
           "ldh": _num("U/L", "lactate dehydrogenase"), "ldh_abnormal": _FLAG_COV["ldh_abnormal"],
           "ebv_dna": _num("copies/mL", "pretreatment plasma EBV DNA"),
           "ebv_dna_4000": _FLAG_COV["ebv_dna_4000"]}
    return Clinical(table, cov, lp.to_numpy())


def cptdn(rng, center, cohort, traits) -> Clinical:
    n = center.size
    ext = (center != "center1").astype(float)
    age = _normal(rng, n, 42, 10, 13, 72)
    sex = _categorical(rng, n, ["male", "female"], [0.68, 0.32])
    vol_true = 24.0 * np.exp(0.55 * traits["z_volume"].to_numpy())
    flags = {
        "hgb_abnormal": _binary(rng, n, 0.125), "family_history": _binary(rng, n, 0.27),
        "smoking": _binary(rng, n, 0.31), "drinking": _binary(rng, n, 0.11),
        "who_type": _categorical(rng, n, ["I-II", "III"], [0.01, 0.99]),
        "alb_abnormal": _binary(rng, n, 0.075), "crp_abnormal": _binary(rng, n, 0.265),
        "ldh_abnormal": _binary(rng, n, 0.07),
        "ebv_dna_4000": (rng.random(n) < 0.376 + 0.1 * ext).astype(float)}
    treatment = _categorical(rng, n, ["CCRT", "ICT+CCRT"], [0.5, 0.5])
    lp = (0.02 * (age - 42) + 0.6 * flags["ebv_dna_4000"] + 0.15 * flags["hgb_abnormal"]
          + 0.3 * flags["ldh_abnormal"] - 0.15 * (sex == "female"))
    unknown = {"hgb_abnormal": 0.11, "family_history": 0.2, "smoking": 0.2, "drinking": 0.2,
               "who_type": 0.08, "alb_abnormal": 0.2, "crp_abnormal": 0.2,
               "ldh_abnormal": 0.16, "ebv_dna_4000": 0.11}
    table = pd.DataFrame({"age": age, "sex": sex})
    for name, values in flags.items():
        table[name] = _with_missing(rng, values, unknown[name] * ext)
    table["tumor_volume"] = np.round(vol_true * np.exp(0.08 * rng.standard_normal(n)), 1)
    cov = {"age": _num("years", "age at diagnosis"), "sex": _fac(["male", "female"], "sex"),
           **{k: _FLAG_COV[k] for k in flags},
           "tumor_volume": _num("mL", "primary tumor volume from MRI contours")}
    return Clinical(table, cov, lp, treatment=treatment)


def stage2(rng, center, cohort, traits) -> Clinical:
    n = center.size
    ext = (center != "center1").astype(float)
    age = _normal(rng, n, 44.5 + 4 * ext, 9, 14, 80)
    sex = _categorical(rng, n, ["male", "female"], [0.67, 0.33])
    who = np.where(rng.random(n) < 0.11 * ext, "I", "II-III").astype(object)
    t = _ordinal(rng, traits["z_volume"].to_numpy(), ["T1", "T2"], [0.5, 0.5])
    nst = _categorical(rng, n, ["N0", "N1"], [0.10, 0.90])
    ldh_abn = (rng.random(n) < 0.037 - 0.018 * ext).astype(float)
    ebv_det = (rng.random(n) < 0.43 - 0.15 * ext).astype(float)
    rene = _categorical(rng, n, ["none", "coalescent", "adjacent"], [0.78, 0.19, 0.03])
    high = (t == "T2") | (nst == "N1")
    p_none = np.where(high, 0.22, 0.6) - 0.08 * ext
    u = rng.random(n)
    treatment = np.where(u < p_none, "none",
                         np.where(u < p_none + 0.07 + 0.03 * ext, "non-DDP/NDP", "DDP/NDP"))
    treatment = treatment.astype(object)
    dose = np.where(treatment == "DDP/NDP", np.round(np.clip(rng.normal(165, 45, n), 40, 300)),
                    np.nan)
    lp = (0.02 * (age - 45) - 0.4 * (sex == "female") + 0.3 * (t == "T2") + 0.7 * (nst == "N1")
          + 0.4 * ldh_abn + 0.55 * ebv_det + 0.45 * _code(rene, ["none", "coalescent", "adjacent"]))
    table = pd.DataFrame({
        "age": age, "sex": sex, "who_type": who, "t_stage": t, "n_stage": nst,
        "ldh_abnormal": _with_missing(rng, ldh_abn, 0.042 * ext),
        "ebv_dna_detectable": _with_missing(rng, ebv_det, 0.045 + 0.085 * ext),
        "rene": rene, "ccnd": dose})
    cov = {"age": _num("years", "age at diagnosis"), "sex": _fac(["male", "female"], "sex"),
           "who_type": _fac(["I", "II-III"], "WHO histopathology type"),
           "t_stage": _fac(["T1", "T2"], "T stage (AJCC 8th)", True),
           "n_stage": _fac(["N0", "N1"], "N stage (AJCC 8th)", True),
           "ldh_abnormal": _bin("LDH above the normal range"),
           "ebv_dna_detectable": _bin("pretreatment plasma EBV DNA detectable"),
           "rene": _fac(["none", "coalescent", "adjacent"],
                        "radiologic extranodal extension: none, coalescent nodes, "
                        "adjacent-structure infiltration", True),
           "ccnd": _num("mg/m2", "cumulative cisplatin/nedaplatin dose (DDP/NDP arm only)")}
    return Clinical(table, cov, lp, treatment=treatment, dose=dose)


def recurrent(rng, center, cohort, traits, tumors: pd.DataFrame) -> Clinical:
    n = center.size
    age = _normal(rng, n, 48, 10.5, 16, 75)
    sex = _categorical(rng, n, ["male", "female"], [0.73, 0.27])
    rt = _ordinal(rng, traits["z_volume"].to_numpy(), ["T0", "T1", "T2", "T3", "T4"],
                  [.13, .11, .09, .43, .24])
    nst = _categorical(rng, n, ["N0", "N1", "N2", "N3"], [.62, .30, .035, .045])
    ebv = (rng.random(n) < 0.55).astype(float)
    early = np.isin(rt, ["T0", "T1", "T2"])
    u = rng.random(n)
    p_surgery = np.where(early, 0.6, 0.15)
    treatment = np.where(u < p_surgery, "surgery",
                         np.where(u < p_surgery + 0.12, "chemotherapy", "re-irradiation"))
    treatment = treatment.astype(object)
    lp = (0.025 * (age - 48) - 0.1 * (sex == "female")
          + 0.3 * _code(rt, ["T0", "T1", "T2", "T3", "T4"])
          + 0.15 * _code(nst, ["N0", "N1", "N2", "N3"]) + 0.15 * ebv
          - 0.3 * (treatment == "surgery") + 0.4 * (treatment == "chemotherapy"))
    het = tumors["heterogeneity"].to_numpy()
    viable = tumors["uptake"].to_numpy()
    nec = tumors["necrotic_fraction"].to_numpy()
    noise = np.exp(0.05 * rng.standard_normal((3, n)))
    suv = {"suv_max": viable * (1 + 1.5 * het) * 0.95 * noise[0],
           "suv_peak": viable * (1 + 0.6 * het) * 0.85 * noise[1],
           "suv_mean": (viable * (1 - nec) + 0.8 * nec) * 0.8 * noise[2]}
    node = np.where(nst == "N0", 0.0, _lognormal(rng, n, 5.0, 0.5, 1.0, 33.0, 2))
    node_suv = {"node_suv_max": node, "node_suv_peak": np.round(node * 0.65, 2),
                "node_suv_mean": np.round(node * 0.45, 2)}
    missing = rng.random(n) < 0.06
    table = pd.DataFrame({"age": age, "sex": sex, "rt_stage": rt, "n_stage": nst,
                          "ebv_dna_detectable": ebv})
    for name, values in {**suv, **node_suv}.items():
        table[name] = np.where(missing, np.nan, np.round(values, 2))
    cov = {"age": _num("years", "age at recurrence"), "sex": _fac(["male", "female"], "sex"),
           "rt_stage": _fac(["T0", "T1", "T2", "T3", "T4"], "recurrent T stage", True),
           "n_stage": _fac(["N0", "N1", "N2", "N3"], "recurrent N stage", True),
           "ebv_dna_detectable": _bin("plasma EBV DNA detectable"),
           **{k: _num("SUV", f"tumor {k[4:]} standardized uptake value") for k in suv},
           **{k: _num("SUV", f"lymph node {k[9:]} standardized uptake value") for k in node_suv}}
    return Clinical(table, cov, lp, treatment=treatment)


SAMPLERS: dict[str, Callable[..., Clinical]] = {
    "multiscale": multiscale, "t3n1": t3n1, "stage2": stage2, "recurrent": recurrent,
    "cptdn": cptdn}

OBSERVED_TREATMENTS = {"recurrent": ("surgery", "re-irradiation", "chemotherapy")}
"""Treatments recorded (and prognostic) but not modelled as arms with counterfactuals."""
