"""The `landscape` command via typer's CliRunner: every optimizer trains on digits; errors are one sentence."""

import json

import pytest
from typer.testing import CliRunner

from landscape.cli import app
from landscape.models import model_names
from landscape.optim import OPTIMIZER_NAMES

runner = CliRunner()


def test_help_lists_the_stages():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    assert "train" in result.output


def test_cli_choices_match_the_registries():
    from landscape.cli.app import ModelName, OptimizerName

    assert sorted(m.value for m in ModelName) == sorted(model_names())
    assert sorted(o.value for o in OptimizerName) == sorted(OPTIMIZER_NAMES)


@pytest.mark.parametrize("optimizer", list(OPTIMIZER_NAMES))
def test_one_epoch_on_digits_for_each_optimizer(tmp_path, optimizer):
    out = tmp_path / optimizer
    args = ["train", "--model", "small-mnistfc", "--dataset", "digits", "--optimizer", optimizer,
            "--epochs", "1", "--batch-size", "128", "--out", str(out), "--device", "cpu", "--quiet"]
    if optimizer.startswith("entropy"):
        args += ["--langevin-steps", "2"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    config = json.loads((out / "config.json").read_text())
    assert config["optimizer"] == optimizer and config["parameters"] == 8 * 8 * 64 + 64 + 64 * 10 + 10
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [0, 1]
    required = {"epoch", "effective_epochs", "gradient_evals", "train_loss", "train_error", "val_loss", "val_error",
                "test_error", "wall_s"}
    assert required <= set(rows[-1])
    # one epoch of training improves on the random initialisation
    assert rows[1]["train_loss"] < rows[0]["train_loss"]
    assert (out / "checkpoint.pt").exists()


def test_user_errors_are_one_line_with_exit_code_2(tmp_path):
    result = runner.invoke(app, ["train", "--dataset", "no-such-set", "--out", str(tmp_path / "x"), "--quiet"])
    assert result.exit_code == 2
    assert "Traceback" not in result.output
    result = runner.invoke(app, ["train", "--model", "small-lenet", "--dataset", "digits", "--out", str(tmp_path / "y"), "--quiet"])
    assert result.exit_code == 2 and "28" in result.output and "Traceback" not in result.output


def test_resume_extends_a_run_and_refuses_changed_settings(tmp_path):
    out = tmp_path / "run"
    base = ["train", "--optimizer", "sgd", "--out", str(out), "--device", "cpu", "--quiet", "--batch-size", "256"]
    assert runner.invoke(app, base + ["--epochs", "1"]).exit_code == 0
    result = runner.invoke(app, ["train", "--resume", "--out", str(out), "--epochs", "2", "--quiet"])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [0, 1, 2]
    result = runner.invoke(app, ["train", "--resume", "--out", str(out), "--lr", "0.5", "--quiet"])
    assert result.exit_code == 2 and "--lr" in result.output


def test_help_shows_the_bracketed_defaults():
    """Rich markup used to swallow "[default: ...]" in option help: the defaults must reach the user."""
    from typer.testing import CliRunner

    from landscape.cli.app import app

    result = CliRunner().invoke(app, ["reproduce", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    text = " ".join(result.output.split())  # the help is wrapped to the terminal
    assert "[default: reports/SCALE]" in text and "[default: runs/<name of --out>]" in text
    result = CliRunner().invoke(app, ["train", "--help"], env={"COLUMNS": "200"})
    assert "[default: sgd 0.1, adam 1e-3" in " ".join(result.output.split())
