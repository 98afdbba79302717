"""`landscape spectrum` end to end: a trained checkpoint, the first N samples, truth from torch.func."""

import json

import numpy as np
import pytest
import torch
from torch.func import hessian
from typer.testing import CliRunner

from digits_reference import DEVICE, flat_loss, train_tiny_digits_run

from landscape.cli import app
from landscape.train import TrainConfig, train

runner = CliRunner()
N = 100


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return train_tiny_digits_run(tmp_path_factory.mktemp("spectrum") / "run", epochs=2)


@pytest.fixture(scope="module")
def reference(run_dir):
    """Dense float64 Hessian of the mean loss over the first N training samples."""
    loss, w0 = flat_loss(run_dir, N)
    H = hessian(loss)(w0)
    grads = torch.stack([torch.func.grad(lambda v, i=i: loss(v, slice(i, i + 1)))(w0) for i in range(N)])
    return {"H": H, "eig": torch.linalg.eigvalsh(H).numpy(), "fisher_diag": (grads**2).mean(0).numpy()}


def _spectrum(run_dir, *args, quiet=True):
    result = runner.invoke(app, ["spectrum", str(run_dir / "checkpoint.pt"), "--samples", str(N), "--chunk-size", "30",
                                 "--device", DEVICE, *(["--quiet"] if quiet else []), *args])
    assert result.exit_code == 0, result.output
    return result


def _load(folder):
    return dict(np.load(folder / "spectrum.npz")), json.loads((folder / "spectrum.json").read_text())


def test_exact_spectrum_matches_dense_reference(run_dir, reference):
    _spectrum(run_dir, "--method", "exact", "--block-size", "50")
    arrays, info = _load(run_dir / "spectrum-exact")
    eig = arrays["eigenvalues"]
    assert eig.dtype == np.float64 and np.all(np.diff(eig) >= 0)
    np.testing.assert_allclose(eig, reference["eig"], rtol=0, atol=1e-10 * np.abs(reference["eig"]).max())
    assert np.max(np.abs(eig - reference["eig"])) <= info["eigenvalue_abs_error_bound"] + 1e-12
    for key in ("method", "n_params", "samples", "split", "mode", "dtype", "seed", "hvp_count", "wall_s", "peak_rss_mb",
                "lambda_max", "lambda_min", "eigenvalue_abs_error_bound", "fraction_abs_below", "trace"):
        assert key in info, key
    assert info["n_params"] == 8 * 8 * 4 + 4 + 4 * 10 + 10 == len(eig)
    assert info["samples"] == N and info["sample_rule"].startswith("first 100")
    assert set(info["fraction_abs_below"]) == {"1e-5", "1e-4", "1e-3", "1e-2"}
    assert info["fraction_abs_below"]["1e-2"] == pytest.approx(np.mean(np.abs(reference["eig"]) < 1e-2))
    assert not (run_dir / "spectrum-exact" / "hessian.bin").exists()
    # on a GPU the solve runs there (cuSOLVER), else on MKL where it is installed, else on scipy's LAPACK
    from landscape.platform import mkl as _mkl

    expected = "torch-cuda" if DEVICE.startswith("cuda") else ("mkl" if _mkl.load() is not None else "scipy")
    assert info["eigensolver"] == expected


def test_dense_workspace_sets_the_build_s_budget_and_not_the_result(run_dir, reference, monkeypatch):
    """--dense-workspace reaches dense_hessian as bytes; one byte (one sample per factor
    pass of the Kronecker block) gives the same spectrum; a bad size is one sentence."""
    from landscape.curvature import dense_ggn

    sizes = []
    real = dense_ggn.kron_factors
    monkeypatch.setattr(dense_ggn, "kron_factors", lambda op, x, m: (sizes.append(int(x.shape[0])), real(op, x, m))[1])
    _spectrum(run_dir, "--method", "exact", "--dense-workspace", "1", "--out", str(run_dir / "tiny-workspace"))
    eig = _load(run_dir / "tiny-workspace")[0]["eigenvalues"]
    np.testing.assert_allclose(eig, reference["eig"], rtol=0, atol=1e-10 * np.abs(reference["eig"]).max())
    assert sizes == [1] * N
    result = runner.invoke(app, ["spectrum", str(run_dir), "--method", "exact", "--dense-workspace", "lots", "--quiet"])
    assert result.exit_code == 2 and "such as 512M or 2G, got 'lots'" in result.output


def test_keep_matrix_keeps_the_hessian_itself(run_dir, reference):
    """--keep-matrix leaves the matrix intact: the eigensolve works on a private copy-on-write mapping."""
    _spectrum(run_dir, "--method", "exact", "--keep-matrix", "--out", str(run_dir / "kept"))
    n = reference["H"].shape[0]
    kept = np.fromfile(run_dir / "kept" / "hessian.bin", dtype=np.float64).reshape(n, n)
    np.testing.assert_allclose(kept, reference["H"].numpy(), rtol=1e-9, atol=1e-12)
    assert json.loads((run_dir / "kept" / "hessian.json").read_text()).get("solving") is None


def test_build_only_stops_before_the_solve_and_the_next_run_only_solves(run_dir, reference):
    out = run_dir / "two-step"
    result = _spectrum(run_dir, "--method", "exact", "--build-only", "--out", str(out), quiet=False)
    assert "without --build-only" in result.output
    assert "dense curvature:" in result.output and "(100%)" in result.output  # progress lines without a terminal
    assert (out / "hessian.bin").exists() and not (out / "spectrum.json").exists()
    built = json.loads((out / "hessian.json").read_text())
    result = _spectrum(run_dir, "--method", "exact", "--out", str(out), quiet=False)
    assert "eigensolve of the" in result.output and "LAPACK reports no progress" in result.output
    arrays, info = _load(out)
    np.testing.assert_allclose(arrays["eigenvalues"], reference["eig"], rtol=0,
                               atol=1e-10 * np.abs(reference["eig"]).max())
    assert info["dense_build_s"] == built["build_s"]  # nothing was built again
    assert not (out / "hessian.bin").exists()


def test_lanczos_top_and_bottom_match_exact(run_dir, reference):
    _spectrum(run_dir, "--method", "lanczos", "--k", "5", "--which", "both", "--tol", "1e-10")
    arrays, info = _load(run_dir / "spectrum-lanczos")
    eig = reference["eig"]
    expected = np.concatenate([eig[:5], eig[-5:]])
    np.testing.assert_allclose(arrays["ritz_values"][-5:], expected[-5:], rtol=1e-8)
    np.testing.assert_allclose(arrays["ritz_values"][:5], expected[:5], atol=1e-8 * eig.max())
    assert info["hvp_count"] == info["iterations"]  # one product per Lanczos step (the determinism check is not counted)
    schemes = info["product_schemes"]  # the timed choices are recorded: which scheme, graph kept or not
    assert schemes["single"] in ("reverse-over-forward", "reverse-over-reverse") and schemes["cache_graph"]
    assert schemes["cache_graph"].startswith("on") == (schemes["cached_graph_bytes"] > 0)


def test_slq_and_trace_agree_with_the_exact_trace(run_dir, reference):
    _spectrum(run_dir, "--method", "slq", "--probes", "20", "--iters", "30", "--subset-seed", "0", "--out", str(run_dir / "slq"))
    arrays, info = _load(run_dir / "slq")
    np.testing.assert_allclose(arrays["weights"].sum(axis=1), 1.0, rtol=1e-12)
    assert info["sample_rule"].startswith("100 of the 'train' split drawn with seed 0")
    # a seeded subset has its own Hessian: compare the trace with the first-N run only for --seed-less runs
    _spectrum(run_dir, "--method", "trace", "--trace-rel", "0.05")
    _, info = _load(run_dir / "spectrum-trace")
    exact_trace = float(reference["eig"].sum())
    assert abs(info["trace"] - exact_trace) < 3 * info["trace_stderr"]


def test_fisher_diagonal_empirical_and_adam_proxy(run_dir, reference):
    _spectrum(run_dir, "--method", "fisher-diag", "--fisher", "empirical", "--out", str(run_dir / "fd"))
    arrays, info = _load(run_dir / "fd")
    np.testing.assert_allclose(arrays["diagonal"], reference["fisher_diag"], rtol=1e-9, atol=1e-14)
    _spectrum(run_dir, "--method", "fisher-diag", "--fisher", "adam", "--out", str(run_dir / "fa"))
    arrays, info = _load(run_dir / "fa")
    raw = torch.load(run_dir / "checkpoint.pt", weights_only=True)["optimizer"]["state_dict"]
    beta1, beta2 = raw["param_groups"][0]["betas"]
    entry = raw["state"][0]
    step = float(entry["step"])
    m, v = entry["exp_avg"].double() / (1 - beta1**step), entry["exp_avg_sq"].double() / (1 - beta2**step)
    np.testing.assert_allclose(arrays["diagonal"][: m.numel()], (v - m * m).reshape(-1).numpy(), rtol=1e-12)


def test_spectrum_errors_are_one_sentence(run_dir, tmp_path):
    result = runner.invoke(app, ["spectrum", str(tmp_path / "missing.pt"), "--quiet"])
    assert result.exit_code == 2 and "does not exist" in result.output
    result = runner.invoke(app, ["spectrum", str(run_dir), "--samples", "999999", "--quiet", "--out", str(tmp_path / "big")])
    assert result.exit_code == 2 and "exceeds" in result.output
    sgd = tmp_path / "sgd"
    train(TrainConfig(optimizer="sgd", epochs=1, out=str(sgd), device="cpu", model_kwargs={"hidden": 4}), progress=False)
    result = runner.invoke(app, ["spectrum", str(sgd), "--method", "fisher-diag", "--fisher", "adam", "--quiet"])
    assert result.exit_code == 2 and "Adam" in result.output


def test_adam_proxy_is_refused_outside_the_diagonal():
    from landscape.errors import LandscapeError
    from landscape.spectrum import SpectrumConfig

    with pytest.raises(LandscapeError, match="--fisher adam .* is a diagonal only"):
        SpectrumConfig(checkpoint="x.pt", method="lanczos", operator="fisher", fisher="adam")
    SpectrumConfig(checkpoint="x.pt", method="fisher-diag", fisher="adam")  # the one place it belongs
