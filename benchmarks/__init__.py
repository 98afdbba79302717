"""Side-by-side benchmarks (issue 6). Run ``python -m benchmarks --help``."""
