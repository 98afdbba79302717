"""Shared fixtures for the curvature benchmarks: one model, one data set, every library.

Each case builds a :class:`Problem` (a model in a given dtype and eval mode, N samples
split in batches, the mean cross-entropy) and hands the SAME problem to landscape and
to each peer library, so that timings and answers are comparable. The peers
(PyHessian, curvlinops, BackPACK, hessian-eigenthings) are an optional extra
(``pip install -e .[bench]``): :func:`peer_status` records which import, with the
exact error for those that do not, and every case skips a missing peer.

The loss is the mean over all N samples, ``L = sum_b (|b|/N) mean_{i in b} l_i``
(DESIGN.md sec. 4). Each peer is driven through its documented public entry point; an
adapter only converts between flat vectors and the peer's parameter-list format. Where
a peer averages batches differently, its answer will differ, and the cases report that
as a finding rather than patch it.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import importlib
import importlib.metadata
import math
import statistics
import time
import traceback
from dataclasses import dataclass, field
from typing import Callable, Iterator

import torch
from torch import nn

from landscape.curvature.operators import HessianOperator, make_batches
from landscape.losses import cross_entropy
from landscape.models import build_model

Batch = tuple[torch.Tensor, torch.Tensor]
HVP = Callable[[torch.Tensor], torch.Tensor]

# peer name -> (import name, PyPI distribution)
PEERS = {
    "pyhessian": ("pyhessian", "pyhessian"),
    "curvlinops": ("curvlinops", "curvlinops-for-pytorch"),
    "backpack": ("backpack", "backpack-for-pytorch"),
    "eigenthings": ("hessian_eigenthings", "hessian-eigenthings"),
}


# -- peers -----------------------------------------------------------------------------
def peer_status() -> dict[str, dict]:
    """For each peer: importable or not, its version, and the exact import error."""
    status = {}
    for name, (module, dist) in PEERS.items():
        entry: dict = {"distribution": dist, "available": False, "version": None, "error": None}
        try:
            entry["version"] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            entry["error"] = f"not installed (pip install {dist}, or pip install -e .[bench])"
            status[name] = entry
            continue
        try:
            importlib.import_module(module)
            entry["available"] = True
        except Exception as exc:  # a peer that breaks on import is a finding, not a crash
            entry["error"] = f"{type(exc).__name__}: {exc}"
        status[name] = entry
    return status


def peer(name: str):
    """The peer's module, or None if it is missing or fails to import."""
    try:
        return importlib.import_module(PEERS[name][0])
    except Exception:
        return None


@contextlib.contextmanager
def default_dtype(dtype: torch.dtype) -> Iterator[None]:
    """PyHessian draws its random vectors with torch's default dtype: match the model's."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(old)


@contextlib.contextmanager
def torch_eig_shim() -> Iterator[None]:
    """Provide a working ``torch.eig`` (removed in torch 2: PyHessian's ``density`` calls it).

    Returns what the old API did for a symmetric matrix: eigenvalues as an (m, 2)
    [real, imag] tensor and the eigenvectors as columns. Used only where a case says
    "(torch.eig shim)": without it PyHessian's density raises.
    """
    original = getattr(torch, "eig", None)

    def eig(T: torch.Tensor, eigenvectors: bool = False):
        w, V = torch.linalg.eigh(T.double())
        vals = torch.stack([w, torch.zeros_like(w)], dim=1).to(T.dtype)
        return vals, (V.to(T.dtype) if eigenvectors else torch.empty(0, dtype=T.dtype))

    torch.eig = eig  # type: ignore[attr-defined]
    try:
        yield
    finally:
        if original is None:
            del torch.eig  # type: ignore[attr-defined]
        else:
            torch.eig = original  # type: ignore[attr-defined]


# -- models and data ---------------------------------------------------------------------
class TinyConv(nn.Module):
    """A conv net small enough for an exact spectrum on 8x8 digits (1,418 parameters).

    conv 3x3 (1->8) -> ReLU -> maxpool 2 -> flatten 72 -> Linear(72, 16) -> ReLU ->
    Linear(16, classes). A benchmark fixture only: the registry's conv nets need 28x28.
    """

    def __init__(self, input_shape: tuple[int, ...], num_classes: int, channels: int = 8, hidden: int = 16):
        super().__init__()
        c, h, w = input_shape
        self.conv = nn.Conv2d(c, channels, kernel_size=3)
        self.pool = nn.MaxPool2d(2)
        self.fc1 = nn.Linear(channels * ((h - 2) // 2) * ((w - 2) // 2), hidden)
        self.fc2 = nn.Linear(hidden, num_classes)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.relu(self.conv(x)))
        return self.fc2(self.relu(self.fc1(x.flatten(start_dim=1))))


@dataclass
class Problem:
    """A model (eval mode, ``dtype``), N samples in batches, and the mean cross-entropy."""

    label: str
    model: nn.Module
    inputs: torch.Tensor
    targets: torch.Tensor
    batches: list[Batch]
    dtype: torch.dtype
    dataset: str
    meta: dict = field(default_factory=dict)

    @property
    def num_samples(self) -> int:
        return int(self.inputs.shape[0])

    @property
    def num_params(self) -> int:
        return sum(p.numel() for p in self.model.parameters() if p.requires_grad)

    @property
    def batch_sizes(self) -> list[int]:
        return [int(x.shape[0]) for x, _ in self.batches]

    def fresh_model(self) -> nn.Module:
        """A private copy (peers write ``.grad`` or need the module itself)."""
        return copy.deepcopy(self.model).eval()

    def describe(self) -> dict:
        return {"model": self.label, "n_params": self.num_params, "samples": self.num_samples,
                "batch_sizes": self.batch_sizes, "dtype": str(self.dtype).replace("torch.", ""),
                "dataset": self.dataset, **self.meta}


def _data(dataset: str, n: int, shape: tuple[int, ...], classes: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, str]:
    """The first n training samples of ``dataset`` (or Gaussian noise if it is unavailable)."""
    if dataset != "random":
        try:
            from landscape.data import load_dataset

            d = load_dataset(dataset, "train", download=False)
            if tuple(d.input_shape) == tuple(shape) and len(d) >= n:
                return d.inputs[:n].clone(), d.targets[:n].clone(), dataset
        except Exception:
            pass
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, *shape, generator=g), torch.randint(0, classes, (n,), generator=g), "random"


def train_briefly(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, *, steps: int, lr: float = 0.1,
                  batch_size: int = 128, seed: int = 0) -> float:
    """A few SGD steps so the spectrum looks like a trained net's (outliers + bulk near 0)."""
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    model.train()
    loss = float("nan")
    for _ in range(steps):
        idx = torch.randint(0, inputs.shape[0], (batch_size,), generator=g)
        opt.zero_grad(set_to_none=True)
        out = cross_entropy(model(inputs[idx]), targets[idx])
        out.backward()
        opt.step()
        loss = float(out)
    model.eval()
    model.zero_grad(set_to_none=True)
    return loss


def build_problem(
    model_name: str,
    *,
    dataset: str = "fashion-mnist",
    input_shape: tuple[int, ...] = (1, 28, 28),
    num_classes: int = 10,
    num_samples: int = 1000,
    batch_size: int = 256,
    dtype: torch.dtype = torch.float64,
    seed: int = 0,
    train_steps: int = 0,
    model_kwargs: dict | None = None,
) -> Problem:
    """The same model weights and samples for every library (eval mode, ``dtype``)."""
    inputs, targets, source = _data(dataset, num_samples, input_shape, num_classes, seed)
    kwargs = dict(model_kwargs or {})
    if model_name == "tiny-conv":
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = TinyConv(input_shape, num_classes, **kwargs)
    else:
        model = build_model(model_name, input_shape, num_classes, seed=seed, **kwargs)
    final_loss = None
    if train_steps:
        final_loss = train_briefly(model, inputs, targets, steps=train_steps, seed=seed)
    model = model.to(dtype).eval()
    for p in model.parameters():
        p.requires_grad_(True)
    x = inputs.to(dtype)
    label = model_name + (f"({', '.join(f'{k}={v}' for k, v in kwargs.items())})" if kwargs else "")
    meta = {"input_shape": list(input_shape), "train_steps": train_steps}
    if final_loss is not None:
        meta["train_loss"] = final_loss
    return Problem(label=label, model=model, inputs=x, targets=targets, batches=make_batches(x, targets, batch_size),
                   dtype=dtype, dataset=source, meta=meta)


def with_dtype(problem: Problem, dtype: torch.dtype) -> Problem:
    """The same problem in another precision (a converted copy of the model and data)."""
    model = copy.deepcopy(problem.model).to(dtype).eval()
    x = problem.inputs.to(dtype)
    bs = problem.batch_sizes[0]
    return Problem(label=problem.label, model=model, inputs=x, targets=problem.targets,
                   batches=make_batches(x, problem.targets, bs), dtype=dtype, dataset=problem.dataset,
                   meta=dict(problem.meta))


# -- flat <-> list -------------------------------------------------------------------------
def _params(model: nn.Module) -> list[nn.Parameter]:
    return [p for p in model.parameters() if p.requires_grad]


def split_flat(v: torch.Tensor, params: list[torch.Tensor]) -> list[torch.Tensor]:
    return [t.view_as(p) for t, p in zip(torch.split(v, [p.numel() for p in params]), params)]


def join_flat(ts) -> torch.Tensor:
    return torch.cat([t.reshape(-1) for t in ts])


# -- Hessian-vector products, one per library ----------------------------------------------
class Counted:
    """Wrap a flat ``v -> H v`` function and count its calls (one HVP each)."""

    def __init__(self, fn: HVP, n: int, dtype: torch.dtype) -> None:
        self.fn, self.count, self.n, self.dtype = fn, 0, n, dtype

    def __call__(self, v: torch.Tensor) -> torch.Tensor:
        self.count += 1
        return self.fn(v)


def landscape_operator(problem: Problem, **options) -> HessianOperator:
    return HessianOperator(problem.model, cross_entropy, problem.batches, dtype=problem.dtype, **options)


def one_batch(problem: Problem) -> Problem:
    """The same samples as ONE batch of all N (PyHessian's single-batch mode sees them so)."""
    return dataclasses.replace(problem, batches=[(problem.inputs, problem.targets)])


def landscape_hvp(problem: Problem, **options) -> HVP:
    op = landscape_operator(problem, **options)
    return lambda v: op @ v


def curvlinops_operator(problem: Problem):
    from curvlinops import HessianLinearOperator

    model = problem.fresh_model()
    return HessianLinearOperator(model, nn.CrossEntropyLoss(), _params(model), problem.batches)


def curvlinops_hvp(problem: Problem) -> HVP:
    op = curvlinops_operator(problem)
    return lambda v: op @ v


def pyhessian_object(problem: Problem, *, single_batch: bool = False):
    """PyHessian's ``hessian`` class: dataloader mode (recomputes each batch per product)
    or single-batch mode (all N samples in one batch, its graph kept between products)."""
    from pyhessian import hessian

    model = problem.fresh_model()
    with default_dtype(problem.dtype):
        if single_batch:
            return hessian(model, nn.CrossEntropyLoss(), data=(problem.inputs, problem.targets), cuda=False)
        return hessian(model, nn.CrossEntropyLoss(), dataloader=problem.batches, cuda=False)


def pyhessian_hvp(problem: Problem, *, single_batch: bool = False) -> HVP:
    from pyhessian.utils import hessian_vector_product

    h = pyhessian_object(problem, single_batch=single_batch)

    def hvp(v: torch.Tensor) -> torch.Tensor:
        vs = split_flat(v, h.params)
        if single_batch:
            return join_flat(hessian_vector_product(h.gradsH, h.params, vs)).detach()
        with default_dtype(problem.dtype):
            _, hv = h.dataloader_hv_product(vs)
        return join_flat(hv).detach()

    return hvp


def eigenthings_operator(problem: Problem):
    import hessian_eigenthings as he

    model = problem.fresh_model()
    return he.HessianOperator(model, problem.batches, he.supervised_loss(nn.CrossEntropyLoss()))


def eigenthings_hvp(problem: Problem) -> HVP:
    op = eigenthings_operator(problem)
    return lambda v: op.matvec(v).detach()


def naive_hvp(problem: Problem) -> HVP:
    """The textbook double backward, batch by batch: g = dL_b/dw (create_graph), then
    d(g . v)/dw, weighted |b|/N."""
    model = problem.fresh_model()
    params = _params(model)
    n = problem.num_samples

    def hvp(v: torch.Tensor) -> torch.Tensor:
        vs = split_flat(v, params)
        out = torch.zeros_like(v)
        for x, y in problem.batches:
            loss = nn.functional.cross_entropy(model(x), y)
            g = torch.autograd.grad(loss, params, create_graph=True)
            gv = sum((gi * vi).sum() for gi, vi in zip(g, vs))
            hv = torch.autograd.grad(gv, params)
            out += (x.shape[0] / n) * join_flat(hv)
        return out

    return hvp


# name -> (peer it needs or None, factory)
HVP_FACTORIES: dict[str, tuple[str | None, Callable[[Problem], HVP]]] = {
    "landscape": (None, landscape_hvp),
    "landscape (cached graph)": (None, lambda p: landscape_hvp(p, cache_graph=True)),
    "landscape (one batch, cached graph)": (None, lambda p: landscape_hvp(one_batch(p), cache_graph=True)),
    "curvlinops": ("curvlinops", curvlinops_hvp),
    "pyhessian (dataloader)": ("pyhessian", pyhessian_hvp),
    "pyhessian (one batch, cached graph)": ("pyhessian", lambda p: pyhessian_hvp(p, single_batch=True)),
    "eigenthings": ("eigenthings", eigenthings_hvp),
    "naive double-backward": (None, naive_hvp),
}


def build_hvps(problem: Problem, names=None, setup_times: dict | None = None) -> tuple[dict[str, HVP], dict[str, str]]:
    """Construct each library's HVP on ``problem``; returns (working, {name: error}).

    ``setup_times`` (if given) receives each constructor's wall time (operator set-up,
    determinism checks, PyHessian's one-batch graph)."""
    out, errors = {}, {}
    setup_times = {} if setup_times is None else setup_times
    for name, (needs, factory) in HVP_FACTORIES.items():
        if names is not None and name not in names:
            continue
        if needs is not None and peer(needs) is None:
            errors[name] = f"{needs} unavailable"
            continue
        try:
            start = time.perf_counter()
            out[name] = factory(problem)
            setup_times[name] = time.perf_counter() - start
        except Exception as exc:
            errors[name] = f"{type(exc).__name__}: {exc}"
            traceback.print_exc()
    return out, errors


# -- timing --------------------------------------------------------------------------------
def interleaved_times(fns: dict[str, Callable[[], object]], repeats: int, warmup: int = 1) -> dict[str, list[float]]:
    """Time each function ``repeats`` times, round-robin (A B C A B C ...), after warm-up,
    so that machine noise hits every contender alike."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for r in range(repeats):
        order = list(fns) if r % 2 == 0 else list(reversed(list(fns)))
        for name in order:
            start = time.perf_counter()
            fns[name]()
            times[name].append(time.perf_counter() - start)
    return times


def median(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def rel_error(a: torch.Tensor, b: torch.Tensor) -> float:
    """||a - b|| / ||b|| in float64."""
    a, b = a.detach().double().reshape(-1), b.detach().double().reshape(-1)
    return float(torch.linalg.vector_norm(a - b) / torch.linalg.vector_norm(b))


def fmt(x: float | None, digits: int = 2) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    return f"{x:.{digits}e}" if (x != 0 and (abs(x) < 1e-2 or abs(x) >= 1e4)) else f"{x:.{digits}f}"
