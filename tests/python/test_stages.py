"""Cached stages: skip on the same key, rerun on a new one, nothing partial on failure."""

from __future__ import annotations

import pytest

from deepnomo.stages import StageError, StageRunner, hash_config, hash_files


def test_hashes_follow_content(tmp_path) -> None:
    (tmp_path / "a.txt").write_text("one")
    h1 = hash_files([tmp_path])
    (tmp_path / "a.txt").write_text("two")
    assert hash_files([tmp_path]) != h1
    assert hash_config({"a": 1, "b": [1, 2]}) == hash_config({"b": [1, 2], "a": 1})
    assert hash_config({"a": 1}) != hash_config({"a": 2})
    with pytest.raises(FileNotFoundError, match="missing"):
        hash_files([tmp_path / "missing"])


def test_stage_runs_once_per_key_and_cleans_up_failures(tmp_path) -> None:
    calls = []

    def work(out):
        calls.append(1)
        (out / "result.txt").write_text(str(len(calls)))

    runner = StageRunner(tmp_path, "toy", log=lambda s: None)
    out = runner.run("synth", "k1", work)
    assert (out / "result.txt").read_text() == "1"
    runner.run("synth", "k1", work)
    assert len(calls) == 1 and runner.timings["synth"] > 0
    runner.run("synth", "k2", work)
    assert (out / "result.txt").read_text() == "2"

    def broken(out):
        (out / "partial.txt").write_text("half")
        raise ValueError("boom")

    with pytest.raises(StageError, match="study 'toy', stage 'train' failed: boom"):
        runner.run("train", "k1", broken)
    assert not (tmp_path / "train").exists()
    assert not (tmp_path / ".train.tmp").exists()
