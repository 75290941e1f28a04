"""Deterministic device sums returned to the host, and a fill kernel.

A sum runs as a few launches of one block-sum kernel, each block adding a
fixed chunk in a fixed order, until one value is left; only that value
crosses to the host. The same input always gives the same bits.
"""

import functools

import numpy as np
from numba import cuda

from . import reduce, runtime, settings


@functools.cache
def _block_sums(block, values, shuffle):
    """Kernel ``(x, partial)``: ``partial[b]`` is the sum of chunk ``b`` of `x`."""
    group_sum = reduce.reducers(block, block, shuffle, np.float64).sum
    chunk = block * values

    @runtime.kernel(block)
    def kernel(x, partial):
        b = np.int64(cuda.blockIdx.x)
        tid = np.int64(cuda.threadIdx.x)
        acc = 0.0
        for j in range(values):
            i = b * chunk + tid + j * block
            if i < x.shape[0]:
                acc += x[i]
        acc = group_sum(acc)
        if tid == 0:
            partial[b] = acc

    return kernel


def sum_into(values, out):
    """Write the float64 sum of the 1-D device array `values` into ``out[0]`` (no wait)."""
    block, per_thread = settings.SUM_BLOCK, settings.SUM_VALUES
    shuffle = runtime.use_shuffle()
    kernel = _block_sums(block, per_thread, shuffle)
    chunk = block * per_thread
    if values.shape[0] == 0:
        fill(out.reshape(1, 1), 0.0)
        return
    while True:
        n_blocks = -(-values.shape[0] // chunk)
        partial = out if n_blocks == 1 else cuda.device_array(n_blocks, dtype=np.float64)
        runtime.launch(kernel, n_blocks, block, reduce.shared_bytes(block, shuffle), values, partial)
        if n_blocks == 1:
            return
        values = partial


def total(values):
    """The float64 sum of the one-dimensional device array `values`, on the host."""
    out = cuda.device_array(1, dtype=np.float64)
    sum_into(values, out)
    return float(out.copy_to_host()[0])


@functools.cache
def _fill(block):
    """Kernel ``(out, value)``: every element of the ``(n0, n1)`` view `out` set to `value`."""

    @runtime.kernel(block)
    def kernel(out, value):
        i = np.int64(cuda.blockIdx.x) * block + np.int64(cuda.threadIdx.x)
        n1 = out.shape[1]
        if i < out.shape[0] * n1:
            out[i // n1, i % n1] = value

    return kernel


def fill(out, value):
    """Set the ``(n0, n1)`` device array `out` to `value`."""
    block = settings.SUM_BLOCK
    n = out.shape[0] * out.shape[1]
    runtime.launch(_fill(block), -(-n // block), block, 0, out, value)
