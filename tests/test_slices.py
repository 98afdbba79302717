"""Loss-landscape slices against closed forms: a quadratic's paraboloid, Dinh et al.'s rescaling
invariance, a dense Hessian's eigenvector, the per-point loop, the two runs at a path's ends."""

import json

import numpy as np
import pytest
import torch
from digits_reference import flat_loss, train_tiny_digits_run
from torch import nn
from typer.testing import CliRunner

from landscape.cli.app import app
from landscape.slices import (
    SliceConfig,
    barrier_height,
    compute_slice,
    evaluate_points,
    evaluate_points_loop,
    filter_normalize,
    find_slices,
    hessian_directions,
    interpolation_grid,
    random_direction,
    read_slice,
    square_grid,
    weights_of,
)
from landscape.slices.directions import direction_seeds

runner = CliRunner()


def squared_error(outputs, targets, reduction="sum"):
    return ((outputs - targets) ** 2).sum()


def no_error(outputs, targets):
    return torch.zeros((), dtype=torch.long)


def test_filter_normalised_slice_of_a_quadratic_is_its_paraboloid():
    # L(W, b) = mean_ij ((X W^T + b - Y)_ij)^2; rows of W with very different norms, so that a
    # direction normalised as a whole (not per filter) would give other coefficients
    g = torch.Generator().manual_seed(3)
    X = torch.randn(40, 5, generator=g, dtype=torch.float64)
    Y = torch.randn(40, 3, generator=g, dtype=torch.float64)
    model = nn.Linear(5, 3).double()
    with torch.no_grad():
        model.weight.mul_(torch.tensor([[0.1], [1.0], [10.0]], dtype=torch.float64))
    W, b = model.weight.detach(), model.bias.detach()
    seeds = (11, 12)
    # the expected directions, built by hand: the same Gaussian draw, each row scaled to its weight row's norm
    expected = []
    for seed in seeds:
        gen = torch.Generator().manual_seed(seed)
        z = torch.randn(W.shape, generator=gen, dtype=torch.float64)
        torch.randn(b.shape, generator=gen, dtype=torch.float64)  # drawn, then zeroed (Li et al.)
        expected.append(z / z.norm(dim=1, keepdim=True) * W.norm(dim=1, keepdim=True))
    directions = [random_direction(weights_of(model), s) for s in seeds]
    for d, e in zip(directions, expected):
        torch.testing.assert_close(d.tensors["weight"], e, rtol=1e-14, atol=0)
        assert torch.all(d.tensors["bias"] == 0)
    # L(a, c) = |R + a X D1^T + c X D2^T|^2 / (N k): a paraboloid with coefficients in closed form
    R, A1, A2 = X @ W.T + b - Y, X @ expected[0].T, X @ expected[1].T
    m = Y.numel()
    c0, c1, c2 = (R * R).sum() / m, 2 * (R * A1).sum() / m, 2 * (R * A2).sum() / m
    c11, c22, c12 = (A1 * A1).sum() / m, (A2 * A2).sum() / m, 2 * (A1 * A2).sum() / m
    grid = square_grid(2, 0.7, 5)
    a, c = grid.coords[:, 0], grid.coords[:, 1]
    c0, c1, c2, c11, c22, c12 = (float(v) for v in (c0, c1, c2, c11, c22, c12))
    closed = c0 + c1 * a + c2 * c + c11 * a * a + c22 * c * c + c12 * a * c
    values = evaluate_points(model, weights_of(model), directions, grid.coords, X, Y, chunk_size=16,
                             points_per_pass=7, dtype=torch.float64, loss_fn=squared_error, error_fn=no_error)
    np.testing.assert_allclose(values.loss, closed, rtol=1e-12)


def _relu_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 6), nn.ReLU(), nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3)).double()


@pytest.mark.parametrize("keep_bias_bn", [False, True])
def test_filter_normalised_slice_is_invariant_to_dinh_rescaling(keep_bias_bn):
    net = _relu_net()
    rescaled = _relu_net()
    with torch.no_grad():  # layer 0 times 4, layer 2 divided by 4: the same function
        rescaled[0].weight.mul_(4.0)
        rescaled[0].bias.mul_(4.0)
        rescaled[2].weight.div_(4.0)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(64, 8, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (64,), generator=g)
    torch.testing.assert_close(net(x), rescaled(x), rtol=1e-13, atol=1e-13)
    coords = square_grid(2, 1.0, 5).coords

    def slice_of(model, normalization):
        weights = weights_of(model)
        dirs = [random_direction(weights, s, normalization=normalization, keep_bias_bn=keep_bias_bn) for s in (5, 6)]
        return evaluate_points(model, weights, dirs, coords, x, y, dtype=torch.float64).loss

    np.testing.assert_allclose(slice_of(rescaled, "filter"), slice_of(net, "filter"), rtol=1e-12)
    raw, raw_rescaled = slice_of(net, "none"), slice_of(rescaled, "none")
    assert np.max(np.abs(raw - raw_rescaled) / raw) > 0.05  # without filter normalisation the picture changes


def test_filter_normalize_matches_every_filter_norm_and_zeroes_or_keeps_one_dimensional_parameters():
    conv = nn.Conv2d(3, 4, 3)
    weights = weights_of(conv)
    raw = {n: torch.randn_like(w) for n, w in weights.items()}
    for keep in (False, True):
        d = filter_normalize(raw, weights, keep_bias_bn=keep)
        torch.testing.assert_close(d["weight"].flatten(1).norm(dim=1), weights["weight"].flatten(1).norm(dim=1))
        if keep:
            torch.testing.assert_close(d["bias"], raw["bias"] * weights["bias"].norm() / raw["bias"].norm())
        else:
            assert torch.all(d["bias"] == 0)


class _BNConv(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 3, 3)
        self.bn = nn.BatchNorm2d(3)
        self.fc = nn.Linear(3 * 4 * 4, 4)

    def forward(self, x):
        return self.fc(torch.relu(self.bn(self.conv(x))).flatten(1))


def test_vmapped_grid_equals_the_per_point_loop_with_batchnorm_statistics():
    torch.manual_seed(2)
    model = _BNConv().double().eval()
    with torch.no_grad():
        model.bn.running_mean.uniform_(-0.5, 0.5)
        model.bn.running_var.uniform_(0.5, 2.0)
    x = torch.randn(23, 2, 6, 6, dtype=torch.float64)
    y = torch.randint(0, 4, (23,))
    weights = weights_of(model)
    dirs = [random_direction(weights, s, keep_bias_bn=True) for s in (1, 2)]
    coords = square_grid(2, 1.5, 5).coords
    batched = evaluate_points(model, weights, dirs, coords, x, y, chunk_size=7, points_per_pass=4, dtype=torch.float64)
    loop = evaluate_points_loop(model, weights, dirs, coords, x, y, chunk_size=7, dtype=torch.float64)
    np.testing.assert_allclose(batched.loss, loop.loss, rtol=1e-10)
    np.testing.assert_array_equal(batched.error, loop.error)
    assert len(np.unique(batched.error)) > 1  # the grid reaches points that classify differently
    # the running statistics were used, not the batch's: a train-mode forward gives another centre value
    centre = evaluate_points(model, weights, dirs, np.zeros((1, 2)), x, y, dtype=torch.float64).loss[0]
    with torch.no_grad():
        reference = float(nn.functional.cross_entropy(model(x), y))
    assert centre == pytest.approx(reference, rel=1e-12)


def test_data_layer_responses_are_reused_exactly_also_through_a_view_of_the_data(monkeypatch):
    import landscape.slices.datalayer as datalayer

    replayed = []
    real = datalayer.DataLayers.__torch_function__

    def counting(self, func, types, args=(), kwargs=None):
        if func in datalayer._LINEAR_IN_WEIGHT and not self.recording and self.names.get(id(args[1])) in self.responses:
            replayed.append(self.names[id(args[1])])
        return real(self, func, types, args, kwargs)

    monkeypatch.setattr(datalayer.DataLayers, "__torch_function__", counting)
    torch.manual_seed(5)
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 7), nn.ReLU(), nn.Linear(7, 3)).double()
    x, y = torch.randn(10, 3, 4, dtype=torch.float64), torch.randint(0, 3, (10,))
    weights = weights_of(model)
    dirs = [random_direction(weights, s, keep_bias_bn=True) for s in (1, 2)]
    coords = square_grid(2, 1.0, 3).coords
    fast = evaluate_points(model, weights, dirs, coords, x, y, chunk_size=4, points_per_pass=5, dtype=torch.float64)
    assert replayed and set(replayed) == {"1.weight"}  # the first Linear sees a view of the data: reused
    plain = evaluate_points(model, weights, dirs, coords, x, y, chunk_size=4, points_per_pass=5, dtype=torch.float64,
                            data_layers=False)
    loop = evaluate_points_loop(model, weights, dirs, coords, x, y, dtype=torch.float64)
    np.testing.assert_allclose(fast.loss, loop.loss, rtol=1e-12)
    np.testing.assert_allclose(plain.loss, loop.loss, rtol=1e-12)


def test_hessian_direction_is_the_top_eigenvector_scaled_to_the_weights():
    torch.manual_seed(4)
    model = nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 3)).double()
    x = torch.randn(30, 4, dtype=torch.float64)
    y = torch.randint(0, 3, (30,))
    weights = weights_of(model)
    names, shapes = list(weights), [w.shape for w in weights.values()]
    sizes = [w.numel() for w in weights.values()]
    w0 = torch.cat([w.reshape(-1) for w in weights.values()])

    def loss(v):
        params = {n: t.view(s) for n, t, s in zip(names, torch.split(v, sizes), shapes)}
        return nn.functional.cross_entropy(torch.func.functional_call(model, params, (x,)), y)

    evals, evecs = torch.linalg.eigh(torch.autograd.functional.hessian(loss, w0))
    found = hessian_directions(model, [(x, y)], k=2, tol=1e-8)
    for d, index in zip(found, (-1, -2)):
        assert d.eigenvalue == pytest.approx(float(evals[index]), rel=1e-8)
        assert d.norm() == pytest.approx(float(w0.norm()), rel=1e-12)
        assert abs(float(d.flat() @ evecs[:, index])) / d.norm() == pytest.approx(1.0, abs=1e-6)
    both = hessian_directions(model, [(x, y)], which="both", tol=1e-8)
    assert [d.label for d in both] == ["top", "bottom"]
    assert both[1].eigenvalue == pytest.approx(float(evals[0]), rel=1e-6, abs=1e-8)


def test_barrier_height_and_interpolation_grid():
    t = interpolation_grid(5, 0.25).axes[0]
    assert 0.0 in t and 1.0 in t and t.min() == -0.25 and t.max() == 1.25
    values = np.array([9.0, 1.0, 2.0, 5.0, 3.0, 9.0])
    t = np.array([-0.5, 0.0, 0.3, 0.6, 1.0, 1.5])
    assert barrier_height(t, values) == 5.0 - 3.0  # outside [0, 1] does not count


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("slices")
    return train_tiny_digits_run(root / "a", epochs=2), train_tiny_digits_run(root / "b", epochs=4)


def test_interpolation_endpoints_are_the_two_runs_losses(two_runs):
    a, b = two_runs
    out, summary = compute_slice(SliceConfig(str(a), to=str(b), dims=1, points=6, samples=100, dtype="float64",
                                             device="cpu"), progress=False)
    assert out == a / f"slice-to-{b.name}"
    for run, key in ((a, "centre"), (b, "endpoint")):
        loss, w = flat_loss(run, 100)
        assert summary[key]["train"]["loss"] == pytest.approx(float(loss(w)), rel=1e-10)
    held, saved = read_slice(out)
    assert held == json.loads((out / "slice.json").read_text()) and out in find_slices(a)
    t, train_loss = saved["axis_0"], saved["train_loss"]
    assert train_loss[np.argmin(np.abs(t))] == pytest.approx(summary["centre"]["train"]["loss"], rel=1e-12)
    assert summary["barrier"]["train_loss"] == pytest.approx(barrier_height(t, train_loss))
    np.testing.assert_allclose(saved["weights"] + saved["directions"][0], flat_loss(b, 1)[1].numpy(), rtol=1e-6)


def test_slice_help_fits_80_columns():
    text = runner.invoke(app, ["slice", "--help"], terminal_width=80).output
    assert max(len(line) for line in text.splitlines()) <= 80
    assert "--points-per-pass" in text and "running statistics" in text


def test_cli_writes_a_2d_random_slice_and_refuses_bad_input(two_runs):
    a, b = two_runs
    result = runner.invoke(app, ["slice", str(a), "--dims", "2", "--points", "4", "--samples", "50", "--range", "0.5",
                                 "--seed", "3", "--device", "cpu", "--quiet"])
    assert result.exit_code == 0, result.output
    out = a / "slice-random-2d"
    summary = json.loads((out / "slice.json").read_text())
    saved = np.load(out / "slice.npz")
    assert saved["train_loss"].shape == (4, 4) and saved["test_error"].shape == (4, 4)
    assert saved["directions"].shape == (2, 310)
    np.testing.assert_allclose(saved["axis_1"], np.linspace(-0.5, 0.5, 4))
    assert [d["seed"] for d in summary["directions"]] == direction_seeds(3, 2)
    assert summary["samples"] == {"train": 50, "test": 50} and summary["wall_s"] > 0
    loss, w = flat_loss(a, 50)
    i, j = 1, 2
    step = saved["axis_0"][i] * saved["directions"][0] + saved["axis_1"][j] * saved["directions"][1]
    point = w + torch.as_tensor(step)
    assert saved["train_loss"][i, j] == pytest.approx(float(loss(point)), rel=1e-5)  # float32 evaluation
    again = runner.invoke(app, ["slice", str(a), "--dims", "2", "--points", "4", "--samples", "50", "--seed", "4",
                                "--range", "0.5", "--device", "cpu", "--quiet"])
    assert again.exit_code == 2 and "--force" in again.output
    hessian = runner.invoke(app, ["slice", str(a), "--directions", "hessian", "--which", "both", "--points", "3",
                                  "--samples", "40", "--device", "cpu", "--quiet"])
    assert hessian.exit_code == 0, hessian.output
    found = json.loads((a / "slice-hessian-both-2d" / "slice.json").read_text())["directions"]
    assert [d["label"] for d in found] == ["top", "bottom"] and found[0]["eigenvalue"] > found[1]["eigenvalue"]
    for bad in (["--to", str(b), "--dims", "2"], ["--points", "1"], ["--range", "nan"], ["--to", str(a / "nothing")],
                ["--which", "both"], ["--directions", "hessian", "--which", "both", "--dims", "1"]):
        result = runner.invoke(app, ["slice", str(a), "--quiet", *bad])
        assert result.exit_code == 2, (bad, result.output)
        lines = [line for line in result.output.splitlines() if line.strip()]
        assert "Traceback" not in result.output and len(lines) <= 3


def test_slice_figures_draw_the_given_values_with_labelled_axes():
    from matplotlib.colors import LogNorm

    from landscape.plots import draw_slice_1d, draw_slice_contour, draw_slice_heatmap, draw_slice_surface, new_figure

    x, y = np.linspace(-1, 1, 9), np.linspace(-1, 1, 7)
    values = 0.5 + np.add.outer(x ** 2, 3 * y ** 2)  # a paraboloid, minimum 0.5 at the centre
    fig, ax = new_figure()
    draw_slice_contour(ax, x, y, values, levels=[0.7, 1.5, 3.0])
    assert {float(t.get_text()) for t in ax.texts} == {0.7, 1.5, 3.0}  # every level labelled with its value
    assert ax.get_xlabel() and ax.get_ylabel()
    fig, ax = new_figure()
    draw_slice_heatmap(ax, x, y, values)
    mesh = ax.collections[0]
    assert isinstance(mesh.norm, LogNorm) and mesh.norm.vmin == 0.5 and mesh.norm.vmax == 4.5
    np.testing.assert_allclose(np.asarray(mesh.get_array()).reshape(7, 9), values.T)
    assert all(a.get_xlabel() or a.get_ylabel() for a in fig.axes)  # the colour bar is labelled too
    with pytest.raises(ValueError):
        draw_slice_heatmap(ax, x, y, values - 1)  # not positive: no log scale
    fig, ax = new_figure(subplot_kw={"projection": "3d"})
    draw_slice_surface(ax, x, y, values)
    assert ax.get_xlabel() and ax.get_ylabel() and ax.get_zlabel() == "train loss"
    fig, ax = new_figure()
    t = np.linspace(-0.25, 1.25, 7)
    curves = {"train_loss": t ** 2 + 1, "test_loss": t ** 2 + 2, "train_error": 0.1 + 0 * t, "test_error": 0.2 + 0 * t}
    draw_slice_1d(ax, t, curves, path=True, barrier={"train_loss": 0.25})
    twin = [a for a in fig.axes if a is not ax][0]
    np.testing.assert_allclose(ax.lines[0].get_ydata(), curves["train_loss"])
    np.testing.assert_allclose(twin.lines[1].get_ydata(), curves["test_error"])
    assert ax.get_ylabel() == "loss" and twin.get_ylabel() == "error" and ax.get_xlabel()
    assert "barrier: train loss 0.25" in [text.get_text() for text in ax.texts]
    with pytest.raises(ValueError):
        draw_slice_contour(ax, x, y, values.T)


class _TinyLSTM(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(6, 4)
        self.lstm = nn.LSTM(4, 5, batch_first=True)
        self.out = nn.Linear(5, 6)

    def forward(self, x):
        return self.out(self.lstm(self.embed(x))[0])


def test_a_layer_without_a_vmap_rule_falls_back_to_the_loop():
    from landscape.slices.stage import _evaluate_split

    torch.manual_seed(6)
    model = _TinyLSTM().double().eval()
    x, y = torch.randint(0, 6, (3, 7)), torch.randint(0, 6, (3, 7))
    weights = weights_of(model)
    dirs = [random_direction(weights, 1)]
    coords = square_grid(1, 1.0, 3).coords
    done = []
    values, method = _evaluate_split(model, weights, dirs, coords, x, y,
                                     dict(chunk_size=2, points_per_pass=2, dtype=torch.float64, device="cpu"),
                                     done.append)
    assert method == "loop" and sum(done) == 3
    with torch.no_grad():
        centre = float(nn.functional.cross_entropy(model(x).reshape(-1, 6), y.reshape(-1)))
    assert values.loss[1] == pytest.approx(centre, rel=1e-12)  # per-token mean, as the training loss


def test_points_per_pass_follow_the_activation_budget():
    from landscape.slices.grid import auto_points_per_pass

    model = nn.Sequential(nn.Linear(10, 1000), nn.ReLU(), nn.Linear(1000, 2))  # largest output: 4,000 B a sample
    x = torch.randn(500, 10)
    assert auto_points_per_pass(model, x, 100, budget=3 * 4000 * 100 * 10, cap=64) == 10
    assert auto_points_per_pass(model, x[:50], 100, budget=3 * 4000 * 100 * 10, cap=64) == 20  # 50 samples a pass
    assert auto_points_per_pass(model, x, 100, budget=1, cap=64) == 1
    assert auto_points_per_pass(model, x, 1, cap=7) == 7
