"""Curvature operators against dense float64 references (DESIGN.md sec. 6).

Every operator is compared with a dense matrix built independently: torch.func.hessian
of the mean loss over ALL samples at once (so the per-batch |b|/N weighting is tested
with unequal batches 3 + 3 + 1), J^T H_z J from jacrev, and sum g_i g_i^T from a loop.
"""

import contextlib
import pytest
import torch
from torch import nn
from torch.func import functional_call, hessian, jacrev

from landscape.curvature.operators import (
    FisherOperator,
    GGNOperator,
    HessianOperator,
    NondeterministicOperatorError,
    make_batches,
)
from landscape.losses import cross_entropy

N = 7
SIZES = (3, 3, 1)


class TinyLSTM(nn.Module):
    def __init__(self, vocab=5, hidden=3):
        super().__init__()
        self.vocab = vocab
        self.lstm = nn.LSTM(vocab, hidden, batch_first=True)
        self.out = nn.Linear(hidden, vocab, bias=False)

    def forward(self, tokens):
        h, _ = self.lstm(nn.functional.one_hot(tokens, self.vocab).to(self.out.weight.dtype))
        return self.out(h)


def _case(kind):
    torch.manual_seed(0)
    if kind == "mlp":
        model = nn.Sequential(nn.Flatten(), nn.Linear(6, 5), nn.Tanh(), nn.Linear(5, 3))
        x, y = torch.randn(N, 1, 2, 3), torch.randint(0, 3, (N,))
    elif kind == "conv":
        model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(8, 3))
        x, y = torch.randn(N, 1, 6, 6), torch.randint(0, 3, (N,))
    elif kind == "bn":
        model = nn.Sequential(nn.Flatten(), nn.Linear(6, 4), nn.BatchNorm1d(4), nn.Softplus(), nn.Linear(4, 3))
        model.train()
        model(torch.randn(32, 1, 2, 3))  # non-trivial running statistics
        x, y = torch.randn(N, 1, 2, 3), torch.randint(0, 3, (N,))
    elif kind == "lstm":
        model = TinyLSTM()
        x, y = torch.randint(0, 5, (N, 4)), torch.randint(0, 5, (N, 4))
    model = model.double().eval()
    if x.is_floating_point():
        x = x.double()
    return model, x, y


def _batches(x, y):
    out, start = [], 0
    for s in SIZES:
        out.append((x[start : start + s], y[start : start + s]))
        start += s
    return out


def _flat(model):
    names = [n for n, _ in model.named_parameters()]
    params = dict(model.named_parameters())
    shapes = [params[n].shape for n in names]
    sizes = [params[n].numel() for n in names]
    buffers = dict(model.named_buffers())

    def unflatten(v):
        return {n: t.view(s) for n, t, s in zip(names, torch.split(v, sizes), shapes)}

    def logits(v, x):
        return functional_call(model, {**unflatten(v), **buffers}, (x,))

    w0 = torch.cat([params[n].detach().reshape(-1) for n in names])
    return w0, logits


def _dense(op):
    return op @ torch.eye(op.shape[0], dtype=torch.float64)


@pytest.mark.parametrize("kind", ["mlp", "conv", "bn", "lstm"])
def test_hessian_operator_matches_torch_func_hessian(kind):
    model, x, y = _case(kind)
    w0, logits = _flat(model)
    reference = hessian(lambda v: cross_entropy(logits(v, x), y))(w0)
    op = HessianOperator(model, cross_entropy, _batches(x, y))
    assert op.shape == reference.shape and op.num_samples == N
    dense = _dense(op)
    torch.testing.assert_close(dense, reference, rtol=1e-8, atol=1e-10)
    # the single-vector path agrees with the block path
    v = torch.randn(op.shape[0], dtype=torch.float64)
    torch.testing.assert_close(op @ v, reference @ v, rtol=1e-8, atol=1e-10)


def test_unweighted_batch_means_would_be_wrong():
    """Guard against the peer bug: averaging batch means without |b|/N weights."""
    model, x, y = _case("mlp")
    w0, logits = _flat(model)
    wrong = sum(hessian(lambda v, xb=xb, yb=yb: cross_entropy(logits(v, xb), yb))(w0) for xb, yb in _batches(x, y)) / 3
    right = _dense(HessianOperator(model, None, _batches(x, y)))
    assert (right - wrong).abs().max() > 1e-3


@pytest.mark.parametrize("kind", ["mlp", "conv", "bn", "lstm"])
def test_ggn_operator_matches_dense_jacobian_product(kind):
    model, x, y = _case(kind)
    w0, logits = _flat(model)
    reference = torch.zeros(w0.numel(), w0.numel(), dtype=torch.float64)
    for xb, yb in _batches(x, y):
        z = logits(w0, xb)
        J = jacrev(lambda v: logits(v, xb))(w0).reshape(z.numel(), -1)
        Hz = hessian(lambda zz: cross_entropy(zz.reshape(z.shape), yb))(z.reshape(-1))
        reference += (xb.shape[0] / N) * J.T @ Hz @ J
    op = GGNOperator(model, cross_entropy, _batches(x, y))
    torch.testing.assert_close(_dense(op), reference, rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("kind", ["mlp", "conv", "lstm"])
def test_empirical_fisher_matches_sum_of_outer_products(kind):
    model, x, y = _case(kind)
    w0, logits = _flat(model)
    reference = torch.zeros(w0.numel(), w0.numel(), dtype=torch.float64)
    for i in range(N):
        g = torch.func.grad(lambda v: cross_entropy(logits(v, x[i : i + 1]), y[i : i + 1]))(w0)
        reference += torch.outer(g, g) / N
    op = FisherOperator(model, cross_entropy, _batches(x, y), kind="empirical")
    torch.testing.assert_close(_dense(op), reference, rtol=1e-8, atol=1e-12)


def test_mc_fisher_converges_to_the_ggn_for_cross_entropy():
    model, x, y = _case("mlp")
    ggn = _dense(GGNOperator(model, None, _batches(x, y)))
    mc = _dense(FisherOperator(model, None, _batches(x, y), kind="mc", mc_samples=3000, seed=1))
    rel = (mc - ggn).norm() / ggn.norm()
    assert rel < 0.05
    # and it is no multiple of it (the 'factor of C' bug would give rel ~ C - 1)
    assert abs(float((mc * ggn).sum() / (ggn * ggn).sum()) - 1.0) < 0.05


def test_linear_regression_hessian_closed_form():
    torch.manual_seed(1)
    X = torch.randn(11, 4, dtype=torch.float64)
    y = torch.randn(11, 1, dtype=torch.float64)
    model = nn.Linear(4, 1, bias=False).double()
    # (z - y)^2 written out: torch 2.13 mse_loss backward fails under forward-mode AD
    op = HessianOperator(model, lambda z, t: ((z - t) ** 2).mean(), make_batches(X, y, 4))
    torch.testing.assert_close(_dense(op), 2 * X.T @ X / 11, rtol=1e-10, atol=1e-12)


def test_softmax_regression_hessian_closed_form():
    torch.manual_seed(2)
    X = torch.randn(9, 3, dtype=torch.float64)
    y = torch.randint(0, 4, (9,))
    model = nn.Linear(3, 4, bias=False).double()
    op = HessianOperator(model, cross_entropy, make_batches(X, y, 5))
    P = torch.softmax(X @ model.weight.detach().T, dim=1)
    # parameters are W (4 x 3) flattened row-major: index (c, j)
    expected = sum(torch.kron(torch.diag(p) - torch.outer(p, p), torch.outer(xi, xi)) for p, xi in zip(P, X)) / 9
    torch.testing.assert_close(_dense(op), expected, rtol=1e-10, atol=1e-12)


def test_parameter_subset_is_the_matching_block():
    model, x, y = _case("mlp")
    full = _dense(HessianOperator(model, None, _batches(x, y)))
    sub = _dense(HessianOperator(model, None, _batches(x, y), params=["3"]))  # last Linear layer
    k = sub.shape[0]
    torch.testing.assert_close(sub, full[-k:, -k:], rtol=1e-10, atol=1e-12)


def test_dropout_in_train_mode_is_refused():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.Dropout(0.5), nn.Tanh(), nn.Linear(8, 2)).double()
    x, y = torch.randn(6, 4, dtype=torch.float64), torch.randint(0, 2, (6,))
    with pytest.raises(NondeterministicOperatorError, match="--mode eval"):
        HessianOperator(model, None, make_batches(x, y, 3), mode="train")
    HessianOperator(model, None, make_batches(x, y, 3), mode="eval")  # fine


def test_operator_does_not_touch_the_callers_model():
    model, x, y = _case("bn")
    model.float()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    op = HessianOperator(model, None, _batches(x.float(), y), dtype=torch.float64)
    op @ torch.randn(op.shape[0], dtype=torch.float64)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert next(model.parameters()).dtype == torch.float32


@pytest.mark.parametrize("kind", ["mlp", "conv", "bn", "lstm"])
def test_every_product_scheme_matches_the_dense_hessian(kind):
    """HessianOperator times several exact schemes and keeps the fastest (single vectors:
    reverse-over-forward, reverse-over-reverse, forward-over-reverse; blocks: vmap or a
    retained first-backward graph; optionally cached graphs), so a wrong one could hide
    behind whichever wins on this machine. Check each one, on unequal batches 3 + 3 + 1
    (a short last batch) and on a parameter subset."""
    model, x, y = _case(kind)
    w0, logits = _flat(model)
    reference = hessian(lambda v: cross_entropy(logits(v, x), y))(w0)
    V = torch.randn(w0.numel(), 3, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    op = HessianOperator(model, cross_entropy, _batches(x, y))
    assert op.hvp_method in HessianOperator.SINGLE_METHODS  # picked by the determinism check's products
    last = op.names[-1].rsplit(".", 1)[0]
    sub = HessianOperator(model, cross_entropy, _batches(x, y), params=[last])
    k = sub.shape[0]
    for method in HessianOperator.SINGLE_METHODS:
        op.hvp_method = sub.hvp_method = method
        before = op.count
        torch.testing.assert_close(op @ V[:, 0], reference @ V[:, 0], rtol=1e-8, atol=1e-10)
        assert op.count == before + 1
        torch.testing.assert_close(sub @ V[-k:, 0], reference[-k:, -k:] @ V[-k:, 0], rtol=1e-8, atol=1e-10)
    for method in HessianOperator.BLOCK_METHODS:
        op.block_method = sub.block_method = method
        before = op.count
        torch.testing.assert_close(op @ V, reference @ V, rtol=1e-8, atol=1e-10)
        assert op.count == before + 3
        torch.testing.assert_close(sub @ V[-k:], reference[-k:, -k:] @ V[-k:], rtol=1e-8, atol=1e-10)
    cached = HessianOperator(model, cross_entropy, _batches(x, y), cache_graph=True)
    for _ in range(2):  # the kept graphs survive being used
        torch.testing.assert_close(cached @ V[:, 0], reference @ V[:, 0], rtol=1e-8, atol=1e-10)
        torch.testing.assert_close(cached @ V, reference @ V, rtol=1e-8, atol=1e-10)
    assert cached.count == 8
    estimate = op.estimate_graph_bytes()
    assert 0 < estimate and 0.2 < cached.cached_graph_bytes / estimate < 5
    # cache_graph="auto" (the default): decided at the second single product, exact either way
    for budget in (HessianOperator.AUTO_CACHE_BYTES, 0):
        auto = HessianOperator(model, cross_entropy, _batches(x, y))
        auto.AUTO_CACHE_BYTES = budget
        for j in range(4):
            torch.testing.assert_close(auto @ V[:, j % 3], reference @ V[:, j % 3], rtol=1e-8, atol=1e-10)
            assert (auto.cache_decision is None) == (j == 0)
        torch.testing.assert_close(auto @ V, reference @ V, rtol=1e-8, atol=1e-10)  # blocks: own schemes
        assert auto.count == 7 and auto.block_method is not None
        assert (auto._graph is not None) == auto.cache_decision.startswith("on") == (auto.cached_graph_bytes > 0)
        if budget == 0:
            assert auto.cache_decision == "off (graph too large)"
    # vmapped blocks stay under BLOCK_BYTES: one column per vmapped call on a zero budget, exact either way
    for budget, chunk in ((0, 1), (HessianOperator.BLOCK_BYTES, op.chunk_size)):
        bounded = HessianOperator(model, cross_entropy, _batches(x, y))
        bounded.BLOCK_BYTES = budget
        torch.testing.assert_close(bounded @ V, reference @ V, rtol=1e-8, atol=1e-10)
        assert bounded._vmap_chunk == chunk
        bounded.block_method = "vmap"
        torch.testing.assert_close(bounded @ V, reference @ V, rtol=1e-8, atol=1e-10)


class _WithIdleLayer(nn.Module):
    """An MLP beside a Linear layer the loss never uses: its rows of H are zero."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(6, 5), nn.Tanh(), nn.Linear(5, 3))
        self.idle = nn.Linear(2, 2)

    def forward(self, x):
        return self.net(x)


@pytest.mark.parametrize("idle", [False, True])
def test_vector_products_through_the_kept_graph_in_any_grad_mode(idle):
    """The single-vector fast path (``matvec`` straight to the kept graph): exact from the first
    product on, again from the second (the plain engine call once every leaf is known to be
    reached), under ``no_grad``, and with zero rows for parameters the loss never reaches."""
    model, x, y = _case("mlp")
    if idle:
        torch.manual_seed(0)
        model = _WithIdleLayer().double()
    w0, logits = _flat(model)
    reference = hessian(lambda v: cross_entropy(logits(v, x), y))(w0)
    op = HessianOperator(model, cross_entropy, _batches(x, y), cache_graph=True)
    V = torch.randn(op.shape[0], 3, dtype=torch.float64, generator=torch.Generator().manual_seed(9))
    for j in range(3):
        with torch.no_grad() if j == 2 else contextlib.nullcontext():
            torch.testing.assert_close(op @ V[:, j], reference @ V[:, j], rtol=1e-10, atol=1e-12)
    assert op.count == 3 and op._graph_reaches_all == (not idle)
    if idle:
        assert reference[-6:].abs().max() == 0  # the idle layer's 6 parameters
    torch.testing.assert_close(op @ V.numpy(), (reference @ V).numpy(), rtol=1e-10, atol=1e-12)  # numpy in, out


def test_product_schemes_agree_in_float32_on_a_float32_model():
    """Dual numbers and kept graphs respect the operator's dtype (float32 here)."""
    model, x, y = _case("conv")
    w0, logits = _flat(model)
    reference = hessian(lambda v: cross_entropy(logits(v, x), y))(w0)
    model = model.float()
    v = torch.randn(w0.numel(), generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    op = HessianOperator(model, cross_entropy, _batches(x.float(), y))
    for method in HessianOperator.SINGLE_METHODS:
        op.hvp_method = method
        out = op @ v.float()
        assert out.dtype == torch.float32
        torch.testing.assert_close(out.double(), reference @ v, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("kind", ["mlp", "conv", "lstm"])
def test_ggn_by_reverse_mode_twice_equals_the_forward_mode_products(kind):
    """The fallback for layers without forward-mode rules (the fused CUDA LSTM cell)."""
    model, x, y = _case(kind)
    fwd = GGNOperator(model, None, _batches(x, y))
    rev = GGNOperator(model, None, _batches(x, y))
    rev.jv_method = "reverse"
    V = torch.randn(fwd.shape[0], 3, dtype=torch.float64)
    want = fwd @ V
    assert fwd.jv_method == "forward"
    torch.testing.assert_close(rev @ V, want, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(rev @ V[:, 0], want[:, 0], rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("kind", ["mlp", "conv", "bn", "lstm"])
def test_both_graph_forms_give_the_hessian(kind):
    """The kept graph, per batch or over the concatenated batches: the same H v (unequal batches)."""
    model, x, y = _case(kind)
    w0, logits = _flat(model)
    reference = hessian(lambda v: cross_entropy(logits(v, x), y))(w0)
    op = HessianOperator(model, cross_entropy, _batches(x, y), cache_graph=True)
    assert op._graph_forms() == ["per-batch", "concatenated"]
    V = torch.randn(op.shape[0], 2, dtype=torch.float64, generator=torch.Generator().manual_seed(8))
    for form in op._graph_forms():
        op._build_graph(form)
        assert op.graph_form == form
        torch.testing.assert_close(op @ V[:, 0], reference @ V[:, 0], rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(op @ V, reference @ V, rtol=1e-10, atol=1e-12)
    assert op.cache_decision.startswith("on (")
    # batch statistics in train mode couple the samples of a batch: never concatenated
    train = HessianOperator(model, cross_entropy, _batches(x, y), mode="train", check_determinism=False)
    assert train._graph_forms() == ["per-batch"]


@pytest.mark.parametrize("kind", ["conv", "lstm"])
def test_within_a_workspace_the_products_are_the_same_hessian(kind):
    """within(1 byte): one-sample batches and one column per vmapped call, same dense matrix
    (the |b|/N weights keep the mean); a train-mode operator is left as it is."""
    model, x, y = _case(kind)
    w0, logits = _flat(model)
    reference = hessian(lambda v: cross_entropy(logits(v, x), y))(w0)
    op = HessianOperator(model, cross_entropy, _batches(x, y))
    small = op.within(1)
    assert small is not op and [int(b[0].shape[0]) for b in small.batches] == [1] * N
    assert small.BLOCK_BYTES == 1 and op.BLOCK_BYTES == HessianOperator.BLOCK_BYTES
    torch.testing.assert_close(_dense(small), reference, rtol=1e-8, atol=1e-10)
    assert small._vmap_chunk in (None, 1)
    assert op.within(HessianOperator.BLOCK_BYTES) is op
    train = HessianOperator(model, cross_entropy, _batches(x, y), mode="train")
    assert train.within(1) is train
