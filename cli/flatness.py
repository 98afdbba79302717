"""`landscape flatness`: the command's options mapped onto :class:`landscape.flatness.stage.FlatnessConfig`."""

from __future__ import annotations

import enum
import math
from pathlib import Path

import typer

from landscape.cli.common import (
    POSITIVE,
    Precision,
    _given_on_command_line,
    chunk_option,
    console,
    draws_option,
    force_option,
    format_seconds,
    refuse_unused,
    run_guarded,
    samples_option,
    seed_option,
    stderr_log,
    subset_seed_option,
)
from landscape.errors import LandscapeError


class Measure(str, enum.Enum):
    local_entropy = "local-entropy"
    local_energy = "local-energy"
    sharpness = "sharpness"
    pac_bayes = "pac-bayes"
    fisher_rao = "fisher-rao"


class EntropyMethod(str, enum.Enum):
    sgld = "sgld"
    laplace = "laplace"


class Noise(str, enum.Enum):
    multiplicative = "multiplicative"
    additive = "additive"


class DeviationMetric(str, enum.Enum):
    error = "error"
    loss = "loss"


def parse_float_list(text: str | None, option: str) -> tuple[float, ...]:
    if not text:
        return ()
    try:
        values = tuple(float(part) for part in text.replace(" ", "").split(",") if part)
    except ValueError:
        raise LandscapeError(f"{option} expects comma-separated numbers like 0,0.01,0.1, got '{text}'.") from None
    if not all(math.isfinite(v) and v >= 0 for v in values):
        raise LandscapeError(f"{option} expects finite numbers >= 0, got '{text}'.")
    return values


# CLI option -> the FlatnessConfig field it sets (options not listed apply to every measure)
_FLATNESS_OPTION_FIELDS = {
    "gamma": "gammas", "method": "method", "sigmas": "sigmas", "draws": "samples", "split": "split",
    "eval_splits": "eval_splits", "noise": "noise", "beta": "beta", "spectrum_dir": "spectrum",
    "steps_per_level": "num_steps", "burn_in": "burn_in", "target": "target", "metric": "metric",
    "epsilon": "epsilon", "steps": "steps", "hessian": "hessian", "max_probes": "max_probes",
}
_FLATNESS_FLAGS = {"gamma": "--gamma", "spectrum_dir": "--spectrum", "steps_per_level": "--sgld-steps"}


def flatness(
    ctx: typer.Context,
    checkpoint: Path = typer.Argument(..., metavar="RUN", help="A checkpoint.pt (or the run directory holding it)."),
    measure: Measure = typer.Option(
        Measure.local_energy, "--measure", help="local-entropy | local-energy | sharpness | pac-bayes | fisher-rao."
    ),
    gamma: list[float] = typer.Option(
        [],
        "--gamma",
        callback=POSITIVE,
        metavar="G",
        help="Local entropy: scope gamma (repeatable) [default: 1, 10, 100].",
    ),
    method: EntropyMethod = typer.Option(EntropyMethod.sgld, "--method", help="Local entropy: sgld or laplace."),
    sigmas: str | None = typer.Option(
        None,
        "--sigmas",
        metavar="S1,S2,...",
        help="Local energy: noise levels, comma-separated [default: 0,0.01,0.02,0.05,0.1,0.2,0.3,0.5].",
    ),
    samples: int = samples_option(),
    draws: int = draws_option(20, "noise draws per sigma (local-energy, pac-bayes); SGLD chains (local-entropy)"),
    split: str = typer.Option(
        "train", "--split", metavar="SPLIT", help="Split for local-entropy, sharpness, pac-bayes, fisher-rao."
    ),
    eval_splits: str = typer.Option(
        "train,test", "--eval-splits", metavar="SPLITS", help="Local energy: splits to evaluate."
    ),
    noise: Noise = typer.Option(Noise.multiplicative, "--noise", help="Local energy: w(1+sigma z) or w+sigma z."),
    beta: float | None = typer.Option(
        None, "--beta", callback=POSITIVE, metavar="BETA", help="Local entropy: energy = beta x mean loss [default: N]."
    ),
    spectrum_dir: Path | None = typer.Option(
        None,
        "--spectrum",
        metavar="DIR",
        help="Local entropy, laplace: folder of an exact spectrum on the same samples.",
    ),
    steps_per_level: int = typer.Option(
        400, "--sgld-steps", min=1, metavar="T", help="Local entropy, sgld: measured steps per scope level."
    ),
    burn_in: int = typer.Option(
        150, "--burn-in", min=0, metavar="T", help="Local entropy, sgld: burn-in steps per level."
    ),
    target: float = typer.Option(
        0.1, "--target", callback=POSITIVE, metavar="D", help="PAC-Bayes: allowed deviation of the metric."
    ),
    metric: DeviationMetric = typer.Option(DeviationMetric.error, "--metric", help="PAC-Bayes: error or loss."),
    epsilon: float = typer.Option(
        1e-3, "--epsilon", callback=POSITIVE, metavar="EPS", help="Sharpness: box half-width (relative)."
    ),
    steps: int = typer.Option(20, "--steps", min=1, metavar="T", help="Sharpness: projected ascent steps."),
    hessian: bool = typer.Option(True, "--hessian/--no-hessian", help="Sharpness: also Hessian lambda_max and trace."),
    max_probes: int = typer.Option(
        200,
        "--max-probes",
        min=1,
        metavar="P",
        help="Sharpness: cap on the Hessian trace's probes (the result says if it was hit).",
    ),
    chunk_size: int = chunk_option(),
    seed: int = seed_option(),
    subset_seed: int | None = subset_seed_option(),
    dtype: Precision = typer.Option(Precision.float64, "--dtype", help="Precision of the network evaluations."),
    params: list[str] = typer.Option(
        [], "--param", metavar="NAME", help="Restrict to these parameter tensors / module prefixes (repeatable)."
    ),
    data_dir: Path | None = typer.Option(None, "--data-dir", metavar="DIR", help="Where dataset files live."),
    out: Path | None = typer.Option(None, "--out", metavar="DIR", help="Output folder [default: the run directory]."),
    force: bool = force_option(),
    device: str = typer.Option("auto", "--device", metavar="DEVICE", help="auto (CUDA if present), cpu, cuda, cuda:N."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress output."),
) -> None:
    """Flatness of a checkpoint: writes DIR/flatness-MEASURE.json with estimates, errors, settings, wall time."""
    from landscape.flatness.stage import (
        DEFAULT_GAMMAS,
        DEFAULT_SIGMAS,
        MEASURE_SETTINGS,
        FlatnessConfig,
        compute_flatness,
    )

    def go():
        used = {option for option, field_name in _FLATNESS_OPTION_FIELDS.items()
                if field_name in MEASURE_SETTINGS[measure.value]}
        flags = {option: _FLATNESS_FLAGS.get(option, "--" + option.replace("_", "-"))
                 for option in _FLATNESS_OPTION_FIELDS}
        if measure.value == "pac-bayes" and _given_on_command_line(ctx, "noise"):
            raise LandscapeError("--noise is not used by --measure pac-bayes (it computes both noise models).")
        refuse_unused(ctx, flags, used, f"--measure {measure.value}")
        config = FlatnessConfig(
            checkpoint=str(checkpoint), measure=measure.value, data_samples=samples, split=split,
            eval_splits=tuple(s for s in eval_splits.replace(" ", "").split(",") if s), batch_size=chunk_size,
            seed=seed, subset_seed=subset_seed, dtype=dtype.value, device=device,
            out=None if out is None else str(out), data_dir=None if data_dir is None else str(data_dir),
            params=tuple(params) or None, samples=draws, gammas=tuple(gamma) or DEFAULT_GAMMAS, method=method.value,
            beta=beta, spectrum=None if spectrum_dir is None else str(spectrum_dir), num_steps=steps_per_level,
            burn_in=burn_in, sigmas=parse_float_list(sigmas, "--sigmas") or DEFAULT_SIGMAS, noise=noise.value,
            target=target, metric=metric.value, epsilon=epsilon, steps=steps, hessian=hessian, max_probes=max_probes,
        )
        log = stderr_log(quiet)
        path, result = compute_flatness(config, log=log, progress=not quiet, force=force)
        for line in summarise_flatness(result):
            console.print(line, highlight=False, soft_wrap=True)
        if result.get("replaced"):
            changed = ", ".join(f"{k} {a!r} -> {b!r}" for k, (a, b) in result["replaced"].items())
            console.print(f"replaced the earlier result in {path} ({changed})", highlight=False, soft_wrap=True)
        console.print(f"wrote {path} ({format_seconds(result['wall_s'])})", highlight=False, soft_wrap=True)

    run_guarded(go)


def summarise_flatness(result: dict) -> list[str]:
    """A few human-readable lines for the terminal (the JSON holds everything)."""
    measure = result["measure"]
    lines = []
    if measure == "local-entropy":
        for g, est, err in zip(result["gammas"], result["estimates"], result["stderrs"]):
            value = "does not exist" if est is None or not math.isfinite(est) else f"{est:.6g} +- {err:.2g}"
            lines.append(f"gamma {g:g}: F - (n/2) log(2 pi/gamma) = {value}")
    elif measure == "local-energy":
        for split, metrics in result["delta"].items():
            base = result["base"][split]
            cells = ", ".join(f"{s:g}: {d:.4g}" for s, d in zip(result["sigmas"], metrics["loss"]))
            lines.append(f"{split}: loss {base['loss']:.4g}, error {base['error']:.4g}; delta loss by sigma {cells}")
    else:
        for entry in result["entries"]:
            err = entry["stderr"]
            tail = "" if err is None else f" +- {err:.2g}"
            flag = "invariant" if entry["invariant_to_rescaling"] else "not rescaling-invariant"
            lines.append(f"{entry['measure']}: {entry['value']:.6g}{tail} ({flag})")
            lines.extend(f"warning: {w}" for w in entry.get("warnings") or [])
    lines.extend(f"warning: {w}" for w in result.get("warnings") or [])
    return lines
