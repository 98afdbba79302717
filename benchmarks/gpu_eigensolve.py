"""The exact eigensolve on a GPU at the paper's sizes: ``python -m benchmarks.gpu_eigensolve [N ...]``.

Not a peer comparison (the CPU side of it is the measured MKL solve of the real matrices
in README's Fig. 1 / Fig. 3 rows: 40.7 min for small-lenet's 47,658 and 53.5 min for
small-mnistfc's 50,890 on 2 cores), and not part of ``python -m benchmarks`` (it needs
CUDA). It times ``exact_spectrum(backend="torch")`` (cuSOLVER's divide and conquer in
float64) on an n x n matrix with a KNOWN spectrum shaped like Fig. 1's (most
eigenvalues within 1e-6 of zero, a thin negative tail, a positive tail up to 40): a
diagonal matrix conjugated by two Householder reflections, built on the device in O(n^2).
It prints one JSON line per size: seconds, the largest eigenvalue error against the
known spectrum, and the error bound ``exact_spectrum`` states (the error must be below it).
"""

from __future__ import annotations

import json
import sys
import time

import numpy as np
import torch

from landscape.spectra.exact import exact_spectrum


def known_spectrum(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    n_pos, n_neg = max(1, n // 20), max(1, n // 50)
    bulk = rng.normal(0.0, 1e-6, n - n_pos - n_neg)
    negative = -np.geomspace(1e-5, 0.46, n_neg)
    positive = np.geomspace(1e-5, 40.0, n_pos)
    return np.sort(np.concatenate([bulk, negative, positive]))


def _reflect_(A: torch.Tensor, u: torch.Tensor) -> None:
    """A <- P A P with P = I - 2 u u^T (||u|| = 1), in place, O(n^2)."""
    Au = A @ u
    c = float(u @ Au)
    A.addr_(u, Au, alpha=-2.0)
    A.addr_(Au, u, alpha=-2.0)
    A.addr_(u, u, alpha=4.0 * c)


def case(n: int, device: torch.device) -> dict:
    lam = known_spectrum(n)
    g = torch.Generator(device="cpu").manual_seed(n)
    A = torch.zeros((n, n), dtype=torch.float64, device=device)
    A.diagonal().copy_(torch.from_numpy(lam).to(device))
    for _ in range(2):
        u = torch.randn(n, generator=g, dtype=torch.float64).to(device)
        _reflect_(A, u / torch.linalg.vector_norm(u))
    A = 0.5 * (A + A.T)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    result = exact_spectrum(A, backend="torch", device=device)
    seconds = time.perf_counter() - start
    error = float(np.max(np.abs(result.eigenvalues - lam)))
    return {"n": n, "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu", "seconds": round(seconds, 2),
            "max_abs_error": error, "stated_bound": result.eigenvalue_abs_error_bound,
            "within_bound": error <= result.eigenvalue_abs_error_bound,
            "fraction_abs_below_1e-4": float(np.mean(np.abs(result.eigenvalues) < 1e-4))}


def main(argv: list[str]) -> None:
    if not torch.cuda.is_available():
        raise SystemExit("benchmarks.gpu_eigensolve needs a CUDA GPU.")
    device = torch.device("cuda")
    for n in [int(a) for a in argv] or [47_658]:
        print(json.dumps(case(n, device)), flush=True)
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main(sys.argv[1:])
