"""CUDA paths: the same numbers as on CPU, bf16 autocast, training, checkpoints across devices.

Skipped where no CUDA device is present (run them on a GPU machine:
``pytest tests/python/test_cuda.py``).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from deepnomo.explain import grad_cam
from deepnomo.losses import cox_ph_loss
from deepnomo.metrics import harrell_c
from deepnomo.nn.backbones import build_backbone
from deepnomo.train import (
    CHECKPOINT,
    augment,
    fit,
    load_model,
    predict_embedding,
    predict_risk,
    split_train_validation,
)
from test_backbones import SMALL
from test_ensemble import expected_head
from test_train import blob_data, small_config

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
CUDA = torch.device("cuda")


@pytest.fixture(autouse=True)
def exact_fp32():
    """TF32 off, so that float32 convolutions and products on CUDA are IEEE float32."""
    old = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


@pytest.mark.parametrize("ties", ["breslow", "efron"])
def test_cox_loss_and_gradient_on_cuda_equal_cpu(ties):
    rng = np.random.default_rng(0)
    risk = torch.tensor(rng.normal(size=300), requires_grad=True)
    time = torch.tensor(rng.integers(1, 40, 300).astype(float))  # many tied times
    event = torch.tensor((rng.uniform(size=300) < 0.6).astype(float))
    cpu = cox_ph_loss(risk, time, event, ties=ties)
    (g_cpu,) = torch.autograd.grad(cpu, risk)
    risk_gpu = risk.detach().to(CUDA).requires_grad_()
    gpu = cox_ph_loss(risk_gpu, time.to(CUDA), event.to(CUDA), ties=ties)
    (g_gpu,) = torch.autograd.grad(gpu, risk_gpu)
    assert float(gpu.detach()) == pytest.approx(float(cpu.detach()), abs=1e-12)
    torch.testing.assert_close(g_gpu.cpu(), g_cpu, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", sorted(SMALL))
def test_backbones_on_cuda_equal_cpu_and_bf16_stays_close(name):
    torch.manual_seed(0)
    kwargs, shape, _ = SMALL[name]
    model = build_backbone(name, **kwargs).eval()
    x = torch.randn(16, *shape[1:])
    with torch.no_grad():
        ref = model(x)
        model.to(CUDA)
        gpu = model(x.to(CUDA)).cpu()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            half = model(x.to(CUDA)).float().cpu()
    torch.testing.assert_close(gpu, ref, rtol=1e-4, atol=1e-5)
    # bf16 keeps 8 bits of mantissa: on CPU autocast these nets land within 0.8 % of the
    # largest feature
    assert float((half - ref).abs().max()) < 0.03 * float(ref.abs().max())


def test_augmentation_on_cuda_draws_the_same_transforms():
    cfg = small_config(flip=True, rotate_deg=15.0, intensity=0.1, blur=1.0)
    x = torch.randn(6, 1, 24, 24)
    cpu = augment(x, cfg, torch.Generator().manual_seed(3))
    gpu = augment(x.to(CUDA), cfg, torch.Generator().manual_seed(3))
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=1e-4, atol=1e-5)


def test_training_on_cuda_with_amp_learns_the_blob_risk(tmp_path):
    train, _ = blob_data(200, seed=1)
    test, truth = blob_data(150, seed=2)
    cfg = small_config(amp=True)
    info = fit(cfg, train, tmp_path, device="cuda", progress=False)
    assert info["device"] == "cuda" and info["amp"]
    model, _, _ = load_model(tmp_path)  # the locked model loads on CPU
    risk_cpu = predict_risk(model, test)
    risk_gpu = predict_risk(model.to(CUDA), test, CUDA)  # bf16 autocast on CUDA
    oracle = harrell_c(truth, test.time, test.event)
    assert harrell_c(risk_gpu, test.time, test.event) >= 0.9 * oracle
    assert np.corrcoef(risk_cpu, risk_gpu)[0, 1] > 0.999
    emb_gpu = predict_embedding(model, test, CUDA)  # full precision on both devices
    emb_cpu = predict_embedding(model.cpu(), test)
    np.testing.assert_allclose(emb_gpu, emb_cpu, rtol=1e-4, atol=1e-5)


def test_head_refit_on_cuda_is_a_ridge_cox_on_each_members_training_folds(tmp_path):
    train, _ = blob_data(120, seed=5, size=16, k=2)
    cfg = small_config(epochs=3, ensemble=2, tta=True, head_ridge=0.3, amp=True)
    fit(cfg, train, tmp_path, device="cuda", progress=False)
    model, _, _ = load_model(tmp_path)
    for k, member in enumerate(model.members):
        # the refit's features come from the full-precision pass on the training device
        tr, _ = split_train_validation(train, cfg, k)
        z = predict_embedding(member.to(CUDA), train.subset(tr), CUDA, tta=True)
        weight, bias = expected_head(z, train.time[tr], train.event[tr], 0.3)
        head = member.risk_head
        np.testing.assert_allclose(head.weight.detach().cpu().numpy().ravel(), weight,
                                   rtol=1e-3, atol=1e-4)
        assert head.bias.item() == pytest.approx(bias, abs=1e-3)


def test_checkpoint_moves_between_cuda_and_cpu(tmp_path):
    data, _ = blob_data(48, seed=3, size=16, k=2)
    cfg = small_config(epochs=4, batch_size=12, patience=10)

    def interrupt(record):
        if record["epoch"] == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fit(cfg, data, tmp_path, device="cuda", progress=False, callback=interrupt)
    assert torch.load(tmp_path / CHECKPOINT, weights_only=False)["epoch"] == 2
    info = fit(cfg, data, tmp_path, device="cpu", progress=False, resume=True)
    assert [h["epoch"] for h in info["history"]] == [1, 2, 3, 4]
    model, _, _ = load_model(tmp_path)
    assert np.isfinite(predict_risk(model, data)).all()


def test_grad_cam_on_cuda_equals_cpu(tmp_path):
    data, _ = blob_data(40, seed=4, size=16, k=3)
    fit(small_config(epochs=2, batch_size=20), data, tmp_path, device="cpu", progress=False)
    model, _, _ = load_model(tmp_path)
    bag = torch.from_numpy(data.bags[0])
    cam_cpu, w_cpu = grad_cam(model, bag)
    cam_gpu, w_gpu = grad_cam(model.to(CUDA), bag.to(CUDA))
    torch.testing.assert_close(cam_gpu.cpu(), cam_cpu, rtol=1e-3, atol=1e-5)
    torch.testing.assert_close(w_gpu.cpu(), w_cpu, rtol=1e-4, atol=1e-6)
