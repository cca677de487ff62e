"""Cross-validation ensembles: folds, standardized mean risk, out-of-fold C, resume, Grad-CAM."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from deepnomo.explain import grad_cam
from deepnomo.metrics import harrell_c
from deepnomo.nn.mil import RiskEnsemble, SurvivalMIL, members
from deepnomo.ridge_cox import fit_ridge_cox
from deepnomo.train import (
    MODEL,
    ConfigMismatchError,
    build_model,
    fit,
    load_model,
    predict_embedding,
    predict_risk,
    split_train_validation,
)
from test_train import blob_data, small_config


def test_folds_partition_the_training_cohort_stratified_by_event():
    data, _ = blob_data(103, seed=11, size=8, k=1)
    cfg = small_config(ensemble=5, seed=3)
    vals = [split_train_validation(data, cfg, k)[1] for k in range(5)]
    every = np.sort(np.concatenate(vals))
    assert np.array_equal(every, np.arange(103))  # each patient validates exactly one member
    events = [int(data.event[v].sum()) for v in vals]
    sizes = [len(v) for v in vals]
    assert max(events) - min(events) <= 1 and max(sizes) - min(sizes) <= 2
    for k, v in enumerate(vals):
        train, val = split_train_validation(data, cfg, k)
        assert np.array_equal(val, v) and np.intersect1d(train, val).size == 0
        assert len(train) + len(val) == 103
    assert not np.array_equal(vals[0], split_train_validation(data, small_config(ensemble=5,
                                                                                seed=4), 0)[1])
    with pytest.raises(ValueError, match=r"member: must be in \[0, 5\)"):
        split_train_validation(data, cfg, 5)
    few = blob_data(30, seed=12, size=8, k=1)[0]
    few.event[:] = 0
    few.event[:6] = 1
    with pytest.raises(ValueError, match="in each of 8 folds"):
        split_train_validation(few, small_config(ensemble=8), 7)



def test_repeated_folds_deal_the_cohort_again_and_average_out_of_fold(tmp_path):
    data, _ = blob_data(60, seed=3, size=16, k=2)
    cfg = small_config(epochs=3, batch_size=12, patience=10, ensemble=2, repeats=2, seed=3)
    assert cfg.members == 4 and len(members(build_model(cfg))) == 4
    vals = [split_train_validation(data, cfg, k)[1] for k in range(4)]
    once = small_config(epochs=3, batch_size=12, patience=10, ensemble=2, seed=3)
    for k in range(2):  # deal 0 is the plain K-fold split, so earlier members are unchanged
        assert np.array_equal(vals[k], split_train_validation(data, once, k)[1])
    for deal in (vals[:2], vals[2:]):  # each deal is a partition: one validation per deal
        assert np.array_equal(np.sort(np.concatenate(deal)), np.arange(60))
    assert not any(np.array_equal(vals[0], v) for v in vals[2:])
    with pytest.raises(ValueError, match=r"member: must be in \[0, 4\)"):
        split_train_validation(data, cfg, 4)
    info = fit(cfg, data, tmp_path, device="cpu", progress=False)
    model, loaded, _ = load_model(tmp_path)
    assert loaded == cfg and len(members(model)) == 4
    assert [r["seed"] for r in info["members"]] == [3, 4, 5, 6]
    # independent recomputation: each patient's held-out standardized risk, mean over deals
    oof = np.zeros(len(data))
    for k in range(4):
        tr, va = split_train_validation(data, cfg, k)
        fitted = predict_risk(model.members[k], data.subset(tr))
        oof[va] += (predict_risk(model.members[k], data.subset(va)) - fitted.mean()) \
            / fitted.std() / 2
    assert info["val_c_index"] == pytest.approx(harrell_c(oof, data.time, data.event), abs=1e-6)
    # the first deal's members are those of the plain two-fold ensemble
    plain = fit(once, data, tmp_path / "once", device="cpu", progress=False)
    assert [r["best_epoch"] for r in info["members"][:2]] == plain["best_epoch"]
    with pytest.raises(ValueError, match="config 'repeats': repeated cross-validation needs"):
        small_config(repeats=2)
    with pytest.raises(ValueError, match="config 'repeats': must be >= 1"):
        small_config(ensemble=2, repeats=0)
    assert small_config(ensemble=2, repeats=1).hash() == small_config(ensemble=2).hash()
    assert small_config(ensemble=2, repeats=2).hash() != small_config(ensemble=2).hash()

def test_ensemble_risk_is_the_mean_of_standardized_members():
    torch.manual_seed(0)
    model = build_model(small_config(ensemble=3)).eval()
    assert isinstance(model, RiskEnsemble) and len(members(model)) == 3
    model.shift.copy_(torch.tensor([0.5, -1.0, 2.0]))
    model.scale.copy_(torch.tensor([2.0, 0.5, 1.5]))
    x = torch.randn(7, 1, 16, 16)
    index = torch.tensor([0, 0, 1, 1, 1, 2, 2])
    out = model(x, index, 3)
    parts = [m(x, index, 3) for m in model.members]
    direct = sum((p.risk - s) / c for p, s, c in
                 zip(parts, model.shift, model.scale, strict=True)) / 3
    torch.testing.assert_close(out.risk, direct)
    assert out.embedding.shape == (3, 3 * parts[0].embedding.shape[1])
    torch.testing.assert_close(out.weights.reshape(-1)[:2].sum(), torch.tensor(1.0))
    with pytest.raises(ValueError, match="at least 2"):
        RiskEnsemble([model.members[0]])


def test_ensemble_learns_known_risk_with_out_of_fold_validation(tmp_path):
    train, _ = blob_data(200, seed=1)
    test, truth = blob_data(150, seed=2)
    cfg = small_config(ensemble=3)
    info = fit(cfg, train, tmp_path, device="cpu", progress=False)
    model, loaded_cfg, saved = load_model(tmp_path)
    assert loaded_cfg == cfg and isinstance(model, RiskEnsemble)
    risk = predict_risk(model, test)
    assert harrell_c(risk, test.time, test.event) >= 0.9 * harrell_c(truth, test.time, test.event)
    # independent recomputation of the locking: shift / scale on each member's own training folds,
    # and the out-of-fold C-index
    oof = np.zeros(len(train))
    for k, record in enumerate(info["members"]):
        tr, va = split_train_validation(train, cfg, k)
        assert [train.ids[i] for i in va] == record["val_ids"]
        fitted = predict_risk(model.members[k], train.subset(tr))
        assert model.shift[k].item() == pytest.approx(fitted.mean(), rel=1e-5)
        assert model.scale[k].item() == pytest.approx(fitted.std(), rel=1e-5)
        oof[va] = (predict_risk(model.members[k], train.subset(va)) - fitted.mean()) / fitted.std()
        assert record["seed"] == cfg.seed + k and record["best_epoch"] >= cfg.min_epochs
    assert saved["val_c_index"] == pytest.approx(harrell_c(oof, train.time, train.event), abs=1e-6)
    assert info["best_epoch"] == [r["best_epoch"] for r in info["members"]]
    assert sorted({h["member"] for h in info["history"]}) == [0, 1, 2]
    # members differ (different folds and seeds)
    a, b = (dict(m.named_parameters())["risk_head.weight"] for m in model.members[:2])
    assert not torch.equal(a, b)


def expected_head(z: np.ndarray, time: np.ndarray, event: np.ndarray,
                  penalty: float) -> tuple[np.ndarray, float]:
    """Head weight and bias recomputed independently: ridge Cox on the standardized pooled
    features ``z`` (n, p), mapped back to raw feature units."""
    mu, sd = z.mean(0), z.std(0)
    weight = fit_ridge_cox((z - mu) / sd, time, event, penalty) / sd
    return weight, float(-(weight * mu).sum())


def test_head_refit_is_a_ridge_cox_on_each_members_training_folds(tmp_path):
    train, _ = blob_data(120, seed=5, size=16, k=2)
    test, truth = blob_data(150, seed=6, size=16, k=2)
    base = small_config(epochs=4, ensemble=3, tta=True)
    fit(base, train, tmp_path / "plain", device="cpu", progress=False)
    cfg = small_config(epochs=4, ensemble=3, tta=True, head_ridge=0.3)
    info = fit(cfg, train, tmp_path / "refit", device="cpu", progress=False)
    plain, _, _ = load_model(tmp_path / "plain")
    model, _, _ = load_model(tmp_path / "refit")
    oof = np.zeros(len(train))
    for k in range(3):
        old, new = plain.members[k], model.members[k]
        for name, value in old.state_dict().items():  # the same network: only the head differs
            same = torch.equal(value, new.state_dict()[name])
            assert same != name.startswith("risk_head."), name
        # independent recomputation: standardized pooled features (mean over the eight
        # views) of the member's own training folds, ridge Cox, head in raw feature units
        tr, va = split_train_validation(train, cfg, k)
        z = predict_embedding(new, train.subset(tr), tta=True)
        weight, bias = expected_head(z, train.time[tr], train.event[tr], 0.3)
        np.testing.assert_allclose(new.risk_head.weight.detach().numpy().ravel(), weight,
                                   rtol=1e-4, atol=1e-5)
        assert new.risk_head.bias.item() == pytest.approx(bias, abs=1e-4)
        fitted = predict_risk(new, train.subset(tr), tta=True)
        np.testing.assert_allclose(fitted, (z - z.mean(0)) @ weight, atol=1e-4)
        oof[va] = (predict_risk(new, train.subset(va), tta=True) - fitted.mean()) / fitted.std()
    # the card's validation C is out of fold for the refit heads too
    assert info["val_c_index"] == pytest.approx(harrell_c(oof, train.time, train.event), abs=1e-6)
    c_refit = harrell_c(predict_risk(model, test, tta=True), test.time, test.event)
    assert c_refit >= 0.9 * harrell_c(truth, test.time, test.event)
    # a single network: its head is refit on its training share, and the card's validation C
    # is the refit model's
    single = small_config(epochs=4, head_ridge=0.3)
    info = fit(single, train, tmp_path / "single", device="cpu", progress=False)
    net, _, _ = load_model(tmp_path / "single")
    ids = {pid: i for i, pid in enumerate(train.ids)}
    tr = train.subset([ids[p] for p in info["train_ids"]])
    va = train.subset([ids[p] for p in info["val_ids"]])
    weight, _ = expected_head(predict_embedding(net, tr), tr.time, tr.event, 0.3)
    np.testing.assert_allclose(net.risk_head.weight.detach().numpy().ravel(), weight,
                               rtol=1e-4, atol=1e-5)
    assert info["val_c_index"] == pytest.approx(harrell_c(predict_risk(net, va), va.time,
                                                          va.event), abs=1e-9)
    with pytest.raises(ValueError, match="config 'head_ridge': must be >= 0"):
        small_config(head_ridge=-0.1)


def test_ensemble_resume_skips_finished_members_and_matches(tmp_path):
    data, _ = blob_data(48, seed=3, size=16, k=2)
    cfg = small_config(epochs=3, batch_size=12, patience=10, ensemble=2)
    fit(cfg, data, tmp_path / "full", device="cpu", progress=False)
    seen = []

    def interrupt(record):
        seen.append((record["member"], record["epoch"]))
        if record["member"] == 1 and record["epoch"] == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fit(cfg, data, tmp_path / "cut", device="cpu", progress=False, callback=interrupt)
    assert not (tmp_path / "cut" / MODEL).exists()
    seen.clear()
    fit(cfg, data, tmp_path / "cut", device="cpu", progress=False, resume=True,
        callback=seen.append)
    assert [(r["member"], r["epoch"]) for r in seen] == [(1, 3)]  # member 0 is not retrained
    full = torch.load(tmp_path / "full" / MODEL, weights_only=False)
    cut = torch.load(tmp_path / "cut" / MODEL, weights_only=False)
    for key, value in full["model"].items():
        assert torch.equal(value, cut["model"][key]), key
    other = small_config(epochs=3, batch_size=12, patience=10, ensemble=3)
    with pytest.raises(ConfigMismatchError, match="differing keys"):
        fit(other, data, tmp_path / "cut", device="cpu", progress=False, resume=True)


def test_grad_cam_of_an_ensemble_of_identical_members_equals_the_member():
    torch.manual_seed(0)
    single = build_model(small_config()).eval()
    twin = RiskEnsemble([single, single]).eval()  # shift 0, scale 1: same risk
    x = torch.randn(3, 1, 16, 16)
    cam_one, w_one = grad_cam(single, x)
    cam_two, w_two = grad_cam(twin, x)
    assert cam_one.max() > 0
    torch.testing.assert_close(cam_two, cam_one)
    torch.testing.assert_close(w_two, w_one)
    assert isinstance(members(single)[0], SurvivalMIL)


def test_test_time_augmentation_averages_the_eight_in_plane_views():
    from deepnomo.train import dihedral_views, predict_embedding

    x = torch.arange(2 * 1 * 3 * 3, dtype=torch.float32).reshape(2, 1, 3, 3)
    views = dihedral_views(x)
    assert len({tuple(v[0, 0].flatten().tolist()) for v in views}) == 8  # all distinct
    assert all(torch.equal(v.sum(dim=(-2, -1)), x.sum(dim=(-2, -1))) for v in views)
    with pytest.raises(ValueError, match="square planes"):
        dihedral_views(torch.zeros(1, 1, 3, 4))
    data, _ = blob_data(12, seed=13, size=16, k=2)
    torch.manual_seed(0)
    model = build_model(small_config()).eval()
    tta = predict_risk(model, data, tta=True)
    tta_features = predict_embedding(model, data, tta=True)
    by_view, features_by_view = [], []
    for k in range(8):
        turned = [np.ascontiguousarray(dihedral_views(torch.from_numpy(b))[k].numpy())
                  for b in data.bags]
        view = type(data)(data.ids, turned, data.time, data.event)
        by_view.append(predict_risk(model, view))
        features_by_view.append(predict_embedding(model, view))
    np.testing.assert_allclose(tta, np.mean(by_view, axis=0), rtol=1e-5, atol=1e-6)
    # the features that feed the multi-task network are averaged the same way
    np.testing.assert_allclose(tta_features, np.mean(features_by_view, axis=0), rtol=1e-5,
                               atol=1e-6)
    assert not np.allclose(features_by_view[0], features_by_view[1])
    assert not np.allclose(by_view[0], by_view[1])  # an untrained net is not rotation-invariant
    # a rotation-invariant input (a centred disc) gives the same risk with or without TTA
    yy, xx = np.mgrid[:16, :16]
    disc = (((yy - 7.5) ** 2 + (xx - 7.5) ** 2) < 20).astype(np.float32)[None, None]
    same = type(data)(["a"], [disc], np.array([5.0]), np.array([1.0]))
    assert predict_risk(model, same, tta=True) == pytest.approx(predict_risk(model, same),
                                                               abs=1e-5)
