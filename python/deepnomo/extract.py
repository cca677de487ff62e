"""Cohort-scale runs: parallel, resumable, one atomic output folder per case.

:func:`run_tasks` runs ``worker(payload, staging_dir) -> dict`` for every task not
yet finished. The worker writes any files into its private staging folder; the
runner adds ``result.json`` and renames the folder to ``<out_dir>/<key>/`` in one
step, so a case folder either exists complete or not at all. A rerun skips the
finished keys; a crash loses only the cases in flight. Failures are recorded in
``<out_dir>/.failed/<key>.json`` with their reason and retried on the next run.

Tasks run in a process pool (``workers`` processes), in the calling process
(``workers=0``), or on a dask.distributed cluster (``scheduler`` address; the
workers must see ``out_dir`` on a shared file system).

The module also holds the per-case tasks of ``deepnomo preprocess`` and
``deepnomo radiomics``.
"""

from __future__ import annotations

import hashlib
import json
import os
import resource
import shutil
import sys
import time
import uuid
from collections.abc import Callable, Mapping
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import SimpleITK as sitk

from deepnomo.atomic import atomic_write_text

RESULT_FILE = "result.json"
FAILED_DIR = ".failed"
STAGING_DIR = ".staging"

Worker = Callable[[Any, Path], dict]


@dataclass
class RunSummary:
    """Outcome of :func:`run_tasks` (keys by status) and its wall time in seconds."""

    done: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0

    def lines(self, what: str = "cases") -> list[str]:
        """Human-readable summary, one line per failure."""
        out = [f"{what}: {len(self.done)} done, {len(self.skipped)} already done (skipped), "
               f"{len(self.failed)} failed, in {self.seconds:.1f} s"]
        out += [f"  FAILED {k}: {why}" for k, why in sorted(self.failed.items())]
        return out


def write_json_atomic(path: Path, obj: Any) -> None:
    """Write JSON to ``path`` through a temporary file and a rename."""
    atomic_write_text(path, json.dumps(obj, indent=1, default=float))


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, MiB."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (1024 * 1024) if sys.platform == "darwin" else rss / 1024


def is_done(out_dir: Path, key: str, fingerprint: str | None = None) -> bool:
    """Whether ``key`` has a finished case folder (made from inputs with ``fingerprint``)."""
    path = Path(out_dir) / key / RESULT_FILE
    if not path.is_file():
        return False
    return fingerprint is None or load_result(out_dir, key).get("fingerprint") == fingerprint


def fingerprint(paths: list[Path | None], *settings: Any) -> str:
    """Digest of input files (path, size, modification time) and settings.

    A finished case whose fingerprint no longer matches is run again.
    """
    parts = []
    for p in paths:
        if p is None:
            parts.append("-")
            continue
        p = Path(p)
        st = p.stat() if p.exists() else None
        parts.append(f"{p}|{st.st_size if st else -1}|{st.st_mtime_ns if st else -1}")
    parts.append(json.dumps(settings, sort_keys=True, default=str))
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


def load_result(out_dir: Path, key: str) -> dict:
    """The ``result.json`` record of a finished case (``result``, ``seconds``, ``peak_rss_mb``)."""
    return json.loads((Path(out_dir) / key / RESULT_FILE).read_text(encoding="utf-8"))


def run_one(worker: Worker, key: str, payload: Any, out_dir: str,
            fp: str | None = None) -> tuple[str, str | None]:
    """Run one task into a staging folder and publish it; returns (key, failure reason)."""
    out = Path(out_dir)
    staging = out / STAGING_DIR / f"{key}.{uuid.uuid4().hex}"
    staging.mkdir(parents=True)
    t0 = time.perf_counter()
    try:
        result = worker(payload, staging)
        record = {"key": key, "fingerprint": fp, "result": result,
                  "seconds": time.perf_counter() - t0,
                  "peak_rss_mb": peak_rss_mb(), "pid": os.getpid()}
        (staging / RESULT_FILE).write_text(json.dumps(record, indent=1, default=float),
                                           encoding="utf-8")
        target = out / key
        if target.exists():
            shutil.rmtree(target)
        os.replace(staging, target)
    except Exception as exc:  # noqa: BLE001 - any failure of a case is recorded, not raised
        shutil.rmtree(staging, ignore_errors=True)
        msg = " ".join(str(exc).split()) or type(exc).__name__
        return key, f"{type(exc).__name__}: {msg}"
    return key, None


def run_tasks(tasks: Mapping[str, Any], worker: Worker, out_dir: str | Path, workers: int = 1,
              scheduler: str | None = None, prefailed: Mapping[str, str] | None = None,
              progress: bool = True, desc: str = "cases",
              fingerprints: Mapping[str, str] | None = None) -> RunSummary:
    """Run every unfinished task; see the module docstring.

    Parameters
    ----------
    tasks : key -> payload; keys must be file-name safe (:func:`deepnomo.io.safe_key`).
    worker : module-level function ``worker(payload, staging_dir) -> dict`` (JSON-able).
    out_dir : folder of the per-case output folders.
    workers : processes; 0 runs in the calling process.
    scheduler : dask.distributed scheduler address; overrides ``workers``.
    prefailed : key -> reason for tasks known to be unusable (recorded, not run).
    progress : show a tqdm progress bar (on stderr).
    desc : label of the progress bar.
    fingerprints : key -> :func:`fingerprint` of its inputs; a finished case with
        another fingerprint is redone.

    Returns
    -------
    RunSummary
    """
    from tqdm import tqdm

    t0 = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(out / STAGING_DIR, ignore_errors=True)
    summary = RunSummary()
    prefailed = dict(prefailed or {})
    fps = dict(fingerprints or {})
    todo = {}
    for key, payload in tasks.items():
        if key in prefailed:
            continue
        if is_done(out, key, fps.get(key)):
            summary.skipped.append(key)
        else:
            todo[key] = payload
    for key, why in prefailed.items():
        _record(out, summary, key, why)
    bar = tqdm(total=len(todo), desc=desc, disable=not progress or not todo, file=sys.stderr)
    for key, why in _execute(todo, worker, str(out), workers, scheduler, fps):
        _record(out, summary, key, why)
        bar.update(1)
    bar.close()
    summary.seconds = time.perf_counter() - t0
    return summary


def _record(out: Path, summary: RunSummary, key: str, why: str | None) -> None:
    failed = out / FAILED_DIR / f"{key}.json"
    if why is None:
        summary.done.append(key)
        failed.unlink(missing_ok=True)
    else:
        summary.failed[key] = why
        write_json_atomic(failed, {"key": key, "reason": why})


def _execute(todo: Mapping[str, Any], worker: Worker, out: str, workers: int,
             scheduler: str | None, fps: Mapping[str, str]):
    if not todo:
        return
    if scheduler:
        from distributed import Client
        from distributed import as_completed as dask_completed

        with Client(scheduler) as client:
            futs = {client.submit(run_one, worker, k, p, out, fps.get(k), pure=False): k
                    for k, p in todo.items()}
            for fut in dask_completed(list(futs)):
                try:
                    yield fut.result()
                except Exception as exc:  # noqa: BLE001 - a lost worker fails its cases only
                    yield futs[fut], f"dask task failed: {exc}"
        return
    if workers <= 0:
        for k, p in todo.items():
            yield run_one(worker, k, p, out, fps.get(k))
        return
    ctx = get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
        futs = {pool.submit(run_one, worker, k, p, out, fps.get(k)): k for k, p in todo.items()}
        for fut in as_completed(futs):
            try:
                yield fut.result()
            except BrokenProcessPool as exc:
                yield futs[fut], f"worker process died: {exc}"


# ------------------------------------------------------------- case tasks ----

def radiomics_task(payload: tuple, staging: Path) -> dict:
    """``(case, params, bias_order)`` -> ``{patient_id, reader, features}``."""
    from deepnomo.radiomics import extract_case

    case, params, bias_order = payload
    return {"patient_id": case.patient_id, "reader": case.reader,
            "features": extract_case(case, params, bias_order)}


def prepare_task(payload: tuple, staging: Path) -> dict:
    """``(case, config)`` -> checked, reoriented, resampled, N4-corrected images in staging."""
    from deepnomo.io import read_image
    from deepnomo.preprocess import prepare_pair

    case, cfg = payload
    series = []
    for s in case.series:
        try:
            mask = read_image(s.mask) if s.mask is not None else None
            image, mask, steps = prepare_pair(read_image(s.image), mask, cfg)
        except ValueError as exc:
            raise type(exc)(f"{s.modality}: {exc}") from exc
        img_name = f"{s.modality}_image.nii.gz"
        sitk.WriteImage(image, str(staging / img_name), True)
        mask_name = None
        if mask is not None:
            mask_name = f"{s.modality}_mask.nii.gz"
            sitk.WriteImage(mask, str(staging / mask_name), True)
        series.append({"modality": s.modality, "image": img_name, "mask": mask_name,
                       "source_image": str(s.image),
                       "source_mask": str(s.mask) if s.mask else None, "steps": steps})
    return {"patient_id": case.patient_id, "reader": case.reader, "series": series}


def normalize_task(payload: tuple, staging: Path) -> dict:
    """``(prepared_record, prepared_dir, config, standardizers)`` -> final images in staging."""
    from deepnomo.preprocess import CaseError, HistogramStandardizer, normalize

    prep, prep_dir, cfg, stds = payload
    series = []
    for s in prep["series"]:
        if stds and s["modality"] not in stds:
            raise CaseError(f"{s['modality']}: no histogram landmarks for this modality "
                            f"(landmarks exist for {sorted(stds)})")
        std = HistogramStandardizer.from_dict(stds[s["modality"]]) if stds else None
        image = sitk.ReadImage(str(Path(prep_dir) / s["image"]))
        try:
            image, steps = normalize(image, cfg, std)
        except ValueError as exc:
            raise type(exc)(f"{s['modality']}: {exc}") from exc
        sitk.WriteImage(image, str(staging / s["image"]), True)
        if s["mask"]:
            shutil.copyfile(Path(prep_dir) / s["mask"], staging / s["mask"])
        series.append({**s, "steps": s["steps"] + steps})
    record = {"patient_id": prep["patient_id"], "reader": prep["reader"], "series": series}
    (staging / "record.json").write_text(json.dumps(record, indent=1, default=float),
                                         encoding="utf-8")
    return record
