"""One training loop for every optimizer, counting gradient evaluations.

``train(config)`` writes a run directory (DESIGN.md sec. 1)::

    RUN_DIR/config.json      the TrainConfig, versions, dataset provenance
    RUN_DIR/metrics.jsonl    one JSON object per outer epoch (epoch 0 = initialisation)
    RUN_DIR/checkpoint.pt    the last complete epoch (safe to load, see landscape.checkpoint)

Epochs and effective epochs (paper Sec. 5.2, "Remark on the computational complexity"):
``--epochs`` counts OUTER epochs, i.e. parameter updates x batch size / training-set size,
as the paper's text does. Effective epochs count the work: the number of examples whose
gradient was computed divided by the training-set size. Entropy-SGD with L = 20 computes
20 minibatch gradients per parameter update, so one outer epoch is 20 effective epochs;
SAM computes 2, Replicated-SGD with y replicas y. The loop counts these by wrapping the
closure, so the count is what was actually done, not what a formula says.

Minibatches come from :class:`BatchStream`, an endless sequence of shuffled passes over
the training set driven by its own ``torch.Generator``; its state is checkpointed so
``--resume`` continues with exactly the batches an uninterrupted run would have seen.
Optimizers whose ``closure_fresh_batch`` is true (Entropy-SGD's SGLD loop, replicas)
draw a new minibatch at every closure call; the others (SGD, Adam, SAM's two passes)
reuse one minibatch per step.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from landscape.checkpoint import check_finite_weights, package_versions, read_checkpoint, save_checkpoint
from landscape.data import Dataset
from landscape.data import load_splits as load_data_splits
from landscape.device import resolve_device
from landscape.errors import LandscapeError, NonFiniteLossError
from landscape.io import json_safe, write_json, write_text
from landscape.losses import cross_entropy, evaluate
from landscape.models import build_model, count_parameters
from landscape.optim import OPTIMIZER_NAMES, build_optimizer, closure_fresh_batch
from landscape.optim.rng import KIND_PHILOX, KIND_TORCH, NOISE_RNG_CHOICES, Generator, generator_kind, make_generator
from landscape.progress import make_progress

#: Outer learning rates used when --lr is not given (paper Sec. 5.2-5.4 where it says).
DEFAULT_LR = {
    "sgd": 0.1,
    "adam": 1e-3,
    "entropy-sgd": 1.0,  # Sec. 5.2/5.3: eta = 1 for the outer loop
    "entropy-adam": 1e-2,
    "replicated-sgd": 0.1,
    "sam": 0.1,
}


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a training run; saved as ``config.json`` beside it."""

    model: str = "small-mnistfc"
    dataset: str = "digits"
    optimizer: str = "sgd"
    epochs: int = 5
    batch_size: int = 128
    seed: int = 0
    out: str = "runs/run"
    device: str = "auto"
    # data
    data_dir: str | None = None
    normalize: bool = True
    preprocess: str | None = None
    val_fraction: float = 0.1
    seq_len: int | None = None
    # train on the first N samples of the train split only (val / test untouched): the
    # paper's char-LSTM learns to re-generate 256 lines of 32 characters (Sec. 5.1)
    train_subset: int | None = None
    # text:PATH only: "file" (the file's distinct characters; the default) or "ascii96" (the
    # paper's 96 one-hot symbols: char-lstm then has exactly 32,640 parameters, Sec. 5.1)
    vocab: str | None = None
    # model
    model_kwargs: dict = field(default_factory=dict)
    # outer optimizer
    lr: float | None = None
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    lr_milestones: tuple[int, ...] = ()
    lr_decay: float = 0.1
    # Entropy-SGD / Entropy-Adam (Alg. 1, Sec. 4.2-4.3); None = the optimizer's default
    L: int | None = None
    sgld_lr: float = 0.1
    noise: float = 1e-4
    gamma: float | None = None
    scoping: float | None = None
    alpha: float = 0.75
    sgld_momentum: float = 0.0  # Nesterov momentum of the SGLD loop (Sec. 5.2: "both loops"); 0 = Alg. 1
    # the SGLD noise stream: auto (MKL's Philox on the CPU when installed, else torch), torch, mkl
    noise_rng: str = "auto"
    # Replicated-SGD (Pittorino et al. 2021)
    replicas: int = 3
    coupling: float = 1e-3
    coupling_growth: float = 1e-3
    # SAM / ASAM
    rho: float = 0.05
    adaptive: bool = False
    sam_base: str = "sgd"
    # evaluation
    train_eval_samples: int = 10_000
    eval_batch_size: int = 1000

    def __post_init__(self) -> None:
        if self.optimizer not in OPTIMIZER_NAMES:
            raise LandscapeError(f"Unknown optimizer '{self.optimizer}': choose one of {', '.join(OPTIMIZER_NAMES)}.")
        if self.noise_rng not in NOISE_RNG_CHOICES:
            raise LandscapeError(f"--noise-rng must be one of {', '.join(NOISE_RNG_CHOICES)}, got '{self.noise_rng}'.")
        if self.epochs < 0:
            raise LandscapeError(f"--epochs must be >= 0, got {self.epochs}.")
        if self.train_subset is not None and self.train_subset < 1:
            raise LandscapeError(f"--train-subset must be >= 1, got {self.train_subset}.")
        if self.batch_size < 1:
            raise LandscapeError(f"--batch-size must be >= 1, got {self.batch_size}.")
        if self.lr is not None and not self.lr > 0:
            raise LandscapeError(f"--lr must be positive, got {self.lr}.")
        if not 0.0 <= self.momentum < 1.0:
            raise LandscapeError(f"--momentum must be in [0, 1), got {self.momentum}.")
        if self.weight_decay < 0:
            raise LandscapeError(f"--weight-decay must be >= 0, got {self.weight_decay}.")
        if not self.lr_decay > 0:
            raise LandscapeError(f"--lr-decay must be positive (a factor on the learning rate), got {self.lr_decay}.")
        if list(self.lr_milestones) != sorted(self.lr_milestones):
            raise LandscapeError(f"--lr-milestones must be increasing, got {list(self.lr_milestones)}.")

    @property
    def learning_rate(self) -> float:
        return self.lr if self.lr is not None else DEFAULT_LR[self.optimizer]

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["betas"] = list(self.betas)
        d["lr_milestones"] = list(self.lr_milestones)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise LandscapeError(f"Unknown training setting(s) {', '.join(unknown)} in the run's config.json.")
        d = dict(d)
        for f in dataclasses.fields(cls):
            if f.name in d:
                _check_setting(f.name, str(f.type), d[f.name])
        if "betas" in d:
            d["betas"] = tuple(d["betas"])
        if "lr_milestones" in d:
            d["lr_milestones"] = tuple(d["lr_milestones"])
        return cls(**d)


def _check_setting(name: str, annotation: str, value: Any) -> None:
    """One sentence when a saved setting does not have its field's type (e.g. ``"batch_size": "lots"``)."""
    optional = annotation.endswith("| None")
    base = annotation.removesuffix("| None").strip()
    if value is None and optional:
        return
    number = (int, float)
    if base == "bool":
        ok = isinstance(value, bool)
    elif base == "int":
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif base == "float":
        ok = isinstance(value, number) and not isinstance(value, bool)
    elif base == "str":
        ok = isinstance(value, str)
    elif base == "dict":
        ok = isinstance(value, dict)
    elif base.startswith("tuple"):
        ok = isinstance(value, (list, tuple)) and all(isinstance(v, number) and not isinstance(v, bool) for v in value)
    else:
        ok = True
    if not ok:
        kind = {"bool": "true or false", "int": "an integer", "float": "a number", "str": "a string",
                "dict": "an object"}.get(base, "a list of numbers")
        raise LandscapeError(f"The run's config.json has {name} = {json.dumps(value)}, which should be {kind}"
                             f"{' or null' if optional else ''}: repair that entry or start a new run.")


class BatchStream:
    """Endless shuffled passes over ``range(n)``, yielding index tensors of ``batch_size``.

    The last batch of a pass is short when ``batch_size`` does not divide ``n`` (a
    single leftover example is dropped, since BatchNorm cannot train on a batch of one).
    Its full state (permutation, position, generator) goes into checkpoints.
    """

    def __init__(self, n: int, batch_size: int, generator: torch.Generator) -> None:
        if n < 1:
            raise LandscapeError("The training split is empty: use a larger dataset or a smaller --val-fraction.")
        self.n = n
        self.batch_size = min(batch_size, n)
        self.generator = generator
        self.passes = 0
        self._perm = torch.randperm(n, generator=generator)
        self._pos = 0

    def next(self) -> torch.Tensor:
        remaining = self.n - self._pos
        if remaining <= 1 and not (remaining == 1 and self.n == 1):
            self._perm = torch.randperm(self.n, generator=self.generator)
            self._pos = 0
            self.passes += 1
        stop = min(self._pos + self.batch_size, self.n)
        batch = self._perm[self._pos : stop]
        self._pos = stop
        return batch

    def state_dict(self) -> dict:
        return {
            "perm": self._perm.clone(),
            "pos": self._pos,
            "passes": self.passes,
            "generator": self.generator.get_state(),
        }

    def load_state_dict(self, state: dict) -> None:
        self._perm = state["perm"].clone()
        self._pos = int(state["pos"])
        self.passes = int(state["passes"])
        self.generator.set_state(state["generator"])


def _read_metrics(path: Path) -> list[dict]:
    """The rows of ``metrics.jsonl``; one sentence naming the file and line for a damaged one."""
    if not path.exists():
        return []
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise LandscapeError(f"Cannot read {path} ({getattr(err, 'strerror', None) or type(err).__name__}): repair "
                             "it, or start the run again with --overwrite.") from None
    rows = []
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line:
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            row = None
        epoch = row.get("epoch") if isinstance(row, dict) else None
        if not isinstance(epoch, int) or isinstance(epoch, bool):
            what = "a JSON object with an integer 'epoch'" if isinstance(row, dict) else "a JSON object"
            raise LandscapeError(f"{path} line {number} is not {what}: remove or repair that line and resume, or "
                                 "start the run again with --overwrite.")
        rows.append(row)
    return rows


def _write_metrics(path: Path, rows: list[dict]) -> None:
    # Rewritten whole and atomically each epoch: a killed run never leaves half a line.
    write_text(path, "".join(json.dumps(json_safe(r), allow_nan=False) + "\n" for r in rows))


@dataclass
class TrainResult:
    """What :func:`train` returns: the run directory, the final metrics row, the model."""

    run_dir: Path
    metrics: list[dict]
    model: nn.Module

    @property
    def final(self) -> dict:
        return self.metrics[-1]


def load_splits(config: TrainConfig) -> dict[str, Dataset]:
    """The train / val / test splits for a config (the val split is carved from train)."""
    kwargs: dict[str, Any] = {
        "normalize": config.normalize,
        "preprocess": config.preprocess,
        "val_fraction": config.val_fraction,
    }
    if config.seq_len is not None:
        kwargs["seq_len"] = config.seq_len
    if config.vocab is not None:
        kwargs["vocab"] = config.vocab
    # one read of the files and one fit of the preprocessing (ZCA) for all three splits
    splits = load_data_splits(config.dataset, ("train", "val", "test"), config.data_dir, **kwargs)
    if config.train_subset is not None:
        splits["train"] = splits["train"].head(config.train_subset)
    return splits



def _dataset_record(config: TrainConfig, splits: dict[str, Dataset]) -> dict:
    train = splits["train"]
    return {
        "name": config.dataset,
        "task": train.task,
        "normalize": config.normalize,
        "preprocess": config.preprocess,
        "val_fraction": config.val_fraction,
        "seq_len": config.seq_len,
        "train_subset": config.train_subset,
        "vocab": config.vocab,
        "input_shape": list(train.input_shape),
        "num_classes": train.num_classes,
        "sizes": {k: len(v) for k, v in splits.items()},
        "meta": train.meta,
    }


def _check_compatible(config: TrainConfig, model: nn.Module, train_set: Dataset) -> None:
    from landscape.models import model_info

    task = model_info(config.model).task
    if task != train_set.task:
        kind = "token sequences" if train_set.task == "sequence" else "images"
        raise LandscapeError(
            f"Model '{config.model}' is a {task} model but dataset '{config.dataset}' holds {kind}: "
            "use char-lstm / lstm-lm for text and ptb, an image model for image datasets."
        )
    has_bn = any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
    if has_bn and min(config.batch_size, len(train_set)) < 2:
        raise LandscapeError(
            f"Model '{config.model}' has BatchNorm, which cannot train on batches of one: use --batch-size 2 or more."
        )


def _prepare_run_dir(run_dir: Path, resume: bool, overwrite: bool) -> None:
    """Create the run directory; refuse to silently replace an existing run."""
    existing = [name for name in ("checkpoint.pt", "metrics.jsonl") if (run_dir / name).exists()]
    if existing and not resume:
        if existing == ["metrics.jsonl"] and not overwrite:
            raise LandscapeError(
                f"'{run_dir}' holds metrics.jsonl but no checkpoint.pt (a run stopped before its first checkpoint, "
                "so there is nothing to continue): start it again by rerunning this command with --overwrite."
            )
        if not overwrite:
            raise LandscapeError(
                f"'{run_dir}' already holds a run ({', '.join(existing)}): continue it with --resume, "
                "choose another --out, or pass --overwrite to replace it."
            )
        import shutil

        # the old run's derived results would no longer match the new checkpoint
        for name in ("checkpoint.pt", "metrics.jsonl", "config.json"):
            (run_dir / name).unlink(missing_ok=True)
        for derived in list(run_dir.glob("spectrum-*")) + list(run_dir.glob("flatness-*.json")):
            shutil.rmtree(derived) if derived.is_dir() else derived.unlink()
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / ".write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise LandscapeError(
            f"Cannot write the run directory '{run_dir}' ({err.strerror}): choose a writable --out."
        ) from None


def _all_finite(model: nn.Module) -> bool:
    tensors = list(model.parameters()) + [b for b in model.buffers() if b.is_floating_point()]
    return all(bool(torch.isfinite(t).all()) for t in tensors)


def _noise_generator(config: TrainConfig, device: torch.device, resume_from: Path | None) -> Generator:
    """The optimizer's noise stream, seeded with ``seed + 2``: the kind ``--noise-rng`` asks for,
    or, when resuming, the kind the checkpoint's stream was (so the run continues bit-identically)."""
    kind = config.noise_rng
    if resume_from is not None and resume_from.exists():
        trainer = (read_checkpoint(resume_from).get("trainer") or {})
        if "noise_generator" in trainer:
            kind = trainer.get("noise_generator_kind", KIND_TORCH)
    try:
        return make_generator(device, config.seed + 2, kind)
    except ValueError as err:
        if kind == KIND_PHILOX and resume_from is not None:
            raise LandscapeError(
                f"The run in '{resume_from.parent}' drew its SGLD noise from MKL's Philox stream, which cannot be "
                f"used here ({err}); resume it where MKL is installed on the CPU."
            ) from err
        raise LandscapeError(str(err)) from err


def _restore(ckpt_path: Path, config: TrainConfig, model: nn.Module, optimizer, scheduler, stream: BatchStream,
             noise_generator: Generator, device: torch.device) -> dict:
    """Load a checkpoint's training state into the fresh objects; returns its trainer state.

    A checkpoint of another model or optimizer, or with missing pieces, is one sentence.
    """
    payload = read_checkpoint(ckpt_path)
    if payload.get("trainer") is None or payload.get("optimizer") is None:
        raise LandscapeError(f"Cannot resume from '{ckpt_path}': it holds no training state.")
    from landscape.models import model_info

    held = (payload.get("model") or {}).get("name")
    if held != model_info(config.model).name:
        raise LandscapeError(f"Cannot resume from '{ckpt_path}': it holds a {held!r} model but the run's config.json "
                             f"trains {config.model!r}; pass the matching run directory, or start again with "
                             "--overwrite.")
    check_finite_weights(payload)
    trainer = payload["trainer"]
    try:
        model.load_state_dict(payload["state_dict"])
        optimizer.load_state_dict(payload["optimizer"]["state_dict"])
        if payload.get("scheduler") is not None:
            scheduler.load_state_dict(payload["scheduler"])
        epoch = int(trainer["counters"]["epoch"])
        stream.load_state_dict(trainer["stream"])
        noise_generator.set_state(trainer["noise_generator"])
        torch.set_rng_state(trainer["torch_rng"])
        if "cuda_rng" in trainer and device.type == "cuda":
            torch.cuda.set_rng_state(trainer["cuda_rng"], device)
    except (KeyError, TypeError, ValueError, RuntimeError, IndexError) as err:
        first = str(err).splitlines()[0][:160] if str(err) else type(err).__name__
        raise LandscapeError(f"Cannot resume from '{ckpt_path}': its training state does not fit this run's model, "
                             f"optimizer or settings ({first}); start again with --overwrite.") from None
    if epoch > config.epochs:
        raise LandscapeError(
            f"The run in '{ckpt_path.parent}' has already trained {epoch} epochs: pass --epochs larger than that "
            "to continue it."
        )
    return trainer


def train(
    config: TrainConfig,
    *,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
) -> TrainResult:
    """Train ``config.model`` on ``config.dataset`` with ``config.optimizer``.

    Writes ``config.json`` at the start, a checkpoint of the initialisation (epoch 0),
    and after every outer epoch a new checkpoint and then the metrics row announcing it,
    each atomically: Ctrl-C or a crash leaves the last complete epoch intact and
    ``resume=True`` continues from it bit-identically on the same device (restoring the
    metrics row from the checkpoint when the kill fell between the two writes). A NaN or infinite training
    loss stops the run with :class:`NonFiniteLossError`; the last good checkpoint stays.
    """
    log = log or (lambda msg: None)
    run_dir = Path(config.out)
    device = resolve_device(config.device)

    splits = load_splits(config)
    train_set = splits["train"]
    n_train = len(train_set)
    dataset_record = _dataset_record(config, splits)

    torch.manual_seed(config.seed)
    model = build_model(config.model, train_set.input_shape, train_set.num_classes, **config.model_kwargs).to(device)
    _check_compatible(config, model, train_set)
    _prepare_run_dir(run_dir, resume, overwrite)
    data_generator = torch.Generator().manual_seed(config.seed + 1)
    noise_generator = _noise_generator(config, device, run_dir / "checkpoint.pt" if resume else None)
    optimizer = build_optimizer(
        config.optimizer,
        model,
        lr=config.learning_rate,
        momentum=config.momentum,
        nesterov=config.nesterov,
        weight_decay=config.weight_decay,
        betas=tuple(config.betas),
        L=config.L,
        sgld_lr=config.sgld_lr,
        noise=config.noise,
        gamma=config.gamma,
        scoping=config.scoping,
        alpha=config.alpha,
        sgld_momentum=config.sgld_momentum,
        replicas=config.replicas,
        coupling=config.coupling,
        coupling_growth=config.coupling_growth,
        rho=config.rho,
        adaptive=config.adaptive,
        sam_base=config.sam_base,
        generator=noise_generator,
    )
    scheduler = torch.optim.lr_scheduler.MultiStepLR(
        optimizer, milestones=list(config.lr_milestones), gamma=config.lr_decay
    )
    stream = BatchStream(n_train, config.batch_size, data_generator)
    steps_per_epoch = math.ceil(n_train / stream.batch_size)
    fresh = closure_fresh_batch(optimizer)

    inputs_all = train_set.inputs.to(device)
    targets_all = train_set.targets.to(device)
    metrics_path = run_dir / "metrics.jsonl"
    ckpt_path = run_dir / "checkpoint.pt"
    counters = {"step": 0, "epoch": 0, "gradient_evals": 0, "gradient_examples": 0, "wall_s": 0.0}

    def trainer_state() -> dict:
        state = {
            "counters": dict(counters),
            "stream": stream.state_dict(),
            "noise_generator": noise_generator.get_state(),
            "noise_generator_kind": generator_kind(noise_generator),
            "torch_rng": torch.get_rng_state(),
        }
        if device.type == "cuda":
            state["cuda_rng"] = torch.cuda.get_rng_state(device)
        return state

    def checkpoint(row: dict) -> None:
        # the row announcing this epoch travels in the checkpoint: metrics.jsonl is written after
        # it, and a run killed between the two gets the row back on --resume
        save_checkpoint(
            ckpt_path,
            model,
            dataset=dataset_record,
            optimizer=optimizer,
            optimizer_name=config.optimizer,
            scheduler=scheduler,
            step=counters["step"],
            epoch=counters["epoch"],
            config=config.to_dict(),
            trainer={**trainer_state(), "metrics_row": json_safe(row)},
        )

    def eval_row() -> dict:
        row: dict[str, Any] = {
            "epoch": counters["epoch"],
            "step": counters["step"],
            "effective_epochs": counters["gradient_examples"] / n_train,
            "gradient_evals": counters["gradient_evals"],
            "gradient_examples": counters["gradient_examples"],
            "lr": optimizer.param_groups[0]["lr"],
        }
        for split, limit in (("train", config.train_eval_samples), ("val", None), ("test", None)):
            result = evaluate(model, splits[split], device=device, batch_size=config.eval_batch_size, limit=limit)
            for key, value in result.items():
                row[f"{split}_{key}"] = value
        diagnostics = getattr(optimizer, "diagnostics", None)
        if callable(diagnostics):
            row.update({f"opt_{k}": v for k, v in diagnostics().items()})
        row["wall_s"] = counters["wall_s"]
        return row

    if resume:
        if not ckpt_path.exists():
            hint = ("rerun this command with --overwrite instead of --resume (the run stopped before its first "
                    "checkpoint)" if metrics_path.exists() else "start the run without --resume")
            raise LandscapeError(f"Cannot resume: '{ckpt_path}' does not exist; {hint}.")
        trainer = _restore(ckpt_path, config, model, optimizer, scheduler, stream, noise_generator, device)
        counters.update(trainer["counters"])
        rows = [r for r in _read_metrics(metrics_path) if r["epoch"] <= counters["epoch"]]
        saved_row = trainer.get("metrics_row")
        if isinstance(saved_row, dict) and saved_row.get("epoch") == counters["epoch"] and (
                not rows or rows[-1]["epoch"] < counters["epoch"]):
            rows.append(saved_row)  # killed after the checkpoint, before its metrics row
            _write_metrics(metrics_path, rows)
        log(f"Resuming {run_dir} from epoch {counters['epoch']} (step {counters['step']}).")
    else:
        rows = []

    write_json(
        run_dir / "config.json",
        {
            **config.to_dict(),
            "device_resolved": str(device),
            "noise_rng_resolved": generator_kind(noise_generator),
            "parameters": count_parameters(model),
            "dataset_info": dataset_record,
            "versions": package_versions(),
        },
    )
    if not rows:
        rows = [eval_row()]
        checkpoint(rows[-1])
        _write_metrics(metrics_path, rows)

    def closure_for(batch_source: Callable[[], torch.Tensor]) -> Callable[[], torch.Tensor]:
        def closure() -> torch.Tensor:
            index = batch_source()
            index_dev = index.to(device)
            inputs = inputs_all[index_dev]
            targets = targets_all[index_dev]
            model.zero_grad(set_to_none=True)
            loss = cross_entropy(model(inputs), targets)
            loss.backward()
            counters["gradient_evals"] += 1
            counters["gradient_examples"] += int(index.numel())
            return loss.detach()

        return closure

    fresh_closure = closure_for(stream.next)
    fixed_batch: list[torch.Tensor] = []
    fixed_closure = closure_for(lambda: fixed_batch[0])

    progress_bar = make_progress(progress, "steps", status=True)
    total_steps = config.epochs * steps_per_epoch
    try:
        with progress_bar:
            task = progress_bar.add_task(
                f"{config.optimizer} {config.model}",
                total=total_steps,
                completed=counters["epoch"] * steps_per_epoch,
                status="",
            )
            while counters["epoch"] < config.epochs:
                epoch_start = time.perf_counter()
                model.train()
                for _ in range(steps_per_epoch):
                    if fresh:
                        loss = optimizer.step(fresh_closure)
                    else:
                        fixed_batch[:] = [stream.next()]
                        loss = optimizer.step(fixed_closure)
                    counters["step"] += 1
                    loss_value = float(loss)
                    if not math.isfinite(loss_value):
                        raise NonFiniteLossError(
                            f"The training loss became {loss_value} at epoch {counters['epoch'] + 1}, step "
                            f"{counters['step']}; "
                            f"the last good checkpoint (epoch {counters['epoch']}) is kept in {ckpt_path}: lower "
                            "--lr and train again."
                        )
                    progress_bar.update(task, advance=1, status=f"loss {loss_value:.4f}")
                scheduler.step()
                counters["epoch"] += 1
                counters["wall_s"] += time.perf_counter() - epoch_start
                row = eval_row()
                if not _all_finite(model) or not all(math.isfinite(row[k]) for k in ("train_loss", "val_loss")):
                    # the last update of the epoch diverged: never save it as "good"
                    raise NonFiniteLossError(
                        f"The model diverged in epoch {counters['epoch']} (non-finite weights or loss at its end); "
                        "the last "
                        f"good checkpoint (epoch {counters['epoch'] - 1}) is kept in {ckpt_path}: lower --lr and "
                        "train again."
                    )
                rows.append(row)
                checkpoint(row)  # on disk before the metrics row that announces it
                _write_metrics(metrics_path, rows)
                summary = f"val_error {row['val_error']:.4f}"
                if "val_perplexity" in row:
                    summary = f"val_ppl {row['val_perplexity']:.3f}"
                progress_bar.update(task, status=f"epoch {counters['epoch']}: {summary}")
                log(
                    f"epoch {counters['epoch']:>3}  eff. epochs {row['effective_epochs']:8.2f}  "
                    f"train_loss {row['train_loss']:.4f}  val_error {row['val_error']:.4f}  test_error "
                    f"{row['test_error']:.4f}"
                )
    finally:
        model.eval()
    return TrainResult(run_dir=run_dir, metrics=rows, model=model)
