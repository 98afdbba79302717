"""Build one self-contained HTML report from run directories (``landscape report``).

Every number shown is read from the runs' result files (:mod:`landscape.report.collect`);
figures are drawn by :mod:`landscape.plots` and inlined as base64 SVG data URIs, so the
report is ONE file with no external request: it can be mailed, archived or opened
offline. The page is rendered by Jinja2 from ``templates/report.html.j2`` with
autoescaping on (run names and settings come from users' files).
"""

from __future__ import annotations

import base64
import json
import datetime as _dt
import math
import time
from collections import defaultdict
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

from landscape.errors import LandscapeError
from landscape.flatness.correlation import granulated_kendall, kendall_tau_ci
from landscape.io import write_text
from landscape.plots import (draw_correlation, draw_density, draw_diagonal, draw_eigenspectrum, draw_fig2_1d,
                             draw_fig2_2d, draw_local_energy, draw_local_energy_groups, draw_ritz_values,
                             draw_training_curves, new_figure, svg_bytes)
from landscape.report.collect import RunArtifacts, collect, finite_float, flatness_scalars, run_label
from landscape.report.archive import archive_runs

__all__ = ["PAPER_SPECTRA", "build_report", "render_report"]

#: What the paper reports for the spectra it shows (Chaudhari et al. 2017, Figs. 1 and 3).
PAPER_SPECTRA = {
    "small-lenet": "Fig. 1 (MNIST, 2 runs): ~94% of |λ| < 1e-4, λmax ≈ 40, λmin ≈ -0.46",
    "small-mnistfc": "Fig. 3a (MNIST, 2 runs): the peak |λ| ≤ 1e-2 holds 90% of the eigenvalues",
    "char-lstm": "Fig. 3b (256 lines of 32 characters of a text, 5 runs): almost 95% of |λ| < 1e-5",
    "all-cnn-bn": "Fig. 3c (CIFAR-10 Fisher, 4 runs): ≈95% of |λ| ≤ 1e-5",
}
#: The paper's Table 1 (Chaudhari et al. 2017, Sec. 5.2-5.4): error (%) or perplexity over 5 runs, with the
#: effective epochs (epochs x L; L = 1 for SGD / Adam) at which it is reached.
PAPER_TABLE1 = {
    "mnistfc": "Table 1 (MNIST, 5 runs): Entropy-SGD 1.37 ± 0.03% in 120 effective epochs; Adam 1.39 ± 0.03% in 66",
    "lenet": "Table 1 (MNIST, 5 runs): Entropy-SGD 0.50 ± 0.01% in 80 effective epochs; Adam 0.51 ± 0.01% in 100",
    "all-cnn-bn": "Table 1 (CIFAR-10, 5 runs): Entropy-SGD 7.81 ± 0.09% in 160 effective epochs; SGD 7.71 ± 0.19% in 180",
    "lstm-lm": "Table 1 (PTB, 5 runs): Entropy-SGD perplexity 77.656 ± 0.171 in 25 effective epochs; SGD 78.6 ± 0.26 in 55",
    "char-lstm": "Table 1 (War and Peace, 2x128 char-LSTM, 5 runs): Entropy-Adam perplexity 1.217 ± 0.005 in 25 "
                 "effective epochs; Adam 1.226 ± 0.01 in 40",
}
KNOBS = ("optimizer", "model", "dataset", "lr", "batch_size", "weight_decay", "momentum")
MAX_CURVES = 8  # groups drawn in one training figure; the table lists all
MAX_DETAIL = 3  # runs that get their own Lanczos / SLQ figure


def _uri(fig) -> str:
    return "data:image/svg+xml;base64," + base64.b64encode(svg_bytes(fig)).decode("ascii")


def _figure(fig, caption: str, alt: str) -> dict:
    return {"uri": _uri(fig), "caption": caption, "alt": alt}


def num(value, digits: int = 4) -> str:
    """Significant-digit formatting for tables; '–' for missing values."""
    if value is None:
        return "–"
    try:
        value = float(value)
    except (TypeError, ValueError):
        return str(value)
    if not math.isfinite(value):
        return "–" if math.isnan(value) else str(value)
    if value == 0:
        return "0"
    return f"{value:.{digits}g}"


def pct(value, digits: int = 2) -> str:
    value = finite_float(value)
    return "–" if value is None else f"{100 * value:.{digits}f}%"


def signed(value, digits: int = 2) -> str:
    """``+0.42`` style for correlations; '–' when undefined."""
    value = finite_float(value)
    return "–" if value is None else f"{value:+.{digits}f}"


def _environment() -> Environment:
    env = Environment(loader=PackageLoader("landscape.report", "templates"), autoescape=select_autoescape(["j2", "html"]),
                      undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters["num"] = num
    env.filters["pct"] = pct
    env.filters["signed"] = signed
    env.globals["zip"] = zip
    return env


# ---------------------------------------------------------------- sections

def _groups(runs: list[RunArtifacts]) -> dict[str, list[RunArtifacts]]:
    """Runs that differ only by seed, keyed by a label that tells the groups apart.

    The label is the optimizer (with model/dataset when several), plus every setting in
    which the group differs from another group of the same base label.
    """
    by_key: dict[tuple, list[RunArtifacts]] = defaultdict(list)
    for run in runs:
        by_key[run.group_key].append(run)
    several_models = len({(r.config.get("model"), r.config.get("dataset")) for r in runs}) > 1
    base = {key: run_label(members[0], with_model=several_models, with_seed=False) for key, members in by_key.items()}
    labels: dict[tuple, str] = {}
    for key, members in by_key.items():
        twins = [k for k in by_key if base[k] == base[key] and k != key]
        label = base[key]
        if twins:
            mine = dict(key)
            differing = sorted({name for k in twins for name in set(dict(k)) | set(mine)
                                if dict(k).get(name) != mine.get(name)})
            label += " (" + ", ".join(f"{name}={mine.get(name, '–')}" for name in differing) + ")"
        labels[key] = label
    out: dict[str, list[RunArtifacts]] = {}
    for key, members in by_key.items():
        label, n = labels[key], 2
        while label in out:  # cannot happen with the full difference in the label; kept as a guard
            label, n = f"{labels[key]} #{n}", n + 1
        out[label] = members
    return out


def _runs_table(runs: list[RunArtifacts]) -> list[dict]:
    rows = []
    for run in runs:
        c, f = run.config, run.final
        rows.append({
            "name": run.name, "model": c.get("model"), "dataset": c.get("dataset"), "optimizer": c.get("optimizer"),
            "lr": run.settings.get("lr"), "complete": run.complete, "target_epochs": c.get("epochs"),
            "batch_size": c.get("batch_size"), "seed": c.get("seed"), "epochs": f.get("epoch"),
            "effective_epochs": f.get("effective_epochs"), "parameters": c.get("parameters"),
            "train_loss": f.get("train_loss"), "val_error": f.get("val_error"), "test_error": f.get("test_error"),
            "wall_s": f.get("wall_s"), "spectra": ", ".join(sorted(run.spectra)) or "–",
            "flatness": ", ".join(sorted(run.flatness)) or "–",
        })
    return rows


def _configurations(runs: list[RunArtifacts]) -> list[dict]:
    """Each run's full config.json, for the collapsible configuration list."""
    return [{"name": run.name, "json": json.dumps(run.config, indent=1, sort_keys=True)} for run in runs]


def _training_section(runs: list[RunArtifacts]) -> dict | None:
    with_metrics = [r for r in runs if len(r.metrics) > 1 and r.complete]
    if not with_metrics:
        return None
    groups = _groups(with_metrics)
    table = []
    for label, members in groups.items():
        tests = [m.final.get("test_error") for m in members if m.final.get("test_error") is not None]
        losses = [m.final.get("train_loss") for m in members if m.final.get("train_loss") is not None]
        best = [b for b in (_best_validation(m.metrics) for m in members) if b is not None]
        table.append({
            "label": label, "seeds": len(members),
            "test_error_mean": float(np.mean(tests)) if tests else None,
            "test_error_std": float(np.std(tests, ddof=1)) if len(tests) > 1 else None,
            "train_loss_mean": float(np.mean(losses)) if losses else None,
            "effective_epochs": members[0].final.get("effective_epochs"),
            "epochs": members[0].final.get("epoch"),
            # Table 1's columns: the error at the epoch of the lowest validation error, and that epoch
            "best_effective_epochs": float(np.mean([b[0] for b in best])) if best else None,
            "best_test_error_mean": float(np.mean([b[1] for b in best])) if best else None,
            "best_test_error_std": float(np.std([b[1] for b in best], ddof=1)) if len(best) > 1 else None,
        })
    # seeds repeated = a comparison someone designed (Table 1); a one-seed population is the table's business
    repeated = [g for g in groups if len(groups[g]) > 1]
    shown = sorted(repeated or groups, key=lambda g: (-len(groups[g]), g))[:MAX_CURVES]
    curves = {label: [m.metrics for m in groups[label]] for label in shown}
    table.sort(key=lambda row: (-row["seeds"], row["label"]))
    metrics = [m for m in ("train_loss", "val_error", "test_error") if any(m in r for g in curves.values()
                                                                                for rows in g for r in rows)]
    legend_rows = -(-len(curves) // 3)
    fig, axes = new_figure(1, len(metrics), width=3.6 * len(metrics), height=3.2 + 0.22 * legend_rows)
    for ax, metric in zip(np.atleast_1d(axes), metrics):
        draw_training_curves(ax, curves, metric, legend=False)
    # one legend for the row, below it: long run labels overran the first panel's y axis
    handles, labels = np.atleast_1d(axes)[0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="outside lower center", ncol=min(len(labels), 3), frameon=False, fontsize=8)
    note = "" if len(shown) == len(groups) else f" {len(groups) - len(shown)} more configurations are in the table only."
    caption = ("Training curves against effective epochs (gradient evaluations × batch / training-set size, "
               "paper Sec. 5.2): mean over seeds, band = lowest to highest seed." + note)
    models = sorted({m.config.get("model") for ms in groups.values() for m in ms} & set(PAPER_TABLE1))
    references = [{"model": model, "paper": PAPER_TABLE1[model]} for model in models]
    return {"figure": _figure(fig, caption, "training curves"), "table": table, "references": references}


def _best_validation(metrics: list[dict]) -> tuple[float, float] | None:
    """``(effective epochs, test error)`` at the first evaluation with the lowest validation
    error (model selection on the validation split, never on the test set; the evaluation
    at initialisation counts too); None when the run logged no validation and test errors."""
    rows = [r for r in metrics if finite_float(r.get("val_error")) is not None
            and finite_float(r.get("test_error")) is not None and finite_float(r.get("effective_epochs")) is not None]
    if not rows:
        return None
    best = min(rows, key=lambda r: float(r["val_error"]))  # min keeps the first of equal errors
    return float(best["effective_epochs"]), float(best["test_error"])


def _spectra_section(runs: list[RunArtifacts]) -> dict | None:
    if not any(r.spectra for r in runs):
        return None
    figures, stats = [], []
    for run in runs:
        for method, item in sorted(run.spectra.items()):
            info = item["json"]
            which = info.get("which", (info.get("config") or {}).get("which", "LA")) if method == "lanczos" else None
            lam_max = info.get("lambda_max") if which in (None, "LA", "both") else None
            lam_min = info.get("lambda_min") if which in (None, "SA", "both") else None
            stats.append({
                "run": run.name, "method": method if which is None else f"lanczos ({which})",
                "operator": info.get("operator"), "n": info.get("n_params"),
                "samples": info.get("samples"), "dtype": info.get("dtype"), "mode": info.get("mode"),
                "lambda_max": lam_max, "lambda_min": lam_min,
                "trace": info.get("trace", (info.get("estimate") if isinstance(info.get("estimate"), float) else None)),
                "trace_stderr": info.get("trace_stderr", info.get("stderr")),
                "fractions": info.get("fraction_abs_below", {}),
                "error_bound": info.get("eigenvalue_abs_error_bound"), "hvp_count": info.get("hvp_count"),
                "wall_s": info.get("wall_s"),
            })
    # Fig. 1 / 3 overlays: exact spectra of one model/dataset/operator together (the paper overlays runs)
    exact_groups: dict[tuple, list[RunArtifacts]] = defaultdict(list)
    for run in runs:
        if "exact" in run.spectra:
            info = run.spectra["exact"]["json"]
            exact_groups[(run.config.get("model"), run.config.get("dataset"), info.get("operator"))].append(run)
    references = []
    for (model, dataset, operator), members in exact_groups.items():
        shown = members[:4]
        fig, ax = new_figure(width=6.4, height=5.0)
        draw_eigenspectrum(ax, [m.spectra["exact"]["arrays"]["eigenvalues"] for m in shown],
                           [run_label(m) for m in shown])
        extra = f" ({len(members) - 4} more runs in the table)" if len(members) > 4 else ""
        figures.append(_figure(fig, f"Exact {operator} eigenspectrum, {model} on {dataset}: central window |λ| ≤ 1% "
                                    f"of the spectral radius (log counts), tails as insets (paper Fig. 1 / 3){extra}.",
                               f"eigenspectrum {model} {dataset}"))
        if model in PAPER_SPECTRA:
            references.append({"model": model, "paper": PAPER_SPECTRA[model]})
    # SLQ densities and Lanczos Ritz values, each against the exact spectrum of the same run when present
    for run in [r for r in runs if "slq" in r.spectra][:MAX_DETAIL]:
        from landscape.spectra.slq import SLQResult

        item = run.spectra["slq"]
        nodes, weights = item["arrays"]["nodes"], item["arrays"]["weights"]
        result = SLQResult(nodes=nodes, weights=weights, n=int(item["json"].get("n_params", 0)),
                           num_probes=nodes.shape[0], num_iters=nodes.shape[1], seed=0, hvp_count=0, wall_s=0.0)
        exact = run.spectra.get("exact", {}).get("arrays", {}).get("eigenvalues")
        bound = run.spectra.get("exact", {}).get("json", {}).get("eigenvalue_abs_error_bound") or 0.0
        fig, axes = new_figure(1, 2, width=9.0, height=3.2)
        for ax, scale in zip(axes, ("linear", "log")):
            grid, values = result.density(scale=scale)
            bandwidth = 0.01 * float(nodes.max() - nodes.min()) if scale == "linear" else 0.05
            draw_density(ax, grid, values, label="SLQ", bandwidth=bandwidth, scale=scale, exact=exact,
                         floor=10 * bound)
        figures.append(_figure(fig, f"{run.name}: SLQ spectral density ({nodes.shape[0]} probes × {nodes.shape[1]} "
                                    "Lanczos steps), linear and log10|λ| grids" +
                               (", exact eigenvalues as grey histogram." if exact is not None else "."),
                               f"SLQ density {run.name}"))
    for run in [r for r in runs if "lanczos" in r.spectra][:MAX_DETAIL]:
        arrays = run.spectra["lanczos"]["arrays"]
        exact = run.spectra.get("exact", {}).get("arrays", {}).get("eigenvalues")
        fig, ax = new_figure(width=5.0, height=3.2)
        draw_ritz_values(ax, arrays["ritz_values"], arrays["residuals"], exact=exact)  # matched to nearest exact
        figures.append(_figure(fig, f"{run.name}: Lanczos Ritz values with residual norms"
                               + (" against the exact eigenvalues." if exact is not None else "."),
                               f"Ritz values {run.name}"))
    diag_groups: dict[tuple, list[RunArtifacts]] = defaultdict(list)
    for run in runs:
        if "fisher-diag" in run.spectra:
            diag_groups[(run.config.get("model"), run.config.get("dataset"))].append(run)
    for (model, dataset), members in diag_groups.items():
        fig, ax = new_figure(width=5.0, height=3.2)
        draw_diagonal(ax, [m.spectra["fisher-diag"]["arrays"]["diagonal"] for m in members[:4]],
                      [run_label(m) for m in members[:4]])
        kind = members[0].spectra["fisher-diag"]["json"].get("fisher", "empirical")
        figures.append(_figure(fig, f"Diagonal {kind} Fisher entries, {model} on {dataset} (paper Fig. 3c).",
                               f"diagonal Fisher {model}"))
    return {"figures": figures, "stats": stats, "references": references}


def _flatness_section(runs: list[RunArtifacts]) -> dict | None:
    if not any(r.flatness for r in runs):
        return None
    figures = []
    with_energy = [r for r in runs if "local-energy" in r.flatness]
    labels = [run_label(r) for r in with_energy]
    if len(set(labels)) < len(labels):  # e.g. a population at one seed: the run names tell them apart
        labels = [f"{r.config.get('optimizer')} · {r.name}" for r in with_energy]
    energies = {label: r.flatness["local-energy"] for label, r in zip(labels, with_energy)}
    if energies:
        shown = dict(list(energies.items())[:MAX_CURVES])
        panels = [(split, metric) for split, metric in (("train", "loss"), ("test", "error"), ("train", "error"),
                                                        ("test", "loss"))
                  if all(metric in e.get("delta", {}).get(split, {}) and metric in e.get("stderr", {}).get(split, {})
                         for e in shown.values())][:2]
        if panels:
            fig, axes = new_figure(1, len(panels), width=4.5 * len(panels), height=3.3)
            many = len(energies) > MAX_CURVES
            by_optimizer: dict[str, list[dict]] = defaultdict(list)
            for r in with_energy:
                by_optimizer[str(r.config.get("optimizer"))].append(r.flatness["local-energy"])
            for ax, (split, metric) in zip(np.atleast_1d(axes), panels):
                if many:  # a population: one curve per optimizer (mean, band = lowest to highest run)
                    draw_local_energy_groups(ax, by_optimizer, split=split, metric=metric)
                else:
                    draw_local_energy(ax, shown, split=split, metric=metric)
            more = (f" {len(energies)} runs: mean per optimizer, band from the lowest to the highest run; the table "
                    "below has every run." if many else "")
            figures.append(_figure(fig, "Local energy ΔE(σ): mean increase of the loss / error under weight noise, "
                                        "± standard error over noise draws." + more, "local energy curves"))
    names: list[str] = []
    invariant: dict[str, bool] = {}
    per_run = []
    for run in runs:
        scalars = flatness_scalars(run)
        per_run.append({"run": run.name, "label": run_label(run), "scalars": scalars})
        names += [n for n in scalars if n not in names]
        for n, item in scalars.items():
            invariant.setdefault(n, bool(item["invariant"]))
    entropy = [{"run": r.name, **{k: r.flatness["local-entropy"].get(k) for k in
                                  ("gammas", "estimates", "stderrs", "method", "beta", "n", "wall_s")}}
               for r in runs if "local-entropy" in r.flatness]
    warnings = [{"run": r.name, "measure": measure, "text": str(text)}
                for r in runs for measure, info in sorted(r.flatness.items())
                for text in (info.get("warnings") or [])]
    warnings += [{"run": r.name, "measure": f"{measure} ({entry.get('measure')})", "text": str(text)}
                 for r in runs for measure, info in sorted(r.flatness.items())
                 for entry in (info.get("entries") or []) for text in (entry.get("warnings") or [])]
    return {"figures": figures, "names": names, "invariant": invariant, "per_run": per_run, "entropy": entropy,
            "warnings": warnings}


def _hyperparameters(population: list[RunArtifacts]) -> list[dict]:
    """The settings varied across the population, for the granulated tau (Jiang et al. Eq. 4).

    Seeds are repeats and are left out. A setting that is a function of another varied
    setting (e.g. epochs chosen per optimizer for an equal effective budget) is not a
    knob of its own and is left out too: keeping it would leave no group in which only
    the other one varies.
    """
    settings = [r.settings for r in population]
    keys = sorted({k for s in settings for k in s})
    varied = [k for k in keys if len({json.dumps(s.get(k), sort_keys=True) for s in settings}) > 1]

    def determined_by(k: str, j: str) -> bool:
        mapping: dict[str, str] = {}
        for s in settings:
            a, b = json.dumps(s.get(j), sort_keys=True), json.dumps(s.get(k), sort_keys=True)
            if mapping.setdefault(a, b) != b:
                return False
        return True

    def rank(k: str) -> tuple:  # of two settings that determine each other, the knob a user turned is kept
        return (KNOBS.index(k) if k in KNOBS else len(KNOBS), k)

    def redundant(k: str) -> bool:
        for j in varied:
            if j == k or not determined_by(k, j):
                continue
            if not determined_by(j, k) or rank(j) < rank(k):
                return True
        return False

    independent = [k for k in varied if not redundant(k)]
    return [{k: json.dumps(s.get(k), sort_keys=True) for k in independent} for s in settings]


def _correlation_section(runs: list[RunArtifacts], min_models: int = 4, max_train_error: float = 0.5,
                         notes: list[str] | None = None) -> dict | None:
    # the population: finished models on which flatness was measured (a spectrum alone does not enrol a run)
    candidates = [r for r in runs if r.final.get("test_error") is not None and r.flatness and r.complete]
    # a model that never learnt (chance-level training error) is not at a minimum: its "flatness" is that of
    # the initialisation, and a handful of them decide every rank correlation. Jiang et al. 2019 keep only
    # models trained to a loss threshold; here the threshold is on the training error (--max-train-error).
    population = [r for r in candidates if float(r.final.get("train_error", 0.0)) <= max_train_error]
    dropped = [r.name for r in candidates if r not in population]
    if dropped and notes is not None:
        notes.append(f"Left out of the correlation study (training error above {max_train_error:.0%}, i.e. the model "
                     f"did not train): {', '.join(dropped)}.")
    scalars = [flatness_scalars(r) for r in population]
    names: list[str] = []
    for s in scalars:
        names += [n for n in s if n not in names]
    rows, figures = [], []
    panels = []
    for name in names:
        members = [(r, s[name]) for r, s in zip(population, scalars) if name in s]
        if len(members) < min_models:
            continue
        values = [item["value"] for _, item in members]
        errors = [r.final["test_error"] for r, _ in members]
        stats = kendall_tau_ci(values, errors)
        hyper = _hyperparameters([r for r, _ in members])
        gran = granulated_kendall(values, errors, hyper)
        rows.append({"name": name, "n": stats.n, "tau": stats.tau, "low": stats.low, "high": stats.high,
                     "direction": members[0][1]["direction"], "invariant": members[0][1]["invariant"],
                     "psi": gran.psi, "Psi": gran.overall, "groups": gran.groups})
        panels.append((name, values, errors, [str(r.config.get("optimizer")) for r, _ in members],
                       {**gran.psi, "Psi": gran.overall}))
    if not rows:
        return None
    for start in range(0, len(panels), 9):
        chunk = panels[start:start + 9]
        cols = min(3, len(chunk))
        nrows = math.ceil(len(chunk) / cols)
        fig, axes = new_figure(nrows, cols, width=3.4 * cols, height=3.2 * nrows)
        flat = np.atleast_1d(axes).ravel()
        for ax, (name, values, errors, labels, granulated) in zip(flat, chunk):
            draw_correlation(ax, values, errors, name=name, labels=labels, granulated=granulated)
        for ax in flat[len(chunk):]:
            ax.set_visible(False)
        figures.append(_figure(fig, "Flatness measure against test error over the trained population; Kendall τ "
                                    "with a 95% percentile-bootstrap interval over models.", "flatness vs test error"))
    varied = sorted({k for row in rows for k in row["psi"]})
    return {"rows": rows, "figures": figures, "varied": varied, "models": len(population),
            "max_train_error": max_train_error, "dropped": len(dropped)}


def _fig2_section(figs) -> dict | None:
    if not figs:
        return None
    item = figs[0]
    figures = []
    fig, ax = new_figure(width=5.5, height=3.4)
    draw_fig2_1d(ax, item.arrays)
    figures.append(_figure(fig, "Fig. 2: the energy f(x) and the negative local entropy -F(x, γ) (relative to the "
                                "flat reference, exact quadrature) for decreasing scopes γ; triangles mark each "
                                "minimum, which moves from the sharp minimum to the wide valley.", "figure 2, 1-D"))
    if "d2_f" in item.arrays:
        fig, axes = new_figure(1, 1 + len(item.arrays["d2_gammas"]), width=11.0, height=2.8)
        draw_fig2_2d(np.atleast_1d(axes), item.arrays)
        figures.append(_figure(fig, "Fig. 2 in two dimensions: f and -F(·, γ) by quadrature (red star: minimum); "
                                    "white dots: SGLD estimates, labelled by their difference from quadrature in "
                                    "standard errors.", "figure 2, 2-D"))
    return {"figures": figures, "summary": item.summary, "path": str(item.path)}


def _environment_section(runs: list[RunArtifacts]) -> dict:
    versions: dict[str, set] = defaultdict(set)
    devices, timings = set(), []
    for run in runs:
        for k, v in (run.config.get("versions") or {}).items():
            versions[k].add(str(v))
        devices.add(str(run.config.get("device_resolved", run.config.get("device"))))
        timings.append({"run": run.name, "stage": "train", "wall_s": run.final.get("wall_s")})
        for method, item in sorted(run.spectra.items()):
            timings.append({"run": run.name, "stage": f"spectrum {method}", "wall_s": item["json"].get("wall_s")})
        for measure, info in sorted(run.flatness.items()):
            timings.append({"run": run.name, "stage": f"flatness {measure}", "wall_s": info.get("wall_s")})
    return {"versions": {k: ", ".join(sorted(v)) for k, v in sorted(versions.items())},
            "devices": ", ".join(sorted(devices)), "timings": timings}


# ---------------------------------------------------------------- entry points

def render_report(paths: Sequence[str | Path], *, title: str | None = None, log: Callable[[str], None] | None = None,
                  extra: dict | None = None, max_train_error: float = 0.5) -> str:
    """The report's HTML text for the run (and Fig. 2) directories under ``paths``."""
    log = log or (lambda message: None)
    start = time.perf_counter()
    notes: list[str] = []
    runs, figs = collect(paths, notes)
    log(f"read {len(runs)} run(s) and {len(figs)} Fig. 2 set(s)")
    for note in notes:
        log(f"note: {note}")
    from landscape import __version__

    sections = {}
    for name, build in (("training", lambda: _training_section(runs)), ("spectra", lambda: _spectra_section(runs)),
                        ("flatness", lambda: _flatness_section(runs)),
                        ("correlation", lambda: _correlation_section(runs, max_train_error=max_train_error,
                                                                     notes=notes)),
                        ("fig2", lambda: _fig2_section(figs))):
        sections[name] = build()
        if sections[name] is not None:
            log(f"drew the {name} section")
    context = {
        "title": title or "landscape report",
        "generated": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "version": __version__,
        "sources": list(dict.fromkeys(str(p) for p in paths)),
        "runs": _runs_table(runs),
        "configurations": _configurations(runs),
        "environment": _environment_section(runs),
        "extra": extra or {},
        "notes": list((extra or {}).get("skipped", [])) + notes,
        **sections,
    }
    html = _environment().get_template("report.html.j2").render(**context)
    log(f"rendered in {time.perf_counter() - start:.1f} s")
    return html


def build_report(paths: Sequence[str | Path], out: str | Path, *, title: str | None = None,
                 log: Callable[[str], None] | None = None, extra: dict | None = None,
                 max_train_error: float = 0.5, archive: bool = False) -> Path:
    """Write ``out/index.html`` (atomically) from the runs under ``paths``; returns its path.

    ``archive``: also keep the files the page was built from in ``out/runs``
    (:mod:`landscape.report.archive`), so it can be re-rendered without the run directories.
    """
    if not paths:
        raise LandscapeError("Give at least one run directory to report on.")
    from landscape.io import ensure_output_dir

    out = ensure_output_dir(out)  # a writable folder, checked before the page is rendered
    html = render_report(paths, title=title or out.name, log=log, extra=extra, max_train_error=max_train_error)
    out.mkdir(parents=True, exist_ok=True)
    if archive:
        runs, figs = collect(paths)
        folder = archive_runs([r.path for r in runs] + [f.path for f in figs], out)
        if log is not None:
            log(f"archived the inputs of {len(runs) + len(figs)} runs in {folder}")
    target = out / "index.html"
    write_text(target, html)
    return target
