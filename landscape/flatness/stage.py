"""The flatness stage: checkpoint -> one flatness measure -> RUN_DIR/flatness-<measure>.json.

``compute_flatness(FlatnessConfig(...))`` reads a checkpoint, takes the first N samples
of the splits it needs (or a seeded subset, as the spectrum stage does), and runs one
measure:

=============  ==============================================================  =================
measure        what                                                            library function
=============  ==============================================================  =================
local-entropy  F(w, gamma) - (n/2) log(2 pi/gamma) at each --gamma, sgld/laplace  local_entropy
local-energy   delta E(sigma) for loss and error on train and test               local_energy
sharpness      epsilon-sharpness (relative + keskar box), Hessian lambda_max,    epsilon_sharpness,
               Hessian trace                                                     hessian_sharpness
pac-bayes      sigma' (multiplicative and additive noise), 1/sigma'^2           pac_bayes_sigma
fisher-rao     <w, F w> with the model and the empirical Fisher                  fisher_rao_norm
=============  ==============================================================  =================

Local entropy needs an energy f. Here f = beta x (mean loss over the N samples); the
default beta = N makes f the summed loss, the negative log-likelihood of the samples, so
exp(-f(x') - gamma/2 ||x - x'||^2) is the posterior under a Gaussian prior of precision
gamma centred at the trained weights and F its log-evidence. ``beta=1`` is the mean loss
itself (the scale of the paper's Eq. 4 with a unit temperature). The Laplace method
reads an exact spectrum from ``--spectrum`` (a ``landscape spectrum --method exact``
result on the same samples: checked) or falls back to SLQ on the Hessian operator.

Every result records the settings, the sample rule, the versions, the wall time and,
per entry, whether the measure is invariant to ReLU layer rescaling.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from landscape.checkpoint import checkpoint_dataset, load_checkpoint, package_versions
from landscape.curvature.base import ScaledOperator
from landscape.curvature.operators import HessianOperator, make_batches
from landscape.data.splits import select_samples
from landscape.device import resolve_device
from landscape.errors import LandscapeError
from landscape.flatness.network import check_parameter_names
from landscape.io import ensure_output_dir, read_verified_npz, write_json
from landscape.losses import cross_entropy
from landscape.progress import Ticks
from landscape.results import check_replaceable

MEASURES = ("local-entropy", "local-energy", "sharpness", "pac-bayes", "fisher-rao")
DEFAULT_SIGMAS = (0.0, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5)
DEFAULT_GAMMAS = (1.0, 10.0, 100.0)

# settings every measure uses, and those specific to each (the rest are refused by the CLI
# when given, and left out of the saved config)
COMMON_SETTINGS = ("checkpoint", "measure", "data_samples", "batch_size", "seed", "subset_seed", "dtype", "device",
                   "out", "data_dir", "params")
MEASURE_SETTINGS = {
    "local-entropy": ("split", "samples", "gammas", "method", "beta", "spectrum", "num_steps", "burn_in"),
    "local-energy": ("eval_splits", "samples", "sigmas", "noise"),
    "sharpness": ("split", "epsilon", "steps", "hessian", "max_probes"),
    "pac-bayes": ("split", "samples", "target", "metric"),
    "fisher-rao": ("split",),
}


@dataclass(frozen=True)
class FlatnessConfig:
    checkpoint: str
    measure: str = "local-energy"
    data_samples: int = 1000
    split: str = "train"  # local-entropy, sharpness, pac-bayes, fisher-rao
    eval_splits: tuple[str, ...] = ("train", "test")  # local-energy
    batch_size: int = 256  # samples per forward pass: memory and speed, not the result
    seed: int = 0
    subset_seed: int | None = None  # None: the first N samples in dataset order
    dtype: str = "float64"
    device: str = "auto"
    out: str | None = None
    data_dir: str | None = None
    params: tuple[str, ...] | None = None
    samples: int = 20  # Monte-Carlo draws (local-energy, pac-bayes); chains (sgld)
    # local entropy
    gammas: tuple[float, ...] = DEFAULT_GAMMAS
    method: str = "sgld"
    beta: float | None = None  # None: N (summed loss)
    spectrum: str | None = None
    num_steps: int = 400
    burn_in: int = 150
    # local energy / pac-bayes
    sigmas: tuple[float, ...] = DEFAULT_SIGMAS
    noise: str = "multiplicative"
    target: float = 0.1
    metric: str = "error"
    # sharpness
    epsilon: float = 1e-3
    steps: int = 20
    hessian: bool = True
    max_probes: int = 200  # cap on the Hessian trace's Hutchinson probes

    def __post_init__(self) -> None:
        if self.measure not in MEASURES:
            raise LandscapeError(f"Unknown measure '{self.measure}': choose one of {', '.join(MEASURES)}.")
        if self.method not in ("sgld", "laplace"):
            raise LandscapeError(f"--method must be sgld or laplace, got '{self.method}'.")
        if self.data_samples < 1:
            raise LandscapeError(f"--samples must be >= 1, got {self.data_samples}.")
        if self.samples < 1:
            raise LandscapeError(f"--draws must be >= 1, got {self.samples}.")
        if self.dtype not in ("float32", "float64"):
            raise LandscapeError(f"--dtype must be float32 or float64, got '{self.dtype}'.")
        if self.measure == "local-entropy" and (not self.gammas or any(not (g > 0 and math.isfinite(g))
                                                                         for g in self.gammas)):
            raise LandscapeError(f"--gamma values must be positive numbers, got {list(self.gammas)}.")
        if self.beta is not None and not (self.beta > 0 and math.isfinite(self.beta)):
            raise LandscapeError(f"--beta must be a positive number, got {self.beta}.")

    def output_path(self) -> Path:
        if self.out is not None:
            return Path(self.out) / f"flatness-{self.measure}.json"
        ckpt = Path(self.checkpoint)
        run_dir = ckpt if ckpt.is_dir() else ckpt.parent
        return run_dir / f"flatness-{self.measure}.json"


def _samples(meta: dict, config: FlatnessConfig, split: str, log=None) -> tuple[torch.Tensor, torch.Tensor, str]:
    """The first N samples of ``split`` (or a seeded subset), N capped at the split's size."""
    dataset = checkpoint_dataset(meta, split, config.data_dir)
    n = min(config.data_samples, len(dataset))
    if n < config.data_samples and log is not None:
        log(f"note: the '{split}' split has {len(dataset)} samples; using all of them (--samples "
            f"{config.data_samples}).")
    inputs, targets, info = select_samples(dataset, n, config.subset_seed)
    return inputs, targets, info["rule"]


#: Settings that change speed, memory or where files go, not the measure: a rerun may change them freely.
NOT_RESULT_SETTINGS = ("checkpoint", "device", "out", "data_dir", "batch_size")


def compute_flatness(config: FlatnessConfig, *, progress: bool = False, log=None,
                     force: bool = False) -> tuple[Path, dict]:
    """Run one measure; returns ``(path of the JSON, result)`` and writes it atomically.

    Long loops (noise draws, SGLD levels, the Laplace anchor's probes) show bars when
    ``progress``, else lines to ``log``. A result at the output path computed with other
    settings is kept: this raises unless ``force`` (the result's ``replaced`` lists what
    changed).
    """
    with Ticks(progress, log or (lambda message: None)) as ticks:
        return _compute_flatness(config, ticks, force)


def _compute_flatness(config: FlatnessConfig, ticks: Ticks, force: bool) -> tuple[Path, dict]:
    start = time.perf_counter()
    log = ticks.log
    device = resolve_device(config.device)
    dtype = torch.float64 if config.dtype == "float64" else torch.float32
    model, meta = load_checkpoint(config.checkpoint, device=device)
    path = config.output_path()
    saved = {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(config).items()
             if k in COMMON_SETTINGS or k in MEASURE_SETTINGS[config.measure]}
    replaced = check_replaceable(path, saved, force=force, ignore=NOT_RESULT_SETTINGS)
    ensure_output_dir(path.parent)
    params = list(config.params) if config.params else None
    result: dict = {
        "measure": config.measure,
        "checkpoint": str(meta.get("path", config.checkpoint)),
        "model": meta["model"],
        "dataset": (meta.get("dataset") or {}).get("name"),
        "config": saved,
        "versions": package_versions(),
        "device": str(device),
    }
    check_parameter_names(model, params)
    common = dict(params=params, batch_size=config.batch_size, dtype=dtype, device=device)

    if config.measure == "local-energy":
        from landscape.flatness.local_energy import local_energy

        data, rules = {}, {}
        for split in config.eval_splits:
            x, y, rules[split] = _samples(meta, config, split, log)
            data[split] = (x, y)
        draw_done = ticks.loop(f"noise draws ({len(config.sigmas)} sigmas x {len(data)} splits)")
        energy = local_energy(model, data, config.sigmas, noise=config.noise, samples=config.samples,
                              seed=config.seed, progress=draw_done, **common)
        payload = energy.to_dict()
        payload.pop("values")  # per-draw raw values stay out of the JSON summary
        result.update(payload)
        result["sample_rules"] = rules
    else:
        x, y, rule = _samples(meta, config, config.split, log)
        result.update({"split": config.split, "data_samples": int(x.shape[0]), "sample_rule": rule})
        if config.measure == "local-entropy":
            result.update(_local_entropy(model, x, y, rule, config, dtype, device, params, ticks))
        elif config.measure == "sharpness":
            from landscape.flatness.sharpness import epsilon_sharpness, hessian_sharpness

            entries = [epsilon_sharpness(model, (x, y), config.epsilon, box=box, steps=config.steps, progress=log,
                                         **common)
                       for box in ("relative", "keskar")]
            if config.hessian:
                entries += hessian_sharpness(model, (x, y), seed=config.seed, max_probes=config.max_probes,
                                             progress=log, **common)
            result["entries"] = [e.to_dict() for e in entries]
        elif config.measure == "pac-bayes":
            from landscape.flatness.sharpness import pac_bayes_sigma

            result["entries"] = [
                pac_bayes_sigma(model, (x, y), target=config.target, metric=config.metric, noise=noise,
                                samples=config.samples, seed=config.seed, progress=log, **common).to_dict()
                for noise in ("multiplicative", "additive")
            ]
        elif config.measure == "fisher-rao":
            from landscape.flatness.sharpness import fisher_rao_norm

            result["entries"] = [fisher_rao_norm(model, (x, y), kind=kind, **common).to_dict()
                                 for kind in ("model", "empirical")]
    if replaced:
        result["replaced"] = {key: list(pair) for key, pair in replaced.items()}
    result["wall_s"] = time.perf_counter() - start
    write_json(path, result)
    return path, result


def _read_exact_spectrum(path: str, n: int, samples: int, split: str, rule: str) -> np.ndarray:
    """Eigenvalues of an exact spectrum result, refused unless it was taken on the same samples."""
    folder = Path(path)
    if folder.is_file():
        folder = folder.parent
    npz, summary = folder / "spectrum.npz", folder / "spectrum.json"
    if not npz.exists() or not summary.exists():
        raise LandscapeError(f"--spectrum '{path}' holds no spectrum.npz/spectrum.json; run "
                             "`landscape spectrum CHECKPOINT --method exact` first and pass its folder.")
    try:
        info = json.loads(summary.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise LandscapeError(f"--spectrum: {summary} is not readable JSON ({type(err).__name__}); re-run "
                             "`landscape spectrum --method exact`.") from None
    if not isinstance(info, dict):
        raise LandscapeError(f"--spectrum: {summary} holds no JSON object; re-run `landscape spectrum --method exact`.")
    if info.get("method") != "exact" or info.get("operator", "hessian") != "hessian":
        raise LandscapeError(f"--spectrum '{path}' is a {info.get('method')} {info.get('operator')} result; "
                             "the Laplace estimate needs the exact Hessian spectrum (--method exact).")
    if info.get("samples") != samples or info.get("split") != split or info.get("sample_rule") != rule:
        raise LandscapeError(f"--spectrum '{path}' was taken on {info.get('sample_rule')} but this run uses {rule}; "
                             "use the same --samples/--split (or recompute the spectrum).")
    arrays = read_verified_npz(npz, info, summary)  # the JSON vouches for these arrays (landscape.io)
    values = arrays.get("eigenvalues")
    if values is None or values.ndim != 1 or values.dtype.kind not in "fiu":
        raise LandscapeError(f"--spectrum: {npz} holds no 1-d numeric 'eigenvalues' array; re-run `landscape spectrum "
                             "--method exact`.")
    eigenvalues = np.asarray(arrays["eigenvalues"], dtype=np.float64)
    if not np.all(np.isfinite(eigenvalues)):
        raise LandscapeError(f"--spectrum: {npz} holds non-finite eigenvalues; re-run `landscape spectrum --method "
                             "exact`.")
    if eigenvalues.size != n:
        raise LandscapeError(f"--spectrum '{path}' has {eigenvalues.size} eigenvalues, the network {n} parameters.")
    return eigenvalues


def _local_entropy(model, x, y, rule: str, config: FlatnessConfig, dtype, device, params, ticks: Ticks) -> dict:
    from landscape.flatness.local_entropy import scope_curve

    op = HessianOperator(model, cross_entropy, make_batches(x, y, config.batch_size), dtype=dtype, device=device,
                         params=params)
    n_samples = int(x.shape[0])
    beta = float(n_samples if config.beta is None else config.beta)

    def energy(flat: torch.Tensor) -> torch.Tensor:
        p = op.unflatten(flat)
        return beta * sum(w * op.batch_loss(p, xb, yb) for (xb, yb), w in zip(op.batches, op.weights))

    x0 = op.parameter_vector().clone()
    hessian = ScaledOperator(op, beta)
    laplace_options: dict = {"hessian": hessian, "on_probe": ticks.loop("Laplace anchor: SLQ probes")}
    source = "slq"
    if config.spectrum:
        laplace_options["eigenvalues"] = beta * _read_exact_spectrum(config.spectrum, x0.numel(), n_samples,
                                                                      config.split, rule)
        source = "exact spectrum"
    ticks.log(f"local entropy of {x0.numel()} parameters by {config.method} (Laplace anchor from the {source}), "
        f"beta = {beta:g}, gammas {list(config.gammas)}")
    if config.method == "laplace":
        curve = scope_curve(energy, x0, list(config.gammas), method="laplace", seed=config.seed, **laplace_options)
    else:
        levels_done = ticks.loop(f"SGLD scope levels ({config.samples} chains)")

        def level_done(level: int, levels: int, gamma: float) -> None:
            levels_done(level, levels)

        curve = scope_curve(energy, x0, list(config.gammas), method="sgld", seed=config.seed,
                            num_chains=config.samples, num_steps=config.num_steps, burn_in=config.burn_in,
                            laplace_options=laplace_options, progress=level_done)
    payload = curve.to_dict()
    payload.update({"beta": beta, "energy": "beta x mean cross-entropy over the samples",
                    "laplace_source": source, "n_params": int(x0.numel()), "hvp_count": int(op.count),
                    "invariant_to_rescaling": False})
    return payload
