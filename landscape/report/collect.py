"""Read what run directories hold, without recomputing anything (DESIGN.md sec. 1).

A run directory (``landscape train``) holds ``config.json``, ``metrics.jsonl`` and the
checkpoint; later stages add ``spectrum-<method>/spectrum.{npz,json}`` and
``flatness-<measure>.json``. A Fig. 2 directory (``fig2.npz`` + ``fig2.json``, written by
:func:`landscape.flatness.fig2.write_fig2`) is accepted beside runs. A directory holding
neither is searched for run directories (up to :data:`MAX_DEPTH` levels down: a
run's own ``spectrum-*`` folders are never mistaken for runs), so ``landscape report
runs/quick`` reads a whole study.

Arrays are read with ``np.load(allow_pickle=False)`` and JSON with the standard parser:
reading a report's inputs cannot run code.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from landscape.errors import LandscapeError
from landscape.io import MismatchedPairError, read_verified_npz

MAX_DEPTH = 3  # how far below a given folder runs are looked for

__all__ = ["RunArtifacts", "Fig2Artifacts", "collect", "finite_float", "flatness_scalars", "run_label",
           "search_limit"]


NOT_SETTINGS = {"seed", "out", "device", "device_resolved", "data_dir", "versions", "dataset_info", "parameters"}


@dataclass
class RunArtifacts:
    path: Path
    config: dict
    metrics: list[dict] = field(default_factory=list)
    spectra: dict[str, dict] = field(default_factory=dict)  # method -> {"json": ..., "arrays": {...}}
    flatness: dict[str, dict] = field(default_factory=dict)  # measure -> JSON
    slices: dict[str, dict] = field(default_factory=dict)  # slice name -> {"json": ..., "arrays": {...}}

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def final(self) -> dict:
        return self.metrics[-1] if self.metrics else {}

    @property
    def settings(self) -> dict:
        """The training settings that define the run (no seed, paths, device or provenance); a default
        learning rate is replaced by the value the run used (its first metrics row), so ``--lr 0.1`` and the
        default 0.1 are one configuration."""
        out = {k: v for k, v in self.config.items() if k not in NOT_SETTINGS}
        if out.get("lr") is None and self.metrics and self.metrics[0].get("lr") is not None:
            out["lr"] = self.metrics[0]["lr"]
        return out

    @property
    def group_key(self) -> tuple:
        """What seeds of one configuration share: every setting but the seed."""
        return tuple(sorted((k, json.dumps(v, sort_keys=True)) for k, v in self.settings.items()))

    @property
    def complete(self) -> bool:
        """Trained for the epochs its config asked for (not still running, not killed half-way)."""
        epochs = self.config.get("epochs")
        return bool(self.metrics) and (epochs is None or self.final.get("epoch") == epochs)


@dataclass
class Fig2Artifacts:
    path: Path
    summary: dict
    arrays: dict


def _read_json(path: Path) -> dict:
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except json.JSONDecodeError as exc:
        raise LandscapeError(f"{path} is not valid JSON ({exc.msg} at line {exc.lineno}); re-run the stage "
                             "that wrote it.") from None
    except OSError as exc:
        raise LandscapeError(f"Cannot read {path}: {exc.strerror}.") from None
    if not isinstance(data, dict):
        raise LandscapeError(f"{path} holds a JSON {type(data).__name__}, not the object landscape writes; re-run "
                             "the stage that wrote it.")
    return data


def _read_npz(path: Path, summary: dict | None = None, summary_path: Path | None = None) -> dict:
    """Arrays of ``path``, verified against the hash its JSON ``summary`` records (landscape.io)."""
    return read_verified_npz(path, summary or {}, summary_path or path.with_suffix(".json"))


def _check_flatness(path: Path, info: dict) -> None:
    """The parts of a flatness JSON the report iterates over must have the shapes landscape writes."""
    entries = info.get("entries", [])
    if not isinstance(entries, list) or not all(isinstance(e, dict) and isinstance(e.get("measure"), str)
                                                for e in entries):
        raise LandscapeError(f"{path}: 'entries' must be a list of objects that each name their measure; re-run "
                             "`landscape flatness` to write it again.")
    for key in ("sigmas", "gammas", "estimates", "stderrs"):
        if not isinstance(info.get(key, []), list):
            raise LandscapeError(f"{path}: '{key}' must be a list; re-run `landscape flatness` to write it again.")
    for key in ("delta", "stderr") if info.get("measure") == "local-energy" else ():
        table = info.get(key, {})
        if not isinstance(table, dict) or not all(isinstance(v, dict) and all(isinstance(x, list) for x in v.values())
                                                  for v in table.values()):
            raise LandscapeError(f"{path}: '{key}' must map each split to lists of numbers; re-run `landscape "
                                 "flatness` to write it again.")


def _read_metrics(path: Path) -> list[dict]:
    rows = []
    if not path.exists():
        return rows
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if line.strip():
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:
                    row = None
                if not isinstance(row, dict):
                    raise LandscapeError(f"{path} line {number} is not a JSON object; the training run that "
                                         "wrote it may have been edited by hand.")
                rows.append(row)
    return rows


#: The arrays each spectrum method must have written; a result without them is left out with a note.
SPECTRUM_ARRAYS = {"exact": ("eigenvalues",), "lanczos": ("ritz_values", "residuals"), "slq": ("nodes", "weights"),
                   "fisher-diag": ("diagonal",), "trace": ()}


def read_run(path: Path, notes: list[str] | None = None) -> RunArtifacts:
    """One run directory; results that cannot be used are left out and explained in ``notes``."""
    notes = notes if notes is not None else []
    run = RunArtifacts(
        path=path, config=_read_json(path / "config.json"), metrics=_read_metrics(path / "metrics.jsonl")
    )
    for sub in sorted(path.glob("spectrum-*")):
        if (sub / "spectrum.json").exists() and (sub / "spectrum.npz").exists():
            info = _read_json(sub / "spectrum.json")
            method = info.get("method", sub.name.removeprefix("spectrum-"))
            try:
                arrays = _read_npz(sub / "spectrum.npz", info, sub / "spectrum.json")
            except MismatchedPairError as err:
                notes.append(f"{err} Left out.")
                continue
            lacking = [k for k in SPECTRUM_ARRAYS.get(method, ()) if k not in arrays]
            if lacking:
                notes.append(f"{sub / 'spectrum.npz'} has no {', '.join(lacking)}: left out.")
                continue
            run.spectra[method] = {"json": info, "arrays": arrays, "dir": sub.name}
    for sub in sorted(path.glob("slice-*")):
        if (sub / "slice.json").exists() and (sub / "slice.npz").exists():
            info = _read_json(sub / "slice.json")
            try:
                arrays = _read_npz(sub / "slice.npz", info, sub / "slice.json")
            except MismatchedPairError as err:
                notes.append(f"{err} Left out.")
                continue
            run.slices[sub.name.removeprefix("slice-")] = {"json": info, "arrays": arrays}
    for file in sorted(path.glob("flatness-*.json")):
        info = _read_json(file)
        _check_flatness(file, info)
        run.flatness[info.get("measure", file.stem.removeprefix("flatness-"))] = info
    if not run.complete and run.metrics:
        notes.append(f"{path.name} stopped at epoch {run.final.get('epoch')} of {run.config.get('epochs')}: shown in "
                     "the runs table, left out of the seed averages and the correlation study.")
    return run


def _is_run(path: Path) -> bool:
    return (path / "config.json").exists()


def _is_fig2(path: Path) -> bool:
    return (path / "fig2.json").exists() and (path / "fig2.npz").exists()


def collect(paths: Iterable[str | Path], notes: list[str] | None = None) -> tuple[list[RunArtifacts],
                                                                                  list[Fig2Artifacts]]:
    """Runs and Fig. 2 artifacts under ``paths``; one clear error for a path that holds neither.

    What had to be left out (a result without its arrays, an unfinished run) is appended
    to ``notes`` as one sentence each.
    """
    notes = notes if notes is not None else []
    runs: list[RunArtifacts] = []
    figs: list[Fig2Artifacts] = []
    seen: set[Path] = set()

    def add(path: Path) -> bool:
        resolved = path.resolve()
        if resolved in seen:
            return True
        if _is_run(path):
            seen.add(resolved)
            runs.append(read_run(path, notes))
            return True
        if _is_fig2(path):
            seen.add(resolved)
            summary = _read_json(path / "fig2.json")
            figs.append(Fig2Artifacts(path, summary, _read_npz(path / "fig2.npz", summary, path / "fig2.json")))
            return True
        return False

    def expand(path: Path, depth: int) -> bool:
        """Add ``path`` or the runs below it (a study folder holds runs and sub-studies)."""
        if add(path):
            return True
        if depth >= MAX_DEPTH:
            return False
        found = False
        for child in sorted(path.iterdir()):
            if child.is_dir() and not child.name.startswith(".") and expand(child, depth + 1):
                found = True
        return found

    for raw in paths:
        path = Path(raw)
        if not path.is_dir():
            raise LandscapeError(f"{path} is not a directory: pass run directories written by `landscape train` "
                                 "(or a folder that contains them).")
        if not expand(path, depth=0):
            raise LandscapeError(f"{path} holds no run: expected config.json (from `landscape train`) or "
                                 f"fig2.json + fig2.npz, there or up to {MAX_DEPTH} levels below.")
    return runs, figs


def run_label(run: RunArtifacts, *, with_model: bool = False, with_seed: bool = True) -> str:
    c = run.config
    parts = [f"{c.get('model')}/{c.get('dataset')}"] if with_model else []
    parts.append(str(c.get("optimizer")))
    if with_seed:
        parts.append(f"seed {c.get('seed')}")
    return " ".join(parts)


def finite_float(value) -> float | None:
    """``value`` as a float when it is a finite number, else None (missing, NaN, inf, not a number)."""
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def search_limit(entry: dict) -> str | None:
    """"> 10 (search limit)" when a searched quantity (PAC-Bayes sigma') ended on its search bound, else None:
    the bound is where the search stopped, not a measured value."""
    if (entry.get("extra") or {}).get("bracketed", True):
        return None
    bounds = (entry.get("settings") or {}).get("bounds") or []
    value = finite_float(entry.get("value"))
    if len(bounds) != 2 or value is None:
        return "search bound reached"
    low, high = (finite_float(b) for b in bounds)
    if high is not None and value >= high:
        return f"> {high:g} (search limit)"
    return f"< {low:g} (search limit)" if low is not None else "search bound reached"


def flatness_scalars(run: RunArtifacts) -> dict[str, dict]:
    """Every scalar flatness/curvature number a run holds: name -> {value, stderr, invariant, direction}.

    ``direction`` is +1 when a larger value means sharper, -1 when it means flatter: the
    convention and each measure's direction are stated once, in docs/design.md ("Sign
    conventions"), and tests/test_sign_conventions.py holds this function to it. ``limit`` is
    the text to show instead of a value that is only the bound of a search (:func:`search_limit`).
    """
    out: dict[str, dict] = {}

    def put(name, value, stderr=None, invariant=None, direction=+1, limit=None):
        value = finite_float(value)
        if value is not None:
            out[name] = {"value": value, "stderr": finite_float(stderr), "invariant": invariant, "direction": direction,
                         "limit": limit}

    for measure in ("sharpness", "pac-bayes", "fisher-rao"):
        for entry in run.flatness.get(measure, {}).get("entries", []):
            direction = -1 if entry["measure"].startswith("pac-bayes") else +1
            put(entry["measure"], entry.get("value"), entry.get("stderr"), entry.get("invariant_to_rescaling"),
                direction, search_limit(entry))
    energy = run.flatness.get("local-energy")
    if energy:
        sigmas = energy.get("sigmas", [])
        deltas = energy.get("delta", {}).get("train", {}).get("loss", [])
        errs = energy.get("stderr", {}).get("train", {}).get("loss", [])
        for sigma, delta, err in zip(sigmas, deltas, errs):
            if isinstance(sigma, (int, float)) and sigma > 0:
                put(f"local-energy ΔL_train σ={sigma:g} ({energy.get('noise', 'multiplicative')})", delta, err,
                    energy.get("invariant_to_rescaling"))
    entropy = run.flatness.get("local-entropy")
    if entropy:
        for gamma, value, err in zip(entropy.get("gammas", []), entropy.get("estimates", []),
                                     entropy.get("stderrs", [])):
            put(f"local entropy γ={gamma:g} ({entropy.get('method')})", value, err,
                entropy.get("invariant_to_rescaling"), -1)
    exact = run.spectra.get("exact")
    if exact:
        info = exact["json"]
        put("exact λmax", info.get("lambda_max"), None, False)
        put("exact trace", info.get("trace"), None, False)
    return out


def exact_groups(runs: list[RunArtifacts]) -> dict[tuple, list[RunArtifacts]]:
    """Runs with an exact spectrum, grouped by (model, dataset, operator): the spectra one figure overlays."""
    groups: dict[tuple, list[RunArtifacts]] = {}
    for run in runs:
        if "exact" in run.spectra:
            info = run.spectra["exact"]["json"]
            key = (run.config.get("model"), run.config.get("dataset"), info.get("operator"))
            groups.setdefault(key, []).append(run)
    return groups

