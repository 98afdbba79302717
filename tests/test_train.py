"""The training loop: gradient-evaluation accounting, determinism, resume, NaN handling."""

import json
import math

import pytest
import torch

from landscape.checkpoint import load_checkpoint
from landscape.errors import LandscapeError, NonFiniteLossError
from landscape.optim.rng import mkl_available
from landscape.train import BatchStream, TrainConfig, train


def _config(tmp_path, **overrides):
    base = dict(model="small-mnistfc", dataset="digits", optimizer="sgd", epochs=1, batch_size=64, seed=3,
                out=str(tmp_path / "run"), device="cpu", model_kwargs={"hidden": 16})
    base.update(overrides)
    return TrainConfig(**base)


def _rows(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _strip_wall(rows):
    return [{k: v for k, v in r.items() if k != "wall_s"} for r in rows]


def test_batch_stream_covers_every_index_once_per_pass():
    stream = BatchStream(10, 4, torch.Generator().manual_seed(0))
    sizes, seen = [], []
    for _ in range(3):
        b = stream.next()
        sizes.append(len(b))
        seen.extend(b.tolist())
    assert sizes == [4, 4, 2] and sorted(seen) == list(range(10))
    nxt = stream.next()
    assert stream.passes == 1 and len(nxt) == 4
    # a lone leftover example is dropped (BatchNorm cannot train on a batch of one)
    stream = BatchStream(9, 4, torch.Generator().manual_seed(0))
    assert [len(stream.next()) for _ in range(3)] == [4, 4, 4]
    assert stream.passes == 1


def test_effective_epochs_count_every_gradient_evaluation(tmp_path):
    L = 3
    result = train(_config(tmp_path, optimizer="entropy-sgd", L=L, lr=0.5), progress=False)
    n_train = json.loads((tmp_path / "run" / "config.json").read_text())["dataset_info"]["sizes"]["train"]
    steps = math.ceil(n_train / 64)
    first, last = result.metrics[0], result.metrics[-1]
    assert first["epoch"] == 0 and first["gradient_evals"] == 0 and first["effective_epochs"] == 0
    assert last["step"] == steps
    assert last["gradient_evals"] == L * steps
    # each closure call draws a fresh batch: L*steps batches of 64 from a stream of
    # shuffled passes, so effective epochs are L outer epochs up to the short batches
    assert last["effective_epochs"] == pytest.approx(last["gradient_examples"] / n_train)
    assert L * (n_train - 64) / n_train < last["effective_epochs"] <= L * steps * 64 / n_train
    sgd = train(_config(tmp_path, out=str(tmp_path / "sgd")), progress=False).final
    assert sgd["gradient_evals"] == steps and sgd["effective_epochs"] == pytest.approx(1.0)
    sam = train(_config(tmp_path, optimizer="sam", out=str(tmp_path / "sam")), progress=False).final
    assert sam["gradient_evals"] == 2 * steps and sam["effective_epochs"] == pytest.approx(2.0)


def test_same_seed_gives_identical_metrics_and_weights(tmp_path):
    a = train(_config(tmp_path, optimizer="entropy-sgd", L=2, lr=0.5, out=str(tmp_path / "a")), progress=False)
    b = train(_config(tmp_path, optimizer="entropy-sgd", L=2, lr=0.5, out=str(tmp_path / "b")), progress=False)
    assert _strip_wall(a.metrics) == _strip_wall(b.metrics)
    for p, q in zip(a.model.parameters(), b.model.parameters()):
        assert torch.equal(p, q)
    c = train(_config(tmp_path, optimizer="entropy-sgd", L=2, lr=0.5, seed=4, out=str(tmp_path / "c")), progress=False)
    assert _strip_wall(a.metrics)[-1] != _strip_wall(c.metrics)[-1]


@pytest.mark.parametrize("optimizer", ["entropy-sgd", "replicated-sgd"])
def test_resume_continues_bit_identically(tmp_path, optimizer):
    kw = dict(optimizer=optimizer, L=2, lr=0.3, model="mnistfc", model_kwargs={"hidden": 16})
    straight = train(_config(tmp_path, epochs=2, out=str(tmp_path / "straight"), **kw), progress=False)
    train(_config(tmp_path, epochs=1, out=str(tmp_path / "resumed"), **kw), progress=False)
    resumed = train(_config(tmp_path, epochs=2, out=str(tmp_path / "resumed"), **kw), resume=True, progress=False)
    assert _strip_wall(resumed.metrics) == _strip_wall(straight.metrics)
    assert _strip_wall(_rows(tmp_path / "resumed")) == _strip_wall(straight.metrics)
    a, _ = load_checkpoint(tmp_path / "straight" / "checkpoint.pt")
    b, meta = load_checkpoint(tmp_path / "resumed" / "checkpoint.pt")
    assert meta["epoch"] == 2
    for (n, p), (_, q) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(p, q), n


@pytest.mark.skipif(not mkl_available(), reason="MKL (the 'fast' extra) is not installed")
def test_a_run_keeps_its_noise_stream_kind_when_resumed(tmp_path, monkeypatch):
    kw = dict(optimizer="entropy-sgd", L=2, lr=0.3, noise=1e-2)
    straight = train(_config(tmp_path, epochs=2, noise_rng="torch", out=str(tmp_path / "straight"), **kw), progress=False)
    train(_config(tmp_path, epochs=1, noise_rng="torch", out=str(tmp_path / "resumed"), **kw), progress=False)
    # resumed under the default (auto = MKL's Philox here): the checkpoint's torch stream wins
    resumed = train(_config(tmp_path, epochs=2, out=str(tmp_path / "resumed"), **kw), resume=True, progress=False)
    assert _strip_wall(resumed.metrics) == _strip_wall(straight.metrics)
    assert json.loads((tmp_path / "resumed" / "config.json").read_text())["noise_rng_resolved"] == "torch"

    philox = train(_config(tmp_path, epochs=2, out=str(tmp_path / "philox"), **kw), progress=False)
    assert json.loads((tmp_path / "philox" / "config.json").read_text())["noise_rng_resolved"] == "mkl-philox4x32x10"
    assert _strip_wall(philox.metrics)[-1] != _strip_wall(straight.metrics)[-1]  # another stream, another run
    monkeypatch.setattr("landscape.platform.mkl.load", lambda: None)  # as on a machine without MKL
    with pytest.raises(LandscapeError, match="MKL's Philox stream"):
        train(_config(tmp_path, epochs=3, out=str(tmp_path / "philox"), **kw), resume=True, progress=False)
    with pytest.raises(LandscapeError, match="needs MKL"):
        train(_config(tmp_path, noise_rng="mkl", out=str(tmp_path / "nomkl"), **kw), progress=False)


def test_nan_loss_stops_with_one_sentence_and_keeps_last_good_checkpoint(tmp_path):
    config = _config(tmp_path, lr=1e30, momentum=0.0, epochs=3)
    with pytest.raises(NonFiniteLossError, match="last good checkpoint"):
        train(config, progress=False)
    model, meta = load_checkpoint(tmp_path / "run" / "checkpoint.pt")
    assert all(torch.isfinite(p).all() for p in model.parameters())
    rows = _rows(tmp_path / "run")
    assert rows[-1]["epoch"] == meta["epoch"]


def test_divergence_on_the_last_step_of_an_epoch_is_not_saved(tmp_path):
    # one step per epoch: the update that ends epoch 1 diverges, and must not be kept as "good"
    config = _config(tmp_path, lr=1e30, momentum=0.0, epochs=3, batch_size=5000)
    with pytest.raises(NonFiniteLossError, match="last good checkpoint \\(epoch 0\\)"):
        train(config, progress=False)
    model, meta = load_checkpoint(tmp_path / "run" / "checkpoint.pt")
    assert meta["epoch"] == 0 and all(torch.isfinite(p).all() for p in model.parameters())
    text = (tmp_path / "run" / "metrics.jsonl").read_text()
    assert "NaN" not in text and "Infinity" not in text  # strict JSON


def test_fresh_batches_per_closure_call_only_where_the_optimizer_asks(tmp_path):
    # Entropy-SGD draws a new minibatch at each of its L closure calls; SAM reuses one per step.
    stream_passes = {}
    for optimizer in ("entropy-sgd", "sam"):
        out = tmp_path / optimizer
        train(_config(tmp_path, optimizer=optimizer, L=3, lr=0.1, out=str(out)), progress=False)
        raw = torch.load(out / "checkpoint.pt", weights_only=True)
        stream_passes[optimizer] = raw["trainer"]["stream"]["passes"]
    assert stream_passes == {"entropy-sgd": 2, "sam": 0}  # 3 passes' worth of batches vs exactly one


def test_an_existing_run_is_not_silently_replaced(tmp_path):
    from landscape.errors import LandscapeError

    train(_config(tmp_path), progress=False)
    (tmp_path / "run" / "spectrum-exact").mkdir()
    with pytest.raises(LandscapeError, match="--overwrite"):
        train(_config(tmp_path, optimizer="adam"), progress=False)
    result = train(_config(tmp_path, optimizer="adam"), overwrite=True, progress=False)
    assert json.loads((tmp_path / "run" / "config.json").read_text())["optimizer"] == "adam"
    assert not (tmp_path / "run" / "spectrum-exact").exists()  # derived results of the old run are gone
    assert len(_rows(tmp_path / "run")) == 2 and result.final["epoch"] == 1


def test_model_and_dataset_of_different_kinds_are_refused(tmp_path):
    from landscape.errors import LandscapeError

    text = tmp_path / "book.txt"
    text.write_text("the quick brown fox jumps over the lazy dog\n" * 40, encoding="utf-8")
    with pytest.raises(LandscapeError, match="classification model"):
        train(_config(tmp_path, dataset=f"text:{text}"), progress=False)
    with pytest.raises(LandscapeError, match="BatchNorm"):
        train(_config(tmp_path, model="mnistfc", batch_size=1), progress=False)
    assert not (tmp_path / "run").exists()  # nothing is created for a refused run


def test_train_subset_trains_and_measures_on_the_first_n_samples_only(tmp_path):
    """The paper's char-LSTM learns 256 fixed lines: --train-subset N uses the first N train samples,
    and the spectrum stage gets exactly those samples back from the checkpoint."""
    from landscape.checkpoint import checkpoint_dataset
    from landscape.errors import LandscapeError
    from landscape.train import load_splits

    config = _config(tmp_path, train_subset=100, epochs=2, batch_size=50)
    result = train(config, progress=False)
    last = result.final
    assert last["step"] == 4 and last["effective_epochs"] == pytest.approx(2.0)  # 2 steps of 50 per epoch
    full = load_splits(_config(tmp_path))
    _, meta = load_checkpoint(tmp_path / "run" / "checkpoint.pt")
    train_split = checkpoint_dataset(meta, "train")
    assert len(train_split) == 100 and torch.equal(train_split.inputs, full["train"].inputs[:100])
    assert len(checkpoint_dataset(meta, "val")) == len(full["val"])  # validation untouched
    with pytest.raises(LandscapeError, match="exceeds the"):
        load_splits(_config(tmp_path, train_subset=10**6))
    with pytest.raises(LandscapeError, match=">= 1"):
        _config(tmp_path, train_subset=0)


def test_vocab_ascii96_gives_the_papers_char_lstm_and_travels_with_the_checkpoint(tmp_path):
    """Sec. 5.1: 96-bit one-hot characters make char-lstm exactly 32,640 parameters, whatever the file's
    own alphabet; the spectrum stage must rebuild the same 96-symbol ids from the checkpoint."""
    from landscape.checkpoint import checkpoint_dataset
    from landscape.data import load_dataset
    from landscape.models import count_parameters

    text = tmp_path / "book.txt"
    text.write_text("abc de\n" * 400, encoding="utf-8")  # 7 distinct characters (space and newline too)
    common = dict(model="char-lstm", dataset=f"text:{text}", optimizer="adam", epochs=0, seq_len=8, model_kwargs={})
    paper = train(_config(tmp_path, vocab="ascii96", out=str(tmp_path / "a96"), **common), progress=False)
    own = train(_config(tmp_path, out=str(tmp_path / "own"), **common), progress=False)
    assert count_parameters(paper.model) == 32_640
    assert count_parameters(own.model) == 4 * 48 * (7 + 48) + 2 * 4 * 48 + 48 * 7
    _, meta = load_checkpoint(tmp_path / "a96" / "checkpoint.pt")
    rebuilt = checkpoint_dataset(meta, "train")
    assert rebuilt.num_classes == 96
    expected = load_dataset(f"text:{text}", "train", seq_len=8, vocab="ascii96")
    assert torch.equal(rebuilt.inputs, expected.inputs) and rebuilt.inputs.max() > 7  # ids of the 96, not of the 7
