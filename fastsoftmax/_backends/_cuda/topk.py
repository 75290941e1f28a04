"""softmax_topk kernel: one block per row, the top ``k`` without a full softmax.

Each thread first streams its columns for the row's ``(m, s)`` summary, then
keeps its own best ``min(k, local)`` entries in a sorted local list. Round
``r`` of ``k`` picks the first of the threads' list heads (larger logit, then
lower index) with one block reduction; the winning thread moves to its next
entry and, when its list runs out while more of its columns may follow, scans
them again for the entries after the last one it gave. Few rounds need a
rescan when ``k`` is small; a large ``k`` is correct but slow.
"""

import functools
import math

import numpy as np
from numba import cuda

from . import reduce, rowmath, runtime


@functools.cache
def softmax_topk(ftype, plan, local):
    """Kernel ``(x, probs, indices, inv_t)``; ``k = probs.shape[2]``."""
    lanes = plan.lanes
    reducers = reduce.reducers(lanes, plan.block, plan.shuffle, ftype)
    group_merge, group_first = reducers.merge, reducers.first
    neg_inf = ftype(-math.inf)
    pos_inf = ftype(math.inf)
    nan = ftype(math.nan)
    empty = np.int64(-1)

    @runtime.device
    def keep_best(x, r0, r1, lane, after_v, after_i, values, indices, capacity):
        """Fill the sorted list with the thread's best entries that rank after ``after``."""
        n = 0
        c = np.int64(lane)
        while c < x.shape[2]:
            v = ftype(x[r0, r1, c])
            if rowmath.ranks_before(after_v, after_i, v, c) and (
                n < capacity or rowmath.ranks_before(v, c, values[n - 1], indices[n - 1])
            ):
                j = n if n < capacity else capacity - 1
                while j > 0 and rowmath.ranks_before(v, c, values[j - 1], indices[j - 1]):
                    values[j] = values[j - 1]
                    indices[j] = indices[j - 1]
                    j -= 1
                values[j] = v
                indices[j] = c
                if n < capacity:
                    n += 1
            c += lanes
        return n

    @runtime.kernel(plan.block)
    def kernel(x, probs, indices, inv_t):
        n1, n_cols, k = x.shape[1], x.shape[2], probs.shape[2]
        row = np.int64(cuda.blockIdx.x)
        lane = np.int64(cuda.threadIdx.x)
        r0 = row // n1
        r1 = row % n1
        m = neg_inf
        s = 0.0
        c = lane
        while c < n_cols:
            m, s = rowmath.absorb(m, s, ftype(x[r0, r1, c]), inv_t)
            c += lanes
        m, s = group_merge(m, s, inv_t)
        if not rowmath.normaliser_is_usable(m, s):
            j = lane
            while j < k:
                probs[r0, r1, j] = nan
                indices[r0, r1, j] = j
                j += lanes
            return
        inv_s = 1.0 / s
        capacity = min(k, local)
        best_v = cuda.local.array(local, ftype)
        best_i = cuda.local.array(local, np.int64)
        # A usable row has no +inf, so (+inf, 0) ranks before every entry.
        n = keep_best(x, r0, r1, lane, pos_inf, np.int64(0), best_v, best_i, capacity)
        at = 0
        for r in range(k):
            head_v = neg_inf
            head_i = empty
            if at < n:
                head_v = best_v[at]
                head_i = best_i[at]
            win_v, win_i = group_first(head_v, head_i)
            if lane == 0:
                probs[r0, r1, r] = math.exp((win_v - m) * inv_t) * inv_s
                indices[r0, r1, r] = win_i
            if win_i == head_i:
                at += 1
                if at == n and n == capacity:
                    n = keep_best(x, r0, r1, lane, win_v, win_i, best_v, best_i, capacity)
                    at = 0

    return kernel
