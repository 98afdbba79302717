"""Case 5: the dense Hessian, landscape vs the naive double-backward loop vs torch.func.hessian.

Sizes: MLPs of 805, 4,780 and 19,885 parameters (the issue's 1k / 5k / 20k) and a conv
net of 5,226 (a 20k conv net's naive loop would take over an hour here). Same model,
same N samples (the first N of Fashion-MNIST's training split when the Debian package
is installed, else seeded random images), float64 throughout:

* naive: the gradient once with ``create_graph=True``, then one ``autograd.grad`` of
  each gradient entry (one double-backward per row, reusing the graph: the floor every
  dense Hessian must beat);
* torch.func.hessian of the flat-parameter mean loss over all N at once (skipped where
  its forward-over-reverse Jacobian would not fit in memory);
* landscape.curvature.dense.dense_hessian: ``auto`` (for these piecewise-linear nets the
  largest Linear layer's block from its Kronecker form, and the other rows from HVP
  columns (MLP) or from the split form without any product through the net (conv net:
  landscape.curvature.dense_split)); the older forms for comparison: ``syrk`` (the GGN
  block by rank-k updates, HVP columns), ``kron`` (Kronecker block, HVP columns), and
  ``hvp`` (vmapped column blocks only; MLPs only: the conv net's takes ~18 min at
  N = 1000, and it is not a target figure).

Where the naive loop takes under a minute, it and landscape's auto build are timed three
times each, alternately, and the medians kept (a single pair of seconds-long runs moved the
MLP's ratio between 2.9x and 3.5x on this noisy machine). Each result is compared with the naive matrix (max relative entry difference) and the
eigendecomposition's share of the total is timed (scipy eigh, eigenvalues only).
Target (issue 3): landscape >= 3x faster than naive on ~5,000 parameters; not slower
than torch.func.hessian; peak memory within 1.2x of the matrix itself.
"""

from __future__ import annotations

import gc
import resource
import time

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, hessian

from benchmarks.memory import reset_peak, status_kb
from landscape.curvature.dense import AUTO_WORKSPACE_FLOOR, dense_hessian
from landscape.curvature.operators import HessianOperator, make_batches
from landscape.losses import cross_entropy
from landscape.platform.heap import bound_heap, trim_heap
from landscape.spectra.exact import exact_spectrum


def conv_net() -> nn.Module:
    """A small LeNet-like net of 5,226 parameters (conv 6, conv 12, fc 16)."""
    return nn.Sequential(
        nn.Conv2d(1, 6, 5), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(6, 12, 5), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(192, 16), nn.ReLU(), nn.Linear(16, 10),
    )


def mlp_net(hidden: int = 6) -> nn.Module:
    """small-mnistfc with ``hidden`` units on 28x28: 795 hidden + 10 parameters (6: 4,780;
    1: 805; 25: 19,885, the issue's 1k / 5k / 20k sizes)."""
    return nn.Sequential(nn.Flatten(), nn.Linear(784, hidden), nn.ReLU(), nn.Linear(hidden, 10))


def data(n: int) -> tuple[torch.Tensor, torch.Tensor, str]:
    try:
        from landscape.data import load_dataset

        ds = load_dataset("fashion-mnist", "train", download=False)
        return ds.inputs[:n].double(), ds.targets[:n], "fashion-mnist (first N of train)"
    except Exception:
        g = torch.Generator().manual_seed(0)
        return torch.randn(n, 1, 28, 28, generator=g, dtype=torch.float64), torch.randint(0, 10, (n,), generator=g), "random"


def naive(model: nn.Module, x, y, out: np.ndarray | None = None) -> np.ndarray:
    params = [p for p in model.parameters()]
    loss = cross_entropy(model(x), y)
    grads = torch.autograd.grad(loss, params, create_graph=True)
    g = torch.cat([t.reshape(-1) for t in grads])
    n = g.numel()
    H = np.empty((n, n)) if out is None else out
    for j in range(n):
        row = torch.autograd.grad(g[j], params, retain_graph=True)
        H[j] = torch.cat([r.reshape(-1) for r in row]).numpy()
    return H


def func_hessian(model: nn.Module, x, y) -> np.ndarray:
    names = [k for k, _ in model.named_parameters()]
    shapes = [p.shape for _, p in model.named_parameters()]
    sizes = [p.numel() for _, p in model.named_parameters()]
    w0 = torch.cat([p.detach().reshape(-1) for p in model.parameters()])

    def loss(w):
        params = {k: t.view(s) for k, t, s in zip(names, torch.split(w, sizes), shapes)}
        return cross_entropy(functional_call(model, params, (x,)), y)

    return hessian(loss)(w0).numpy()


def activation_floats(model: nn.Module, x) -> int:
    total = 0

    def hook(_, __, out):
        nonlocal total
        total += out.numel()

    handles = [m.register_forward_hook(hook) for m in model.modules() if not list(m.children())]
    with torch.no_grad():
        model(x)
    for h in handles:
        h.remove()
    return total


# a naive loop under this many seconds is timed three times (with landscape's auto build)
CHEAP_S = 60.0


def _timed(fn, label: str = "", peak: list | None = None):
    """``(result, seconds)``; prints the label before and the time after, so a long case shows where it is.

    With ``peak`` (a list), appends the bytes the call added to the peak resident set
    (VmHWM after minus VmRSS before), or None where /proc cannot say.
    """
    gc.collect()
    trim_heap()  # what earlier builds freed is not counted against this one
    if label:
        print(f"[dense] {label} ...", flush=True)
    base = status_kb("VmRSS") if peak is not None and reset_peak() else None
    start = time.perf_counter()
    out = fn()
    elapsed = time.perf_counter() - start
    if peak is not None:
        high = status_kb("VmHWM")
        peak.append(None if base is None or high is None else (high - base) * 1024)
    if label:
        print(f"[dense] {label}: {elapsed:.1f} s", flush=True)
    return out, elapsed


def _touched_buffers(n: int, count: int = 3) -> tuple[list[np.ndarray], float]:
    """``count`` n x n float64 arrays, every page written once; and the seconds per array.

    Every timed build writes into one of these (``out=``). On this virtual machine the first
    write to memory the process has not used lately costs about 2.6 s per GB (the host backs
    the pages then; freed pages go back to it within seconds): 8 s for the 3.2 GB matrix of
    the 19,885-parameter MLP, against 0.3 s to rewrite it. Fresh arrays per build charged
    that to whichever build found its pages cold (the first landscape build: 10 s, then
    3.5 s), so all builds share warm buffers and the cost is reported on its own.
    """
    start = time.perf_counter()
    buffers = [np.empty((n, n)) for _ in range(count)]
    for b in buffers:
        b.fill(0.0)
    return buffers, (time.perf_counter() - start) / count


def _warm_up() -> None:
    """Pay torch.func's one-time start-up (about 1.3 s for the first vmap here) outside every timing.

    Without it, whichever method runs first in the process carries that cost: landscape's
    dense builder (which times its block schemes with vmap) was charged 1.9 s instead of
    0.6-0.8 s on the 4,780-parameter MLP at N = 64.
    """
    tiny = nn.Sequential(nn.Flatten(), nn.Linear(784, 2), nn.ReLU(), nn.Linear(2, 10)).double().eval()
    x, y = torch.randn(8, 1, 28, 28, dtype=torch.float64), torch.arange(8) % 10
    dense_hessian(HessianOperator(tiny, None, make_batches(x, y, 8)), progress=False, method="auto")
    func_hessian(tiny, x, y)
    naive(tiny, x, y)


def case(name: str, model: nn.Module, n_samples: int, batch_size: int, *, conv: bool = False,
         quick: bool = False) -> dict:
    _warm_up()
    torch.manual_seed(0)
    model = model.double().eval()
    x, y, source = data(n_samples)
    n = sum(p.numel() for p in model.parameters())
    result = {"model": name, "n_params": n, "samples": n_samples, "data": source, "batch_size": batch_size,
              "matrix_mb": n * n * 8 / 2**20}
    (buf_naive, buf_auto, buf_other), result["first_touch_s_per_matrix"] = _touched_buffers(n)
    naive_peak, auto_peak = [], []
    H_naive, t_naive = _timed(lambda: naive(model, x, y, out=buf_naive), f"{name} naive loop", naive_peak)
    op = HessianOperator(model, None, make_batches(x, y, batch_size))
    H_auto, t_auto = _timed(lambda: dense_hessian(op, progress=False, method="auto", out=buf_auto),
                            f"{name} landscape auto", auto_peak)
    matrix_bytes = n * n * 8
    for label, got in (("naive", naive_peak[0]), ("landscape_auto", auto_peak[0])):
        # the output buffer is resident before the call: peak = matrix + the build's workspace
        result[f"{label}_workspace_mb"] = None if got is None else got / 2**20
        result[f"{label}_peak_vs_matrix"] = None if got is None else 1.0 + got / matrix_bytes
    naive_times, auto_times = [t_naive], [t_auto]
    if t_naive < CHEAP_S:  # seconds each: time both twice more, alternately, and keep the medians
        for _ in range(2):
            naive_times.append(_timed(lambda: naive(model, x, y, out=buf_naive))[1])
            fresh = HessianOperator(model, None, make_batches(x, y, batch_size))  # its timed choices made afresh
            auto_times.append(_timed(lambda: dense_hessian(fresh, progress=False, method="auto", out=buf_auto))[1])
    # the same build without the workspace budget (the fixed caps of 2026-12-05): time and memory it buys
    open_peak = []
    fresh = HessianOperator(model, None, make_batches(x, y, batch_size))
    _, result["landscape_unbudgeted_s"] = _timed(
        lambda: dense_hessian(fresh, progress=False, method="auto", out=buf_other, workspace=None),
        f"{name} landscape auto without a workspace budget", open_peak)
    got = open_peak[0]
    result["landscape_unbudgeted_workspace_mb"] = None if got is None else got / 2**20
    result["landscape_unbudgeted_peak_vs_matrix"] = None if got is None else 1.0 + got / matrix_bytes
    result["naive_s"], result["landscape_auto_s"] = float(np.median(naive_times)), float(np.median(auto_times))
    result["budget_time_ratio"] = result["landscape_auto_s"] / result["landscape_unbudgeted_s"]
    result["naive_times_s"], result["landscape_auto_times_s"] = naive_times, auto_times
    scale = np.abs(H_naive).max()
    result["auto_vs_naive_max_rel"] = float(np.abs(H_auto - H_naive).max() / scale)
    forms = ["syrk", "kron"] if conv else ["syrk"]
    for form in forms:
        H_form, result[f"landscape_{form}_s"] = _timed(
            lambda: dense_hessian(op, progress=False, method="ggn", ggn_form=form, out=buf_other), f"{name} landscape {form}")
        result[f"{form}_vs_naive_max_rel"] = float(np.abs(H_form - H_naive).max() / scale)
        del H_form
    if conv:
        result["landscape_hvp_s"] = None
    else:
        H_hvp, result["landscape_hvp_s"] = _timed(lambda: dense_hessian(op, progress=False, method="hvp", out=buf_other),
                                                         f"{name} landscape hvp")
        result["hvp_vs_naive_max_rel"] = float(np.abs(H_hvp - H_naive).max() / scale)
        del H_hvp
    # torch.func.hessian materialises n tangents of every activation: skip if > 6 GB
    need = activation_floats(model, x) * n * 8 * 3
    result["func_hessian_estimated_gb"] = need / 1e9
    if need < 6e9:
        H_func, result["func_hessian_s"] = _timed(lambda: func_hessian(model, x, y), f"{name} torch.func.hessian")
        result["func_vs_naive_max_rel"] = float(np.abs(H_func - H_naive).max() / scale)
        del H_func
    else:
        result["func_hessian_s"] = None
    spectrum, result["eigensolve_s"] = _timed(lambda: exact_spectrum(H_auto, overwrite=True), f"{name} eigensolve")
    result["eigensolve_share_of_landscape"] = result["eigensolve_s"] / (result["eigensolve_s"] + result["landscape_auto_s"])
    result["speedup_vs_naive"] = result["naive_s"] / result["landscape_auto_s"]
    if result["landscape_hvp_s"]:
        result["speedup_hvp_vs_naive"] = result["naive_s"] / result["landscape_hvp_s"]
    for form in forms:
        result[f"auto_vs_{form}"] = result[f"landscape_{form}_s"] / result["landscape_auto_s"]
    if result["func_hessian_s"]:
        result["speedup_vs_func_hessian"] = result["func_hessian_s"] / result["landscape_auto_s"]
    result["peak_rss_mb_process"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return result


def run(quick: bool = False) -> dict:
    n_samples = 256 if quick else 1000
    # every method in this process under the allocator setting landscape's dense builds use (see landscape.platform.heap)
    heap = "glibc mmap threshold fixed at 4 MiB" if bound_heap() else "allocator default"
    return {"case": "dense", "heap": heap, "cases": [case("mlp-805", mlp_net(1), n_samples, 256, quick=quick),
                                       case("mlp-4780", mlp_net(), n_samples, 256, quick=quick),
                                       case("conv-5226", conv_net(), n_samples, 256, conv=True, quick=quick),
                                       case("mlp-19885", mlp_net(25), n_samples, 256, quick=quick)]}


def table(result: dict) -> str:
    lines = ["| model | n | N | naive | torch.func.hessian | landscape (auto) | syrk form | kron form | hvp only | "
             "speed-up vs naive (target >= 3) | vs func.hessian | max rel. diff | peak memory / matrix (target <= 1.2) | "
             "eigensolve share | without the workspace budget: time, peak / matrix |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]

    def secs(value):
        return f"{value:.1f} s" if value else "-"

    def ratio(c, label):
        value = c.get(f"{label}_peak_vs_matrix")
        return f"{value:.2f}" if value is not None else "-"

    def budget(c):
        if c.get("landscape_unbudgeted_s") is None:
            return "-"
        return (f"{c['landscape_unbudgeted_s']:.1f} s ({c['budget_time_ratio']:.2f}x with it), "
                f"{ratio(c, 'landscape_unbudgeted')}")

    for c in result["cases"]:
        func = f"{c['func_hessian_s']:.1f} s" if c["func_hessian_s"] else f"skipped (~{c['func_hessian_estimated_gb']:.0f} GB)"
        vs_func = f"{c['speedup_vs_func_hessian']:.1f}x" if c.get("speedup_vs_func_hessian") else "-"
        lines.append(
            f"| {c['model']} | {c['n_params']} | {c['samples']} | {c['naive_s']:.1f} s | {func} | {c['landscape_auto_s']:.1f} s | "
            f"{secs(c.get('landscape_syrk_s'))} | {secs(c.get('landscape_kron_s'))} | {secs(c.get('landscape_hvp_s'))} | "
            f"{c['speedup_vs_naive']:.1f}x | {vs_func} | {c['auto_vs_naive_max_rel']:.1e} | {ratio(c, 'landscape_auto')} "
            f"(naive {ratio(c, 'naive')}) | {c['eigensolve_share_of_landscape']:.0%} | {budget(c)} |"
        )
    lines += ["", "naive and landscape (auto): medians of three alternating runs where the naive loop takes under "
              f"{CHEAP_S:.0f} s (the MLP), one run each otherwise. Every build writes into an n x n buffer "
              "allocated and written once before the timings (on this VM the first write to fresh memory costs about "
              "2.6 s per GB, whichever method meets it). Peak memory: (matrix + what the first build added to the "
              "process's peak resident set) / matrix. The build's workspace budget (`dense_hessian(workspace=...)`, "
              "default max(16 MiB, matrix / 12)) is compared with the same build without it, timed once. "
              "hvp only: not run on the conv net (~18 min at N = 1000; not a target figure)."]
    floor_mb = AUTO_WORKSPACE_FLOOR / 2**20
    for c in result["cases"]:
        value = c.get("landscape_auto_peak_vs_matrix")
        if value is None or value <= 1.2:
            continue
        why = (f"its {c['matrix_mb']:.0f} MB matrix is smaller than the budget's floor ({floor_mb:.0f} MiB): the "
               f"target leaves {0.2 * c['matrix_mb']:.1f} MB, less than a product over its N samples takes, and a "
               "budget that small made the build slower than the naive loop (0.95 s against 0.3 s in a probe)"
               if c["matrix_mb"] < floor_mb else "above the target")
        lines += ["", f"{c['model']}: the build added {c['landscape_auto_workspace_mb']:.1f} MB ({value:.2f}x); {why}."]
    return "\n".join(lines)
