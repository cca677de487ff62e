"""Generation time and disk size of the synthetic study cohorts, per design and preset.

Usage: python bench/bench_synth.py [--preset quick|paper|both] [--study NAME ...] [--seed N]
Prints one row per design: patients, training events, event rate per cohort,
median follow-up, oracle C (imaging / total) in training, seconds, MB on disk.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from deepnomo.synth import DESIGNS, generate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="quick", choices=["quick", "paper", "both"])
    parser.add_argument("--study", nargs="*", default=sorted(DESIGNS))
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    presets = ["quick", "paper"] if args.preset == "both" else [args.preset]
    header = (f"{'design':<11} {'preset':<6} {'n':>5} {'train ev':>8} {'event rate':<18} "
              f"{'FU (mo)':>7} {'oracle C img/tot':>16} {'sec':>6} {'MB':>6}")
    print(header)
    print("-" * len(header))
    with tempfile.TemporaryDirectory() as tmp:
        for preset in presets:
            for study in args.study:
                s = generate(study, preset, args.seed, Path(tmp) / f"{study}-{preset}")
                cohorts = s["cohorts"]
                train = cohorts["train"]
                rates = "/".join(f"{c['event_rate']:.2f}" for c in cohorts.values())
                n = sum(c["n"] for c in cohorts.values())
                oracle = f"{train['oracle_c']['imaging']:.3f}/{train['oracle_c']['total']:.3f}"
                print(f"{study:<11} {preset:<6} {n:>5} {train['events']:>8} {rates:<18} "
                      f"{train['median_followup']:>7.1f} {oracle:>16} "
                      f"{s['generation_seconds']:>6.1f} {s['disk_bytes'] / 1e6:>6.1f}", flush=True)


if __name__ == "__main__":
    main()
