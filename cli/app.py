"""The `landscape` command: one thin command per pipeline stage.

Each command maps its typed options onto the stage's frozen config dataclass and calls
the library; nothing here computes anything. Errors a user can cause
(:class:`landscape.errors.LandscapeError`) are printed as one sentence on stderr with
exit status 2, never as a traceback.
"""

from __future__ import annotations

import enum
import math
import re
import sys
from pathlib import Path
from typing import Callable, List, Optional, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from landscape.errors import LandscapeError

app = typer.Typer(
    help="landscape: geometry of neural-network loss landscapes. "
    "Stages: train -> spectrum -> flatness -> report; reproduce runs them all for one of the paper's results.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # help texts are plain text: without this, rich reads "[default: 5]" as a markup tag and drops it
    rich_markup_mode=None,
)

T = TypeVar("T")
err_console = Console(stderr=True)
console = Console()


class ModelName(str, enum.Enum):
    small_mnistfc = "small-mnistfc"
    mnistfc = "mnistfc"
    small_lenet = "small-lenet"
    lenet = "lenet"
    all_cnn_bn = "all-cnn-bn"
    char_lstm = "char-lstm"
    lstm_lm = "lstm-lm"


class OptimizerName(str, enum.Enum):
    sgd = "sgd"
    adam = "adam"
    entropy_sgd = "entropy-sgd"
    entropy_adam = "entropy-adam"
    replicated_sgd = "replicated-sgd"
    sam = "sam"


class NoiseRng(str, enum.Enum):
    auto = "auto"
    torch = "torch"
    mkl = "mkl"


class SamBase(str, enum.Enum):
    sgd = "sgd"
    adam = "adam"


# What to tell the user on Ctrl-C; a stage sets it once it knows (e.g. after the first checkpoint).
interrupt_hint: list[Callable[[], str]] = [lambda: "nothing was written."]


def run_guarded(fn: Callable[[], T]) -> T:
    """Run a stage; a user error becomes one line on stderr and exit status 2."""
    try:
        return fn()
    except LandscapeError as err:
        err_console.print(f"[bold red]error:[/] {escape(str(err))}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    except KeyboardInterrupt:
        err_console.print(f"interrupted: {interrupt_hint[0]()}", highlight=False)
        raise typer.Exit(130) from None


def stderr_log(quiet: bool) -> Callable[[str], None]:
    """Progress lines for a stage: printed verbatim on stderr (no rich markup), or dropped with --quiet."""
    if quiet:
        return lambda message: None
    return lambda message: err_console.print(message, highlight=False, soft_wrap=True, markup=False)


def _parse_value(text: str):
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered in ("none", "null"):
        return None
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def parse_model_args(items: List[str]) -> dict:
    """``["hidden=32", "dropout=0.1"]`` -> ``{"hidden": 32, "dropout": 0.1}``."""
    out = {}
    for item in items:
        if "=" not in item:
            raise LandscapeError(f"--model-arg expects KEY=VALUE, got '{item}'.")
        key, value = item.split("=", 1)
        out[key.strip().replace("-", "_")] = _parse_value(value.strip())
    return out


def parse_int_list(text: Optional[str], option: str) -> tuple[int, ...]:
    if not text:
        return ()
    try:
        return tuple(int(part) for part in text.replace(" ", "").split(",") if part)
    except ValueError:
        raise LandscapeError(f"{option} expects comma-separated integers like 30,60,90, got '{text}'.") from None


def default_run_dir(model: str, optimizer: str, dataset: str, seed: int) -> str:
    dataset_tag = re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(dataset.split(":", 1)[-1]).stem if ":" in dataset else dataset)
    return f"runs/{model}-{optimizer}-{dataset_tag}-s{seed}"


# Options that --resume takes from the run's config.json instead of the command line.
_RESUME_OVERRIDABLE = {"epochs", "device", "out", "resume", "quiet", "data_dir"}


@app.command()
def train(
    ctx: typer.Context,
    model: ModelName = typer.Option(ModelName.small_mnistfc, "--model", "-m", help="Network from the model zoo."),
    dataset: str = typer.Option(
        "digits", "--dataset", "-d", help="digits (embedded), fashion-mnist, mnist, cifar10, ptb, or text:PATH."
    ),
    optimizer: OptimizerName = typer.Option(OptimizerName.sgd, "--optimizer", "-o", help="Training algorithm."),
    epochs: Optional[int] = typer.Option(
        None, "--epochs", "-e", help="Outer epochs: parameter updates x batch size / training-set size. [default: 5]"
    ),
    batch_size: int = typer.Option(128, "--batch-size", "-b", help="Minibatch size."),
    lr: Optional[float] = typer.Option(
        None, "--lr", help="Outer learning rate [default: sgd 0.1, adam 1e-3, entropy-sgd 1.0, entropy-adam 1e-2, replicated-sgd 0.1, sam 0.1]."
    ),
    momentum: float = typer.Option(0.9, help="Momentum of the (outer) SGD update."),
    nesterov: bool = typer.Option(True, "--nesterov/--no-nesterov", help="Nesterov momentum."),
    weight_decay: float = typer.Option(0.0, help="L2 weight decay."),
    lr_milestones: Optional[str] = typer.Option(
        None, help="Outer epochs after which the learning rate is multiplied by --lr-decay, e.g. 30,60,90."
    ),
    lr_decay: float = typer.Option(0.1, help="Learning-rate factor at each milestone."),
    langevin_steps: Optional[int] = typer.Option(
        None, "--L", "-L", help="Entropy-SGD/Adam: SGLD steps per update (Alg. 1) [default: 20 / 5]."
    ),
    sgld_lr: float = typer.Option(0.1, help="Entropy-SGD/Adam: SGLD step size eta'."),
    noise: float = typer.Option(1e-4, help="Entropy-SGD/Adam: thermal noise epsilon."),
    gamma: Optional[float] = typer.Option(None, help="Entropy-SGD/Adam: initial scope gamma_0 [default: 0.03 / 0.01]."),
    scoping: Optional[float] = typer.Option(
        None, help="Entropy-SGD/Adam: gamma_t = gamma_0 (1 + scoping)^t (Sec. 4.3) [default: 1e-3 / 0]."
    ),
    alpha: float = typer.Option(0.75, help="Entropy-SGD/Adam: weight of the newest SGLD sample in mu."),
    sgld_momentum: float = typer.Option(
        0.0, help="Entropy-SGD/Adam: Nesterov momentum on the SGLD data gradient (paper Sec. 5.2 uses it in both "
        "loops; 0 = Alg. 1 as printed)."
    ),
    noise_rng: NoiseRng = typer.Option(
        NoiseRng.auto, help="Where the SGLD/replica noise comes from: auto (MKL's Philox on the CPU when installed, "
        "several times faster than torch's CPU generator; else torch), torch, or mkl."
    ),
    replicas: int = typer.Option(3, help="Replicated-SGD: number of replicas y."),
    coupling: float = typer.Option(1e-3, help="Replicated-SGD: initial coupling g_0."),
    coupling_growth: float = typer.Option(1e-3, help="Replicated-SGD: g_t = g_0 (1 + growth)^t."),
    rho: float = typer.Option(0.05, help="SAM: neighbourhood radius."),
    adaptive: bool = typer.Option(False, "--adaptive/--no-adaptive", help="SAM: adaptive ASAM perturbation."),
    sam_base: SamBase = typer.Option(SamBase.sgd, help="SAM: base optimizer."),
    model_arg: List[str] = typer.Option([], "--model-arg", help="Model constructor argument KEY=VALUE (repeatable)."),
    data_dir: Optional[Path] = typer.Option(None, "--data-dir", help="Where dataset files live (else $LANDSCAPE_DATA)."),
    normalize: bool = typer.Option(True, "--normalize/--no-normalize", help="Standardise inputs with train statistics."),
    preprocess: Optional[str] = typer.Option(None, help="Extra preprocessing, e.g. gcn-zca for cifar10."),
    val_fraction: float = typer.Option(0.1, help="Fraction of the training split held out for validation."),
    seq_len: Optional[int] = typer.Option(None, help="Window length for text / ptb."),
    train_subset: Optional[int] = typer.Option(None, help="Train on the first N samples of the train split only "
                                                          "(validation and test untouched)."),
    vocab: Optional[str] = typer.Option(None, help="text:PATH only: file (its distinct characters) [default] or "
                                                   "ascii96 (the paper's 96 symbols)."),
    seed: int = typer.Option(0, help="Seed of initialisation, data order and SGLD noise."),
    out: Optional[Path] = typer.Option(None, "--out", help="Run directory [default: runs/MODEL-OPTIMIZER-DATASET-sSEED]."),
    device: str = typer.Option("auto", help="auto (CUDA if present), cpu, cuda, cuda:N."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out from its last checkpoint."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing run in --out (and its derived results)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar or per-epoch lines."),
) -> None:
    """Train a network and write RUN_DIR/{config.json, metrics.jsonl, checkpoint.pt}."""
    from landscape.train import TrainConfig
    from landscape.train import train as run_train

    def go():
        if resume:
            if out is None:
                raise LandscapeError("--resume needs --out RUN_DIR naming the run to continue.")
            given = [
                name
                for name in ctx.params
                if name not in _RESUME_OVERRIDABLE
                and _given_on_command_line(ctx, name)
            ]
            if given:
                raise LandscapeError(
                    f"--resume takes its settings from {out / 'config.json'}; only --epochs and --device may change "
                    f"(got --{given[0].replace('_', '-')})."
                )
            config = _config_from_run(out, epochs=epochs, device=device, data_dir=data_dir)
        else:
            config = TrainConfig(
                model=model.value,
                dataset=_absolute_dataset(dataset),
                optimizer=optimizer.value,
                epochs=5 if epochs is None else epochs,
                batch_size=batch_size,
                lr=lr,
                momentum=momentum,
                nesterov=nesterov,
                weight_decay=weight_decay,
                lr_milestones=parse_int_list(lr_milestones, "--lr-milestones"),
                lr_decay=lr_decay,
                L=langevin_steps,
                sgld_lr=sgld_lr,
                noise=noise,
                gamma=gamma,
                scoping=scoping,
                alpha=alpha,
                sgld_momentum=sgld_momentum,
                noise_rng=noise_rng.value,
                replicas=replicas,
                coupling=coupling,
                coupling_growth=coupling_growth,
                rho=rho,
                adaptive=adaptive,
                sam_base=sam_base.value,
                model_kwargs=parse_model_args(model_arg),
                data_dir=None if data_dir is None else str(data_dir.resolve()),
                normalize=normalize,
                preprocess=preprocess,
                val_fraction=val_fraction,
                seq_len=seq_len,
                train_subset=train_subset,
                vocab=vocab,
                seed=seed,
                device=device,
                out=str(out) if out is not None else default_run_dir(model.value, optimizer.value, dataset, seed),
            )
        log = (lambda msg: None) if quiet else (lambda msg: console.print(msg, highlight=False, soft_wrap=True))
        run_dir = Path(config.out)
        interrupt_hint[0] = lambda: (
            f"the last complete checkpoint in {run_dir} is intact; continue with `landscape train --resume --out {run_dir}`."
            if (run_dir / "checkpoint.pt").exists()
            else "stopped before the first checkpoint was written; nothing to resume, run the command again."
        )
        result = run_train(config, resume=resume, overwrite=overwrite, progress=not quiet and sys.stderr.isatty(), log=log)
        final = result.final
        summary = f"test_error {final['test_error']:.4f}"
        if "test_perplexity" in final:
            summary = f"test_perplexity {final['test_perplexity']:.3f}"
        console.print(
            f"wrote {result.run_dir}/{{config.json, metrics.jsonl, checkpoint.pt}}: epoch {final['epoch']}, "
            f"{final['effective_epochs']:.1f} effective epochs, {summary}",
            highlight=False,
            soft_wrap=True,
        )

    run_guarded(go)


class Method(str, enum.Enum):
    exact = "exact"
    lanczos = "lanczos"
    slq = "slq"
    trace = "trace"
    fisher_diag = "fisher-diag"


class Operator(str, enum.Enum):
    hessian = "hessian"
    ggn = "ggn"
    fisher = "fisher"


class Which(str, enum.Enum):
    LA = "LA"
    SA = "SA"
    both = "both"
    LM = "LM"


class FisherKind(str, enum.Enum):
    empirical = "empirical"
    mc = "mc"
    exact = "exact"
    adam = "adam"


class Precision(str, enum.Enum):
    float32 = "float32"
    float64 = "float64"


class DenseMethod(str, enum.Enum):
    auto = "auto"
    hvp = "hvp"
    ggn = "ggn"


class Eigensolver(str, enum.Enum):
    auto = "auto"
    mkl = "mkl"
    scipy = "scipy"
    torch = "torch"


class Mode(str, enum.Enum):
    eval = "eval"
    train = "train"


@app.command()
def spectrum(
    checkpoint: Path = typer.Argument(..., help="A checkpoint.pt (or the run directory holding it)."),
    method: Method = typer.Option(Method.lanczos, "--method", help="exact | lanczos | slq | trace | fisher-diag."),
    operator: Operator = typer.Option(Operator.hessian, "--operator", help="Curvature matrix: hessian, ggn or fisher."),
    samples: int = typer.Option(1000, "--samples", "-n", help="Number of samples N (the loss is their mean)."),
    split: str = typer.Option("train", "--split", help="train, val or test."),
    batch_size: int = typer.Option(256, "--batch-size", "-b", help="Samples per forward pass (memory, not the result)."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Random subset and probe seed [default: first N in order]."),
    mode: Mode = typer.Option(Mode.eval, "--mode", help="Model mode while differentiating."),
    dtype: Precision = typer.Option(Precision.float64, "--dtype", help="Precision of products and of the eigensolve."),
    k: int = typer.Option(20, "--k", help="Lanczos: number of eigenvalues (per end with --which both)."),
    which: Which = typer.Option(Which.LA, "--which", help="Lanczos: LA largest, SA smallest, both, LM magnitude."),
    tol: float = typer.Option(1e-8, "--tol", help="Lanczos: relative eigenvalue error (Kato-Temple bound) to stop at."),
    num_probes: int = typer.Option(10, "--probes", help="SLQ: number of random probes."),
    num_iters: int = typer.Option(90, "--iters", help="SLQ: Lanczos steps per probe."),
    trace_rel: float = typer.Option(0.01, "--trace-rel", help="Trace: stop at this relative standard error."),
    fisher: FisherKind = typer.Option(FisherKind.empirical, "--fisher", help="fisher-diag: empirical, mc, exact (true Fisher = diag GGN) or adam; fisher operator: empirical or mc."),
    mc_samples: int = typer.Option(1, "--mc-samples", help="MC Fisher: label draws per input."),
    storage: Precision = typer.Option(Precision.float64, "--storage", help="Exact: precision of the stored matrix."),
    block_size: int = typer.Option(64, "--block-size", help="Exact: columns per block product."),
    keep_matrix: bool = typer.Option(False, "--keep-matrix", help="Exact: keep hessian.bin after the solve (the solve never writes to it)."),
    dense_method: DenseMethod = typer.Option(
        DenseMethod.auto, "--dense-method", help="Exact: ggn (GGN block + HVP columns, exact for ReLU nets), hvp, or auto."
    ),
    dense_workspace: str = typer.Option(
        "auto", "--dense-workspace", help="Exact: memory the build's temporaries may take beside the matrix: auto "
        "(max(16 MiB, matrix/12)), none (fixed caps: faster, more memory) or a size such as 512M or 2G."),
    eigensolver: Eigensolver = typer.Option(Eigensolver.auto, "--eigensolver", help="Exact: mkl, scipy, torch (torch.linalg.eigvalsh on --device), or auto (the GPU where the solve fits, else MKL if installed, else scipy)."),
    build_only: bool = typer.Option(False, "--build-only", help="Exact: build the dense matrix (resumable) and stop before the eigensolve; the same command without it then only solves."),
    params: List[str] = typer.Option([], "--param", help="Restrict to these parameter tensors / module prefixes."),
    data_dir: Optional[Path] = typer.Option(None, "--data-dir", help="Where dataset files live."),
    out: Optional[Path] = typer.Option(None, "--out", help="Output folder [default: RUN_DIR/spectrum-METHOD]."),
    device: str = typer.Option("auto", "--device", help="auto (CUDA if present), cpu, cuda, cuda:N."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress (a bar on a terminal, a line every 30 s otherwise)."),
) -> None:
    """Curvature spectrum of a checkpoint: writes DIR/spectrum.npz and DIR/spectrum.json."""
    from landscape.spectrum import SpectrumConfig, compute_spectrum

    def go():
        config = SpectrumConfig(
            checkpoint=str(checkpoint), method=method.value, operator=operator.value, samples=samples, split=split,
            batch_size=batch_size, seed=seed, mode=mode.value, dtype=dtype.value, device=device,
            out=None if out is None else str(out), data_dir=None if data_dir is None else str(data_dir),
            params=tuple(params) or None, k=k, which=which.value, tol=tol, num_probes=num_probes,
            num_iters=num_iters, trace_rel=trace_rel, fisher=fisher.value, mc_samples=mc_samples,
            storage_dtype=storage.value, block_size=block_size, keep_matrix=keep_matrix,
            dense_method=dense_method.value, dense_workspace=dense_workspace, eigensolver=eigensolver.value,
            build_only=build_only,
        )
        target = config.output_dir()
        interrupt_hint[0] = lambda: (
            f"the finished blocks of the dense matrix in {target} are kept; run the same command again to resume."
            if method.value == "exact" and (target / "hessian.json").exists()
            else "no spectrum was written."
        )
        out_dir, summary = compute_spectrum(config, progress=not quiet)
        if summary.get("built"):
            console.print(f"built the dense matrix in {out_dir} ({summary['n_params']} parameters, "
                          f"{summary['dense_build_s']:.0f} s of building, method {summary['dense_method']}); run the "
                          "same command without --build-only to solve it.", highlight=False, soft_wrap=True)
            return
        parts = [f"n_params {summary['n_params']}"]
        for key in ("lambda_max", "lambda_min", "trace"):
            if key in summary:
                parts.append(f"{key} {summary[key]:.6g}")
        if "fraction_abs_below" in summary and method.value == "exact":
            parts.append(f"|lambda|<1e-4: {summary['fraction_abs_below']['1e-4']:.1%}")
        parts.append(f"{summary['hvp_count']} products, {summary['wall_s']:.1f} s")
        console.print(f"wrote {out_dir}/spectrum.{{npz,json}}: " + ", ".join(parts), highlight=False, soft_wrap=True)

    run_guarded(go)


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


def parse_float_list(text: Optional[str], option: str) -> tuple[float, ...]:
    if not text:
        return ()
    try:
        return tuple(float(part) for part in text.replace(" ", "").split(",") if part)
    except ValueError:
        raise LandscapeError(f"{option} expects comma-separated numbers like 0,0.01,0.1, got '{text}'.") from None


# CLI option -> the FlatnessConfig field it sets (options not listed apply to every measure)
_FLATNESS_OPTION_FIELDS = {
    "gamma": "gammas", "method": "method", "sigmas": "sigmas", "samples": "samples", "split": "split",
    "eval_splits": "eval_splits", "noise": "noise", "beta": "beta", "spectrum_dir": "spectrum",
    "steps_per_level": "num_steps", "burn_in": "burn_in", "target": "target", "metric": "metric",
    "epsilon": "epsilon", "steps": "steps", "hessian": "hessian",
}


@app.command()
def flatness(
    ctx: typer.Context,
    checkpoint: Path = typer.Argument(..., help="A checkpoint.pt (or the run directory holding it)."),
    measure: Measure = typer.Option(
        Measure.local_energy, "--measure", help="local-entropy | local-energy | sharpness | pac-bayes | fisher-rao."
    ),
    gamma: List[float] = typer.Option([], "--gamma", help="Local entropy: scope gamma (repeatable) [default: 1, 10, 100]."),
    method: EntropyMethod = typer.Option(EntropyMethod.sgld, "--method", help="Local entropy: sgld or laplace."),
    sigmas: Optional[str] = typer.Option(
        None, "--sigmas", help="Local energy: noise levels, comma-separated [default: 0,0.01,0.02,0.05,0.1,0.2,0.3,0.5]."
    ),
    samples: int = typer.Option(
        20, "--samples", "-M", help="Monte-Carlo noise draws per sigma (local-energy, pac-bayes); SGLD chains."
    ),
    data_samples: int = typer.Option(
        1000, "--data-samples", "-n", help="Samples N per split (first N in order); local-energy may use more."
    ),
    split: str = typer.Option("train", "--split", help="Split for local-entropy, sharpness, pac-bayes, fisher-rao."),
    eval_splits: str = typer.Option("train,test", "--eval-splits", help="Local energy: splits to evaluate."),
    noise: Noise = typer.Option(Noise.multiplicative, "--noise", help="Local energy: w(1+sigma z) or w+sigma z."),
    beta: Optional[float] = typer.Option(None, "--beta", help="Local entropy: energy = beta x mean loss [default: N]."),
    spectrum_dir: Optional[Path] = typer.Option(
        None, "--spectrum", help="Local entropy, laplace: folder of an exact spectrum on the same samples."
    ),
    steps_per_level: int = typer.Option(400, "--sgld-steps", help="Local entropy, sgld: measured steps per scope level."),
    burn_in: int = typer.Option(150, "--burn-in", help="Local entropy, sgld: burn-in steps per level."),
    target: float = typer.Option(0.1, "--target", help="PAC-Bayes: allowed deviation of the metric."),
    metric: DeviationMetric = typer.Option(DeviationMetric.error, "--metric", help="PAC-Bayes: error or loss."),
    epsilon: float = typer.Option(1e-3, "--epsilon", help="Sharpness: box half-width (relative)."),
    steps: int = typer.Option(20, "--steps", help="Sharpness: projected ascent steps."),
    hessian: bool = typer.Option(True, "--hessian/--no-hessian", help="Sharpness: also Hessian lambda_max and trace."),
    batch_size: int = typer.Option(1024, "--batch-size", "-b", help="Samples per forward pass (memory, not the result)."),
    seed: int = typer.Option(0, "--seed", help="Seed of noise draws, chains and probes."),
    subset_seed: Optional[int] = typer.Option(None, "--subset-seed", help="Draw the N samples at random with this seed."),
    dtype: Precision = typer.Option(Precision.float64, "--dtype", help="Precision of the network evaluations."),
    params: List[str] = typer.Option([], "--param", help="Restrict to these parameter tensors / module prefixes."),
    data_dir: Optional[Path] = typer.Option(None, "--data-dir", help="Where dataset files live."),
    out: Optional[Path] = typer.Option(None, "--out", help="Output folder [default: the run directory]."),
    device: str = typer.Option("auto", "--device", help="auto (CUDA if present), cpu, cuda, cuda:N."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress output."),
) -> None:
    """Flatness of a checkpoint: writes DIR/flatness-MEASURE.json with estimates, errors, settings, wall time."""
    from landscape.flatness.stage import DEFAULT_GAMMAS, DEFAULT_SIGMAS, MEASURE_SETTINGS, FlatnessConfig, compute_flatness

    def go():
        used = MEASURE_SETTINGS[measure.value]
        for option, field_name in _FLATNESS_OPTION_FIELDS.items():
            if field_name not in used and _given_on_command_line(ctx, option):
                flag = "--" + {"gamma": "gamma", "spectrum_dir": "spectrum", "steps_per_level": "sgld-steps"}.get(
                    option, option.replace("_", "-"))
                hint = " (it computes both noise models)" if option == "noise" and measure.value == "pac-bayes" else ""
                raise LandscapeError(f"{flag} is not used by --measure {measure.value}{hint}; its options are "
                                     f"{', '.join(used)} plus the common ones.")
        config = FlatnessConfig(
            checkpoint=str(checkpoint), measure=measure.value, data_samples=data_samples, split=split,
            eval_splits=tuple(s for s in eval_splits.replace(" ", "").split(",") if s), batch_size=batch_size,
            seed=seed, subset_seed=subset_seed, dtype=dtype.value, device=device,
            out=None if out is None else str(out), data_dir=None if data_dir is None else str(data_dir),
            params=tuple(params) or None, samples=samples, gammas=tuple(gamma) or DEFAULT_GAMMAS, method=method.value,
            beta=beta, spectrum=None if spectrum_dir is None else str(spectrum_dir), num_steps=steps_per_level,
            burn_in=burn_in, sigmas=parse_float_list(sigmas, "--sigmas") or DEFAULT_SIGMAS, noise=noise.value,
            target=target, metric=metric.value, epsilon=epsilon, steps=steps, hessian=hessian,
        )
        log = stderr_log(quiet)
        path, result = compute_flatness(config, log=log)
        for line in summarise_flatness(result):
            console.print(line, highlight=False, soft_wrap=True)
        console.print(f"wrote {path} ({result['wall_s']:.1f} s)", highlight=False, soft_wrap=True)

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


def _given_on_command_line(ctx: typer.Context, name: str) -> bool:
    # ParameterSource lives in click or in typer's vendored copy: compare by name
    source = ctx.get_parameter_source(name)
    return source is not None and source.name not in ("DEFAULT", "DEFAULT_MAP")


def _absolute_dataset(name: str) -> str:
    """``text:PATH`` with PATH made absolute, so --resume works from any directory."""
    if name.startswith("text:"):
        return "text:" + str(Path(name[5:]).expanduser().resolve())
    return name


def _config_from_run(run_dir: Path, *, epochs: Optional[int], device: str, data_dir: Optional[Path] = None):
    import dataclasses
    import json

    from landscape.train import TrainConfig

    path = run_dir / "config.json"
    if not path.exists():
        raise LandscapeError(f"Cannot resume: '{path}' does not exist; start the run without --resume.")
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        raise LandscapeError(f"Cannot resume: '{path}' is not valid JSON.") from None
    if not isinstance(saved, dict):
        raise LandscapeError(f"Cannot resume: '{path}' does not hold a training configuration.")
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    config = TrainConfig.from_dict({k: v for k, v in saved.items() if k in names})
    changes = {"device": device, "out": str(run_dir)}
    if data_dir is not None:
        changes["data_dir"] = str(data_dir.resolve())
    if epochs is not None:
        changes["epochs"] = epochs
    return dataclasses.replace(config, **changes)


@app.command()
def report(
    run_dirs: List[Path] = typer.Argument(..., help="Run directories (or folders holding them, or Fig. 2 folders).",
                                          show_default=False),
    out: Path = typer.Option(Path("reports/report"), "--out", help="Folder for index.html."),
    title: Optional[str] = typer.Option(None, "--title", help="Page title [default: the name of --out]."),
    max_train_error: float = typer.Option(0.5, "--max-train-error", help="Correlation study: leave out models "
                                          "whose final training error is above this (they did not train)."),
    archive: bool = typer.Option(False, "--archive", help="Also copy the small files the page is built from "
                                 "(configs, metrics, spectra, flatness; no checkpoints or matrices) to OUT/runs, so "
                                 "`landscape report OUT/runs --out OUT` can re-render it without the run directories."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress lines."),
) -> None:
    """One self-contained HTML page (figures inlined, no external URL) from what the run directories hold."""
    from landscape.report import build_report

    def go():
        log = stderr_log(quiet)
        path = build_report([str(p) for p in run_dirs], out, title=title, log=log, max_train_error=max_train_error,
                            archive=archive)
        console.print(f"wrote {path}", highlight=False, soft_wrap=True)

    run_guarded(go)


class Target(str, enum.Enum):
    fig1 = "fig1"
    fig2 = "fig2"
    fig3 = "fig3"
    table1 = "table1"
    correlation = "correlation"
    all = "all"


class Scale(str, enum.Enum):
    quick = "quick"
    full = "full"


@app.command()
def reproduce(
    target: Target = typer.Argument(..., help="Which result: fig1, fig2, fig3, table1, correlation or all."),
    scale: Scale = typer.Option(Scale.quick, "--scale", help="quick: minutes on 2 CPU cores on the embedded digits; "
                                                             "full: the paper's settings as far as this machine allows."),
    out: Optional[Path] = typer.Option(None, "--out", help="Folder for index.html [default: reports/SCALE]."),
    runs: Optional[Path] = typer.Option(None, "--runs", help="Where the runs go [default: runs/<name of --out>]."),
    dataset: Optional[str] = typer.Option(None, "--dataset", help="Override the scale's dataset."),
    data_dir: Optional[Path] = typer.Option(None, "--data-dir", help="Where dataset files live."),
    text: Optional[Path] = typer.Option(None, "--text", help="UTF-8 text for char-lstm (full scale, Fig. 3b)."),
    device: str = typer.Option("auto", "--device", help="auto (CUDA if present), cpu, cuda, cuda:N."),
    dry_run: bool = typer.Option(False, "--dry-run", help="List the steps (done / to do) and stop."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress lines."),
) -> None:
    """Train -> spectrum -> flatness -> report for one of the paper's results; resumable, finished steps skipped."""
    from landscape.reproduce import ReproduceConfig, reproduce as run_reproduce

    def go():
        config = ReproduceConfig(target=target.value, scale=scale.value, out=None if out is None else str(out),
                                 runs=None if runs is None else str(runs), dataset=dataset,
                                 data_dir=None if data_dir is None else str(data_dir), device=device,
                                 text=None if text is None else str(text))
        log = stderr_log(quiet)
        interrupt_hint[0] = lambda: "finished steps are kept; run the same command again to continue."
        path = run_reproduce(config, log=log, dry_run=dry_run, progress=not quiet)
        if path is not None:
            console.print(f"wrote {path}", highlight=False, soft_wrap=True)

    run_guarded(go)


@app.callback()
def _root() -> None:
    """landscape: train with flatness-seeking optimizers, measure the minima they reach."""


def main() -> None:
    app()
