"""Cases 3 and 4: Hessian trace and spectral density against the exact spectrum, vs HVP budget.

Same fixtures as case 2 (small-mnistfc with 16 hidden units and a tiny conv net on the
8x8 digits, briefly trained, float64), here on N = 256 samples in two batches of 128
so that the many repeated estimates stay affordable. The exact spectrum (dense Hessian
+ LAPACK) gives the true trace and the true eigenvalue distribution.

Case 3, trace: relative error |estimate - tr H| / |tr H| at a fixed budget of HVPs,
median over seeds, for landscape's ``hutchinson_trace`` and ``hutchpp_trace``,
PyHessian's ``hessian.trace(maxIter=B, tol=0)`` (Hutchinson; ``tol=0`` so that it
spends exactly B products; its defaults are reported apart), curvlinops'
``hutchinson_trace`` / ``hutchpp_trace`` and hessian-eigenthings' ``trace``.

Case 4, density: the Wasserstein-1 distance between the stochastic Lanczos quadrature
measure (nodes with their weights, averaged over probes) and the exact eigenvalue
distribution (each eigenvalue weight 1/n), ``scipy.stats.wasserstein_distance``, for
p probes x m Lanczos steps: landscape ``slq``, PyHessian ``density`` (which calls
``torch.eig``, removed in torch 2.0: run under a shim, see :func:`peers.torch_eig_shim`),
hessian-eigenthings ``spectral_density`` and curvlinops' ``fast_lanczos`` (the
quadrature inside ``lanczos_approximate_spectrum``, without its boundary estimate).
W1 has the units of eigenvalues; it is also given relative to the spectral width.
"""

from __future__ import annotations

import statistics
import time

import numpy as np
import torch
from scipy.stats import wasserstein_distance

from benchmarks.peers import (
    build_problem,
    curvlinops_operator,
    default_dtype,
    eigenthings_operator,
    landscape_operator,
    peer,
    peer_status,
    pyhessian_object,
    torch_eig_shim,
)
from benchmarks.topk import PROBLEMS, exact_top
from landscape.spectra.slq import slq
from landscape.spectra.trace import hutchinson_trace, hutchpp_trace

BUDGETS = [12, 30, 90, 240]
TRACE_SEEDS = 6
DENSITY_CONFIGS = [(1, 10), (1, 30), (3, 30), (3, 90)]  # (probes, Lanczos steps)
DENSITY_SEEDS = 4


# -- trace estimators: (problem objects, budget, seed) -> (estimate, hvps) ------------------
def trace_methods(problem) -> dict:
    """name -> callable(budget, seed) -> (estimate, hvps); only for available libraries."""
    out = {}
    op = landscape_operator(problem)
    out["landscape hutchinson"] = lambda B, s: (hutchinson_trace(op, max_samples=B, min_samples=B, seed=s).estimate, B)
    out["landscape hutch++"] = lambda B, s: (hutchpp_trace(op, num_matvecs=B, seed=s).estimate, B)
    if peer("pyhessian") is not None:
        h = pyhessian_object(problem)

        def pyh(B, s):
            torch.manual_seed(s)
            with default_dtype(problem.dtype):
                samples = h.trace(maxIter=B, tol=0.0)
            return float(np.mean(samples)), len(samples)

        out["pyhessian hutchinson"] = pyh
    if peer("curvlinops") is not None:
        from curvlinops import hutchinson_trace as cl_hutch
        from curvlinops import hutchpp_trace as cl_hpp

        cop = curvlinops_operator(problem)

        def cl(fn):
            def run(B, s):
                torch.manual_seed(s)
                return float(fn(cop, B)), B

            return run

        out["curvlinops hutchinson"] = cl(cl_hutch)
        out["curvlinops hutch++"] = cl(cl_hpp)
    if peer("eigenthings") is not None:
        import hessian_eigenthings as he

        eop = eigenthings_operator(problem)
        out["eigenthings hutchinson"] = lambda B, s: (he.trace(eop, num_matvecs=B, method="hutchinson", seed=s).estimate, B)
        out["eigenthings hutch++"] = lambda B, s: (he.trace(eop, num_matvecs=B, method="hutch++", seed=s).estimate, B)
    return out


def trace_case(problem, exact_trace: float, budgets, seeds: int) -> dict:
    methods = trace_methods(problem)
    rows = {}
    for name, fn in methods.items():
        per_budget = []
        for B in budgets:
            errs, walls, hvps = [], [], []
            for s in range(seeds):
                start = time.perf_counter()
                est, used = fn(B, s)
                walls.append(time.perf_counter() - start)
                errs.append(abs(est - exact_trace) / abs(exact_trace))
                hvps.append(used)
            per_budget.append({"budget": B, "hvps": hvps, "rel_errors": errs, "median_rel_error": statistics.median(errs),
                               "median_wall_s": statistics.median(walls)})
        rows[name] = per_budget
        print(f"    trace {name}: " + ", ".join(f"B={r['budget']}: {r['median_rel_error']:.2e}" for r in per_budget),
              flush=True)
    defaults = None
    if peer("pyhessian") is not None:  # PyHessian at its defaults: maxIter=100, tol=1e-3 (relative change of the mean)
        h = pyhessian_object(problem)
        errs, used = [], []
        for s in range(seeds):
            torch.manual_seed(s)
            with default_dtype(problem.dtype):
                samples = h.trace()
            errs.append(abs(float(np.mean(samples)) - exact_trace) / abs(exact_trace))
            used.append(len(samples))
        defaults = {"hvps": used, "rel_errors": errs, "median_hvps": statistics.median(used),
                    "median_rel_error": statistics.median(errs)}
    return {"methods": rows, "pyhessian_defaults": defaults}


# -- densities: (probes, steps, seed) -> (nodes, weights) with weights summing to 1 ----------
def density_methods(problem) -> tuple[dict, dict]:
    out, errors = {}, {}
    op = landscape_operator(problem)

    def ls(p, m, s):
        r = slq(op, num_probes=p, num_iters=m, seed=s)
        return r.nodes.reshape(-1), r.weights.reshape(-1) / p

    out["landscape slq"] = ls
    if peer("pyhessian") is not None:
        h = pyhessian_object(problem)
        try:  # as shipped: torch.eig no longer exists
            with default_dtype(problem.dtype):
                h.density(iter=2, n_v=1)
        except Exception as exc:
            errors["pyhessian density (as shipped)"] = f"{type(exc).__name__}: {str(exc).splitlines()[0]}"

        def pyh(p, m, s):
            torch.manual_seed(s)
            with default_dtype(problem.dtype), torch_eig_shim():
                eigs, weights = h.density(iter=m, n_v=p)
            return np.asarray(eigs, dtype=np.float64).reshape(-1), np.asarray(weights, dtype=np.float64).reshape(-1) / p

        out["pyhessian density (torch.eig shim)"] = pyh
    if peer("eigenthings") is not None:
        import hessian_eigenthings as he

        eop = eigenthings_operator(problem)

        def eig(p, m, s):
            # it seeds run i with seed + i: space the seeds so that repetitions share no probe
            r = he.spectral_density(eop, num_runs=p, lanczos_steps=m, seed=1000 * s, num_grid_points=10)
            nodes = r.raw_eigenvalues.detach().cpu().numpy().reshape(-1)
            weights = r.raw_weights.detach().cpu().numpy().reshape(-1) / p
            keep = np.isfinite(nodes)
            return nodes[keep], weights[keep]

        out["eigenthings spectral_density"] = eig
    if peer("curvlinops") is not None:
        from curvlinops.papyan2020traces.spectrum import fast_lanczos

        cop = curvlinops_operator(problem)

        def cl(p, m, s):
            torch.manual_seed(s)
            nodes, weights = [], []
            for _ in range(p):
                evals, evecs = fast_lanczos(cop, m)
                nodes.append(evals.detach().cpu().numpy())
                weights.append(evecs[0, :].detach().cpu().numpy() ** 2 / p)
            return np.concatenate(nodes), np.concatenate(weights)

        out["curvlinops fast_lanczos"] = cl
    return out, errors


def density_case(problem, eigenvalues: np.ndarray, configs, seeds: int) -> dict:
    methods, errors = density_methods(problem)
    width = float(eigenvalues[-1] - eigenvalues[0])
    rows = {}
    for name, fn in methods.items():
        per_config = []
        for p, m in configs:
            w1s, walls, sums = [], [], []
            for s in range(seeds):
                start = time.perf_counter()
                nodes, weights = fn(p, m, s)
                walls.append(time.perf_counter() - start)
                sums.append(float(weights.sum()))
                w1s.append(float(wasserstein_distance(nodes, eigenvalues, u_weights=np.clip(weights, 0, None))))
            per_config.append({"probes": p, "steps": m, "hvps": p * m, "w1": w1s, "median_w1": statistics.median(w1s),
                               "median_w1_rel_width": statistics.median(w1s) / width, "weight_sums": sums,
                               "median_wall_s": statistics.median(walls)})
        rows[name] = per_config
        print(f"    density {name}: " + ", ".join(f"{r['probes']}x{r['steps']}: {r['median_w1']:.2e}" for r in per_config),
              flush=True)
    return {"methods": rows, "errors": errors, "spectral_width": width}


def run(quick: bool = False) -> dict:
    status = peer_status()
    budgets = BUDGETS[:2] if quick else BUDGETS
    configs = DENSITY_CONFIGS[:2] if quick else DENSITY_CONFIGS
    trace_seeds = 2 if quick else TRACE_SEEDS
    density_seeds = 1 if quick else DENSITY_SEEDS
    rows = []
    for model_name, kwargs, kind in PROBLEMS:
        problem = build_problem(model_name, dataset="digits", input_shape=(1, 8, 8), num_samples=256, batch_size=128,
                                dtype=torch.float64, train_steps=300, model_kwargs=kwargs)
        eigs, info = exact_top(problem)
        print(f"  {problem.label}: n = {info['n']}, trace {info['trace']:.6g}", flush=True)
        rows.append({"model": problem.label, "kind": kind, "problem": problem.describe(), "exact": info,
                     "trace": trace_case(problem, info["trace"], budgets, trace_seeds),
                     "density": density_case(problem, eigs, configs, density_seeds)})
    return {"case": "trace_density", "settings": {"budgets": budgets, "trace_seeds": trace_seeds,
                                                  "density_configs": configs, "density_seeds": density_seeds,
                                                  "torch_threads": torch.get_num_threads()},
            "peers": status, "rows": rows}


def table(result: dict) -> str:
    budgets = result["settings"]["budgets"]
    lines = ["Case 3, trace: median relative error |estimate - tr H| / |tr H| over "
             f"{result['settings']['trace_seeds']} seeds, at B HVPs.", "",
             "| model | tr H | method | " + " | ".join(f"B = {b}" for b in budgets) + " |",
             "|---|---|---|" + "---|" * len(budgets)]
    for row in result["rows"]:
        for name, per in row["trace"]["methods"].items():
            lines.append(f"| {row['model']} | {row['exact']['trace']:.4g} | {name} | "
                         + " | ".join(f"{r['median_rel_error']:.2e}" for r in per) + " |")
        d = row["trace"]["pyhessian_defaults"]
        if d:
            lines.append(f"| {row['model']} | | pyhessian trace() at its defaults (tol=1e-3, maxIter=100) | "
                         f"{d['median_rel_error']:.2e} at a median {d['median_hvps']:g} HVPs (stops on the relative change "
                         "of the running mean) |" + " |" * (len(budgets) - 1))
    configs = result["settings"]["density_configs"]
    lines += ["", "Case 4, density: median Wasserstein-1 distance between the SLQ measure and the exact eigenvalue "
              f"distribution over {result['settings']['density_seeds']} seeds, relative to the spectral width "
              "(lambda_max - lambda_min); probes x Lanczos steps = HVPs.", "",
              "| model | width | method | " + " | ".join(f"{p}x{m} = {p * m}" for p, m in configs) + " |",
              "|---|---|---|" + "---|" * len(configs)]
    for row in result["rows"]:
        dens = row["density"]
        for name, per in dens["methods"].items():
            lines.append(f"| {row['model']} | {dens['spectral_width']:.4g} | {name} | "
                         + " | ".join(f"{r['median_w1_rel_width']:.2e}" for r in per) + " |")
    errors = {k: v for row in result["rows"] for k, v in row["density"]["errors"].items()}
    if errors:
        lines += ["", "Findings:", ""] + [f"- {k} fails: `{v}`" for k, v in errors.items()]
    return "\n".join(lines)
