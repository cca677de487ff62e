"""Train shipped deep-learning signatures end to end on a device: time, memory, C-index.

For each config name (``deepnomo/data/dl/<name>.yaml``; the study is the part
before the first ``_``): the study's synthetic quick-preset cohort at ``--seed``
(generated once into ``--work``), bags of the training cohort, training as
``make reproduce`` does, then scoring of every cohort with the locked model.
The table gives the seconds to build the bags, to train and to score, epochs
run (all members), seconds per epoch, peak GPU memory (CUDA only), the
validation / out-of-fold C-index and the test C-index of each cohort.

Usage: ``python bench/bench_dl_train.py [NAME ...] [--device auto|cpu|cuda]
[--seed 1] [--work DIR] [--amp config|on|off] [--json FILE]``
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
import time
from pathlib import Path


def run_one(name: str, seed: int, device: str, amp: str, work: Path) -> dict:
    import torch

    from deepnomo.bridge.schema import read_cohort
    from deepnomo.paths import PACKAGE_DIR
    from deepnomo.signatures import score_cohort
    from deepnomo.synth import generate
    from deepnomo.train import TrainConfig, fit, load_bags, resolve_device

    cfg = TrainConfig.from_yaml(PACKAGE_DIR / "data" / "dl" / f"{name}.yaml")
    if amp != "config":
        cfg = dataclasses.replace(cfg, amp=amp == "on")
    dev = resolve_device(device)
    study = name.split("_")[0]
    cohort_dir = work / f"{study}_seed{seed}" / "cohort"
    t0 = time.perf_counter()
    if not (cohort_dir / "cases.csv").is_file():
        generate(study, "quick", seed, cohort_dir, overwrite=True)
    synth_s = time.perf_counter() - t0
    table, _ = read_cohort(cohort_dir / "cohort.csv")
    cases = cohort_dir / "cases.csv"
    t0 = time.perf_counter()
    train = load_bags(table, cases, cfg, with_masks=cfg.seg_epochs > 0, only_cohort="train")
    bags_s = time.perf_counter() - t0
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    model_dir = work / f"{name}_{dev.type}_amp{int(cfg.amp)}_seed{seed}"
    t0 = time.perf_counter()
    info = fit(cfg, train, model_dir, device=device, progress=False)
    train_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    _, card = score_cohort(model_dir, table, cases, device=str(dev))
    score_s = time.perf_counter() - t0
    peak = torch.cuda.max_memory_allocated() / 2**20 if dev.type == "cuda" else float("nan")
    return {"signature": name, "device": dev.type, "amp": bool(info["amp"]), "seed": seed,
            "synth_s": synth_s, "bags_s": bags_s, "train_s": train_s, "score_s": score_s,
            "epochs": len(info["history"]), "s_per_epoch": train_s / len(info["history"]),
            "peak_mib": peak, "val_c": info["val_c_index"],
            "test_c": {k: v["c_index"] for k, v in card["metrics"].items() if k != "train"}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("names", nargs="*", default=["t3n1_t1"],
                    help="config names, e.g. t3n1_t1 stage2_combined (default: t3n1_t1)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--seed", type=int, default=1, help="cohort seed")
    ap.add_argument("--amp", choices=["config", "on", "off"], default="config",
                    help="bf16 autocast on CUDA: as configured, or forced on / off")
    ap.add_argument("--work", type=Path, default=None,
                    help="folder for cohorts and models (default: a temporary one)")
    ap.add_argument("--json", type=Path, default=None, help="also write the rows as JSON")
    args = ap.parse_args()
    import torch

    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, "
          f"cuda {torch.cuda.is_available()}"
          + (f" ({torch.cuda.get_device_name()})" if torch.cuda.is_available() else ""),
          flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        rows = []
        print(f"{'signature':<22}{'device':<7}{'amp':<5}{'bags s':>7}{'train s':>9}"
              f"{'epochs':>7}{'s/epoch':>8}{'score s':>8}{'peak MiB':>9}{'val C':>7}  test C",
              flush=True)
        for name in args.names:
            r = run_one(name, args.seed, args.device, args.amp, work)
            rows.append(r)
            tests = ", ".join(f"{k} {v:.3f}" for k, v in r["test_c"].items())
            print(f"{r['signature']:<22}{r['device']:<7}{str(r['amp']):<5}{r['bags_s']:>7.1f}"
                  f"{r['train_s']:>9.1f}{r['epochs']:>7}{r['s_per_epoch']:>8.2f}"
                  f"{r['score_s']:>8.1f}{r['peak_mib']:>9.0f}{r['val_c']:>7.3f}  {tests}",
                  flush=True)
            if args.json is not None:
                args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
