"""Re-run a study design end to end: synthetic cohort -> radiomics -> deep-learning
signatures -> cohort table -> R ``run_study()`` -> report.

Every stage is cached by the content hash of its inputs and configuration
(:mod:`deepnomo.stages`), so an interrupted ``deepnomo reproduce`` resumes
from the stages that finished. Stage outputs live in
``<out>/<study>/stages/<stage>/``; the study's results (``cohort.csv`` +
manifest, ``results.json``, ``report.html``, ``figures/``, ``tables/``) in
``<out>/<study>/``.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from deepnomo.atomic import atomic_write_text
from deepnomo.bridge.rconvert import from_r, r_session, to_r
from deepnomo.bridge.schema import read_cohort, write_cohort
from deepnomo.paths import PACKAGE_DIR
from deepnomo.stages import StageRunner, hash_config, hash_files

STUDIES = ("multiscale", "t3n1", "stage2", "recurrent", "cptdn")
DL_CONFIG_DIR = PACKAGE_DIR / "data" / "dl"
CARD = "signature.model_card.json"  # beside each stage's signature.csv


@dataclass(frozen=True)
class Pipeline:
    """What the Python side computes for one study design.

    Attributes
    ----------
    radiomics : dict or None
        ``modalities`` (sequences), ``params`` per preset, ``signature`` (column),
        ``icc_patients`` (training patients read by the second reader) and optionally
        ``bias_order`` (:func:`~deepnomo.commands.imaging.run_radiomics`: each image
        divided by a polynomial bias field fitted around its ROI before extraction).
    dl : tuple of str
        Deep-learning configs (``data/dl/<name>.yaml``), one signature each.
    multitask : dict or None
        Prognostic / predictive network on the per-sequence deep features of
        the ``dl`` models (study cptdn): ``treated_level`` of ``treatment`` and
        ``fit``, keyword arguments of :func:`~deepnomo.train.fit_multitask`
        (cptdn: five cross-validation members; learning rate 3e-4, chosen on the
        training out-of-fold C: at 1e-2 most members stopped after one or two
        full-batch steps on the 1920 features the networks gave before their shape
        encoder; with it they give 2400). Screened on development cohorts (cohort
        seeds 6-8, networks without the encoder) and not kept, each within 0.003
        of the shipped fit in mean prognostic test C: 16 hidden units, dropout
        0.3, weight decay 1e-2.
    """

    radiomics: dict[str, Any] | None = None
    dl: tuple[str, ...] = ()
    multitask: dict[str, Any] | None = None


PIPELINES: dict[str, Pipeline] = {
    "multiscale": Pipeline(
        radiomics={"modalities": ["t1", "t2", "t1c"], "params": {"quick": "quick",
                                                                 "paper": "multiscale"},
                   "signature": "sig_rad_mri", "icc_patients": 40},
        dl=("multiscale_pathology",)),
    "t3n1": Pipeline(dl=("t3n1_t1", "t3n1_t2", "t3n1_t1c")),
    "stage2": Pipeline(
        radiomics={"modalities": ["t1", "t2", "t1c"], "params": {"quick": "quick",
                                                                 "paper": "stage2"},
                   "signature": "sig_rad_mri", "icc_patients": 0, "bias_order": 2},
        dl=("stage2_combined",)),
    "recurrent": Pipeline(dl=("recurrent_petct", "recurrent_ct", "recurrent_pet")),
    "cptdn": Pipeline(dl=("cptdn_t1", "cptdn_t2", "cptdn_t1c"),
                      multitask={"treated_level": "ICT+CCRT", "fit": {"ensemble": 5, "lr": 3e-4}}),
}


@dataclass
class StudyRun:
    """State of one study's run (paths and timings)."""

    study: str
    preset: str
    seed: int
    out: Path
    log: Callable[[str], None] = print
    device: str = "auto"  # where networks train: auto (CUDA when present) | cpu | cuda
    runner: StageRunner = field(init=False)

    def __post_init__(self) -> None:
        self.runner = StageRunner(self.out / "stages", self.study, self.log)

    @property
    def timings(self) -> dict[str, float]:
        """Seconds per stage (cached stages count 0), the R run included."""
        return self.runner.timings


def _code_hash(*modules: str) -> str:
    """SHA-1 of the package's source files ``modules`` (files or folders; only ``*.py``,
    so that compiled caches do not change it)."""
    paths = [PACKAGE_DIR / m for m in modules]
    return hash_files([f for p in paths for f in (sorted(p.rglob("*.py")) if p.is_dir()
                                                   else [p])])


# ----------------------------------------------------------------------------- stages

def stage_synth(run: StudyRun, sizes: dict[str, dict[str, int]] | None = None) -> Path:
    """Generate the synthetic cohort (table, images, cases.csv, summary.json).

    ``sizes`` (cohort label -> {center: n}) replaces those cohorts' sizes in the
    preset (the learning curves of ``bench/bench_dl_learning_curve.py``).
    """
    from deepnomo.synth import generate

    overrides = synth_overrides(run.study, run.preset)
    if sizes:
        overrides["sizes"] = {**overrides.get("sizes", {}), **sizes}
    key = hash_config({"study": run.study, "preset": run.preset, "seed": run.seed,
                       "overrides": overrides, "code": _code_hash("synth")})
    base = "quick" if run.preset == "tiny" else run.preset
    out = run.runner.run("synth", key, lambda tmp: generate(
        run.study, base, run.seed, tmp / "cohort", overwrite=True, **overrides))
    return out / "cohort"


def synth_overrides(study: str, preset: str) -> dict[str, Any]:
    """Simulator overrides of a preset: ``tiny`` (tests) is the quick design at
    ``TINY_FRACTION`` of its size, with more events so the statistics still run."""
    if preset != "tiny":
        return {}
    from deepnomo.synth import get_design

    _, quick = get_design(study, "quick")
    sizes = {c.label: {center: max(15, round(n * TINY_FRACTION))
                       for center, n in c.centers.items()} for c in quick.cohorts}
    return {"sizes": sizes, "event_rate": max(quick.event_rate, 0.45)}


TINY_FRACTION = 0.5


def _radiomics_cases(data_dir: Path, spec: dict[str, Any], table: pd.DataFrame,
                     seed: int, dest: Path) -> list[Path]:
    """Case manifests: reader 1 for every patient, and reader 2 for a seeded random
    subset of training patients (the reader-agreement filter needs only those)."""
    cases = pd.read_csv(data_dir / "cases.csv", dtype={"patient_id": str})
    cases = cases[cases["modality"].isin(spec["modalities"])].copy()
    cases["reader"] = pd.to_numeric(cases["reader"], errors="raise").astype(int)
    for col in ("image", "mask"):
        cases[col] = [str((data_dir / p).resolve()) for p in cases[col]]
    readers = sorted(cases["reader"].unique())
    parts = [cases[cases["reader"] == readers[0]]]
    if spec["icc_patients"] and len(readers) > 1:
        train_ids = table.loc[table["cohort"] == "train", "patient_id"].astype(str).to_numpy()
        rng = np.random.default_rng(seed)
        pick = rng.choice(train_ids, size=min(spec["icc_patients"], len(train_ids)),
                          replace=False)
        parts.append(cases[(cases["reader"] == readers[1]) & cases["patient_id"].isin(pick)])
    paths = []
    for i, part in enumerate(parts, start=1):
        paths.append(dest / f"cases_reader{i}.csv")
        part.to_csv(paths[-1], index=False)
    return paths


IMAGE_MODALITIES = ("t1", "t2", "t1c", "pet", "ct")  # the sequences pyradiomics reads here


def radiomics_spec(study: str) -> dict[str, Any]:
    """The radiomics extraction of a study: its :class:`Pipeline` entry, else (designs
    whose published model has no radiomic signature) every imaging sequence of the
    design with the quick parameters, for auxiliary targets (``aux_components``)
    and the benchmark's handcrafted signatures."""
    from deepnomo.synth import get_design

    if PIPELINES[study].radiomics:
        return PIPELINES[study].radiomics
    modalities = [m for m in get_design(study, "quick")[0].modalities if m in IMAGE_MODALITIES]
    return {"modalities": modalities, "params": {"quick": "quick"}, "signature": "sig_rad",
            "icc_patients": 0}


def stage_radiomics(run: StudyRun, data_dir: Path, table: pd.DataFrame,
                    spec: dict[str, Any] | None = None) -> Path:
    """pyradiomics features of the design's sequences: ``reader1.csv`` (every
    patient) and, where the design filters on reader agreement, ``reader2.csv``.

    ``spec`` defaults to the study's :func:`radiomics_spec`.
    """
    from deepnomo.commands.imaging import run_radiomics
    from deepnomo.radiomics import params_file

    spec = radiomics_spec(run.study) if spec is None else spec
    params = spec["params"][run.preset if run.preset in spec["params"] else "quick"]
    key = hash_config({"data": hash_files([data_dir / "cases.csv", data_dir / "cohort.csv"]),
                       "params": hash_files([params_file(params)]), "spec": spec,
                       "seed": run.seed})

    def work(tmp: Path) -> None:
        workers = max(1, min(2, os.cpu_count() or 1))
        for i, cases in enumerate(_radiomics_cases(data_dir, spec, table, run.seed, tmp), 1):
            out = tmp / f"reader{i}.csv"
            summary, _, _ = run_radiomics(cases, params, out, workers=workers, progress=True,
                                          bias_order=spec.get("bias_order", 0))
            if summary.failed:
                first = sorted(summary.failed.items())[:3]
                raise RuntimeError(f"radiomics failed for {len(summary.failed)} case(s), e.g. "
                                   + "; ".join(f"{k}: {why}" for k, why in first))
            for work_dir in tmp.glob(f".{out.stem}.work-*"):
                shutil.rmtree(work_dir)

    return run.runner.run("radiomics", key, work)


def radiomic_settings(preset: str, seed: int) -> dict[str, Any]:
    """Settings of R ``radiomic_signature()`` for a preset (the paper's repeats and folds)."""
    paper = preset == "paper"
    return {"repeats": 100 if paper else 10, "k": 3, "nfolds": 10 if paper else 5, "seed": seed}


def fit_radiomic_signature(features: pd.DataFrame, reader2: pd.DataFrame | None,
                           table: pd.DataFrame, endpoint: str,
                           settings: dict[str, Any]) -> tuple[pd.Series, dict[str, float]]:
    """R ``radiomic_signature()`` fitted on the training cohort, applied locked to all.

    Parameters
    ----------
    features : DataFrame
        ``patient_id`` and one column per radiomic feature, every patient.
    reader2 : DataFrame or None
        Second reader's features of some training patients (ICC filter).
    table : DataFrame
        Cohort table (``patient_id``, ``cohort``, the endpoint's columns).
    settings : dict
        :func:`radiomic_settings`.

    Returns
    -------
    score : Series
        Signature per ``patient_id`` (index), higher = higher risk.
    coefficients : dict
        Selected feature -> LASSO Cox coefficient.
    """
    ro = r_session()
    base = table[["patient_id", "cohort", f"{endpoint}_time", f"{endpoint}_event"]]
    fit_score = ro.r("""function(feat, reader2, data, endpoint, repeats, k, nfolds, seed) {
      train <- data[data$cohort == "train", ]
      ftrain <- feat[feat$patient_id %in% train$patient_id, ]
      sig <- deepnomo::radiomic_signature(ftrain, train, endpoint, reader2 = reader2,
                                          repeats = repeats, k = k, nfolds = nfolds,
                                          seed = seed)
      score <- stats::predict(sig, feat)
      list(scores = data.frame(patient_id = names(score), score = unname(score)),
           features = names(sig$coefficients), coefficients = unname(sig$coefficients))
    }""")
    res = fit_score(to_r(features), ro.NULL if reader2 is None else to_r(reader2), to_r(base),
                    endpoint, settings["repeats"], settings["k"], settings["nfolds"],
                    settings["seed"])
    scores = from_r(res.rx2("scores"))
    return (scores.set_index("patient_id")["score"],
            dict(zip(res.rx2("features"), res.rx2("coefficients"), strict=True)))


def stage_radiomic_signature(run: StudyRun, rad_dir: Path, table: pd.DataFrame,
                             endpoint: str) -> Path:
    """R ``radiomic_signature()`` fitted on training, applied locked to every cohort."""
    spec = PIPELINES[run.study].radiomics
    settings = radiomic_settings(run.preset, run.seed)
    key = hash_config({"features": hash_files([rad_dir]), "settings": settings,
                       "endpoint": endpoint, "table": hash_config(
                           table[["patient_id", "cohort", f"{endpoint}_time",
                                  f"{endpoint}_event"]].to_csv())})

    def work(tmp: Path) -> None:
        r1 = pd.read_csv(rad_dir / "reader1.csv", dtype={"patient_id": str})
        r2_path = rad_dir / "reader2.csv"
        r2 = pd.read_csv(r2_path, dtype={"patient_id": str}) if r2_path.exists() else None
        score, coefs = fit_radiomic_signature(r1, r2, table, endpoint, settings)
        score.rename(spec["signature"]).rename_axis("patient_id").reset_index().to_csv(
            tmp / "signature.csv", index=False)
        card = {"signature": spec["signature"], "features": list(coefs),
                "coefficients": list(coefs.values()), "settings": settings,
                "description": "LASSO Cox radiomic signature (R radiomic_signature), "
                               "fitted on training, higher = higher risk"}
        (tmp / CARD).write_text(json.dumps(card, indent=2))

    return run.runner.run("radiomic_signature", key, work)


def dl_config(name: str, preset: str):
    """The shipped deep-learning config ``name`` (shortened for the tiny test preset)."""
    from deepnomo.train import TrainConfig

    cfg = TrainConfig.from_yaml(DL_CONFIG_DIR / f"{name}.yaml")
    if preset not in SHORT_DL:
        return cfg
    short = SHORT_DL[preset]
    return replace(cfg, epochs=min(cfg.epochs, short["epochs"]),
                   patience=min(cfg.patience, short["patience"]),
                   min_epochs=min(cfg.min_epochs, short["patience"]),
                   pretrain_epochs=min(cfg.pretrain_epochs, 1),
                   seg_epochs=min(cfg.seg_epochs, 1),
                   ensemble=min(cfg.ensemble, short["ensemble"]))


SHORT_DL = {"tiny": {"epochs": 2, "patience": 1, "ensemble": 2}}  # quick, paper: as configured


def stage_dl(run: StudyRun, data_dir: Path, table: pd.DataFrame, name: str) -> Path:
    """Train one deep-learning signature on the training cohort; score every cohort.

    A config with an auxiliary task (``aux_components``) takes its targets from the
    training patients' radiomic features (:func:`stage_radiomics`)."""
    from deepnomo.feature_targets import feature_targets
    from deepnomo.signatures import score_cohort, write_signatures
    from deepnomo.train import fit, load_bags, resolve_device

    cfg = dl_config(name, run.preset)
    device = resolve_device(run.device).type  # CUDA (bf16 autocast) and CPU runs differ
    inputs = [data_dir / "cohort.csv", data_dir / "cases.csv"]
    features = None
    if cfg.aux_components:
        features = stage_radiomics(run, data_dir, table) / "reader1.csv"
        inputs.append(features)
    key = hash_config({"config": cfg.to_dict(), "data": hash_files(inputs),
                       "code": _code_hash("train.py", "nn", "losses.py", "feature_targets.py"),
                       "device": device})

    def work(tmp: Path) -> None:
        cases = data_dir / "cases.csv"
        train = load_bags(table, cases, cfg, with_masks=cfg.seg_epochs > 0, only_cohort="train")
        if features is not None:
            train = replace(train, aux=feature_targets(
                pd.read_csv(features, dtype={"patient_id": str}), train.ids, cfg.modalities,
                cfg.aux_components))
        fit(cfg, train, tmp / "model", device=device, progress=True)
        scores, card = score_cohort(tmp / "model", table, cases)
        write_signatures(scores, card, tmp / "signature.csv")

    return run.runner.run(f"dl_{name}", key, work)


def stage_multitask(run: StudyRun, data_dir: Path, table: pd.DataFrame, endpoint: str,
                    model_dirs: list[Path]) -> Path:
    """Prognostic / predictive scores from the per-sequence deep features (cptdn)."""
    import torch

    from deepnomo.train import fit_multitask, load_bags, load_model, predict_embedding

    spec = PIPELINES[run.study].multitask
    key = hash_config({"models": [hash_files([d / "model"]) for d in model_dirs],
                       "spec": spec, "seed": run.seed, "endpoint": endpoint,
                       "code": _code_hash("train.py", "nn", "losses.py")})

    def work(tmp: Path) -> None:
        feats = []
        for d in model_dirs:
            model, cfg, _ = load_model(d / "model")
            bags = load_bags(table, data_dir / "cases.csv", cfg)
            feats.append(predict_embedding(model, bags, tta=cfg.tta))
        x = np.concatenate(feats, axis=1)
        treated = (table["treatment"].astype(str) == spec["treated_level"]).to_numpy(float)
        is_train = (table["cohort"] == "train").to_numpy()
        model, info = fit_multitask(x[is_train], table.loc[is_train, f"{endpoint}_time"]
                                    .to_numpy(float), table.loc[is_train, f"{endpoint}_event"]
                                    .to_numpy(float), treated[is_train], seed=run.seed,
                                    **spec.get("fit", {}))
        with torch.no_grad():
            prog, pred = model(torch.as_tensor(x, dtype=torch.float64))
        pd.DataFrame({"patient_id": table["patient_id"].astype(str),
                      "sig_dl_prognostic": prog.numpy(),
                      "sig_dl_predictive": pred.numpy()}).to_csv(tmp / "signature.csv",
                                                                  index=False)
        (tmp / CARD).write_text(json.dumps(
            {"signatures": ["sig_dl_prognostic", "sig_dl_predictive"],
             "best_epoch": info["best_epoch"], "val_c_index": info["val_c_index"],
             "treated_level": spec["treated_level"], "features": int(x.shape[1]),
             "fit": spec.get("fit", {})}, indent=2))

    return run.runner.run("multitask", key, work)


def assemble_table(run: StudyRun, data_dir: Path, sig_dirs: list[Path]) -> tuple[Path, dict]:
    """Join every signature onto the cohort table; write ``cohort.csv`` + manifest."""
    table, manifest = read_cohort(data_dir / "cohort.csv")
    manifest = dict(manifest)
    sigs = dict(manifest.get("signatures") or {})
    for d in sig_dirs:
        scores = pd.read_csv(d / "signature.csv", dtype={"patient_id": str})
        cols = [c for c in scores.columns if c.startswith("sig_")]
        missing = set(table["patient_id"]) - set(scores["patient_id"])
        if missing:
            raise RuntimeError(f"signature {cols} of stage {d.name} misses patients "
                               f"{sorted(missing)[:3]}")
        table = table.merge(scores[["patient_id", *cols]], on="patient_id", how="left",
                            validate="one_to_one")
        card = json.loads((d / CARD).read_text()) if (d / CARD).exists() else {}
        for c in cols:
            sigs[c] = {"model": d.name, "config_hash": str(card.get("config_hash", "")),
                       "description": str(card.get("description", d.name))}
    manifest["signatures"] = sigs
    path = run.out / "cohort.csv"
    write_cohort(table, manifest, path)
    return path, manifest


def stage_study(run: StudyRun, cohort_csv: Path, design: str | None = None) -> Path:
    """R ``run_study()`` on the cohort table (through rpy2) -> results and report."""
    ro = r_session()
    table, manifest = read_cohort(cohort_csv)
    design_path = design or ro.r(f'system.file("designs", "{run.study}.yaml", '
                                 'package = "deepnomo")')[0]
    if not design_path:
        raise RuntimeError(f"no design file for study '{run.study}' in the R package")
    start = time.perf_counter()
    ro.r("""function(table, design, out_dir, manifest, preset, seed) {
      deepnomo::run_study(table, design, out_dir, manifest = manifest, preset = preset,
                          seed = seed)
      invisible(NULL)
    }""")(to_r(table), design_path, str(run.out), str(cohort_csv.with_name(
        "cohort.manifest.yaml")), run.preset, run.seed)
    run.timings["run_study"] = time.perf_counter() - start
    return run.out / "results.json"


def finish_results(run: StudyRun, synth_dir: Path) -> dict[str, Any]:
    """Add the Python stages' timings and the simulator's oracle C to results.json."""
    path = run.out / "results.json"
    results = json.loads(path.read_text())
    summary = json.loads((synth_dir / "summary.json").read_text())
    results.setdefault("oracle_c", {})
    for cohort, info in summary["cohorts"].items():
        results["oracle_c"].setdefault(cohort, info["oracle_c"])
    timings = dict(results.get("timings") or {})
    timings.update({k: round(v, 3) for k, v in run.timings.items()})
    results["timings"] = timings
    results["preset"], results["seed"] = run.preset, run.seed
    atomic_write_text(path, json.dumps(results, indent=2))
    return results


def reproduce_study(study: str, preset: str, seed: int, out: Path,
                    log: Callable[[str], None] = print, device: str = "auto") -> dict[str, Any]:
    """Run one study design end to end; return its ``results.json`` content.

    ``device`` is where the networks train (``"auto"``: CUDA when present). CPU
    runs repeat exactly; CUDA runs (bf16 autocast, non-deterministic kernels)
    give close but not identical signatures, and their stages are cached apart.
    """
    if study not in PIPELINES:
        raise ValueError(f"unknown study '{study}'; known: {', '.join(STUDIES)}")
    run = StudyRun(study, preset, seed, Path(out) / study, log, device)
    run.out.mkdir(parents=True, exist_ok=True)
    data_dir = stage_synth(run)
    table, manifest = read_cohort(data_dir / "cohort.csv")
    endpoint = next(iter(manifest["endpoints"]))
    pipe = PIPELINES[study]
    sig_dirs: list[Path] = []
    if pipe.radiomics:
        rad = stage_radiomics(run, data_dir, table)
        sig_dirs.append(stage_radiomic_signature(run, rad, table, endpoint))
    dl_dirs = [stage_dl(run, data_dir, table, name) for name in pipe.dl]
    if pipe.multitask:
        sig_dirs.append(stage_multitask(run, data_dir, table, endpoint, dl_dirs))
    else:
        sig_dirs.extend(dl_dirs)
    cohort_csv, _ = assemble_table(run, data_dir, sig_dirs)
    stage_study(run, cohort_csv)
    return finish_results(run, data_dir)


def write_index(out: Path, studies: list[str]) -> Path:
    """Top-level ``index.html`` listing the studies with their headline numbers."""
    dirs = [str(Path(out) / s) for s in studies if (Path(out) / s / "results.json").exists()]
    path = Path(out) / "index.html"
    if not dirs:
        atomic_write_text(path, "<!DOCTYPE html><html><head><meta charset='utf-8'>"
                          "<title>deepnomo</title></head><body><h1>deepnomo</h1>"
                          f"<p>No study finished ({', '.join(studies)}).</p></body></html>\n")
        return path
    ro = r_session()
    ro.r("function(d, f) deepnomo::write_index_html(d, f)")(ro.StrVector(dirs), str(path))
    return path
