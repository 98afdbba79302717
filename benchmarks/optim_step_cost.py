"""Case 7: optimizer step cost against the gradient evaluations it must do.

An Entropy-SGD step computes L minibatch gradients; its overhead is everything else
(SGLD updates, the running mean mu, the outer momentum step). The fair peer is therefore
L plain SGD steps (each: zero_grad, forward, backward, torch SGD update) on the same
model, batch size and batches. Likewise SAM vs 2 SGD steps and Replicated-SGD (y
replicas) vs y SGD steps. Target (issue 2 / issue 6): ratio <= 1.10.

Entropy-SGD's Langevin steps must also draw n standard normals each (Alg. 1 line 6), work
no SGD step does: a second peer adds exactly those draws (from the same kind of generator)
to the L SGD steps, and the ratio against it is the implementation's own overhead. The
Entropy-SGD rows run with the generator training uses by default (``--noise-rng auto``:
MKL's Philox on the CPU where MKL is installed) and again with torch's CPU generator, and a
last table times one draw of n normals from each (landscape.optim.rng).

Timings alternate between the contenders repeat by repeat (A B C A B C ...) so machine
noise hits both alike; the ratio of medians is the figure reported. Absolute times are
context only.
"""

from __future__ import annotations

import statistics
import time
from typing import Callable

import torch

from landscape.losses import cross_entropy
from landscape.models import build_model
from landscape.optim import build_optimizer
from landscape.optim.rng import generator_kind, make_generator, mkl_available, standard_normal_

MODELS = {
    # name: (model, input shape, classes)
    "small-mnistfc": ("small-mnistfc", (1, 28, 28), 10),
    "small-lenet": ("small-lenet", (1, 28, 28), 10),
}


def _batches(shape, classes, batch_size, count, seed=0):
    g = torch.Generator().manual_seed(seed)
    xs = torch.randn(count, batch_size, *shape, generator=g)
    ys = torch.randint(0, classes, (count, batch_size), generator=g)
    return xs, ys


def _closure_factory(model, xs, ys):
    state = {"i": 0}

    def closure():
        i = state["i"] % xs.shape[0]
        state["i"] += 1
        model.zero_grad(set_to_none=True)
        loss = cross_entropy(model(xs[i]), ys[i])
        loss.backward()
        return loss.detach()

    return closure


def _time(fn: Callable[[], None]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def compare(model_name: str, contender: str, *, batch_size: int = 128, repeats: int = 15, warmup: int = 3,
            noise_rng: str = "auto", **hparams) -> dict:
    """Time one ``contender`` step against the equivalent number of SGD steps."""
    name, shape, classes = MODELS[model_name]
    torch.manual_seed(0)
    model_a = build_model(name, shape, classes)
    model_b = build_model(name, shape, classes)
    model_b.load_state_dict(model_a.state_dict())
    generator = make_generator("cpu", 0, noise_rng)
    opt_a = build_optimizer(contender, model_a, generator=generator, **hparams)
    opt_b = build_optimizer("sgd", model_b, lr=hparams.get("lr", 0.1))
    calls = {"entropy-sgd": hparams.get("L") or 20, "entropy-adam": hparams.get("L") or 5, "sam": 2,
             "replicated-sgd": hparams.get("replicas", 3)}[contender]
    xs, ys = _batches(shape, classes, batch_size, max(calls, 4))
    closure_a = _closure_factory(model_a, xs, ys)
    closure_b = _closure_factory(model_b, xs, ys)

    def step_a():
        opt_a.step(closure_a)

    def step_b():
        for _ in range(calls):
            opt_b.step(closure_b)

    # Entropy-SGD/Adam must also draw n standard normals per Langevin step (Alg. 1 line 6):
    # a second peer adds exactly those draws (one flat buffer, the same kind of generator)
    langevin = contender.startswith("entropy") and hparams.get("noise", 1e-4) > 0
    n_params = sum(p.numel() for p in model_b.parameters())
    draws = torch.empty(n_params)
    g_draw = make_generator("cpu", 1, noise_rng)

    def step_c():
        for _ in range(calls):
            opt_b.step(closure_b)
            standard_normal_(draws, g_draw)

    for _ in range(warmup):
        step_a()
        step_b()
        if langevin:
            step_c()
    times_a, times_b, times_c = [], [], []
    for _ in range(repeats):
        times_a.append(_time(step_a))
        times_b.append(_time(step_b))
        if langevin:
            times_c.append(_time(step_c))
    median_a, median_b = statistics.median(times_a), statistics.median(times_b)
    extra = {}
    if langevin:
        median_c = statistics.median(times_c)
        extra = {"times_peer_with_draws_s": times_c, "median_peer_with_draws_s": median_c,
                 "ratio_vs_peer_with_draws": median_a / median_c}
    return {
        "model": model_name,
        "contender": contender,
        "peer": f"{calls} x SGD step",
        "noise_rng": generator_kind(generator) if contender.startswith("entropy") else "-",
        "batch_size": batch_size,
        "hparams": {k: v for k, v in hparams.items()},
        "gradient_evals_per_step": calls,
        "times_contender_s": times_a,
        "times_peer_s": times_b,
        "median_contender_s": median_a,
        "median_peer_s": median_b,
        "ratio": median_a / median_b,
        "target": 1.10,
        "pass": median_a / median_b <= 1.10,
        **extra,
    }


def draw_cost(n: int, repeats: int = 200) -> dict:
    """Median time of one draw of ``n`` standard normals (float32) from each generator kind, alternating."""
    out = torch.empty(n)
    generators = {"torch": make_generator("cpu", 0, "torch")}
    if mkl_available():
        generators["mkl"] = make_generator("cpu", 0, "mkl")
    times: dict[str, list[float]] = {k: [] for k in generators}
    for _ in range(repeats):
        for name, g in generators.items():
            times[name].append(_time(lambda g=g: standard_normal_(out, g)))
    medians = {k: statistics.median(v) for k, v in times.items()}
    row = {"n": n, "median_s": medians, "times_s": times}
    if "mkl" in medians:
        row["ratio_mkl_vs_torch"] = medians["mkl"] / medians["torch"]
    return row


def run(quick: bool = False) -> dict:
    repeats = 5 if quick else 15
    cases = []
    draws = []
    for model_name in MODELS:
        cases.append(compare(model_name, "entropy-sgd", lr=1.0, L=20, repeats=repeats))
        if mkl_available():
            cases.append(compare(model_name, "entropy-sgd", lr=1.0, L=20, repeats=repeats, noise_rng="torch"))
        cases.append(compare(model_name, "sam", lr=0.1, repeats=repeats * 4))
        cases.append(compare(model_name, "replicated-sgd", lr=0.1, replicas=3, repeats=repeats * 4))
        name, shape, classes = MODELS[model_name]
        n = sum(p.numel() for p in build_model(name, shape, classes).parameters())
        draws.append({"model": model_name, **draw_cost(n, repeats=50 if quick else 200)})
    return {"case": "optim_step_cost", "cases": cases, "draws": draws}


def table(result: dict) -> str:
    lines = [
        "| model | optimizer | noise stream | peer | median optimizer step | median peer | ratio | target | "
        "ratio vs peer + its Gaussian draws |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for c in result["cases"]:
        with_draws = (f"{c['ratio_vs_peer_with_draws']:.3f} ({c['median_peer_with_draws_s'] * 1e3:.2f} ms)"
                      if "ratio_vs_peer_with_draws" in c else "-")
        lines.append(
            f"| {c['model']} | {c['contender']} | {c.get('noise_rng', '-')} | {c['peer']} | {c['median_contender_s'] * 1e3:.2f} ms | "
            f"{c['median_peer_s'] * 1e3:.2f} ms | {c['ratio']:.3f} | <= {c['target']:.2f} {'ok' if c['pass'] else 'MISSED'} | "
            f"{with_draws} |"
        )
    lines += ["", "Last column: Entropy-SGD's Langevin steps must each draw n standard normals (Alg. 1 line 6); "
              "the peer there is the same SGD steps plus exactly those draws from the same kind of generator, so the "
              "ratio is the optimizer's own overhead. Noise stream: mkl-philox4x32x10 is what `landscape train` uses by "
              "default on a CPU with MKL installed (`--noise-rng auto`); torch is torch's CPU mt19937, the default "
              "before, and what runs without MKL get."]
    if result.get("draws"):
        lines += ["", "One draw of n standard normals (float32), median over alternating repeats:", "",
                  "| model | n | torch (mt19937) | MKL Philox4x32-10 (ICDF) | MKL / torch |", "|---|---|---|---|---|"]
        for d in result["draws"]:
            med = d["median_s"]
            mkl = f"{med['mkl'] * 1e6:.0f} us" if "mkl" in med else "not installed"
            ratio = f"{d['ratio_mkl_vs_torch']:.3f}" if "ratio_mkl_vs_torch" in d else "-"
            lines.append(f"| {d['model']} | {d['n']:,} | {med['torch'] * 1e6:.0f} us | {mkl} | {ratio} |")
    return "\n".join(lines)
