"""The SGLD noise streams (landscape.optim.rng): MKL's Philox against the published algorithm,
its Gaussians against N(0, 1), and its state through a weights_only checkpoint."""

from __future__ import annotations

import copy
import io
import pickle

import numpy as np
import pytest
import torch
from scipy import stats

from landscape.optim import EntropySGD
from landscape.optim.rng import (
    KIND_PHILOX,
    KIND_TORCH,
    PhiloxGenerator,
    generator_kind,
    make_generator,
    mkl_available,
    standard_normal_,
)

needs_mkl = pytest.mark.skipif(not mkl_available(), reason="MKL (the 'fast' extra) is not installed")

_M = (0xD2511F53, 0xCD9E8D57)  # Philox4x32 multipliers and Weyl key increments (Salmon et al. 2011)
_W = (0x9E3779B9, 0xBB67AE85)


def _philox4x32_10(counter: tuple[int, int, int, int], key: tuple[int, int]) -> list[int]:
    """Ten rounds of Philox4x32 on one 128-bit counter, written from the paper's round function."""
    c, k = list(counter), list(key)
    for _ in range(10):
        hi0, lo0 = divmod(_M[0] * c[0], 1 << 32)
        hi1, lo1 = divmod(_M[1] * c[2], 1 << 32)
        c = [hi1 ^ c[1] ^ k[0], lo1, hi0 ^ c[3] ^ k[1], lo0]
        k = [(k[0] + _W[0]) & 0xFFFFFFFF, (k[1] + _W[1]) & 0xFFFFFFFF]
    return c


def test_reference_round_function_reproduces_the_random123_known_answer():
    assert _philox4x32_10((0, 0, 0, 0), (0, 0)) == [0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8]


@needs_mkl
def test_philox_stream_is_philox4x32_10_keyed_by_the_64_bit_seed():
    seed = 0x9ABCDEF0_12345678
    bits = PhiloxGenerator(seed).uniform_bits32(12).tolist()
    expected = [w for c in range(3) for w in _philox4x32_10((c, 0, 0, 0), (0x12345678, 0x9ABCDEF0))]
    assert bits == expected
    assert PhiloxGenerator(seed + 1).uniform_bits32(4).tolist() != expected[:4]


@needs_mkl
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_philox_gaussians_are_standard_normal(dtype):
    z = PhiloxGenerator(7).normal_(torch.empty(200_000, dtype=dtype)).double().numpy()
    assert stats.kstest(z, "norm").pvalue > 1e-3
    assert abs(z.mean()) < 5 / np.sqrt(z.size)
    assert abs(z.var() - 1.0) < 5 * np.sqrt(2 / z.size)
    beyond3 = np.mean(np.abs(z) > 3.0)  # the tails, where a poor Gaussian method shows
    assert abs(beyond3 - 2 * stats.norm.sf(3.0)) < 5 * np.sqrt(2 * stats.norm.sf(3.0) / z.size)
    # consecutive draws are uncorrelated
    assert abs(np.corrcoef(z[:-1], z[1:])[0, 1]) < 5 / np.sqrt(z.size)


@needs_mkl
def test_philox_fills_other_dtypes_and_strided_tensors_in_place():
    g = PhiloxGenerator(3)
    half = torch.empty(1000, dtype=torch.float16)
    assert g.normal_(half) is half and half.float().std().item() == pytest.approx(1.0, abs=0.1)
    strided = torch.zeros(40, 50)[:, ::2]
    g.normal_(strided)
    assert strided.std().item() == pytest.approx(1.0, abs=0.1)


@needs_mkl
def test_philox_state_survives_a_weights_only_checkpoint():
    g = PhiloxGenerator(11)
    g.normal_(torch.empty(5))  # move off the start
    buffer = io.BytesIO()
    torch.save({"state": g.get_state()}, buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)["state"]
    expected = g.normal_(torch.empty(1001))
    other = PhiloxGenerator(999)
    other.set_state(state)
    assert torch.equal(other.normal_(torch.empty(1001)), expected)
    with pytest.raises(ValueError, match="not a saved MKL Philox stream"):
        other.set_state(torch.Generator().get_state())
    # copies and pickles carry the position and own their stream
    twin, thawed = copy.deepcopy(other), pickle.loads(pickle.dumps(other))
    ahead = other.normal_(torch.empty(7))
    assert torch.equal(twin.normal_(torch.empty(7)), ahead) and torch.equal(thawed.normal_(torch.empty(7)), ahead)
    del twin, thawed
    assert torch.isfinite(other.normal_(torch.empty(7))).all()


def test_make_generator_resolves_the_kind():
    assert generator_kind(make_generator("cpu", 0, "torch")) == KIND_TORCH
    assert generator_kind(make_generator("cpu", 0, "auto")) == (KIND_PHILOX if mkl_available() else KIND_TORCH)
    with pytest.raises(ValueError, match="CPU"):
        make_generator("meta", 0, "mkl")
    with pytest.raises(ValueError, match="auto, torch, mkl"):
        make_generator("cpu", 0, "pcg")
    torch_draws = standard_normal_(torch.empty(8), make_generator("cpu", 5, "torch"))
    assert torch.equal(torch_draws, torch.randn(8, generator=torch.Generator().manual_seed(5)))


def _steps(opt: EntropySGD, x: torch.Tensor, n: int) -> None:
    def closure():
        x.grad = None
        loss = 0.5 * (x * x).sum()
        loss.backward()
        return loss.detach()

    for _ in range(n):
        opt.step(closure)


@needs_mkl
def test_a_default_generator_adopts_the_saved_kind_and_a_given_one_refuses_it():
    x = torch.zeros(50, requires_grad=True)
    saver = EntropySGD([x], 0.1, L=2, noise=1e-2, generator=torch.Generator().manual_seed(0))
    _steps(saver, x, 1)
    state = copy.deepcopy(saver.state_dict())  # as a checkpoint would: no buffer shared with saver
    assert state["generator_kind"] == KIND_TORCH

    y = x.detach().clone().requires_grad_()
    adopted = EntropySGD([y], 0.1, L=2, noise=1e-2)  # default: Philox here
    assert generator_kind(adopted.generator) == KIND_PHILOX
    adopted.load_state_dict(state)
    assert generator_kind(adopted.generator) == KIND_TORCH
    _steps(saver, x, 2)
    _steps(adopted, y, 2)
    assert torch.equal(x, y)

    given = EntropySGD([y], 0.1, L=2, noise=1e-2, generator=PhiloxGenerator(1))
    with pytest.raises(ValueError, match="torch noise stream"):
        given.load_state_dict(state)
    legacy = dict(state)
    del legacy["generator_kind"]  # states saved before the kind was recorded hold torch streams
    with pytest.raises(ValueError, match="torch noise stream"):
        given.load_state_dict(legacy)
