"""One-pass top-k softmax of a row.

The row is read once, a block at a time: each block updates the running
log-sum-exp and then, unless its maximum is no better than the worst value
kept, is searched for candidates, ``SCAN`` elements at a time. The k best
logits live in a binary heap inside the output row itself (values in the
probability row, class indices in the index row), worst at the root; entries
move along a hole rather than by swaps. Order: larger logit first, equal
logits by lower index. Finally the heap is sorted and the logits are turned
into probabilities.
"""

import numpy as np

from . import rows
from .elementary import exp_nonpositive
from .jit import helper

# Within a block whose maximum beats the worst value kept, stretches of this
# many elements are scanned one by one only when their own maximum does too.
SCAN = 256


@helper
def worse(va, ia, vb, ib):
    """True when logit `va` at index `ia` ranks below logit `vb` at index `ib`."""
    return va < vb or (va == vb and ia > ib)


@helper
def sift_up(values, index, pos, v, i):
    """Place entry ``(v, i)`` at `pos` or above, moving worse-ranked parents down."""
    while pos > 0:
        parent = (pos - 1) // 2
        if not worse(v, i, values[parent], index[parent]):
            break
        values[pos] = values[parent]
        index[pos] = index[parent]
        pos = parent
    values[pos] = v
    index[pos] = i


@helper
def sift_down(values, index, size, pos, v, i):
    """Place entry ``(v, i)`` at `pos` or below among the first `size` entries."""
    while True:
        child = 2 * pos + 1
        if child >= size:
            break
        right = child + 1
        if right < size and worse(values[right], index[right], values[child], index[child]):
            child = right
        if not worse(values[child], index[child], v, i):
            break
        values[pos] = values[child]
        index[pos] = index[child]
        pos = child
    values[pos] = v
    index[pos] = i


@helper
def offer(x, first, last, values, index):
    """Put each of ``x[first:last]`` that beats the heap's root in its place.

    Later indices lose ties, so an element must be strictly larger.
    """
    k = values.shape[0]
    for j in range(first, last):
        v = x[np.uint64(j)]  # unsigned: no negative-index wraparound
        if v > values[0]:
            sift_down(values, index, k, 0, v, j)


@helper
def softmax_topk(x, t, values, index):
    """The ``k = len(values)`` largest softmax probabilities of row `x`."""
    n = x.shape[0]
    k = values.shape[0]
    for j in range(k):  # the first k elements fill the heap
        sift_up(values, index, j, x[j], j)
    m = x.dtype.type(-np.inf)
    s = 0.0
    for start in range(0, n, rows.BLOCK):
        stop = min(start + rows.BLOCK, n)
        m, s, block_max = rows.lse_update(x[start:stop], m, s, t)
        if not block_max > values[0]:
            continue
        for first in range(max(start, k), stop, SCAN):
            last = min(first + SCAN, stop)
            if rows.row_max(x[first:last]) > values[0]:
                offer(x, first, last, values, index)
    if not np.isfinite(m):  # NaN, +inf or only -inf: the softmax is NaN
        for i in range(k):
            values[i] = np.nan
            index[i] = i
        return
    for end in range(k - 1, 0, -1):  # heap sort: the worst goes last
        v, i = values[end], index[end]
        values[end], index[end] = values[0], index[0]
        sift_down(values, index, end, 0, v, i)
    scale = x.dtype.type(1.0 / s)
    half_m = m * x.dtype.type(0.5)
    twice_hi, twice_lo = rows.doubled(t, x)
    zero = x.dtype.type(0.0)
    for i in range(k):
        gap = rows.scaled_gap(values[i], m, half_m, twice_hi, twice_lo, zero)
        values[i] = exp_nonpositive(gap) * scale
