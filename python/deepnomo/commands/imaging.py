"""``deepnomo preprocess`` and ``deepnomo radiomics``: cohort-scale imaging commands."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import SimpleITK as sitk
import typer

from deepnomo.atomic import atomic_write
from deepnomo.extract import (
    RunSummary,
    fingerprint,
    load_result,
    normalize_task,
    prepare_task,
    radiomics_task,
    run_tasks,
    write_json_atomic,
)
from deepnomo.io import Case, check_manifest, manifest_cases, read_manifest
from deepnomo.preprocess import HistogramStandardizer, load_config
from deepnomo.radiomics import (
    feature_count,
    feature_tables,
    params_digest,
    params_file,
    table_paths,
)

STANDARDIZER_FILE = "histogram_standardizer.json"


def _prefailed(df: pd.DataFrame, cases: list, require_mask: bool) -> dict[str, str]:
    bad = check_manifest(df, require_mask=require_mask)
    return {c.key: bad[c.patient_id] for c in cases if c.patient_id in bad}


def _fingerprint(case: Case, *settings) -> str:
    paths = [p for s in case.series for p in (s.image, s.mask)]
    return fingerprint(paths, [s.modality for s in case.series], *settings)


def run_preprocess(cases: Path, config: Path | dict | None, out: Path, workers: int = 1,
                   scheduler: str | None = None, progress: bool = True) -> RunSummary:
    """Preprocess every case of a manifest into ``out/cases/<key>/``.

    Stage 1 checks, reorients, resamples and N4-corrects each case
    (``out/.work/prepared``); if the configuration asks to fit histogram
    standardisation, one :class:`~deepnomo.preprocess.HistogramStandardizer` per
    modality is learned on the prepared images of this manifest and saved as
    ``out/histogram_standardizer.json``; stage 2 normalises intensities. The output
    manifest ``out/cases.csv`` lists the finished cases (paths relative to ``out``).
    """
    cfg = load_config(config)
    df = read_manifest(cases)
    case_list = manifest_cases(df)
    prefailed = _prefailed(df, case_list, require_mask=False)
    prep_dir = out / ".work" / "prepared"
    fps = {c.key: _fingerprint(c, cfg) for c in case_list}
    s1 = run_tasks({c.key: (c, cfg) for c in case_list}, prepare_task, prep_dir, workers,
                   scheduler, prefailed, progress, desc="prepare", fingerprints=fps)
    ok = [c.key for c in case_list if c.key in set(s1.done) | set(s1.skipped)]
    records = {k: load_result(prep_dir, k)["result"] for k in ok}
    stds: dict[str, dict] | None = None
    if cfg["normalize"] == "histogram":
        hcfg = dict(cfg["histogram"])
        if hcfg.get("landmarks"):
            stds = json.loads(Path(hcfg["landmarks"]).read_text(encoding="utf-8"))
        elif hcfg.get("fit"):
            stds = _fit_standardizers(records, prep_dir, hcfg)
            write_json_atomic(out / STANDARDIZER_FILE, stds)
        else:
            raise ValueError("config 'histogram': give 'landmarks: FILE' or 'fit: true'")
    case_dir = out / "cases"
    s2 = run_tasks({k: (records[k], str(prep_dir / k), cfg, stds) for k in ok}, normalize_task,
                   case_dir, workers, scheduler, s1.failed, progress, desc="normalize",
                   fingerprints={k: fingerprint([], fps[k], stds) for k in ok})
    rows = []
    for c in case_list:
        if c.key in s2.failed or not (case_dir / c.key / "record.json").is_file():
            continue
        rec = load_result(case_dir, c.key)["result"]
        for s in rec["series"]:
            rows.append({"patient_id": c.patient_id, "modality": s["modality"],
                         "image": f"cases/{c.key}/{s['image']}",
                         "mask": f"cases/{c.key}/{s['mask']}" if s["mask"] else "",
                         "reader": c.reader})
    manifest = pd.DataFrame(rows, columns=["patient_id", "modality", "image", "mask", "reader"])
    atomic_write(out / "cases.csv", lambda tmp: manifest.to_csv(tmp, index=False))
    return RunSummary(done=s2.done, skipped=s2.skipped, failed=s2.failed,
                      seconds=s1.seconds + s2.seconds)


def _fit_standardizers(records: dict, prep_dir: Path, hcfg: dict) -> dict[str, dict]:
    images: dict[str, list] = {}
    for key, rec in records.items():
        for s in rec["series"]:
            images.setdefault(s["modality"], []).append(
                sitk.ReadImage(str(prep_dir / key / s["image"])))
    kw = {k: hcfg[k] for k in ("percentiles", "scale_min", "scale_max") if k in hcfg}
    return {m: HistogramStandardizer(**kw).fit(imgs).to_dict() for m, imgs in images.items()}


def run_radiomics(cases: Path, params: str | Path, out: Path, workers: int = 1,
                  scheduler: str | None = None, progress: bool = True, bias_order: int = 0,
                  ) -> tuple[RunSummary, dict[str, Path], dict[str, pd.DataFrame]]:
    """Extract features for every case; write one wide table per reader.

    ``bias_order`` 1-3 divides each image by a polynomial bias field fitted around
    its ROI first (:func:`deepnomo.radiomics.extract_series`). Finished cases are
    kept in ``<out folder>/.<out stem>.work-<params digest>[-bias<order>]/`` so a
    rerun with the same settings resumes.

    Returns
    -------
    summary, reader -> table path, reader -> table
    """
    if bias_order not in (0, 1, 2, 3):
        raise ValueError(f"bias_order: expected 0 (off) to 3, got {bias_order}")
    df = read_manifest(cases)
    case_list = manifest_cases(df)
    prefailed = _prefailed(df, case_list, require_mask=True)
    pfile = params_file(params)
    work = out.parent / (f".{out.stem}.work-{params_digest(pfile)}"
                         + (f"-bias{bias_order}" if bias_order else ""))
    tasks = {c.key: (c, str(pfile), bias_order) for c in case_list}
    summary = run_tasks(tasks, radiomics_task, work, workers, scheduler, prefailed, progress,
                        desc="radiomics",
                        fingerprints={c.key: _fingerprint(c) for c in case_list})
    finished = set(summary.done) | set(summary.skipped)
    rows = [load_result(work, c.key)["result"] for c in case_list if c.key in finished]
    tables = feature_tables(rows) if rows else {}
    paths = table_paths(out, sorted(tables)) if tables else {}
    for reader, table in tables.items():
        atomic_write(paths[reader], lambda tmp, t=table: t.to_csv(tmp, index=False))
    return summary, paths, tables


def _finish(summary: RunSummary, allow_failures: bool, what: str) -> None:
    for line in summary.lines(what):
        typer.echo(line, err=bool(summary.failed) and line.startswith("  FAILED"))
    if summary.failed and not allow_failures:
        raise typer.Exit(code=1)


def register(app: typer.Typer) -> None:
    @app.command("preprocess")
    def preprocess(
        cases: Path = typer.Option(..., help="case manifest CSV (patient_id, modality, image, "
                                   "mask, reader; paths relative to its folder)"),
        config: Path = typer.Option(None, help="preprocessing YAML (see "
                                    "deepnomo.preprocess.load_config)"),
        out: Path = typer.Option(..., help="output folder"),
        workers: int = typer.Option(1, help="worker processes (0: in this process)"),
        scheduler: str = typer.Option(None, help="dask.distributed scheduler address"),
        allow_failures: bool = typer.Option(False, help="exit 0 even if some cases failed"),
    ) -> None:
        """Check, reorient, resample, N4-correct and normalise every case."""
        summary = run_preprocess(cases, config, out, workers, scheduler)
        typer.echo(f"output manifest: {out / 'cases.csv'}")
        _finish(summary, allow_failures, "preprocess")

    @app.command("radiomics")
    def radiomics(
        cases: Path = typer.Option(..., help="case manifest CSV"),
        params: str = typer.Option("multiscale", help="pyradiomics YAML, or a preset: "
                                   "multiscale | stage2 | ibsi_phantom"),
        out: Path = typer.Option(..., help="feature table CSV (one per reader: "
                                 "<stem>_<reader>.csv when there are several)"),
        workers: int = typer.Option(1, help="worker processes (0: in this process)"),
        scheduler: str = typer.Option(None, help="dask.distributed scheduler address"),
        allow_failures: bool = typer.Option(False, help="exit 0 even if some cases failed"),
        bias_order: int = typer.Option(0, help="divide each image by a polynomial bias field "
                                       "of this degree (1-3) fitted around its ROI; 0: off"),
    ) -> None:
        """pyradiomics features, one wide row per patient, modality-prefixed columns."""
        summary, paths, tables = run_radiomics(cases, params, out, workers, scheduler,
                                               bias_order=bias_order)
        for reader, path in paths.items():
            mods = list(dict.fromkeys(read_manifest(cases)["modality"]))
            per = ", ".join(f"{m}: {feature_count(tables[reader], m)}" for m in mods)
            typer.echo(f"reader {reader}: {len(tables[reader])} patients x "
                       f"{feature_count(tables[reader])} features ({per}) -> {path}")
        _finish(summary, allow_failures, "radiomics")
