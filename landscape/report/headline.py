"""The top of a report page: our numbers in a column beside the paper's.

A row compares only like with like: the same network, the same data (:func:`same_data`)
and, for spectra, the same operator. Anything else says "different data" in the paper's
column instead of the paper's number, so two unrelated figures never sit side by side.
"""

from __future__ import annotations

from collections import defaultdict

from landscape.report.collect import RunArtifacts, exact_groups, finite_float
from landscape.report.fmt import num, pct
from landscape.report.paper import PAPER_SPECTRA, PAPER_TABLE1, PaperSpectrum, PaperTable1, operator_name, same_data

__all__ = ["Comparison", "spectrum_comparisons", "table1_comparisons", "paper_cell"]

STAT_NAMES = {"lambda_max": "λmax", "lambda_min": "λmin"}


def _stat_name(key: str) -> str:
    if key.startswith("fraction "):
        return f"share of eigenvalues with |λ| < {key.split()[1]}"
    return STAT_NAMES.get(key, key)


def _format_stat(key: str, value) -> str:
    return pct(value, 1) if key.startswith("fraction ") else num(value, 3)


def _our_stat(info: dict, key: str):
    if key.startswith("fraction "):
        return (info.get("fraction_abs_below") or {}).get(key.split()[1])
    return info.get(key)


def paper_cell(comparable: bool, paper_text: str, paper_data: str, our_data: str) -> dict:
    """The paper column: its number when the data match, else why it is left out."""
    if comparable:
        return {"text": paper_text, "comparable": True, "hover": ""}
    # the paper's number only on hover: visible, it would read as a comparison
    return {"text": f"different data (paper: {paper_data}; here: {our_data})", "comparable": False,
            "hover": f"not comparable: the paper's value on {paper_data} is {paper_text}"}


Comparison = dict  # {"title", "columns", "rows"}: one table of the headline


def spectrum_comparisons(runs: list[RunArtifacts]) -> list[Comparison]:
    """One table per exact spectrum group (model, dataset, operator) that the paper shows."""
    groups = exact_groups(runs)
    tables = []
    for (model, dataset, operator), members in groups.items():
        paper = PAPER_SPECTRA.get(model)
        if paper is None:
            continue
        tables.append(_spectrum_table(paper, dataset, operator, members))
    return tables


def _spectrum_table(paper: PaperSpectrum, dataset, operator, members: list[RunArtifacts]) -> Comparison:
    comparable = same_data(paper.dataset, dataset) and operator == paper.operator
    our_data = f"{dataset}, {operator_name(operator)}" if operator != paper.operator else str(dataset)
    rows = []
    for key, value in paper.stats.items():
        ours = [_our_stat(m.spectra["exact"]["json"], key) for m in members]
        rows.append({"quantity": _stat_name(key), "ours": ", ".join(_format_stat(key, v) for v in ours),
                     "paper": paper_cell(comparable, ("≈ " if key.startswith("fraction") else "") +
                                         _format_stat(key, value), paper.dataset_label, our_data)})
    samples = {m.spectra["exact"]["json"].get("samples") for m in members}
    ours = f"{len(members)} run{'s' if len(members) != 1 else ''} on {dataset}" + (
        f", {', '.join(f'{s:,}' if isinstance(s, int) else str(s) for s in sorted(samples, key=str))} samples"
        if samples != {None} else "")
    return {"title": f"{paper.figure}: exact {operator_name(operator)} spectrum of {paper.model}",
            "ours_label": f"ours ({ours}; one value per run)",
            "paper_label": f"paper ({paper.figure}, {paper.dataset_label}, {paper.runs} runs)", "rows": rows}


def table1_comparisons(groups: list[dict]) -> list[Comparison]:
    """Table 1 rows for the training groups whose network the paper's Table 1 has.

    ``groups`` are the training table's rows (with "model", "dataset", "optimizer" and the
    best-validation statistics); an optimizer the paper did not run gets no paper number.
    """
    by_model: dict[str, list[dict]] = defaultdict(list)
    for group in groups:
        if group.get("model") in PAPER_TABLE1:
            by_model[group["model"]].append(group)
    return [_table1_table(PAPER_TABLE1[model], members) for model, members in sorted(by_model.items())]


def _table1_value(metric: str, mean, std) -> str:
    fmt = (lambda v: pct(v)) if metric == "test_error" else (lambda v: num(v, 5))
    if finite_float(mean) is None:
        return "–"
    return fmt(mean) + (f" ± {fmt(std)}" if finite_float(std) is not None else "")


def _table1_table(paper: PaperTable1, members: list[dict]) -> Comparison:
    results = {r.optimizer: r for r in paper.results}
    rows = []
    for group in members:
        best = group.get("best", {}).get(paper.metric, {})
        ours = _table1_value(paper.metric, best.get("mean"), best.get("std"))
        if best.get("effective_epochs") is not None:
            ours += f" at {num(best['effective_epochs'], 3)} eff. epochs"
        result = results.get(group.get("optimizer"))
        if result is None:
            cell = {"text": f"not in Table 1 (it has {' and '.join(results)})", "comparable": False, "hover": ""}
        else:
            cell = paper_cell(same_data(paper.dataset, group.get("dataset")),
                              _table1_value(paper.metric, result.value, result.std) +
                              f" at {result.effective_epochs:g} eff. epochs", paper.dataset_label,
                              str(group.get("dataset")))
        rows.append({"quantity": f"{group['label']} ({group['seeds']} seed{'s' if group['seeds'] != 1 else ''})",
                     "ours": ours, "paper": cell})
    what = "test error" if paper.metric == "test_error" else "test perplexity"
    return {"title": f"Table 1: {paper.model}, {what} at the lowest validation error",
            "ours_label": "ours (mean ± s.d. over seeds)", "paper_label": f"paper ({paper.dataset_label}, 5 runs)",
            "rows": rows}
