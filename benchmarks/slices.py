"""Case 8: a 2-D loss-landscape slice, vmapped over grid points vs a per-point loop.

small-lenet (47,658 parameters) on the first 1,024 Fashion-MNIST training images
(synthetic images of the same shape when the files are absent: the cost does not depend
on pixel values), float32, two filter-normalised random directions, a 51 x 51 grid
(9 x 9 with ``--quick``), the mean loss and error at every point. Both contenders run in
one process, alternating in 20 blocks of points (3 with ``--quick``) so that both see the same load on a
shared machine (wall and CPU time are both reported):

* landscape: :func:`landscape.slices.evaluate_points` (``functional_call`` under
  ``vmap``, ``points_per_pass`` points and 256 samples per forward pass);
* loop: :func:`landscape.slices.evaluate_points_loop`, the way the ``loss-landscape``
  code works (copy the point's weights into the model, forward over the data in
  batches of 256), one point at a time. Its cost per point does not depend on the point,
  so it runs on the sub-grid of every 4th point along each axis (13 x 13 of the 51 x 51:
  a 51 x 51 loop alone would take about half an hour on two busy cores) and its values
  are compared with landscape's at those points.

The weights are the network's seeded initialisation (the speed does not depend on them).
Reported: points per second of each, their ratio (target >= 3), and the largest
relative difference of the losses (target <= 1e-6) and of the errors.
"""

from __future__ import annotations

import time

import numpy as np
import torch

GRID, QUICK_GRID = 51, 9
LOOP_STRIDE = 4  # the loop evaluates every 4th point along each axis
BLOCKS, QUICK_BLOCKS = 20, 3  # the contenders alternate block by block
SAMPLES = 1024
CHUNK = 256
POINTS_PER_PASS = 32


def _problem():
    from landscape.data import load_dataset
    from landscape.errors import LandscapeError
    from landscape.models import build_model
    from landscape.slices import random_direction, weights_of

    try:
        data = load_dataset("fashion-mnist", "train")
        x, y, source = data.inputs[:SAMPLES], data.targets[:SAMPLES], "fashion-mnist"
    except LandscapeError:
        g = torch.Generator().manual_seed(0)
        x, y, source = torch.randn(SAMPLES, 1, 28, 28, generator=g), torch.randint(0, 10, (SAMPLES,), generator=g), \
            "synthetic"
    torch.manual_seed(0)
    model = build_model("small-lenet", (1, 28, 28), 10).eval()
    weights = weights_of(model)
    directions = [random_direction(weights, seed) for seed in (1, 2)]
    return model, weights, directions, x, y, source


def _timed(fn) -> tuple[object, float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    result = fn()
    return result, time.perf_counter() - wall, time.process_time() - cpu


def run(quick: bool = False) -> dict:
    from landscape.slices import evaluate_points, evaluate_points_loop, square_grid

    model, weights, directions, x, y, source = _problem()
    side = QUICK_GRID if quick else GRID
    coords = square_grid(2, 1.0, side).coords
    sub = np.arange(0, side, LOOP_STRIDE)
    sub_index = (sub[:, None] * side + sub[None, :]).reshape(-1)  # C order of the grid
    # warm-up on 4 points so first-call set-up (vmap tracing, allocator) is not timed
    evaluate_points(model, weights, directions, coords[:4], x[:CHUNK], y[:CHUNK], chunk_size=CHUNK)
    blocks = QUICK_BLOCKS if quick else BLOCKS
    ours_blocks = np.array_split(np.arange(len(coords)), blocks)
    loop_blocks = np.array_split(sub_index, blocks)
    ours_loss, ours_error = np.zeros(len(coords)), np.zeros(len(coords))
    loop_loss, loop_error = np.zeros(len(sub_index)), np.zeros(len(sub_index))
    spent = {"ours": [0.0, 0.0], "loop": [0.0, 0.0]}  # wall, CPU seconds
    done = 0
    for block, loop_block in zip(ours_blocks, loop_blocks):  # alternate, so both see the same machine load
        values, wall, cpu = _timed(lambda block=block: evaluate_points(
            model, weights, directions, coords[block], x, y, chunk_size=CHUNK, points_per_pass=POINTS_PER_PASS))
        ours_loss[block], ours_error[block] = values.loss, values.error
        spent["ours"][0] += wall
        spent["ours"][1] += cpu
        values, wall, cpu = _timed(lambda loop_block=loop_block: evaluate_points_loop(
            model, weights, directions, coords[loop_block], x, y, chunk_size=CHUNK))
        loop_loss[done:done + len(loop_block)], loop_error[done:done + len(loop_block)] = values.loss, values.error
        done += len(loop_block)
        spent["loop"][0] += wall
        spent["loop"][1] += cpu
    rows = []
    for name, label, points in (("ours", f"landscape (vmap, {POINTS_PER_PASS} points per pass)", len(coords)),
                                ("loop", "loop (copy weights, forward)", len(sub_index))):
        wall, cpu = spent[name]
        rows.append({"contender": label, "points": points, "seconds": wall, "cpu_seconds": cpu,
                     "points_per_s": points / wall, "points_per_cpu_s": points / cpu})
    rows[0]["max_rel_loss_difference"] = float(np.max(np.abs(ours_loss[sub_index] - loop_loss) / loop_loss))
    rows[0]["max_error_difference"] = float(np.max(np.abs(ours_error[sub_index] - loop_error)))
    rows[1]["max_rel_loss_difference"] = rows[1]["max_error_difference"] = 0.0
    for row in rows:
        row["speedup"] = row["points_per_s"] / rows[1]["points_per_s"]
        row["cpu_speedup"] = row["points_per_cpu_s"] / rows[1]["points_per_cpu_s"]
    return {"case": "slices", "model": "small-lenet", "samples": SAMPLES, "data": source, "grid": [side, side],
            "chunk_size": CHUNK, "dtype": "float32", "threads": torch.get_num_threads(), "blocks": blocks,
            "loss_range": [float(ours_loss.min()), float(ours_loss.max())], "rows": rows}


def table(result: dict) -> str:
    side = " x ".join(map(str, result["grid"]))
    lines = [
        f"small-lenet (seeded initialisation), {result['samples']} {result['data']} samples, {side} grid of two "
        f"filter-normalised random directions, float32, {result['chunk_size']} samples per forward pass, "
        f"{result['threads']} torch threads; the loop on every {LOOP_STRIDE}th point of each axis, the two "
        f"alternating in {result['blocks']} blocks. Speed-up = points/s over the per-point loop, by wall time "
        "(by CPU time in brackets; target >= 3); differences against the loop at its points (target <= 1e-6 "
        "relative).",
        "",
        "| contender | points | seconds (CPU s) | points/s | speed-up (CPU time) | max rel. loss difference | "
        "max error difference | target |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in result["rows"]:
        ours = row["contender"].startswith("landscape")
        met = row["speedup"] >= 3 and row["max_rel_loss_difference"] <= 1e-6
        lines.append(f"| {row['contender']} | {row['points']} | {row['seconds']:.1f} ({row['cpu_seconds']:.1f}) | "
                     f"{row['points_per_s']:.2f} | {row['speedup']:.2f} ({row['cpu_speedup']:.2f}) | "
                     f"{row['max_rel_loss_difference']:.1e} | {row['max_error_difference']:.1e} | "
                     f"{('ok' if met else 'MISSED') if ours else ''} |")
    return "\n".join(lines)
