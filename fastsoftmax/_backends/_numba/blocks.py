"""Short rows (``C <= SHORT_ROW_MAX``), ``BLOCK_ROWS`` rows at a time.

A row of ten classes is too short for vector loops along it. Instead a block
of rows is copied transposed into a small tile, ``tile[j, r] = x[first + r, j]``,
so that every loop over the tile runs across rows: vector lanes hold different
rows, and the maxima, exponentials and sums of a whole block are computed with
full vectors. Results are copied back transposed. The tile and the per-row
vectors live on the stack with constant sizes, so LLVM vectorizes the loops
over them without overlap checks. Rows past the end of the last block are
padded with zeros and never written.
"""

import numpy as np

from .elementary import exp_nonpositive, log
from .intrinsics import maximum, stack_array
from .jit import helper, kernel

SHORT_ROW_MAX = 32
BLOCK_ROWS = 64


@helper
def load_tile(x, first, n, tile):
    """``tile[j, r] = x[first + r, j]`` for ``r < n``, 0 for the padding rows."""
    for r in range(n):
        row = np.uint64(first + r)  # unsigned: no negative-index wraparound
        for j in range(x.shape[1]):
            tile[j, r] = x[row, j]
    for r in range(n, BLOCK_ROWS):
        for j in range(x.shape[1]):
            tile[j, r] = 0.0


@helper
def column_max(tile, c, m):
    """``m[r] = max(tile[:c, r])``, NaN where a column holds NaN."""
    for r in range(BLOCK_ROWS):
        m[r] = tile[0, r]
    for j in range(1, c):
        for r in range(BLOCK_ROWS):
            m[r] = maximum(m[r], tile[j, r])


@helper
def column_sums(tile, c, s):
    """``s[r] = sum(tile[:c, r])`` in float64.

    A loop of its own: accumulating float64 in the loop that computes the
    exponentials makes LLVM generate far slower code.
    """
    for r in range(BLOCK_ROWS):
        s[r] = 0.0
    for j in range(c):
        for r in range(BLOCK_ROWS):
            s[r] += tile[j, r]


@helper
def exp_columns(tile, c, t, m, s):
    """``tile = exp((tile - m) * t)`` per column; `s` gets the column sums."""
    for j in range(c):
        for r in range(BLOCK_ROWS):
            tile[j, r] = exp_nonpositive((tile[j, r] - m[r]) * t)
    column_sums(tile, c, s)


@kernel
def softmax(x, out, t, start, stop):
    """Softmax of the short rows ``start:stop``."""
    c = x.shape[1]
    tile = stack_array(SHORT_ROW_MAX, BLOCK_ROWS, x.dtype)
    m = stack_array(1, BLOCK_ROWS, x.dtype)[0]
    s = stack_array(1, BLOCK_ROWS, np.float64)[0]
    scale = stack_array(1, BLOCK_ROWS, x.dtype)[0]
    for first in range(start, stop, BLOCK_ROWS):
        n = min(BLOCK_ROWS, stop - first)
        load_tile(x, first, n, tile)
        column_max(tile, c, m)
        exp_columns(tile, c, t, m, s)
        for r in range(BLOCK_ROWS):
            scale[r] = 1.0 / s[r]
        for r in range(n):
            row = np.uint64(first + r)
            for j in range(c):
                out[row, j] = tile[j, r] * scale[r]


@kernel
def log_softmax(x, out, t, start, stop):
    """Log-softmax of the short rows ``start:stop``."""
    c = x.shape[1]
    tile = stack_array(SHORT_ROW_MAX, BLOCK_ROWS, x.dtype)
    m = stack_array(1, BLOCK_ROWS, x.dtype)[0]
    s = stack_array(1, BLOCK_ROWS, np.float64)[0]
    e = stack_array(SHORT_ROW_MAX, BLOCK_ROWS, x.dtype)
    log_s = stack_array(1, BLOCK_ROWS, x.dtype)[0]
    for first in range(start, stop, BLOCK_ROWS):
        n = min(BLOCK_ROWS, stop - first)
        load_tile(x, first, n, tile)
        column_max(tile, c, m)
        for j in range(c):
            for r in range(BLOCK_ROWS):
                e[j, r] = exp_nonpositive((tile[j, r] - m[r]) * t)
        column_sums(e, c, s)
        for r in range(BLOCK_ROWS):
            log_s[r] = log(s[r])
        for r in range(n):
            row = np.uint64(first + r)
            for j in range(c):
                out[row, j] = (tile[j, r] - m[r]) * t - log_s[r]


@kernel
def logsumexp(x, out, start, stop):
    """Log-sum-exp of the short rows ``start:stop`` into ``out[start:stop]``."""
    c = x.shape[1]
    tile = stack_array(SHORT_ROW_MAX, BLOCK_ROWS, x.dtype)
    m = stack_array(1, BLOCK_ROWS, x.dtype)[0]
    s = stack_array(1, BLOCK_ROWS, np.float64)[0]
    lse = stack_array(1, BLOCK_ROWS, np.float64)[0]
    for first in range(start, stop, BLOCK_ROWS):
        n = min(BLOCK_ROWS, stop - first)
        load_tile(x, first, n, tile)
        column_max(tile, c, m)
        exp_columns(tile, c, x.dtype.type(1.0), m, s)
        for r in range(BLOCK_ROWS):
            # m is NaN for rows holding NaN, so an infinite m means no NaN.
            value = m[r] + log(s[r])
            value = np.inf if m[r] == np.inf else value
            lse[r] = -np.inf if m[r] == -np.inf else value
        for r in range(n):
            out[np.uint64(first + r)] = lse[r]
