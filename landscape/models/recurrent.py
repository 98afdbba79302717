"""Recurrent language models from Chaudhari et al. 2017: char-lstm and lstm-lm (PTB-LSTM).

Both take int64 token ids ``(B, T)`` and return next-token logits ``(B, T, V)``, where
V is the ``num_classes`` given to :func:`~landscape.models.build_model` and
``input_shape = (T,)`` is the training window length. Every batch starts from a zero
state: windows are independent samples, so the loss (and hence its Hessian) is a plain
function of the parameters and the batch, with no hidden state carried between batches.

The zero initial state is built from the input with ``zeros_like`` rather than left to
``nn.LSTM``'s default, because the default state is not batched under
``torch.func.vmap`` and per-sample gradients would fail.
"""

from __future__ import annotations

import torch
from torch import nn

from landscape.errors import ShapeError
from landscape.models._validate import (
    choice_option,
    int_option,
    positive_float_option,
    probability_option,
    reject_shape,
)

CHAR_LSTM_VARIANTS: dict[str, dict[str, int]] = {
    # Sec. 5.1 (iii): 48 hidden units, one layer, 96 characters -> 32,640 parameters.
    "paper": {"hidden": 48, "layers": 1},
    # Sec. 5.4.2: two layers of 128 units, 87 characters, windows of 50 steps.
    "war-and-peace": {"hidden": 128, "layers": 2},
}


def _require_window(model: str, input_shape: tuple[int, ...]) -> int:
    if len(input_shape) != 1:
        raise reject_shape(
            model,
            input_shape,
            "(T,), a window of T >= 1 token ids,",
            "pass the sequence length only, for example (35,), and the vocabulary size "
            "as num_classes",
        )
    return input_shape[0]


def _check_tokens(model: str, tokens: torch.Tensor) -> None:
    if tokens.dim() != 2 or tokens.is_floating_point() or tokens.is_complex():
        raise ShapeError(
            f"Model '{model}' takes integer token ids of shape (batch, time), but was given "
            f"a {tokens.dtype} tensor of shape {tuple(tokens.shape)}."
        )


def _zero_state(inputs: torch.Tensor, layers: int, hidden: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(h0, c0) of zeros shaped (layers, B, hidden), batched wherever ``inputs`` is."""
    batch = inputs.shape[0]
    zeros = torch.zeros_like(inputs[:, 0, :1]).expand(batch, hidden)
    h0 = zeros.unsqueeze(0).expand(layers, batch, hidden).contiguous()
    return h0, h0.clone()


class CharLSTM(nn.Module):
    """char-lstm: one-hot characters -> LSTM -> linear read-out without bias.

    Paper Sec. 5.1 (iii): "a recurrent network with 48 hidden units and LSTM architecture
    ... 32,640 parameters ... 96-bit one-hot encoded characters". With no embedding (the
    one-hot vector of size V feeds the LSTM directly), ``nn.LSTM(V, 48)`` with both bias
    vectors has 4*48*(96 + 48) + 2*4*48 = 28,032 parameters and a bias-free
    ``Linear(48, V)`` 4,608 more: 32,640 exactly for V = 96. An output bias would give
    32,736, so the read-out has none.

    ``variant="war-and-peace"`` selects the Sec. 5.4.2 network (2 layers of 128 units;
    use num_classes=87, input_shape=(50,)). Explicit ``hidden`` / ``layers`` override the
    variant's values.

    Options: ``variant`` ("paper"), ``hidden`` (from variant: 48), ``layers`` (from
    variant: 1).
    """

    name = "char-lstm"
    task = "sequence"
    paper_section = "Sec. 5.1 (iii), Sec. 5.4.2"

    def __init__(
        self,
        input_shape: tuple[int, ...],
        num_classes: int,
        *,
        variant: str = "paper",
        hidden: int | None = None,
        layers: int | None = None,
    ):
        super().__init__()
        variant = choice_option(self.name, "variant", variant, tuple(CHAR_LSTM_VARIANTS))
        preset = CHAR_LSTM_VARIANTS[variant]
        hidden = int_option(self.name, "hidden", preset["hidden"] if hidden is None else hidden)
        layers = int_option(self.name, "layers", preset["layers"] if layers is None else layers)
        _require_window(self.name, input_shape)
        self.input_shape = tuple(input_shape)
        self.hparams = {"variant": variant, "hidden": hidden, "layers": layers}
        self.hidden_size, self.num_layers = hidden, layers
        self.vocab_size = num_classes
        self.lstm = nn.LSTM(num_classes, hidden, num_layers=layers, batch_first=True)
        self.decoder = nn.Linear(hidden, num_classes, bias=False)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        _check_tokens(self.name, tokens)
        # One-hot by comparison rather than F.one_hot: works under vmap and in any dtype.
        alphabet = torch.arange(self.vocab_size, device=tokens.device)
        onehot = (tokens.unsqueeze(-1) == alphabet).to(self.decoder.weight.dtype)
        out, _ = self.lstm(onehot, _zero_state(onehot, self.num_layers, self.hidden_size))
        return self.decoder(out)


class LSTMLanguageModel(nn.Module):
    """lstm-lm: the PTB-LSTM of Zaremba et al. 2014, word-level language model.

    Paper Sec. 5.4.1: "two layers with 1500 hidden units, each unrolled for 35 time
    steps ... about 66 million weights", trained with Zaremba's pipeline. Layout:
    Embedding(V, H) -> Dropout -> LSTM(H, H, layers, dropout between layers) -> Dropout
    -> Linear(H, V), dropout on non-recurrent connections only (Zaremba Sec. 3). Defaults
    are Zaremba's "large" model: H = 1500, 2 layers, dropout 0.65, every parameter drawn
    uniformly from [-0.04, 0.04]. With V = 10,000 that is 66,034,000 parameters:
    embedding V*H, per layer 4H(2H) + 8H, read-out H*V + V.

    Options: ``hidden`` (1500), ``layers`` (2), ``dropout`` (0.65), ``init_range`` (0.04).
    """

    name = "lstm-lm"
    task = "sequence"
    paper_section = "Sec. 5.4.1"

    def __init__(
        self,
        input_shape: tuple[int, ...],
        num_classes: int,
        *,
        hidden: int = 1500,
        layers: int = 2,
        dropout: float = 0.65,
        init_range: float = 0.04,
    ):
        super().__init__()
        hidden = int_option(self.name, "hidden", hidden)
        layers = int_option(self.name, "layers", layers)
        dropout = probability_option(self.name, "dropout", dropout)
        init_range = positive_float_option(self.name, "init_range", init_range)
        _require_window(self.name, input_shape)
        self.input_shape = tuple(input_shape)
        self.hparams = {
            "hidden": hidden,
            "layers": layers,
            "dropout": dropout,
            "init_range": init_range,
        }
        self.hidden_size, self.num_layers = hidden, layers
        self.embedding = nn.Embedding(num_classes, hidden)
        self.drop = nn.Dropout(dropout)
        # nn.LSTM's own dropout acts between stacked layers (and warns when there are none).
        between = dropout if layers > 1 else 0.0
        self.lstm = nn.LSTM(hidden, hidden, num_layers=layers, dropout=between, batch_first=True)
        self.decoder = nn.Linear(hidden, num_classes)
        with torch.no_grad():
            for parameter in self.parameters():
                parameter.uniform_(-init_range, init_range)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        _check_tokens(self.name, tokens)
        x = self.drop(self.embedding(tokens))
        out, _ = self.lstm(x, _zero_state(x, self.num_layers, self.hidden_size))
        return self.decoder(self.drop(out))
