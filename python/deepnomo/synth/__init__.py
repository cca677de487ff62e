"""Synthetic study-shaped cohorts whose images carry a known risk.

``simulate(study, preset, seed)`` builds the cohort table with truth columns;
``generate(...)`` also renders images and writes a cohort folder
(``cohort.csv`` + manifest, ``cases.csv``, ``images/``, ``summary.json``).
"""

from deepnomo.metrics import harrell_c, kaplan_meier, km_at, median_followup
from deepnomo.synth.cohort import SynthCohort, cohort_summary, generate, simulate, write_cohort_dir
from deepnomo.synth.designs import DESIGNS, SynthError, get_design

__all__ = ["DESIGNS", "SynthCohort", "SynthError", "cohort_summary", "generate", "get_design",
           "harrell_c", "kaplan_meier", "km_at", "median_followup", "simulate",
           "write_cohort_dir"]
