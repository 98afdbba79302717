"""``landscape report``: one self-contained HTML file whose numbers come from the run's files.

The browser test renders the report in headless Chromium (Debian's package, installed by
`make test` where missing), checks that every figure decoded and that the page made no
request beyond its own file, and keeps a screenshot in tests/artifacts/.
"""

import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from digits_reference import train_tiny_digits_run
from landscape.cli.app import app
from landscape.errors import LandscapeError
from landscape.io import write_arrays_and_summary
from landscape.flatness.stage import FlatnessConfig, compute_flatness
from landscape.report import build_report
from landscape.report.render import num, pct
from landscape.spectrum import SpectrumConfig, compute_spectrum

ARTIFACTS = Path(os.environ.get("LANDSCAPE_TEST_ARTIFACTS", Path(__file__).parent / "artifacts"))


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A real tiny run (310 parameters) with an exact spectrum, SLQ and the local energy."""
    root = tmp_path_factory.mktemp("report")
    run = train_tiny_digits_run(root / "tiny <i>adam", epochs=2)
    compute_spectrum(SpectrumConfig(checkpoint=str(run / "checkpoint.pt"), method="exact", samples=300,
                                    device="cpu"), progress=False)
    compute_spectrum(SpectrumConfig(checkpoint=str(run / "checkpoint.pt"), method="slq", samples=300, num_probes=3,
                                    num_iters=30, device="cpu"), progress=False)
    compute_flatness(FlatnessConfig(checkpoint=str(run / "checkpoint.pt"), measure="local-energy", data_samples=200,
                                    samples=4, sigmas=(0.0, 0.1, 0.3), device="cpu"))
    return run


@pytest.fixture(scope="module")
def report(run_dir):
    return build_report([str(run_dir)], run_dir.parent / "reports" / "tiny", title="tiny report")


def test_report_is_one_self_contained_file(report):
    html = report.read_text(encoding="utf-8")
    assert [p.name for p in report.parent.iterdir()] == ["index.html"]
    sources = re.findall(r'(?:src|href)="([^"]*)"', html)
    assert sources, "the report has no figures"
    for source in sources:
        assert source.startswith(("data:image/svg+xml;base64,", "#")), source[:60]
    assert "url(" not in html and "@import" not in html and "<link" not in html and "<script" not in html
    alts = re.findall(r'<img src="[^"]*" alt="([^"]*)"', html)
    assert alts == ["training curves", "eigenspectrum small-mnistfc digits", "SLQ density tiny &lt;i&gt;adam",
                    "local energy curves"]


def test_report_numbers_come_from_the_result_files(run_dir, report):
    html = report.read_text(encoding="utf-8")
    spectrum = json.loads((run_dir / "spectrum-exact" / "spectrum.json").read_text())
    eigenvalues = np.load(run_dir / "spectrum-exact" / "spectrum.npz")["eigenvalues"]
    assert spectrum["lambda_max"] == eigenvalues.max()
    assert f"<td>{num(spectrum['lambda_max'])}</td>" in html
    assert f"<td>{num(spectrum['lambda_min'])}</td>" in html
    assert pct(spectrum["fraction_abs_below"]["1e-4"], 1) in html
    final = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()][-1]
    assert f"<td>{pct(final['test_error'])}</td>" in html
    energy = json.loads((run_dir / "flatness-local-energy.json").read_text())
    assert num(energy["delta"]["train"]["loss"][-1]) in html


def test_report_escapes_what_users_named(report):
    html = report.read_text(encoding="utf-8")
    assert "tiny &lt;i&gt;adam" in html and "<i>adam" not in html


def test_report_cli_and_its_errors(run_dir, tmp_path):
    runner = CliRunner()
    result = runner.invoke(app, ["report", str(run_dir), "--out", str(tmp_path / "r"), "-q"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "r" / "index.html").exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    result = runner.invoke(app, ["report", str(empty), "--out", str(tmp_path / "r2")])
    assert result.exit_code == 2 and "holds no run" in result.output and "Traceback" not in result.output
    # a study folder: runs one and two levels down are found, the runs' own spectrum folders are not runs
    study = tmp_path / "study"
    shutil.copytree(run_dir, study / "a")
    shutil.copytree(run_dir, study / "population" / "b")
    from landscape.report import collect

    runs, figs = collect([str(study), str(study / "a")])  # given twice: read once
    assert sorted(r.name for r in runs) == ["a", "b"] and figs == []
    broken = tmp_path / "broken"
    shutil.copytree(run_dir, broken)
    (broken / "spectrum-exact" / "spectrum.json").write_text("{not json")
    with pytest.raises(LandscapeError, match="not valid JSON"):
        build_report([str(broken)], tmp_path / "r3")


@pytest.fixture(scope="module")
def population(tmp_path_factory):
    """Four real tiny runs (SGD at four learning rates) with their local energy."""
    from landscape.train import TrainConfig, train

    root = tmp_path_factory.mktemp("population")
    for lr in (0.01, 0.03, 0.1, 0.3):
        out = root / f"sgd-lr{lr}"
        train(TrainConfig(model="small-mnistfc", dataset="digits", optimizer="sgd", lr=lr, epochs=1, batch_size=64,
                          out=str(out), device="cpu", model_kwargs={"hidden": 4}), progress=False)
        compute_flatness(FlatnessConfig(checkpoint=str(out / "checkpoint.pt"), measure="local-energy",
                                        data_samples=200, samples=4, sigmas=(0.0, 0.1, 0.3), device="cpu"))
    return root


def test_correlation_table_matches_the_statistics_of_the_files(population, tmp_path):
    from landscape.flatness.correlation import granulated_kendall, kendall_tau_ci
    from landscape.report.render import signed

    path = build_report([str(population)], tmp_path / "corr", max_train_error=1.0)  # 1-epoch models: keep all
    html = path.read_text(encoding="utf-8")
    runs = sorted(population.iterdir())
    errors = [[json.loads(line) for line in (r / "metrics.jsonl").read_text().splitlines()][-1]["test_error"]
              for r in runs]
    values = [json.loads((r / "flatness-local-energy.json").read_text())["delta"]["train"]["loss"][2] for r in runs]
    stats = kendall_tau_ci(values, errors)
    row = html[html.index("local-energy ΔL_train σ=0.3 (multiplicative)</td>"):]
    row = row[: row.index("</tr>")]
    assert f"<td>{signed(stats.tau, 3)}</td>" in row
    assert f"[{signed(stats.low)}, {signed(stats.high)}]" in row
    # only lr varies (epochs, batch size, optimizer are shared; seeds would be pooled): psi_lr = tau-a over 4 models
    psi = granulated_kendall(values, errors, [{"lr": str(lr)} for lr in (0.01, 0.03, 0.1, 0.3)]).psi["lr"]
    assert "ψ lr" in html and f"<td>{num(psi, 3)}</td>" in row


def test_models_that_did_not_train_leave_the_correlation_study(population, tmp_path):
    errors = {r.name: [json.loads(line) for line in (r / "metrics.jsonl").read_text().splitlines()][-1]["train_error"]
              for r in population.iterdir()}
    worst = max(errors, key=errors.get)
    threshold = sorted(errors.values())[-2]  # everyone but the worst model passes
    html = build_report([str(population)], tmp_path / "r", max_train_error=threshold).read_text(encoding="utf-8")
    assert f"did not train): {worst}." in html
    assert 'id="correlation"' not in html  # 3 models left: fewer than the 4 a rank correlation needs here


def test_unfinished_runs_and_incomplete_results_are_left_out_with_a_note(run_dir, tmp_path):
    partial = tmp_path / "partial"
    shutil.copytree(run_dir, partial)
    config = json.loads((partial / "config.json").read_text())
    config["epochs"] = 5
    (partial / "config.json").write_text(json.dumps(config))
    slq = partial / "spectrum-slq"  # a consistent pair (the JSON vouches for the arrays) without weights
    write_arrays_and_summary(slq / "spectrum.npz", slq / "spectrum.json", {"nodes": np.ones((2, 3))},
                             json.loads((slq / "spectrum.json").read_text()))
    energy = json.loads((partial / "flatness-local-energy.json").read_text())
    energy["warnings"] = ["sigma 0.3 <measured> on 200 samples only"]
    (partial / "flatness-local-energy.json").write_text(json.dumps(energy))
    html = build_report([str(partial)], tmp_path / "r").read_text(encoding="utf-8")
    assert "partial stopped at epoch 2 of 5" in html and "(incomplete: epoch 2 of 5)" in html
    assert "has no weights: left out." in html
    assert "SLQ density" not in html
    assert "sigma 0.3 &lt;measured&gt; on 200 samples only" in html  # a measurement's warning, escaped


def _chromium() -> str | None:
    for candidate in (os.environ.get("LANDSCAPE_CHROMIUM"), "/usr/bin/chromium", shutil.which("chromium"),
                      shutil.which("chromium-browser")):
        if candidate and Path(candidate).exists():
            return candidate
    return None


def test_report_renders_in_headless_chromium(report):
    chromium = _chromium()
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        sync_playwright = None
    if chromium is None or sync_playwright is None:
        message = "headless Chromium and playwright are needed: `make test` installs both (Debian's chromium)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    requests = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--no-first-run", "--disable-quic"])
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            page.on("request", lambda request: requests.append(request.url))
            page.goto(report.resolve().as_uri(), wait_until="load")
            images = page.evaluate("Array.from(document.images).map(i => [i.complete, i.naturalWidth, i.alt])")
            headings = page.evaluate("Array.from(document.querySelectorAll('h2')).map(h => h.textContent)")
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "report.png"), full_page=True)
        finally:
            browser.close()
    assert len(images) == 4
    for complete, width, alt in images:
        assert complete and width > 0, f"figure '{alt}' did not load"
    external = [url for url in requests if not url.startswith(("file:", "data:"))]
    assert external == [], external
    assert any("Spectra" in h for h in headings) and any("Training" in h for h in headings)
    assert (ARTIFACTS / "report.png").stat().st_size > 10_000


def test_table1_columns_select_each_seed_by_its_validation_error(run_dir, tmp_path):
    """The error reported per configuration is each seed's test error at its lowest validation
    error (the first such evaluation on ties), with that evaluation's effective epoch: the
    paper's Table 1 columns."""
    from landscape.report.render import PAPER_TABLE1

    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert len(metrics) == 3
    chosen = {0: ([0.9, 0.3, 0.2], [0.9, 0.25, 0.15]), 1: ([0.9, 0.2, 0.2], [0.9, 0.35, 0.05])}
    for seed, (val, test) in chosen.items():
        run = tmp_path / f"seed{seed}"
        shutil.copytree(run_dir, run)
        config = json.loads((run / "config.json").read_text())
        config["seed"] = seed
        (run / "config.json").write_text(json.dumps(config))
        rows = [dict(m, val_error=v, test_error=t) for m, v, t in zip(metrics, val, test)]
        (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    html = build_report([str(tmp_path / "seed0"), str(tmp_path / "seed1")], tmp_path / "r").read_text(encoding="utf-8")
    row = html[html.index('<h2 id="training">'):]
    row = row[row.index("<td class=\"l\">"):]
    row = row[: row.index("</tr>")]
    # seed 0 selects its last evaluation (test 15%), seed 1 the first of its two 20% (test 35%)
    best = np.array([0.15, 0.35])
    epoch = (metrics[2]["effective_epochs"] + metrics[1]["effective_epochs"]) / 2
    assert f"<td>{pct(best.mean())} ± {pct(best.std(ddof=1))}</td>" in row
    assert f"<td>{num(epoch, 3)}</td>" in row
    assert f"<td>{pct(0.1)} ± {pct(np.std([0.15, 0.05], ddof=1))}</td>" in row  # the final test errors
    # small-mnistfc is not in the paper's Table 1: no reference line; mnistfc would have one
    assert "The paper's Table 1" not in html and "mnistfc" in PAPER_TABLE1


def test_an_archived_report_re_renders_without_its_run_directories(run_dir, tmp_path):
    original = tmp_path / "tiny <i>adam"
    shutil.copytree(run_dir, original)
    out = tmp_path / "published"
    runner = CliRunner()
    result = runner.invoke(app, ["report", str(original), "--out", str(out), "--archive", "-q"])
    assert result.exit_code == 0, result.output
    first = (out / "index.html").read_text(encoding="utf-8")
    archived = sorted(str(p.relative_to(out / "runs")) for p in (out / "runs").rglob("*") if p.is_file())
    assert archived == sorted(str(Path(original.name) / f) for f in (
        "config.json", "metrics.jsonl", "flatness-local-energy.json", "spectrum-exact/spectrum.json",
        "spectrum-exact/spectrum.npz", "spectrum-slq/spectrum.json", "spectrum-slq/spectrum.npz"))
    assert (original / "checkpoint.pt").exists()  # the checkpoint stays behind
    shutil.rmtree(original)
    # from the archive alone, writing the archive it reads: the same page (but for the line naming its inputs)
    build_report([str(out / "runs")], out, title=out.name, archive=True)
    again = (out / "index.html").read_text(encoding="utf-8")

    def body(html):
        return [line for line in html.splitlines() if not line.startswith('<p class="meta">Generated')]

    assert body(again) == body(first) and again != first
    assert sorted(str(p.relative_to(out / "runs")) for p in (out / "runs").rglob("*") if p.is_file()) == archived
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no staging folder left behind
