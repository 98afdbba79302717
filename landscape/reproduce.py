"""``landscape reproduce``: the whole pipeline for one of the paper's results, resumable.

Each target is a list of steps (train -> spectrum -> flatness), every step named by the
artifact it writes; a step whose artifact exists is skipped, a training run killed
half-way resumes from its last epoch. The report is re-rendered from whatever the run
directories then hold. Steps call the same stage functions as the CLI commands, in this
process (no interpreter start-up per step), and the report lists the equivalent
commands so any one step can be re-run by hand.

Scales:

* ``quick``: minutes on 2 CPU cores on the embedded digits data (8x8, no network):
  small-mnistfc, the paper's protocols shortened. This is the README's main job.
* ``full``: the paper's settings as far as one machine allows (Sec. 5): Fashion-MNIST
  28x28 (Debian's ``dataset-fashion-mnist``, or MNIST if the user has it), small-lenet /
  small-mnistfc exact spectra on 4,096 samples, char-lstm on a text file, All-CNN-BN
  Fisher on CIFAR-10 if present. Datasets that cannot be found are reported as skipped
  with how to supply them.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from landscape.errors import LandscapeError
from landscape.io import write_json
from landscape.progress import Throttled

__all__ = ["TARGETS", "SCALES", "ReproduceConfig", "Step", "plan", "reproduce"]

TARGETS = ("fig1", "fig2", "fig3", "table1", "correlation", "slices", "all")
SCALES = ("quick", "full")


@dataclass(frozen=True)
class ReproduceConfig:
    target: str = "all"
    scale: str = "quick"
    out: str | None = None  # default: reports/<scale>
    runs: str | None = None  # default: runs/<name of out>
    dataset: str | None = None  # default per scale (digits / fashion-mnist)
    data_dir: str | None = None
    device: str = "auto"
    text: str | None = None  # UTF-8 file for char-lstm (full scale)

    def __post_init__(self) -> None:
        if self.target not in TARGETS:
            raise LandscapeError(f"Unknown target '{self.target}': choose one of {', '.join(TARGETS)}.")
        if self.scale not in SCALES:
            raise LandscapeError(f"Unknown scale '{self.scale}': choose quick or full.")

    @property
    def out_dir(self) -> Path:
        return Path(self.out) if self.out else Path("reports") / self.scale

    @property
    def runs_dir(self) -> Path:
        """Runs of different scales never share a folder: runs/<name of the report folder>."""
        return Path(self.runs) if self.runs else Path("runs") / self.out_dir.name


@dataclass
class Step:
    """One unit of work: ``run()`` writes ``artifact``; skipped when ``done()``."""

    target: str
    name: str
    command: str
    run: Callable[[], None]
    done: Callable[[], bool]
    run_dir: Path | None = None
    disk_bytes: Callable[[], int] | None = None  # the largest file it writes, for the dry-run total


@dataclass
class Plan:
    steps: list[Step] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # datasets / targets that cannot run here, and why
    report_dirs: list[Path] = field(default_factory=list)
    progress: bool = False  # progress bars / timed lines inside long steps (set by reproduce())
    log: Callable[[str], None] = print  # where those lines go (set by reproduce())
    train_configs: dict = field(default_factory=dict)  # run_dir -> TrainConfig (sizes for the dry run)

    def has(self, run_dir: Path, name: str) -> bool:
        """Whether a step ``name`` on ``run_dir`` is planned already (targets share runs: plan it once)."""
        return any(step.run_dir == run_dir and step.name == name for step in self.steps)


# ------------------------------------------------------------------ building blocks

#: Config fields whose command-line flag has another name (one vocabulary across subcommands).
FLAG_NAMES = {"L": "langevin-steps", "data_samples": "samples", "batch_size": "chunk-size"}


def _flag(field_name: str, stage: str) -> str:
    """The command-line flag of a config field: train keeps --batch-size (its minibatch)."""
    if stage == "train" and field_name == "batch_size":
        return "--batch-size"
    return "--" + FLAG_NAMES.get(field_name, field_name.replace("_", "-"))


def _flag_value(value) -> str:
    """How the CLI spells a setting: lists comma-separated (``--lr-milestones 30,60,90``)."""
    if isinstance(value, (tuple, list)):
        return ",".join(str(v) for v in value)
    return str(value)


def _train_step(plan: Plan, target: str, run_dir: Path, config_kwargs: dict, device: str, data_dir) -> Path:
    from landscape.train import TrainConfig, train

    config = TrainConfig(out=str(run_dir), device=device, data_dir=data_dir, **config_kwargs)

    def check_same_run() -> None:
        """A run directory that holds another configuration is never reused or resumed."""
        saved_path = run_dir / "config.json"
        if not saved_path.exists():
            return
        try:
            saved = json.loads(saved_path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            raise LandscapeError(f"{saved_path} is unreadable; delete {run_dir} or pass another --runs.") from None
        wanted = json.loads(json.dumps(config.to_dict()))
        defaults = json.loads(json.dumps({f.name: None if f.default is dataclasses.MISSING else f.default
                                          for f in dataclasses.fields(TrainConfig)}))
        for key in ("model", "dataset", "optimizer", "seed", "batch_size", "lr", "model_kwargs", "L", "gamma",
                    "scoping", "lr_milestones", "lr_decay", "sgld_lr", "noise", "sgld_momentum", "seq_len",
                    "preprocess", "train_subset", "vocab"):
            held = saved.get(key, defaults.get(key))  # a key older runs lack counts as its default
            if held != wanted.get(key):
                raise LandscapeError(f"{run_dir} holds a different run ({key} = {held!r}, this plan wants "
                                     f"{wanted.get(key)!r}); pass another --runs folder or delete that run.")

    def finished() -> bool:
        """The checkpoint's own epoch is the one asked for, and its metrics row is written (a run killed
        between the two is resumed, which writes the row); a damaged metrics file is left to the
        resume, which names it."""
        check_same_run()
        checkpoint, metrics = run_dir / "checkpoint.pt", run_dir / "metrics.jsonl"
        if not (metrics.exists() and checkpoint.exists()) or _checkpoint_epoch(checkpoint) != config.epochs:
            return False
        try:
            lines = [line for line in metrics.read_text(encoding="utf-8").splitlines() if line.strip()]
            last = json.loads(lines[-1]) if lines else None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            return False
        return isinstance(last, dict) and last.get("epoch") == config.epochs

    def run() -> None:
        partial = (run_dir / "checkpoint.pt").exists() and (run_dir / "config.json").exists()
        # no checkpoint: nothing trained to keep (check_same_run vouched for the folder), start over
        train(config, resume=partial, overwrite=not (run_dir / "checkpoint.pt").exists(), progress=plan.progress)

    options = " ".join([f"{_flag(k, 'train')} {_flag_value(v)}" for k, v in config_kwargs.items()
                        if k not in ("model", "dataset", "optimizer", "model_kwargs")]
                       + [f"--model-arg {k}={v}" for k, v in config_kwargs.get("model_kwargs", {}).items()])
    command = (f"landscape train --model {config.model} --dataset {config.dataset} --optimizer {config.optimizer} "
               f"{options} --out {run_dir}")
    plan.train_configs.setdefault(run_dir, config)
    if not plan.has(run_dir, "train"):
        plan.steps.append(Step(target, "train", command, run, finished, run_dir))
    if run_dir not in plan.report_dirs:
        plan.report_dirs.append(run_dir)
    return run_dir


_EPOCHS: dict[tuple, int | None] = {}


def _checkpoint_epoch(path: Path) -> int | None:
    """The epoch a checkpoint holds (None if unreadable), read once per version of the file."""
    from landscape.checkpoint import read_checkpoint

    stat = path.stat()
    key = (str(path.resolve()), stat.st_mtime_ns, stat.st_size)
    if key not in _EPOCHS:
        try:
            epoch = read_checkpoint(path).get("epoch")
        except LandscapeError:
            epoch = None
        _EPOCHS[key] = epoch if isinstance(epoch, int) else None
    return _EPOCHS[key]


def _parameter_count(plan: Plan, run_dir: Path) -> int:
    """Trainable parameters of the run's model, without training it (one small build on the CPU)."""
    from landscape.data import load_dataset
    from landscape.models import build_model, count_parameters

    config = plan.train_configs[run_dir]
    kwargs = {k: v for k, v in {"seq_len": config.seq_len, "vocab": config.vocab}.items() if v is not None}
    data = load_dataset(config.dataset, "test", config.data_dir, **kwargs)
    return count_parameters(build_model(config.model, data.input_shape, data.num_classes, seed=0,
                                        **config.model_kwargs))


def _disk_plan(the_plan: Plan, runs_dir: Path) -> str:
    """One line: the disk the exact spectra still to run need (each matrix is removed after its solve,
    so the largest one is the peak) against what is free where the runs go."""
    from landscape.resources import format_bytes, free_disk

    sizes = []
    for step in the_plan.steps:
        if step.disk_bytes is not None and not step.done():
            try:
                sizes.append(step.disk_bytes())
            except LandscapeError as err:
                return f"disk: cannot size {step.command} ({err})"
    free = free_disk(runs_dir)
    line = (f"disk: {len(sizes)} exact spectra to run need up to {format_bytes(max(sizes, default=0))} at once "
            f"({format_bytes(sum(sizes))} written in all, each matrix removed after its solve)"
            + (f"; {format_bytes(free)} free in {runs_dir}" if free is not None else ""))
    if free is not None and sizes and max(sizes) > free:
        line += ": the largest will be refused there (pass --runs on a larger disk)"
    return line


def _fresh(artifact: Path, run_dir: Path) -> bool:
    """The artifact exists and is not older than the checkpoint it was measured on (a resumed run invalidates it)."""
    checkpoint = run_dir / "checkpoint.pt"
    return artifact.exists() and (not checkpoint.exists() or artifact.stat().st_mtime >= checkpoint.stat().st_mtime)


def _spectrum_step(plan: Plan, target: str, run_dir: Path, method: str, device: str, data_dir, **options) -> None:
    from landscape.spectrum import SpectrumConfig, compute_spectrum

    config = SpectrumConfig(checkpoint=str(run_dir / "checkpoint.pt"), method=method, device=device,
                            data_dir=data_dir, **options)
    out = config.output_dir()
    if plan.has(run_dir, f"spectrum {method}"):
        return
    flags = " ".join(f"{_flag(k, 'spectrum')} {v}" for k, v in options.items())
    plan.steps.append(
        Step(
            target,
            f"spectrum {method}",
            f"landscape spectrum {run_dir / 'checkpoint.pt'} --method {method} {flags}".strip(),
            lambda: compute_spectrum(config, progress=plan.progress),
            lambda: _fresh(out / "spectrum.json", run_dir),
            run_dir,
            disk_bytes=(lambda: _parameter_count(plan, run_dir) ** 2 * 8) if method == "exact" else None,
        )
    )


def _flatness_step(plan: Plan, target: str, run_dir: Path, measure: str, device: str, data_dir, **options) -> None:
    from landscape.flatness.stage import FlatnessConfig, compute_flatness

    config = FlatnessConfig(checkpoint=str(run_dir / "checkpoint.pt"), measure=measure, device=device,
                            data_dir=data_dir, **options)
    if plan.has(run_dir, f"flatness {measure}"):
        return
    flags = " ".join(" ".join(f"--gamma {g:g}" for g in v) if k == "gammas" else f"{_flag(k, 'flatness')} {v}"
                     for k, v in options.items())
    plan.steps.append(Step(target, f"flatness {measure}",
                           f"landscape flatness {run_dir / 'checkpoint.pt'} --measure {measure} {flags}".strip(),
                           lambda: compute_flatness(config, log=Throttled(plan.log) if plan.progress else None),
                           lambda: _fresh(config.output_path(), run_dir), run_dir))


def _slice_step(plan: Plan, target: str, run_dir: Path, device: str, data_dir, *, to: Path | None = None,
                **options) -> None:
    from landscape.slices import SliceConfig, compute_slice

    other = None if to is None else str(to / "checkpoint.pt")
    config = SliceConfig(checkpoint=str(run_dir / "checkpoint.pt"), to=other, device=device, data_dir=data_dir,
                         **options)
    name = f"slice {config.name()}"
    if plan.has(run_dir, name):
        return
    flags = " ".join(f"--{k.replace('_', '-')} {v}" for k, v in options.items())
    target_flag = f" --to {to}" if to is not None else ""
    plan.steps.append(Step(target, name, f"landscape slice {run_dir}{target_flag} {flags}".strip(),
                           lambda: compute_slice(config, progress=plan.progress,
                                                 log=Throttled(plan.log) if plan.progress else (lambda m: None)),
                           lambda: _fresh(config.output_dir() / "slice.json", run_dir), run_dir))


def _dataset_available(name: str, data_dir) -> str | None:
    """None when ``name`` loads here; otherwise the loader's one-sentence reason."""
    from landscape.data import load_dataset

    try:
        load_dataset(name, "test", root=data_dir)
    except LandscapeError as err:
        return str(err)
    return None


# ------------------------------------------------------------------ the targets

#: Per scale: (dataset, samples for curvature, table1 budgets, population).
QUICK = {
    "dataset": "digits",
    "model": "small-mnistfc",
    "samples": 1000,
    "seeds": (0, 1),
    # Table 1 at a shortened budget: Entropy-SGD 5 epochs x L=20 = 100 effective epochs vs SGD 100 epochs
    "table1": {"entropy-sgd": {"epochs": 5}, "sgd": {"epochs": 100}},
    # correlation population: optimizer x learning-rate factor x batch size (x seeds), ~20 effective epochs each
    "population": {"optimizers": {"sgd": 20, "entropy-sgd": 1, "replicated-sgd": 7, "sam": 10},
                   "lr_factors": (1.0, 0.3), "batch_sizes": (32, 128), "seeds": (0,)},
    "flatness_samples": 500,
    "measures": ("local-energy", "sharpness", "pac-bayes", "fisher-rao", "local-entropy"),
}
FULL = {
    "dataset": "fashion-mnist",
    "model": "small-lenet",
    "samples": 4096,
    "seeds": (0, 1),
    # Fig. 1 / 3a: SGD minima of small-lenet / small-mnistfc. The paper trains small-LeNet with Adam
    # and small-mnistfc with momentum SGD (Sec. 5.1 (i)-(ii)) and gives no schedule; we use SGD for
    # both (its Fig. 3 caption: "optima obtained by SGD are mostly flat")
    "spectrum_training": {"optimizer": "sgd", "epochs": 50},
    # Table 1 / Fig. 4 (Sec. 5.2): Adam 100 epochs, lr 1e-3 divided by 5 every 30 epochs, against
    # Entropy-SGD 5 epochs with L=20, eta=1 divided by 10 after epoch 2, eta'=0.1, noise 1e-3,
    # gamma0=1e-4 growing by 1.001 per update, Nesterov momentum (0.9) in both loops. The paper also
    # "reduces the dropout probability" for Entropy-SGD; its values are lost from our copy of the
    # text, and the authors' code keeps 0.5 for every optimizer (models.lua), as we do here: pass
    # e.g. `landscape train ... --model-arg dropout=0.25` to try a reduced one.
    "table1_models": ("mnistfc", "lenet"),
    "table1": {
        "adam": {"epochs": 100, "lr": 1e-3, "lr_milestones": (30, 60, 90), "lr_decay": 0.2},
        "entropy-sgd": {"epochs": 5, "L": 20, "lr": 1.0, "lr_milestones": (2,), "lr_decay": 0.1, "sgld_lr": 0.1,
                        "noise": 1e-3, "gamma": 1e-4, "scoping": 1e-3, "sgld_momentum": 0.9},
    },
    "population": {"optimizers": {"sgd": 20, "entropy-sgd": 1, "replicated-sgd": 7, "sam": 10},
                   "lr_factors": (1.0, 0.3), "batch_sizes": (32, 128), "seeds": (0, 1)},
    "flatness_samples": 2000,
    "measures": ("local-energy", "sharpness", "pac-bayes", "fisher-rao", "local-entropy"),
    # Fig. 3b (Sec. 5.1 (iii)): char-lstm (48 hidden units) trained with Adam "to re-generate a small
    # piece of text consisting of 256 lines of length 32": it learns only the first 256 windows of
    # 32 characters (train_subset), and the exact Hessian is taken over those same 256 (32,640
    # product columns of an LSTM: ~1 h on 2 cores). The paper gives no epoch count or batch size;
    # trained on the whole text for a few epochs the net stays near the unigram loss (3.1 nats).
    # The paper's 96 one-hot symbols (vocab ascii96) give its 32,640 parameters; a file's own
    # characters give fewer (GPL-3: 76 symbols, 27,840).
    # Fig. 3c: All-CNN-BN diagonal Fisher
    "char_lstm": {"optimizer": "adam", "epochs": 1000, "lr": 2e-3, "seq_len": 32, "train_subset": 256,
                  "batch_size": 32, "vocab": "ascii96", "spectrum_samples": 256},
    "all_cnn": {"optimizer": "sgd", "epochs": 20, "lr": 0.1, "preprocess": "gcn-zca"},
}


def _fig3_full(result: Plan, config: ReproduceConfig, settings: dict, root: Path) -> None:
    """Fig. 3b (char-lstm on a text file) and 3c (All-CNN-BN diagonal Fisher on CIFAR-10), when their data exist."""
    device, data_dir = config.device, config.data_dir
    if config.text is None:
        result.skipped.append("fig3b (char-lstm): no text file given; pass --text FILE (any UTF-8 text of at least "
                              "256 lines of 32 characters; the paper does not name the piece of text it used).")
    elif not Path(config.text).is_file():
        result.skipped.append(f"fig3b (char-lstm): the text file '{config.text}' does not exist.")
    else:
        kwargs = dict(settings["char_lstm"])
        optimizer = kwargs.pop("optimizer")
        samples = kwargs.pop("spectrum_samples", settings["samples"])
        for seed in settings["seeds"]:
            run_dir = root / f"char-lstm-{optimizer}-s{seed}"
            _train_step(
                result,
                "fig3",
                run_dir,
                {
                    "model": "char-lstm",
                    "dataset": f"text:{Path(config.text).resolve()}",
                    "optimizer": optimizer,
                    "seed": seed,
                    **kwargs,
                },
                device,
                data_dir,
            )
            _spectrum_step(result, "fig3", run_dir, "exact", device, data_dir, samples=samples)
    missing = _dataset_available("cifar10", data_dir)
    if missing:
        result.skipped.append(f"fig3c (All-CNN-BN Fisher): {missing}")
        return
    kwargs = dict(settings["all_cnn"])
    optimizer = kwargs.pop("optimizer")
    for seed in settings["seeds"]:
        run_dir = root / f"all-cnn-bn-{optimizer}-s{seed}"
        _train_step(result, "fig3", run_dir, {"model": "all-cnn-bn", "dataset": "cifar10", "optimizer": optimizer,
                                              "seed": seed, **kwargs}, device, data_dir)
        _spectrum_step(result, "fig3", run_dir, "fisher-diag", device, data_dir, samples=settings["samples"])


@dataclass
class _Planner:
    """Adds the steps of each target to ``result``; targets share runs (each planned once)."""

    config: ReproduceConfig
    settings: dict
    result: Plan

    @property
    def dataset(self) -> str:
        return self.config.dataset or self.settings["dataset"]

    @property
    def root(self) -> Path:
        return self.config.runs_dir

    def model_for(self, name: str) -> str:
        """The paper's model, or small-mnistfc on the 8x8 digits (too small for the others)."""
        return "small-mnistfc" if self.dataset == "digits" else name

    def train(self, target: str, run_dir: Path, **kwargs) -> Path:
        return _train_step(self.result, target, run_dir, {"dataset": self.dataset, **kwargs}, self.config.device,
                           self.config.data_dir)

    def spectrum(self, target: str, run_dir: Path, method: str, **options) -> None:
        _spectrum_step(self.result, target, run_dir, method, self.config.device, self.config.data_dir,
                       samples=self.settings["samples"], **options)

    def sgd_minimum(self, target: str, model: str, seed: int) -> Path:
        kwargs = dict(self.settings.get("spectrum_training",
                                        {"optimizer": "sgd", **self.settings["table1"].get("sgd", {})}))
        optimizer = kwargs.pop("optimizer")
        return self.train(target, self.root / f"{model}-{optimizer}-s{seed}", model=model, optimizer=optimizer,
                          seed=seed, **kwargs)

    def table1(self) -> None:
        for model in map(self.model_for, self.settings.get("table1_models", ("small-mnistfc",))):
            for optimizer, kwargs in self.settings["table1"].items():
                for seed in self.settings["seeds"]:
                    self.train("table1", self.root / f"{model}-{optimizer}-s{seed}", model=model,
                               optimizer=optimizer, seed=seed, **kwargs)

    def fig1(self) -> None:
        """Exact Hessian spectra at two SGD minima (small-lenet in the paper)."""
        for seed in self.settings["seeds"]:
            self.spectrum("fig1", self.sgd_minimum("fig1", self.model_for("small-lenet"), seed), "exact")

    def fig3(self) -> None:
        """Fig. 3a's exact spectra, and Lanczos / SLQ / the Fisher diagonal on the first of its minima."""
        model = self.model_for("small-mnistfc")
        for seed in self.settings["seeds"]:
            self.spectrum("fig3", self.sgd_minimum("fig3", model, seed), "exact")
        first = self.root / f"{model}-sgd-s{self.settings['seeds'][0]}"
        self.spectrum("fig3", first, "lanczos", k=20)
        self.spectrum("fig3", first, "slq")
        self.spectrum("fig3", first, "fisher-diag")

    def correlation(self) -> None:
        """The population (optimizer x learning rate x batch size x seed), every flatness measure on each."""
        from landscape.train import DEFAULT_LR

        population = self.settings["population"]
        grid = [(optimizer, epochs, DEFAULT_LR[optimizer] * factor, batch, seed)
                for optimizer, epochs in population["optimizers"].items() for factor in population["lr_factors"]
                for batch in population["batch_sizes"] for seed in population["seeds"]]
        for optimizer, epochs, lr, batch, seed in grid:
            run_dir = self.train("correlation", self.root / "population" / f"{optimizer}-lr{lr:g}-b{batch}-s{seed}",
                                 model=self.model_for("small-mnistfc"), optimizer=optimizer, lr=lr,
                                 batch_size=batch, seed=seed, epochs=epochs)
            for measure in self.settings["measures"]:
                _flatness_step(self.result, "correlation", run_dir, measure, self.config.device,
                               self.config.data_dir, **self.flatness_options(measure))

    def flatness_options(self, measure: str) -> dict:
        options = {"data_samples": self.settings["flatness_samples"]}
        if measure == "local-entropy":
            # Laplace from SLQ + CG (Sec. 4.1's saddle point), the scopes of Fig. 2
            options.update(method="laplace", gammas=(1.0, 10.0, 100.0))
        return options

    def slices(self) -> None:
        """Loss-landscape slices of an Entropy-SGD and an SGD minimum (Table 1's first seed): 1-D and 2-D
        random filter-normalised, the top Hessian eigen-directions, and the straight path between them."""
        model = self.model_for(self.settings.get("table1_models", ("small-mnistfc",))[0])
        seed = self.settings["seeds"][0]
        minima = [self.train("slices", self.root / f"{model}-{optimizer}-s{seed}", model=model, optimizer=optimizer,
                             seed=seed, **self.settings["table1"][optimizer])
                  for optimizer in ("entropy-sgd", "sgd") if optimizer in self.settings["table1"]]
        for run_dir in minima:
            for options in ({"directions": "random", "dims": 1}, {"directions": "random", "dims": 2},
                            {"directions": "hessian", "dims": 2}):
                _slice_step(self.result, "slices", run_dir, self.config.device, self.config.data_dir, **options)
        if len(minima) == 2:
            _slice_step(self.result, "slices", minima[0], self.config.device, self.config.data_dir, to=minima[1],
                        dims=1)

    def fig2(self) -> None:
        from landscape.flatness.fig2 import write_fig2

        fig_dir, result = self.root / "fig2", self.result
        result.steps.append(Step("fig2", "fig2", f"python -c \"from landscape.flatness.fig2 import write_fig2; "
                                                 f"write_fig2('{fig_dir}')\"",
                                 lambda: write_fig2(fig_dir, log=result.log if result.progress else None),
                                 lambda: (fig_dir / "fig2.json").exists(), fig_dir))
        result.report_dirs.append(fig_dir)


#: Targets that need the scale's image dataset, in the order they are planned.
IMAGE_TARGETS = ("table1", "fig1", "fig3", "correlation", "slices")


def plan(config: ReproduceConfig, settings: dict | None = None) -> Plan:
    """The steps ``config`` asks for, in order, without running anything.

    ``settings`` replaces entries of the scale's table (:data:`QUICK` / :data:`FULL`),
    e.g. a smaller population; the runs directory should then differ from the default.
    A target whose data are missing is listed in ``skipped`` with the reason; the steps
    of the others (Fig. 3b's text, Fig. 2's toy energy) are planned all the same.
    """
    planner = _Planner(config, {**(QUICK if config.scale == "quick" else FULL), **(settings or {})}, Plan())
    wanted = TARGETS[:-1] if config.target == "all" else (config.target,)
    dataset = planner.dataset
    missing = _dataset_available(dataset, config.data_dir) if dataset != "digits" else None
    if missing:
        planner.result.skipped.append(f"{dataset}: {missing}")
    for target in IMAGE_TARGETS:
        if target in wanted and missing is None:
            getattr(planner, target)()
    if "fig3" in wanted and config.scale == "full":
        # Fig. 3b and 3c bring their own data (a text file, CIFAR-10): planned whether or not the scale's images load
        _fig3_full(planner.result, config, planner.settings, planner.root)
    if "fig2" in wanted:
        planner.fig2()
    return planner.result


def reproduce(config: ReproduceConfig, *, log: Callable[[str], None] = print, dry_run: bool = False,
              settings: dict | None = None, progress: bool = False) -> Path | None:
    """Run (or with ``dry_run`` only list) the plan, then write ``config.out/index.html``.

    ``progress`` shows progress inside long steps (training, dense builds): a bar on a
    terminal, a timed line every 30 s otherwise.
    """
    from landscape.report import build_report
    from landscape.report.paper import target_title

    the_plan = plan(config, settings)
    the_plan.progress = progress
    the_plan.log = lambda message: log("    " + message.strip())
    for reason in the_plan.skipped:
        log(f"skipped: {reason}")
    todo = [s for s in the_plan.steps if not s.done()]
    log(f"{len(the_plan.steps)} steps, {len(the_plan.steps) - len(todo)} already done, {len(todo)} to run "
        f"(runs in {config.runs_dir})")
    if dry_run:
        for step in the_plan.steps:
            log(f"  [{'done' if step.done() else 'todo'}] {step.target}: {step.command}")
        log(_disk_plan(the_plan, config.runs_dir))
        return None
    from landscape.io import ensure_output_dir

    ensure_output_dir(config.out_dir)  # an unwritable --out or --runs is found before the first training
    ensure_output_dir(config.runs_dir, "--runs")
    start = time.perf_counter()
    timings = []
    failed_runs: set[Path] = set()
    i = 0
    for step in the_plan.steps:
        # asked again now: a training step that just ran makes the measurements of its old checkpoint stale
        if step.done():
            continue
        i += 1
        todo_left = max(len(todo), i)
        t0 = time.perf_counter()
        where = f" ({step.run_dir})" if step.run_dir else ""
        log(f"[{i}/{todo_left}] {step.target}: {step.name}{where}")
        if step.run_dir is not None and step.run_dir in failed_runs:
            the_plan.skipped.append(f"{step.command}: not run, the training of {step.run_dir} failed.")
            log("    skipped: its training run failed")
            continue
        try:
            step.run()
        except LandscapeError as err:  # e.g. a population member whose loss diverged: record it, go on
            the_plan.skipped.append(f"{step.command} failed: {err}")
            log(f"    failed: {err}")
            if step.name == "train" and step.run_dir is not None:
                failed_runs.add(step.run_dir)
            continue
        timings.append({"step": step.command, "wall_s": time.perf_counter() - t0})
        elapsed = time.perf_counter() - start
        log(f"    done in {timings[-1]['wall_s']:.1f} s; {elapsed:.0f} s elapsed, about "
            f"{elapsed / i * (todo_left - i):.0f} s to go")
    manifest = {
        "config": dataclasses.asdict(config), "steps": [{"target": s.target, "command": s.command}
                                                          for s in the_plan.steps],
        "skipped": the_plan.skipped, "timings": timings, "wall_s": time.perf_counter() - start,
    }
    config.runs_dir.mkdir(parents=True, exist_ok=True)
    write_json(config.runs_dir / "reproduce.json", manifest)
    if not the_plan.report_dirs:
        raise LandscapeError("Nothing to report: every target was skipped (see the lines above).")
    command = f"landscape reproduce {config.target} --scale {config.scale} --out {config.out_dir}"
    extra = {"commands": [command] + [s.command for s in the_plan.steps], "skipped": the_plan.skipped}
    report_dirs = [str(p) for p in the_plan.report_dirs if p not in failed_runs and p.exists()]
    if not report_dirs:
        raise LandscapeError("Nothing to report: every step failed or was skipped (see the lines above).")
    # full scale: keep the small inputs beside the page (OUT/runs), so the published report can be
    # re-rendered, or extended with more runs, after the run directories are gone
    path = build_report(report_dirs, config.out_dir,
                        title=target_title(config.target, config.scale), log=log, extra=extra,
                        archive=config.scale == "full")
    return path
