"""Throughput of ``deepnomo preprocess`` and ``deepnomo radiomics`` at 1 and 2 workers.

Makes a small synthetic cohort (one MR-like volume and tumour mask per case), then
times both commands' runners from an empty output folder at each worker count and
reports cases per minute and the peak resident memory of each worker process.

Usage: python bench/bench_imaging.py [--cases 40] [--workers 1 2] [--params multiscale]
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import SimpleITK as sitk

from deepnomo.commands.imaging import run_preprocess, run_radiomics
from deepnomo.extract import load_result

PREPROCESS = {"orientation": "LPS", "spacing": [1.5, 1.5, 1.5], "interpolator": "linear",
              "n4": {"shrink_factor": 4, "iterations": [20, 20]}, "normalize": "zscore"}


def make_cohort(folder: Path, n: int, seed: int = 0) -> Path:
    """``n`` cases of shape (24, 48, 48) at 1 x 1 x 2.5 mm with an ellipsoid tumour."""
    rng = np.random.default_rng(seed)
    z, y, x = np.indices((24, 48, 48)).astype(float)
    rows = []
    for i in range(n):
        c = rng.uniform([9, 18, 18], [15, 30, 30])
        r = rng.uniform([2, 5, 5], [4, 9, 9])
        tumour = ((z - c[0]) / r[0]) ** 2 + ((y - c[1]) / r[1]) ** 2 + ((x - c[2]) / r[2]) ** 2
        body = ((y - 23.5) / 22) ** 2 + ((x - 23.5) / 22) ** 2 <= 1
        img = np.where(body, 300 + 40 * rng.standard_normal(z.shape), 0)
        img = img + np.where(tumour <= 1, 150 + 30 * np.sin(x / 2.0), 0)
        img = img * np.exp(0.2 * (x - 24) / 24)
        for name, arr in (("img", img.astype(np.float32)), ("msk", (tumour <= 1).astype(np.uint8))):
            im = sitk.GetImageFromArray(arr)
            im.SetSpacing((1.0, 1.0, 2.5))
            sitk.WriteImage(im, str(folder / f"c{i:03d}_{name}.nii.gz"))
        rows.append({"patient_id": f"c{i:03d}", "modality": "MR", "image": f"c{i:03d}_img.nii.gz",
                     "mask": f"c{i:03d}_msk.nii.gz", "reader": "r1"})
    manifest = folder / "cases.csv"
    pd.DataFrame(rows).to_csv(manifest, index=False)
    return manifest


def worker_stats(out_dirs: list[Path], keys: list[str]) -> tuple[float, float, float]:
    """Peak RSS (MiB, largest over worker processes), the busiest worker's case seconds,
    and the mean wall seconds per case inside a worker.

    ``60 * cases / busiest`` is the throughput once the workers are up (process
    start-up and imports excluded).
    """
    peak: dict[int, float] = {}
    busy: dict[tuple[int, int], float] = {}
    for stage, out_dir in enumerate(out_dirs):
        for k in keys:
            rec = load_result(out_dir, k)
            peak[rec["pid"]] = max(peak.get(rec["pid"], 0.0), rec["peak_rss_mb"])
            busy[(stage, rec["pid"])] = busy.get((stage, rec["pid"]), 0.0) + rec["seconds"]
    per_stage = [max(v for (st, _), v in busy.items() if st == s) for s in range(len(out_dirs))]
    return max(peak.values()), sum(per_stage), sum(busy.values()) / len(keys)


def row(step: str, workers: int, summary, out_dirs: list[Path]) -> dict:
    n = len(summary.done)
    peak, busiest, per_case = worker_stats(out_dirs, summary.done)
    return {"step": step, "workers": workers, "cases": n, "seconds": summary.seconds,
            "cases_per_min": 60 * n / summary.seconds,
            "cases_per_min_workers_up": 60 * n / busiest, "s_per_case_in_worker": per_case,
            "peak_rss_mb_per_worker": peak}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=int, default=40)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--params", default="multiscale")
    args = ap.parse_args()
    # one thread per worker process, so that workers, not threads, carry the parallelism
    for var in ("ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = "1"
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        manifest = make_cohort(tmp, args.cases)
        for w in args.workers:
            out = tmp / f"pre{w}"
            s = run_preprocess(manifest, PREPROCESS, out, workers=w, progress=False)
            assert not s.failed, s.failed
            rows.append(row("preprocess (LPS, 1.5 mm, N4, z-score)", w, s,
                            [out / ".work" / "prepared", out / "cases"]))
        for w in args.workers:
            out = tmp / f"rad{w}" / "features.csv"
            s, paths, tables = run_radiomics(manifest, args.params, out, workers=w,
                                             progress=False)
            assert not s.failed, s.failed
            work = next(out.parent.glob(".features.work-*"))
            rows.append(row(f"radiomics ({args.params}, {tables['r1'].shape[1] - 1} features)",
                            w, s, [work]))
    table = pd.DataFrame(rows)
    for _, grp in table.groupby("step", sort=False):
        base = grp["cases_per_min"].iloc[0]
        table.loc[grp.index, "speedup"] = grp["cases_per_min"] / base
        up = grp["cases_per_min_workers_up"].iloc[0]
        table.loc[grp.index, "speedup_workers_up"] = grp["cases_per_min_workers_up"] / up
    with pd.option_context("display.width", 200, "display.precision", 2):
        print(table.to_string(index=False))


if __name__ == "__main__":
    main()
