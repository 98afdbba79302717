"""The sharper/flatter direction of every measure: docs/design.md states it, the code must agree, and so must
what each measure does when a minimum is made sharper."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from landscape.flatness import epsilon_sharpness, fisher_rao_norm, hessian_sharpness, local_energy, pac_bayes_sigma
from landscape.flatness.local_entropy import scope_curve
from landscape.report.collect import RunArtifacts, flatness_scalars

DESIGN = Path(__file__).resolve().parents[1] / "docs" / "design.md"


def documented_directions() -> dict[str, int]:
    """The table under "## Sign conventions": name prefix -> +1 (sharper ↑) or -1 (flatter ↑)."""
    text = DESIGN.read_text(encoding="utf-8")
    assert text.count("## Sign conventions") == 1
    section = text.split("## Sign conventions", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| `([^`]+)` \| (sharper|flatter) ↑ \|", section, flags=re.M)
    return {prefix: (+1 if word == "sharper" else -1) for prefix, word in rows}


def documented(name: str, table: dict[str, int]) -> int:
    matches = [d for prefix, d in table.items() if name.startswith(prefix)]
    assert len(matches) == 1, f"{name!r} matches {len(matches)} rows of the sign-convention table"
    return matches[0]


# ---- the two "models": a quadratic minimum of curvature k A, and a softmax layer at temperature k ------------


class Quadratic(nn.Module):
    """Per-sample output 0.5 k (w - w0)^T A (w - w0): with the mean as the loss, a minimum at w0 of curvature k A."""

    A = torch.tensor([[2.0, 0.5, 0.0], [0.5, 1.0, 0.2], [0.0, 0.2, 0.5]], dtype=torch.float64)
    W0 = torch.tensor([0.7, -1.2, 0.4], dtype=torch.float64)

    def __init__(self, k: float):
        super().__init__()
        self.k = k
        self.w = nn.Parameter(self.W0.clone())

    def forward(self, x):
        d = self.w - self.W0
        return (0.5 * self.k * d @ self.A @ d).expand(x.shape[0])


def mean_output(outputs, targets, reduction="mean"):
    return outputs.sum() if reduction == "sum" else outputs.mean()


class Softmax(nn.Module):
    """Logits k W x at small W (near-uniform predictions): the Hessian and Fisher grow as k^2."""

    def __init__(self, k: float):
        super().__init__()
        torch.manual_seed(0)
        self.k = k
        self.layer = nn.Linear(4, 3, bias=False).double()
        with torch.no_grad():
            self.layer.weight.mul_(0.1)

    def forward(self, x):
        return self.k * self.layer(x)


def flatness_files(k: float) -> dict[str, dict]:
    """Every measure on the model of sharpness k, as the flatness stage writes it (flatness-<measure>.json)."""
    dummy = (torch.zeros(6, 1, dtype=torch.float64), torch.zeros(6, dtype=torch.long))
    quad = Quadratic(k)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(40, 4, generator=g, dtype=torch.float64)
    soft = (x, torch.randint(0, 3, (40,), generator=g))
    sharp = [epsilon_sharpness(quad, dummy, 0.2, box=box, steps=8, loss_fn=mean_output) for box in ("relative", "keskar")]
    sharp += hessian_sharpness(Softmax(k), soft, trace_rel=0.01, max_probes=400)
    pac = [pac_bayes_sigma(quad, dummy, target=0.01, metric="loss", noise=noise, samples=4, loss_fn=mean_output)
           for noise in ("multiplicative", "additive")]
    fisher = [fisher_rao_norm(Softmax(k), soft, kind=kind) for kind in ("model", "empirical")]
    energy = local_energy(quad, dummy, [0.0, 0.1, 0.3], samples=4, loss_fn=mean_output).to_dict()
    energy.pop("values")
    A = k * Quadratic.A
    curve = scope_curve(lambda v: 0.5 * (v - Quadratic.W0) @ A @ (v - Quadratic.W0), Quadratic.W0.clone(),
                        [1.0, 10.0], method="laplace").to_dict()
    return {"sharpness": {"entries": [e.to_dict() for e in sharp]},
            "pac-bayes": {"entries": [e.to_dict() for e in pac]},
            "fisher-rao": {"entries": [e.to_dict() for e in fisher]},
            "local-energy": energy,
            "local-entropy": {**curve, "invariant_to_rescaling": False}}


def exact_spectrum_json(k: float) -> dict:
    lam = torch.linalg.eigvalsh(k * Quadratic.A)
    return {"method": "exact", "lambda_max": float(lam[-1]), "trace": float(lam.sum())}


SHARPNESS = (1.0, 1.5, 2.0, 3.0)  # the scale k of the models below, flattest first


@pytest.fixture(scope="module")
def files():
    return {k: flatness_files(k) for k in SHARPNESS}


@pytest.fixture(scope="module")
def flat_and_sharp(files):
    runs = []
    for k in (SHARPNESS[0], SHARPNESS[-1]):
        run = RunArtifacts(path=Path(f"k{k:g}"), config={}, flatness=files[k])
        run.spectra["exact"] = {"json": exact_spectrum_json(k), "arrays": {}, "dir": "spectrum-exact"}
        runs.append(flatness_scalars(run))
    return runs


def test_every_measure_the_report_correlates_has_the_documented_direction(flat_and_sharp):
    table = documented_directions()
    scalars = flat_and_sharp[0]
    names = set(scalars)
    assert len(names) == 14  # two each: epsilon, hessian, pac-bayes, fisher-rao, local energy, local entropy, exact
    for prefix in table:  # every documented row is exercised
        assert any(n.startswith(prefix) for n in names), prefix
    for name, item in scalars.items():
        assert item["direction"] == documented(name, table), name


def test_the_direction_says_which_way_each_measure_moves_on_a_sharper_minimum(flat_and_sharp):
    """Curvature x3 (the quadratic) or logits x3 (the softmax layer): direction x (sharp - flat) > 0 for all."""
    flat, sharp = flat_and_sharp
    assert set(flat) == set(sharp)
    for name in flat:
        change = sharp[name]["value"] - flat[name]["value"]
        assert flat[name]["direction"] * change > 0, (name, flat[name]["value"], sharp[name]["value"])


def test_the_report_s_reading_cell_predicts_the_sign_of_tau_when_sharper_models_generalize_worse(files, tmp_path):
    """Four models, test error rising with k: every row of the correlation table has |tau| = 1, and its
    "sharper ↑" / "flatter ↑" cell must say which sign (the sentence a reader takes from the table)."""
    from landscape.report import build_report

    for j, k in enumerate(SHARPNESS):
        run = tmp_path / "runs" / f"k{k:g}"
        (run / "spectrum-exact").mkdir(parents=True)
        (run / "config.json").write_text(json.dumps({"model": "toy", "dataset": "toy", "optimizer": "sgd",
                                                     "lr": 0.1 * (j + 1), "epochs": 1, "seed": 0}))
        (run / "metrics.jsonl").write_text(json.dumps({"epoch": 1, "train_error": 0.0, "test_error": 0.1 + 0.1 * j})
                                           + "\n")
        for measure, payload in files[k].items():
            (run / f"flatness-{measure}.json").write_text(json.dumps({"measure": measure, **payload}))
        (run / "spectrum-exact" / "spectrum.json").write_text(json.dumps(exact_spectrum_json(k)))
        np.savez(run / "spectrum-exact" / "spectrum.npz",
                 eigenvalues=torch.linalg.eigvalsh(k * Quadratic.A).numpy())
    html = build_report([str(tmp_path / "runs")], tmp_path / "report").read_text(encoding="utf-8")
    table = html[html.index('id="correlation"'):]
    rows = re.findall(r'<tr><td class="l">([^<]+)</td><td class="l nw">(sharper|flatter) ↑</td><td>4</td>\s*'
                      r'<td>([^<]+)</td>', table)
    assert len(rows) == 14
    for name, reading, tau in rows:
        assert float(tau.replace("−", "-")) == (1.0 if reading == "sharper" else -1.0), name
