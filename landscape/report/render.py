"""Build one self-contained HTML report from run directories (``landscape report``).

Every number shown is read from the runs' result files (:mod:`landscape.report.collect`);
figures are drawn by :mod:`landscape.plots` and inlined as base64 SVG data URIs, so the
report is ONE file with no external request: it can be mailed, archived or opened
offline. The page is rendered by Jinja2 from ``templates/report.html.j2`` with
autoescaping on (run names and settings come from users' files).
"""

from __future__ import annotations

import base64
import datetime as _dt
import json
import math
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

from landscape.errors import LandscapeError
from landscape.flatness.correlation import granulated_kendall, kendall_tau_ci
from landscape.io import write_text
from landscape.plots import (
    draw_correlation,
    draw_density,
    draw_diagonal,
    draw_eigenspectrum,
    draw_fig2_1d,
    draw_fig2_2d,
    draw_local_energy,
    draw_local_energy_groups,
    draw_ritz_values,
    draw_training_curves,
    new_figure,
    svg_bytes,
)
from landscape.plots.slices import draw_slice_1d, draw_slice_contour, draw_slice_heatmap
from landscape.report.archive import archive_runs
from landscape.report.collect import RunArtifacts, collect, exact_groups, finite_float, flatness_scalars, run_label
from landscape.report.fmt import duration, num, pct, short_name, signed
from landscape.report.headline import spectrum_comparisons, table1_comparisons
from landscape.report.paper import PAPER_SPECTRA, PAPER_TABLE1, operator_name

__all__ = ["PAPER_SPECTRA", "PAPER_TABLE1", "build_report", "render_report", "default_title"]

KNOBS = ("optimizer", "model", "dataset", "lr", "batch_size", "weight_decay", "momentum")
MAX_CURVES = 8  # groups drawn in one training figure; the table lists all
MAX_DETAIL = 3  # runs that get their own Lanczos / SLQ figure


def _uri(fig) -> str:
    return "data:image/svg+xml;base64," + base64.b64encode(svg_bytes(fig)).decode("ascii")


def _figure(fig, caption: str, alt: str) -> dict:
    return {"uri": _uri(fig), "caption": caption, "alt": alt}


def _environment() -> Environment:
    env = Environment(
        loader=PackageLoader("landscape.report", "templates"),
        autoescape=select_autoescape(["j2", "html"]),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["num"] = num
    env.filters["pct"] = pct
    env.filters["signed"] = signed
    env.filters["duration"] = duration
    env.filters["short"] = short_name
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
    for key in by_key:
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
            "wall_s": f.get("wall_s"),
            "measured": ", ".join([f"spectrum {m}" for m in sorted(run.spectra)] + sorted(run.flatness)) or "–",
        })
    return rows


def _configurations(runs: list[RunArtifacts]) -> list[dict]:
    """Each run's full config.json, for the collapsible configuration list."""
    return [{"name": run.name, "json": json.dumps(run.config, indent=1, sort_keys=True)} for run in runs]


def _group_row(label: str, members: list[RunArtifacts]) -> dict:
    """The training table's row for the seeds of one configuration."""
    first = members[0]
    tests = [m.final.get("test_error") for m in members if m.final.get("test_error") is not None]
    losses = [m.final.get("train_loss") for m in members if m.final.get("train_loss") is not None]
    best = {key: _best_stats(members, key) for key in ("test_error", "test_perplexity")}
    return {
        "label": label, "seeds": len(members), "model": first.config.get("model"),
        "dataset": first.config.get("dataset"), "optimizer": first.config.get("optimizer"),
        "test_error_mean": float(np.mean(tests)) if tests else None,
        "test_error_std": float(np.std(tests, ddof=1)) if len(tests) > 1 else None,
        "train_loss_mean": float(np.mean(losses)) if losses else None,
        "effective_epochs": first.final.get("effective_epochs"), "epochs": first.final.get("epoch"),
        # Table 1's columns: the error at the epoch of the lowest validation error, and that epoch
        "best_effective_epochs": best["test_error"].get("effective_epochs"),
        "best_test_error_mean": best["test_error"].get("mean"), "best_test_error_std": best["test_error"].get("std"),
        "best": best,
    }


def _best_stats(members: list[RunArtifacts], key: str) -> dict:
    best = [b for b in (_best_validation(m.metrics, key) for m in members) if b is not None]
    if not best:
        return {}
    return {"effective_epochs": float(np.mean([b[0] for b in best])), "mean": float(np.mean([b[1] for b in best])),
            "std": float(np.std([b[1] for b in best], ddof=1)) if len(best) > 1 else None}


def _training_figure(title: str, curves: dict, more: int) -> dict:
    metrics = [m for m in ("train_loss", "val_error", "test_error") if any(m in r for g in curves.values()
                                                                                for rows in g for r in rows)]
    legend_rows = -(-len(curves) // 3)
    fig, axes = new_figure(1, len(metrics), width=3.6 * len(metrics), height=3.2 + 0.22 * legend_rows)
    for ax, metric in zip(np.atleast_1d(axes), metrics):
        draw_training_curves(ax, curves, metric, legend=False)
    fig.suptitle(title, fontsize=10)
    # one legend for the row, below it: a legend inside a panel covered the curves
    handles, labels = np.atleast_1d(axes)[0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="outside lower center", ncol=min(len(labels), 3), frameon=False, fontsize=8)
    note = f" {more} more configurations are in the table only." if more else ""
    caption = (f"{title}: training curves against effective epochs (gradient evaluations × batch / training-set "
               "size, paper Sec. 5.2): mean over seeds, band = lowest to highest seed." + note)
    return _figure(fig, caption, f"training curves {title}")


def _training_section(runs: list[RunArtifacts]) -> dict | None:
    with_metrics = [r for r in runs if len(r.metrics) > 1 and r.complete]
    if not with_metrics:
        return None
    groups = _groups(with_metrics)
    table = sorted((_group_row(label, members) for label, members in groups.items()),
                   key=lambda row: (-row["seeds"], row["label"]))
    # one figure per network and dataset: their epochs and errors do not share an axis
    by_data: dict[tuple, list[str]] = defaultdict(list)
    for label, members in groups.items():
        by_data[(members[0].config.get("model"), members[0].config.get("dataset"))].append(label)
    figures = []
    for (model, dataset), labels in sorted(by_data.items(), key=lambda item: str(item[0])):
        # seeds repeated = a comparison someone designed (Table 1); a one-seed population is the table's business
        repeated = [g for g in labels if len(groups[g]) > 1]
        shown = sorted(repeated or labels, key=lambda g: (-len(groups[g]), g))[:MAX_CURVES]
        curves = {label: [m.metrics for m in groups[label]] for label in shown}
        figures.append(_training_figure(f"{model} on {dataset}", curves, len(labels) - len(shown)))
    return {"figures": figures, "table": table, "comparisons": table1_comparisons(table),
            "several_data": len(by_data) > 1}


def _best_validation(metrics: list[dict], key: str = "test_error") -> tuple[float, float] | None:
    """``(effective epochs, key)`` at the first evaluation with the lowest validation
    error (model selection on the validation split, never on the test set; the evaluation
    at initialisation counts too); None when the run logged no validation error or no ``key``."""
    rows = [r for r in metrics if finite_float(r.get("val_error")) is not None
            and finite_float(r.get(key)) is not None and finite_float(r.get("effective_epochs")) is not None]
    if not rows:
        return None
    best = min(rows, key=lambda r: float(r["val_error"]))  # min keeps the first of equal errors
    return float(best["effective_epochs"]), float(best[key])


def _settings(info: dict) -> tuple:
    """What a spectrum was measured on: results on other samples, dtypes or modes are not one curve."""
    config = info.get("config") or {}
    return tuple(info.get(k, config.get(k)) for k in ("samples", "dtype", "mode"))


def _settings_text(info: dict, short: bool = False) -> str:
    samples, dtype, mode = _settings(info)
    if short:  # the statistics table's "samples / dtype / mode" column
        return " / ".join(f"{v:,}" if isinstance(v, int) else str(v or "–") for v in (samples, dtype, mode))
    parts = [f"{samples:,} samples" if isinstance(samples, int) else None, dtype, f"{mode} mode" if mode else None]
    return ", ".join(p for p in parts if p) or "settings not recorded"


def _extremes(method: str, which: str | None, info: dict) -> tuple[float | None, float | None, list[str]]:
    """``(λmax, λmin, why a cell is empty)``: a top-k Lanczos run has no λmin (older files wrote the
    smallest of its Ritz values under that name), a bottom-k one no λmax."""
    computed = {"lambda_max": which in (None, "LA", "both"), "lambda_min": which in (None, "SA", "both")}
    values, notes = {}, []
    for key, symbol in (("lambda_max", "λmax"), ("lambda_min", "λmin")):
        value = finite_float(info.get(key)) if computed[key] else None
        values[key] = value
        if value is not None:
            continue
        if not computed[key]:
            end = "top" if which == "LA" else "bottom"
            notes.append(f"{symbol} not computed: Lanczos found the {end} of the spectrum only (which={which})")
        elif method == "trace":
            notes.append(f"{symbol} not computed: a trace estimate has no eigenvalues")
        else:
            notes.append(f"{symbol} not in the result file")
    if method == "trace" and len(notes) == 2:
        notes = ["λmax, λmin not computed: a trace estimate has no eigenvalues"]
    return values["lambda_max"], values["lambda_min"], notes


def _spectrum_row(run: RunArtifacts, method: str, info: dict) -> dict:
    which = info.get("which", (info.get("config") or {}).get("which", "LA")) if method == "lanczos" else None
    lam_max, lam_min, notes = _extremes(method, which, info)
    if method == "lanczos" and finite_float(info.get("ritz_max")) is not None:
        notes.append(f"Ritz values found: {num(info.get('ritz_min'))} to {num(info.get('ritz_max'))}")
    return {
        "run": run.name, "method": method if which is None else f"lanczos ({which})",
        "operator": info.get("operator"), "n": info.get("n_params"), "data": _settings_text(info, short=True),
        "lambda_max": lam_max, "lambda_min": lam_min,
        "trace": info.get("trace", (info.get("estimate") if isinstance(info.get("estimate"), float) else None)),
        "trace_stderr": info.get("trace_stderr", info.get("stderr")),
        "fractions": info.get("fraction_abs_below", {}),
        "error_bound": info.get("eigenvalue_abs_error_bound"), "hvp_count": info.get("hvp_count"),
        "wall_s": info.get("wall_s"), "notes": notes,
    }


def _diagonal_row(run: RunArtifacts, info: dict) -> dict:
    return {"run": run.name, "fisher": info.get("fisher", "empirical"), "n": info.get("n_params"),
            "largest": info.get("lambda_max"), "smallest": info.get("lambda_min"), "sum": info.get("trace"),
            "fractions": info.get("fraction_abs_below", {}), "wall_s": info.get("wall_s")}


def _exact_figures(runs: list[RunArtifacts], warnings: list[str]) -> list[dict]:
    """Fig. 1 / 3 overlays: exact spectra of one model/dataset/operator together (the paper overlays runs)."""
    groups = exact_groups(runs)
    figures = []
    for (model, dataset, operator), members in groups.items():
        shown = members[:4]
        labels = [run_label(m) for m in shown]
        if len({_settings(m.spectra["exact"]["json"]) for m in shown}) > 1:
            labels = [f"{label} ({_settings_text(m.spectra['exact']['json'])})" for label, m in zip(labels, shown)]
            warnings.append(f"The exact {operator_name(operator)} spectra of {model} on {dataset} were measured on "
                            "different samples, dtypes or modes; each curve is labelled with its own.")
        fig, ax = new_figure(width=7.0, height=5.4)
        draw_eigenspectrum(ax, [m.spectra["exact"]["arrays"]["eigenvalues"] for m in shown], labels)
        extra = f" ({len(members) - 4} more runs in the table)" if len(members) > 4 else ""
        paper = PAPER_SPECTRA.get(model)
        where = f"paper {paper.figure}" if paper else "paper Figs. 1 / 3"
        figures.append(_figure(fig, f"Exact {operator_name(operator)} eigenspectrum, {model} on {dataset}: central "
                                    f"window |λ| ≤ 1% of the spectral radius (log counts), tails as insets "
                                    f"({where}){extra}.",
                               f"eigenspectrum {model} {dataset}"))
    return figures


def _spectra_section(runs: list[RunArtifacts]) -> dict | None:
    if not any(r.spectra for r in runs):
        return None
    stats = [_spectrum_row(run, method, item["json"]) for run in runs for method, item in sorted(run.spectra.items())
             if method != "fisher-diag"]
    diagonal = [_diagonal_row(run, run.spectra["fisher-diag"]["json"]) for run in runs if "fisher-diag" in run.spectra]
    warnings: list[str] = []
    figures = _exact_figures(runs, warnings)
    figures += [_slq_figure(run, warnings) for run in [r for r in runs if "slq" in r.spectra][:MAX_DETAIL]]
    figures += [_ritz_figure(run, warnings) for run in [r for r in runs if "lanczos" in r.spectra][:MAX_DETAIL]]
    figures += _diagonal_figures(runs)
    return {"figures": figures, "stats": stats, "diagonal": diagonal, "warnings": warnings,
            "any_notes": any(row["notes"] for row in stats),
            "comparisons": spectrum_comparisons(runs)}


def _against_exact(run: RunArtifacts, method: str, warnings: list[str]) -> tuple[str, str]:
    """Curve labels for a run's ``method`` result drawn over its exact spectrum; a warning when they
    were measured on different samples, dtypes or modes."""
    mine = run.spectra[method]["json"]
    exact = run.spectra.get("exact", {}).get("json")
    if exact is None or _settings(exact) == _settings(mine):
        return method.upper() if method == "slq" else "Lanczos", "exact"
    warnings.append(f"{run.name}: the {method} result ({_settings_text(mine)}) is drawn over the exact spectrum "
                    f"({_settings_text(exact)}): different settings, so they need not agree.")
    name = "SLQ" if method == "slq" else "Lanczos"
    return f"{name} ({_settings_text(mine)})", f"exact ({_settings_text(exact)})"


def _slq_figure(run: RunArtifacts, warnings: list[str]) -> dict:
    from landscape.spectra.slq import SLQResult

    item = run.spectra["slq"]
    nodes, weights = item["arrays"]["nodes"], item["arrays"]["weights"]
    result = SLQResult(nodes=nodes, weights=weights, n=int(item["json"].get("n_params", 0)),
                       num_probes=nodes.shape[0], num_iters=nodes.shape[1], seed=0, hvp_count=0, wall_s=0.0)
    exact = run.spectra.get("exact", {}).get("arrays", {}).get("eigenvalues")
    bound = run.spectra.get("exact", {}).get("json", {}).get("eigenvalue_abs_error_bound") or 0.0
    label, exact_label = _against_exact(run, "slq", warnings)
    fig, axes = new_figure(1, 2, width=10.0, height=3.6)
    for ax, scale in zip(axes, ("linear", "log")):
        grid, values = result.density(scale=scale)
        bandwidth = 0.01 * float(nodes.max() - nodes.min()) if scale == "linear" else 0.05
        draw_density(ax, grid, values, label=label, bandwidth=bandwidth, scale=scale, exact=exact,
                     floor=10 * bound, exact_label=exact_label)
    hidden = ""
    if exact is not None and np.any(np.abs(exact) <= 10 * bound):
        hidden = (f" The log panel cannot show {int(np.count_nonzero(np.abs(exact) <= 10 * bound)):,} of the "
                  f"{exact.size:,} exact eigenvalues (|λ| ≤ {10 * bound:.1g}, ten times the eigensolver's error "
                  "bound: indistinguishable from 0); each panel says how many it leaves out.")
    return _figure(fig, f"{run.name}: SLQ spectral density ({nodes.shape[0]} probes × {nodes.shape[1]} Lanczos "
                        "steps), linear and log10|λ| grids" +
                   (", exact eigenvalues as grey histogram." if exact is not None else ".") + hidden,
                   f"SLQ density {run.name}")


def _ritz_figure(run: RunArtifacts, warnings: list[str]) -> dict:
    arrays = run.spectra["lanczos"]["arrays"]
    exact = run.spectra.get("exact", {}).get("arrays", {}).get("eigenvalues")
    label, exact_label = _against_exact(run, "lanczos", warnings)
    fig, ax = new_figure(width=5.6, height=3.6)
    draw_ritz_values(ax, arrays["ritz_values"], arrays["residuals"], exact=exact, label=label,
                     exact_label=exact_label)  # matched to nearest exact
    return _figure(fig, f"{run.name}: Lanczos Ritz values with residual norms"
                   + (" against the exact eigenvalues." if exact is not None else "."), f"Ritz values {run.name}")


def _diagonal_figures(runs: list[RunArtifacts]) -> list[dict]:
    groups: dict[tuple, list[RunArtifacts]] = defaultdict(list)
    for run in runs:
        if "fisher-diag" in run.spectra:
            groups[(run.config.get("model"), run.config.get("dataset"))].append(run)
    figures = []
    for (model, dataset), members in groups.items():
        fig, ax = new_figure(width=7.0, height=3.4)
        draw_diagonal(ax, [m.spectra["fisher-diag"]["arrays"]["diagonal"] for m in members[:4]],
                      [run_label(m) for m in members[:4]])
        kind = members[0].spectra["fisher-diag"]["json"].get("fisher", "empirical")
        figures.append(_figure(fig, f"Diagonal {kind} Fisher entries, {model} on {dataset} (paper Fig. 3c).",
                               f"diagonal Fisher {model}"))
    return figures


def _energy_figures(runs: list[RunArtifacts]) -> list[dict]:
    """One local-energy figure per network and dataset: their losses do not share an axis."""
    by_data: dict[tuple, list[RunArtifacts]] = defaultdict(list)
    for run in runs:
        if "local-energy" in run.flatness:
            by_data[(str(run.config.get("model")), str(run.config.get("dataset")))].append(run)
    figures = [_energy_figure(members, f"{model} on {dataset}" if len(by_data) > 1 else "")
               for (model, dataset), members in sorted(by_data.items())]
    return [f for f in figures if f is not None]


def _energy_figure(with_energy: list[RunArtifacts], title: str) -> dict | None:
    labels = [run_label(r) for r in with_energy]
    if len(set(labels)) < len(labels):  # e.g. a population at one seed: the run names tell them apart
        labels = [f"{r.config.get('optimizer')} · {short_name(r.name)}" for r in with_energy]
    energies = {label: r.flatness["local-energy"] for label, r in zip(labels, with_energy)}
    shown = dict(list(energies.items())[:MAX_CURVES])
    panels = [(split, metric) for split, metric in (("train", "loss"), ("test", "error"), ("train", "error"),
                                                    ("test", "loss"))
              if all(metric in e.get("delta", {}).get(split, {}) and metric in e.get("stderr", {}).get(split, {})
                     for e in shown.values())][:2]
    if not energies or not panels:
        return None
    many = len(energies) > MAX_CURVES
    fig, axes = new_figure(1, len(panels), width=4.2 * len(panels) + 2.4, height=3.3)
    by_optimizer: dict[str, list[dict]] = defaultdict(list)
    for r in with_energy:
        by_optimizer[str(r.config.get("optimizer"))].append(r.flatness["local-energy"])
    for ax, (split, metric) in zip(np.atleast_1d(axes), panels):
        if many:  # a population: one curve per optimizer (mean, band = lowest to highest run)
            draw_local_energy_groups(ax, by_optimizer, split=split, metric=metric, legend=False)
        else:
            draw_local_energy(ax, shown, split=split, metric=metric, legend=False)
    handles, names = np.atleast_1d(axes)[0].get_legend_handles_labels()
    fig.legend(handles, names, loc="outside right upper", frameon=False, fontsize=8)  # never over the curves
    if title:
        fig.suptitle(title, fontsize=10)
    more = (f" {len(energies)} runs: mean per optimizer, band from the lowest to the highest run; the table "
            "below has every run." if many else "")
    caption = ("Local energy ΔE(σ): mean increase of the loss / error under weight noise, ± standard error over "
               "noise draws." + more)
    return _figure(fig, f"{title}: {caption}" if title else caption, f"local energy curves {title}".strip())


def _chunks(items: list, size: int) -> list[list]:
    return [items[i:i + size] for i in range(0, len(items), size)] or [[]]


def _missing_entropy(info: dict, index: int, why: str) -> tuple[str, str]:
    """``(cell text, full reason)`` for a scope without an estimate. The Laplace form exists only
    where every eigenvalue of the energy's Hessian exceeds -γ: the cell names that bound."""
    per_gamma = (info.get("diagnostics") or {}).get("per_gamma") or []
    details = per_gamma[index] if index < len(per_gamma) and isinstance(per_gamma[index], dict) else {}
    lam = finite_float(details.get("lambda_min"))
    if details.get("exists") is False and lam is not None and lam < 0:
        return f"undefined: γ ≤ {num(-lam, 3)}", str(details.get("message") or why)
    return "not estimated", why


def _entropy_rows(runs: list[RunArtifacts]) -> tuple[list[dict], list[float]]:
    """Local entropy per run, one cell per scope γ (the union over runs); a missing estimate carries
    the measurement's own warnings as its reason."""
    results = [(r, r.flatness["local-entropy"]) for r in runs if "local-entropy" in r.flatness]
    gammas = sorted({float(g) for _, info in results for g in info.get("gammas") or []})
    rows = []
    for run, info in results:
        found = {float(g): (finite_float(v), finite_float(e)) for g, v, e in
                 zip(info.get("gammas") or [], info.get("estimates") or [], info.get("stderrs") or [])}
        why = " ".join(str(w) for w in info.get("warnings") or []) or "no estimate in the result file"
        index = {float(g): i for i, g in enumerate(info.get("gammas") or [])}
        cells = []
        for g in gammas:
            short, reason = (_missing_entropy(info, index[g], why) if g in found
                             else ("not measured", "this scope was not measured for this run"))
            cells.append({"value": found.get(g, (None, None))[0], "stderr": found.get(g, (None, None))[1],
                          "short": short, "why": reason})
        rows.append({"run": run.name, "method": info.get("method"), "beta": info.get("beta"), "n": info.get("n"),
                     "wall_s": info.get("wall_s"), "cells": cells})
    return rows, gammas


def _flatness_section(runs: list[RunArtifacts]) -> dict | None:
    if not any(r.flatness for r in runs):
        return None
    figures = _energy_figures(runs)
    names: list[str] = []
    invariant: dict[str, bool] = {}
    per_run = []
    for run in (r for r in runs if r.flatness):  # runs with no flatness result would be rows of dashes
        scalars = flatness_scalars(run)
        per_run.append({"run": run.name, "label": run_label(run), "scalars": scalars})
        # local entropy has its own table below, where a missing value says why
        names += [n for n in scalars if n not in names and not n.startswith("local entropy ")]
        for n, item in scalars.items():
            invariant.setdefault(n, bool(item["invariant"]))
    entropy, gammas = _entropy_rows(runs)
    warnings = [{"run": r.name, "measure": measure, "text": str(text)}
                for r in runs for measure, info in sorted(r.flatness.items())
                for text in (info.get("warnings") or [])]
    warnings += [{"run": r.name, "measure": f"{measure} ({entry.get('measure')})", "text": str(text)}
                 for r in runs for measure, info in sorted(r.flatness.items())
                 for entry in (info.get("entries") or []) for text in (entry.get("warnings") or [])]
    # a few measures per table: one row of a dozen measures was wider than the page
    return {"figures": figures, "names": names, "name_chunks": _chunks(names, 5),
            "invariant": invariant, "per_run": per_run, "entropy": entropy, "entropy_gammas": gammas,
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
    # a rank correlation over a minority of the population measures which models had a value, not flatness
    enough = max(min_models, math.ceil(len(population) / 2))
    for name in names:
        members = [(r, s[name]) for r, s in zip(population, scalars) if name in s]
        if len(members) < enough:
            rows.append({"name": name, "n": len(members), "direction": members[0][1]["direction"] if members else 1,
                         "invariant": members[0][1]["invariant"] if members else False,
                         "too_few": f"too few models: {len(members)} of {len(population)} have a value (the flatness "
                                    "tables say why); no τ"})
            continue
        values = [item["value"] for _, item in members]
        errors = [r.final["test_error"] for r, _ in members]
        stats = kendall_tau_ci(values, errors)
        hyper = _hyperparameters([r for r, _ in members])
        gran = granulated_kendall(values, errors, hyper)
        rows.append({"name": name, "n": stats.n, "tau": stats.tau, "low": stats.low, "high": stats.high,
                     "direction": members[0][1]["direction"], "invariant": members[0][1]["invariant"],
                     "psi": gran.psi, "Psi": gran.overall, "groups": gran.groups, "too_few": None})
        panels.append((name, values, errors, [str(r.config.get("optimizer")) for r, _ in members],
                       {**gran.psi, "Psi": gran.overall}))
    if not panels:
        return None
    for start in range(0, len(panels), 9):
        chunk = panels[start:start + 9]
        cols = min(3, len(chunk))
        nrows = math.ceil(len(chunk) / cols)
        fig, axes = new_figure(nrows, cols, width=3.4 * cols + 1.4, height=3.2 * nrows)
        flat = np.atleast_1d(axes).ravel()
        for ax, (name, values, errors, labels, granulated) in zip(flat, chunk):
            draw_correlation(ax, values, errors, name=name, labels=labels, granulated=granulated, legend=False)
        for ax in flat[len(chunk):]:
            ax.set_visible(False)
        handles, names = flat[0].get_legend_handles_labels()
        if len(handles) > 1:  # one legend for the grid, beside it: legends inside the panels hid points
            fig.legend(handles, names, loc="outside right upper", frameon=False, fontsize=8)
        figures.append(_figure(fig, "Flatness measure against test error over the trained population; Kendall τ "
                                    "with a 95% percentile-bootstrap interval over models.", "flatness vs test error"))
    varied = sorted({k for row in rows for k in row.get("psi", {})})
    return {"rows": rows, "figures": figures, "varied": varied, "models": len(population),
            "max_train_error": max_train_error, "dropped": len(dropped)}


def _slice_figure(run: RunArtifacts, name: str, item: dict) -> dict:
    """One slice of one run: contour and log-scale heat map of the training loss (2-D), or the
    loss and error curves of the training and test splits with the path's barrier (1-D)."""
    info, arrays = item["json"], item["arrays"]
    kind, label = info.get("kind", "random"), short_name(run.name)
    if "axis_1" in arrays:
        positive = bool(np.all(np.asarray(arrays["train_loss"]) > 0))
        fig, axes = new_figure(1, 2 if positive else 1, width=9.0 if positive else 4.6, height=3.6)
        axes = np.atleast_1d(axes)
        draw_slice_contour(axes[0], arrays["axis_0"], arrays["axis_1"], arrays["train_loss"], label="train loss")
        if positive:
            draw_slice_heatmap(axes[1], arrays["axis_0"], arrays["axis_1"], arrays["train_loss"], label="train loss")
        what = "top Hessian eigen-directions" if kind == "hessian" else "random filter-normalised directions"
        return _figure(fig, f"{label}: training loss on the plane of two {what} (slice {name}); the star is the "
                            "run.", f"slice {name} {run.name}")
    fig, ax = new_figure(width=6.0, height=3.4)
    path = kind == "interpolation"
    draw_slice_1d(ax, arrays["axis_0"], arrays, xlabel="t (0: this run, 1: the other)" if path else "direction",
                  path=path, barrier=info.get("barrier") if path else None)
    caption = (f"{label}: the straight path to {short_name(Path(str(info.get('other_checkpoint', ''))).parent.name)}"
               " (barrier: the highest value along the path minus the larger endpoint)" if path else
               f"{label}: loss and error along a random filter-normalised direction")
    return _figure(fig, caption + f" (slice {name}).", f"slice {name} {run.name}")


def _slices_section(runs: list[RunArtifacts]) -> dict | None:
    figures, paths = [], []
    for run in (r for r in runs if r.slices):
        for name, item in sorted(run.slices.items()):
            figures.append(_slice_figure(run, name, item))
            if item["json"].get("kind") == "interpolation":
                paths.append({"run": run.name, "other": Path(str(item["json"].get("other_checkpoint", ""))).parent.name,
                              "barrier": item["json"].get("barrier") or {}})
    if not figures:
        return None
    return {"figures": figures, "paths": paths}


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
        stages = [("train", run.final.get("wall_s"))]
        stages += [(f"spectrum {method}", item["json"].get("wall_s")) for method, item in sorted(run.spectra.items())]
        stages += [(f"flatness {measure}", info.get("wall_s")) for measure, info in sorted(run.flatness.items())]
        timings.append({"run": run.name, "stages": [{"stage": stage, "wall_s": wall} for stage, wall in stages]})
    return {"versions": {k: ", ".join(sorted(v)) for k, v in sorted(versions.items())},
            "devices": ", ".join(sorted(devices)), "timings": timings}


# ---------------------------------------------------------------- entry points

def default_title(runs: list[RunArtifacts], figs: list) -> str:
    """What the page shows, for a report given no title: the paper's figure when the runs are exactly
    one of its spectra, else its networks and what was measured on them."""
    models = sorted({str(r.config.get("model")) for r in runs})
    spectra = {(str(r.config.get("model")), str(r.config.get("dataset")), r.spectra["exact"]["json"].get("operator"))
               for r in runs if "exact" in r.spectra}
    if len(spectra) == 1 and len(models) == 1 and models[0] in PAPER_SPECTRA and not any(r.flatness for r in runs):
        model, dataset, operator = spectra.pop()
        return f"{PAPER_SPECTRA[model].figure}: exact {operator_name(operator)} spectra of {model} on {dataset}"
    what = [name for name, present in (
        ("training", any(len(r.metrics) > 1 for r in runs)),
        ("Hessian spectra" if spectra else "curvature spectra", any(r.spectra for r in runs)),
        ("flatness", any(r.flatness for r in runs)), ("Fig. 2", bool(figs))) if present]
    if not models:
        return "Fig. 2: local entropy concentrates on wide valleys" if figs else "landscape report"
    networks = ", ".join(models[:3]) + (f" and {len(models) - 3} more" if len(models) > 3 else "")
    text = " and ".join([", ".join(what[:-1]), what[-1]]) if len(what) > 1 else (what or ["runs"])[0]
    return f"{text[0].upper()}{text[1:]} of {networks}"


def page_title(title: str | None, runs: list[RunArtifacts], figs: list) -> str:
    """``title``, or one that says what the page shows (:func:`default_title`)."""
    return title or default_title(runs, figs)


def _headline(sections: dict) -> dict:
    """The page's first section: the main figure(s) and every comparison with the paper, moved up from
    their sections so the page opens with its result."""
    figures: list[dict] = []
    spectra, training = sections.get("spectra"), sections.get("training")
    correlation, fig2 = sections.get("correlation"), sections.get("fig2")
    exact = [f for f in (spectra or {}).get("figures", []) if f["alt"].startswith("eigenspectrum")]
    if exact:
        figures = exact
        spectra["figures"] = [f for f in spectra["figures"] if f not in exact]
    elif training:
        figures, training["figures"] = training["figures"][:2], training["figures"][2:]
    elif correlation:
        figures, correlation["figures"] = correlation["figures"][:1], correlation["figures"][1:]
    elif fig2:
        figures, fig2["figures"] = fig2["figures"][:1], fig2["figures"][1:]
    comparisons = (spectra or {}).get("comparisons", []) + (training or {}).get("comparisons", [])
    warnings = list((spectra or {}).get("warnings", []))
    return {"figures": figures, "comparisons": comparisons, "warnings": warnings}


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
                        ("slices", lambda: _slices_section(runs)), ("fig2", lambda: _fig2_section(figs))):
        sections[name] = build()
        if sections[name] is not None:
            log(f"drew the {name} section")
    context = {
        "title": page_title(title, runs, figs),
        "generated": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "version": __version__,
        "sources": list(dict.fromkeys(str(p) for p in paths)),
        "runs": _runs_table(runs),
        "configurations": _configurations(runs),
        "environment": _environment_section(runs),
        "extra": extra or {},
        "notes": list((extra or {}).get("skipped", [])) + notes,
        "headline": _headline(sections),
        **sections,
    }
    html = _environment().get_template("report.html.j2").render(**context)
    log(f"rendered in {time.perf_counter() - start:.1f} s")
    return html


def build_report(paths: Sequence[str | Path], out: str | Path, *, title: str | None = None,
                 log: Callable[[str], None] | None = None, extra: dict | None = None,
                 max_train_error: float = 0.5, archive: bool = False) -> Path:
    """Write ``out/index.html`` (atomically) from the runs under ``paths``; returns its path.

    ``title``: the page's title; without one, a title that says what the runs hold
    (:func:`default_title`). Nothing is printed about the written file: the caller says it.
    ``archive``: also keep the files the page was built from in ``out/runs``
    (:mod:`landscape.report.archive`), so it can be re-rendered without the run directories.
    """
    if not paths:
        raise LandscapeError("Give at least one run directory to report on.")
    from landscape.io import ensure_output_dir

    out = ensure_output_dir(out)  # a writable folder, checked before the page is rendered
    html = render_report(paths, title=title, log=log, extra=extra, max_train_error=max_train_error)
    out.mkdir(parents=True, exist_ok=True)
    if archive:
        runs, figs = collect(paths)
        folder = archive_runs([r.path for r in runs] + [f.path for f in figs], out)
        if log is not None:
            log(f"archived the inputs of {len(runs) + len(figs)} runs in {folder}")
    target = out / "index.html"
    write_text(target, html)
    return target
