"""Nothing a user does loses data or ends in a traceback (issue 24).

* resource guards: the exact spectrum's disk and memory arithmetic, and the refusal before
  ``hessian.bin`` exists;
* one-unit results: the npz/JSON pair's hash, stale temporary files, the checkpoint written
  before its metrics row, reproduce's done test;
* safe archives: names from resolved paths, nothing written outside OUT;
* property-based bad inputs (hypothesis): corrupted files given to every subcommand end in
  exit status 2 and one sentence, with no traceback and no file changed outside the
  example's own output folder.

* kills: SIGKILL at random points of training, an exact build, the spectrum / flatness
  writers, the report and reproduce; training, the build and reproduce resume to the
  uninterrupted result, a page is old or new (never half), and no inconsistent pair is
  ever accepted.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from digits_reference import train_tiny_digits_run

from landscape import io as lio
from landscape import resources
from landscape.checkpoint import read_checkpoint, save_checkpoint
from landscape.cli.app import app
from landscape.errors import LandscapeError
from landscape.models import build_model
from landscape.report.collect import read_run

runner = CliRunner()
# bounded: a fixed number of examples, the same ones on CI (the env var is read here, never in library code)
PROPERTY = settings(max_examples=12, deadline=None, derandomize=os.environ.get("CI") == "true",
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
TRIED = {"inputs": 0, "kills": 0, "split_pairs_refused": 0}  # how many generated bad inputs were driven through the CLI (printed at the end)


# ------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    """A 2-epoch tiny digits run with a Lanczos spectrum and a Fisher-Rao result (never modified)."""
    run = train_tiny_digits_run(tmp_path_factory.mktemp("robust") / "run", epochs=2)
    for args in (["spectrum", str(run), "--method", "lanczos", "--k", "2", "--samples", "30", "--device", "cpu"],
                 ["flatness", str(run), "--measure", "fisher-rao", "--samples", "30", "--device", "cpu"]):
        result = runner.invoke(app, [*args, "--quiet"])
        assert result.exit_code == 0, result.output
    return run


def _digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _fresh_copy(template: Path, scratch: Path) -> Path:
    if scratch.exists():
        shutil.rmtree(scratch)
    shutil.copytree(template, scratch / "run")
    return scratch / "run"


def _refused(args: list[str], *, protected: Path, needle: str | None = None) -> str:
    """Run the CLI; it must exit 2 with one error sentence, no traceback, and leave ``protected`` as it was."""
    before = _digest(protected)
    result = runner.invoke(app, args)
    TRIED["inputs"] += 1
    assert result.exit_code == 2, (args, result.output, result.exception)
    assert isinstance(result.exception, SystemExit) and "Traceback" not in result.output, result.output
    assert result.output.count("error:") == 1, result.output
    if needle is not None:
        assert needle in " ".join(result.output.split()), result.output
    assert _digest(protected) == before, "a file outside the example's output folder changed"
    return result.output


# ------------------------------------------------------------------ resource guards


def test_exact_needs_is_the_matrix_arithmetic():
    n = 1_130_506  # mnistfc: the 10.2 TB hessian.bin of issue 24
    needs = resources.exact_needs(n)
    assert needs.matrix_bytes == n * n * 8 == 10_224_350_528_288
    assert needs.disk_bytes == needs.matrix_bytes and needs.memory_bytes == n * n * 8
    half = resources.exact_needs(n, storage_itemsize=4, allocated_bytes=10**12, solve=False, build_workspace=123)
    assert half.matrix_bytes == n * n * 4 and half.disk_bytes == n * n * 4 - 10**12 and half.memory_bytes == 123
    assert resources.exact_needs(1000, solve_on_gpu=True, build_workspace=5).memory_bytes == 5
    assert resources.format_bytes(10_224_350_528_288) == "10.2 TB" and resources.format_bytes(999) == "999 B"


def test_check_exact_refuses_with_the_numbers_and_the_alternatives():
    needs = resources.exact_needs(1_130_506)
    with pytest.raises(LandscapeError) as err:
        resources.check_exact(needs, free_disk_bytes=62 * 10**9, memory_bytes=None, where=Path("out"))
    text = str(err.value)
    for part in ("1,130,506 parameters", "10.2 TB", "62.0 GB", "--method lanczos", "--method slq", "--params"):
        assert part in text
    with pytest.raises(LandscapeError, match="28.8 GB of memory.*only 24.0 GB"):
        resources.check_exact(resources.exact_needs(60_000), free_disk_bytes=10**12, memory_bytes=24 * 10**9,
                              where=Path("out"))
    # enough of both, or a machine that reports neither: no objection
    resources.check_exact(resources.exact_needs(60_000), free_disk_bytes=31 * 10**9, memory_bytes=31 * 10**9,
                          where=Path("out"))
    resources.check_exact(needs, free_disk_bytes=None, memory_bytes=None, where=Path("out"))


def test_exact_spectrum_refuses_before_hessian_bin_exists(template, tmp_path, monkeypatch):
    monkeypatch.setattr(resources, "free_disk", lambda path: 1000)
    out = tmp_path / "exact"
    text = _refused(["spectrum", str(template), "--method", "exact", "--samples", "30", "--out", str(out)],
                    protected=template, needle="is free there")
    assert "768.8 kB matrix file" in " ".join(text.split())  # 310 parameters: 310^2 x 8 bytes
    assert not (out / "hessian.bin").exists() and not (out / "hessian.json").exists()


def test_a_solve_after_build_only_records_the_builds_products(template, tmp_path):
    out = tmp_path / "two-step"
    base = ["spectrum", str(template), "--method", "exact", "--samples", "30", "--out", str(out), "--quiet"]
    assert runner.invoke(app, [*base, "--build-only"]).exit_code == 0
    built = json.loads((out / "hessian.json").read_text())["hvp_count"]
    assert runner.invoke(app, base).exit_code == 0
    info = json.loads((out / "spectrum.json").read_text())
    assert built > 0 and info["hvp_count"] == info["build_hvp_count"] == built


# ------------------------------------------------------------------ one-unit results


def test_a_pair_split_by_a_kill_is_never_accepted(template, tmp_path):
    run = _fresh_copy(template, tmp_path / "split")
    folder = run / "spectrum-lanczos"
    info = json.loads((folder / "spectrum.json").read_text())
    assert info[lio.ARRAYS_HASH_KEY] == hashlib.sha256((folder / "spectrum.npz").read_bytes()).hexdigest()
    # a kill after the new arrays, before the new JSON: the old JSON vouches for other bytes
    lio.write_npz(folder / "spectrum.npz", ritz_values=np.arange(5.0), residuals=np.zeros(5))
    with pytest.raises(lio.MismatchedPairError, match="does not belong to"):
        lio.read_verified_npz(folder / "spectrum.npz", info, folder / "spectrum.json")
    notes: list[str] = []
    assert "lanczos" not in read_run(run, notes).spectra
    assert any("spectrum.npz does not belong to" in n for n in notes)
    # the Laplace local entropy refuses such a pair too
    from landscape.flatness.stage import _read_exact_spectrum

    info.update(method="exact", operator="hessian")
    lio.write_json(folder / "spectrum.json", info)
    lio.write_npz(folder / "spectrum.npz", eigenvalues=np.arange(310.0))
    with pytest.raises(LandscapeError, match="does not belong to"):
        _read_exact_spectrum(str(folder), 310, info["samples"], info["split"], info["sample_rule"])


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_stale_temporaries_of_killed_writers_are_removed_on_the_next_write(tmp_path):
    host = lio.HOST_TAG
    dead = tmp_path / f".spectrum.json.{_dead_pid()}@{host}-abc.tmp"
    live = tmp_path / f".spectrum.npz.{os.getppid()}@{host}-def.tmp"  # a live process (our parent) may still write it
    mine = tmp_path / f".metrics.jsonl.{os.getpid()}@{host}-ghi.tmp"
    aged = tmp_path / f".config.json.{os.getppid()}@{host}-jkl.tmp"
    away = tmp_path / f".fig2.json.{_dead_pid()}@{'0' * 8 if host != '0' * 8 else '1' * 8}-mno.tmp"  # another host's
    other = tmp_path / ".notes.tmp"  # not our naming: never touched
    for path in (dead, live, mine, aged, away, other):
        path.write_text("half")
    old = time.time() - lio.STALE_TMP_S - 60
    os.utime(aged, (old, old))
    lio.write_json(tmp_path / "spectrum.json", {"a": 1})
    assert not dead.exists() and not aged.exists()
    assert live.exists() and mine.exists() and away.exists() and other.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([live.name, mine.name, away.name, other.name,
                                                                 "spectrum.json"])


def test_a_checkpoint_is_written_before_its_metrics_row_and_a_resume_restores_the_row(tmp_path, monkeypatch):
    """A kill between the checkpoint of epoch 2 and its metrics row: reproduce does not count the run
    done, --resume writes the row the checkpoint carries, and the result equals an uninterrupted run."""
    import landscape.train as train_module
    from landscape.reproduce import Plan, _train_step

    reference = train_tiny_digits_run(tmp_path / "reference", epochs=2)
    real = train_module._write_metrics

    def killed_after_checkpoint(path, rows):
        if rows[-1]["epoch"] == 2:
            assert read_checkpoint(path.parent / "checkpoint.pt")["epoch"] == 2  # the checkpoint came first
            raise KeyboardInterrupt  # stands in for SIGKILL: nothing after this point runs
        real(path, rows)

    monkeypatch.setattr(train_module, "_write_metrics", killed_after_checkpoint)
    with pytest.raises(KeyboardInterrupt):
        train_tiny_digits_run(tmp_path / "killed", epochs=2)
    monkeypatch.setattr(train_module, "_write_metrics", real)
    killed = tmp_path / "killed"
    assert [json.loads(r)["epoch"] for r in (killed / "metrics.jsonl").read_text().splitlines()] == [0, 1]
    plan = Plan()
    _train_step(plan, "t", killed, {"model": "small-mnistfc", "dataset": "digits", "optimizer": "adam", "epochs": 2,
                                    "batch_size": 64, "model_kwargs": {"hidden": 4}}, "cpu", None)
    assert not plan.steps[0].done()  # the checkpoint says 2, the metrics 1: resume, do not measure
    plan.steps[0].run()
    assert plan.steps[0].done()
    assert _rows(killed) == _rows(reference)
    assert _same_weights(killed, reference)


def _rows(run: Path) -> list[dict]:
    return [{k: v for k, v in json.loads(line).items() if k != "wall_s"}
            for line in (run / "metrics.jsonl").read_text().splitlines()]


def _same_weights(a: Path, b: Path) -> bool:
    sa, sb = read_checkpoint(a / "checkpoint.pt")["state_dict"], read_checkpoint(b / "checkpoint.pt")["state_dict"]
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_a_run_stopped_at_epoch_0_says_how_to_continue(template, tmp_path):
    run = _fresh_copy(template, tmp_path / "zero")
    (run / "checkpoint.pt").unlink()  # what an older version left when killed between its two writes
    text = _refused(["train", "--out", str(run), "--model", "small-mnistfc", "--dataset", "digits", "--quiet"],
                    protected=template, needle="with --overwrite")
    assert "no checkpoint.pt" in text
    _refused(["train", "--resume", "--out", str(run), "--quiet"], protected=template,
             needle="with --overwrite instead of --resume")


# ------------------------------------------------------------------ archives and output folders


def test_archive_of_dotdot_stays_inside_out_and_overwrites_nothing(template, tmp_path, monkeypatch):
    run_a = tmp_path / "runA"  # the reproducer: cd runA/sub && landscape report .. --out ../../runB --archive
    shutil.copytree(template, run_a)
    (run_a / "sub").mkdir()
    run_b = tmp_path / "runB"
    shutil.copytree(template, run_b)
    before = _digest(run_b)
    monkeypatch.chdir(run_a / "sub")
    result = runner.invoke(app, ["report", "..", "--out", "../../runB", "--archive", "-q"])
    assert result.exit_code == 0, result.output
    after = _digest(run_b)
    assert {k: v for k, v in after.items() if not k.startswith(("runs/", "index.html"))} == before
    assert sorted(p.name for p in (run_b / "runs").iterdir()) == ["runA"]  # the resolved name of ".."
    assert (run_b / "runs" / "runA" / "config.json").read_bytes() == (run_a / "config.json").read_bytes()
    # two runs with one name get distinct folders; an OUT/runs that is not an archive is never replaced
    twin = tmp_path / "other" / "run"
    shutil.copytree(template, twin)
    assert runner.invoke(app, ["report", str(run_a), str(twin), "--out", str(tmp_path / "pub"), "--archive",
                               "-q"]).exit_code == 0
    assert sorted(p.name for p in (tmp_path / "pub" / "runs").iterdir()) == ["run", "runA"]
    twin2 = tmp_path / "third" / "run"
    shutil.copytree(template, twin2)
    assert runner.invoke(app, ["report", str(twin), str(twin2), "--out", str(tmp_path / "pub2"), "--archive",
                               "-q"]).exit_code == 0
    assert sorted(p.name for p in (tmp_path / "pub2" / "runs").iterdir()) == ["run", "run-2"]
    study = tmp_path / "study"  # OUT/runs is the user's own runs folder, with a checkpoint in it
    shutil.copytree(template, study / "runs" / "mine")
    _refused(["report", str(run_a), "--out", str(study), "--archive", "-q"], protected=study,
             needle="not a report archive")
    (tmp_path / "file-out").mkdir()
    (tmp_path / "file-out" / "runs").write_text("mine")
    _refused(["report", str(run_a), "--out", str(tmp_path / "file-out"), "--archive", "-q"],
             protected=tmp_path / "file-out", needle="is not a report archive folder")


@pytest.mark.parametrize("command", ["spectrum", "flatness", "report"])
@pytest.mark.parametrize("where", ["/proc/landscape-out", "a-file"])
def test_an_unwritable_output_location_is_one_sentence_before_any_work(template, tmp_path, command, where):
    (tmp_path / "a-file").write_text("keep me")
    out = where if where.startswith("/") else str(tmp_path / where)
    args = {"spectrum": ["spectrum", str(template), "--method", "trace", "--samples", "20"],
            "flatness": ["flatness", str(template), "--measure", "fisher-rao", "--samples", "20"],
            "report": ["report", str(template)]}[command]
    _refused([*args, "--out", out, "--quiet"], protected=tmp_path if where == "a-file" else template,
             needle="an existing file, not a folder" if where == "a-file" else "Cannot write to the output folder")
    assert (tmp_path / "a-file").read_text() == "keep me"


def test_a_directory_given_as_text_says_it_is_a_directory(tmp_path):
    _refused(["train", "--model", "char-lstm", "--dataset", f"text:{tmp_path}", "--out", str(tmp_path / "r"),
              "--epochs", "1", "--quiet"], protected=tmp_path, needle="is a directory")


# ------------------------------------------------------------------ property-based bad inputs

_LINE = st.one_of(
    st.binary(min_size=1, max_size=40).map(lambda b: b.replace(b"\n", b" ").decode("latin-1")),  # garbage
    st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=5),
                 lambda inner: st.lists(inner, max_size=3), max_leaves=4).map(json.dumps),  # JSON, not an object
    st.dictionaries(st.text(max_size=5).filter(lambda k: k != "epoch"), st.integers(), max_size=3).map(json.dumps),
    st.sampled_from(['{"epoch": "1"}', '{"epoch": 1.5}', '{"epoch": null}', '{"epoch": true}']).map(str),
)


@PROPERTY
@given(bad=_LINE, at=st.integers(0, 2))
def test_resume_with_a_damaged_metrics_file_is_one_sentence(template, tmp_path, bad, at):
    run = _fresh_copy(template, tmp_path / "metrics")
    lines = (run / "metrics.jsonl").read_text().splitlines()
    lines.insert(at, bad)
    (run / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    _refused(["train", "--resume", "--out", str(run), "--epochs", "3", "--quiet"], protected=template,
             needle="metrics.jsonl line")


@PROPERTY
@given(cut=st.integers(1, 60))
def test_resume_with_a_truncated_metrics_file_is_one_sentence(template, tmp_path, cut):
    run = _fresh_copy(template, tmp_path / "truncated")
    text = (run / "metrics.jsonl").read_text().rstrip("\n")
    (run / "metrics.jsonl").write_text(text[: len(text) - cut])  # cut inside the last row
    _refused(["train", "--resume", "--out", str(run), "--epochs", "3", "--quiet"], protected=template,
             needle="metrics.jsonl line")


_WRONG = {"int": st.text(max_size=4) | st.lists(st.integers(), max_size=2) | st.booleans() | st.floats(0.5, 9.5),
          "float": st.text(max_size=4) | st.lists(st.integers(), max_size=2) | st.booleans(),
          "str": st.integers() | st.lists(st.text(max_size=2), min_size=1, max_size=2) | st.booleans()}
_FIELDS = {"batch_size": "int", "epochs": "int", "seed": "int", "momentum": "float", "weight_decay": "float",
           "lr_decay": "float", "model": "str", "optimizer": "str", "dataset": "str"}


@PROPERTY
@given(data=st.data())
def test_resume_with_a_mistyped_config_is_one_sentence(template, tmp_path, data):
    field = data.draw(st.sampled_from(sorted(_FIELDS)))
    value = data.draw(_WRONG[_FIELDS[field]])
    run = _fresh_copy(template, tmp_path / "config")
    config = json.loads((run / "config.json").read_text())
    config[field] = value
    (run / "config.json").write_text(json.dumps(config))
    args = ["train", "--resume", "--out", str(run), "--quiet"] + ([] if field == "epochs" else ["--epochs", "3"])
    _refused(args, protected=template, needle=f"config.json has {field} =")


def _nan_weights(path: Path) -> None:
    payload = read_checkpoint(path)
    payload.pop("path")
    first = next(iter(payload["state_dict"]))
    payload["state_dict"][first] = payload["state_dict"][first].clone().fill_(float("nan"))
    torch.save(payload, path)


def _other_model(path: Path) -> None:
    model = build_model("small-mnistfc", (1, 8, 8), 10, hidden=6)
    save_checkpoint(path, model, dataset=read_checkpoint(path)["dataset"], optimizer=torch.optim.Adam(
        model.parameters()), optimizer_name="adam", trainer={"counters": {"epoch": 1}})


_CORRUPT = {
    "truncated": lambda path, r: path.write_bytes(path.read_bytes()[: r.randrange(1, path.stat().st_size)]),
    "random bytes": lambda path, r: path.write_bytes(bytes(r.getrandbits(8) for _ in range(r.randrange(1, 400)))),
    "wrong magic": lambda path, r: path.write_bytes(b"\x00\x01" + path.read_bytes()[2:]),
    "NaN weights": lambda path, r: _nan_weights(path),
    "another model": lambda path, r: _other_model(path),
}
_READERS = {
    "spectrum": lambda run, out: ["spectrum", str(run), "--method", "trace", "--samples", "20", "--out", out],
    "flatness": lambda run, out: ["flatness", str(run), "--measure", "fisher-rao", "--samples", "20", "--out",
                                  out],
    "train --resume": lambda run, out: ["train", "--resume", "--out", str(run), "--epochs", "3"],
}


@PROPERTY
@given(kind=st.sampled_from(sorted(_CORRUPT)), reader=st.sampled_from(sorted(_READERS)), r=st.randoms())
def test_a_corrupted_checkpoint_is_one_sentence_for_every_reader(template, tmp_path, kind, reader, r):
    run = _fresh_copy(template, tmp_path / "checkpoint")
    _CORRUPT[kind](run / "checkpoint.pt", r)
    if kind == "another model" and reader != "train --resume":
        return  # a valid checkpoint of another network: the measuring stages rightly accept it
    needle = "non-finite weights" if kind == "NaN weights" else "checkpoint.pt"
    _refused([*_READERS[reader](run, str(tmp_path / "out")), "--quiet"], protected=template, needle=needle)


@settings(PROPERTY, max_examples=6)  # each example renders a page (~1 s)
@given(kind=st.sampled_from(["truncated", "random bytes", "wrong magic"]), legacy=st.booleans(), r=st.randoms())
def test_report_on_a_damaged_spectrum_npz_names_the_file(template, tmp_path, kind, legacy, r):
    """With its hash the JSON disowns the damaged arrays (left out with a note); a JSON from before the
    hash existed lets the npz be opened, and the unreadable file is one sentence."""
    run = _fresh_copy(template, tmp_path / "npz")
    folder = run / "spectrum-lanczos"
    _CORRUPT[kind](folder / "spectrum.npz", r)
    if legacy:
        info = json.loads((folder / "spectrum.json").read_text())
        info.pop(lio.ARRAYS_HASH_KEY)
        (folder / "spectrum.json").write_text(json.dumps(info))
        _refused(["report", str(run), "--out", str(tmp_path / "page"), "-q"], protected=template,
                 needle="spectrum.npz is not a readable .npz file")
        return
    result = runner.invoke(app, ["report", str(run), "--out", str(tmp_path / "page"), "-q"])
    TRIED["inputs"] += 1
    assert result.exit_code == 0 and "Traceback" not in result.output, result.output
    page = (tmp_path / "page" / "index.html").read_text(encoding="utf-8")
    assert "spectrum.npz does not belong to" in page


@PROPERTY
@given(entries=st.one_of(st.none(), st.integers(), st.text(max_size=5), st.dictionaries(st.text(max_size=3),
                         st.integers(), max_size=2), st.lists(st.integers() | st.text(max_size=3), min_size=1,
                                                              max_size=3)))
def test_report_on_a_flatness_json_with_bad_entries_is_one_sentence(template, tmp_path, entries):
    run = _fresh_copy(template, tmp_path / "flat")
    path = run / "flatness-fisher-rao.json"
    info = json.loads(path.read_text())
    info["entries"] = entries
    path.write_text(json.dumps(info))
    _refused(["report", str(run), "--out", str(tmp_path / "page"), "-q"], protected=template,
             needle="'entries' must be a list")


# ------------------------------------------------------------------ kills

_CHILD = """
import itertools, sys
from pathlib import Path
import torch
torch.set_num_threads(1)
mode, out, run = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
from landscape.flatness.stage import FlatnessConfig, compute_flatness
from landscape.spectrum import SpectrumConfig, compute_spectrum
from landscape.train import TrainConfig, train
print("ready", flush=True)
if mode == "train":
    torch.manual_seed(0)
    train(TrainConfig(model="small-mnistfc", dataset="digits", optimizer="adam", epochs=3, batch_size=64, out=str(out),
                      device="cpu", model_kwargs={"hidden": 4}), resume=(out / "checkpoint.pt").exists(), progress=False)
if mode == "exact":  # a resumable dense build with many small blocks, then the solve
    compute_spectrum(SpectrumConfig(checkpoint=run, method="exact", samples=60, out=str(out), device="cpu",
                                    block_size=1, dense_method="hvp"), progress=False)
    sys.exit()
if mode == "report":
    from landscape.report import build_report
    for _ in range(50):
        build_report([run], out)
    sys.exit()
if mode == "reproduce":
    from landscape.reproduce import ReproduceConfig, reproduce
    tiny = {"seeds": (0, 1), "table1": {"sgd": {"epochs": 3, "model_kwargs": {"hidden": 4}}},
            "table1_models": ("small-mnistfc",)}
    reproduce(ReproduceConfig(target="table1", scale="quick", runs=str(out / "runs"), out=str(out / "report"),
                              device="cpu"), log=lambda message: None, settings=tiny)
    sys.exit()
for i in itertools.count() if mode != "train" else ():
    if mode == "spectrum":  # pairs that differ from one write to the next: k Ritz values
        compute_spectrum(SpectrumConfig(checkpoint=run, method="lanczos", k=2 + i % 3, samples=30, out=str(out),
                                        device="cpu"), progress=False, force=True)
    else:
        compute_flatness(FlatnessConfig(checkpoint=run, measure="fisher-rao", data_samples=20 + i % 5, out=str(out),
                                        device="cpu"), force=True)
"""
KILL_SEED = 0 if os.environ.get("CI") == "true" else int.from_bytes(os.urandom(4), "little")


def _run_child(script: Path, mode: str, out: Path, run: Path, kill_after: float | None) -> bool:
    """Start the child; SIGKILL it ``kill_after`` seconds after its imports. True when it was killed."""
    child = subprocess.Popen([sys.executable, str(script), mode, str(out), str(run)], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "ready"
    try:
        child.wait(timeout=kill_after)
    except subprocess.TimeoutExpired:
        child.kill()
        child.wait()
        TRIED["kills"] += 1
        return True
    assert child.returncode == 0, child.stderr.read()
    return False


def test_training_killed_at_random_points_resumes_to_the_uninterrupted_run(tmp_path):
    import random

    rng = random.Random(KILL_SEED)
    script = tmp_path / "child.py"
    script.write_text(_CHILD)
    reference = train_tiny_digits_run(tmp_path / "reference", epochs=3)
    killed = tmp_path / "killed"
    kills = 0
    while kills < 2:
        kills += _run_child(script, "train", killed, killed, rng.uniform(0.0, 3.0))
        if (killed / "metrics.jsonl").exists() and _rows(killed)[-1]["epoch"] == 3:
            break  # it finished before the kill came
    _run_child(script, "train", killed, killed, None)  # resume to the end (or nothing left to do)
    assert _rows(killed) == _rows(reference), f"kill seed {KILL_SEED}"
    assert _same_weights(killed, reference), f"kill seed {KILL_SEED}"
    assert not list(killed.glob(".*.tmp"))  # the resumed run's writes removed what the killed ones left


@pytest.mark.parametrize("mode", ["spectrum", "flatness"])
def test_writers_killed_at_random_points_never_leave_an_accepted_inconsistent_result(template, tmp_path, mode):
    import random

    rng = random.Random(KILL_SEED + (mode == "flatness"))
    script = tmp_path / "child.py"
    script.write_text(_CHILD)
    run = _fresh_copy(template, tmp_path / "w")
    out = tmp_path / "out"
    for _ in range(2):
        _run_child(script, mode, out, run, rng.uniform(0.3, 2.5))
        if mode == "spectrum" and (out / "spectrum.json").exists():
            info = json.loads((out / "spectrum.json").read_text())
            try:
                arrays = lio.read_verified_npz(out / "spectrum.npz", info, out / "spectrum.json")
            except lio.MismatchedPairError:
                TRIED["split_pairs_refused"] += 1
                continue  # refused: the kill fell between the two files
            assert arrays["ritz_values"].shape == (info["k"],), f"kill seed {KILL_SEED}"  # accepted: one unit
        elif mode == "flatness" and (out / "flatness-fisher-rao.json").exists():
            info = json.loads((out / "flatness-fisher-rao.json").read_text())  # whole JSON, never half
            assert info["data_samples"] == info["config"]["data_samples"]
    assert runner.invoke(app, [mode, str(run), *(["--method", "lanczos", "--k", "2", "--samples", "30"]
                                                  if mode == "spectrum" else
                                                  ["--measure", "fisher-rao", "--samples", "20"]),
                               "--out", str(out), "--device", "cpu", "--quiet", "--force"]).exit_code == 0
    assert not list(out.glob(".*.tmp"))  # the next write removed the killed writers' temporaries


@pytest.fixture(scope="module", autouse=True)
def _print_the_counts(request):
    """The note reports how many bad inputs and kills the suite tried: printed once the module is done."""
    yield
    terminal = request.config.pluginmanager.get_plugin("terminalreporter")
    if terminal is not None:
        terminal.write_line(f"[test_robustness] {TRIED['inputs']} bad inputs driven through the CLI, {TRIED['kills']} "
                            f"kills (kill seed {KILL_SEED}), {TRIED['split_pairs_refused']} split pairs refused")


def test_reproduce_dry_run_totals_the_disk_of_its_exact_spectra(tmp_path):
    from landscape.reproduce import ReproduceConfig, reproduce

    lines: list[str] = []
    reproduce(ReproduceConfig(target="fig1", runs=str(tmp_path / "runs")), log=lines.append, dry_run=True)
    n = 8 * 8 * 64 + 64 + 64 * 10 + 10  # small-mnistfc on 8x8 digits: 4,810 parameters
    assert f"2 exact spectra to run need up to {resources.format_bytes(n * n * 8)} at once" in lines[-1]
    assert f"({resources.format_bytes(2 * n * n * 8)} written in all" in lines[-1]
    assert not (tmp_path / "runs").exists()  # a dry run writes nothing


def test_reproduce_refuses_an_unwritable_out_before_training(tmp_path):
    _refused(["reproduce", "fig1", "--out", "/proc/landscape-report", "--runs", str(tmp_path / "runs"), "--quiet"],
             protected=tmp_path, needle="Cannot write to the output folder '/proc/landscape-report'")
    assert not (tmp_path / "runs").exists()


def test_in_memory_builds_refuse_what_does_not_fit(monkeypatch):
    """The dense matrix in memory and the per-sample gradients of the diagonal Fisher are sized before any work."""
    from landscape.curvature.dense import dense_hessian
    from landscape.curvature.diagonal import diagonal_fisher
    from landscape.curvature.operators import FisherOperator, make_batches
    from landscape.losses import cross_entropy

    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3), torch.nn.LayerNorm(3), torch.nn.Linear(3, 2))
    x, y = torch.randn(8, 4, dtype=torch.float64), torch.randint(0, 2, (8,))
    op = FisherOperator(model.double(), cross_entropy, make_batches(x, y, 8), dtype=torch.float64)
    n = op.shape[0]
    assert resources.per_sample_gradient_bytes(8, n, 8) == 3 * 8 * n * 8
    monkeypatch.setattr(resources, "available_memory", lambda: 100)
    with pytest.raises(LandscapeError, match=f"The dense {n} x {n} matrix needs about .* but only 100 B"):
        dense_hessian(op, workspace=None, progress=False)
    with pytest.raises(LandscapeError, match="smaller --batch-size"):
        diagonal_fisher(op)  # LayerNorm: no layer-wise path, the per-sample gradient matrix is built
    monkeypatch.setattr(resources, "available_memory", lambda: None)  # unknown: no objection
    assert dense_hessian(op, workspace=None, progress=False).shape == (n, n)
    np.testing.assert_allclose(diagonal_fisher(op).numpy(),
                               (op.per_sample_gradients(x, y) ** 2).mean(0).numpy(), rtol=1e-12)


def test_reproduce_with_a_damaged_metrics_file_names_it(template, tmp_path):
    """The done test does not trust a damaged metrics file; the resume that follows names it in one sentence."""
    from landscape.reproduce import Plan, _train_step

    run = _fresh_copy(template, tmp_path / "rep")
    (run / "metrics.jsonl").write_text((run / "metrics.jsonl").read_text()[:-20])
    plan = Plan()
    _train_step(plan, "t", run, {"model": "small-mnistfc", "dataset": "digits", "optimizer": "adam", "epochs": 2,
                                 "batch_size": 64, "model_kwargs": {"hidden": 4}}, "cpu", None)
    assert not plan.steps[0].done()
    with pytest.raises(LandscapeError, match=r"metrics.jsonl line 3 is not a JSON object"):
        plan.steps[0].run()


def test_a_kill_between_the_first_checkpoint_and_its_row_is_resumable(tmp_path, monkeypatch):
    """The epoch-0 window: a rerun says --resume, and --resume completes the run as if never stopped."""
    import landscape.train as train_module

    real = train_module._write_metrics

    def killed(path, rows):
        raise KeyboardInterrupt

    monkeypatch.setattr(train_module, "_write_metrics", killed)
    with pytest.raises(KeyboardInterrupt):
        train_tiny_digits_run(tmp_path / "zero", epochs=1)
    monkeypatch.setattr(train_module, "_write_metrics", real)
    run = tmp_path / "zero"
    assert (run / "checkpoint.pt").exists() and not (run / "metrics.jsonl").exists()
    with pytest.raises(LandscapeError, match="continue it with --resume"):
        train_tiny_digits_run(run, epochs=1)
    torch.manual_seed(0)
    from landscape.train import TrainConfig, train

    train(TrainConfig(model="small-mnistfc", dataset="digits", optimizer="adam", epochs=1, batch_size=64,
                      out=str(run), device="cpu", model_kwargs={"hidden": 4}), resume=True, progress=False)
    reference = train_tiny_digits_run(tmp_path / "reference", epochs=1)
    assert _rows(run) == _rows(reference) and _same_weights(run, reference)


def _spectrum_arrays(folder: Path) -> dict:
    with np.load(folder / "spectrum.npz", allow_pickle=False) as arrays:
        return dict(arrays)


def _blocks_done(out: Path) -> tuple[int, int]:
    """(blocks done, blocks in all) from the build's state file; (0, 1) before it exists."""
    try:
        state = json.loads((out / "hessian.json").read_text())
        return int(state["blocks_done"]), int(state["num_blocks"])
    except (OSError, ValueError, KeyError):
        return 0, 1


def _kill_inside_build(script: Path, out: Path, run: Path, fraction: float) -> bool:
    """Start an exact build and SIGKILL it once its state file records ``fraction`` of the blocks
    (the state is committed after every block). True when the kill landed before the build finished."""
    child = subprocess.Popen([sys.executable, str(script), "exact", str(out), str(run)], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "ready"
    deadline = time.monotonic() + 60
    while child.poll() is None and time.monotonic() < deadline:
        done, total = _blocks_done(out)
        if done >= max(1, fraction * total):
            break
        time.sleep(0.002)
    finished = child.poll() is not None
    child.kill()
    child.wait()
    TRIED["kills"] += not finished
    return not finished and not (out / "spectrum.json").exists()


def test_an_exact_build_killed_at_random_points_resumes_to_the_uninterrupted_spectrum(template, tmp_path):
    import random

    rng = random.Random(KILL_SEED + 2)
    script = tmp_path / "child.py"
    script.write_text(_CHILD)
    run = _fresh_copy(template, tmp_path / "w")
    reference, killed = tmp_path / "reference", tmp_path / "killed"
    _run_child(script, "exact", reference, run, None)
    kills = sum(_kill_inside_build(script, killed, run, rng.uniform(0.05, 0.6)) for _ in range(2))
    assert kills >= 1, f"no kill landed inside the build (kill seed {KILL_SEED})"
    _run_child(script, "exact", killed, run, None)  # resume: the finished blocks are kept
    np.testing.assert_allclose(_spectrum_arrays(killed)["eigenvalues"], _spectrum_arrays(reference)["eigenvalues"],
                               rtol=0, atol=1e-12, err_msg=f"kill seed {KILL_SEED}")


def test_a_report_killed_while_writing_leaves_the_old_page_or_the_new_one(template, tmp_path):
    import random

    rng = random.Random(KILL_SEED + 3)
    script = tmp_path / "child.py"
    script.write_text(_CHILD)
    run = _fresh_copy(template, tmp_path / "w")
    out = tmp_path / "report"
    for _ in range(3):
        _run_child(script, "report", out, run, rng.uniform(0.5, 4.0))
        if (out / "index.html").exists():
            assert (out / "index.html").read_text(encoding="utf-8").rstrip().endswith("</html>")
    assert runner.invoke(app, ["report", str(run), "--out", str(out), "--quiet"]).exit_code == 0
    assert not list(out.glob(".*.tmp"))


def test_reproduce_killed_at_random_points_resumes_to_the_uninterrupted_runs(tmp_path):
    import random

    rng = random.Random(KILL_SEED + 4)
    script = tmp_path / "child.py"
    script.write_text(_CHILD)
    reference, killed = tmp_path / "reference", tmp_path / "killed"
    start = time.perf_counter()
    _run_child(script, "reproduce", reference, reference, None)
    whole = time.perf_counter() - start
    kills = 0
    for _ in range(2):
        kills += _run_child(script, "reproduce", killed, killed, rng.uniform(0.05, 0.5) * whole)
    assert kills >= 1, f"no kill landed (kill seed {KILL_SEED})"
    _run_child(script, "reproduce", killed, killed, None)
    for name in ("small-mnistfc-sgd-s0", "small-mnistfc-sgd-s1"):
        assert _rows(killed / "runs" / name) == _rows(reference / "runs" / name), f"kill seed {KILL_SEED}"
        assert _same_weights(killed / "runs" / name, reference / "runs" / name), f"kill seed {KILL_SEED}"
    assert (killed / "report" / "index.html").exists()

