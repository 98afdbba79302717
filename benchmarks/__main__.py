"""Benchmark runner: ``python -m benchmarks CASE [--quick]``.

Installs nothing. Writes ``benchmarks/results/<case>.json`` (``<case>.quick.json`` with
``--quick``, which git ignores and no table reads) (machine, versions,
settings, per-repeat times, medians, ratios) and regenerates the table for that case in
``benchmarks/README.md`` between ``<!-- CASE:begin -->`` / ``<!-- CASE:end -->`` markers.
Only ratios measured in one run count; absolute times are context.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
from datetime import datetime, timezone
from pathlib import Path

import torch

from landscape.checkpoint import package_versions
from landscape.io import write_json, write_text

HERE = Path(__file__).resolve().parent

CASES = {
    "optim_step_cost": "benchmarks.optim_step_cost",
    "hvp": "benchmarks.hvp",
    "topk": "benchmarks.topk",
    "trace_density": "benchmarks.trace_density",
    "dense": "benchmarks.dense",
    "diag_fisher": "benchmarks.diag_fisher",
    "demo": "benchmarks.demo",
    "slices": "benchmarks.slices",
    "mutation": "benchmarks.mutation",  # options: python -m benchmarks.mutation --help
}


def machine() -> dict:
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def update_readme(case: str, table: str, stamp: str) -> None:
    readme = HERE / "README.md"
    text = readme.read_text(encoding="utf-8") if readme.exists() else "# Benchmarks\n"
    block = f"<!-- {case}:begin -->\n_Last run: {stamp}_\n\n{table}\n<!-- {case}:end -->"
    pattern = re.compile(rf"<!-- {re.escape(case)}:begin -->.*?<!-- {re.escape(case)}:end -->", re.S)
    if pattern.search(text):
        text = pattern.sub(block, text)
    else:
        text = text.rstrip() + f"\n\n## {case}\n\n{block}\n"
    write_text(readme, text)


def main(argv: list[str] | None = None) -> None:
    import importlib

    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    parser.add_argument("cases", nargs="*", default=list(CASES), choices=list(CASES), help="cases to run (default: all)")
    parser.add_argument("--quick", action="store_true", help="fewer repeats (a smoke run, not for the table)")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    args = parser.parse_args(argv)
    from landscape.platform import configure

    configure(heap=True)  # the benchmarks measure what the command line runs (cli.app.configure_platform)
    if args.threads:
        torch.set_num_threads(args.threads)
    for case in args.cases:
        module = importlib.import_module(CASES[case])
        stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        result = module.run(quick=args.quick)
        result.update({"machine": machine(), "versions": package_versions(), "timestamp": stamp, "quick": args.quick})
        # a smoke run never replaces the published result (results/<case>.json, the table's source)
        out = HERE / "results" / (f"{case}.quick.json" if args.quick else f"{case}.json")
        write_json(out, result)
        table = module.table(result)
        print(table)
        if not args.quick:
            update_readme(case, table, stamp)
        print(f"wrote {out}")


if __name__ == "__main__":
    main()
