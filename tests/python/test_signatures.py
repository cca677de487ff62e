"""`deepnomo train` / `deepnomo score` end to end on a pathology-tile cohort with known risk."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image
from typer.testing import CliRunner

from deepnomo.bridge.schema import write_cohort
from deepnomo.cli import app
from deepnomo.metrics import harrell_c
from deepnomo.signatures import card_path_for, signature_column
from deepnomo.train import BagData, TrainConfig, load_bags
from test_train import SMALL_NET, blob_data


@pytest.fixture(scope="module")
def tile_study(tmp_path_factory):
    """cohort.csv + manifest, cases.csv and PNG tiles: train 200, test 100 patients."""
    root = tmp_path_factory.mktemp("study")
    parts = [("train", *blob_data(200, seed=11)), ("external_test", *blob_data(100, seed=12))]
    rows, cases = [], []
    for label, data, eta in parts:
        for pid, bag, t, e, truth in zip(data.ids, data.bags, data.time, data.event, eta,
                                         strict=True):
            rows.append({"patient_id": pid, "cohort": label, "os_time": t, "os_event": int(e),
                         "truth_risk": truth})
            for j, inst in enumerate(bag):
                gray = np.clip((inst[0] + 2.0) * 60.0, 0, 255).astype(np.uint8)
                name = f"tiles/{pid}_{j}.png"
                (root / "tiles").mkdir(exist_ok=True)
                Image.fromarray(np.stack([gray] * 3, -1)).save(root / name)
                cases.append({"patient_id": pid, "modality": "HE", "image": name, "mask": "NA",
                              "reader": 1})
    cohort = pd.DataFrame(rows)
    write_cohort(cohort, {"study": "tiles", "endpoints": {"os": {"description": "OS"}}},
                 root / "cohort.csv")
    pd.DataFrame(cases).to_csv(root / "cases.csv", index=False)
    cfg = dict(name="tiles", endpoint="os", input="tiles", modalities=["HE"], crop_size=32,
               epochs=6, batch_size=32, lr=3e-3, dropout=0.1, **SMALL_NET)
    (root / "config.yaml").write_text(yaml.safe_dump(cfg))
    return root, cohort


def _invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def test_train_and_score_cli_end_to_end(tile_study, tmp_path):
    root, cohort = tile_study
    model_dir = tmp_path / "model"
    res = _invoke("train", "--cohort", root / "cohort.csv", "--cases", root / "cases.csv",
                  "--config", root / "config.yaml", "--out", model_dir, "--device", "auto",
                  "--quiet")
    assert res.exit_code == 0, res.output
    out = tmp_path / "sig.csv"
    res = _invoke("score", "--model", model_dir, "--cohort", root / "cohort.csv",
                  "--cases", root / "cases.csv", "--out", out, "--heatmaps", tmp_path / "cam")
    assert res.exit_code == 0, res.output
    assert len(list((tmp_path / "cam").glob("*.png"))) == len(cohort)
    table = pd.read_csv(out, dtype={"patient_id": str})
    col = signature_column("tiles")
    assert list(table.columns) == ["patient_id", col]
    assert table["patient_id"].tolist() == cohort["patient_id"].tolist()
    card = json.loads(card_path_for(out).read_text())
    test = cohort["cohort"] == "external_test"
    c_test = harrell_c(table.loc[test, col], cohort.loc[test, "os_time"],
                               cohort.loc[test, "os_event"])
    oracle = harrell_c(cohort.loc[test, "truth_risk"], cohort.loc[test, "os_time"],
                               cohort.loc[test, "os_event"])
    assert c_test >= 0.9 * oracle
    assert card["metrics"]["external_test"]["c_index"] == pytest.approx(c_test, abs=1e-12)
    assert card["metrics"]["external_test"]["n"] == 100
    assert card["metrics"]["train"]["events"] == int(cohort.loc[~test, "os_event"].sum())
    # the data hash covers the training cohort only, as loaded for training
    cfg = TrainConfig.from_dict(card["config"])
    train_bags = load_bags(cohort, root / "cases.csv", cfg, only_cohort="train")
    assert card["data_hash"] == train_bags.digest()
    assert card["seed"] == 0 and card["config_hash"] == cfg.hash()
    assert (card["train_device"], card["train_amp"], card["score_device"]) == ("cpu", False, "cpu")
    # scoring is deterministic: a second run writes the same table
    res = _invoke("score", "--model", model_dir, "--cohort", root / "cohort.csv",
                  "--cases", root / "cases.csv", "--out", tmp_path / "again.csv")
    assert res.exit_code == 0
    assert (tmp_path / "again.csv").read_text() == out.read_text()


def test_bad_input_gives_clear_errors_and_no_table(tile_study, tmp_path):
    root, cohort = tile_study
    out = tmp_path / "sig.csv"
    res = _invoke("score", "--model", tmp_path / "nomodel", "--cohort", root / "cohort.csv",
                  "--cases", root / "cases.csv", "--out", out)
    assert res.exit_code == 1 and "training did not finish" in res.output
    # cases that name patients absent from the cohort table
    cases = pd.read_csv(root / "cases.csv")
    cases.loc[0, "patient_id"] = "stranger"
    cases.to_csv(tmp_path / "cases.csv", index=False)
    res = _invoke("train", "--cohort", root / "cohort.csv", "--cases", tmp_path / "cases.csv",
                  "--config", root / "config.yaml", "--out", tmp_path / "m")
    assert res.exit_code == 1 and "not in the cohort table: ['stranger']" in res.output
    assert not (tmp_path / "m" / "model.pt").exists()
    # a training cohort without events
    flat = cohort.assign(os_event=0)
    write_cohort(flat, {"endpoints": {"os": {"description": "OS"}}}, tmp_path / "flat.csv")
    res = _invoke("train", "--cohort", tmp_path / "flat.csv", "--cases", root / "cases.csv",
                  "--config", root / "config.yaml", "--out", tmp_path / "m")
    assert res.exit_code == 1 and "too few events" in res.output
    bad_cfg = tmp_path / "bad.yaml"
    bad_cfg.write_text("name: x\nepochs: 0\n")
    res = _invoke("train", "--cohort", root / "cohort.csv", "--cases", root / "cases.csv",
                  "--config", bad_cfg, "--out", tmp_path / "m")
    assert res.exit_code == 1 and "'epochs': must be >= 1" in res.output
    assert not out.exists() and not card_path_for(out).exists()


def test_train_cli_reads_auxiliary_targets_from_a_feature_table(tile_study, tmp_path):
    root, cohort = tile_study
    cfg = yaml.safe_load((root / "config.yaml").read_text())
    (tmp_path / "aux.yaml").write_text(yaml.safe_dump({**cfg, "epochs": 1, "aux_components": 2}))
    rng = np.random.default_rng(0)
    truth = cohort["truth_risk"].to_numpy()
    feats = pd.DataFrame({"patient_id": cohort["patient_id"], "HE_a": np.exp(truth),
                          "HE_b": truth + 0.1 * rng.standard_normal(len(cohort)),
                          "HE_c": rng.standard_normal(len(cohort))})
    feats.to_csv(tmp_path / "feats.csv", index=False)
    args = ["train", "--cohort", root / "cohort.csv", "--cases", root / "cases.csv", "--quiet"]
    res = _invoke(*args, "--config", tmp_path / "aux.yaml", "--out", tmp_path / "m0")
    assert res.exit_code == 1 and "(aux_components 2) needs a feature table" in res.output
    res = _invoke(*args, "--config", root / "config.yaml", "--out", tmp_path / "m0",
                  "--aux-features", tmp_path / "feats.csv")
    assert res.exit_code == 1 and "given, but the config has no auxiliary task" in res.output
    first = cohort.loc[cohort["cohort"] == "train", "patient_id"].iloc[0]
    feats[feats["patient_id"] != first].to_csv(tmp_path / "short.csv", index=False)
    res = _invoke(*args, "--config", tmp_path / "aux.yaml", "--out", tmp_path / "m0",
                  "--aux-features", tmp_path / "short.csv")
    assert res.exit_code == 1 and f"no row for patient(s) ['{first}']" in res.output
    assert not (tmp_path / "m0" / "model.pt").exists()
    res = _invoke(*args, "--config", tmp_path / "aux.yaml", "--out", tmp_path / "m1",
                  "--aux-features", tmp_path / "feats.csv")
    assert res.exit_code == 0, res.output
    from deepnomo.feature_targets import feature_targets
    from deepnomo.train import load_model

    net, loaded, info = load_model(tmp_path / "m1")
    assert net.aux_head.out_features == 2
    # the stored data hash covers the targets: those of the training patients, as computed
    train = load_bags(cohort, root / "cases.csv", loaded, only_cohort="train")
    aux = feature_targets(feats, train.ids, ["HE"], 2)
    assert info["data_hash"] == BagData(train.ids, train.bags, train.time, train.event,
                                        aux=aux).digest() != train.digest()


def test_signature_names_are_checked():
    assert signature_column("t3n1_t1") == "sig_dl_t3n1_t1"
    with pytest.raises(ValueError, match="letters, digits"):
        signature_column("bad name")
    with pytest.raises(ValueError, match="time"):
        BagData(["a"], [np.zeros((1, 1, 4, 4), np.float32)], [np.nan], [1])


def test_torchrun_two_process_training(tile_study, tmp_path):
    import os
    import subprocess
    import sys

    import torch

    from deepnomo.train import load_model, predict_risk

    root, cohort = tile_study
    cfg = yaml.safe_load((root / "config.yaml").read_text())
    cfg.update(epochs=2)
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    env = dict(os.environ, OMP_NUM_THREADS="1")
    res = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                          "--nproc_per_node=2", "-m", "deepnomo", "train", "--cohort",
                          str(root / "cohort.csv"), "--cases", str(root / "cases.csv"),
                          "--config", str(tmp_path / "c.yaml"), "--out", str(tmp_path / "m"),
                          "--device", "cpu"], capture_output=True, encoding="utf-8",
                         errors="replace", env=env,
                         timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.count("locked model") == 1  # one process reports and writes
    model, loaded_cfg, info = load_model(tmp_path / "m")
    assert [h["epoch"] for h in info["history"]] == [1, 2]
    train = load_bags(cohort, root / "cases.csv", loaded_cfg, only_cohort="train")
    val = train.subset([train.ids.index(pid) for pid in info["val_ids"]])
    c = harrell_c(predict_risk(model, val), val.time, val.event)
    assert c == pytest.approx(info["val_c_index"], abs=1e-9)
    assert torch.load(tmp_path / "m" / "last.pt", weights_only=False)["epoch"] == 2
