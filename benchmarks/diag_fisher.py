"""Case 6: diagonal empirical Fisher and diagonal GGN, landscape vs BackPACK.

Two quantities of the MEAN loss over N samples (batches of B, weighted |b|/N):

* empirical Fisher diagonal (1/N) sum_i g_i^2: landscape ``diagonal_fisher`` (vmapped
  per-sample gradients in chunks) vs BackPACK ``SumGradSquared`` (which returns
  sum_i (g_i / B)^2 for a batch-mean loss, so it is scaled by B here);
* GGN diagonal (= the true Fisher's with the label expectation taken exactly, for
  cross-entropy): landscape ``diagonal_fisher(exact_expectation=True)`` vs BackPACK
  ``DiagGGNExact``.

Every contender runs in its own fresh process (spawned), so its peak resident memory is
its own: reported as the peak RSS of the process and as the increment over the RSS just
before the computation (model, data and imports already loaded). Throughput is samples
per second (median over repeats; contenders alternate repeat by repeat; each process
first runs the same computation on 4 samples so imports and first-call set-up are not
timed). Models: an MLP
and a conv net on the first N Fashion-MNIST training images (synthetic images of the
same shape when the files are absent), and All-CNN-BN (BatchNorm, eval mode) on
CIFAR-shaped inputs (synthetic: no CIFAR-10 on this machine; the cost does not depend
on pixel values). Agreement: relative 2-norm difference of the two diagonals. BackPACK's DiagGGNExact only
walks ``nn.Sequential`` models, so it runs on a Sequential twin sharing the zoo model's
layers where one is written (small-mnistfc, small-lenet); on All-CNN-BN it is reported
as not compared.
"""

from __future__ import annotations

import copy
import multiprocessing as mp
import resource
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.memory import status_kb

MODELS = {
    # name: (input shape, dataset, N empirical, N ggn, batch size, per-sample chunk)
    "small-mnistfc": ((1, 28, 28), "fashion-mnist", 2048, 512, 256, 256),
    "small-lenet": ((1, 28, 28), "fashion-mnist", 1024, 256, 256, 128),
    "all-cnn-bn": ((3, 32, 32), "synthetic", 64, 16, 32, 16),
}
CONTENDERS = {
    "empirical": ("landscape", "backpack SumGradSquared"),
    "ggn": ("landscape", "backpack DiagGGNExact"),
}


def _rss_mb() -> float:
    """This process's peak RSS. VmHWM, not ru_maxrss: a spawned child inherits its parent's
    ru_maxrss through fork + exec, so it would start at the parent's peak."""
    peak = status_kb("VmHWM")
    return peak / 1024 if peak is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _sequential_twin(model):
    """The same network as an ``nn.Sequential`` of BackPACK-supported layers (weights shared), or None.

    BackPACK's second-order extensions only traverse ``nn.Sequential`` containers of the
    layers it knows; the zoo's classes have their own ``forward``.
    """
    from torch import nn

    name = getattr(model, "name", "")
    if name == "small-mnistfc":
        return nn.Sequential(nn.Flatten(), model.fc1, nn.ReLU(), model.fc2)
    if name == "small-lenet":
        return nn.Sequential(model.conv1, nn.ReLU(), nn.MaxPool2d(2), model.conv2, nn.ReLU(), nn.MaxPool2d(2),
                             nn.Flatten(), model.fc1, nn.ReLU(), model.fc2)
    return None


def _write_problem(model_name: str, n: int, path: str) -> None:
    """Model weights and the first N samples, saved once so each worker loads only what it uses."""
    import torch

    from landscape.models import build_model

    shape, dataset, *_ = MODELS[model_name]
    torch.manual_seed(0)
    model = build_model(model_name, shape, 10).eval()
    source = "synthetic"
    if dataset == "fashion-mnist":
        try:
            from landscape.data import load_dataset

            data = load_dataset("fashion-mnist", "train")
            x, y = data.inputs[:n], data.targets[:n]
            source = "fashion-mnist (first N of train)"
        except Exception:  # noqa: BLE001 - files absent: same shapes, synthetic values
            dataset = "synthetic"
    if source == "synthetic":
        g = torch.Generator().manual_seed(0)
        x, y = torch.randn(n, *shape, generator=g), torch.randint(0, 10, (n,), generator=g)
    torch.save({"state": model.state_dict(), "x": x.clone(), "y": y.clone(), "source": source}, path)


def _problem(model_name: str, path: str):
    import torch

    from landscape.models import build_model

    shape = MODELS[model_name][0]
    saved = torch.load(path, weights_only=True)
    model = build_model(model_name, shape, 10).eval()
    model.load_state_dict(saved["state"])
    return model, saved["x"], saved["y"], saved["source"]


def _run_landscape(model, x, y, quantity: str, batch: int, chunk: int):
    from landscape.curvature.diagonal import diagonal_fisher
    from landscape.curvature.operators import FisherOperator, make_batches

    op = FisherOperator(model, None, make_batches(x, y, batch), kind="empirical", sample_chunk=chunk,
                        check_determinism=False)
    return diagonal_fisher(op, exact_expectation=quantity == "ggn")


def _run_backpack(model, x, y, quantity: str, batch: int, chunk: int):
    import torch
    from backpack import backpack, extend
    from backpack.extensions import DiagGGNExact, SumGradSquared

    if quantity == "ggn":
        twin = _sequential_twin(model)
        if twin is None:
            raise NotImplementedError(f"BackPACK's DiagGGNExact needs an nn.Sequential; no twin for {model.name}")
        model = twin.eval()
    model = extend(model)
    loss_fn = extend(torch.nn.CrossEntropyLoss())
    params = [p for p in model.parameters() if p.requires_grad]
    total = None
    n = x.shape[0]
    for start in range(0, n, batch):
        xb, yb = x[start : start + batch], y[start : start + batch]
        model.zero_grad()
        loss = loss_fn(model(xb), yb)
        with backpack(SumGradSquared() if quantity == "empirical" else DiagGGNExact()):
            loss.backward()
        if quantity == "empirical":
            piece = torch.cat([p.sum_grad_squared.reshape(-1) for p in params]) * xb.shape[0]
        else:
            piece = torch.cat([p.diag_ggn_exact.reshape(-1) for p in params])
        piece = piece * (xb.shape[0] / n)
        total = piece if total is None else total + piece
    return total.detach()


def _worker(model_name: str, quantity: str, contender: str, problem: str, out_file: str, queue) -> None:
    import warnings

    warnings.filterwarnings("ignore")  # BackPACK warns about container modules it does not extend
    batch, chunk = MODELS[model_name][4:6]
    model, x, y, source = _problem(model_name, problem)
    n = x.shape[0]
    run = _run_landscape if contender == "landscape" else _run_backpack
    try:
        # warm-up on a few samples: imports and first-call set-up stay out of the timing
        run(copy.deepcopy(model), x[:4], y[:4], quantity, batch, chunk)
        before = _rss_mb()
        start = time.perf_counter()
        diag = run(model, x, y, quantity, batch, chunk)
    except NotImplementedError as err:
        queue.put({"error": f"NotImplementedError: {str(err).splitlines()[0][:200]}"})
        return
    seconds = time.perf_counter() - start
    np.save(out_file, diag.double().numpy())
    queue.put({"seconds": seconds, "rss_before_mb": before, "peak_rss_mb": _rss_mb(), "samples": n, "data": source,
               "n_params": int(diag.numel()), "batch_size": batch, "sample_chunk": chunk})


def _spawn(model_name: str, quantity: str, contender: str, problem: str, out_file: str) -> dict:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    name = "landscape" if contender == "landscape" else "backpack"
    proc = ctx.Process(target=_worker, args=(model_name, quantity, name, problem, out_file, queue))
    proc.start()
    proc.join()
    if proc.exitcode != 0:
        return {"error": f"exit code {proc.exitcode}"}
    return queue.get()


def run(quick: bool = False) -> dict:
    from benchmarks.peers import peer_status

    status = peer_status()
    repeats = 1 if quick else 3
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for model_name in MODELS:
            for quantity, contenders in CONTENDERS.items():
                reps = 1 if (quick or model_name == "all-cnn-bn") else repeats
                record = {"model": model_name, "quantity": quantity, "contenders": {}}
                n = MODELS[model_name][2] if quantity == "empirical" else MODELS[model_name][3]
                problem = str(Path(tmp) / f"{model_name}-{n}.pt")
                if not Path(problem).exists():
                    _write_problem(model_name, n, problem)
                for rep in range(reps):
                    order = contenders if rep % 2 == 0 else contenders[::-1]
                    for contender in order:
                        out_file = str(Path(tmp) / f"{model_name}-{quantity}-{contender.split()[0]}.npy")
                        result = _spawn(model_name, quantity, contender, problem, out_file)
                        record["contenders"].setdefault(contender, []).append(result)
                files = {c: Path(tmp) / f"{model_name}-{quantity}-{c.split()[0]}.npy" for c in contenders}
                if all(f.exists() for f in files.values()):
                    a, b = (np.load(files[c]) for c in contenders)
                    record["rel_difference"] = float(np.linalg.norm(a - b) / np.linalg.norm(a))
                summary = {}
                for contender, results in record["contenders"].items():
                    ok = [r for r in results if "seconds" in r]
                    if ok:
                        seconds = float(np.median([r["seconds"] for r in ok]))
                        summary[contender] = {
                            "median_s": seconds, "samples_per_s": ok[0]["samples"] / seconds,
                            "peak_rss_mb": max(r["peak_rss_mb"] for r in ok),
                            "peak_increment_mb": max(r["peak_rss_mb"] - r["rss_before_mb"] for r in ok),
                            "samples": ok[0]["samples"], "n_params": ok[0]["n_params"], "data": ok[0]["data"],
                        }
                record["summary"] = summary
                if len(summary) == 2:
                    ours, theirs = (summary[c] for c in contenders)
                    record["throughput_ratio"] = ours["samples_per_s"] / theirs["samples_per_s"]
                    record["memory_ratio"] = ours["peak_increment_mb"] / max(theirs["peak_increment_mb"], 1e-9)
                rows.append(record)
                print(model_name, quantity, {k: round(v["median_s"], 2) for k, v in summary.items()},
                      record.get("rel_difference"), flush=True)
    return {"case": "diag_fisher", "rows": rows, "repeats": repeats, "peers": {"backpack": status.get("backpack")}}


def table(result: dict) -> str:
    lines = [
        "Diagonal empirical Fisher and GGN diagonal of the mean loss; each contender in a fresh process. "
        "Throughput ratio = landscape / BackPACK samples per second (target >= 1); memory ratio = landscape / "
        "BackPACK peak RSS increment over the process before the computation (target <= 1).",
        "",
        "| model | quantity | n | N | data | landscape | BackPACK | throughput ratio | landscape peak (+incr.) | "
        "BackPACK peak (+incr.) | memory ratio | rel. difference | target |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in result["rows"]:
        s = row["summary"]
        ours = s.get("landscape")
        theirs = next((v for k, v in s.items() if k != "landscape"), None)
        if not ours or not theirs:
            errors = "; ".join(f"{k}: {r.get('error')}" for k, rs in row["contenders"].items() for r in rs if "error" in r)
            lines.append(f"| {row['model']} | {row['quantity']} | | | | "
                         f"{'' if not ours else format(ours['samples_per_s'], '.1f') + '/s'} | n/a | | | | | | "
                         f"not compared: {errors} |")
            continue
        met = row["throughput_ratio"] >= 1.0 and row["memory_ratio"] <= 1.0
        lines.append(
            f"| {row['model']} | {row['quantity']} | {ours['n_params']:,} | {ours['samples']} | {ours['data']} | "
            f"{ours['samples_per_s']:.1f}/s | {theirs['samples_per_s']:.1f}/s | {row['throughput_ratio']:.2f} | "
            f"{ours['peak_rss_mb']:.0f} MB (+{ours['peak_increment_mb']:.0f}) | "
            f"{theirs['peak_rss_mb']:.0f} MB (+{theirs['peak_increment_mb']:.0f}) | {row['memory_ratio']:.2f} | "
            f"{row.get('rel_difference', float('nan')):.1e} | {'ok' if met else 'MISSED'} |"
        )
    return "\n".join(lines)
