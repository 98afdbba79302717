"""Tests for landscape.data: readers against hand-written bytes, splits by exact counts,
preprocessing against closed forms. Nothing here touches the network."""

from __future__ import annotations

import gzip
import io
import json
import os
import pickle
import struct
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch

from landscape.data import (
    DataFormatError,
    DatasetArgumentError,
    data_search_dirs,
    dataset_names,
    load_dataset,
    load_splits,
)
from landscape.data import download as dl
from landscape.data.cifar import UnsafePickleError, read_batch, safe_unpickle
from landscape.data.digits import digits_split_indices
from landscape.data.idx import read_idx
from landscape.data.preprocess import fit_zca, global_contrast_normalize
from landscape.errors import ChecksumError, DatasetNotFoundError, LandscapeError

DEBIAN_FASHION = Path("/usr/share/datasets/fashion-mnist")


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    """No network, no real cache, no $LANDSCAPE_DATA: each test sees only its own files."""

    def no_network(url, timeout=dl.TIMEOUT_S):
        raise urllib.error.URLError("network disabled in tests")

    monkeypatch.setattr(dl, "open_url", no_network)
    monkeypatch.delenv("LANDSCAPE_DATA", raising=False)
    # Downloads are allowed but go to the fake network above (conftest forbids them globally).
    monkeypatch.delenv("LANDSCAPE_OFFLINE", raising=False)
    monkeypatch.delenv("LANDSCAPE_NO_DOWNLOAD", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))


def one_sentence(err: BaseException) -> bool:
    text = str(err)
    return "\n" not in text and text.endswith(".") and len(text) > 20


# ----------------------------------------------------------------------------------- IDX


def idx_bytes(array: np.ndarray, code: int, be_dtype: str) -> bytes:
    """An IDX file written by hand: magic 0x0000 <code> <ndim>, big-endian dims, values."""
    header = bytes([0, 0, code, array.ndim]) + b"".join(struct.pack(">I", d) for d in array.shape)
    return header + array.astype(be_dtype).tobytes()


@pytest.mark.parametrize("compress", [False, True])
@pytest.mark.parametrize(
    "code,be_dtype,values",
    [
        (0x08, ">u1", np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4) * 10),
        (0x0C, ">i4", np.array([[-70000, 1], [2, 2**31 - 1]], dtype=np.int32)),
        (0x0E, ">f8", np.array([1.5, -2.25, 1e300], dtype=np.float64)),
    ],
)
def test_idx_round_trip(tmp_path, compress, code, be_dtype, values):
    raw = idx_bytes(values, code, be_dtype)
    path = tmp_path / ("f.idx.gz" if compress else "f.idx")
    path.write_bytes(gzip.compress(raw) if compress else raw)
    out = read_idx(path)
    assert out.shape == values.shape
    assert out.dtype == values.dtype and out.dtype.isnative
    np.testing.assert_array_equal(out, values)


@pytest.mark.parametrize(
    "payload",
    [
        b"\x00\x00",  # shorter than the magic number
        bytes([1, 0, 8, 1]) + struct.pack(">I", 3) + b"abc",  # first magic byte not 0
        bytes([0, 0, 0x42, 1]) + struct.pack(">I", 3) + b"abc",  # unknown type code
        bytes([0, 0, 8, 3]) + struct.pack(">I", 3),  # header truncated (2 dims missing)
        bytes([0, 0, 8, 2]) + struct.pack(">II", 60000, 784) + b"\x00" * 100,  # payload truncated
        bytes([0, 0, 8, 1]) + struct.pack(">I", 3) + b"abcd",  # trailing byte
    ],
)
def test_malformed_idx_is_a_landscape_error(tmp_path, payload):
    path = tmp_path / "bad-idx1-ubyte"
    path.write_bytes(payload)
    with pytest.raises(DataFormatError) as info:
        read_idx(path)
    assert isinstance(info.value, LandscapeError) and one_sentence(info.value)


def test_truncated_gzip_is_a_landscape_error(tmp_path):
    raw = idx_bytes(np.arange(5000, dtype=np.uint8) % 251, 0x08, ">u1")
    path = tmp_path / "t.gz"
    path.write_bytes(gzip.compress(raw)[:-40])
    with pytest.raises(DataFormatError) as info:
        read_idx(path)
    assert one_sentence(info.value)


# ------------------------------------------------------------------------- MNIST family


def write_mnist(folder: Path, n_train=60, n_test=20, shape=(4, 5), gz=True, seed=0):
    """Four tiny IDX files; returns the uint8 images and labels written."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, *shape), dtype=np.uint8),
        "train-labels-idx1-ubyte": np.arange(n_train, dtype=np.uint8) % 10,
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, *shape), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": (np.arange(n_test, dtype=np.uint8) * 3) % 10,
    }
    for stem, array in arrays.items():
        raw = idx_bytes(array, 0x08, ">u1")
        if gz:
            (folder / f"{stem}.gz").write_bytes(gzip.compress(raw))
        else:
            (folder / stem).write_bytes(raw)
    return arrays


@pytest.mark.parametrize("gz", [True, False])
def test_mnist_splits_normalisation_and_provenance(tmp_path, gz):
    arrays = write_mnist(tmp_path / "mnist", gz=gz)  # the dataset sub-folder of root
    train = load_dataset("mnist", "train", tmp_path, download=False)
    val = load_dataset("mnist", "val", tmp_path, download=False)
    test = load_dataset("mnist", "test", tmp_path, download=False)
    assert (len(train), len(val), len(test)) == (54, 6, 20)
    assert train.input_shape == (1, 4, 5) and train.inputs.dtype == torch.float32
    assert train.targets.dtype == torch.int64 and train.num_classes == 10
    # Stratified: each class has 6 pool images (quota 0.6); the 6 held-out units go one each
    # to the classes with the largest remainders, ties to the lower class: 0..5.
    assert sorted(val.targets.tolist()) == [0, 1, 2, 3, 4, 5]
    # Train split standardised with its own statistics; test with the train statistics.
    assert abs(train.inputs.double().mean().item()) < 1e-6
    assert abs(train.inputs.double().std(unbiased=False).item() - 1) < 1e-6
    stats = test.meta["preprocessing"]["normalize"]
    assert stats == train.meta["preprocessing"]["normalize"]
    expected = (arrays["t10k-images-idx3-ubyte"] / 255.0 - stats["mean"][0]) / stats["std"][0]
    np.testing.assert_allclose(test.inputs[:, 0].numpy(), expected, atol=1e-5)
    np.testing.assert_array_equal(test.targets.numpy(), arrays["t10k-labels-idx1-ubyte"])
    # Raw pixels of train and val together are exactly the training file, each image once.
    raw_train = load_dataset("mnist", "train", tmp_path, download=False, normalize=False)
    raw_val = load_dataset("mnist", "val", tmp_path, download=False, normalize=False)
    pool = torch.cat([raw_train.inputs, raw_val.inputs]).mul(255).round().to(torch.uint8)
    written = torch.from_numpy(arrays["train-images-idx3-ubyte"]).unsqueeze(1)
    assert sorted(map(bytes, pool.flatten(1).numpy())) == sorted(map(bytes, written.flatten(1).numpy()))
    assert len(train.meta["files"]) == 2 and len(test.meta["files"]) == 4
    json.dumps(test.meta)


def test_mismatched_idx_pair_is_a_format_error(tmp_path):
    write_mnist(tmp_path, n_train=30, gz=False)
    labels = np.zeros(29, dtype=np.uint8)
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(idx_bytes(labels, 0x08, ">u1"))
    with pytest.raises(DataFormatError) as info:
        load_dataset("mnist", "train", tmp_path, download=False)
    assert one_sentence(info.value)


def test_same_call_gives_identical_tensors(tmp_path):
    write_mnist(tmp_path)
    a = load_dataset("mnist", "val", tmp_path, download=False)
    b = load_dataset("mnist", "val", tmp_path, download=False)
    assert torch.equal(a.inputs, b.inputs) and torch.equal(a.targets, b.targets)
    assert a.meta == b.meta


def test_missing_files_name_the_files_and_folders(tmp_path):
    with pytest.raises(DatasetNotFoundError) as info:
        load_dataset("mnist", root=tmp_path, download=False)
    message = str(info.value)
    assert one_sentence(info.value)
    for stem in ("train-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        assert stem in message
    assert str(tmp_path) in message and "--data-dir" in message and "LANDSCAPE_DATA" in message


def test_failed_download_is_not_found_and_leaves_nothing(tmp_path):
    with pytest.raises(DatasetNotFoundError) as info:
        load_dataset("mnist", root=tmp_path / "empty")
    assert "download failed" in str(info.value) and one_sentence(info.value)
    assert not (tmp_path / "empty").exists()  # not even the folders it made


@pytest.mark.parametrize("variable", ["LANDSCAPE_OFFLINE", "LANDSCAPE_NO_DOWNLOAD"])
def test_offline_environment_forbids_downloads(tmp_path, monkeypatch, variable):
    calls = []
    monkeypatch.setattr(dl, "open_url", lambda url, timeout=0: calls.append(url))
    monkeypatch.setenv(variable, "1")
    with pytest.raises(DatasetNotFoundError) as info:
        load_dataset("mnist", root=tmp_path)
    assert calls == [] and "switched off" in str(info.value)


@pytest.mark.parametrize("options", [dict(preprocess="gcn-zca"), dict(normalize=False)])
def test_load_splits_matches_load_dataset(tmp_path, options):
    write_mnist(tmp_path, n_train=100, shape=(3, 3))
    together = load_splits("mnist", root=tmp_path, download=False, **options)
    assert list(together) == ["train", "val", "test"]
    for split, data in together.items():
        alone = load_dataset("mnist", split, tmp_path, download=False, **options)
        assert torch.equal(data.inputs, alone.inputs) and torch.equal(data.targets, alone.targets)
        assert data.meta == alone.meta


def _serve(files: dict[str, bytes], monkeypatch):
    """Fake network: URLs ending in a known file name return its bytes."""
    requested = []

    def fake_open(url, timeout=dl.TIMEOUT_S):
        requested.append(url)
        name = url.rsplit("/", 1)[-1]
        if name not in files:
            raise urllib.error.URLError("404")
        return io.BytesIO(files[name])

    monkeypatch.setattr(dl, "open_url", fake_open)
    return requested


def test_download_verifies_sha256_then_loads(tmp_path, monkeypatch):
    source = tmp_path / "source"
    write_mnist(source)
    served = {p.name: p.read_bytes() for p in source.iterdir()}
    fake = tuple(
        dl.Resource(name, (f"https://example.invalid/{name}",), "sha256",
                    __import__("hashlib").sha256(data).hexdigest())
        for name, data in served.items()
    )
    monkeypatch.setitem(dl.RESOURCES, "mnist", fake)
    requested = _serve(served, monkeypatch)
    root = tmp_path / "root"
    data = load_dataset("mnist", "test", root, normalize=False)
    assert len(data) == 20 and len(requested) == 4
    assert sorted(p.name for p in (root / "mnist").iterdir()) == sorted(served)


def test_download_with_wrong_digest_keeps_nothing(tmp_path, monkeypatch):
    _serve({"ptb.train.txt": b"not the real ptb\n"}, monkeypatch)
    resource = dl.Resource("ptb.train.txt", ("https://example.invalid/ptb.train.txt",), "md5",
                           "f26c4b92c5fdc7b3f8c7cdcb991d8420")
    with pytest.raises(ChecksumError) as info:
        dl.download_file(resource, tmp_path / "ptb.train.txt")
    assert one_sentence(info.value)
    assert list(tmp_path.iterdir()) == []


def test_search_order(tmp_path, monkeypatch):
    monkeypatch.setenv("LANDSCAPE_DATA", str(tmp_path / "env"))
    dirs = data_search_dirs("fashion-mnist", tmp_path / "root")
    assert dirs[:2] == [tmp_path / "root", tmp_path / "root" / "fashion-mnist"]
    order = [str(d) for d in dirs]
    first_env = order.index(str(tmp_path / "env"))
    assert first_env < order.index(str(DEBIAN_FASHION)) < order.index(str(tmp_path / "xdg-cache/landscape/data"))
    assert str(DEBIAN_FASHION) not in map(str, data_search_dirs("mnist"))
    assert data_search_dirs("digits") == []


@pytest.mark.skipif(not (DEBIAN_FASHION / "train-images-idx3-ubyte.gz").is_file(),
                    reason="Debian's dataset-fashion-mnist is not installed (make test installs it where apt can)")
def test_fashion_mnist_from_debian_folder():
    train = load_dataset("fashion-mnist", "train", download=False)
    val = load_dataset("fashion-mnist", "val", download=False, normalize=False)
    test = load_dataset("fashion-mnist", "test", download=False, normalize=False)
    assert (len(train), len(val), len(test)) == (54000, 6000, 10000)
    assert train.input_shape == val.input_shape == test.input_shape == (1, 28, 28)
    # Every class has 6,000 training images, so the stratified 10% takes exactly 600 of each.
    assert torch.bincount(val.targets, minlength=10).tolist() == [600] * 10
    assert torch.bincount(test.targets, minlength=10).tolist() == [1000] * 10
    assert 0.0 <= test.inputs.min().item() and test.inputs.max().item() <= 1.0
    assert train.meta["files"][0]["path"].startswith(str(DEBIAN_FASHION))


# ------------------------------------------------------------------------------- CIFAR


def py2_cifar_batch(data: np.ndarray, labels: list[int]) -> bytes:
    """A batch pickled the way Python 2 wrote the real CIFAR files: protocol 2, byte
    strings for keys and for the array buffer, globals numpy.core.multiarray._reconstruct,
    numpy.ndarray and numpy.dtype. Assembled opcode by opcode."""

    def short_str(s: bytes) -> bytes:  # SHORT_BINSTRING
        return b"U" + bytes([len(s)]) + s

    def integer(i: int) -> bytes:  # BININT
        return b"J" + struct.pack("<i", i)

    n, d = data.shape
    array = (
        b"cnumpy.core.multiarray\n_reconstruct\n" + b"cnumpy\nndarray\n"
        + integer(0) + b"\x85" + short_str(b"b") + b"\x87R"
        + b"(" + integer(1) + integer(n) + integer(d) + b"\x86"
        + b"cnumpy\ndtype\n" + short_str(b"u1") + integer(0) + integer(1) + b"\x87R"
        + b"(" + integer(3) + short_str(b"|") + b"NNN" + integer(-1) + integer(-1) + integer(0) + b"tb"
        + b"\x89" + b"T" + struct.pack("<i", data.size) + data.tobytes() + b"tb"
    )
    label_list = b"](" + b"".join(integer(v) for v in labels) + b"e"
    return (b"\x80\x02}(" + short_str(b"batch_label") + short_str(b"training batch")
            + short_str(b"data") + array + short_str(b"labels") + label_list + b"u.")


def write_cifar(folder: Path, per_batch=10, seed=0, py2_first=True):
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    written = {}
    for i, name in enumerate([f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]):
        data = rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8)
        labels = [(3 * j + i) % 10 for j in range(per_batch)]
        if py2_first and i == 0:
            blob = py2_cifar_batch(data, labels)
        else:  # what a Python 3 user would write: bytes keys, numpy array, default protocol
            blob = pickle.dumps({b"batch_label": b"x", b"data": data, b"labels": labels})
        (folder / name).write_bytes(blob)
        written[name] = (data, labels)
    return written


def test_cifar_batches_load_with_shapes_labels_and_channel_order(tmp_path):
    written = write_cifar(tmp_path / "cifar-10-batches-py")
    data, labels = read_batch(tmp_path / "cifar-10-batches-py" / "data_batch_1")  # the py2 one
    np.testing.assert_array_equal(data, written["data_batch_1"][0].reshape(-1, 3, 32, 32))
    assert labels.tolist() == written["data_batch_1"][1]
    train = load_dataset("cifar10", "train", tmp_path, download=False)
    test = load_dataset("cifar10", "test", tmp_path, download=False, normalize=False)
    assert (len(train), len(test)) == (45, 10)
    assert train.input_shape == (3, 32, 32) and train.num_classes == 10
    # Row layout: 1024 red values, then green, then blue.
    raw = written["test_batch"][0]
    np.testing.assert_allclose(test.inputs[:, 1].reshape(10, -1).numpy(), raw[:, 1024:2048] / 255.0, rtol=1e-6)
    assert test.targets.tolist() == written["test_batch"][1]
    std = train.inputs.double().transpose(0, 1).reshape(3, -1).std(dim=1, unbiased=False)
    torch.testing.assert_close(std, torch.ones(3, dtype=torch.float64), atol=1e-5, rtol=0)
    assert len(train.meta["preprocessing"]["normalize"]["mean"]) == 3
    json.dumps(train.meta)


def test_cifar_download_extracts_only_the_batch_files(tmp_path, monkeypatch):
    import hashlib
    import tarfile

    source = tmp_path / "src" / "cifar-10-batches-py"
    write_cifar(source, per_batch=4)
    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w:gz") as tar:
        for path in sorted(source.iterdir()):
            tar.add(path, arcname=f"cifar-10-batches-py/{path.name}")
        evil = tarfile.TarInfo("../escaped")
        evil.size = 3
        tar.addfile(evil, io.BytesIO(b"bad"))
        link = tarfile.TarInfo("cifar-10-batches-py/batches.meta")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tar.addfile(link)
    blob = archive.getvalue()
    resource = dl.Resource("cifar-10-python.tar.gz", ("https://example.invalid/cifar-10-python.tar.gz",),
                           "sha256", hashlib.sha256(blob).hexdigest())
    monkeypatch.setitem(dl.RESOURCES, "cifar10", (resource,))
    _serve({"cifar-10-python.tar.gz": blob}, monkeypatch)
    root = tmp_path / "root"
    data = load_dataset("cifar10", "test", root, normalize=False)
    assert len(data) == 4
    target = root / "cifar10" / "cifar-10-batches-py"
    assert sorted(p.name for p in target.iterdir()) == sorted(p.name for p in source.iterdir())
    assert not any(p.is_symlink() for p in target.iterdir())
    assert not (root / "cifar10" / "escaped").exists() and not (tmp_path / "escaped").exists()
    assert not (root / "cifar10" / "cifar-10-python.tar.gz").exists()  # archive removed


class _Evil:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_malicious_pickle_is_refused_without_running(tmp_path, protocol):
    marker = tmp_path / "pwned"
    blob = pickle.dumps({b"data": _Evil(marker), b"labels": [0]}, protocol=protocol)
    with pytest.raises(UnsafePickleError) as info:
        safe_unpickle(blob, "evil")
    assert not marker.exists()
    assert isinstance(info.value, LandscapeError) and one_sentence(info.value)
    # Through the dataset loader as well: a poisoned data_batch_3.
    write_cifar(tmp_path / "c", py2_first=False)
    (tmp_path / "c" / "data_batch_3").write_bytes(blob)
    with pytest.raises(UnsafePickleError):
        load_dataset("cifar10", "train", tmp_path / "c", download=False)
    assert not marker.exists()


@pytest.mark.parametrize("module,name", [("builtins", "eval"), ("numpy", "load"),
                                          ("collections", "OrderedDict"), ("numpy.core.multiarray", "scalar")])
def test_every_other_global_is_refused(module, name):
    blob = b"\x80\x02c" + f"{module}\n{name}\n".encode() + b"."
    with pytest.raises(UnsafePickleError):
        safe_unpickle(blob)


def test_corrupt_pickle_is_a_format_error(tmp_path):
    good = pickle.dumps({b"data": np.zeros((2, 3072), np.uint8), b"labels": [1, 2]})
    for blob in (good[: len(good) // 2], pickle.dumps([1, 2, 3]),
                 pickle.dumps({b"data": np.zeros((2, 10), np.uint8), b"labels": [1, 2]})):
        (tmp_path / "b").write_bytes(blob)
        with pytest.raises(DataFormatError) as info:
            read_batch(tmp_path / "b")
        assert one_sentence(info.value)


# -------------------------------------------------------------------------- GCN and ZCA


def test_gcn_gives_zero_mean_and_fixed_norm():
    x = np.random.default_rng(1).random((7, 30)) * 200
    out = global_contrast_normalize(x, scale=55.0)
    np.testing.assert_allclose(out.mean(axis=1), 0, atol=1e-4)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 55.0, rtol=1e-5)


def test_zca_whitens_training_data_up_to_epsilon():
    rng = np.random.default_rng(2)
    mixing = rng.normal(size=(6, 6)) * np.array([5, 2, 1, 0.5, 0.2, 0.1])
    x = rng.normal(size=(4000, 6)) @ mixing.T + 3.0
    exact = fit_zca(x, epsilon=0.0)
    white = exact.apply(x).astype(np.float64)
    np.testing.assert_allclose(np.cov(white, rowvar=False, bias=True), np.eye(6), atol=1e-4)
    np.testing.assert_allclose(exact.matrix, exact.matrix.T)
    # With epsilon the covariance is U diag(s / (s + eps)) U^T, not the identity.
    eps = 0.1
    zca = fit_zca(x, epsilon=eps)
    cov = np.cov(x, rowvar=False, bias=True)
    s, u = np.linalg.eigh(cov)
    expected = (u * (s / (s + eps))) @ u.T
    white = zca.apply(x).astype(np.float64)
    np.testing.assert_allclose(np.cov(white, rowvar=False, bias=True), expected, atol=1e-4)
    assert np.abs(expected - np.eye(6)).max() > 0.05  # epsilon visibly matters here


def test_gcn_zca_is_fit_on_train_and_reused_for_val_and_test(tmp_path):
    write_mnist(tmp_path, n_train=200, n_test=30, shape=(3, 3))
    load = lambda split, **kw: load_dataset("mnist", split, tmp_path, download=False, **kw)  # noqa: E731
    raw = {s: load(s, normalize=False).inputs.reshape(-1, 9).numpy() for s in ("train", "val", "test")}
    zca = fit_zca(global_contrast_normalize(raw["train"]), epsilon=0.1)
    for split in ("train", "val", "test"):
        data = load(split, preprocess="gcn-zca")
        expected = zca.apply(global_contrast_normalize(raw[split]))
        np.testing.assert_allclose(data.inputs.reshape(-1, 9).numpy(), expected, atol=1e-4)
        info = data.meta["preprocessing"]["gcn_zca"]
        assert info["zca"]["epsilon"] == 0.1 and info["zca"]["n_fit"] == 180
    # A matrix fit on the test set itself would give a different answer.
    own = fit_zca(global_contrast_normalize(raw["test"]), epsilon=0.1)
    assert np.abs(own.apply(global_contrast_normalize(raw["test"])) - expected).max() > 0.1


# -------------------------------------------------------------------------------- text


TEXT = "Well, Prince, so Genoa and Lucca are now just family estates.\nÉtat — " * 7


def test_text_windows_are_shifts_and_decode_to_the_file(tmp_path):
    path = tmp_path / "book.txt"
    path.write_text(TEXT, encoding="utf-8")
    n = len(TEXT)
    bounds = {"train": (0, int(0.8 * n)), "val": (int(0.8 * n), int(0.9 * n)), "test": (int(0.9 * n), n)}
    for split, (start, stop) in bounds.items():
        data = load_dataset(f"text:{path}", split, seq_len=5)
        vocab = data.meta["vocab"]
        assert vocab == sorted(set(TEXT)) and data.num_classes == len(vocab)
        assert data.task == "sequence" and data.inputs.dtype == torch.int64
        assert len(data) == (stop - start - 1) // 5
        x, y = data.inputs, data.targets
        assert torch.equal(y[:, :-1], x[:, 1:])
        assert torch.equal(y[:-1, -1], x[1:, 0])
        decoded = "".join(vocab[i] for i in x.flatten().tolist())
        assert decoded == TEXT[start : start + len(decoded)]
        assert vocab[y[-1, -1]] == TEXT[start + len(decoded)]
        json.dumps(data.meta)


def test_text_ascii96_vocabulary(tmp_path):
    path = tmp_path / "book.txt"
    path.write_text(TEXT, encoding="utf-8")
    data = load_dataset(f"text:{path}", "train", seq_len=8, vocab="ascii96")
    vocab = data.meta["vocab"]
    assert data.num_classes == 96 and len(vocab) == 96 and "\n" in vocab and "É" not in vocab
    decoded = "".join(vocab[i] for i in data.inputs.flatten().tolist())
    mapped = "".join(c if c == "\n" or " " <= c <= "~" else " " for c in TEXT)
    assert decoded == mapped[: len(decoded)]
    assert data.meta["unmapped_to_space"] == sum(c != m for c, m in zip(TEXT, mapped))


def test_text_errors(tmp_path):
    bad = tmp_path / "latin1.txt"
    bad.write_bytes("caf\xe9 ".encode("latin-1") * 100)
    with pytest.raises(DataFormatError) as info:
        load_dataset(f"text:{bad}")
    assert "UTF-8" in str(info.value) and one_sentence(info.value)
    short = tmp_path / "short.txt"
    short.write_text("abcdefghij" * 4, encoding="utf-8")  # val part: 4 characters
    with pytest.raises(DataFormatError) as info:
        load_dataset(f"text:{short}", "val", seq_len=32)
    assert one_sentence(info.value)
    with pytest.raises(DatasetNotFoundError):
        load_dataset(f"text:{tmp_path / 'nope.txt'}")


# --------------------------------------------------------------------------------- PTB


def test_ptb_vocabulary_eos_and_unk(tmp_path):
    (tmp_path / "ptb.train.txt").write_text(" the cat sat \n the <unk> ran \n", encoding="utf-8")
    (tmp_path / "ptb.valid.txt").write_text(" the dog sat \n", encoding="utf-8")
    (tmp_path / "ptb.test.txt").write_text(" cat cat \n", encoding="utf-8")
    train = load_dataset("ptb", "train", tmp_path, seq_len=2, download=False)
    vocab = ["<eos>", "<unk>", "cat", "ran", "sat", "the"]
    assert train.num_classes == 6 and train.meta["vocab_size"] == 6
    ids = {w: i for i, w in enumerate(vocab)}
    stream = [ids[w] for w in "the cat sat <eos> the <unk> ran <eos>".split()]
    # 8 tokens -> 3 windows of 2 (the last target is token 7).
    assert train.inputs.tolist() == [stream[0:2], stream[2:4], stream[4:6]]
    assert train.targets.tolist() == [stream[1:3], stream[3:5], stream[5:7]]
    val = load_dataset("ptb", "val", tmp_path, seq_len=1, download=False)
    assert val.inputs.flatten().tolist() == [ids["the"], ids["<unk>"], ids["sat"]]  # dog -> <unk>
    assert val.targets.flatten().tolist() == [ids["<unk>"], ids["sat"], ids["<eos>"]]
    assert val.meta["replaced_with_unk"] == 1
    json.dumps(val.meta)


# ------------------------------------------------------------------------------ digits


def test_digits_splits_partition_the_1797_images():
    from sklearn.datasets import load_digits

    digits = load_digits()
    idx = digits_split_indices(digits.target, val_fraction=0.1)
    sizes = {s: len(i) for s, i in idx.items()}
    assert sizes == {"train": 1294, "val": 144, "test": 359} and sum(sizes.values()) == 1797
    union = np.concatenate(list(idx.values()))
    assert np.unique(union).size == 1797  # disjoint and complete
    for split in ("train", "val", "test"):
        data = load_dataset("digits", split, normalize=False)
        assert len(data) == sizes[split] and data.input_shape == (1, 8, 8)
        np.testing.assert_array_equal(data.targets.numpy(), digits.target[idx[split]])
        np.testing.assert_allclose(data.inputs[:, 0].numpy(), digits.images[idx[split]] / 16.0)
    normalised = load_dataset("digits", "train")
    assert abs(normalised.inputs.double().mean().item()) < 1e-6
    # Test share per class is 20% rounded: stratified, not just random.
    counts = np.bincount(digits.target[idx["test"]], minlength=10)
    assert np.all(np.abs(counts - 0.2 * np.bincount(digits.target)) <= 1)


# ------------------------------------------------------------------------ registry/errors


def test_names_and_argument_errors(tmp_path):
    assert dataset_names() == ["digits", "fashion-mnist", "mnist", "cifar10", "ptb", "text:PATH"]
    bad_calls = [
        dict(name="imagenet"),
        dict(name="digits", split="validation"),
        dict(name="digits", val_fraction=1.0),
        dict(name="digits", val_fraction=-0.1),
        dict(name="digits", val_fraction=float("nan")),
        dict(name="digits", seq_len=10),
        dict(name="digits", preprocess="pca"),
        dict(name="digits", split="val", val_fraction=0.0),
    ]
    for kwargs in bad_calls:
        with pytest.raises(DatasetArgumentError) as info:
            load_dataset(**kwargs)
        assert one_sentence(info.value), kwargs
    with pytest.raises(DatasetArgumentError) as info:
        load_dataset("imagenet")
    assert "mnist" in str(info.value) and "text:PATH" in str(info.value)
    path = tmp_path / "t.txt"
    path.write_text("x" * 500, encoding="utf-8")
    with pytest.raises(DatasetArgumentError):
        load_dataset(f"text:{path}", preprocess="gcn-zca")
    assert load_dataset("DIGITS").name == "DIGITS"  # names are case-insensitive, kept as given


def test_ptb_missing_files_are_all_named_in_one_sentence(tmp_path):
    (tmp_path / "ptb.train.txt").write_text(" the cat \n", encoding="utf-8")
    with pytest.raises(LandscapeError) as info:
        load_dataset("ptb", "train", tmp_path, download=False)
    message = str(info.value)
    assert "ptb.valid.txt" in message and "ptb.test.txt" in message and "\n" not in message.strip()


def test_cifar_batch_pickled_by_python3_with_protocol_2_loads(tmp_path):
    """Python 3 writes bytes under protocol 2 as _codecs.encode(str, 'latin1'): allowed, and only that."""
    rng = np.random.default_rng(5)
    data = rng.integers(0, 256, (4, 3072), dtype=np.uint8)
    blob = pickle.dumps({b"batch_label": b"x", b"data": data, b"labels": [1, 2, 3, 4]}, protocol=2)
    assert b"_codecs" in blob
    (tmp_path / "data_batch_1").write_bytes(blob)
    images, labels = read_batch(tmp_path / "data_batch_1")
    np.testing.assert_array_equal(images, data.reshape(-1, 3, 32, 32))
    assert labels.tolist() == [1, 2, 3, 4]
    from landscape.data.cifar import UnsafePickleError, safe_unpickle

    evil = b"\x80\x02c_codecs\nencode\nX\x03\x00\x00\x00abcX\x04\x00\x00\x00zlib\x86R."
    with pytest.raises(UnsafePickleError):
        safe_unpickle(evil)
