"""Benchmarks and the static cost model (``benchmarks.cost_model``), run from the repository root."""
