"""Kernels of dali-mixup: the fused image kernel and the soft-label kernel.

- ``pixel_math``: the per-element math, one source for every target;
- ``cuda``: the numba.cuda kernels (GPU, and numba's CUDA simulator on CPU CI);
- ``cpu``: their CPU twin (numba.njit, parallel).

Importing this package imports neither numba.cuda nor compiles anything; ``cpu`` and ``cuda`` are imported on
first use by :mod:`dali_mixup.mixing`.
"""
