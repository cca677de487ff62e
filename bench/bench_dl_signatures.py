"""Deep-learning signatures against the simulator's truth and against handcrafted radiomics.

For each study design (quick preset), on every test cohort:

* ``C dl`` -- Harrell's C of each shipped deep-learning signature, trained on
  the training cohort by ``deepnomo reproduce``'s own stage (cached in
  ``<out>/<study>/stages``, so a finished ``make reproduce`` is reused);
* ``oracle`` -- C of the true imaging log-hazard (every imaging trait), and
  ``oracle seen`` -- C of the part of it that the signature's input shows
  (H&E tiles show only the pathology trait; MR, PET and CT show the others);
* ``C rad`` -- C of a LASSO Cox handcrafted signature (R ``radiomic_signature``)
  fitted on the training cohort's pyradiomics features of the same input: the
  tumour ROI of the same sequences, or for H&E the 2D first-order and texture
  features of each tile's optical density (summed over RGB), averaged per patient.

The targets are ``C dl >= 0.9 oracle`` (``ratio``) and ``C dl > C rad``. The
difference ``C dl - C rad`` is tested on the same patients with R
``compare_c_index`` (Kang's U-statistic variance, as compareC; two-sided ``p``),
since single-cohort C-indices of 100-170 patients carry standard errors of
about 0.03-0.04.
Training seconds are the model card's (every ensemble member included).

Usage: ``python bench/bench_dl_signatures.py [study ...] [--out results] [--seeds 1 [2 ...]]
[--traits]``

``--traits`` adds each score's Pearson correlation with every true trait of the
simulator (mean over seeds), which shows which part of the true risk a
signature captures.

With several seeds it also prints, per signature and cohort, the mean over seeds,
the number of seeds where the deep-learning signature leads, and a 95% confidence
interval of the mean difference (the seeds' cohorts are independent, so its
standard error is the root of the summed squared per-seed SEs over the seed count).
That interval covers the sampling of test patients only; the spread of training
runs adds to it (``diff_sd`` shows both).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd

from deepnomo.bridge.rconvert import r_session, series_to_r
from deepnomo.bridge.schema import read_cohort
from deepnomo.metrics import harrell_c
from deepnomo.reproduce import (
    CARD,
    PIPELINES,
    STUDIES,
    StudyRun,
    dl_config,
    fit_radiomic_signature,
    radiomic_settings,
    stage_dl,
    stage_multitask,
    stage_radiomics,
    stage_synth,
)
from deepnomo.synth.phenotype import BETA, TRAITS

PRESET = "quick"
SUMMARY_KEYS = ["study", "signature", "cohort"]  # one line per signature and cohort


def seen_truth(table: pd.DataFrame, modalities: list[str]) -> pd.Series:
    """True log-hazard of the traits an input shows: pathology on H&E, the rest elsewhere."""
    traits = ["pathology"] if modalities == ["he"] else list(TRAITS)
    return sum(BETA[t] * table[f"truth_z_{t}"] for t in traits)


def tile_features(data_dir: Path) -> pd.DataFrame:
    """Handcrafted H&E features per patient: pyradiomics 2D first-order, GLCM, GLRLM and
    GLSZM of each tile's optical density (inside a one-pixel border), mean over tiles."""
    import logging

    import SimpleITK as sitk
    from PIL import Image
    from radiomics.featureextractor import RadiomicsFeatureExtractor

    logging.getLogger("radiomics").setLevel(logging.ERROR)
    extractor = RadiomicsFeatureExtractor({
        "setting": {"force2D": True, "binCount": 32, "label": 1},
        "imageType": {"Original": {}},
        "featureClass": {"firstorder": None, "glcm": None, "glrlm": None, "glszm": None}})
    cases = pd.read_csv(data_dir / "cases.csv", dtype={"patient_id": str})
    rows = []
    for pid, image in cases.loc[cases["modality"] == "he", ["patient_id", "image"]].itertuples(
            index=False):
        with Image.open(data_dir / image) as im:
            rgb = np.asarray(im.convert("RGB"), dtype=np.float64)
        od = -np.log((rgb + 1.0) / 256.0).sum(axis=2)
        mask = np.zeros((1, *od.shape), np.uint8)
        mask[0, 1:-1, 1:-1] = 1
        feats = extractor.execute(sitk.GetImageFromArray(od[None]), sitk.GetImageFromArray(mask))
        rows.append({"patient_id": pid, **{f"he_{k}": float(v) for k, v in feats.items()
                                           if not k.startswith("diagnostics")}})
    return pd.DataFrame(rows).groupby("patient_id", sort=False).mean().reset_index()


def radiomic_scores(run: StudyRun, data_dir: Path, table: pd.DataFrame, endpoint: str,
                    modalities: list[str]) -> pd.Series:
    """LASSO Cox handcrafted signature on the features of ``modalities``, fitted on training.

    Features are extracted as the study's pipeline does, else for every sequence
    of the design (:func:`~deepnomo.reproduce.radiomics_spec`; one cache for all of
    its signatures, shared with the networks' auxiliary targets)."""
    settings = radiomic_settings(PRESET, run.seed)
    if modalities == ["he"]:
        return fit_radiomic_signature(tile_features(data_dir), None, table, endpoint,
                                      settings)[0]
    rad = stage_radiomics(run, data_dir, table)
    keep = ["patient_id"]
    r1 = pd.read_csv(rad / "reader1.csv", dtype={"patient_id": str})
    keep += [c for c in r1.columns if c.split("_", 1)[0] in modalities]
    r2_path = rad / "reader2.csv"
    r2 = pd.read_csv(r2_path, dtype={"patient_id": str})[keep] if r2_path.exists() else None
    return fit_radiomic_signature(r1[keep], r2, table, endpoint, settings)[0]


def compare_c(score_dl: np.ndarray, score_rad: np.ndarray, time: np.ndarray,
              event: np.ndarray) -> tuple[float, float]:
    """Standard error and two-sided p of ``C(score_dl) - C(score_rad)`` (R ``compare_c_index``)."""
    fn = r_session().r("""function(a, b, t, e) {
      r <- deepnomo::compare_c_index(a, b, t, e, method = "kang")
      c(r$se, r$p_value_two_sided)
    }""")
    se, p = fn(*(series_to_r(pd.Series(v, dtype=float))
                 for v in (score_dl, score_rad, time, event)))
    return float(se), float(p)


def study_rows(study: str, out: Path, seed: int) -> list[dict]:
    """Bench rows of one study run in ``out`` (its ``stages`` cache reused)."""
    run = StudyRun(study, PRESET, seed, out, log=lambda msg: None)
    data_dir = stage_synth(run)
    table, manifest = read_cohort(data_dir / "cohort.csv")
    endpoint = next(iter(manifest["endpoints"]))
    pipe = PIPELINES[study]
    sigs = []  # (column, modalities, signature.csv, training seconds)
    dl_dirs = []
    for name in pipe.dl:
        d = stage_dl(run, data_dir, table, name)
        card = json.loads((d / CARD).read_text())
        cfg = dl_config(name, PRESET)
        sigs.append((card["signature"], list(cfg.modalities), d / "signature.csv",
                     card["train_seconds"]))
        dl_dirs.append(d)
    if pipe.multitask:
        d = stage_multitask(run, data_dir, table, endpoint, dl_dirs)
        sigs.append(("sig_dl_prognostic", ["t1", "t2", "t1c"], d / "signature.csv",
                     sum(s[3] for s in sigs)))
    by_id = table.set_index("patient_id")
    rad_cache: dict[tuple[str, ...], pd.Series] = {}
    rows = []
    for column, modalities, csv, seconds in sigs:
        key = tuple(modalities)
        if key not in rad_cache:
            rad_cache[key] = radiomic_scores(run, data_dir, table, endpoint, modalities)
        dl = pd.read_csv(csv, dtype={"patient_id": str}).set_index("patient_id")[column]
        seen = seen_truth(by_id, modalities)
        for label, part in by_id.groupby("cohort", sort=False):
            if label == "train":
                continue
            t, e = part[f"{endpoint}_time"].to_numpy(), part[f"{endpoint}_event"].to_numpy()
            ids = part.index

            def c(score, t=t, e=e, ids=ids):
                return harrell_c(score.loc[ids].to_numpy(float), t, e)

            c_dl, c_rad = c(dl), c(rad_cache[key])
            se, p = compare_c(dl.loc[ids].to_numpy(), rad_cache[key].loc[ids].to_numpy(), t, e)
            oracle, oracle_seen = c(part["truth_lp_imaging"]), c(seen)
            traits = trait_correlations({"dl": dl.loc[ids], "rad": rad_cache[key].loc[ids]},
                                        part)
            rows.append({"study": study, "signature": column, "input": "+".join(modalities),
                         "cohort": label, "n": len(part), "events": int(e.sum()),
                         "C dl": c_dl, "oracle": oracle, "ratio": c_dl / oracle,
                         "oracle seen": oracle_seen, "ratio seen": c_dl / oracle_seen,
                         "C rad": c_rad, "dl - rad": c_dl - c_rad, "se": se, "p": p,
                         "dl > rad": c_dl > c_rad,
                         "train s": round(seconds, 1), **traits})
    return rows


def trait_correlations(scores: dict[str, pd.Series | np.ndarray],
                       part: pd.DataFrame) -> dict[str, float]:
    """Pearson r of each score (aligned with the rows of ``part``) with every true trait
    in ``part``, keyed ``r <score> <trait>``."""
    return {f"r {who} {trait}": float(np.corrcoef(np.asarray(score, dtype=float),
                                                  part[f"truth_z_{trait}"])[0, 1])
            for who, score in scores.items() for trait in BETA if f"truth_z_{trait}" in part}


def add_difference_ci(summary: pd.DataFrame) -> pd.DataFrame:
    """Replace ``se2`` (sum over seeds of squared compareC SEs) by ``ci_low``/``ci_high``, the
    95% CI of the mean difference ``diff`` over ``seeds`` independent cohorts."""
    se_mean = np.sqrt(summary.pop("se2")) / summary["seeds"]
    summary["ci_low"] = summary["diff"] - 1.96 * se_mean
    summary["ci_high"] = summary["diff"] + 1.96 * se_mean
    return summary


def trait_table(rows: pd.DataFrame, trait_cols: list[str]) -> pd.DataFrame:
    """Mean over seeds of the ``r <dl|rad> <trait>`` columns, one line per score."""
    mean = rows.groupby(SUMMARY_KEYS, sort=False)[trait_cols].mean().reset_index()
    long = mean.melt(id_vars=SUMMARY_KEYS, var_name="what", value_name="r").dropna()
    long[["score", "trait"]] = long["what"].str.split(" ", n=2, expand=True).iloc[:, 1:]
    wide = long.pivot_table(index=[*SUMMARY_KEYS, "score"], columns="trait", values="r")
    order = [(*k, who) for k in mean[SUMMARY_KEYS].itertuples(index=False)
             for who in ("dl", "rad")]
    return wide.reindex(order)[[t for t in BETA if t in wide.columns]].reset_index()


def study_dir(out: Path, study: str, seed: int) -> Path:
    """Run folder: ``make reproduce``'s for seed 1, ``<out>/seed<k>/<study>`` for others."""
    return out / study if seed == 1 else out / f"seed{seed}" / study


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("studies", nargs="*", default=list(STUDIES))
    parser.add_argument("--out", type=Path, default=Path("results"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[1],
                        help="synthetic-cohort seeds (each a full rerun on new cohorts)")
    parser.add_argument("--traits", action="store_true",
                        help="also print each score's correlation with every true trait")
    args = parser.parse_args()
    rows = [dict(seed=seed, **r) for seed in args.seeds for s in args.studies
            for r in study_rows(s, study_dir(args.out, s, seed), seed)]
    full = pd.DataFrame(rows)
    trait_cols = [c for c in full.columns if c.startswith("r ")]
    table = full.drop(columns=trait_cols)
    with pd.option_context("display.width", 250, "display.max_columns", 30):
        print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
        if args.traits:
            print(f"\nPearson r of each score with the true traits (log-HR per SD: "
                  f"{', '.join(f'{t} {b}' for t, b in BETA.items())}), mean over seeds")
            print(trait_table(full, trait_cols).to_string(
                index=False, float_format=lambda v: f"{v:.2f}", na_rep=""))
        if len(args.seeds) > 1:
            summary = table.groupby(SUMMARY_KEYS, sort=False).agg(
                seeds=("seed", "size"), C_dl=("C dl", "mean"), ratio=("ratio seen", "mean"),
                C_rad=("C rad", "mean"), diff=("dl - rad", "mean"), diff_sd=("dl - rad", "std"),
                se2=("se", lambda v: float(np.sum(np.square(v)))),
                dl_wins=("dl > rad", "sum")).reset_index()
            # seeds are independent cohorts: the mean difference has SE sqrt(sum se^2) / k
            summary = add_difference_ci(summary)
            print("\nMean over seeds (ratio = C dl / oracle seen; ci = 95% CI of the mean "
                  "difference from the per-seed compareC SEs: test-patient sampling only)")
            print(summary.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    near = table["ratio seen"] >= 0.9
    print(f"\nC dl >= 0.9 x oracle of what the input shows: {int(near.sum())} of {len(table)} "
          f"rows; C dl > C rad: {int(table['dl > rad'].sum())}; both: "
          f"{int((near & table['dl > rad']).sum())}; C dl < C rad at p < 0.05: "
          f"{int(((table['dl - rad'] < 0) & (table['p'] < 0.05)).sum())}")


if __name__ == "__main__":
    main()
