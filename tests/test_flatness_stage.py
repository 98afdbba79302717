"""`landscape flatness` end to end on a trained checkpoint, against dense float64 references."""

import json
import math

import pytest
import torch
from torch.func import hessian
from typer.testing import CliRunner

from digits_reference import DEVICE, flat_loss, train_tiny_digits_run

from landscape.checkpoint import load_checkpoint
from landscape.cli import app
from landscape.data import load_dataset
from landscape.losses import evaluate

runner = CliRunner()
N = 100


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return train_tiny_digits_run(tmp_path_factory.mktemp("flatness") / "run", epochs=3)


@pytest.fixture(scope="module")
def reference(run_dir):
    """Mean loss, gradient and dense Hessian over the first N training samples, float64."""
    loss, w0 = flat_loss(run_dir, N)
    return {"f": float(loss(w0)), "g": torch.func.grad(loss)(w0), "H": hessian(loss)(w0)}


def _flatness(run_dir, *args, out=None):
    argv = ["flatness", str(run_dir / "checkpoint.pt"), "--samples", str(N), "--chunk-size", "100",
            "--device", DEVICE, "--quiet", *args]
    if out is not None:
        argv += ["--out", str(out)]
    result = runner.invoke(app, argv)
    assert result.exit_code == 0, result.output
    return result


def laplace_closed_form(ref, beta, gamma):
    """-f - (1/2) sum log(1 + lambda/gamma) + (1/2) g^T (H + gamma I)^{-1} g for the energy beta L."""
    H, g = beta * ref["H"], beta * ref["g"]
    lam = torch.linalg.eigvalsh(H)
    n = H.shape[0]
    solve = torch.linalg.solve(H + gamma * torch.eye(n, dtype=H.dtype), g)
    return -beta * ref["f"] - 0.5 * float(torch.log1p(lam / gamma).sum()) + 0.5 * float(g @ solve)


def test_local_entropy_laplace_from_the_exact_spectrum_matches_the_closed_form(run_dir, reference, tmp_path):
    spectrum = runner.invoke(app, ["spectrum", str(run_dir), "--method", "exact", "--samples", str(N), "--device",
                                   DEVICE, "--quiet", "--out", str(tmp_path / "exact")])
    assert spectrum.exit_code == 0, spectrum.output
    _flatness(run_dir, "--measure", "local-entropy", "--method", "laplace", "--spectrum", str(tmp_path / "exact"),
              "--gamma", "100", "--gamma", "1000", "--gamma", "10000", "--gamma", "1", out=tmp_path / "lap")
    result = json.loads((tmp_path / "lap" / "flatness-local-entropy.json").read_text())
    assert result["beta"] == N and result["laplace_source"] == "exact spectrum"
    lambda_min = N * float(torch.linalg.eigvalsh(reference["H"])[0])
    assert 1 + lambda_min <= 0 < 100 + lambda_min  # gamma = 1 has no Laplace value at this (unconverged) point
    assert result["estimates"][0] is None and "does not exist at gamma=1" in result["warnings"][0]
    for gamma, estimate in zip(result["gammas"][1:], result["estimates"][1:]):
        assert estimate == pytest.approx(laplace_closed_form(reference, N, gamma), abs=1e-8, rel=1e-9)
    # the SLQ fallback agrees within its standard error
    _flatness(run_dir, "--measure", "local-entropy", "--method", "laplace", "--gamma", "5", "--beta", "1",
              out=tmp_path / "slq")
    slq = json.loads((tmp_path / "slq" / "flatness-local-entropy.json").read_text())
    exact = laplace_closed_form(reference, 1.0, 5.0)
    assert abs(slq["estimates"][0] - exact) <= 4 * slq["stderrs"][0] + 1e-10


def test_local_entropy_sgld_of_the_output_bias_agrees_with_laplace_at_a_large_scope(run_dir, reference, tmp_path):
    """The loss is smooth and convex in the output bias (softmax cross-entropy), so at a large scope
    the Laplace value is accurate to O(1/gamma^2) and SGLD must reproduce it within its error."""
    _flatness(run_dir, "--measure", "local-entropy", "--method", "sgld", "--gamma", "300", "--param", "fc2.bias",
              "--draws", "8", "--sgld-steps", "150", "--burn-in", "60", out=tmp_path / "sgld")
    result = json.loads((tmp_path / "sgld" / "flatness-local-entropy.json").read_text())
    assert result["n_params"] == 10
    block = slice(reference["H"].shape[0] - 10, None)
    sub = {"f": reference["f"], "g": reference["g"][block], "H": reference["H"][block, block]}
    expected = laplace_closed_form(sub, N, 300.0)
    assert result["stderrs"][0] > 0
    assert abs(result["estimates"][0] - expected) <= 4 * result["stderrs"][0], (result["estimates"], expected)


def test_local_energy_file_records_curves_errors_and_settings(run_dir, tmp_path):
    _flatness(run_dir, "--measure", "local-energy", "--sigmas", "0,0.05,0.2", "--draws", "4", "--chunk-size", "30",
              out=tmp_path)  # unequal batches (30, 30, 30, 10)
    result = json.loads((tmp_path / "flatness-local-energy.json").read_text())
    model, _ = load_checkpoint(run_dir / "checkpoint.pt")
    for split in ("train", "test"):
        data = load_dataset("digits", split)
        data.inputs, data.targets = data.inputs[:N], data.targets[:N]
        truth = evaluate(model.double(), type(data)(**{**data.__dict__, "inputs": data.inputs.double()}))
        assert result["base"][split]["loss"] == pytest.approx(truth["loss"], rel=1e-10)
        assert result["base"][split]["error"] == pytest.approx(truth["error"])
        assert result["delta"][split]["loss"][0] == 0.0 and result["delta"][split]["error"][0] == 0.0
        assert result["delta"][split]["loss"][2] > result["delta"][split]["loss"][1] > 0
        assert all(e >= 0 for e in result["stderr"][split]["loss"])
    assert result["noise"] == "multiplicative" and result["invariant_to_rescaling"] is True
    assert result["perturbed"]["num_perturbed"] == 8 * 8 * 4 + 4 + 4 * 10 + 10
    assert result["sample_rules"]["test"] == f"first {N} of the 'test' split in dataset order"
    assert result["wall_s"] > 0 and "versions" in result


def test_sharpness_pac_bayes_and_fisher_rao_entries(run_dir, reference, tmp_path):
    _flatness(run_dir, "--measure", "sharpness", "--steps", "5", out=tmp_path)
    sharp = {e["measure"]: e for e in json.loads((tmp_path / "flatness-sharpness.json").read_text())["entries"]}
    assert sharp["hessian-lambda-max"]["value"] == pytest.approx(float(torch.linalg.eigvalsh(reference["H"])[-1]),
                                                                 rel=1e-8)
    assert sharp["epsilon-sharpness-relative"]["invariant_to_rescaling"] is True
    assert sharp["epsilon-sharpness-keskar"]["invariant_to_rescaling"] is False
    assert sharp["epsilon-sharpness-keskar"]["value"] > sharp["epsilon-sharpness-relative"]["value"] > 0
    _flatness(run_dir, "--measure", "pac-bayes", "--draws", "3", "--metric", "loss", "--target", "0.05",
              out=tmp_path)
    pac = json.loads((tmp_path / "flatness-pac-bayes.json").read_text())["entries"]
    assert [e["measure"] for e in pac] == ["pac-bayes-sigma-multiplicative", "pac-bayes-sigma-additive"]
    for entry in pac:  # sigma' is where the deviation crosses the target (to the bisection's rtol)
        assert entry["extra"]["bracketed"]
        history = {h["sigma"]: h["deviation"] for h in entry["extra"]["history"]}
        assert history[entry["value"]] <= 0.05 + 1e-12
        assert any(entry["value"] < s <= entry["value"] * 1.011 and d > 0.05 for s, d in history.items())
    _flatness(run_dir, "--measure", "fisher-rao", out=tmp_path)
    fr = json.loads((tmp_path / "flatness-fisher-rao.json").read_text())["entries"]
    assert all(e["invariant_to_rescaling"] and e["value"] > 0 and math.isfinite(e["value"]) for e in fr)


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--measure", "local-energy", "--sigmas", "0,abc"], "comma-separated numbers"),
        (["--measure", "local-energy", "--sigmas", "-0.1"], ">= 0"),
        (["--measure", "local-entropy", "--gamma", "-1"], "> 0"),
        (["--measure", "local-entropy", "--method", "laplace", "--spectrum", "/no/such/folder"], "spectrum"),
        (["--measure", "local-energy", "--split", "val"], "--split is not used by --measure local-energy"),
        (["--measure", "pac-bayes", "--noise", "additive"], "computes both noise models"),
        (["--measure", "fisher-rao", "--param", "fc9"], "matches no parameter"),
        (["--measure", "local-energy", "--sigmas", "nan"], "finite numbers"),
    ],
)
def test_flatness_user_errors_are_one_sentence(run_dir, tmp_path, args, fragment):
    result = runner.invoke(app, ["flatness", str(run_dir), "--samples", str(N), "--device", DEVICE, "--quiet",
                                 "--out", str(tmp_path), *args])
    assert result.exit_code == 2, result.output
    assert fragment in result.output and "Traceback" not in result.output


def test_laplace_refuses_a_spectrum_taken_on_other_samples(run_dir, tmp_path):
    spectrum = runner.invoke(app, ["spectrum", str(run_dir), "--method", "exact", "--samples", "50", "--device", DEVICE,
                                   "--quiet", "--out", str(tmp_path / "exact50")])
    assert spectrum.exit_code == 0, spectrum.output
    result = runner.invoke(app, ["flatness", str(run_dir), "--measure", "local-entropy", "--method", "laplace",
                                 "--spectrum", str(tmp_path / "exact50"), "--samples", str(N), "--device", DEVICE,
                                 "--quiet", "--out", str(tmp_path)])
    assert result.exit_code == 2 and "same --samples" in result.output
    assert not (tmp_path / "flatness-local-entropy.json").exists()
