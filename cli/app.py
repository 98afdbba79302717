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
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

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
    context_settings={"max_content_width": 80, "help_option_names": ["-h", "--help"]},
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


def format_seconds(seconds: float) -> str:
    """A duration as a person reads it: 4.2 s, 3 min 05 s, 1 h 10 min."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, rest = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes} min {rest:02d} s"
    return f"{minutes // 60} h {minutes % 60:02d} min"


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


def parse_model_args(items: list[str]) -> dict:
    """``["hidden=32", "dropout=0.1"]`` -> ``{"hidden": 32, "dropout": 0.1}``."""
    out = {}
    for item in items:
        if "=" not in item:
            raise LandscapeError(f"--model-arg expects KEY=VALUE, got '{item}'.")
        key, value = item.split("=", 1)
        out[key.strip().replace("-", "_")] = _parse_value(value.strip())
    return out


def parse_int_list(text: str | None, option: str) -> tuple[int, ...]:
    if not text:
        return ()
    try:
        return tuple(int(part) for part in text.replace(" ", "").split(",") if part)
    except ValueError:
        raise LandscapeError(f"{option} expects comma-separated integers like 30,60,90, got '{text}'.") from None


def _bounded(low: float | None = None, high: float | None = None, *, low_open: bool = False,
             high_open: bool = False) -> Callable:
    """A typer callback refusing NaN, infinities and values outside [low, high] (open ends as asked)."""
    def describe() -> str:
        parts = []
        if low is not None:
            parts.append(f"{'>' if low_open else '>='} {low:g}")
        if high is not None:
            parts.append(f"{'<' if high_open else '<='} {high:g}")
        return "a finite number" + (" " + " and ".join(parts) if parts else "")

    def check(value):
        values = value if isinstance(value, (list, tuple)) else [value]
        for v in values:
            if v is None:
                continue
            bad = (not math.isfinite(v) or (low is not None and (v <= low if low_open else v < low))
                   or (high is not None and (v >= high if high_open else v > high)))
            if bad:
                raise typer.BadParameter(f"must be {describe()}, got {v:g}.")
        return value

    return check


POSITIVE = _bounded(0.0, low_open=True)
NON_NEGATIVE = _bounded(0.0)
FRACTION = _bounded(0.0, 1.0, low_open=True, high_open=True)


def refuse_unused(ctx: typer.Context, specific: dict[str, str], used: set[str], what: str) -> None:
    """One sentence for an option given on the command line that ``what`` does not use.

    ``specific`` maps each context-dependent parameter name to its flag; ``used`` names the
    ones that apply here.
    """
    for name, flag in specific.items():
        if name not in used and _given_on_command_line(ctx, name):
            useful = sorted(specific[n] for n in used if n in specific)
            tail = f"; its own options are {', '.join(useful)}" if useful else ""
            raise LandscapeError(f"{flag} is not used by {what}{tail}.")


def default_run_dir(model: str, optimizer: str, dataset: str, seed: int) -> str:
    dataset_tag = re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(dataset.split(":", 1)[-1]).stem if ":" in dataset else dataset)
    return f"runs/{model}-{optimizer}-{dataset_tag}-s{seed}"


# Options of `train` that only some optimizers or datasets use (parameter name -> flag).
TRAIN_SPECIFIC = {
    "momentum": "--momentum", "nesterov": "--nesterov/--no-nesterov", "langevin_steps": "--langevin-steps",
    "sgld_lr": "--sgld-lr", "noise": "--noise", "gamma": "--gamma", "scoping": "--scoping", "alpha": "--alpha",
    "sgld_momentum": "--sgld-momentum", "noise_rng": "--noise-rng", "replicas": "--replicas",
    "coupling": "--coupling", "coupling_growth": "--coupling-growth", "rho": "--rho", "adaptive": "--adaptive",
    "sam_base": "--sam-base", "seq_len": "--seq-len", "vocab": "--vocab",
}
_ENTROPY_OPTIONS = {"langevin_steps", "sgld_lr", "noise", "gamma", "scoping", "alpha", "sgld_momentum", "noise_rng"}


def used_train_options(optimizer: str, sam_base: str, dataset: str) -> set[str]:
    """The context-dependent `train` options that ``optimizer`` on ``dataset`` reads."""
    used = {
        "sgd": {"momentum", "nesterov"},
        "adam": set(),
        "entropy-sgd": {"momentum", "nesterov"} | _ENTROPY_OPTIONS,
        "entropy-adam": set(_ENTROPY_OPTIONS),
        "replicated-sgd": {"momentum", "nesterov", "replicas", "coupling", "coupling_growth", "noise_rng"},
        "sam": {"rho", "adaptive", "sam_base"} | ({"momentum", "nesterov"} if sam_base == "sgd" else set()),
    }[optimizer]
    if dataset.startswith("text:") or dataset == "ptb":
        used.add("seq_len")
    if dataset.startswith("text:"):
        used.add("vocab")
    return used


# Options that --resume takes from the run's config.json instead of the command line.
_RESUME_OVERRIDABLE = {"epochs", "device", "out", "resume", "quiet", "data_dir"}


@app.command(short_help="Train a network; writes a run directory (config, metrics, checkpoint).")
def train(
    ctx: typer.Context,
    model: ModelName = typer.Option(
        ModelName.small_mnistfc,
        "--model",
        "-m",
        metavar="MODEL",
        help="Network from the model zoo: " + ", ".join(m.value for m in ModelName) + ".",
    ),
    dataset: str = typer.Option(
        "digits",
        "--dataset",
        "-d",
        metavar="NAME",
        help="digits (embedded), fashion-mnist, mnist, cifar10, ptb, or text:PATH.",
    ),
    optimizer: OptimizerName = typer.Option(OptimizerName.sgd, "--optimizer", "-o", help="Training algorithm."),
    epochs: int | None = typer.Option(
        None,
        "--epochs",
        "-e",
        min=1,
        metavar="N",
        help="Outer epochs: parameter updates x batch size / training-set size. [default: 5]",
    ),
    batch_size: int = typer.Option(
        128, "--batch-size", "-b", min=1, metavar="B", help="Minibatch size of the training updates."
    ),
    lr: float | None = typer.Option(
        None,
        "--lr",
        callback=POSITIVE,
        metavar="LR",
        help="Outer learning rate [default: sgd 0.1, adam 1e-3, entropy-sgd 1.0, entropy-adam 1e-2, "
        "replicated-sgd 0.1, sam 0.1].",
    ),
    momentum: float = typer.Option(
        0.9, callback=_bounded(0.0, 1.0, high_open=True), metavar="M", help="Momentum of the (outer) SGD update."
    ),
    nesterov: bool = typer.Option(True, "--nesterov/--no-nesterov", help="Nesterov momentum."),
    weight_decay: float = typer.Option(0.0, callback=NON_NEGATIVE, metavar="WD", help="L2 weight decay."),
    lr_milestones: str | None = typer.Option(
        None,
        metavar="E1,E2,...",
        help="Outer epochs after which the learning rate is multiplied by --lr-decay, e.g. 30,60,90.",
    ),
    lr_decay: float = typer.Option(0.1, callback=POSITIVE, metavar="F", help="Learning-rate factor at each milestone."),
    langevin_steps: int | None = typer.Option(
        None,
        "--langevin-steps",
        "-L",
        min=1,
        metavar="L",
        help="Entropy-SGD/Adam: SGLD steps per update (Alg. 1) [default: 20 / 5].",
    ),
    sgld_lr: float = typer.Option(0.1, callback=POSITIVE, metavar="LR", help="Entropy-SGD/Adam: SGLD step size eta'."),
    noise: float = typer.Option(
        1e-4, callback=NON_NEGATIVE, metavar="EPS", help="Entropy-SGD/Adam: thermal noise epsilon."
    ),
    gamma: float | None = typer.Option(
        None, callback=POSITIVE, metavar="G", help="Entropy-SGD/Adam: initial scope gamma_0 [default: 0.03 / 0.01]."
    ),
    scoping: float | None = typer.Option(
        None,
        callback=NON_NEGATIVE,
        metavar="S",
        help="Entropy-SGD/Adam: gamma_t = gamma_0 (1 + scoping)^t (Sec. 4.3) [default: 1e-3 / 0].",
    ),
    alpha: float = typer.Option(
        0.75, callback=_bounded(0.0, 1.0), metavar="A", help="Entropy-SGD/Adam: weight of the newest SGLD sample in mu."
    ),
    sgld_momentum: float = typer.Option(
        0.0,
        callback=_bounded(0.0, 1.0, high_open=True),
        metavar="M",
        help="Entropy-SGD/Adam: Nesterov momentum on the SGLD data gradient (paper Sec. 5.2 uses it in both "
        "loops; 0 = Alg. 1 as printed).",
    ),
    noise_rng: NoiseRng = typer.Option(
        NoiseRng.auto,
        help="Where the SGLD/replica noise comes from: auto (MKL's Philox on the CPU when installed, "
        "several times faster than torch's CPU generator; else torch), torch, or mkl.",
    ),
    replicas: int = typer.Option(3, min=1, metavar="Y", help="Replicated-SGD: number of replicas y."),
    coupling: float = typer.Option(
        1e-3, callback=NON_NEGATIVE, metavar="G", help="Replicated-SGD: initial coupling g_0."
    ),
    coupling_growth: float = typer.Option(
        1e-3, callback=NON_NEGATIVE, metavar="R", help="Replicated-SGD: g_t = g_0 (1 + growth)^t."
    ),
    rho: float = typer.Option(0.05, callback=POSITIVE, metavar="RHO", help="SAM: neighbourhood radius."),
    adaptive: bool = typer.Option(False, "--adaptive/--no-adaptive", help="SAM: adaptive ASAM perturbation."),
    sam_base: SamBase = typer.Option(SamBase.sgd, help="SAM: base optimizer."),
    model_arg: list[str] = typer.Option(
        [], "--model-arg", metavar="KEY=VALUE", help="Model constructor argument (repeatable)."
    ),
    data_dir: Path | None = typer.Option(
        None, "--data-dir", metavar="DIR", help="Where dataset files live (else $LANDSCAPE_DATA)."
    ),
    normalize: bool = typer.Option(
        True, "--normalize/--no-normalize", help="Standardise inputs with train statistics."
    ),
    preprocess: str | None = typer.Option(None, metavar="NAME", help="Extra preprocessing, e.g. gcn-zca for cifar10."),
    val_fraction: float = typer.Option(
        0.1,
        callback=_bounded(0.0, 1.0, high_open=True),
        metavar="F",
        help="Fraction of the training split held out for validation.",
    ),
    seq_len: int | None = typer.Option(None, min=1, metavar="T", help="Window length for text / ptb."),
    train_subset: int | None = typer.Option(
        None,
        min=1,
        metavar="N",
        help="Train on the first N samples of the train split only (validation and test untouched).",
    ),
    vocab: str | None = typer.Option(
        None,
        metavar="file|ascii96",
        help="text:PATH only: file (its distinct characters) [default] or ascii96 (the paper's 96 symbols).",
    ),
    seed: int = typer.Option(0, metavar="S", help="Seed of initialisation, data order and SGLD noise."),
    out: Path | None = typer.Option(
        None, "--out", metavar="DIR", help="Run directory [default: runs/MODEL-OPTIMIZER-DATASET-sSEED]."
    ),
    device: str = typer.Option("auto", metavar="DEVICE", help="auto (CUDA if present), cpu, cuda, cuda:N."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out from its last checkpoint."),
    overwrite: bool = typer.Option(
        False, "--overwrite", help="Replace an existing run in --out (and its derived results)."
    ),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar or per-epoch lines."),
) -> None:
    """Train a network and write RUN_DIR/{config.json, metrics.jsonl, checkpoint.pt}."""
    from landscape.train import TrainConfig
    from landscape.train import train as run_train

    def go():
        if not resume:
            refuse_unused(ctx, TRAIN_SPECIFIC, used_train_options(optimizer.value, sam_base.value, dataset),
                          f"--optimizer {optimizer.value} on --dataset {dataset}")
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
            f"the last complete checkpoint in {run_dir} is intact; continue with `landscape train --resume --out "
            f"{run_dir}`."
            if (run_dir / "checkpoint.pt").exists()
            else "stopped before the first checkpoint was written; nothing to resume, run the command again."
        )
        result = run_train(
            config, resume=resume, overwrite=overwrite, progress=not quiet and sys.stderr.isatty(), log=log
        )
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


# Options every curvature / flatness command shares, with one meaning and one default everywhere.
def samples_option(default: int = 1000):
    return typer.Option(default, "--samples", "-n", min=1, metavar="N",
                        help="Data samples N: the loss is their mean (first N of --split in order, or a random "
                             "subset with --subset-seed).")


def subset_seed_option():
    return typer.Option(None, "--subset-seed", metavar="S",
                        help="Draw the N samples at random with this seed [default: the first N in order].")


def seed_option():
    return typer.Option(
        0, "--seed", metavar="S", help="Seed of the random draws: probes, start vectors, noise, chains."
    )


def chunk_option():
    return typer.Option(256, "--chunk-size", min=1, metavar="B",
                        help="Samples per forward pass: memory and speed only, the result is the mean over all N.")


def draws_option(default: int, what: str):
    return typer.Option(default, "--draws", min=1, metavar="M", help=f"Monte-Carlo draws: {what}.")


def force_option():
    return typer.Option(False, "--force", help="Replace a result in the output folder that was computed with "
                                               "other settings (without it such a rerun is refused).")


# Options of `spectrum` that only some methods use (parameter name -> flag), and which method uses which.
SPECTRUM_SPECIFIC = {
    "operator": "--operator", "k": "--k", "which": "--which", "tol": "--tol", "max_iters": "--max-iters",
    "num_probes": "--probes", "num_iters": "--iters", "trace_rel": "--trace-rel", "max_probes": "--max-probes",
    "fisher": "--fisher", "draws": "--draws", "storage": "--storage", "block_size": "--block-size",
    "keep_matrix": "--keep-matrix", "dense_method": "--dense-method", "dense_workspace": "--dense-workspace",
    "eigensolver": "--eigensolver", "build_only": "--build-only",
}
_FISHER_OPTIONS = {"fisher", "draws"}  # used with --method fisher-diag or --operator fisher only
SPECTRUM_USES = {
    "exact": {"operator", "storage", "block_size", "keep_matrix", "dense_method", "dense_workspace", "eigensolver",
              "build_only"},
    "lanczos": {"operator", "k", "which", "tol", "max_iters"},
    "slq": {"operator", "num_probes", "num_iters"},
    "trace": {"operator", "trace_rel", "max_probes"},
    "fisher-diag": set(),
}


@app.command(short_help="Curvature spectrum of a checkpoint (exact, Lanczos, SLQ, trace, Fisher diagonal).")
def spectrum(
    ctx: typer.Context,
    checkpoint: Path = typer.Argument(..., metavar="RUN", help="A checkpoint.pt (or the run directory holding it)."),
    method: Method = typer.Option(Method.lanczos, "--method", help="exact | lanczos | slq | trace | fisher-diag."),
    operator: Operator = typer.Option(Operator.hessian, "--operator", help="Curvature matrix: hessian, ggn or fisher."),
    samples: int = samples_option(),
    split: str = typer.Option("train", "--split", metavar="SPLIT", help="train, val or test."),
    chunk_size: int = chunk_option(),
    seed: int = seed_option(),
    subset_seed: int | None = subset_seed_option(),
    mode: Mode = typer.Option(Mode.eval, "--mode", help="Model mode while differentiating."),
    dtype: Precision = typer.Option(Precision.float64, "--dtype", help="Precision of products and of the eigensolve."),
    k: int = typer.Option(20, "--k", min=1, metavar="K",
                          help="Lanczos: number of eigenvalues (per end with --which both)."),
    which: Which = typer.Option(Which.LA, "--which", help="Lanczos: LA largest, SA smallest, both, LM magnitude."),
    tol: float = typer.Option(1e-8, "--tol", callback=FRACTION, metavar="TOL",
                              help="Lanczos: relative eigenvalue error (Kato-Temple bound) to stop at."),
    max_iters: int | None = typer.Option(None, "--max-iters", min=1, metavar="M",
                                            help="Lanczos: cap on the steps [default: max(20 k + 50, 100)]; the "
                                                 "result says whether every Ritz value converged before it."),
    num_probes: int = typer.Option(10, "--probes", min=1, metavar="P", help="SLQ: number of random probes."),
    num_iters: int = typer.Option(90, "--iters", min=1, metavar="M", help="SLQ: Lanczos steps per probe."),
    trace_rel: float = typer.Option(0.01, "--trace-rel", callback=FRACTION, metavar="R",
                                    help="Trace: stop at this relative standard error."),
    max_probes: int = typer.Option(1000, "--max-probes", min=1, metavar="P",
                                   help="Trace: cap on the probes; the result says whether --trace-rel was met."),
    fisher: FisherKind = typer.Option(FisherKind.empirical, "--fisher",
                                      help="fisher-diag: empirical, mc, exact (true Fisher = diag GGN) or adam; "
                                           "fisher operator: empirical or mc."),
    draws: int = draws_option(1, "labels drawn per input for the MC Fisher (--fisher mc)"),
    storage: Precision = typer.Option(Precision.float64, "--storage", help="Exact: precision of the stored matrix."),
    block_size: int = typer.Option(64, "--block-size", min=1, metavar="B", help="Exact: columns per block product."),
    keep_matrix: bool = typer.Option(False, "--keep-matrix",
                                     help="Exact: keep hessian.bin after the solve (the solve never writes to it)."),
    dense_method: DenseMethod = typer.Option(
        DenseMethod.auto, "--dense-method",
        help="Exact: ggn (GGN block + HVP columns, exact for ReLU nets), hvp, or auto."
    ),
    dense_workspace: str = typer.Option(
        "auto", "--dense-workspace", metavar="SIZE",
        help="Exact: memory the build's temporaries may take beside the matrix: auto "
        "(max(16 MiB, matrix/12)), none (fixed caps: faster, more memory) or a size such as 512M or 2G."),
    eigensolver: Eigensolver = typer.Option(
        Eigensolver.auto, "--eigensolver",
        help="Exact: mkl, scipy, torch (torch.linalg.eigvalsh on --device), or auto (the GPU where the solve fits, "
             "else MKL if installed, else scipy)."),
    build_only: bool = typer.Option(
        False, "--build-only", help="Exact: build the dense matrix (resumable) and stop before the eigensolve; the "
                                    "same command without it then only solves."),
    params: list[str] = typer.Option([], "--param", metavar="NAME",
                                     help="Restrict to these parameter tensors / module prefixes (repeatable)."),
    data_dir: Path | None = typer.Option(None, "--data-dir", metavar="DIR", help="Where dataset files live."),
    out: Path | None = typer.Option(None, "--out", metavar="DIR",
                                       help="Output folder [default: RUN_DIR/spectrum-METHOD]."),
    force: bool = force_option(),
    device: str = typer.Option("auto", "--device", metavar="DEVICE", help="auto (CUDA if present), cpu, cuda, cuda:N."),
    quiet: bool = typer.Option(False, "--quiet", "-q",
                               help="No progress (a bar on a terminal, a line every 30 s otherwise)."),
) -> None:
    """Curvature spectrum of a checkpoint: writes DIR/spectrum.npz and DIR/spectrum.json."""
    from landscape.spectrum import SpectrumConfig, compute_spectrum

    def go():
        used = SPECTRUM_USES[method.value] - _FISHER_OPTIONS
        if method.value == "fisher-diag" or operator.value == "fisher":
            used |= {"fisher"} | ({"draws"} if fisher.value == "mc" else set())
        refuse_unused(ctx, SPECTRUM_SPECIFIC, used, f"--method {method.value}"
                      + (f" --operator {operator.value}" if method.value != "fisher-diag" else ""))
        config = SpectrumConfig(
            checkpoint=str(checkpoint), method=method.value, operator=operator.value, samples=samples, split=split,
            batch_size=chunk_size, seed=seed, subset_seed=subset_seed, mode=mode.value, dtype=dtype.value,
            device=device, out=None if out is None else str(out),
            data_dir=None if data_dir is None else str(data_dir), params=tuple(params) or None, k=k,
            which=which.value, tol=tol, max_iters=max_iters, num_probes=num_probes, num_iters=num_iters,
            trace_rel=trace_rel, max_probes=max_probes, fisher=fisher.value, mc_samples=draws,
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
        out_dir, summary = compute_spectrum(config, progress=not quiet, force=force)
        for line in summarise_spectrum(out_dir, summary):
            console.print(line, highlight=False, soft_wrap=True)

    run_guarded(go)


def summarise_spectrum(out_dir: Path, summary: dict) -> list[str]:
    """What the terminal shows of a spectrum result (the JSON holds everything)."""
    if summary.get("built"):
        return [f"built the dense matrix in {out_dir} ({summary['n_params']} parameters, "
                f"{summary['dense_build_s']:.0f} s of building, method {summary['dense_method']}); run the "
                "same command without --build-only to solve it."]
    parts = [f"n_params {summary['n_params']}"]
    for key in ("lambda_max", "lambda_min", "lambda_abs_max", "ritz_max", "ritz_min", "trace"):
        if key in summary and not (key.startswith("ritz") and summary.get("method") != "lanczos"):
            parts.append(f"{key} {summary[key]:.6g}")
    if summary.get("method") == "lanczos":
        parts.append(f"{summary['k']} {summary['which']} Ritz values")
    if "fraction_abs_below" in summary and summary.get("method") == "exact":
        parts.append(f"|lambda|<1e-4: {summary['fraction_abs_below']['1e-4']:.1%}")
    parts.append(f"{summary['hvp_count']} products, {summary['wall_s']:.1f} s")
    lines = [f"wrote {out_dir}/spectrum.{{npz,json}}: " + ", ".join(parts)]
    if summary.get("replaced"):
        changed = ", ".join(f"{k} {a!r} -> {b!r}" for k, (a, b) in summary["replaced"].items())
        lines.append(f"replaced the earlier result in {out_dir} ({changed})")
    lines.extend(f"warning: {w}" for w in summary.get("warnings") or [])
    return lines


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


@app.command(short_help="Flatness of a checkpoint (local entropy, local energy, sharpness, PAC-Bayes, Fisher-Rao).")
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


def _given_on_command_line(ctx: typer.Context, name: str) -> bool:
    # ParameterSource lives in click or in typer's vendored copy: compare by name
    source = ctx.get_parameter_source(name)
    return source is not None and source.name not in ("DEFAULT", "DEFAULT_MAP")


def _absolute_dataset(name: str) -> str:
    """``text:PATH`` with PATH made absolute, so --resume works from any directory."""
    if name.startswith("text:"):
        return "text:" + str(Path(name[5:]).expanduser().resolve())
    return name


def _config_from_run(run_dir: Path, *, epochs: int | None, device: str, data_dir: Path | None = None):
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


@app.command(short_help="One self-contained HTML page from run directories.")
def report(
    run_dirs: list[Path] = typer.Argument(
        ..., metavar="RUN...", help="Run directories (or folders holding them, or Fig. 2 folders).", show_default=False
    ),
    out: Path = typer.Option(Path("reports/report"), "--out", metavar="DIR", help="Folder for index.html."),
    title: str | None = typer.Option(
        None, "--title", metavar="TEXT", help="Page title [default: what the page shows, from its runs]."
    ),
    max_train_error: float = typer.Option(
        0.5,
        "--max-train-error",
        callback=_bounded(0.0, 1.0),
        metavar="E",
        help="Correlation study: leave out models whose final training error is above this (they did not train).",
    ),
    archive: bool = typer.Option(
        False,
        "--archive",
        help="Also copy the small files the page is built from "
        "(configs, metrics, spectra, flatness; no checkpoints or matrices) to OUT/runs, so "
        "`landscape report OUT/runs --out OUT` can re-render it without the run directories.",
    ),
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
    slices = "slices"
    all = "all"


class Scale(str, enum.Enum):
    quick = "quick"
    full = "full"


@app.command(short_help="Run one of the papers' results end to end (resumable).")
def reproduce(
    target: Target = typer.Argument(..., help="Which result: fig1, fig2, fig3, table1, correlation, slices or all."),
    scale: Scale = typer.Option(
        Scale.quick,
        "--scale",
        help="quick: minutes on 2 CPU cores on the embedded digits; "
        "full: the paper's settings as far as this machine allows.",
    ),
    out: Path | None = typer.Option(
        None, "--out", metavar="DIR", help="Folder for index.html [default: reports/SCALE]."
    ),
    runs: Path | None = typer.Option(
        None, "--runs", metavar="DIR", help="Where the runs go [default: runs/<name of --out>]."
    ),
    dataset: str | None = typer.Option(None, "--dataset", metavar="NAME", help="Override the scale's dataset."),
    data_dir: Path | None = typer.Option(None, "--data-dir", metavar="DIR", help="Where dataset files live."),
    text: Path | None = typer.Option(
        None, "--text", metavar="FILE", help="UTF-8 text for char-lstm (full scale, Fig. 3b)."
    ),
    device: str = typer.Option("auto", "--device", metavar="DEVICE", help="auto (CUDA if present), cpu, cuda, cuda:N."),
    dry_run: bool = typer.Option(False, "--dry-run", help="List the steps (done / to do) and stop."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress lines."),
) -> None:
    """Train -> spectrum -> flatness -> report for one of the paper's results; resumable, finished steps skipped."""
    from landscape.reproduce import ReproduceConfig
    from landscape.reproduce import reproduce as run_reproduce

    def go():
        config = ReproduceConfig(target=target.value, scale=scale.value, out=None if out is None else str(out),
                                 runs=None if runs is None else str(runs), dataset=dataset,
                                 data_dir=None if data_dir is None else str(data_dir), device=device,
                                 text=None if text is None else str(text))
        log = stderr_log(quiet)
        interrupt_hint[0] = lambda: "finished steps are kept; run the same command again to continue."
        path = run_reproduce(config, log=log, dry_run=dry_run, progress=not quiet)
        if path is not None:
            console.print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB)", highlight=False, soft_wrap=True)

    run_guarded(go)


def _print_version(value: bool) -> None:
    if value:
        import landscape

        console.print(f"landscape {landscape.__version__}", highlight=False)
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_print_version, is_eager=True,
                                 help="Print the version and exit."),
) -> None:
    """landscape: train with flatness-seeking optimizers, measure the minima they reach."""


from landscape.cli.slice import slice_command  # noqa: E402  (it imports this module's shared options)

app.command("slice", short_help="Loss and error on a 1-D / 2-D grid of weights (random, Hessian, or path to a run).")(
    slice_command)


def configure_platform(environ: dict) -> str:
    """Switch the platform services on for a command-line run; returns the line that says so.

    glibc heap tuning keeps a dense build's freed workspace from staying resident;
    ``LANDSCAPE_HEAP=default`` leaves the allocator alone. ``LANDSCAPE_NO_MKL=1`` keeps MKL
    unloaded (the exact solve then uses scipy, the SGLD noise torch's generator).
    """
    from landscape.platform import configure, describe
    from landscape.platform.threads import configure_threads

    configure(heap=environ.get("LANDSCAPE_HEAP", "").lower() != "default", mkl=not environ.get("LANDSCAPE_NO_MKL"))
    budget = configure_threads()
    state = describe()
    parts = [budget.describe(), "glibc heap tuning " + ("on" if state["heap"] else "off"),
             "MKL " + ("on" if state["mkl_loaded"] else "off")]
    return "platform: " + ", ".join(parts)


def main() -> None:
    """The console entry point: switches the platform services on, once and visibly, then runs the command."""
    import os

    line = configure_platform(dict(os.environ))
    if len(sys.argv) > 2 and sys.argv[1] in ("train", "spectrum", "flatness", "reproduce") and not (
            {"-q", "--quiet", "-h", "--help", "--dry-run"} & set(sys.argv)):
        err_console.print(line, highlight=False, soft_wrap=True)
    app()
