"""Class-target check on the device: range errors and per-row weights.

One thread per row: a target outside ``[0, C)`` that is not ``ignore_index``
lowers ``first_bad[0]`` (a float64, exact for any row count below 2**53) to its
flat row index, so the host can name the first bad row in C order; with
`keep_weights`, ``row_weight`` gets ``w[y]`` (1 without weights, 0 for ignored
or bad rows), whose sum is the denominator of a mean.
"""

import functools

import numpy as np
from numba import cuda

from . import runtime


@functools.cache
def class_target_check(block, has_weight, keep_weights):
    """Kernel ``(target, weight, row_weight, first_bad, n_classes, ignore_index, offset)``."""

    @runtime.kernel(block)
    def kernel(target, weight, row_weight, first_bad, n_classes, ignore_index, offset):
        n1 = target.shape[1]
        row = np.int64(cuda.blockIdx.x) * block + np.int64(cuda.threadIdx.x)
        if row >= target.shape[0] * n1:
            return
        y = np.int64(target[row // n1, row % n1])
        w = 0.0
        if y != ignore_index:
            if 0 <= y < n_classes:
                w = np.float64(weight[y]) if has_weight else 1.0
            else:
                cuda.atomic.min(first_bad, 0, np.float64(offset + row))
        if keep_weights:
            row_weight[offset + row] = w

    return kernel
