"""The curvature engine, training and the CLI on a CUDA GPU agree with the CPU in float64.

Skipped where torch sees no CUDA device (CI has none): these run on a lent GPU machine
(`scripts/device_check.sh`). The truth is the CPU float64 result, which the rest of the
suite checks against dense references and closed forms; here the same computation on
the GPU must match it to float64 rounding, for every model family the paper uses
(MLP, conv + max-pool, BatchNorm in eval mode, LSTM).
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
from torch import nn
from test_curvature_operators import TinyLSTM
from torch.func import functional_call, hessian

from landscape.curvature.dense import STATE_FILE, dense_hessian
from landscape.curvature.diagonal import diagonal_fisher
from landscape.curvature.operators import FisherOperator, GGNOperator, HessianOperator, make_batches
from landscape.spectra.lanczos import lanczos
from landscape.spectra.slq import slq
from landscape.spectra.trace import hutchinson_trace

# LANDSCAPE_TEST_GPU=cpu runs this module on the CPU against itself: a check of the tests'
# own logic on a machine with no GPU, before device time is spent on them.
CUDA = torch.device(os.environ.get("LANDSCAPE_TEST_GPU", "cuda"))
pytestmark = pytest.mark.skipif(CUDA.type == "cuda" and not torch.cuda.is_available(), reason="no CUDA device")


def _case(kind: str, seed: int = 0):
    torch.manual_seed(seed)
    n = 21
    if kind == "mlp":
        model = nn.Sequential(nn.Flatten(), nn.Linear(12, 9), nn.ReLU(), nn.Linear(9, 4))
        x, y = torch.randn(n, 1, 3, 4), torch.randint(0, 4, (n,))
    elif kind == "conv":
        model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(8, 6),
                              nn.ReLU(), nn.Linear(6, 4))
        x, y = torch.randn(n, 1, 6, 6), torch.randint(0, 4, (n,))
    elif kind == "bn":
        model = nn.Sequential(nn.Conv2d(1, 3, 3), nn.BatchNorm2d(3), nn.Tanh(), nn.Flatten(), nn.Linear(48, 4))
        model.train()
        model(torch.randn(64, 1, 6, 6))  # non-trivial running statistics
        x, y = torch.randn(n, 1, 6, 6), torch.randint(0, 4, (n,))
    else:
        model = TinyLSTM(vocab=6, hidden=4)
        x, y = torch.randint(0, 6, (n, 5)), torch.randint(0, 6, (n, 5))
    model = model.double().eval()
    return model, (x.double() if x.is_floating_point() else x), y


def _reference_hessian(model, x, y) -> np.ndarray:
    """torch.func.hessian of the mean cross-entropy on the CPU, float64."""
    names = [k for k, _ in model.named_parameters()]
    params = dict(model.named_parameters())
    sizes = [params[k].numel() for k in names]
    buffers = dict(model.named_buffers())

    def loss(v):
        d = {k: t.view(params[k].shape) for k, t in zip(names, torch.split(v, sizes))}
        out = functional_call(model, {**d, **buffers}, (x,))
        return nn.functional.cross_entropy(out.reshape(-1, out.shape[-1]), y.reshape(-1))

    w0 = torch.cat([params[k].detach().reshape(-1) for k in names])
    return hessian(loss)(w0).numpy()


KINDS = ["mlp", "conv", "bn", "lstm"]


@pytest.mark.parametrize("kind", KINDS)
def test_hessian_products_on_the_gpu_match_the_dense_cpu_hessian(kind):
    model, x, y = _case(kind)
    op = HessianOperator(model, None, make_batches(x, y, 8), device=CUDA)  # 8 + 8 + 5: unequal batches
    assert op.device.type == CUDA.type
    H = _reference_hessian(model, x, y)
    V = torch.randn(op.shape[0], 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    got = (op @ V.to(CUDA)).cpu().numpy()
    np.testing.assert_allclose(got, H @ V.numpy(), rtol=1e-10, atol=1e-12 * np.abs(H).max())
    one = (op @ V[:, 0].to(CUDA)).cpu().numpy()
    np.testing.assert_allclose(one, H @ V[:, 0].numpy(), rtol=1e-10, atol=1e-12 * np.abs(H).max())


@pytest.mark.parametrize("kind", KINDS)
def test_ggn_and_fisher_products_on_the_gpu_match_the_cpu(kind):
    model, x, y = _case(kind)
    V = torch.randn(sum(p.numel() for p in model.parameters()), 2, dtype=torch.float64,
                    generator=torch.Generator().manual_seed(2))
    for make in (lambda d: GGNOperator(model, None, make_batches(x, y, 8), device=d),
                 lambda d: FisherOperator(model, None, make_batches(x, y, 8), kind="empirical", device=d),
                 lambda d: FisherOperator(model, None, make_batches(x, y, 8), kind="mc", seed=3, device=d)):
        cpu, gpu = make("cpu"), make(CUDA)
        want = (cpu @ V).numpy()
        np.testing.assert_allclose((gpu @ V.to(CUDA)).cpu().numpy(), want, rtol=1e-10,
                                   atol=1e-12 * np.abs(want).max())


@pytest.mark.parametrize("kind", ["mlp", "conv", "bn", "lstm"])
def test_dense_hessian_built_on_the_gpu_is_the_reference(kind, tmp_path):
    """Every build path (GGN Kronecker/rank-k, split, plain products) on CUDA, against torch.func.hessian."""
    model, x, y = _case(kind)
    op = HessianOperator(model, None, make_batches(x, y, 8), device=CUDA)
    H = dense_hessian(op, tmp_path, block_size=8, progress=False)
    state = json.loads((tmp_path / STATE_FILE).read_text())
    assert state["blocks_done"] == state["num_blocks"] and (state["method"] == "hvp" or state["finalized"])
    np.testing.assert_allclose(np.array(H), _reference_hessian(model, x, y), rtol=1e-9, atol=1e-13)


def test_lanczos_trace_and_slq_on_the_gpu_match_the_exact_spectrum():
    model, x, y = _case("conv")
    op = HessianOperator(model, None, make_batches(x, y, 8), device=CUDA)
    lam = np.linalg.eigvalsh(_reference_hessian(model, x, y))
    top = lanczos(op, k=3, which="both", tol=1e-10)
    got = np.sort(np.asarray(top.ritz_values))
    want = np.sort(np.concatenate([lam[:3], lam[-3:]]))
    np.testing.assert_allclose(got, want, atol=1e-8 * np.abs(lam).max())
    # the same seeds give the same probes on either device: the estimates agree to rounding
    cpu = HessianOperator(model, None, make_batches(x, y, 8), device="cpu")
    t_gpu, t_cpu = hutchinson_trace(op, max_samples=40, seed=5), hutchinson_trace(cpu, max_samples=40, seed=5)
    assert t_gpu.estimate == pytest.approx(t_cpu.estimate, rel=1e-10)
    s_gpu, s_cpu = slq(op, num_probes=2, num_iters=op.shape[0], seed=7), slq(cpu, num_probes=2,
                                                                              num_iters=op.shape[0], seed=7)
    # quadrature weights are a probability vector per probe; the extreme nodes are the same on both devices
    for res in (s_gpu, s_cpu):
        weights = np.asarray(res.weights)
        assert np.all(np.abs(weights.sum(axis=1) - 1) < 1e-10)
    np.testing.assert_allclose(np.sort(np.asarray(s_gpu.nodes), axis=1)[:, [0, -1]],
                               np.sort(np.asarray(s_cpu.nodes), axis=1)[:, [0, -1]], atol=1e-8)


@pytest.mark.parametrize("kind", KINDS)
def test_diagonal_fisher_on_the_gpu_matches_the_cpu(kind):
    model, x, y = _case(kind)
    for fisher in ("empirical", "mc"):
        cpu = diagonal_fisher(FisherOperator(model, None, make_batches(x, y, 8), kind=fisher, seed=3, device="cpu"))
        gpu = diagonal_fisher(FisherOperator(model, None, make_batches(x, y, 8), kind=fisher, seed=3, device=CUDA))
        np.testing.assert_allclose(gpu.cpu().numpy(), cpu.numpy(), rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("optimizer", ["sgd", "adam", "entropy-sgd", "entropy-adam", "replicated-sgd", "sam"])
def test_training_on_the_gpu_learns_and_resumes(optimizer, tmp_path):
    from landscape.checkpoint import load_checkpoint
    from landscape.train import TrainConfig, train

    base = dict(model="small-mnistfc", dataset="digits", optimizer=optimizer, epochs=2, batch_size=64, seed=0,
                device=str(CUDA), model_kwargs={"hidden": 16})
    full = train(TrainConfig(out=str(tmp_path / "full"), **base), progress=False)
    rows = [json.loads(line) for line in (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()]
    losses = [r["train_loss"] for r in rows if "train_loss" in r]
    assert all(np.isfinite(losses)) and losses[-1] < losses[0]
    straight, _ = load_checkpoint(tmp_path / "full" / "checkpoint.pt")  # readable on the CPU
    assert all(p.device.type == "cpu" for p in straight.parameters())
    # one epoch, then resume for the second: the same weights as the straight run, to float32 rounding
    train(TrainConfig(out=str(tmp_path / "split"), **{**base, "epochs": 1}), progress=False)
    train(TrainConfig(out=str(tmp_path / "split"), **base), resume=True, progress=False)
    resumed, _ = load_checkpoint(tmp_path / "split" / "checkpoint.pt")
    for (name, a), b in zip(resumed.state_dict().items(), straight.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=f"{name} differs after resuming")
    assert full is not None


def test_float32_conv_products_on_the_gpu_are_not_tf32():
    """cuDNN convolves float32 in TF32 by default (relative error ~1e-3); curvature turns it off."""
    model, x, y = _case("conv")
    H = _reference_hessian(model, x, y)
    V = torch.randn(H.shape[0], 4, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    want = H @ V.numpy()
    before = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = True  # the user's (and PyTorch's default) setting for training
    try:
        op = HessianOperator(model.float(), None, make_batches(x.float(), y, 8), device=CUDA)
        got = (op @ V.float().to(CUDA)).cpu().double().numpy()
        assert torch.backends.cudnn.allow_tf32  # restored after the product
    finally:
        torch.backends.cudnn.allow_tf32 = before
    assert np.linalg.norm(got - want) / np.linalg.norm(want) < 1e-5


def test_analysis_context_is_a_no_op_on_the_cpu_and_restores_the_cuda_flags():
    from landscape.device import analysis_context

    ctx = analysis_context(TinyLSTM(), "cpu")
    with ctx():
        pass
    flags = (torch.backends.cudnn.enabled, torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
    with analysis_context(TinyLSTM(), "cuda")():
        assert not torch.backends.cudnn.enabled and not torch.backends.cudnn.allow_tf32
        assert not torch.backends.cuda.matmul.allow_tf32
    assert (torch.backends.cudnn.enabled, torch.backends.cudnn.allow_tf32,
            torch.backends.cuda.matmul.allow_tf32) == flags


def test_exact_spectrum_on_the_gpu_is_within_its_bound():
    from landscape.spectra.exact import exact_spectrum, gpu_fits

    rng = np.random.default_rng(5)
    lam = np.sort(np.concatenate([rng.normal(0, 1e-6, 280), np.geomspace(1e-3, 40, 20)]))
    Q, _ = np.linalg.qr(rng.normal(size=(300, 300)))
    H = 0.5 * ((Q * lam) @ Q.T + ((Q * lam) @ Q.T).T)
    assert gpu_fits(300, np.float64, CUDA) == (CUDA.type == "cuda")
    result = exact_spectrum(H, backend="auto" if CUDA.type == "cuda" else "torch", device=CUDA)
    assert result.extra["backend"] == f"torch-{CUDA.type}"
    assert np.max(np.abs(result.eigenvalues - lam)) <= result.eigenvalue_abs_error_bound
