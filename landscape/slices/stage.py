"""The slice stage: checkpoint -> directions -> grid of losses -> slice.npz + slice.json.

``compute_slice(SliceConfig(...))`` loads a run, picks its directions (random
filter-normalised, Hessian eigenvectors, or the straight line to another run), evaluates
the mean training and test loss and error on the first N samples of each split at every
grid point (:func:`landscape.slices.grid.evaluate_points`) and writes, atomically, into
``RUN/slice-NAME/``:

* ``slice.npz``: ``axis_0`` (and ``axis_1``), ``train_loss``, ``train_error``,
  ``test_loss``, ``test_error`` (grid shaped), ``directions`` ``(k, n_params)``,
  ``weights`` ``(n_params,)`` (the centre), so a figure can be redrawn and any value
  checked without the checkpoint;
* ``slice.json``: the settings, the directions' seeds, norms and eigenvalues, the
  parameter names and shapes of the flat vectors, the values at the centre, for a path
  its barrier heights, and the wall time.
"""

from __future__ import annotations

import dataclasses
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from landscape.checkpoint import checkpoint_dataset, load_checkpoint, package_versions
from landscape.curvature.operators import make_batches
from landscape.device import resolve_device
from landscape.errors import LandscapeError
from landscape.io import write_json, write_npz
from landscape.progress import make_progress
from landscape.results import check_replaceable
from landscape.slices.directions import (
    Direction,
    direction_seeds,
    hessian_directions,
    interpolation_direction,
    random_direction,
    stack,
    weights_of,
)
from landscape.slices.grid import (
    Grid,
    PointValues,
    evaluate_points,
    evaluate_points_loop,
    interpolation_grid,
    square_grid,
)

__all__ = ["SliceConfig", "barrier_height", "compute_slice", "find_slices", "read_slice"]

SPLITS = ("train", "test")
#: Settings that change speed, memory or where files go, not the values.
NOT_RESULT_SETTINGS = ("checkpoint", "device", "out", "data_dir", "batch_size", "points_per_pass")


@dataclass(frozen=True)
class SliceConfig:
    checkpoint: str
    directions: str = "random"  # random | hessian (ignored with `to`)
    to: str | None = None  # another run: the straight path to it
    dims: int = 2
    span: float | None = None  # coordinates in [-span, span]; a path: t in [-span, 1 + span] [default 1 / 0.25]
    points: int | None = None  # per axis [default 51 in 1-D, 21 in 2-D]
    samples: int = 1000  # first N of each split (fewer if the test split is smaller)
    batch_size: int = 256  # samples per forward pass
    points_per_pass: int | None = None  # grid points per vmapped forward pass [default: by memory, at most 32]
    seed: int = 0
    normalization: str = "filter"  # filter | none (random directions)
    keep_bias_bn: bool = False
    hessian_which: str = "LA"  # LA: top eigenvectors, both: top and bottom
    hessian_tol: float = 1e-4
    dtype: str = "float32"
    device: str = "auto"
    out: str | None = None
    data_dir: str | None = None

    def __post_init__(self) -> None:
        if self.directions not in ("random", "hessian"):
            raise LandscapeError(f"--directions must be random or hessian, got '{self.directions}'.")
        if self.dims not in (1, 2):
            raise LandscapeError(f"--dims must be 1 or 2, got {self.dims}.")
        if self.to is not None and self.dims != 1:
            raise LandscapeError("--to draws the 1-D path between two runs: use --dims 1 (a plane through the path "
                                 "is not implemented yet).")
        if self.span is not None and not (np.isfinite(self.span) and self.span >= 0):
            raise LandscapeError(f"--range must be a finite number >= 0, got {self.span}.")
        if self.span == 0 and self.to is None:
            raise LandscapeError("--range must be > 0 for a slice along directions.")
        if self.points is not None and self.points < 2:
            raise LandscapeError(f"--points must be >= 2, got {self.points}.")
        if self.dtype not in ("float32", "float64"):
            raise LandscapeError(f"--dtype must be float32 or float64, got {self.dtype}.")
        if self.hessian_which not in ("LA", "both"):
            raise LandscapeError(f"hessian_which must be LA or both, got '{self.hessian_which}'.")
        if self.hessian_which == "both" and self.dims != 2:
            raise LandscapeError("--which both (the top and the bottom eigenvector) needs --dims 2.")

    @property
    def kind(self) -> str:
        return "interpolation" if self.to is not None else self.directions

    def resolved_span(self) -> float:
        return self.span if self.span is not None else (0.25 if self.to is not None else 1.0)

    def resolved_points(self) -> int:
        return self.points if self.points is not None else (51 if self.dims == 1 else 21)

    def name(self) -> str:
        if self.to is not None:
            other = Path(self.to)
            other = other.parent if other.suffix == ".pt" else other
            return "to-" + re.sub(r"[^A-Za-z0-9_.-]+", "_", other.resolve().name)
        extremes = "-both" if self.directions == "hessian" and self.hessian_which == "both" else ""
        return f"{self.directions}{extremes}-{self.dims}d"

    def output_dir(self) -> Path:
        if self.out is not None:
            return Path(self.out)
        ckpt = Path(self.checkpoint)
        return (ckpt if ckpt.is_dir() else ckpt.parent) / f"slice-{self.name()}"


def barrier_height(t: np.ndarray, values: np.ndarray) -> float:
    """Max of ``values`` over t in [0, 1] minus the larger endpoint (t = 0 or t = 1)."""
    inside = (t >= 0) & (t <= 1)
    ends = max(float(values[np.argmin(np.abs(t))]), float(values[np.argmin(np.abs(t - 1))]))
    return float(np.max(values[inside])) - ends


def _split_samples(meta: dict, config: SliceConfig) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    data = {}
    for split in SPLITS:
        dataset = checkpoint_dataset(meta, split, config.data_dir)
        n = min(config.samples, len(dataset))
        data[split] = (dataset.inputs[:n], dataset.targets[:n])
    return data


def _directions(model, config: SliceConfig, data, device, log: Callable[[str], None]) -> list[Direction]:
    weights = weights_of(model)
    if config.to is not None:
        other, _ = load_checkpoint(config.to, device="cpu")
        path = interpolation_direction(weights, {n: w.to(weights[n]) for n, w in weights_of(other).items()})
        theirs = dict(other.named_buffers())
        path.extra["buffers_differ"] = any(b.is_floating_point() and (n not in theirs or not torch.equal(b, theirs[n]))
                                           for n, b in model.named_buffers())
        return [path]
    if config.directions == "random":
        return [random_direction(weights, s, normalization=config.normalization, keep_bias_bn=config.keep_bias_bn,
                                 label=f"random {i + 1}")
                for i, s in enumerate(direction_seeds(config.seed, config.dims))]
    log(f"Hessian eigenvectors: Lanczos on {len(data['train'][0])} training samples (float64)")
    x, y = data["train"]
    return hessian_directions(model, make_batches(x, y, config.batch_size), k=config.dims,
                              which=config.hessian_which, tol=config.hessian_tol, seed=config.seed,
                              device=device)


class _LateBar:
    """A progress task that appears only once the work has run ``after`` seconds: a grid
    done sooner prints nothing."""

    def __init__(self, bar, description: str, total: int, after: float = 10.0):
        self.bar, self.description, self.total, self.after = bar, description, total, after
        self.start, self.done, self.task = time.monotonic(), 0, None

    def advance(self, n: int) -> None:
        self.done += n
        if self.task is None and time.monotonic() - self.start >= self.after:
            self.task = self.bar.add_task(self.description, total=self.total)
        if self.task is not None:
            self.bar.update(self.task, completed=self.done)


def _evaluate_split(model, weights, directions, coords, x, y, common: dict, on_points) -> tuple[PointValues, str]:
    """Batched over points, or one point at a time for a layer ``vmap`` has no rule for (LSTMs)."""
    try:
        return evaluate_points(model, weights, directions, coords, x, y, on_points=on_points, **common), "vmap"
    except RuntimeError as err:
        if "Batching rule not implemented" not in str(err):
            raise
    common = {k: v for k, v in common.items() if k != "points_per_pass"}
    values = evaluate_points_loop(model, weights, directions, coords, x, y, **common)
    on_points(len(coords))
    return values, "loop"


def _evaluate(model, directions, grid: Grid, data, config: SliceConfig, device, progress: bool):
    dtype = torch.float64 if config.dtype == "float64" else torch.float32
    weights = weights_of(model)
    values: dict[str, PointValues] = {}
    centre: dict[str, PointValues] = {}
    common = dict(chunk_size=config.batch_size, points_per_pass=config.points_per_pass, dtype=dtype, device=device)
    with make_progress(progress, "points", interval=10.0) as bar:
        late = _LateBar(bar, f"slice ({' x '.join(map(str, grid.shape))} points, train and test)",
                        len(grid.coords) * len(SPLITS))
        for split in SPLITS:
            x, y = data[split]
            values[split], method = _evaluate_split(model, weights, directions, grid.coords, x, y, common, late.advance)
            centre[split], _ = _evaluate_split(model, weights, directions, np.zeros((1, len(directions))), x, y,
                                               common, lambda n: None)
    return values, centre, method


def compute_slice(config: SliceConfig, *, log: Callable[[str], None] = lambda message: None, progress: bool = True,
                  force: bool = False) -> tuple[Path, dict]:
    """Compute one slice and write it; returns ``(output_dir, summary)`` (the JSON's content).

    A result already in the output folder computed with other settings is refused unless
    ``force`` (the summary's ``replaced`` then lists what changed).
    """
    start = time.perf_counter()
    out_dir = config.output_dir()
    settings = dataclasses.asdict(config)
    replaced = check_replaceable(out_dir / "slice.json", settings, force=force, ignore=NOT_RESULT_SETTINGS)
    device = resolve_device(config.device)
    model, meta = load_checkpoint(config.checkpoint, device="cpu")
    data = _split_samples(meta, config)
    directions = _directions(model, config, data, device, log)
    grid = (interpolation_grid(config.resolved_points(), config.resolved_span()) if config.to is not None
            else square_grid(config.dims, config.resolved_span(), config.resolved_points()))
    eval_start = time.perf_counter()
    values, centre, method = _evaluate(model, directions, grid, data, config, device, progress)
    eval_s = time.perf_counter() - eval_start
    summary = _summary(config, meta, model, directions, grid, data, values, centre, settings, device)
    if replaced:
        summary["replaced"] = {key: list(pair) for key, pair in replaced.items()}
    summary.update(evaluation={"vmap": "batched over points (functional_call + vmap)",
                               "loop": "one point at a time (a layer has no vmap rule)"}[method],
                   eval_s=eval_s, points_per_s=len(grid.coords) * len(SPLITS) / max(eval_s, 1e-12),
                   wall_s=time.perf_counter() - start)
    arrays = {f"axis_{i}": a for i, a in enumerate(grid.axes)}
    for split in SPLITS:
        arrays[f"{split}_loss"] = values[split].loss.reshape(grid.shape)
        arrays[f"{split}_error"] = values[split].error.reshape(grid.shape)
    arrays["directions"] = stack(directions)
    arrays["weights"] = torch.cat([w.reshape(-1).double() for w in weights_of(model).values()]).numpy()
    write_npz(out_dir / "slice.npz", **arrays)
    write_json(out_dir / "slice.json", summary)  # last: a slice.json means a complete result
    return out_dir, summary


def _summary(config, meta, model, directions, grid, data, values, centre, settings, device) -> dict:
    weights = weights_of(model)
    summary = {
        "kind": config.kind, "dims": len(directions), "name": config.name(),
        "checkpoint": str(meta.get("path", config.checkpoint)), "model": meta["model"],
        "dataset": (meta.get("dataset") or {}).get("name"), "dtype": config.dtype, "device": str(device),
        "samples": {split: int(len(data[split][1])) for split in SPLITS},
        "sample_rule": "first N samples of each split in dataset order",
        "batchnorm": "eval mode: the checkpoint's running statistics at every point",
        "grid": {"shape": list(grid.shape), "axes": [a.tolist() for a in grid.axes]},
        "directions": [{"label": d.label, "seed": d.seed, "norm": d.norm(), "eigenvalue": d.eigenvalue, **d.extra}
                       for d in directions],
        "weights_norm": float(torch.linalg.vector_norm(torch.cat([w.reshape(-1).double() for w in weights.values()]))),
        "parameters": [{"name": n, "shape": list(w.shape)} for n, w in weights.items()],
        "centre": {split: {"loss": float(centre[split].loss[0]), "error": float(centre[split].error[0])}
                   for split in SPLITS},
        "config": settings, "versions": package_versions(),
    }
    for d in directions:
        if d.extra.get("converged") is False:
            summary.setdefault("warnings", []).append(
                f"{d.label}: Lanczos stopped before its residual reached {config.hessian_tol:g} x the eigenvalue "
                f"(residual {d.extra['residual']:.3g}); the direction is only near an eigenvector.")
    if config.to is not None:
        t = grid.axes[0]
        summary["other_checkpoint"] = str(Path(config.to))
        end = int(np.argmin(np.abs(t - 1)))
        summary["endpoint"] = {split: {"loss": float(values[split].loss[end]), "error": float(values[split].error[end])}
                               for split in SPLITS}
        summary["barrier"] = {f"{split}_{metric}": barrier_height(t, getattr(values[split], metric))
                              for split in SPLITS for metric in ("loss", "error")}
        if directions[0].extra.get("buffers_differ"):
            summary.setdefault("warnings", []).append(
                "the path keeps this run's BatchNorm running statistics at every t, so the value at t = 1 is not the "
                "other run's own loss (re-estimating them along the path is not implemented).")
    return summary


def read_slice(folder: str | Path) -> tuple[dict, dict[str, np.ndarray]]:
    """``(summary, arrays)`` of a ``slice-NAME`` folder: ``slice.json`` and the arrays of ``slice.npz``."""
    import json

    folder = Path(folder)
    try:
        summary = json.loads((folder / "slice.json").read_text(encoding="utf-8"))
        with np.load(folder / "slice.npz") as data:
            arrays = {key: data[key] for key in data.files}
    except (OSError, ValueError) as err:
        raise LandscapeError(f"'{folder}' does not hold a readable slice ({type(err).__name__}); run "
                             "`landscape slice` again.") from None
    return summary, arrays


def find_slices(run_dir: str | Path) -> list[Path]:
    """The complete ``slice-*`` folders of a run (those with a ``slice.json``), by name."""
    return sorted(p.parent for p in Path(run_dir).glob("slice-*/slice.json"))
