"""Reductions across the threads that share one row.

`reducers` builds, for aligned groups of ``lanes`` threads inside a block of
``block`` threads, three all-reduce device functions (every thread of the group
gets the result): a float64 sum, the ``(m, s)`` softmax summary merge and the
top-k order's "first" pair. Two implementations:

* shuffle: a butterfly of ``shfl_xor_sync`` within a warp; groups wider than a
  warp add one round through shared memory;
* shared: every thread's value goes to dynamic shared memory and each thread
  combines its group's values in one fixed order; this also runs in the CUDA
  simulator (it has no warp shuffles). Launches must then pass
  `shared_bytes` of dynamic shared memory.

Each function ends with a barrier (shared memory) or is warp-synchronous
(shuffles), so it can be called again at once. With shared memory, every thread
of the block must call the same reductions in the same order.
"""

import functools
from types import SimpleNamespace

import numpy as np
from numba import cuda, types

from . import rowmath, runtime


# Two 8-byte slots per thread: (m, s) or (value, index).
SHARED_BYTES_PER_THREAD = 16


def shared_bytes(block, shuffle):
    """Dynamic shared memory a launch of `block` threads needs for these reductions."""
    return 0 if shuffle else SHARED_BYTES_PER_THREAD * block


@functools.cache
def reducers(lanes, block, shuffle, ftype):
    """Sum, merge and first-pair all-reduce functions for groups of `lanes` threads."""
    if shuffle:
        if lanes <= runtime.FULL_WARP:
            return _warp_reducers(lanes, block, ftype)
        return _block_reducers(block, ftype)
    return _shared_reducers(lanes, block, ftype)


def _warp_reducers(lanes, block, ftype):
    mask = 0xFFFFFFFF if block >= runtime.FULL_WARP else (1 << block) - 1

    @runtime.device
    def group_sum(v):
        offset = lanes // 2
        while offset > 0:
            v += cuda.shfl_xor_sync(mask, v, offset)
            offset //= 2
        return v

    @runtime.device
    def group_merge(m, s, inv_t):
        offset = lanes // 2
        while offset > 0:
            m2 = cuda.shfl_xor_sync(mask, m, offset)
            s2 = cuda.shfl_xor_sync(mask, s, offset)
            m, s = rowmath.merge(m, s, m2, s2, inv_t)
            offset //= 2
        return m, s

    @runtime.device
    def group_first(v, i):
        offset = lanes // 2
        while offset > 0:
            v2 = cuda.shfl_xor_sync(mask, v, offset)
            i2 = cuda.shfl_xor_sync(mask, i, offset)
            if rowmath.ranks_before(v2, i2, v, i):
                v, i = v2, i2
            offset //= 2
        return v, i

    return SimpleNamespace(sum=group_sum, merge=group_merge, first=group_first)


def _block_reducers(block, ftype):
    """One group per block: warp butterflies, then the warps' results via shared memory."""
    warp = _warp_reducers(runtime.FULL_WARP, block, ftype)
    warp_sum, warp_merge, warp_first = warp.sum, warp.merge, warp.first
    n_warps = block // runtime.FULL_WARP

    @runtime.device
    def group_sum(v):
        partial = cuda.shared.array(n_warps, np.float64)
        v = warp_sum(v)
        tid = cuda.threadIdx.x
        if tid % runtime.FULL_WARP == 0:
            partial[tid // runtime.FULL_WARP] = v
        cuda.syncthreads()
        v = partial[0]
        for w in range(1, n_warps):
            v += partial[w]
        cuda.syncthreads()
        return v

    @runtime.device
    def group_merge(m, s, inv_t):
        partial_m = cuda.shared.array(n_warps, ftype)
        partial_s = cuda.shared.array(n_warps, np.float64)
        m, s = warp_merge(m, s, inv_t)
        tid = cuda.threadIdx.x
        if tid % runtime.FULL_WARP == 0:
            partial_m[tid // runtime.FULL_WARP] = m
            partial_s[tid // runtime.FULL_WARP] = s
        cuda.syncthreads()
        m = partial_m[0]
        s = partial_s[0]
        for w in range(1, n_warps):
            m, s = rowmath.merge(m, s, partial_m[w], partial_s[w], inv_t)
        cuda.syncthreads()
        return m, s

    @runtime.device
    def group_first(v, i):
        partial_v = cuda.shared.array(n_warps, ftype)
        partial_i = cuda.shared.array(n_warps, np.int64)
        v, i = warp_first(v, i)
        tid = cuda.threadIdx.x
        if tid % runtime.FULL_WARP == 0:
            partial_v[tid // runtime.FULL_WARP] = v
            partial_i[tid // runtime.FULL_WARP] = i
        cuda.syncthreads()
        v = partial_v[0]
        i = partial_i[0]
        for w in range(1, n_warps):
            if rowmath.ranks_before(partial_v[w], partial_i[w], v, i):
                v = partial_v[w]
                i = partial_i[w]
        cuda.syncthreads()
        return v, i

    return SimpleNamespace(sum=group_sum, merge=group_merge, first=group_first)


def _shared_reducers(lanes, block, ftype):
    """Through dynamic shared memory (`SHARED_BYTES_PER_THREAD` per thread).

    Every thread writes its value, then each thread of a group combines the
    group's values in the same order: two barriers per call. The buffer is
    dynamic shared memory because the simulator creates a static shared array
    the first time any thread reaches it, and two threads may race to do so.
    """

    @runtime.device
    def group_sum(v):
        buffer = cuda.shared.array(0, types.float64)
        tid = cuda.threadIdx.x
        first = tid - tid % lanes
        buffer[tid] = v
        cuda.syncthreads()
        v = buffer[first]
        for t in range(first + 1, first + lanes):
            v += buffer[t]
        cuda.syncthreads()
        return v

    @runtime.device
    def group_merge(m, s, inv_t):
        buffer = cuda.shared.array(0, types.float64)
        tid = cuda.threadIdx.x
        first = tid - tid % lanes
        buffer[tid] = m
        buffer[block + tid] = s
        cuda.syncthreads()
        m = ftype(buffer[first])
        s = buffer[block + first]
        for t in range(first + 1, first + lanes):
            m, s = rowmath.merge(m, s, ftype(buffer[t]), buffer[block + t], inv_t)
        cuda.syncthreads()
        return m, s

    @runtime.device
    def group_first(v, i):
        values = cuda.shared.array(0, types.float64)
        indices = cuda.shared.array(0, types.int64)
        tid = cuda.threadIdx.x
        first = tid - tid % lanes
        values[tid] = v
        indices[block + tid] = i
        cuda.syncthreads()
        v = ftype(values[first])
        i = indices[block + first]
        for t in range(first + 1, first + lanes):
            if rowmath.ranks_before(ftype(values[t]), indices[block + t], v, i):
                v = ftype(values[t])
                i = indices[block + t]
        cuda.syncthreads()
        return v, i

    return SimpleNamespace(sum=group_sum, merge=group_merge, first=group_first)
