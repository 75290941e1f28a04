"""One-pass top-k softmax of a row.

The row is read once, a block at a time: each block updates the running
log-sum-exp and then, unless its maximum is no better than the worst value
kept, is searched for candidates. The k best logits live in a binary heap
inside the output row itself (values in the probability row, class indices in
the index row), worst at the root. Order: larger logit
first, equal logits by lower index. Finally the heap is sorted and the logits
are turned into probabilities.
"""

import numpy as np

from . import rows
from .elementary import exp_nonpositive
from .jit import helper


@helper
def worse(values, index, a, b):
    """True when heap entry `a` ranks below entry `b`."""
    va, vb = values[a], values[b]
    return va < vb or (va == vb and index[a] > index[b])


@helper
def swap(values, index, a, b):
    values[a], values[b] = values[b], values[a]
    index[a], index[b] = index[b], index[a]


@helper
def sift_up(values, index, pos):
    """Restore the heap above `pos` after an entry was placed there."""
    while pos > 0:
        parent = (pos - 1) // 2
        if not worse(values, index, pos, parent):
            break
        swap(values, index, pos, parent)
        pos = parent


@helper
def sift_down(values, index, pos, size):
    """Restore the heap below `pos` among the first `size` entries."""
    while True:
        child = 2 * pos + 1
        if child >= size:
            break
        if child + 1 < size and worse(values, index, child + 1, child):
            child += 1
        if not worse(values, index, child, pos):
            break
        swap(values, index, pos, child)
        pos = child


@helper
def offer(x, first, last, values, index):
    """Put each of ``x[first:last]`` that beats the heap's root in its place.

    Later indices lose ties, so an element must be strictly larger.
    """
    k = values.shape[0]
    for j in range(first, last):
        v = x[np.uint64(j)]  # unsigned: no negative-index wraparound
        if v > values[0]:
            values[0] = v
            index[0] = j
            sift_down(values, index, 0, k)


@helper
def softmax_topk(x, t, values, index):
    """The ``k = len(values)`` largest softmax probabilities of row `x`."""
    n = x.shape[0]
    k = values.shape[0]
    for j in range(k):  # the first k elements fill the heap
        values[j] = x[j]
        index[j] = j
        sift_up(values, index, j)
    m = x.dtype.type(-np.inf)
    s = 0.0
    for start in range(0, n, rows.BLOCK):
        stop = min(start + rows.BLOCK, n)
        m, s, block_max = rows.lse_update(x[start:stop], m, s, t)
        if block_max > values[0]:
            offer(x, max(start, k), stop, values, index)
    if not np.isfinite(m):  # NaN, +inf or only -inf: the softmax is NaN
        for i in range(k):
            values[i] = np.nan
            index[i] = i
        return
    for end in range(k - 1, 0, -1):
        swap(values, index, 0, end)
        sift_down(values, index, 0, end)
    scale = x.dtype.type(1.0 / s)
    for i in range(k):
        values[i] = exp_nonpositive((values[i] - m) * t) * scale
