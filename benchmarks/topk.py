"""Case 2: top-k Hessian eigenvalues (k = 1, 10) to 1e-6 relative error: HVPs and time.

Models small enough for an exact spectrum (float64 dense Hessian from landscape's
``dense_hessian`` + ``exact_spectrum``): small-mnistfc with 16 hidden units (1,210
parameters) and a tiny conv net (1,418 parameters) on the 8x8 digits, N = 1024
samples in two batches of 512 (equal sizes, so every peer computes the same matrix),
briefly trained so that the spectrum has a trained net's shape (a few outliers over a
bulk near zero, small negative eigenvalues).

Each method is run through its own public API with its own accuracy knob swept over a
ladder (cheap to expensive); the figure is the cheapest setting whose k eigenvalues all
reach ``max_i |lambda_i - lambda_i^exact| / |lambda_i^exact| <= 1e-6``, with the HVPs
it spent (counted at the operator) and its wall time. Methods:

* landscape: ``lanczos(op, k, which="LA", tol=...)`` (full reorthogonalization);
* scipy ``eigsh(..., which="LA", tol=...)`` (ARPACK, implicitly restarted Lanczos) on
  curvlinops' ``HessianLinearOperator.to_scipy()``;
* PyHessian ``hessian.eigenvalues(top_n=k, tol=..., maxIter=2000)`` (power iteration
  with deflation by orthogonalization);
* hessian-eigenthings ``lanczos(op, k, max_iter=m, which="LA")`` (fixed Krylov
  dimension m swept; reorthogonalization by its default rule, and forced on) and
  ``deflated_power_iteration(op, k, tol=..., max_iter=2000)``.

Target (issue 6): landscape uses fewer HVPs than every peer that reaches 1e-6 at all.
"""

from __future__ import annotations

import time
from typing import Callable

import numpy as np
import torch

from benchmarks.peers import (
    Counted,
    build_problem,
    curvlinops_operator,
    default_dtype,
    landscape_operator,
    peer,
    peer_status,
    pyhessian_object,
)
from landscape.curvature.dense import dense_hessian
from landscape.spectra.exact import exact_spectrum
from landscape.spectra.lanczos import lanczos

TARGET_ERR = 1e-6
MAX_HVPS = 12000  # a ladder stops once one run spends more than this
PROBLEMS = [
    ("small-mnistfc", {"hidden": 16}, "MLP"),
    ("tiny-conv", {}, "conv"),
]
KS = (1, 10)


def exact_top(problem) -> tuple[np.ndarray, dict]:
    op = landscape_operator(problem)
    start = time.perf_counter()
    H = dense_hessian(op, progress=False)
    build = time.perf_counter() - start
    asym = float(np.max(np.abs(H - H.T)))
    ex = exact_spectrum((H + H.T) / 2)
    e = ex.eigenvalues
    info = {"n": int(len(e)), "dense_build_s": build, "eigensolve_s": ex.wall_s, "asymmetry": asym,
            "abs_error_bound": ex.eigenvalue_abs_error_bound, "top12": e[::-1][:12].tolist(),
            "lambda_min": float(e[0]), "trace": float(e.sum())}
    return e, info


def top_error(values, exact_desc: np.ndarray, k: int) -> float:
    got = np.sort(np.asarray(values, dtype=np.float64).reshape(-1))[::-1][:k]
    if len(got) < k or not np.all(np.isfinite(got)):
        return float("inf")
    return float(np.max(np.abs(got - exact_desc[:k]) / np.abs(exact_desc[:k])))


# -- one runner per method: setting -> (eigenvalues, hvps) ---------------------------------
def landscape_runner(problem, k: int) -> Callable:
    op = landscape_operator(problem)

    def run(tol):
        if tol is None:  # the defaults (tol=1e-8, convergence checked after every step)
            res = lanczos(op, k, which="LA", seed=0)
        else:
            res = lanczos(op, k, which="LA", tol=tol, seed=0)
        return res.ritz_values, res.hvp_count

    return run


def eigsh_curvlinops_runner(problem, k: int) -> Callable:
    from scipy.sparse.linalg import LinearOperator, eigsh

    A = curvlinops_operator(problem).to_scipy()
    counter = {"n": 0}

    def mv(x):
        counter["n"] += 1
        return A @ np.asarray(x).reshape(-1)

    L = LinearOperator(A.shape, matvec=mv, rmatvec=mv, dtype=np.float64)
    # the start vector landscape's lanczos (seed 0) and eigenthings (seed 0) use, so all Lanczos runs compare alike
    v0 = torch.randn(A.shape[0], generator=torch.Generator().manual_seed(0), dtype=torch.float64).numpy()

    def run(tol):
        counter["n"] = 0
        vals = eigsh(L, k=k, which="LA", tol=0.0 if tol is None else tol, v0=v0, return_eigenvectors=False)
        return vals, counter["n"]

    return run


def pyhessian_runner(problem, k: int) -> Callable:
    h = pyhessian_object(problem)
    original = h.dataloader_hv_product
    counter = {"n": 0}

    def counted(v):
        counter["n"] += 1
        return original(v)

    h.dataloader_hv_product = counted

    def run(tol):
        counter["n"] = 0
        torch.manual_seed(0)
        with default_dtype(problem.dtype):
            if tol is None:  # the defaults: maxIter=100, tol=1e-3
                vals, _ = h.eigenvalues(top_n=k)
            else:
                vals, _ = h.eigenvalues(maxIter=2000, tol=tol, top_n=k)
        return vals, counter["n"]

    return run


def _eigenthings_op(problem):
    import hessian_eigenthings as he

    from benchmarks.peers import eigenthings_operator

    base = eigenthings_operator(problem)
    counted = Counted(base.matvec, base.size, problem.dtype)
    return he.LambdaOperator(counted, size=base.size, device=base.device, dtype=base.dtype), counted


def eigenthings_lanczos_runner(problem, k: int, reorth: bool | None) -> Callable:
    import hessian_eigenthings as he

    op, counted = _eigenthings_op(problem)

    def run(max_iter):
        counted.count = 0
        m = None if max_iter is None else int(max_iter)  # default: min(2k, n - 1)
        res = he.lanczos(op, k=k, max_iter=m, which="LA", seed=0, reorthogonalize=reorth)
        return res.eigenvalues.detach().cpu().numpy(), counted.count

    return run


def eigenthings_power_runner(problem, k: int) -> Callable:
    import hessian_eigenthings as he

    op, counted = _eigenthings_op(problem)

    def run(tol):
        counted.count = 0
        if tol is None:  # the defaults: max_iter=100, tol=1e-4
            res = he.deflated_power_iteration(op, k=k, seed=0)
        else:
            res = he.deflated_power_iteration(op, k=k, max_iter=2000, tol=tol, seed=0)
        return res.eigenvalues.detach().cpu().numpy(), counted.count

    return run


TOLS = [1e-1, 1e-2, 1e-3, 1e-4, 1e-5, 1e-6, 1e-7, 1e-8, 1e-10, 1e-12]


def methods(k: int) -> list[tuple[str, str | None, Callable, list]]:
    # a fixed Krylov dimension has no stopping rule: try every m (the cheapest that works is an oracle's choice)
    dims = list(range(k + 1, 61)) + [70, 80, 100, 140, 200, 300]
    return [
        ("landscape lanczos", None, landscape_runner, TOLS[:9]),
        ("scipy eigsh on curvlinops", "curvlinops", eigsh_curvlinops_runner, TOLS[:9] + [0.0]),
        ("pyhessian power iteration", "pyhessian", pyhessian_runner, TOLS[2:]),
        ("eigenthings lanczos (default reorth)", "eigenthings",
         lambda p, kk: eigenthings_lanczos_runner(p, kk, None), dims),
        ("eigenthings lanczos (reorth=True)", "eigenthings",
         lambda p, kk: eigenthings_lanczos_runner(p, kk, True), dims),
        ("eigenthings power iteration", "eigenthings", eigenthings_power_runner, TOLS[2:]),
    ]


def _attempt(runner: Callable, setting, exact_desc: np.ndarray, k: int) -> dict:
    start = time.perf_counter()
    try:
        values, hvps = runner(setting)
        err, error = top_error(values, exact_desc, k), None
    except Exception as exc:  # a peer crashing at a setting is a finding
        hvps, err, error = 0, float("inf"), f"{type(exc).__name__}: {exc}"
    return {"setting": "default" if setting is None else setting, "hvps": int(hvps),
            "wall_s": time.perf_counter() - start, "max_rel_error": err, "error": error}


def sweep(name: str, runner: Callable, ladder: list, exact_desc: np.ndarray, k: int) -> dict:
    """The method at its defaults, then its knob from cheap to expensive until 1e-6 is reached."""
    default = _attempt(runner, None, exact_desc, k)
    trace = []
    best = None
    for setting in ladder:
        trace.append(_attempt(runner, setting, exact_desc, k))
        if trace[-1]["max_rel_error"] <= TARGET_ERR:
            best = trace[-1]
            break
        if trace[-1]["hvps"] > MAX_HVPS:
            break
    closest = min(trace, key=lambda t: t["max_rel_error"])
    return {"method": name, "default": default, "reached": best is not None, "best": best, "closest": closest,
            "ladder": trace}


def run(quick: bool = False) -> dict:
    status = peer_status()
    out = []
    for model_name, kwargs, kind in PROBLEMS:
        problem = build_problem(model_name, dataset="digits", input_shape=(1, 8, 8), num_samples=512 if quick else 1024,
                                batch_size=512, dtype=torch.float64, train_steps=300, model_kwargs=kwargs)
        eigs, info = exact_top(problem)
        exact_desc = eigs[::-1].copy()
        print(f"  {problem.label}: n = {info['n']}, exact spectrum in {info['dense_build_s'] + info['eigensolve_s']:.1f} s",
              flush=True)
        for k in KS:
            results = []
            for name, needs, factory, ladder in methods(k):
                if needs is not None and peer(needs) is None:
                    results.append({"method": name, "default": None, "reached": False, "best": None, "closest": None,
                                    "ladder": [],
                                    "unavailable": status[needs]["error"]})
                    continue
                runner = factory(problem, k)
                results.append(sweep(name, runner, ladder[:3] if quick else ladder, exact_desc, k))
                r = results[-1]
                shown = r["best"] or r["closest"]
                print(f"    k={k} {name}: {'reached' if r['reached'] else 'NOT reached'} "
                      f"hvps={shown['hvps']} err={shown['max_rel_error']:.1e} wall={shown['wall_s']:.2f}s", flush=True)
            ls = next(r for r in results if r["method"] == "landscape lanczos")
            peers = [r for r in results if not r["method"].startswith("landscape") and not r.get("unavailable")]
            # (a) as shipped: each method at its defaults, among those whose defaults reach 1e-6
            ls_d = ls["default"]
            peers_d = [r for r in peers if r["default"]["max_rel_error"] <= TARGET_ERR]
            fewest_d = min(peers_d, key=lambda r: r["default"]["hvps"]) if peers_d else None
            ok_d = ls_d["max_rel_error"] <= TARGET_ERR and all(ls_d["hvps"] < r["default"]["hvps"] for r in peers_d)
            # (b) tuned: each method's cheapest ladder setting that reaches 1e-6 (chosen knowing the answer)
            peers_t = [r for r in peers if r["reached"]]
            fewest_t = min(peers_t, key=lambda r: r["best"]["hvps"]) if peers_t else None
            ok_t = ls["reached"] and all(ls["best"]["hvps"] < r["best"]["hvps"] for r in peers_t)

            def ratio(mine, theirs, key):
                return mine[key] / theirs[key] if (mine and theirs) else None

            out.append({"model": problem.label, "kind": kind, "problem": problem.describe(), "exact": info, "k": k,
                        "exact_topk": exact_desc[:k].tolist(), "results": results,
                        "defaults": {"landscape_hvps": ls_d["hvps"], "landscape_error": ls_d["max_rel_error"],
                                     "fewest_hvp_peer": fewest_d["method"] if fewest_d else None,
                                     "peer_hvps": fewest_d["default"]["hvps"] if fewest_d else None,
                                     "hvp_ratio": ratio(ls_d, fewest_d["default"] if fewest_d else None, "hvps"),
                                     "time_ratio": ratio(ls_d, fewest_d["default"] if fewest_d else None, "wall_s"),
                                     "pass": bool(ok_d)},
                        "tuned": {"landscape_hvps": ls["best"]["hvps"] if ls["reached"] else None,
                                  "fewest_hvp_peer": fewest_t["method"] if fewest_t else None,
                                  "peer_hvps": fewest_t["best"]["hvps"] if fewest_t else None,
                                  "hvp_ratio": ratio(ls["best"], fewest_t["best"] if fewest_t else None, "hvps"),
                                  "time_ratio": ratio(ls["best"], fewest_t["best"] if fewest_t else None, "wall_s"),
                                  "pass": bool(ok_t)},
                        "pass": bool(ok_d)})
    return {"case": "topk", "settings": {"target_rel_error": TARGET_ERR, "max_hvps_per_run": MAX_HVPS, "ks": list(KS),
                                         "torch_threads": torch.get_num_threads()},
            "peers": status, "rows": out}


def _cell(r: dict) -> str:
    if r.get("unavailable"):
        return "missing | | | | | "
    d = r["default"]
    dflt = f"{d['hvps']} | {d['max_rel_error']:.1e}" if not d.get("error") else f"- | {d['error'][:50]}"
    if r["reached"]:
        b = r["best"]
        return f"{dflt} | yes | {b['hvps']} | {b['wall_s']:.2f} s | {b['setting']:g}"
    c = r["closest"]
    note = f"no (best {c['max_rel_error']:.1e} at {c['hvps']} HVPs)" if not c.get("error") else f"no ({c['error'][:50]})"
    return f"{dflt} | {note} | | | "


def table(result: dict) -> str:
    lines = [
        "Top-k eigenvalues against the exact float64 spectrum. Defaults: the method as shipped (HVPs, max relative "
        "error). Tuned: the cheapest value of the method's own knob (tol, or the Krylov dimension m for fixed-m "
        "Lanczos) whose k eigenvalues all reach relative error <= 1e-6.",
        "",
        "| model | n | k | method | defaults: HVPs | defaults: error | tuned: reached 1e-6 | HVPs | wall | setting |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in result["rows"]:
        for r in row["results"]:
            lines.append(f"| {row['model']} | {row['exact']['n']:,} | {row['k']} | {r['method']} | {_cell(r)} |")
    lines += ["", "Target: fewer HVPs than every peer that reaches 1e-6. (a) As shipped: every method at its defaults, "
              "among the peers whose defaults reach 1e-6. (b) Tuned: every method at the cheapest setting of its knob "
              "that reaches 1e-6, picked knowing the exact answer (for fixed-m Lanczos this is the Krylov dimension "
              "itself, a bound no stopping rule can beat from the same start vector).", "",
              "| model | k | (a) landscape HVPs | fewest-HVP peer (defaults) | its HVPs | ratio | time ratio | target | "
              "(b) landscape HVPs | fewest-HVP peer (tuned) | its HVPs | ratio | target |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]

    def f3(x):
        return f"{x:.3f}" if x is not None else "n/a"

    for row in result["rows"]:
        d, t = row["defaults"], row["tuned"]
        lines.append(f"| {row['model']} | {row['k']} | {d['landscape_hvps']} | {d['fewest_hvp_peer'] or 'none'} | "
                     f"{d['peer_hvps'] or ''} | {f3(d['hvp_ratio'])} | {f3(d['time_ratio'])} | "
                     f"{'ok' if d['pass'] else 'MISSED'} | {t['landscape_hvps']} | {t['fewest_hvp_peer'] or 'none'} | "
                     f"{t['peer_hvps'] or ''} | {f3(t['hvp_ratio'])} | {'ok' if t['pass'] else 'MISSED'} |")
    floors = [(row["model"], row["k"], r["closest"]) for row in result["rows"] for r in row["results"]
              if r["method"] == "pyhessian power iteration" and r.get("closest") and not r["reached"]]
    if floors:
        lines += ["", "Findings:", "",
                  "- PyHessian's power iteration cannot reach 1e-6: `normalization()` divides by `norm + 1e-6`, and "
                  "`eigenvalues()` re-normalizes the (already unit) iterate every step, so the Rayleigh quotient is "
                  "scaled by (1 + 1e-6)^-2 = 1 - 2.0e-6. Closest errors reached (tol down to 1e-12): "
                  + "; ".join(f"{m} k={k}: {c['max_rel_error']:.3e} at {c['hvps']} HVPs" for m, k, c in floors) + "."]
    return "\n".join(lines)
