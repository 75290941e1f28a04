"""softmax_backward and log_softmax_backward kernels.

Same row layout as ``forward``: one sum per row (``sum(grad * y)`` or
``sum(grad)``, in float64), then the pass that writes; both inputs of the
first ``plan.values`` columns of each thread stay in registers in between.
"""

import functools
import math

from numba import cuda

from . import reduce, runtime
from .forward import row_of_thread


@functools.cache
def vjp(log, ftype, plan):
    """Kernel ``(grad, saved, out)``; `saved` is ``y`` or ``logp`` when `log`."""
    lanes, values, stream = plan.lanes, plan.values, plan.stream
    group_sum = reduce.reducers(lanes, plan.block, plan.shuffle, ftype).sum
    locate = row_of_thread(lanes, plan.rows_per_block)
    zero = ftype(0)

    @runtime.device
    def row_term(g, y):
        """What the row sum adds up: ``g`` (log_softmax) or ``g * y`` (softmax)."""
        if log:
            return g
        return g * y

    @runtime.device
    def result(g, y, total):
        if log:
            return g - math.exp(y) * total
        return y * (g - total)

    @runtime.kernel(plan.block)
    def kernel(grad, saved, out):
        n1, n_cols = grad.shape[1], grad.shape[2]
        row, lane, active = locate(grad.shape[0] * n1)
        r0 = row // n1 if active else 0
        r1 = row % n1 if active else 0
        cache_g = cuda.local.array(values, ftype)
        cache_y = cuda.local.array(values, ftype)
        acc = 0.0
        for j in range(values):
            c = lane + j * lanes
            g = zero
            y = zero
            if active and c < n_cols:
                g = ftype(grad[r0, r1, c])
                y = ftype(saved[r0, r1, c])
                acc += row_term(g, y)
            cache_g[j] = g
            cache_y[j] = y
        if stream:
            c = lane + values * lanes
            while active and c < n_cols:
                acc += row_term(ftype(grad[r0, r1, c]), ftype(saved[r0, r1, c]))
                c += lanes
        total = ftype(group_sum(acc))
        for j in range(values):
            c = lane + j * lanes
            if active and c < n_cols:
                out[r0, r1, c] = result(cache_g[j], cache_y[j], total)
        if stream:
            c = lane + values * lanes
            while active and c < n_cols:
                out[r0, r1, c] = result(ftype(grad[r0, r1, c]), ftype(saved[r0, r1, c]), total)
                c += lanes

    return kernel
