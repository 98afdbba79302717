"""Penn Treebank, word level (Mikolov's pre-processed ``ptb.{train,valid,test}.txt``).

Chaudhari et al. (2017, Sec. 5.4.1) train PTB-LSTM, the pipeline of Zaremba et al.
(2014), unrolled for 35 time steps. As in that pipeline, every line is split on
whitespace and ``<eos>`` ends each line; the vocabulary is built from the training file
(sorted, so ids do not depend on word order) and always contains ``<eos>`` and
``<unk>``; a word of the validation or test file that the training file never uses
becomes ``<unk>`` (the corpus already writes rare words as ``<unk>``, so on the real
files nothing is replaced). The validation split is ``ptb.valid.txt``. Windows are
non-overlapping, with targets shifted by one token, as for character text.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np

from landscape.data.dataset import Dataset
from landscape.data.download import require_files
from landscape.data.files import DataFormatError, file_record
from landscape.data.text import check_seq_len, make_windows

DEFAULT_SEQ_LEN = 35
EOS = "<eos>"
UNK = "<unk>"
FILES = {"train": "ptb.train.txt", "val": "ptb.valid.txt", "test": "ptb.test.txt"}


def tokenize(path: Path) -> list[str]:
    """Whitespace tokens of a UTF-8 file with ``<eos>`` after every line."""
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DataFormatError(f"{path} is not UTF-8 (byte {exc.start}); use the original PTB files.") from None
    tokens: list[str] = []
    for line in text.splitlines():
        tokens.extend(line.split())
        tokens.append(EOS)
    return tokens


def build_vocab(train_tokens: list[str]) -> list[str]:
    """Sorted distinct training words, plus ``<eos>`` and ``<unk>``."""
    return sorted(set(train_tokens) | {EOS, UNK})


def load_ptb(
    name: str,
    split: str,
    root: str | os.PathLike | None,
    *,
    seq_len: int | None,
    download: bool,
) -> Dataset:
    """Load one split of word-level PTB (see the module docstring)."""
    seq_len = check_seq_len(seq_len, DEFAULT_SEQ_LEN)
    # ask for all three files at once, so a missing-file message names every file to supply
    paths = require_files("ptb", {k: (v,) for k, v in FILES.items()}, root, download)
    train_tokens = tokenize(paths["train"])
    vocab = build_vocab(train_tokens)
    index = {word: i for i, word in enumerate(vocab)}
    tokens = train_tokens if split == "train" else tokenize(paths[split])
    unk = index[UNK]
    ids = np.fromiter((index.get(t, unk) for t in tokens), dtype=np.int64, count=len(tokens))
    replaced = sum(1 for t in tokens if t not in index)
    if ids.shape[0] < seq_len + 1:
        raise DataFormatError(
            f"{paths[split]} has {ids.shape[0]} tokens, too few for one window of seq_len={seq_len}; "
            "use the full PTB file or a smaller seq_len."
        )
    inputs, targets = make_windows(ids, seq_len)
    meta = {
        "dataset": "ptb",
        "files": [file_record(paths["train"])] + ([file_record(paths[split])] if split != "train" else []),
        "split": {"rule": "the corpus's own files: ptb.train.txt / ptb.valid.txt / ptb.test.txt",
                  "file": FILES[split], "val_fraction": "not used for ptb"},
        "tokenization": "whitespace split, <eos> appended at each line end",
        "vocab_size": len(vocab),
        "vocab_source": "sorted distinct words of ptb.train.txt plus <eos>, <unk>",
        "vocab_sha256": hashlib.sha256("\n".join(vocab).encode("utf-8")).hexdigest(),
        "special_tokens": {EOS: index[EOS], UNK: unk},
        "num_tokens": int(ids.shape[0]),
        "replaced_with_unk": int(replaced),
        "seq_len": seq_len,
        "windows": "non-overlapping; targets[i, t] = tokens[i*T + t + 1]",
        "num_windows": int(inputs.shape[0]),
        "num_examples": int(inputs.shape[0]),
    }
    return Dataset(name=name, split=split, inputs=inputs, targets=targets,
                   num_classes=len(vocab), task="sequence", meta=meta)
