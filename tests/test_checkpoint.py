"""Checkpoints: round trip through weights_only loading, refusal of unsafe or foreign files, atomicity."""

import os
import pickle

import pytest
import torch

from landscape.checkpoint import FORMAT, load_checkpoint, read_checkpoint, save_checkpoint
from landscape.errors import CheckpointError
from landscape.models import build_model


def _model(seed=0):
    torch.manual_seed(seed)
    return build_model("small-mnistfc", (1, 8, 8), 10, hidden=16)


def test_round_trip_is_exact_and_loads_with_weights_only(tmp_path):
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    loss = model(torch.randn(4, 1, 8, 8)).sum()
    loss.backward()
    opt.step()
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, model, dataset={"name": "digits"}, optimizer=opt, optimizer_name="sgd", step=7, epoch=2, config={"lr": 0.1})

    raw = torch.load(path, weights_only=True)  # the contract: no code runs, plain values only
    assert raw["format"] == FORMAT and raw["step"] == 7 and raw["epoch"] == 2

    loaded, meta = load_checkpoint(path)
    assert meta["model"]["kwargs"] == {"hidden": 16}
    assert meta["dataset"]["name"] == "digits"
    assert not loaded.training
    for (name, a), (name_b, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert name == name_b and torch.equal(a, b)
    x = torch.randn(3, 1, 8, 8)
    assert torch.equal(model.eval()(x), loaded(x))
    # optimizer state survives too (momentum buffers)
    opt2 = torch.optim.SGD(loaded.parameters(), lr=0.1, momentum=0.9)
    opt2.load_state_dict(meta["optimizer"]["state_dict"])
    bufs = [opt2.state[p]["momentum_buffer"] for p in loaded.parameters()]
    assert all(torch.equal(a, opt.state[p]["momentum_buffer"]) for a, p in zip(bufs, model.parameters()))


class _Exploit:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_pickle_carrying_code_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"format": FORMAT, "format_version": 1, "payload": _Exploit(marker)}, path)
    with pytest.raises(CheckpointError, match="Refused"):
        load_checkpoint(path)
    assert not marker.exists()


def test_foreign_corrupt_and_missing_files_give_one_sentence(tmp_path):
    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": {}}, foreign)
    with pytest.raises(CheckpointError, match="not a landscape checkpoint"):
        read_checkpoint(foreign)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"\x00not a zip file at all" * 10)
    with pytest.raises(CheckpointError, match="corrupt"):
        read_checkpoint(garbage)
    with pytest.raises(CheckpointError, match="does not exist"):
        read_checkpoint(tmp_path / "nope.pt")
    plain_pickle = tmp_path / "plain.pkl"
    plain_pickle.write_bytes(pickle.dumps({"a": 1}))
    with pytest.raises(CheckpointError):
        read_checkpoint(plain_pickle)


def test_truncated_checkpoint_is_refused(tmp_path):
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, _model())
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError):
        read_checkpoint(path)


def test_a_failed_write_leaves_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, _model(0), epoch=1)
    before = path.read_bytes()

    def exploding_save(obj, fh, *a, **k):
        fh.write(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", exploding_save)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, _model(1), epoch=2)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]  # no temp file left behind


def test_checkpoint_that_does_not_match_its_model_is_refused(tmp_path):
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, _model())
    raw = torch.load(path, weights_only=True)
    raw["model"]["kwargs"] = {"hidden": 17}
    torch.save(raw, path)
    with pytest.raises(CheckpointError, match="does not match"):
        load_checkpoint(path)


def test_tiny_garbage_files_are_refused_with_one_sentence(tmp_path):
    for content in (b"hello", b"a", b""):
        path = tmp_path / "x.pt"
        path.write_bytes(content)
        with pytest.raises(CheckpointError):
            read_checkpoint(path)
