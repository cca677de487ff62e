"""Learning curve: deep-learning against handcrafted radiomic signatures by training size.

For one shipped deep-learning signature (default ``t3n1_t1``), each seed and each
training-size multiple ``k`` of the quick preset, the design is simulated with
``k`` times the quick training cohort and each test cohort (internal, external)
at a fixed size, spread over its centers as in the preset; the network
(``deepnomo reproduce``'s own stage and config) and the LASSO Cox radiomic
signature of the same sequences and ROI (as in ``bench_dl_signatures.py``) are
both fitted on the training cohort and scored locked on every test cohort.
Printed per run and cohort, and as means over seeds per ``k`` and cohort:
``C dl``, ``C rad``, the oracle C of the true risk the input shows, ``dl - rad``
with its compareC standard error (Kang), and each score's Pearson r with every
true trait (``--traits``). Runs are cached per (signature, k, seed) in
``<out>/learning_curve``.

Usage: ``python bench/bench_dl_learning_curve.py [--signature t3n1_t1] [--scales 1 2 4]
[--seeds 1 [2 ...]] [--test-size 260] [--out results] [--traits]``
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd
from bench_dl_signatures import (
    add_difference_ci,
    compare_c,
    radiomic_scores,
    seen_truth,
    trait_correlations,
)

from deepnomo.bridge.schema import read_cohort
from deepnomo.metrics import harrell_c
from deepnomo.reproduce import CARD, StudyRun, dl_config, stage_dl, stage_synth
from deepnomo.synth import get_design

PRESET = "quick"


def run_rows(signature: str, scale: int, seed: int, test_size: int, out: Path) -> list[dict]:
    """Train both signatures on ``scale`` x the quick training cohort; one row per test cohort."""
    study = signature.split("_", 1)[0]
    _, preset = get_design(study, PRESET)
    cohorts = {c.label: dict(c.centers) for c in preset.cohorts}
    if "train" not in cohorts or len(cohorts) < 2:
        raise ValueError(f"--signature: study '{study}' has cohorts {sorted(cohorts)}; the "
                         "learning curve needs a training cohort and at least one test cohort")
    sizes = {label: ({ctr: n * scale for ctr, n in centers.items()} if label == "train"
                     else _split(test_size, centers)) for label, centers in cohorts.items()}
    run = StudyRun(study, PRESET, seed, out / "learning_curve" / f"{signature}_x{scale}"
                   / f"seed{seed}", log=lambda msg: None)
    data_dir = stage_synth(run, sizes)
    table, manifest = read_cohort(data_dir / "cohort.csv")
    endpoint = next(iter(manifest["endpoints"]))
    modalities = list(dl_config(signature, PRESET).modalities)
    model_dir = stage_dl(run, data_dir, table, signature)
    card = json.loads((model_dir / CARD).read_text())
    dl = pd.read_csv(model_dir / "signature.csv",
                     dtype={"patient_id": str}).set_index("patient_id")[card["signature"]]
    rad = radiomic_scores(run, data_dir, table, endpoint, modalities)
    rows = []
    for label, part in table.set_index("patient_id").groupby("cohort", sort=False):
        if label == "train":
            continue
        t, e = part[f"{endpoint}_time"].to_numpy(float), part[f"{endpoint}_event"].to_numpy(float)
        a, b = dl.loc[part.index].to_numpy(float), rad.loc[part.index].to_numpy(float)
        se, p = compare_c(a, b, t, e)
        row = {"signature": signature, "scale": scale, "seed": seed, "cohort": label,
               "n train": int((table["cohort"] == "train").sum()), "n test": len(part),
               "events test": int(e.sum()), "C dl": harrell_c(a, t, e),
               "C rad": harrell_c(b, t, e),
               "oracle": harrell_c(seen_truth(part, modalities).to_numpy(float), t, e),
               "se": se, "p": p, "train s": round(card["train_seconds"])}
        row["dl - rad"] = row["C dl"] - row["C rad"]
        rows.append({**row, **trait_correlations({"dl": a, "rad": b}, part)})
    return rows


def _split(total: int, centers: dict[str, int]) -> dict[str, int]:
    """``total`` patients spread over ``centers`` in the preset's proportions."""
    n = sum(centers.values())
    out = {ctr: int(round(total * k / n)) for ctr, k in centers.items()}
    first = next(iter(out))
    out[first] += total - sum(out.values())
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--signature", default="t3n1_t1",
                        help="shipped deep-learning config (data/dl/<name>.yaml)")
    parser.add_argument("--scales", type=int, nargs="+", default=[1, 2, 4],
                        help="training cohort sizes, as multiples of the quick preset's")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1])
    parser.add_argument("--test-size", type=int, default=260)
    parser.add_argument("--out", type=Path, default=Path("results"))
    parser.add_argument("--traits", action="store_true",
                        help="also print each score's correlation with every true trait")
    args = parser.parse_args()
    if min(args.scales) < 1 or args.test_size < 20:
        parser.error("--scales must be >= 1 and --test-size >= 20")
    rows = []
    for seed in args.seeds:
        for scale in args.scales:
            for row in run_rows(args.signature, scale, seed, args.test_size, args.out):
                rows.append(row)
                print(json.dumps({k: v for k, v in row.items() if not k.startswith("r ")},
                                 default=float), flush=True)
    full = pd.DataFrame(rows)
    trait_cols = [c for c in full.columns if c.startswith("r ")]
    fmt = {"float_format": lambda v: f"{v:.3f}", "index": False}
    with pd.option_context("display.width", 250, "display.max_columns", 30):
        print(full.drop(columns=trait_cols).to_string(**fmt))
        summary = full.groupby(["cohort", "scale"], sort=False).agg(
            n_train=("n train", "mean"), seeds=("seed", "size"), C_dl=("C dl", "mean"),
            C_rad=("C rad", "mean"), oracle=("oracle", "mean"), diff=("dl - rad", "mean"),
            se2=("se", lambda v: float(np.sum(np.square(v)))),
            dl_wins=("dl - rad", lambda v: int((v > 0).sum())),
            train_s=("train s", "mean")).reset_index()
        summary = add_difference_ci(summary)
        print(f"\n{args.signature}: mean over seeds per test cohort and training-size multiple "
              "(ci = 95% CI of the mean difference, test-patient sampling only)")
        print(summary.to_string(**fmt))
        if args.traits:
            traits = full.groupby(["cohort", "scale"], sort=False)[trait_cols].mean().T
            print("\nPearson r with the true traits, mean over seeds (rows: score trait)")
            print(traits.to_string(float_format=lambda v: f"{v:.2f}"))


if __name__ == "__main__":
    main()
