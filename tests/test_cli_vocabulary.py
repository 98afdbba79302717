"""The command line's contract: one vocabulary, statistics named for what they are, results kept.

Truth here is the dense float64 Hessian of a 310-parameter run (torch.func), so a
Ritz value can be checked against the eigenvalue it claims to be, and a refused rerun
is checked to leave the earlier result byte for byte.
"""

import json

import numpy as np
import pytest
from torch.func import hessian
from typer.testing import CliRunner

from digits_reference import flat_loss, train_tiny_digits_run
from landscape.cli import app

runner = CliRunner()
N = 100


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return train_tiny_digits_run(tmp_path_factory.mktemp("vocabulary") / "run", epochs=1)


@pytest.fixture(scope="module")
def eigenvalues(run_dir):
    loss, w0 = flat_loss(run_dir, N)
    return np.linalg.eigvalsh(hessian(loss)(w0).numpy())


def _invoke(*args):
    return runner.invoke(app, [*args])


def _spectrum(run_dir, *args):
    return _invoke("spectrum", str(run_dir), "--samples", str(N), "--device", "cpu", "--quiet", *args)


def test_top_k_lanczos_names_ritz_values_and_no_lambda_min(run_dir, eigenvalues, tmp_path):
    result = _spectrum(run_dir, "--method", "lanczos", "--k", "5", "--which", "LA", "--tol", "1e-10",
                       "--out", str(tmp_path / "la"))
    assert result.exit_code == 0, result.output
    info = json.loads((tmp_path / "la" / "spectrum.json").read_text())
    assert "lambda_min" not in info and info["which"] == "LA"
    assert set(info["platform"]) >= {"heap", "mkl", "mkl_loaded", "torch_threads"}  # what was in force, recorded
    assert info["lambda_max"] == pytest.approx(eigenvalues[-1], rel=1e-9)
    # the smallest of the five top Ritz values is the 5th largest eigenvalue, far from the Hessian's minimum
    assert info["ritz_min"] == pytest.approx(eigenvalues[-5], rel=1e-8, abs=1e-12)
    assert info["ritz_min"] - eigenvalues[0] > 1e-3
    assert "lambda_min" not in result.output and "ritz_min" in result.output
    result = _spectrum(run_dir, "--method", "lanczos", "--k", "3", "--which", "SA", "--tol", "1e-10",
                       "--out", str(tmp_path / "sa"))
    info = json.loads((tmp_path / "sa" / "spectrum.json").read_text())
    assert "lambda_max" not in info
    assert info["lambda_min"] == pytest.approx(eigenvalues[0], abs=1e-9 * eigenvalues[-1])


def test_a_rerun_with_other_settings_keeps_the_earlier_result(run_dir, tmp_path):
    out = tmp_path / "kept"
    assert _spectrum(run_dir, "--method", "lanczos", "--k", "3", "--out", str(out)).exit_code == 0
    before = {name: (out / name).read_bytes() for name in ("spectrum.json", "spectrum.npz")}
    refused = _spectrum(run_dir, "--method", "lanczos", "--k", "5", "--out", str(out))
    assert refused.exit_code == 2 and "other settings" in refused.output and "--force" in refused.output
    assert "k 3 there, 5 now" in refused.output
    assert {name: (out / name).read_bytes() for name in before} == before
    # what changes only memory or speed is not another result
    assert _spectrum(run_dir, "--method", "lanczos", "--k", "3", "--chunk-size", "7", "--out", str(out)).exit_code == 0
    forced = _spectrum(run_dir, "--method", "lanczos", "--k", "5", "--out", str(out), "--force")
    assert forced.exit_code == 0 and "replaced the earlier result" in forced.output
    info = json.loads((out / "spectrum.json").read_text())
    assert info["k"] == 5 and info["replaced"] == {"k": [3, 5]}


def test_flatness_rerun_with_other_settings_is_refused(run_dir, tmp_path):
    common = ["flatness", str(run_dir), "--samples", "50", "--device", "cpu", "--quiet", "--out", str(tmp_path),
              "--measure", "local-energy", "--sigmas", "0,0.1"]
    assert _invoke(*common, "--draws", "2").exit_code == 0
    refused = _invoke(*common, "--draws", "3")
    assert refused.exit_code == 2 and "samples 2 there, 3 now" in refused.output


def test_trace_stopped_at_its_cap_says_so(run_dir, tmp_path):
    result = _spectrum(run_dir, "--method", "trace", "--trace-rel", "1e-6", "--max-probes", "20",
                       "--out", str(tmp_path))
    assert result.exit_code == 0, result.output
    info = json.loads((tmp_path / "spectrum.json").read_text())
    assert info["converged"] is False and info["probes"] == 20 and info["max_probes"] == 20
    assert "raise --max-probes" in result.output and "raise --max-probes" in info["warnings"][0]


@pytest.mark.parametrize("args, fragment", [
    (["spectrum", "RUN", "--method", "lanczos", "--probes", "5"], "--probes is not used by --method lanczos"),
    (["spectrum", "RUN", "--method", "exact", "--k", "5"], "--k is not used by --method exact"),
    (["spectrum", "RUN", "--method", "slq", "--draws", "5"], "--draws is not used by --method slq"),
    (["flatness", "RUN", "--measure", "fisher-rao", "--draws", "5"], "--draws is not used by --measure fisher-rao"),
    (["train", "--optimizer", "sgd", "--rho", "0.1"], "--rho is not used by --optimizer sgd"),
    (["train", "--optimizer", "adam", "--momentum", "0.5"], "--momentum is not used by --optimizer adam"),
    (["train", "--optimizer", "sgd", "--langevin-steps", "3"], "--langevin-steps is not used"),
    (["spectrum", "RUN", "--k", "0"], "greater than or equal to 1"),
    (["spectrum", "RUN", "--tol", "nan"], "finite number > 0 and < 1"),
    (["spectrum", "RUN", "--method", "trace", "--trace-rel", "0"], "finite number > 0 and < 1"),
    (["spectrum", "RUN", "--probes", "0"], "greater than or equal to 1"),
    (["flatness", "RUN", "--sgld-steps", "0"], "greater than or equal to 1"),
    (["flatness", "RUN", "--burn-in", "-1"], "greater than or equal to 0"),
    (["train", "--lr", "inf"], "finite number > 0"),
    (["train", "--weight-decay", "nan"], "finite number >= 0"),
    (["train", "--optimizer", "sam", "--rho", "nan"], "finite number > 0"),
])
def test_unused_and_out_of_range_options_end_in_one_sentence(run_dir, tmp_path, args, fragment):
    args = [str(run_dir) if a == "RUN" else a for a in args]
    result = _invoke(*args, "--out", str(tmp_path / "out"))
    assert result.exit_code == 2, result.output
    assert fragment in result.output and "Traceback" not in result.output
    assert not (tmp_path / "out").exists()


def test_version_and_help_fit_80_columns():
    version = _invoke("--version")
    assert version.exit_code == 0 and version.output.startswith("landscape ")
    for command in ([], ["train"], ["spectrum"], ["flatness"], ["report"], ["reproduce"]):
        text = runner.invoke(app, [*command, "--help"], terminal_width=80).output
        assert max(len(line) for line in text.splitlines()) <= 80, command
        assert not any(f"<{kind}>" in text for kind in ("str", "int", "float", "list[str]", "list[float]")), command


@pytest.mark.parametrize("cpus, load, threads", [(2, 0.1, 2), (2, 0.6, 1), (2, 5.0, 1), (16, 3.2, 13), (1, 0.0, 1)])
def test_threads_leave_the_busy_cores_to_others(cpus, load, threads):
    from landscape.platform.threads import choose_threads

    assert choose_threads(cpus, load) == threads


def test_cgroup_quota_caps_the_cores(tmp_path):
    from landscape.platform.threads import _quota_cpus

    (tmp_path / "cpu.max").write_text("150000 100000\n")
    assert _quota_cpus(tmp_path / "cpu.max") == 1.5
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert _quota_cpus(tmp_path / "cpu.max") is None
    assert _quota_cpus(tmp_path / "missing") is None


def test_proc_stat_counts_iowait_as_idle(tmp_path):
    from landscape.platform.threads import _cpu_times

    (tmp_path / "stat").write_text("cpu  100 0 50 800 50 0 0 0 0 0\ncpu0 1 2 3 4\n")
    assert _cpu_times(tmp_path / "stat") == (150, 1000)
    assert _cpu_times(tmp_path / "missing") is None


def test_k_beyond_the_parameters_is_said(run_dir, tmp_path):
    result = _spectrum(run_dir, "--method", "lanczos", "--k", "400", "--out", str(tmp_path))
    assert result.exit_code == 0, result.output
    assert "asks for 400 eigenvalues of a 310-parameter operator" in result.output


# every numeric option with the values it must refuse (bounds as declared in cli/app.py)
_BAD_NUMBERS = {
    ("spectrum", "--k"): "positive_int", ("spectrum", "--probes"): "positive_int",
    ("spectrum", "--iters"): "positive_int", ("spectrum", "--samples"): "positive_int",
    ("spectrum", "--chunk-size"): "positive_int", ("spectrum", "--max-probes"): "positive_int",
    ("spectrum", "--tol"): "fraction", ("spectrum", "--trace-rel"): "fraction",
    ("flatness", "--draws"): "positive_int", ("flatness", "--sgld-steps"): "positive_int",
    ("flatness", "--burn-in"): "non_negative_int", ("flatness", "--epsilon"): "positive",
    ("flatness", "--target"): "positive", ("flatness", "--beta"): "positive", ("flatness", "--gamma"): "positive",
    ("train", "--lr"): "positive", ("train", "--weight-decay"): "non_negative", ("train", "--epochs"): "positive_int",
    ("train", "--batch-size"): "positive_int", ("train", "--noise"): "non_negative",
    ("train", "--momentum"): "fraction_from_0",
}


def _bad_value(kind):
    from hypothesis import strategies as st

    words = st.sampled_from(["nan", "inf", "-inf", "abc", "", "1e999", "0x10"])
    if kind.endswith("_int"):
        limit = 1 if kind == "positive_int" else 0
        return st.one_of(st.integers(max_value=limit - 1).map(str), words, st.just("2.5"))
    if kind == "fraction":
        return st.one_of(st.floats(max_value=0.0).map(repr), st.floats(min_value=1.0).map(repr), words)
    if kind == "fraction_from_0":
        return st.one_of(st.floats(max_value=-1e-9).map(repr), st.floats(min_value=1.0).map(repr), words)
    low = 0.0 if kind == "positive" else -1e-300
    return st.one_of(st.floats(max_value=low, exclude_max=kind != "positive").filter(lambda v: v < 0 or
                                                                                       kind == "positive").map(repr),
                     words)


def test_generated_bad_numbers_end_in_one_sentence_before_any_work(run_dir, tmp_path_factory):
    """Property: every numeric option refuses out-of-range, non-finite and non-numeric values with exit
    status 2, no traceback and nothing written (hypothesis, derandomised in CI)."""
    import os

    from hypothesis import given, settings
    from hypothesis import strategies as st

    cases = st.sampled_from(sorted(_BAD_NUMBERS)).flatmap(
        lambda key: st.tuples(st.just(key), _bad_value(_BAD_NUMBERS[key])))

    @settings(max_examples=60, deadline=None, derandomize=os.environ.get("CI") == "true")
    @given(cases)
    def check(case):
        (command, option), value = case
        out = tmp_path_factory.mktemp("bad")
        args = [command, *([str(run_dir)] if command != "train" else []), option, value, "--out", str(out / "o")]
        if option in ("--epsilon", "--beta", "--gamma", "--target", "--sgld-steps", "--burn-in", "--draws"):
            measure = {"--epsilon": "sharpness", "--target": "pac-bayes", "--draws": "pac-bayes"}.get(
                option, "local-entropy")
            args += ["--measure", measure]
        if option in ("--trace-rel", "--max-probes"):
            args += ["--method", "trace"]
        if option in ("--probes", "--iters"):
            args += ["--method", "slq"]
        if option == "--noise":
            args += ["--optimizer", "entropy-sgd"]
        result = runner.invoke(app, args)
        assert result.exit_code == 2, (args, result.output)
        assert "Traceback" not in result.output and not (out / "o").exists(), args

    check()
