"""Auxiliary targets: principal components of handcrafted features; the head learning them."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
import torch

from deepnomo.feature_targets import feature_targets, normal_scores
from deepnomo.nn.mil import collate_bags
from deepnomo.train import TrainConfig, batch_loss, build_model, fit, load_model
from test_train import blob_data, small_config


def _features(n: int = 60, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    """Features of two latent traits: ``t1_*`` columns are monotone (skewed) functions of
    trait 0 (five of them) or trait 1 (two), ``t2_*`` of noise; returns table and traits."""
    rng = np.random.default_rng(seed)
    traits = rng.standard_normal((n, 2))
    cols = {f"t1_vol{k}": np.exp(traits[:, 0] * (1 + 0.2 * k)) + 0.01 * rng.standard_normal(n)
            for k in range(5)}
    cols.update({f"t1_shape{k}": np.tanh(traits[:, 1]) * (k + 1) + 0.01 * rng.standard_normal(n)
                 for k in range(2)})
    cols["t1_const"] = np.ones(n)
    cols.update({f"t2_noise{k}": rng.standard_normal(n) for k in range(3)})
    table = pd.DataFrame({"patient_id": [f"p{i:03d}" for i in range(n)], **cols})
    return table, traits


def test_normal_scores_are_rank_based_and_standard():
    x = np.array([[1.0, 5.0], [100.0, 5.0], [10.0, 1.0], [1000.0, 9.0]])
    z = normal_scores(x)
    # column 0: ranks 1, 3, 2, 4 of n = 4 -> Phi^-1(0.125), Phi^-1(0.625), ...
    np.testing.assert_allclose(z[:, 0], [-1.1503494, 0.3186394, -0.3186394, 1.1503494],
                               atol=1e-6)
    assert z[0, 1] == z[1, 1] == 0.0  # tied middle values share their mean rank (2.5)


def test_targets_recover_both_traits_with_unit_variance_and_equal_weight():
    table, traits = _features()
    ids = table["patient_id"].tolist()[::-1]  # order follows ids, not the table
    y = feature_targets(table, ids, ["t1"], 2)
    assert y.shape == (60, 2) and y.dtype == np.float32
    np.testing.assert_allclose(y.mean(0), 0.0, atol=1e-5)
    np.testing.assert_allclose(y.std(0), 1.0, atol=1e-5)
    t = traits[::-1]
    # the five volume-like features make the first component; the minor trait the second
    assert abs(np.corrcoef(y[:, 0], t[:, 0])[0, 1]) > 0.97
    assert abs(np.corrcoef(y[:, 1], t[:, 1])[0, 1]) > 0.95
    # signs: the most-loading feature loads positively (volume-like features rise with trait 0)
    assert np.corrcoef(y[:, 0], t[:, 0])[0, 1] > 0
    # the t2 columns are not read: adding noise there changes nothing
    noisy = table.assign(t2_noise0=np.arange(60.0))
    np.testing.assert_array_equal(feature_targets(noisy, ids, ["t1"], 2), y)


def test_bad_feature_tables_are_refused():
    table, _ = _features()
    ids = table["patient_id"].tolist()
    with pytest.raises(ValueError, match=r"no row for patient\(s\) \['x9'\]"):
        feature_targets(table, ids + ["x9"], ["t1"], 2)
    with pytest.raises(ValueError, match="no column of modalities"):
        feature_targets(table, ids, ["pet"], 2)
    bad = table.copy()
    bad.loc[4, "t1_shape1"] = np.nan
    with pytest.raises(ValueError, match="patient 'p004', feature 't1_shape1'"):
        feature_targets(bad, ids, ["t1"], 2)
    with pytest.raises(ValueError, match="duplicate patient_id"):
        feature_targets(pd.concat([table, table.iloc[:1]]), ids, ["t1"], 2)
    with pytest.raises(ValueError, match="exceeds what 60 patients and 7 varying features"):
        feature_targets(table, ids, ["t1"], 8)
    with pytest.raises(ValueError, match="n_components: must be >= 1"):
        feature_targets(table, ids, ["t1"], 0)


def test_auxiliary_head_learns_its_targets_and_leaves_scoring_alone(tmp_path):
    data, trait = blob_data(48, seed=0)  # the blob radius (known truth) as the target
    aux = np.stack([trait, -trait], axis=1).astype(np.float32)
    cfg = small_config(name="aux", crop_size=32, batch_size=16, aux_components=2,
                       aux_weight=1.0)
    # the loss is the Cox loss plus the mean squared error of the head
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    idx = list(range(16))
    with torch.no_grad():
        with_aux = batch_loss(model, dataclasses.replace(data, aux=aux), idx, "cox", cfg,
                              torch.device("cpu"))
        plain = batch_loss(model, data, idx, "cox", dataclasses.replace(cfg, aux_components=0),
                           torch.device("cpu"))
    x, bag_index = collate_bags([torch.from_numpy(data.bags[i]) for i in idx])
    with torch.no_grad():
        pred = model(x, bag_index, len(idx)).aux
    mse = float(((pred - torch.from_numpy(aux[idx])) ** 2).mean())
    assert float(with_aux) == pytest.approx(float(plain) + mse, rel=1e-5)

    with pytest.raises(ValueError, match="needs 2 targets per patient .* got none"):
        fit(cfg, data, tmp_path / "none", device="cpu", progress=False)
    with pytest.raises(ValueError, match="needs 2 targets per patient .* got 1"):
        fit(cfg, dataclasses.replace(data, aux=aux[:, :1]), tmp_path / "one", device="cpu",
            progress=False)
    with pytest.raises(ValueError, match="auxiliary targets given, but the config has no"):
        fit(dataclasses.replace(cfg, aux_components=0), dataclasses.replace(data, aux=aux),
            tmp_path / "plain", device="cpu", progress=False)
    fit(cfg, dataclasses.replace(data, aux=aux), tmp_path / "m", device="cpu", progress=False)
    net, loaded, _ = load_model(tmp_path / "m")
    assert loaded.aux_components == 2 and net.aux_head.out_features == 2
    held, held_trait = blob_data(40, seed=1)  # new patients, no targets needed to score them
    x, bag_index = collate_bags([torch.from_numpy(b) for b in held.bags])
    with torch.no_grad():
        out = net(x, bag_index, 40)
    assert np.corrcoef(out.aux[:, 0].numpy(), held_trait)[0, 1] > 0.8
    assert np.corrcoef(out.aux[:, 1].numpy(), held_trait)[0, 1] < -0.8


def test_aux_config_checks_and_unchanged_hash_without_the_task():
    base = TrainConfig()
    assert TrainConfig(aux_weight=3.0).hash() == base.hash()  # no task: keys left out
    assert TrainConfig(aux_components=4).hash() != base.hash()
    with pytest.raises(ValueError, match="config 'aux_components': must be >= 0"):
        TrainConfig(aux_components=-1)
    with pytest.raises(ValueError, match="config 'aux_weight': must be positive"):
        TrainConfig(aux_components=2, aux_weight=0.0)
    data = blob_data(48, seed=0)[0]
    with pytest.raises(ValueError, match=r"aux: targets of shape \(3, 2\) for 48 patients"):
        dataclasses.replace(data, aux=np.zeros((3, 2)))
    aux = np.zeros((48, 2))
    aux[5, 1] = np.nan
    with pytest.raises(ValueError, match=r"aux: NaN or infinite targets for patient\(s\) "
                       r"\['p0_005'\]"):
        dataclasses.replace(data, aux=aux)
