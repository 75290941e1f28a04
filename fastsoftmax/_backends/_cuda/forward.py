"""softmax, log_softmax and logsumexp kernels.

Arrays are three-dimensional ``(n0, n1, C)`` views with any strides (per-row
outputs ``(n0, n1)``); row ``r`` is ``(r // n1, r % n1)``. A row belongs to
``plan.lanes`` threads; thread ``lane`` owns columns ``lane, lane + lanes, ...``
so that neighbouring threads read neighbouring addresses. The first
``plan.values`` columns of each thread stay in registers between the pass that
finds the row's maximum and sum and the pass that writes; columns beyond those
are streamed with an online max/sum and read again for the writing pass.
"""

import functools
import math

import numpy as np
from numba import cuda

from . import reduce, rowmath, runtime


def row_of_thread(lanes, rows_per_block):
    """Device function: (row, lane, active) of the calling thread."""

    @runtime.device
    def locate(n_rows):
        tid = np.int64(cuda.threadIdx.x)
        row = np.int64(cuda.blockIdx.x) * rows_per_block + tid // lanes
        return row, tid % lanes, row < n_rows

    return locate


@functools.cache
def rowwise(log, ftype, plan):
    """Kernel ``(x, out, inv_t, inv_t_exact)``: softmax, or log_softmax when `log` is true.

    `inv_t` is the inverse temperature in the compute type, for the sums;
    `inv_t_exact` the same in float64, for log_softmax's output away from
    ``t = 1``: there ``(x - m) * t - log(s)`` is taken in float64 from the
    exact difference, because in float32 the rounded temperature and two more
    roundings cost up to 1.3e-5 on log-probabilities near -100 (the contract
    allows 1e-5), and ``x - m`` overflows for huge logits of opposite signs.
    """
    lanes, values, stream = plan.lanes, plan.values, plan.stream
    group_merge = reduce.reducers(lanes, plan.block, plan.shuffle, ftype).merge
    locate = row_of_thread(lanes, plan.rows_per_block)
    neg_inf = ftype(-math.inf)
    nan = ftype(math.nan)

    @runtime.device
    def log_output(v, m, shift, unit, inv_t_exact, shift_exact):
        if unit:
            return (v - m) - shift
        return ftype((float(v) - float(m)) * inv_t_exact - shift_exact)

    @runtime.kernel(plan.block)
    def kernel(x, out, inv_t, inv_t_exact):
        n1, n_cols = x.shape[1], x.shape[2]
        row, lane, active = locate(x.shape[0] * n1)
        r0 = row // n1 if active else 0
        r1 = row % n1 if active else 0
        unit = inv_t_exact == 1.0
        cache = cuda.local.array(values, ftype)
        # Registers: the thread's largest cached value, then the sum relative to it.
        m_cache = neg_inf
        for j in range(values):
            c = lane + j * lanes
            v = neg_inf
            if active and c < n_cols:
                v = ftype(x[r0, r1, c])
            cache[j] = v
            if v > m_cache:
                m_cache = v
        s = 0.0
        for j in range(values):
            if active and lane + j * lanes < n_cols:
                e = rowmath.term(cache[j], m_cache, inv_t)
                s += e
                if not log:
                    cache[j] = ftype(e)
        m = m_cache
        if stream:
            c = lane + values * lanes
            while active and c < n_cols:
                m, s = rowmath.absorb(m, s, ftype(x[r0, r1, c]), inv_t)
                c += lanes
        m_row, s_row = group_merge(m, s, inv_t)
        # An unusable row (NaN, +inf or only -inf) gets NaN factors, so NaN everywhere.
        shift_exact = math.nan
        shift = nan
        scale = nan
        inv_s = nan
        if rowmath.normaliser_is_usable(m_row, s_row):
            shift_exact = math.log(s_row)
            shift = ftype(shift_exact)
            scale = ftype(math.exp((m_cache - m_row) * inv_t) / s_row)
            inv_s = ftype(1.0 / s_row)
        for j in range(values):
            c = lane + j * lanes
            if active and c < n_cols:
                if log:
                    out[r0, r1, c] = log_output(
                        cache[j], m_row, shift, unit, inv_t_exact, shift_exact
                    )
                else:
                    out[r0, r1, c] = cache[j] * scale
        if stream:
            c = lane + values * lanes
            while active and c < n_cols:
                v = ftype(x[r0, r1, c])
                if log:
                    out[r0, r1, c] = log_output(v, m_row, shift, unit, inv_t_exact, shift_exact)
                else:
                    out[r0, r1, c] = math.exp((v - m_row) * inv_t) * inv_s
                c += lanes

    return kernel


@functools.cache
def logsumexp(ftype, plan):
    """Kernel ``(x, out)``: one online max/sum pass per row, one value out."""
    lanes = plan.lanes
    group_merge = reduce.reducers(lanes, plan.block, plan.shuffle, ftype).merge
    locate = row_of_thread(lanes, plan.rows_per_block)
    neg_inf = ftype(-math.inf)
    one = ftype(1)

    @runtime.kernel(plan.block)
    def kernel(x, out):
        n1, n_cols = x.shape[1], x.shape[2]
        row, lane, active = locate(x.shape[0] * n1)
        r0 = row // n1 if active else 0
        r1 = row % n1 if active else 0
        m = neg_inf
        s = 0.0
        c = lane
        while active and c < n_cols:
            m, s = rowmath.absorb(m, s, ftype(x[r0, r1, c]), one)
            c += lanes
        m, s = group_merge(m, s, one)
        if active and lane == 0:
            out[r0, r1] = rowmath.log_normaliser(m, s)

    return kernel
