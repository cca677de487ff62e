"""Cached pipeline stages: run once per content hash of inputs + config.

A stage writes into a fresh temporary folder that is renamed into place only
when the stage finishes, so an interrupted run leaves no partial output and a
rerun resumes from the stages that finished.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


def hash_files(paths: Iterable[str | os.PathLike], chunk: int = 1 << 20) -> str:
    """SHA-1 of the contents (and relative names) of files, in sorted order.

    Folders are walked recursively. The digest changes when any byte changes.
    """
    h = hashlib.sha1()
    files: list[tuple[str, Path]] = []
    for p in paths:
        p = Path(p)
        if p.is_dir():
            files.extend((str(f.relative_to(p)), f) for f in sorted(p.rglob("*")) if f.is_file())
        elif p.is_file():
            files.append((p.name, p))
        else:
            raise FileNotFoundError(f"cannot hash missing input {p}")
    for name, f in sorted(files):
        h.update(name.encode())
        with open(f, "rb") as fh:
            while block := fh.read(chunk):
                h.update(block)
    return h.hexdigest()


def hash_config(config: Any) -> str:
    """SHA-1 of a JSON-serialisable configuration (key order does not matter)."""
    return hashlib.sha1(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()


class StageError(RuntimeError):
    """A pipeline stage failed; the message names the study and the stage."""


@dataclass
class StageRunner:
    """Runs named stages of one study into ``root/<stage>``, cached by key.

    Parameters
    ----------
    root : Path
        Folder of the study's stage outputs.
    study : str
        Study name (for messages).
    log : callable
        Receives one progress line per event.
    """

    root: Path
    study: str
    log: Callable[[str], None] = print
    timings: dict[str, float] = field(default_factory=dict)

    def run(self, stage: str, key: str, fn: Callable[[Path], None]) -> Path:
        """Run ``fn(tmp_dir)`` unless ``root/stage`` already holds output for ``key``.

        Returns the stage's output folder.
        """
        out = self.root / stage
        stamp = out / ".stage.json"
        if stamp.is_file() and json.loads(stamp.read_text()).get("key") == key:
            self.log(f"[{self.study}] {stage}: cached")
            self.timings.setdefault(stage, 0.0)
            return out
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self.root / f".{stage}.tmp"
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir()
        self.log(f"[{self.study}] {stage}: running")
        start = time.perf_counter()
        try:
            fn(tmp)
        except Exception as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            raise StageError(f"study '{self.study}', stage '{stage}' failed: {exc}") from exc
        seconds = time.perf_counter() - start
        (tmp / ".stage.json").write_text(json.dumps({"key": key, "seconds": seconds}))
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
        self.timings[stage] = seconds
        self.log(f"[{self.study}] {stage}: done in {seconds:.1f} s")
        return out
