"""Image preprocessing: per-channel standardisation, and GCN + ZCA whitening for CIFAR-10.

Every statistic is FIT ON THE TRAINING SPLIT ONLY (after the validation examples have
been carved out) and then applied unchanged to validation and test data; fitting on
anything else leaks held-out data into the inputs.

GCN + ZCA follows Goodfellow et al. (2013, maxout networks), which Chaudhari et al.
(2017, Sec. 5.3) use for CIFAR-10:

* global contrast normalisation, per image ``x`` with D pixels:
  ``x <- scale * (x - mean(x)) / max(sqrt(sqrt_bias + ||x - mean(x)||^2), min_divisor)``
  (pylearn2's defaults for CIFAR-10: scale 55, sqrt_bias 0, min_divisor 1e-8), so every
  image ends with L2 norm ``scale``;
* ZCA whitening: with the training mean ``m`` and covariance
  ``C = (X - m)^T (X - m) / N = U diag(s) U^T``, the whitening matrix is
  ``W = U diag((s + eps)^(-1/2)) U^T`` and ``x <- (x - m) W``. The whitened training
  data has covariance ``U diag(s / (s + eps)) U^T``: the identity on directions whose
  variance is much larger than ``eps`` and shrunk towards zero on the rest, which is
  what ``eps`` (pylearn2's ``filter_bias``, default 0.1) is for.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: pylearn2's GCN / ZCA settings for CIFAR-10 (Goodfellow et al., 2013).
GCN_SCALE = 55.0
GCN_SQRT_BIAS = 0.0
GCN_MIN_DIVISOR = 1e-8
ZCA_EPSILON = 0.1


def channel_stats(images: np.ndarray, chunk: int = 8192) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and (population) std of ``images`` shaped (N, C, H, W), in float64.

    A channel with zero spread gets std 1 so standardising it cannot divide by zero.
    """
    # Two passes over row chunks: exact float64 statistics without a float64 copy of the set.
    n, channels = images.shape[:2]
    count = n * images.shape[2] * images.shape[3]
    chunks = range(0, n, chunk)
    total = np.zeros(channels)
    for start in chunks:
        total += images[start : start + chunk].sum(axis=(0, 2, 3), dtype=np.float64)
    mean = total / count
    squares = np.zeros(channels)
    for start in chunks:
        centred = images[start : start + chunk].astype(np.float64) - mean.reshape(1, -1, 1, 1)
        squares += np.einsum("nchw,nchw->c", centred, centred)
    std = np.sqrt(squares / count)
    std[std == 0] = 1.0
    return mean, std


def standardize(images: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """``(x - mean_c) / std_c`` per channel, in float32."""
    shape = (1, -1, 1, 1)
    out = np.subtract(images, mean.reshape(shape).astype(np.float32), dtype=np.float32)
    out /= std.reshape(shape).astype(np.float32)
    return out


def global_contrast_normalize(
    x: np.ndarray,
    scale: float = GCN_SCALE,
    sqrt_bias: float = GCN_SQRT_BIAS,
    min_divisor: float = GCN_MIN_DIVISOR,
    chunk: int = 4096,
) -> np.ndarray:
    """Per-example GCN of a (N, D) array; returns float32. No statistic crosses examples.

    Rows are processed in float64 chunks (45,000 CIFAR images would need 1 GB per copy).
    """
    out = np.empty(x.shape, dtype=np.float32)
    for start in range(0, x.shape[0], chunk):
        rows = np.asarray(x[start : start + chunk], dtype=np.float64)
        centred = rows - rows.mean(axis=1, keepdims=True)
        norms = np.sqrt(sqrt_bias + np.square(centred).sum(axis=1, keepdims=True))
        norms[norms < min_divisor] = 1.0
        out[start : start + chunk] = scale * centred / norms
    return out


@dataclass(frozen=True)
class ZCA:
    """A fitted ZCA whitening transform: ``x -> (x - mean) @ matrix``."""

    mean: np.ndarray  # (D,) float64
    matrix: np.ndarray  # (D, D) float64, symmetric
    epsilon: float
    eigenvalues: np.ndarray  # (D,) eigenvalues s of the training covariance, ascending

    def apply(self, x: np.ndarray, chunk: int = 4096) -> np.ndarray:
        """Whiten a (N, D) array in row chunks (float64 products, float32 result)."""
        out = np.empty(x.shape, dtype=np.float32)
        for start in range(0, x.shape[0], chunk):
            rows = np.asarray(x[start : start + chunk], dtype=np.float64) - self.mean
            out[start : start + chunk] = rows @ self.matrix
        return out


def fit_zca(x: np.ndarray, epsilon: float = ZCA_EPSILON, chunk: int = 4096) -> ZCA:
    """Fit ZCA on the (N, D) training matrix ``x`` (covariance divides by N, as pylearn2).

    The covariance is accumulated in float64 over row chunks so that 45,000 x 3,072
    CIFAR images never need a float64 copy of the whole matrix.
    """
    if epsilon < 0:
        raise ValueError("ZCA epsilon must be non-negative")
    n, d = x.shape
    mean = np.zeros(d, dtype=np.float64)
    for start in range(0, n, chunk):
        mean += np.asarray(x[start : start + chunk], dtype=np.float64).sum(axis=0)
    mean /= n
    cov = np.zeros((d, d), dtype=np.float64)
    for start in range(0, n, chunk):
        rows = np.asarray(x[start : start + chunk], dtype=np.float64) - mean
        cov += rows.T @ rows
    cov /= n
    eigenvalues, eigenvectors = np.linalg.eigh(cov)
    # Rounding can leave tiny negative eigenvalues of a PSD matrix; they are zeros.
    eigenvalues = np.clip(eigenvalues, 0.0, None)
    if epsilon == 0 and eigenvalues.min() <= 0:
        raise ValueError("ZCA with epsilon=0 needs a full-rank covariance")
    scales = 1.0 / np.sqrt(eigenvalues + epsilon)
    matrix = (eigenvectors * scales) @ eigenvectors.T
    return ZCA(mean=mean, matrix=matrix, epsilon=float(epsilon), eigenvalues=eigenvalues)
