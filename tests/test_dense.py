"""Dense curvature matrices: exact against torch.func.hessian, resumable, and their exact spectra."""

import os
import platform
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch import nn
from torch.func import functional_call, hessian

from landscape.curvature.dense import STATE_FILE, dense_hessian
from landscape.curvature.operators import HessianOperator, make_batches
from landscape.errors import LandscapeError
from landscape.losses import cross_entropy
from landscape.spectra.exact import exact_spectrum, spectrum_statistics


def _net(seed=0):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Flatten(), nn.Linear(6, 7), nn.Tanh(), nn.Linear(7, 3)).double().eval()
    x, y = torch.randn(10, 1, 2, 3, dtype=torch.float64), torch.randint(0, 3, (10,))
    return model, x, y


def _reference(model, x, y):
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for _, p in model.named_parameters()]
    sizes = [p.numel() for _, p in model.named_parameters()]
    w0 = torch.cat([p.detach().reshape(-1) for _, p in model.named_parameters()])

    def loss(v):
        params = {n: t.view(s) for n, t, s in zip(names, torch.split(v, sizes), shapes)}
        return cross_entropy(functional_call(model, params, (x,)), y)

    return hessian(loss)(w0).numpy()


def test_dense_hessian_in_memory_matches_reference():
    model, x, y = _net()
    op = HessianOperator(model, None, make_batches(x, y, 4))
    H = dense_hessian(op, block_size=5, progress=False)
    np.testing.assert_allclose(H, _reference(model, x, y), rtol=1e-9, atol=1e-12)
    # into a caller's buffer (zeroed first: it holds garbage here), and a wrong buffer refused
    buffer = np.full(H.shape, 7.0)
    assert dense_hessian(op, block_size=5, progress=False, out=buffer) is buffer
    np.testing.assert_array_equal(buffer, H)
    with pytest.raises(LandscapeError, match="C-ordered"):
        dense_hessian(op, progress=False, out=np.zeros(H.shape, dtype=np.float32))


def test_dense_hessian_resumes_after_interruption_with_identical_result(tmp_path):
    model, x, y = _net()
    op = HessianOperator(model, None, make_batches(x, y, 4))
    full = np.array(dense_hessian(op, tmp_path / "a", block_size=7, progress=False))
    partial = dense_hessian(op, tmp_path / "b", block_size=7, progress=False, max_blocks=3)
    state = __import__("json").loads((tmp_path / "b" / STATE_FILE).read_text())
    assert state["blocks_done"] == 3 and state["num_blocks"] == -(-op.shape[0] // 7)
    assert not np.any(np.array(partial)[21:])  # nothing beyond the finished blocks yet
    before = op.count
    resumed = np.array(dense_hessian(op, tmp_path / "b", block_size=7, progress=False))
    assert op.count - before == op.shape[0] - 21  # finished blocks are not recomputed
    np.testing.assert_array_equal(resumed, full)


def test_a_run_killed_during_the_in_place_solve_rebuilds_the_matrix(tmp_path):
    """The in-place eigensolve overwrites the matrix: a later call must not resume onto it."""
    from landscape.curvature.dense import mark_solving

    model, x, y = _net()
    op = HessianOperator(model, None, make_batches(x, y, 4))
    full = np.array(dense_hessian(op, tmp_path / "a", block_size=7, progress=False))
    H = dense_hessian(op, tmp_path / "b", block_size=7, progress=False)
    mark_solving(tmp_path / "b")
    exact_spectrum(H, overwrite=True)  # destroys H in place, as the killed run's solve did
    H.flush()
    assert not np.allclose(np.array(H), full)
    rebuilt = np.array(dense_hessian(op, tmp_path / "b", block_size=7, progress=False))
    np.testing.assert_array_equal(rebuilt, full)
    state = __import__("json").loads((tmp_path / "b" / STATE_FILE).read_text())
    assert not state.get("solving")


def test_dense_hessian_refuses_to_resume_onto_another_operator(tmp_path):
    model, x, y = _net()
    op = HessianOperator(model, None, make_batches(x, y, 4))
    dense_hessian(op, tmp_path, block_size=7, progress=False, max_blocks=2)
    other, _, _ = _net(seed=1)
    with pytest.raises(LandscapeError, match="different fingerprint"):
        dense_hessian(HessianOperator(other, None, make_batches(x, y, 4)), tmp_path, block_size=7, progress=False)


def test_exact_spectrum_in_place_and_within_its_bound():
    rng = np.random.default_rng(0)
    n = 300
    lam = np.concatenate([rng.normal(0, 1e-6, n - 20), np.geomspace(0.1, 40, 15), -np.geomspace(1e-3, 0.1, 5)])
    Q, _ = np.linalg.qr(rng.normal(size=(n, n)))
    H = (Q * lam) @ Q.T
    H = 0.5 * (H + H.T)
    H_c = H.copy()  # C order
    result = exact_spectrum(H_c, overwrite=True)
    assert result.in_place
    assert not np.array_equal(H_c, H)  # LAPACK worked on the caller's array: no copy
    err = np.max(np.abs(result.eigenvalues - np.sort(lam)))
    assert err <= result.eigenvalue_abs_error_bound
    assert result.eigenvalue_abs_error_bound < 1e-11
    # float32 storage, float64 solve: the reported bound covers the storage rounding
    result32 = exact_spectrum(H.astype(np.float32))
    assert not result32.in_place and result32.storage_error_bound > 0
    assert np.max(np.abs(result32.eigenvalues - np.sort(lam))) <= result32.eigenvalue_abs_error_bound
    # float32 solve: larger but still bounded error
    result_f32 = exact_spectrum(H, solve_dtype="float32")
    assert np.max(np.abs(result_f32.eigenvalues - np.sort(lam))) <= result_f32.eigenvalue_abs_error_bound
    assert result_f32.abs_error_bound > 1e4 * result.abs_error_bound


def test_spectrum_statistics_are_the_papers_fractions():
    lam = np.array([-2e-2, -5e-6, 0.0, 5e-5, 5e-4, 5e-3, 1.0, 10.0])
    stats = spectrum_statistics(lam)
    assert stats["lambda_max"] == 10.0 and stats["lambda_min"] == -2e-2
    assert stats["fraction_abs_below"] == {"1e-5": 2 / 8, "1e-4": 3 / 8, "1e-3": 4 / 8, "1e-2": 5 / 8}


def _relu_case(kind, seed=0):
    torch.manual_seed(seed)
    if kind == "mlp":
        model = nn.Sequential(nn.Flatten(), nn.Linear(12, 9), nn.ReLU(), nn.Linear(9, 4))
        x = torch.randn(13, 1, 3, 4)
    elif kind == "conv":
        model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(8, 6), nn.ReLU(),
                              nn.Linear(6, 4))
        x = torch.randn(13, 1, 6, 6)
    else:  # BatchNorm in eval mode is affine with fixed statistics
        model = nn.Sequential(nn.Flatten(), nn.Linear(12, 10), nn.BatchNorm1d(10), nn.ReLU(), nn.Linear(10, 4))
        model.train()
        model(torch.randn(64, 1, 3, 4))
        x = torch.randn(13, 1, 3, 4)
    model = model.double().eval()
    return model, x.double(), torch.randint(0, 4, (13,))


@pytest.mark.parametrize("form", ["kron", "syrk"])
@pytest.mark.parametrize("kind", ["mlp", "conv", "bn"])
def test_ggn_fast_path_is_exact_for_piecewise_linear_nets(kind, form, tmp_path):
    from landscape.curvature.dense_ggn import plan

    model, x, y = _relu_case(kind)
    op = HessianOperator(model, None, make_batches(x, y, 5))  # 5 + 5 + 3: unequal batches
    assert plan(op) is not None
    H = dense_hessian(op, tmp_path, block_size=4, method="ggn", ggn_chunk=4, ggn_form=form, progress=False)
    state = __import__("json").loads((tmp_path / STATE_FILE).read_text())
    assert state["method"] == {"kron": "ggn-kron", "syrk": "ggn"}[form] and state["finalized"]
    # far fewer Hessian-vector products than parameters: the largest layer came from the GGN
    assert state["hvp_count"] < op.shape[0] / 2
    np.testing.assert_allclose(np.array(H), _reference(model, x, y), rtol=1e-9, atol=1e-13)


@pytest.mark.parametrize("mirror", [True, False])
@pytest.mark.parametrize("bias", [True, False])
def test_kron_block_with_sample_chunks_smaller_than_a_batch(bias, mirror):
    """Row blocks accumulate over sample chunks and copy their symmetric sub-blocks forward:
    the block must equal the reference Hessian's (the residual vanishes on the first layer)."""
    from landscape.curvature.dense_ggn import build_kron_block_

    torch.manual_seed(4)
    model = nn.Sequential(nn.Flatten(), nn.Linear(5, 4, bias=bias), nn.ReLU(), nn.Linear(4, 3)).double().eval()
    x, y = torch.randn(11, 1, 5, dtype=torch.float64), torch.randint(0, 3, (11,))
    op = HessianOperator(model, None, make_batches(x, y, 6))
    n_first = 5 * 4 + (4 if bias else 0)
    H = np.full((op.shape[0], op.shape[0]), np.nan)
    assert build_kron_block_(H, op, slice(0, n_first), op.module.get_submodule("1"), sample_chunk=2, mirror=mirror) == 4
    block = H[:n_first, :n_first]
    np.testing.assert_allclose(block, _reference(model, x, y)[:n_first, :n_first], rtol=1e-10, atol=1e-14)
    assert np.isnan(H[:, n_first:]).all()  # nothing outside the block touched


def test_ggn_fast_path_refuses_smooth_activations():
    from landscape.curvature.dense_ggn import plan

    model, x, y = _net()  # tanh: the residual does not vanish on any layer
    op = HessianOperator(model, None, make_batches(x, y, 4))
    assert plan(op) is None
    with pytest.raises(LandscapeError, match="does not apply"):
        dense_hessian(op, method="ggn", progress=False)


@pytest.mark.parametrize("form", ["kron", "syrk"])
def test_ggn_fast_path_resumes_and_survives_a_kill_inside_the_update(form, tmp_path):
    model, x, y = _relu_case("conv")
    op = HessianOperator(model, None, make_batches(x, y, 5))
    kw = dict(block_size=4, ggn_chunk=3, ggn_form=form, progress=False)
    full = np.array(dense_hessian(op, tmp_path / "a", **kw))
    # interrupt in the middle of the GGN phase, then resume
    path = tmp_path / "b"
    for _ in range(40):
        dense_hessian(op, path, max_blocks=2, **kw)
    resumed = np.array(dense_hessian(op, path, **kw))
    np.testing.assert_array_equal(resumed, full)
    # a process killed inside a BLAS update: the state says "in progress" and the block is
    # half-written; the resumed build must redo the phase and still be exact
    path = tmp_path / "c"
    from landscape.curvature.dense_ggn import plan

    group, _ = plan(op)
    hvp_blocks = -(-(op.shape[0] - (group.stop - group.start)) // 4)
    dense_hessian(op, path, max_blocks=hvp_blocks + 2, **kw)
    state_file = path / STATE_FILE
    state = __import__("json").loads(state_file.read_text())
    assert state["blocks_done"] == hvp_blocks and state["ggn_chunks_done"] == 2
    state["ggn_in_progress"] = True
    state_file.write_text(__import__("json").dumps(state))
    H = np.memmap(path / "hessian.bin", dtype=np.float64, mode="r+", shape=full.shape)
    if form == "syrk":  # garbage anywhere in the block the interrupted rank-k update was adding to
        H[group.start : group.start + 10, group.start : group.start + 10] += 123.0
    else:  # the Kronecker form: garbage wherever row block j = 2 writes (Linear(8, 6): 8 inputs per row)
        rows = slice(group.start + 2 * 8, group.start + 3 * 8)
        H[rows, group.start + 2 * 8 : group.stop] += 123.0  # its rows, from its own sub-block on (and bias columns)
        H[group.start + 3 * 8 : group.start + 6 * 8, rows] += 123.0  # its sub-blocks copied into later rows
        H[group.start + 6 * 8 + 2, group] += 123.0  # the bias row b[2]
    H.flush()
    resumed = np.array(dense_hessian(op, path, **kw))
    np.testing.assert_allclose(resumed, full, rtol=1e-12, atol=1e-14)


def test_mkl_and_scipy_backends_agree():
    from landscape.platform import mkl as _mkl

    if _mkl.load() is None:
        pytest.skip("Intel MKL not installed (pip install mkl)")
    rng = np.random.default_rng(3)
    lam = np.sort(np.concatenate([rng.normal(0, 1e-6, 180), np.geomspace(1e-2, 30, 20)]))
    Q, _ = np.linalg.qr(rng.normal(size=(200, 200)))
    H = (Q * lam) @ Q.T
    H = 0.5 * (H + H.T)
    a = exact_spectrum(H.copy(), backend="mkl", overwrite=True)
    b = exact_spectrum(H.copy(), backend="scipy", overwrite=True)
    assert a.extra["backend"] == "mkl" and b.extra["backend"] == "scipy"
    assert np.max(np.abs(a.eigenvalues - lam)) <= a.eigenvalue_abs_error_bound
    assert np.max(np.abs(a.eigenvalues - b.eigenvalues)) <= 2 * a.eigenvalue_abs_error_bound
    a32 = exact_spectrum(H.astype(np.float32), solve_dtype="float32", backend="mkl", overwrite=True)
    assert np.max(np.abs(a32.eigenvalues - lam)) <= a32.eigenvalue_abs_error_bound


def _split_case(head_layers=2, bias=True, trunk_act=nn.ReLU):
    """A conv trunk (2 layers), the largest Linear, a 1- or 2-layer head: small-lenet's shape in miniature."""
    torch.manual_seed(4)
    layers = [nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Conv2d(2, 3, 2), trunk_act(), nn.MaxPool2d(2), nn.Flatten(),
              nn.Linear(12, 10, bias=bias), nn.ReLU()]
    layers += [nn.Linear(10, 5), nn.ReLU(), nn.Linear(5, 4)] if head_layers == 2 else [nn.Linear(10, 4)]
    model = nn.Sequential(*layers).double().eval()
    return model, torch.randn(13, 1, 7, 7, dtype=torch.float64), torch.randint(0, 4, (13,))


@pytest.mark.parametrize("head_layers,bias,trunk_act", [(2, True, nn.ReLU), (1, False, nn.ReLU), (1, True, nn.Tanh)])
def test_split_form_is_exact_without_products_through_the_net(head_layers, bias, trunk_act, tmp_path):
    """Rows outside the largest layer from per-sample Jacobians: equal to torch.func.hessian."""
    model, x, y = _split_case(head_layers, bias, trunk_act)
    op = HessianOperator(model, None, make_batches(x, y, 5))
    H = dense_hessian(op, tmp_path, block_size=4, progress=False)  # auto picks the split form
    state = __import__("json").loads((tmp_path / STATE_FILE).read_text())
    assert state["method"] == "ggn-split" and state["finalized"] and state["hvp_count"] == 0
    # psi's block vanishes on the trunk's largest layer for ReLU, not for tanh (then every trunk column)
    assert state["split_psi_vanishes"] == (trunk_act is nn.ReLU)
    assert state["psi_product_count"] == (20 if trunk_act is nn.ReLU else 47)
    assert state["check_rel_error"] < 1e-12
    np.testing.assert_allclose(np.array(H), _reference(model, x, y), rtol=1e-9, atol=1e-13)


class _Killed(Exception):
    pass


@pytest.mark.parametrize("killed_in", ["running", "adding"])
def test_split_form_resumes_after_a_kill_in_any_stage(killed_in, tmp_path, monkeypatch):
    from landscape.curvature import dense_split

    model, x, y = _split_case()
    op = HessianOperator(model, None, make_batches(x, y, 5))
    full = np.array(dense_hessian(op, tmp_path / "a", block_size=4, progress=False))
    path = tmp_path / "b"
    for budget in (2, 2, 1):  # psi columns: 20 -> 5 blocks
        dense_hessian(op, path, block_size=4, progress=False, max_blocks=budget)
    state = __import__("json").loads((path / STATE_FILE).read_text())
    assert state["split_units_done"] == 5 and state["split_rows"] == "todo"
    # the process dies inside the rows pass: after its sums into H[S, L] ("running"), or
    # after it started adding into H[S, S] ("adding"; half of that addition done)
    real = dense_split.build_rows_

    def dying(H, op_, split, **kw):
        def before_adding():
            if killed_in == "adding":
                kw["before_adding"]()
                H[split.trunk_rows, split.trunk_rows] += 0.5
            raise _Killed

        real(H, op_, split, **{**kw, "before_adding": before_adding})

    monkeypatch.setattr(dense_split, "build_rows_", dying)
    with pytest.raises(_Killed):
        dense_hessian(op, path, block_size=4, progress=False)
    monkeypatch.setattr(dense_split, "build_rows_", real)
    state = __import__("json").loads((path / STATE_FILE).read_text())
    assert state["split_rows"] == killed_in
    resumed = np.array(dense_hessian(op, path, block_size=4, progress=False))
    np.testing.assert_allclose(resumed, full, rtol=1e-12, atol=1e-15)


def test_a_matrix_that_disagrees_with_the_products_is_refused():
    from landscape.curvature.dense import check_against_products

    model, x, y = _split_case()
    op = HessianOperator(model, None, make_batches(x, y, 5))
    H = np.array(dense_hessian(op, block_size=4, progress=False))
    assert check_against_products(H, op) < 1e-12
    H[3, 100] += 1e-6 * np.abs(H).max()
    with pytest.raises(LandscapeError, match="disagrees"):
        check_against_products(H, op)


def test_split_form_is_exact_with_small_work_blocks(monkeypatch):
    """Sample chunks, blocks of L's inputs and row blocks smaller than the problem: the same matrix."""
    import functools

    from landscape.curvature import dense_split

    monkeypatch.setattr(dense_split, "build_rows_", functools.partial(
        dense_split.build_rows_, row_block=7, sample_chunk=3, k_block=5, jac_chunk=4))
    model, x, y = _split_case(head_layers=2)
    op = HessianOperator(model, None, make_batches(x, y, 5))
    H = dense_hessian(op, block_size=4, progress=False)
    np.testing.assert_allclose(H, _reference(model, x, y), rtol=1e-9, atol=1e-13)


def test_split_form_is_exact_within_a_tiny_workspace(tmp_path, monkeypatch):
    """workspace=1 byte: one sample and one Jacobian row per vmapped call, the trunk operator
    cut into one-sample batches, one column per block product; in memory (H[S, S] updated
    in place) and memory-mapped (through the resumable accumulator): the same matrix."""
    from landscape.curvature import dense_split

    from landscape.curvature import dense_ggn

    seen = {"chunks": [], "batches": [], "factors": [], "head": []}
    real_chunks, real_top = dense_split.rows_chunks, dense_split.trunk_operator
    real_factors, real_head = dense_ggn.kron_factors, dense_split.head_residual

    def factors(op_, x_, module):
        seen["factors"].append(int(x_.shape[0]))
        return real_factors(op_, x_, module)

    def head(*a, **kw):
        seen["head"].append(kw.get("workspace"))
        return real_head(*a, **kw)

    def chunks(*a, **kw):
        seen["chunks"].append((real_chunks(*a, **kw), kw.get("direct")))
        return seen["chunks"][-1][0]

    def top(*a, **kw):
        t = real_top(*a, **kw)
        seen["batches"].append(sorted({int(x.shape[0]) for x, _ in t.batches}))
        return t

    monkeypatch.setattr(dense_split, "rows_chunks", chunks)
    monkeypatch.setattr(dense_split, "trunk_operator", top)
    monkeypatch.setattr(dense_ggn, "kron_factors", factors)
    monkeypatch.setattr(dense_split, "head_residual", head)
    model, x, y = _split_case(head_layers=2)
    op = HessianOperator(model, None, make_batches(x, y, 5))
    want = _reference(model, x, y)
    in_memory = dense_hessian(op, block_size=4, progress=False, workspace=1)
    mapped = np.array(dense_hessian(op, tmp_path, block_size=4, progress=False, workspace=1))
    assert seen["chunks"] == [((1, 1), True), ((1, 1), False)]
    assert seen["batches"] == [[1], [1]]
    # the Kronecker block's factors one sample at a time, the head's residual in chunks
    assert seen["factors"] == [1] * 26 and seen["head"] == [1, 1]
    np.testing.assert_allclose(in_memory, want, rtol=1e-9, atol=1e-13)
    np.testing.assert_allclose(mapped, want, rtol=1e-9, atol=1e-13)
    # the default budget leaves a problem this small whole
    for v in seen.values():
        v.clear()
    dense_hessian(op, block_size=4, progress=False)
    assert seen["chunks"] == [((128, 64), True)] and seen["batches"] == [[3, 5]]
    assert seen["factors"] == [5, 5, 3]
    with pytest.raises(LandscapeError, match="workspace"):
        dense_hessian(op, block_size=4, progress=False, workspace=0)


def _known_spectrum_matrix(n=200, seed=3):
    rng = np.random.default_rng(seed)
    lam = np.sort(np.concatenate([rng.normal(0, 1e-6, n - 20), np.geomspace(1e-2, 30, 20)]))
    Q, _ = np.linalg.qr(rng.normal(size=(n, n)))
    H = (Q * lam) @ Q.T
    return 0.5 * (H + H.T), lam


def test_torch_backend_solves_a_memmap_within_its_bound(tmp_path):
    """backend="torch" (the GPU path, here on the CPU): the known spectrum, from a memmap and from float32 storage."""
    H, lam = _known_spectrum_matrix()
    mm = np.memmap(tmp_path / "h.bin", dtype=np.float64, mode="w+", shape=H.shape)
    mm[:] = H
    a = exact_spectrum(mm, backend="torch", device="cpu")
    assert a.extra["backend"] == "torch-cpu" and not a.in_place
    assert np.max(np.abs(a.eigenvalues - lam)) <= a.eigenvalue_abs_error_bound
    assert np.array_equal(np.asarray(mm), H)  # the stored matrix is untouched
    s32 = exact_spectrum(H.astype(np.float32), backend="torch")  # stored float32, solved float64
    assert s32.storage_error_bound > 0
    assert np.max(np.abs(s32.eigenvalues - lam)) <= s32.eigenvalue_abs_error_bound
    # "auto" never picks the torch path on the CPU
    assert exact_spectrum(H, backend="auto").extra["backend"] in ("mkl", "scipy")


_HEAP_PROBE = """
import os, sys
import numpy as np
from landscape.platform import configure
from landscape.platform.heap import bound_heap

configure(heap=sys.argv[1] != "dense-off")  # the command line turns the service on; the library leaves it off

def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

if sys.argv[1] == "bound":
    assert bound_heap()
elif sys.argv[1] == "trim":  # small blocks below a live one: heap, not mmap, even with the bound
    from landscape.platform.heap import trim_heap
    assert bound_heap()
    blocks = [np.ones(2**20 // 8) for _ in range(48)]  # 48 x 1 MiB, under the 4 MiB threshold
    pin = np.ones(4096)  # allocated above them: the heap's top cannot shrink past it
    base = rss()
    del blocks
    freed = rss()
    trim_heap()
    print((freed - base) / 2**20, (rss() - base) / 2**20)
    sys.exit()
elif sys.argv[1] in ("dense", "dense-off"):  # a dense build sets it itself where the service is on
    import torch
    from landscape.curvature.dense import dense_hessian
    from landscape.curvature.operators import HessianOperator, make_batches
    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2)).double()
    x = torch.randn(8, 3, dtype=torch.float64)
    dense_hessian(HessianOperator(net, None, make_batches(x, torch.arange(8) % 2, 8)), progress=False)
big = np.ones(24 * 2**20 // 8)  # mmapped, then freed: glibc's dynamic rule raises its threshold to 24 MiB
del big
base = rss()
a = np.ones(12 * 2**20 // 8)  # 12 MiB, every page written
del a
print((rss() - base) / 2**20)
"""


def _run_heap_probe(mode: str) -> list[str]:
    """The probe's printed numbers, in a fresh interpreter whose malloc nobody tuned (no MALLOC_* or
    GLIBC_TUNABLES settings, no LANDSCAPE_HEAP), so the allocator starts from glibc's defaults."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("MALLOC_") and k not in ("GLIBC_TUNABLES", "LANDSCAPE_HEAP")}
    out = subprocess.run([sys.executable, "-c", _HEAP_PROBE, mode], capture_output=True, text=True, check=True,
                         env=env)
    return out.stdout.split()


@pytest.mark.skipif(not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc",
                    reason="glibc's malloc on Linux")
def test_dense_builds_bound_the_heap_so_freed_workspace_goes_back_to_the_kernel():
    """After a freed 24 MiB block, glibc serves 12 MiB from its heap and keeps it once freed;
    with the threshold fixed at 4 MiB (what dense builds set) it is mmapped and given back."""
    def retained(mode):
        return float(_run_heap_probe(mode)[0])

    if retained("default") < 11.0:  # the control: without the bound, the heap keeps the freed 12 MiB
        pytest.skip("this allocator gives the freed block back without the bound: nothing to show")
    assert retained("bound") <= 1.0
    assert retained("dense") <= 1.0
    assert retained("dense-off") >= 11.0  # without the platform service a build leaves the allocator alone


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc/self/statm")
def test_trimmer_trims_only_past_its_slack():
    """A Trimmer reads the resident set and trims only once it passed the last level by the slack."""
    from landscape.platform.heap import Trimmer, resident_bytes

    rss = resident_bytes()
    assert rss is not None and 10 * 2**20 < rss < 2**40  # this interpreter with torch loaded
    lazy = Trimmer(2**40)
    assert [lazy(), lazy()] == [False, False] and lazy.trims == 0
    block = np.ones(2**20)  # 8 MB resident now: past a level taken before it
    eager = Trimmer(0)
    eager.level -= 8 * 2**20 + 1
    assert eager() and eager.trims == 1
    assert abs(eager.level - resident_bytes()) < 4 * 2**20  # the new level is what stayed resident
    del block


def test_workspace_sizes_parse_with_binary_suffixes_and_refuse_the_rest():
    from landscape.curvature.dense import parse_workspace

    assert [parse_workspace(t) for t in ("auto", "NONE", "512M", "2GiB", "64k", "1e9", "3 MB", "100")] == [
        "auto", None, 512 * 2**20, 2 * 2**30, 65536, 10**9, 3 * 2**20, 100]
    for bad in ("0", "-5", "lots", "12x", ""):
        with pytest.raises(LandscapeError, match="auto, none or a size"):
            parse_workspace(bad)


def test_planning_the_fast_path_leaves_the_operator_s_block_scheme_unpicked():
    """The residual check's products on 8 samples must not fix the block scheme (and its
    memory-bounded column chunk) that the operator's own 5-sample batches will use."""
    from landscape.curvature import dense_ggn

    model, x, y = _split_case(head_layers=2)
    op = HessianOperator(model, None, make_batches(x, y, 5))
    assert dense_ggn.plan(op) is not None
    assert op.block_method is None and op._vmap_chunk is None


@pytest.mark.skipif(not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc",
                    reason="glibc's malloc on Linux")
def test_trim_heap_returns_freed_small_blocks_that_the_bound_keeps():
    """Blocks under the mmap threshold come from the heap and stay resident when freed
    below a live allocation; trim_heap (malloc_trim) gives their pages back."""
    kept, trimmed = map(float, _run_heap_probe("trim"))  # MiB resident after free(), after trim_heap()
    if kept < -8.0:  # the control: free() alone kept (almost) all 48 MiB resident
        pytest.skip(f"this allocator gave {-kept:.0f} MiB back on free(): nothing left for trim_heap to show")
    assert trimmed <= kept - 40.0
