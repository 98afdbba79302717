"""Character-level text (``text:PATH``) for the char-LSTM experiments.

Chaudhari et al. (2017) train a char-LSTM on a text cut into lines of 32 characters
with 96-symbol one-hot inputs (Sec. 5.1) and on War and Peace split contiguously into
80% training, 10% validation and 10% test text (Sec. 5.4.2). Here any UTF-8 file works:

* the text is split contiguously 80/10/10 by character position (``val_fraction`` is
  not used: the paper's split is fixed);
* ``vocab="file"``: the vocabulary is the sorted distinct characters of the WHOLE file
  (so every split shares one id space); ``vocab="ascii96"``: the 95 printable ASCII
  characters plus newline, with every other character mapped to a space;
* each split is cut into non-overlapping windows of ``seq_len`` characters:
  ``inputs[i] = x[i*T : (i+1)*T]`` and ``targets[i] = x[i*T+1 : (i+1)*T+1]``, the next
  character at every position.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from landscape.data.dataset import Dataset
from landscape.data.files import DataFormatError, DatasetArgumentError, file_record
from landscape.errors import DatasetNotFoundError

DEFAULT_SEQ_LEN = 32
VOCAB_CHOICES = ("file", "ascii96")
#: 95 printable ASCII characters (space to tilde) and newline, sorted: the paper's 96 symbols.
ASCII96 = tuple(sorted(["\n", *map(chr, range(0x20, 0x7F))]))
#: Contiguous split points as fractions of the text (Sec. 5.4.2): train | val | test.
SPLIT_POINTS = (0.8, 0.9)


def check_seq_len(seq_len: int | None, default: int) -> int:
    """Validate the window length (``None`` means ``default``)."""
    if seq_len is None:
        return default
    if isinstance(seq_len, bool) or not isinstance(seq_len, (int, np.integer)) or seq_len < 1:
        raise DatasetArgumentError(f"seq_len must be a positive integer, got {seq_len!r}.")
    return int(seq_len)


def make_windows(ids: np.ndarray, seq_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Non-overlapping (inputs, targets) windows; targets are inputs shifted by one token."""
    count = (ids.shape[0] - 1) // seq_len
    span = count * seq_len
    inputs = ids[:span].reshape(count, seq_len)
    targets = ids[1 : span + 1].reshape(count, seq_len)
    return (torch.from_numpy(np.ascontiguousarray(inputs, dtype=np.int64)),
            torch.from_numpy(np.ascontiguousarray(targets, dtype=np.int64)))


def split_bounds(n: int, split: str) -> tuple[int, int]:
    """Character range [start, stop) of ``split`` in a text of length ``n``."""
    cut1, cut2 = (int(n * p) for p in SPLIT_POINTS)
    return {"train": (0, cut1), "val": (cut1, cut2), "test": (cut2, n)}[split]


def encode(text: str, vocab: str) -> tuple[np.ndarray, list[str], int]:
    """Token ids of ``text``, the vocabulary, and how many characters were mapped to space."""
    codes = np.frombuffer(text.encode("utf-32-le"), dtype="<u4")
    if vocab == "file":
        symbols = np.unique(codes)
        replaced = 0
    else:
        symbols = np.array([ord(c) for c in ASCII96], dtype=np.uint32)
        outside = ~np.isin(codes, symbols)
        replaced = int(outside.sum())
        codes = np.where(outside, np.uint32(ord(" ")), codes)
    ids = np.searchsorted(symbols, codes).astype(np.int64)
    return ids, [chr(int(c)) for c in symbols], replaced


def resolve_text_path(path_text: str, root: str | os.PathLike | None) -> Path:
    """The file named by ``text:PATH``: as given (absolute or relative to the working
    directory), else relative to ``root`` and then to ``$LANDSCAPE_DATA``."""
    path = Path(path_text).expanduser()
    candidates = [path]
    if not path.is_absolute():
        for base in (root, os.environ.get("LANDSCAPE_DATA")):
            if base:
                candidates.append(Path(base).expanduser() / path)
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    folders = [c for c in candidates if c.is_dir()]
    if folders:
        raise DataFormatError(f"Text file {path_text}: {folders[0]} is a directory; pass text:PATH with the path of "
                              "a UTF-8 file.")
    raise DatasetNotFoundError(
        f"Text file {path_text} was not found (looked at {', '.join(map(str, candidates))}); "
        "pass text:PATH with the path of an existing UTF-8 file."
    )


def load_text(
    name: str,
    path_text: str,
    split: str,
    root: str | os.PathLike | None,
    *,
    seq_len: int | None,
    vocab: str,
) -> Dataset:
    """Load one split of a character-level text dataset (see the module docstring)."""
    if vocab not in VOCAB_CHOICES:
        raise DatasetArgumentError(f"Unknown vocab '{vocab}': use one of {', '.join(VOCAB_CHOICES)}.")
    seq_len = check_seq_len(seq_len, DEFAULT_SEQ_LEN)
    path = resolve_text_path(path_text, root)
    try:
        text = path.read_bytes().decode("utf-8")
    except OSError as exc:
        raise DataFormatError(f"Cannot read the text file {path} ({exc.strerror or type(exc).__name__}).") from None
    except UnicodeDecodeError as exc:
        raise DataFormatError(
            f"{path} is not UTF-8 (byte {exc.start} cannot be decoded); convert it to UTF-8 first."
        ) from None
    ids, symbols, replaced = encode(text, vocab)
    start, stop = split_bounds(ids.shape[0], split)
    if stop - start < seq_len + 1:
        raise DataFormatError(
            f"The {split} part of {path} has {stop - start} characters, too few for one window "
            f"of seq_len={seq_len} (needs {seq_len + 1}); use a longer file or a smaller seq_len."
        )
    inputs, targets = make_windows(ids[start:stop], seq_len)
    meta = {
        "dataset": "text",
        "files": [file_record(path)],
        "num_characters": int(ids.shape[0]),
        "split": {
            "rule": "contiguous 80% / 10% / 10% of the characters (Chaudhari et al. 2017, Sec. 5.4.2)",
            "char_range": [start, stop],
            "val_fraction": "not used for text",
        },
        "vocab_mode": vocab,
        "vocab": symbols,
        "seq_len": seq_len,
        "windows": "non-overlapping; targets[i, t] = text[i*T + t + 1]",
        "num_windows": int(inputs.shape[0]),
        "dropped_tail_characters": int(stop - start - 1 - inputs.numel()),
        "num_examples": int(inputs.shape[0]),
    }
    if vocab == "ascii96":
        meta["unmapped_to_space"] = replaced
        meta["vocab_note"] = "characters outside printable ASCII and newline were mapped to space"
    return Dataset(name=name, split=split, inputs=inputs, targets=targets,
                   num_classes=len(symbols), task="sequence", meta=meta)
