"""``landscape report``: one self-contained HTML file whose numbers come from the run's files.

The browser test renders the report in headless Chromium (Debian's package, installed by
`make test` where missing), checks that every figure decoded and that the page made no
request beyond its own file, and keeps a screenshot in tests/artifacts/.
"""

import base64
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
    # the headline's figure (the exact spectrum) comes first, then the sections' own
    assert alts == ["eigenspectrum small-mnistfc digits", "training curves small-mnistfc on digits",
                    "SLQ density tiny &lt;i&gt;adam", "local energy curves"]


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


def _lanczos_top_k(run: Path) -> None:
    """A top-k (which=LA) Lanczos result as the spectrum stage now writes it: no lambda_min."""
    folder = run / "spectrum-lanczos"
    folder.mkdir()
    ritz = np.array([0.9, 0.5, 0.2])
    np.savez(folder / "spectrum.npz", ritz_values=ritz, residuals=np.full(3, 1e-6), converged=np.ones(3, bool))
    info = json.loads((run / "spectrum-exact" / "spectrum.json").read_text())
    info = {k: info[k] for k in ("operator", "mode", "dtype", "samples", "n_params")}
    info.update(method="lanczos", which="LA", k=3, lambda_max=0.9, ritz_max=0.9, ritz_min=0.2, wall_s=4321.0)
    (folder / "spectrum.json").write_text(json.dumps(info))


def _svg_axis_labels(svg: str) -> list[str]:
    """The label of every axis of a matplotlib SVG (text is drawn as paths; each text keeps a comment):
    the comment of each axis group that is words rather than a tick."""
    labels = []
    for part in re.split(r'<g id="matplotlib\.axis_\d+">', svg)[1:]:
        part = re.split(r'<g id="(?:axes|patch|legend)_\d+">', part)[0]
        words = [c for c in re.findall(r"<!-- (.*?) -->", part)
                 if re.search(r"[^\W\d_]{2,}", c) and "mathdefault" not in c]
        labels += words[-1:]  # ticks are numbers (an offset like "1e−2" too)
    return labels


def _browser_page(chromium: str, html: Path, width: int, shot: Path) -> dict:
    from playwright.sync_api import sync_playwright

    requests = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--no-first-run", "--disable-quic"])
        try:
            page = browser.new_page(viewport={"width": width, "height": 900})
            page.on("request", lambda request: requests.append(request.url))
            page.goto(html.resolve().as_uri(), wait_until="load")
            facts = page.evaluate("""() => ({
                images: Array.from(document.images).map(i => [i.complete, i.naturalWidth, i.alt, i.src]),
                headings: Array.from(document.querySelectorAll('h2')).map(h => h.textContent),
                firstSection: document.querySelector('h1').nextElementSibling.nextElementSibling.id,
                scrollWidth: document.documentElement.scrollWidth, innerWidth: window.innerWidth,
                wide: Array.from(document.querySelectorAll('body *')).filter(e => e.getBoundingClientRect().right
                      > window.innerWidth + 0.5).map(e => e.tagName + ' ' + e.textContent.slice(0, 40)),
                tables: Array.from(document.querySelectorAll('table')).map(t => t.getBoundingClientRect().right),
                column: document.body.getBoundingClientRect().right
                        - parseFloat(getComputedStyle(document.body).paddingRight),
                text: document.body.innerText,
                lastElement: document.body.lastElementChild.outerHTML.slice(0, 300),
                skippedInDetails: Array.from(document.querySelectorAll('#skipped + details li'))
                                  .map(l => l.textContent),
            })""")
            shot.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(shot), full_page=True)
        finally:
            browser.close()
    facts["requests"] = requests
    return facts


def test_report_renders_in_headless_chromium(run_dir, tmp_path):
    chromium = _chromium()
    try:
        from playwright.sync_api import sync_playwright  # noqa: F401
    except ImportError:
        chromium = None
    if chromium is None:
        message = "headless Chromium and playwright are needed: `make test` installs both (Debian's chromium)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    run = tmp_path / "a-rather-long-run-name-for-the-tables-s0"
    shutil.copytree(run_dir, run)
    _lanczos_top_k(run)
    skipped = [f"landscape spectrum step {i} failed: a reason" for i in range(25)]
    html = build_report([str(run)], tmp_path / "r", extra={"skipped": skipped})
    facts = _browser_page(chromium, html, 1400, ARTIFACTS / "report.png")
    assert len(facts["images"]) == 5  # spectrum, training, SLQ, Ritz values, local energy
    for complete, width, alt, _ in facts["images"]:
        assert complete and width > 0, f"figure '{alt}' did not load"
    external = [url for url in facts["requests"] if not url.startswith(("file:", "data:"))]
    assert external == [], external
    assert any("Spectra" in h for h in facts["headings"]) and any("Training" in h for h in facts["headings"])
    # layout at 1,400 px: nothing wider than the window, every table inside it
    assert facts["scrollWidth"] <= facts["innerWidth"], facts["wide"][:5]
    assert facts["wide"] == [] and max(facts["tables"]) <= facts["innerWidth"]
    assert max(facts["tables"]) <= facts["column"] + 1  # not even into the page's margin
    # every figure has labelled axes (x and y at least)
    for *_, alt, src in facts["images"]:
        svg = base64.b64decode(src.split(",", 1)[1]).decode("utf-8")
        assert len(_svg_axis_labels(svg)) >= 2, f"figure '{alt}' has no axis labels"
    # no Python or IEEE placeholders in what a reader sees; the empty λmin says why
    assert not re.search(r"\b(nan|NaN|None|inf)\b", facts["text"])
    assert "λmin not computed: Lanczos found the top of the spectrum only (which=LA)" in facts["text"]
    assert "1 h 12 min" in facts["text"]  # 4,321 s in human units
    # the headline first; the 25 skipped steps folded away at the very end
    assert facts["firstSection"] == "headline" and facts["headings"][0] == "Headline"
    assert facts["headings"][-1] == "Skipped, failed or left out"
    assert facts["lastElement"].startswith("<details>")
    assert facts["skippedInDetails"][:25] == skipped  # then the notes of the report itself
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
    # small-mnistfc is not in the paper's Table 1: no paper column for it; mnistfc would have one
    assert "<h3>Table 1:" not in html and "mnistfc" in PAPER_TABLE1 and "small-mnistfc" not in PAPER_TABLE1


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
    build_report([str(out / "runs")], out, archive=True)
    again = (out / "index.html").read_text(encoding="utf-8")

    def body(html):
        return [line for line in html.splitlines() if not line.startswith('<p class="meta">Generated')]

    assert body(again) == body(first) and again != first
    assert sorted(str(p.relative_to(out / "runs")) for p in (out / "runs").rglob("*") if p.is_file()) == archived
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no staging folder left behind


def test_durations_read_as_a_person_says_them():
    from landscape.report.fmt import duration

    assert [duration(s) for s in (0.43, 9.96, 42.4, 185, 3600, 4200, 4.2e3 + 29, 93_600, 2 * 86_400)] == [
        "0.4 s", "10.0 s", "42 s", "3 min 5 s", "1 h", "1 h 10 min", "1 h 10 min", "1 d 2 h", "2 d"]
    assert duration(None) == duration(float("nan")) == duration(-1) == "–"


def test_long_run_names_are_cut_in_the_middle_with_the_full_name_on_hover(run_dir, tmp_path):
    from landscape.report.fmt import short_name

    name = "replicated-sgd-lr0.03-b128-momentum0.9-s0"
    assert short_name(name) == "replicated-sgd…-momentum0.9-s0" and len(short_name(name)) == 30
    assert short_name("sgd-s0") == "sgd-s0"
    run = tmp_path / name
    shutil.copytree(run_dir, run)
    html = build_report([str(run)], tmp_path / "r").read_text(encoding="utf-8")
    assert f'<abbr title="{name}">{short_name(name)}</abbr>' in html


def test_a_search_that_ended_on_its_bound_shows_the_bound_not_a_value():
    from landscape.report.collect import search_limit

    entry = {"value": 10.0, "settings": {"bounds": [1e-5, 10.0]}, "extra": {"bracketed": False}}
    assert search_limit(entry) == "> 10 (search limit)"
    assert search_limit(dict(entry, value=1e-5)) == "< 1e-05 (search limit)"
    assert search_limit(dict(entry, extra={"bracketed": True})) is None


def test_the_paper_column_compares_only_runs_on_the_papers_data():
    from landscape.report.headline import table1_comparisons
    from landscape.report.paper import same_data

    assert same_data("mnist", "mnist") and not same_data("mnist", "fashion-mnist") and not same_data("mnist", "digits")
    assert same_data("war-and-peace", "text:/data/War-and-Peace.txt")
    assert not same_data("war-and-peace", "text:/usr/share/common-licenses/GPL-3")
    assert same_data("text", "text:/usr/share/common-licenses/GPL-3")  # Fig. 3b names no text

    def group(dataset, optimizer="adam"):
        return {"label": optimizer, "seeds": 2, "model": "char-lstm", "dataset": dataset, "optimizer": optimizer,
                "best": {"test_perplexity": {"mean": 1.3, "std": 0.01, "effective_epochs": 40.0}}}

    (gpl,) = table1_comparisons([group("text:/usr/share/common-licenses/GPL-3")])
    cell = gpl["rows"][0]["paper"]
    assert cell["text"] == "different data (paper: War and Peace; here: text:/usr/share/common-licenses/GPL-3)"
    assert not cell["comparable"] and "1.226" not in cell["text"]  # not set beside a GPL-3 perplexity
    assert cell["hover"] == "not comparable: the paper's value on War and Peace is 1.226 ± 0.01 at 40 eff. epochs"
    (war,) = table1_comparisons([group("text:war_and_peace.txt"), group("text:war_and_peace.txt", "sgd")])
    assert war["rows"][0]["paper"] == {"text": "1.226 ± 0.01 at 40 eff. epochs", "comparable": True, "hover": ""}
    assert war["rows"][0]["ours"] == "1.3 ± 0.01 at 40 eff. epochs"
    assert war["rows"][1]["paper"]["text"].startswith("not in Table 1")


def test_spectra_on_other_samples_are_labelled_and_warned_about(run_dir, tmp_path):
    run = tmp_path / "mixed"
    shutil.copytree(run_dir, run)
    slq = run / "spectrum-slq" / "spectrum.json"
    info = json.loads(slq.read_text())
    info["samples"], info["config"]["samples"] = 1000, 1000
    slq.write_text(json.dumps(info))
    html = build_report([str(run)], tmp_path / "r").read_text(encoding="utf-8")
    warning = html[html.index('<p class="warning">'):]
    warning = warning[: warning.index("</p>")]
    assert "the slq result (1,000 samples, float64, eval mode) is drawn over the exact spectrum (300 samples" in warning
    same = build_report([str(run_dir)], tmp_path / "r2").read_text(encoding="utf-8")
    assert 'class="warning"' not in same
    # two runs' exact spectra on different samples: each curve names its own, and the page says so
    exact = run / "spectrum-exact" / "spectrum.json"
    info = json.loads(exact.read_text())
    info["samples"] = 1000
    exact.write_text(json.dumps(info))
    html = build_report([str(run_dir), str(run)], tmp_path / "r3").read_text(encoding="utf-8")
    assert "spectra of small-mnistfc on digits were measured on different samples, dtypes or modes" in html
    svg = base64.b64decode(re.search(r'src="data:image/svg\+xml;base64,([^"]*)" alt="eigenspectrum', html)[1])
    assert b"(300 samples, float64, eval mode)" in svg and b"(1,000 samples, float64, eval mode)" in svg


def test_the_headline_sets_the_papers_fig1_numbers_beside_ours_on_the_same_data(run_dir, tmp_path):
    runs = []
    for seed, dataset in ((0, "mnist"), (1, "fashion-mnist")):
        run = tmp_path / dataset / f"small-lenet-s{seed}"
        shutil.copytree(run_dir, run)
        config = json.loads((run / "config.json").read_text())
        config.update(model="small-lenet", dataset=dataset, seed=seed)
        (run / "config.json").write_text(json.dumps(config))
        (run / "flatness-local-energy.json").unlink()  # spectra only: the page is the paper's Fig. 1
        runs.append(run)
    mnist = build_report([str(runs[0])], tmp_path / "a").read_text(encoding="utf-8")
    head = mnist[mnist.index('<section id="headline">'):mnist.index("</section>")]
    assert "Fig. 1: exact Hessian spectrum of small-lenet" in head
    exact = json.loads((run_dir / "spectrum-exact" / "spectrum.json").read_text())
    row = head[head.index("<td class=\"l\">λmax</td>"):]
    row = row[: row.index("</tr>")]
    assert f"<td>{num(exact['lambda_max'], 3)}</td>" in row and '<td class="paper">40</td>' in row
    fashion = build_report([str(runs[1])], tmp_path / "b").read_text(encoding="utf-8")
    head = fashion[fashion.index('<section id="headline">'):fashion.index("</section>")]
    assert "different data (paper: MNIST; here: fashion-mnist)" in head and ">40<" not in head
    assert 'title="not comparable: the paper&#39;s value on MNIST is 40"' in head
    assert "<title>Fig. 1: exact Hessian spectra of small-lenet on fashion-mnist</title>" in fashion


def test_runs_on_other_networks_or_data_get_their_own_figures(run_dir, tmp_path):
    other = tmp_path / "lstm"
    shutil.copytree(run_dir, other)
    config = json.loads((other / "config.json").read_text())
    config.update(model="char-lstm", dataset="text:GPL-3")
    (other / "config.json").write_text(json.dumps(config))
    html = build_report([str(run_dir), str(other)], tmp_path / "r").read_text(encoding="utf-8")
    alts = re.findall(r'<img src="[^"]*" alt="([^"]*)"', html)
    assert "training curves char-lstm on text:GPL-3" in alts and "training curves small-mnistfc on digits" in alts
    assert "local energy curves char-lstm on text:GPL-3" in alts
    assert "local energy curves small-mnistfc on digits" in alts


def test_missing_local_entropy_says_why_and_a_minority_gets_no_tau(population, tmp_path):
    """A Laplace local entropy that does not exist at a scope (γ ≤ −λmin of βH) says so in its cell, and a
    measure that only a minority of the population has gets no Kendall τ (it would rank who has a value)."""
    root = tmp_path / "population"
    shutil.copytree(population, root)
    first = sorted(root.iterdir())[0]
    message = "The Laplace estimate does not exist at gamma=1: lambda_min = -223.151"
    (first / "flatness-local-entropy.json").write_text(json.dumps({
        "measure": "local-entropy", "method": "laplace", "gammas": [1.0, 100.0], "estimates": [None, -5.0],
        "stderrs": [None, 0.1], "beta": 200.0, "n": 310, "wall_s": 1.0, "invariant_to_rescaling": False,
        "warnings": [message],
        "diagnostics": {"per_gamma": [{"exists": False, "lambda_min": -223.151, "message": message},
                                      {"exists": True, "lambda_min": -223.151}]}}), encoding="utf-8")
    html = build_report([str(root)], tmp_path / "r", max_train_error=1.0).read_text(encoding="utf-8")
    assert f"<span title=\"{message}\">undefined: γ ≤ 223</span>" in html
    row = html[html.index("local entropy γ=100 (laplace)</td>"):]
    row = row[: row.index("</tr>")]
    assert "too few models: 1 of 4 have a value" in row and "±" not in row
