"""`landscape train`: the command's options mapped onto :class:`landscape.train.TrainConfig`."""

from __future__ import annotations

import enum
import re
import sys
from pathlib import Path

import typer

from landscape.cli.common import (
    NON_NEGATIVE,
    POSITIVE,
    _bounded,
    _given_on_command_line,
    console,
    interrupt_hint,
    parse_int_list,
    parse_model_args,
    refuse_unused,
    run_guarded,
)
from landscape.errors import LandscapeError


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
