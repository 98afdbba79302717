"""``landscape reproduce``: the plan, the skipping of finished work, resuming, and the report at the end.

The real quick scale takes a few minutes (it is the README's main job); here the same
code runs with a population and budgets shrunk through ``settings``.
"""

import json

import pytest
from typer.testing import CliRunner

from landscape.cli.app import app
from landscape.errors import LandscapeError
from landscape.reproduce import ReproduceConfig, plan, reproduce

TINY = {
    "samples": 200,
    "seeds": (0, 1),
    "table1": {"entropy-sgd": {"epochs": 1, "model_kwargs": {"hidden": 4}},
               "sgd": {"epochs": 2, "model_kwargs": {"hidden": 4}}},
    "population": {"optimizers": {"sgd": 1, "sam": 1}, "lr_factors": (1.0,), "batch_sizes": (64,), "seeds": (0,)},
    "flatness_samples": 100,
    "measures": ("local-energy",),
}


def test_quick_plan_shares_runs_between_targets(tmp_path):
    steps = plan(ReproduceConfig(target="all", scale="quick", runs=str(tmp_path))).steps
    trains = [s for s in steps if s.name == "train"]
    # table1: 2 optimizers x 2 seeds; fig1/fig3 reuse table1's SGD runs; population: 4 x 2 x 2
    assert len(trains) == 4 + 16
    assert len({s.run_dir for s in trains}) == len(trains)
    exact = [s for s in steps if s.name == "spectrum exact"]
    assert sorted(s.run_dir.name for s in exact) == ["small-mnistfc-sgd-s0", "small-mnistfc-sgd-s1"]
    assert [s.target for s in steps].count("fig2") == 1
    # every step names a command a user could type
    assert all(s.command.startswith(("landscape ", "python -c")) for s in steps)


def test_missing_dataset_is_reported_as_skipped(tmp_path, monkeypatch):
    monkeypatch.setenv("LANDSCAPE_DATA", str(tmp_path / "nothing"))
    the_plan = plan(ReproduceConfig(target="table1", scale="full", runs=str(tmp_path), dataset="mnist",
                                    data_dir=str(tmp_path / "nothing")))
    assert the_plan.steps == [] and len(the_plan.skipped) == 1
    assert the_plan.skipped[0].startswith("mnist: ")
    with pytest.raises(LandscapeError, match="Nothing to report"):
        reproduce(ReproduceConfig(target="table1", scale="full", runs=str(tmp_path), dataset="mnist",
                                  data_dir=str(tmp_path / "nothing"), out=str(tmp_path / "r")), log=lambda m: None)


def test_reproduce_runs_skips_finished_steps_and_resumes(tmp_path):
    config = ReproduceConfig(target="correlation", scale="quick", runs=str(tmp_path / "runs"),
                             out=str(tmp_path / "report"), device="cpu")
    lines = []
    path = reproduce(config, log=lines.append, settings=TINY)
    assert path.exists() and "Flatness" in path.read_text(encoding="utf-8")
    assert any("2 steps" not in line and "4 to run" in line for line in lines)
    manifest = json.loads((tmp_path / "runs" / "reproduce.json").read_text())
    assert len(manifest["timings"]) == 4  # two trainings, two local-energy measurements
    # a second call does nothing but the report
    lines.clear()
    reproduce(config, log=lines.append, settings=TINY)
    assert any("4 already done, 0 to run" in line for line in lines)
    # a lost result is recomputed, and only it
    (tmp_path / "runs" / "population" / "sam-lr0.1-b64-s0" / "flatness-local-energy.json").unlink()
    lines.clear()
    reproduce(config, log=lines.append, settings=TINY)
    assert any("3 already done, 1 to run" in line for line in lines)
    # a run cut short after its first epoch continues instead of starting over
    run = tmp_path / "runs" / "population" / "sgd-lr0.1-b64-s0"
    config2 = ReproduceConfig(target="correlation", scale="quick", runs=str(tmp_path / "runs"),
                              out=str(tmp_path / "report"), device="cpu")
    longer = {**TINY, "population": {**TINY["population"], "optimizers": {"sgd": 2, "sam": 1}}}
    rows_before = (run / "metrics.jsonl").read_text().splitlines()
    lines.clear()
    reproduce(config2, log=lines.append, settings=longer)
    # the longer run, then the measurement of its new checkpoint; nothing else
    assert any("3 already done, 1 to run" in line for line in lines)
    assert [line.split("] ")[1] for line in lines if line.startswith("[")] == [
        "correlation: train (%s)" % run, "correlation: flatness local-energy (%s)" % run]
    rows_after = (run / "metrics.jsonl").read_text().splitlines()
    assert rows_after[: len(rows_before)] == rows_before and json.loads(rows_after[-1])["epoch"] == 2


def test_full_plan_uses_the_papers_table1_settings_and_names_missing_data(tmp_path):
    the_plan = plan(ReproduceConfig(target="all", scale="full", runs=str(tmp_path), dataset="digits",
                                    data_dir=str(tmp_path / "none")))
    commands = [s.command for s in the_plan.steps]
    # on digits every model is small-mnistfc; the Sec. 5.2 hyper-parameters travel as the CLI spells them
    esgd = next(c for c in commands if "--optimizer entropy-sgd --seed 0 --epochs 5" in c)
    assert "--langevin-steps 20 --lr 1.0 --lr-milestones 2 --lr-decay 0.1 --sgld-lr 0.1 --noise 0.001 --gamma 0.0001" in esgd
    assert "--sgld-momentum 0.9" in esgd  # Sec. 5.2: Nesterov's momentum in both loops
    adam = next(c for c in commands if "--optimizer adam" in c)
    assert "--lr-milestones 30,60,90 --lr-decay 0.2" in adam
    assert sum(c.startswith("landscape train") and "population" in c for c in commands) == 32  # >= 24 models
    assert any(s.startswith("fig3b (char-lstm): no text file given") for s in the_plan.skipped)
    assert any(s.startswith("fig3c (All-CNN-BN Fisher): Dataset cifar10 needs") for s in the_plan.skipped)


def test_reproduce_cli_dry_run_lists_steps(tmp_path):
    result = CliRunner().invoke(app, ["reproduce", "fig1", "--dry-run", "--runs", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "[todo] fig1: landscape train --model small-mnistfc --dataset digits --optimizer sgd" in result.output
    assert "[todo] fig1: landscape spectrum" in result.output and "--method exact" in result.output
    result = CliRunner().invoke(app, ["reproduce", "fig9"])
    assert result.exit_code == 2


def test_a_run_folder_holding_another_configuration_is_not_reused(tmp_path):
    config = ReproduceConfig(target="table1", scale="quick", runs=str(tmp_path / "runs"), out=str(tmp_path / "r"),
                             device="cpu")
    small = {**TINY, "seeds": (0,), "table1": {"sgd": {"epochs": 1, "model_kwargs": {"hidden": 4}}}}
    reproduce(config, log=lambda m: None, settings=small)
    other = {**small, "table1": {"sgd": {"epochs": 1, "model_kwargs": {"hidden": 4}, "lr": 0.5}}}
    with pytest.raises(LandscapeError, match=r"holds a different run \(lr = None, this plan wants 0.5\)"):
        reproduce(config, log=lambda m: None, settings=other)
    # a run written before a setting existed holds that setting's default: still the same run
    saved = tmp_path / "runs" / "small-mnistfc-sgd-s0" / "config.json"
    older = json.loads(saved.read_text())
    del older["sgld_momentum"]
    saved.write_text(json.dumps(older))
    lines = []
    reproduce(config, log=lines.append, settings=small)
    assert lines[0].startswith("1 steps, 1 already done, 0 to run"), lines  # nothing retrained
    newer = {**small, "table1": {"sgd": {"epochs": 1, "model_kwargs": {"hidden": 4}, "sgld_momentum": 0.5}}}
    with pytest.raises(LandscapeError, match=r"\(sgld_momentum = 0.0, this plan wants 0.5\)"):
        reproduce(config, log=lambda m: None, settings=newer)


def test_a_diverging_member_is_recorded_and_the_rest_goes_on(tmp_path):
    settings = {**TINY, "population": {"optimizers": {"sgd": 1}, "lr_factors": (1.0, 1e7), "batch_sizes": (64,),
                                       "seeds": (0,)}}
    lines = []
    path = reproduce(ReproduceConfig(target="correlation", scale="quick", runs=str(tmp_path / "runs"),
                                     out=str(tmp_path / "r"), device="cpu"), log=lines.append, settings=settings)
    html = path.read_text(encoding="utf-8")
    assert any(line.startswith("    failed: ") for line in lines)
    assert "sgd-lr1e+06-b64-s0" in html and "failed" in html  # named among the skipped steps
    assert "not run, the training of" in html  # its measurement was not attempted
    assert "sgd-lr0.1-b64-s0</td>" in html  # the healthy member is in the report


def test_full_fig3b_learns_the_256_lines_it_is_measured_on(tmp_path):
    """Sec. 5.1: the char-LSTM is trained to re-generate 256 lines of 32 characters, and its Hessian
    is taken over those lines: the train step keeps the first 256 windows, the spectrum takes 256."""
    text = tmp_path / "text.txt"
    text.write_text("the quick brown fox jumps over the lazy dog. " * 400, encoding="utf-8")
    the_plan = plan(ReproduceConfig(target="fig3", scale="full", runs=str(tmp_path / "runs"), text=str(text),
                                    data_dir=str(tmp_path / "none")))
    commands = [s.command for s in the_plan.steps if "char-lstm" in s.command]
    train = [c for c in commands if c.startswith("landscape train")]
    spectra = [c for c in commands if c.startswith("landscape spectrum")]
    assert len(train) == 2 and all("--seq-len 32 --train-subset 256 --batch-size 32 --vocab ascii96" in c for c in train)
    assert len(spectra) == 2 and all("--method exact --samples 256" in c for c in spectra)


@pytest.fixture
def no_fashion_mnist(monkeypatch, tmp_path):
    """A machine without Debian's dataset-fashion-mnist: no system folder, an empty cache, no $LANDSCAPE_DATA."""
    import landscape.data.files as files

    monkeypatch.setattr(files, "SYSTEM_DIRS", {})
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("LANDSCAPE_DATA", raising=False)


def test_full_plan_without_fashion_mnist_keeps_the_steps_whose_data_exist(no_fashion_mnist, tmp_path):
    """Fig. 3b needs only its text file: a missing image dataset skips the image steps, not the char-LSTM."""
    text = tmp_path / "text.txt"
    text.write_text("the quick brown fox jumps over the lazy dog. " * 400, encoding="utf-8")
    the_plan = plan(ReproduceConfig(target="fig3", scale="full", runs=str(tmp_path / "runs"), text=str(text),
                                    data_dir=str(tmp_path / "none")))
    assert the_plan.steps and all("char-lstm" in s.command for s in the_plan.steps)
    assert [s.name for s in the_plan.steps] == ["train", "spectrum exact"] * 2
    assert any(reason.startswith("fashion-mnist:") for reason in the_plan.skipped)
    assert any(reason.startswith("fig3c") for reason in the_plan.skipped)
    # and an image-only target plans nothing but says why
    table1 = plan(ReproduceConfig(target="table1", scale="full", runs=str(tmp_path / "runs"),
                                  data_dir=str(tmp_path / "none")))
    assert table1.steps == [] and any(r.startswith("fashion-mnist:") for r in table1.skipped)


def test_slices_target_draws_both_minima_and_the_path_with_its_barrier(tmp_path):
    """reproduce slices: 1-D / 2-D random and Hessian slices of the Entropy-SGD and SGD minima, the path
    between them, and a page whose barrier numbers are those of slice.json."""
    from landscape.report.fmt import num

    lines = []
    path = reproduce(ReproduceConfig(target="slices", scale="quick", runs=str(tmp_path / "runs"),
                                     out=str(tmp_path / "r"), device="cpu"), log=lines.append, settings=TINY)
    runs = tmp_path / "runs"
    esgd, sgd = runs / "small-mnistfc-entropy-sgd-s0", runs / "small-mnistfc-sgd-s0"
    for run in (esgd, sgd):
        assert sorted(p.name for p in run.glob("slice-*")) >= ["slice-hessian-2d", "slice-random-1d",
                                                                 "slice-random-2d"]
    info = json.loads((esgd / "slice-to-small-mnistfc-sgd-s0" / "slice.json").read_text())
    html = path.read_text(encoding="utf-8")
    assert html.count('alt="slice ') == 7
    row = html[html.index("Barrier: the highest") - 2000:html.index("Barrier: the highest")]
    assert f"<td>{num(info['barrier']['train_loss'], 3)}</td>" in row
    assert info["barrier"]["train_loss"] >= 0
