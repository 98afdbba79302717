"""Mutation testing of the numerical modules, with mutmut (the ``mutation`` extra).

``python -m benchmarks mutation`` runs every module in :data:`MODULES`;
``python -m benchmarks.mutation --modules slq correlation --max-mutants 40`` runs some of
them, each on an evenly spread subset of its mutants. For each module the package, the
CLI, the tests and pyproject.toml are copied to a temporary directory, a ``[tool.mutmut]``
section there names the module and the test files that check it, and ``mutmut run``
mutates that copy only: the working tree is never written. mutmut runs, for each mutant,
the selected tests that call the mutated function, and stops a mutant at 15 times those
tests' clean duration plus one second (its defaults), recorded as a timeout.

Score = (killed + timeout) / (mutants run - equivalent). A survivor listed in
:data:`EQUIVALENT` (with the reason it cannot change a result) is left out of the
denominator; every other survivor, and every mutant that no selected test reaches
("no tests"), counts against the module. Lines that only build user-facing text (a
``raise``, a warning, the continuation lines of a message) are not mutated
(:data:`NOT_MUTATED`): messages are not numerics. Results merge into
``benchmarks/results/mutation.json`` module by module, each with its own date, so a
partial run keeps the scores measured before for the other modules.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULT = ROOT / "benchmarks" / "results" / "mutation.json"


@dataclass(frozen=True)
class Target:
    path: str
    tests: tuple[str, ...]


SPECTRA = ("tests/test_spectra.py",)
FLATNESS = ("tests/test_flatness.py", "tests/test_blind_spots.py")
MEASURES = ("tests/test_flatness_measures.py", "tests/test_blind_spots.py", "tests/test_sign_conventions.py")
OPTIM = ("tests/test_optim.py",)

MODULES = {
    "correlation": Target("landscape/flatness/correlation.py", ("tests/test_correlation.py",)),
    "slq": Target("landscape/spectra/slq.py", SPECTRA + ("tests/test_blind_spots.py",)),
    "lanczos": Target("landscape/spectra/lanczos.py", SPECTRA),
    "trace": Target("landscape/spectra/trace.py", SPECTRA + ("tests/test_blind_spots.py",)),
    "operators": Target("landscape/curvature/operators.py", ("tests/test_curvature_operators.py",)),
    "dense": Target("landscape/curvature/dense.py", ("tests/test_dense.py",)),
    "diagonal": Target("landscape/curvature/diagonal.py", ("tests/test_diagonal.py",)),
    "local_entropy": Target("landscape/flatness/local_entropy.py", FLATNESS),
    "laplace": Target("landscape/flatness/laplace.py", FLATNESS),
    "quadrature": Target("landscape/flatness/quadrature.py", FLATNESS),
    "sgld": Target("landscape/flatness/sgld.py", FLATNESS),
    "local_energy": Target("landscape/flatness/local_energy.py", MEASURES),
    "sharpness": Target("landscape/flatness/sharpness.py", MEASURES),
    "network": Target("landscape/flatness/network.py", MEASURES),
    "entropy_sgd": Target("landscape/optim/entropy_sgd.py", OPTIM),
    "langevin": Target("landscape/optim/langevin.py", OPTIM),
    "sam": Target("landscape/optim/sam.py", OPTIM),
    "replicated": Target("landscape/optim/replicated.py", OPTIM),
}

NOT_MUTATED = (r"\braise\b", r"warnings\.(append|warn)\(", r"^\s*f?[\"']", r"\bprogress\(")

# survivors that cannot change any result, by mutmut's name: the reason in one line
_NAN = "float('NAN') is float('nan')"
EQUIVALENT: dict[str, str] = {
    **{f"landscape.flatness.correlation.{name}": _NAN for name in (
        "x__tau_b_from_indices__mutmut_32", "x_granulated_kendall__mutmut_48", "x_granulated_kendall__mutmut_59",
        "x_kendall_tau__mutmut_21", "x_kendall_tau_a__mutmut_15", "x_kendall_tau_ci__mutmut_45",
        "x_kendall_tau_ci__mutmut_48", "x_kendall_tau_ci__mutmut_86", "x_kendall_tau_ci__mutmut_89")},
    "landscape.flatness.correlation.x__tau_b_from_indices__mutmut_7":
        "indexing by None keeps the whole antisymmetric matrix: every pair counts twice in the sum and in both "
        "non-zero counts, so the ratio is unchanged",
    "landscape.flatness.correlation.x__tau_b_from_indices__mutmut_11":
        "triu_indices(n) adds the diagonal, where sign(0) = 0 adds nothing to the sum or the non-zero counts",
    **{f"landscape.spectra.slq.{name}": _NAN for name in (
        "xǁSLQResultǁtrace_estimate__mutmut_18", "xǁSLQResultǁexpectation__mutmut_19")},
    **{f"landscape.spectra.slq.xǁSLQResultǁdensity__mutmut_{i}": "numpy reads any negative size as the one to "
       "infer: reshape(-2) is reshape(-1)" for i in (7, 12)},
    "landscape.spectra.slq.x_slq__mutmut_8": "the operator is square: shape[1] is shape[0]",
    **{f"landscape.spectra.slq.x_slq__mutmut_{i}": "integer +-1 probes: lanczos casts the start vector to "
       "float64 before normalising it, exactly" for i in (34, 39)},
    "landscape.spectra.slq.x_slq__mutmut_35": "randint(2, ...) is randint(0, 2, ...): the same draws",
    "landscape.spectra.slq.x_slq__mutmut_62": "with k == m the padded slice nodes[p, m:] is empty",
    "landscape.spectra.trace.x__stderr__mutmut_6": _NAN,
    "landscape.spectra.trace.x__rademacher__mutmut_9": "randint(2, ...) is randint(0, 2, ...): the same draws",
    **{f"landscape.spectra.trace.{name}": "the operator is square: shape[1] is shape[0]" for name in (
        "x_hutchinson_trace__mutmut_9", "x_hutchpp_trace__mutmut_7")},
    **{f"landscape.spectra.trace.{name}": "on a CPU-only run .to(None) stays on the CPU, as .to(op.device) does "
       "(tests/test_cuda.py checks the device on a GPU)" for name in (
        "x__rademacher__mutmut_1", "x_hutchinson_trace__mutmut_25", "x_hutchpp_trace__mutmut_23",
        "x_hutchpp_trace__mutmut_53")},
    **{f"landscape.spectra.trace.{name}": "integer +-1 probes: the operator casts them to its dtype, exactly, and "
       "the products promote to float64" for name in ("x_hutchinson_trace__mutmut_26", "x_hutchpp_trace__mutmut_24")},
    **{f"landscape.spectra.trace.{name}": "the product is float64 or is promoted to float64 by the multiply "
       "that follows" for name in ("x_hutchinson_trace__mutmut_33", "x_hutchpp_trace__mutmut_38",
                                   "x_hutchpp_trace__mutmut_63")},
    "landscape.spectra.trace.x_hutchpp_trace__mutmut_32": "only a float32 operator sees it: the sketch is then "
        "orthonormalised in float32, within the float32 error its products carry anyway",
}

STATUSES = ("killed", "timeout", "survived", "no tests", "suspicious", "segfault", "skipped", "not checked")


def _copy_repository(dest: Path) -> None:
    ignore = shutil.ignore_patterns("__pycache__", "artifacts", "*.pyc", ".pytest_cache")
    for folder in ("landscape", "cli", "tests"):
        shutil.copytree(ROOT / folder, dest / folder, ignore=ignore)
    shutil.copy2(ROOT / "pyproject.toml", dest / "pyproject.toml")


def _toml_list(items) -> str:
    return "[" + ", ".join(json.dumps(str(i)) for i in items) + "]"


def _write_config(dest: Path, target: Target) -> None:
    section = "\n".join([
        "", "[tool.mutmut]",
        f"source_paths = {_toml_list([target.path])}",
        f"pytest_add_cli_args_test_selection = {_toml_list(target.tests)}",
        f"pytest_add_cli_args = {_toml_list(['-p', 'no:warnings', '-p', 'no:cacheprovider'])}",
        f"also_copy = {_toml_list(['landscape', 'cli'])}",
        f"do_not_mutate_patterns = {_toml_list(NOT_MUTATED)}",
        'process_isolation = "forkserver"',  # torch is not fork-safe once its thread pools started
        "",
    ])
    with open(dest / "pyproject.toml", "a", encoding="utf-8") as handle:
        handle.write(section)


def _mutmut(work: Path, args: list[str], timeout: float | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}  # one core per child
    return subprocess.run([sys.executable, "-m", "mutmut", *args], cwd=work, env=env, capture_output=True,
                          text=True, timeout=timeout)


def _statuses(work: Path) -> dict[str, str]:
    out = _mutmut(work, ["results", "--all", "true"]).stdout
    found = {}
    for line in out.splitlines():
        match = re.match(r"\s*(\S+__mutmut_\d+): (.+)$", line)
        if match:
            found[match.group(1)] = match.group(2).strip()
    return found


def _spread(names: list[str], k: int) -> list[str]:
    """``k`` names evenly spread over the module (so every function keeps a share)."""
    if k >= len(names):
        return names
    return [names[round(i * (len(names) - 1) / (k - 1))] for i in range(k)] if k > 1 else names[:1]


def _diff(work: Path, name: str) -> str:
    text = _mutmut(work, ["show", name]).stdout
    return "\n".join(line for line in text.splitlines() if re.match(r"^[-+](?![-+])", line))


def run_module(name: str, *, max_mutants: int | None, children: int, timeout: float) -> dict:
    """Mutate one module of :data:`MODULES` in a temporary copy; counts, score and survivors."""
    target = MODULES[name]
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="landscape-mutation-") as tmp:
        work = Path(tmp)
        _copy_repository(work)
        _write_config(work, target)
        chosen: list[str] = []
        if max_mutants:
            _mutmut(work, ["run", "--max-children", str(children), "no-such-mutant"], timeout)  # generates only
            everything = sorted(_statuses(work), key=_mutant_order)
            chosen = _spread(everything, max_mutants)
        done = _mutmut(work, ["run", "--max-children", str(children), *chosen], timeout)
        statuses = _statuses(work)
        if not statuses:
            raise RuntimeError(f"mutmut produced no results for {name}:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
        generated = len(statuses)
        if chosen:
            statuses = {n: s for n, s in statuses.items() if n in set(chosen)}
        survivors = [{"name": n, "status": s, "diff": _diff(work, n), "equivalent": EQUIVALENT.get(n)}
                     for n, s in sorted(statuses.items(), key=lambda item: _mutant_order(item[0]))
                     if s in ("survived", "no tests", "suspicious")]
    return _summary(name, target, statuses, survivors, generated, time.perf_counter() - start)


def _mutant_order(name: str) -> tuple[str, int]:
    stem, _, number = name.rpartition("__mutmut_")
    return stem, int(number)


def _summary(name, target, statuses, survivors, generated, wall_s) -> dict:
    counts = {s: 0 for s in STATUSES}
    for status in statuses.values():
        counts[status if status in counts else "suspicious"] += 1
    equivalent = sum(1 for s in survivors if s["equivalent"] and statuses[s["name"]] == "survived")
    killed = counts["killed"] + counts["timeout"] + counts["segfault"]
    considered = len(statuses) - counts["skipped"] - counts["not checked"] - equivalent
    return {"module": target.path, "tests": list(target.tests), "generated": generated, "run": len(statuses),
            "counts": counts, "equivalent": equivalent, "killed": killed,
            "score": killed / considered if considered else None, "survivors": survivors, "wall_s": wall_s,
            "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}


def run(quick: bool = False, modules: list[str] | None = None, max_mutants: int | None = None,
        children: int = 2, timeout: float = 6 * 3600) -> dict:
    """Every module in ``modules`` (default: all; ``quick``: correlation, 20 mutants), merged into earlier results."""
    if quick:
        modules, max_mutants = modules or ["correlation"], max_mutants or 20
    previous = json.loads(RESULT.read_text(encoding="utf-8")).get("modules", {}) if RESULT.exists() else {}
    measured = dict(previous)
    for name in modules or list(MODULES):
        print(f"mutation: {name} ({MODULES[name].path})", flush=True)
        measured[name] = run_module(name, max_mutants=max_mutants, children=children, timeout=timeout)
        print(f"  score {_percent(measured[name]['score'])} over {measured[name]['run']} mutants", flush=True)
    return {"case": "mutation", "modules": measured, "mutmut": _mutmut_version()}


def _mutmut_version() -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("mutmut")
    except PackageNotFoundError:
        return None


def _percent(value) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def table(result: dict) -> str:
    measured = result["modules"]
    lines = [
        f"mutmut {result.get('mutmut')}; score = (killed + timeout) / (mutants run - equivalent); \"no tests\": "
        "mutants no selected test reaches (they count against the score). Each module's own date is the "
        "run that measured it; a module with a subset of its mutants says so (run / generated).",
        "",
        "| module | tests | date | run / generated | killed | timeout | survived | equivalent | no tests | score |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, target in MODULES.items():
        m = measured.get(name)
        tests = ", ".join(Path(t).stem.removeprefix("test_") for t in target.tests)
        if m is None:
            lines.append(f"| {target.path} | {tests} | not run yet | | | | | | | |")
            continue
        c = m["counts"]
        lines.append(f"| {target.path} | {tests} | {m['date']} | {m['run']} / {m['generated']} | {c['killed']} | "
                     f"{c['timeout']} | {c['survived'] - m['equivalent']} | {m['equivalent']} | {c['no tests']} | "
                     f"{_percent(m['score'])} |")
    for name, m in measured.items():
        left = [s for s in m["survivors"] if not s["equivalent"]]
        equivalent = [s for s in m["survivors"] if s["equivalent"]]
        if left or equivalent:
            lines += ["", f"Survivors in {m['module']}:", ""]
            lines += [f"- `{s['name'].rpartition('.')[2]}` ({s['status']}): `{_one_line(s['diff'])}`" for s in left]
            lines += [f"- `{s['name'].rpartition('.')[2]}` equivalent, {s['equivalent']}: `{_one_line(s['diff'])}`"
                      for s in equivalent]
    return "\n".join(lines)


def _one_line(diff: str) -> str:
    added = [line[1:].strip() for line in diff.splitlines() if line.startswith("+")]
    return " / ".join(added)[:140].replace("|", "\\|").replace("`", "'")


def main(argv: list[str] | None = None) -> None:
    from benchmarks.__main__ import machine, update_readme
    from landscape.io import write_json

    parser = argparse.ArgumentParser(prog="python -m benchmarks.mutation", description=__doc__.splitlines()[0])
    parser.add_argument("--modules", nargs="+", choices=list(MODULES), default=None, help="default: all")
    parser.add_argument("--max-mutants", type=int, default=None, help="an evenly spread subset per module")
    parser.add_argument("--children", type=int, default=2, help="mutants run in parallel (default 2)")
    parser.add_argument("--timeout", type=float, default=6 * 3600, help="seconds per module run, in all")
    parser.add_argument("--no-readme", action="store_true", help="write the JSON only")
    args = parser.parse_args(argv)
    result = run(modules=args.modules, max_mutants=args.max_mutants, children=args.children, timeout=args.timeout)
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    result.update({"machine": machine(), "timestamp": stamp})
    write_json(RESULT, result)
    text = table(result)
    print(text)
    if not args.no_readme:
        update_readme("mutation", text, stamp)


if __name__ == "__main__":
    main()
