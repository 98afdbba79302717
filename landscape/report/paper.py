"""What Chaudhari et al. 2017 (Entropy-SGD) report, as data the report can put in a column.

Each figure or table row names the dataset it was measured on: a number of ours is set
beside the paper's only when our run used the same data (:func:`same_data`); otherwise
the page says "different data" instead of inviting a comparison that means nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["PaperSpectrum", "PaperResult", "PaperTable1", "PAPER_SPECTRA", "PAPER_TABLE1", "TARGET_TITLES",
           "OPERATOR_NAMES", "operator_name", "same_data", "target_title"]


@dataclass(frozen=True)
class PaperSpectrum:
    """One eigenspectrum figure: statistic -> the paper's value (keys as in spectrum.json)."""

    figure: str
    model: str
    dataset: str  # one of our dataset names, or "text" for any text file
    dataset_label: str
    runs: int
    operator: str = "hessian"
    stats: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class PaperResult:
    optimizer: str
    value: float  # test error as a fraction, or perplexity
    std: float
    effective_epochs: float


@dataclass(frozen=True)
class PaperTable1:
    """One row of Table 1 (5 runs each): Entropy-SGD and the baseline, error or perplexity."""

    model: str
    dataset: str
    dataset_label: str
    metric: str  # "test_error" or "test_perplexity"
    results: tuple[PaperResult, ...]


#: Figs. 1 and 3. "fraction 1e-4" is the fraction of eigenvalues with |lambda| below 1e-4.
PAPER_SPECTRA = {
    "small-lenet": PaperSpectrum("Fig. 1", "small-lenet", "mnist", "MNIST", 2,
                                 stats={"fraction 1e-4": 0.94, "lambda_max": 40.0, "lambda_min": -0.46}),
    "small-mnistfc": PaperSpectrum("Fig. 3a", "small-mnistfc", "mnist", "MNIST", 2, stats={"fraction 1e-2": 0.90}),
    "char-lstm": PaperSpectrum("Fig. 3b", "char-lstm", "text", "256 lines of 32 characters of a text", 5,
                               stats={"fraction 1e-5": 0.95}),
    "all-cnn-bn": PaperSpectrum("Fig. 3c", "all-cnn-bn", "cifar10", "CIFAR-10", 4, operator="fisher",
                                stats={"fraction 1e-5": 0.95}),
}

#: Table 1 (Sec. 5.2-5.4): the error (or perplexity) and the effective epochs at which it is reached.
PAPER_TABLE1 = {
    "mnistfc": PaperTable1("mnistfc", "mnist", "MNIST", "test_error", (
        PaperResult("entropy-sgd", 0.0137, 0.0003, 120), PaperResult("adam", 0.0139, 0.0003, 66))),
    "lenet": PaperTable1("lenet", "mnist", "MNIST", "test_error", (
        PaperResult("entropy-sgd", 0.0050, 0.0001, 80), PaperResult("adam", 0.0051, 0.0001, 100))),
    "all-cnn-bn": PaperTable1("all-cnn-bn", "cifar10", "CIFAR-10", "test_error", (
        PaperResult("entropy-sgd", 0.0781, 0.0009, 160), PaperResult("sgd", 0.0771, 0.0019, 180))),
    "lstm-lm": PaperTable1("lstm-lm", "ptb", "PTB", "test_perplexity", (
        PaperResult("entropy-sgd", 77.656, 0.171, 25), PaperResult("sgd", 78.6, 0.26, 55))),
    "char-lstm": PaperTable1("char-lstm", "war-and-peace", "War and Peace", "test_perplexity", (
        PaperResult("entropy-adam", 1.217, 0.005, 25), PaperResult("adam", 1.226, 0.01, 40))),
}

#: What each `landscape reproduce` target's page is.
TARGET_TITLES = {
    "fig1": "Fig. 1: exact Hessian spectra of small-LeNet",
    "fig2": "Fig. 2: local entropy concentrates on wide valleys",
    "fig3": "Fig. 3: Hessian spectra of small-mnistfc, char-LSTM and All-CNN-BN (Fisher)",
    "table1": "Table 1 / Figs. 4-6: Entropy-SGD against SGD / Adam",
    "correlation": "Flatness measures against test error",
    "slices": "Loss-landscape slices of an Entropy-SGD and an SGD minimum",
    "all": "Entropy-SGD (Chaudhari et al. 2017): every reproduced figure and table",
}


#: How an operator's name is written in prose.
OPERATOR_NAMES = {"hessian": "Hessian", "ggn": "GGN", "fisher": "Fisher"}


def operator_name(operator) -> str:
    return OPERATOR_NAMES.get(str(operator), str(operator))


def target_title(target: str, scale: str) -> str:
    """A page title for ``landscape reproduce TARGET --scale SCALE``."""
    return f"{TARGET_TITLES.get(target, target)} ({scale} scale)"


def same_data(paper_dataset: str, ours: str | None) -> bool:
    """Whether our run's dataset (config "dataset") is the one the paper measured on.

    Text files match by name: "text:.../war-and-peace.txt" is War and Peace; the paper's
    Fig. 3b names no text, so any text file matches "text".
    """
    ours = str(ours or "").lower()
    if paper_dataset == "text":
        return ours.startswith("text")
    if paper_dataset == "war-and-peace":
        name = ours.rsplit("/", 1)[-1]
        return ours.startswith("text") and "war" in name and "peace" in name
    return ours == paper_dataset
