"""Short rows (``C <= SHORT_ROW_MAX``), ``BLOCK_ROWS`` rows at a time.

A row of ten classes is too short for vector loops along it. Instead a block
of rows is copied transposed into a small tile, ``tile[j, r] = x[first + r, j]``,
so that every loop over the tile runs across rows: vector lanes hold different
rows, and the maxima, exponentials, sums and logs of a whole block are
computed with full vectors. Results are copied back transposed (softmax,
log_softmax), or each row then finishes on its own from its column of the tile
(logsumexp, cross-entropy against class indices, top-k). The tile and the
per-row vectors live on the stack with constant sizes, so LLVM vectorizes the
loops over them without overlap checks. Rows past the end of the last block
are padded with zeros and never written. Rows of at least 8 classes move
between the array and the tile in 8 x 8 blocks transposed in vector registers
(`rows_by_8`), the rest element by element. At ``t = 1``, float32 rows of 8 to
16 classes skip most of the tile: ``register_rows`` keeps eight of them at a
time in registers, softmax wholly, log-softmax until its gaps and sums go to
the tile for the logarithm.
"""

import numpy as np

from . import cross_entropy, register_rows, rows
from .elementary import exp_nonpositive, log
from .intrinsics import (
    copy_block_transposed,
    copy_block_transposed_minus,
    copy_block_transposed_times,
    maximum,
    stack_array,
    unit_stride,
)
from .jit import helper, kernel

SHORT_ROW_MAX = 32
BLOCK_ROWS = 64


@helper
def rows_by_8(n, c):
    """How many of `n` rows of `c` classes move by 8 x 8 blocks (rows of >= 8 classes)."""
    return n - n % 8 if c >= 8 else 0


@helper
def load_tile(x, first, n, tile):
    """``tile[j, r] = x[first + r, j]`` for ``r < n``, 0 for the padding rows."""
    c = x.shape[1]
    by_8 = rows_by_8(n, c)
    for r in range(0, by_8, 8):
        for j in range(0, c, 8):
            col = min(j, c - 8)  # the last block overlaps the one before
            copy_block_transposed(x, first + r, col, tile, col, r)
    for r in range(by_8, n):
        row = np.uint64(first + r)  # unsigned: no negative-index wraparound
        for j in range(c):
            tile[j, r] = x[row, j]
    for r in range(n, BLOCK_ROWS):
        for j in range(c):
            tile[j, r] = 0.0


@helper
def store_tile_mapped(tile, out, first, n, values, times):
    """``out[first + r, j] = tile[j, r] * values[r]`` (`times`) or ``- values[r]``, ``r < n``.

    The tile goes back transposed with the last step of softmax (a scale per
    row) or log-softmax (a shift per row) applied on the way, in registers,
    which saves a pass over the tile; `times` is a constant at every call.
    """
    c = out.shape[1]
    by_8 = rows_by_8(n, c)
    for r in range(0, by_8, 8):
        for j in range(0, c, 8):
            col = min(j, c - 8)
            if times:
                copy_block_transposed_times(tile, col, r, out, first + r, col, values)
            else:
                copy_block_transposed_minus(tile, col, r, out, first + r, col, values)
    for r in range(by_8, n):
        row = np.uint64(first + r)
        for j in range(c):
            out[row, j] = tile[j, r] * values[r] if times else tile[j, r] - values[r]


@helper
def column_max(tile, c, m):
    """``m[r] = max(tile[:c, r])``, NaN where a column holds NaN."""
    for r in range(BLOCK_ROWS):
        m[r] = tile[0, r]
    for j in range(1, c):
        for r in range(BLOCK_ROWS):
            m[r] = maximum(m[r], tile[j, r])


# Columns whose exponentials are summed in the tile's precision before the sum
# moves to float64: the relative error of a row sum stays within 7 roundings
# (4.2e-7 in float32), and the float64 additions, far slower across vector
# lanes, come once per 8 columns rather than once per column.
COLUMNS_PER_PART = 8


@helper
def halves(m, half_m):
    """``half_m = m / 2``, for ``rows.scaled_gap``."""
    for r in range(BLOCK_ROWS):
        half_m[r] = m[r] * m.dtype.type(0.5)


@helper
def exp_columns(tile, c, t, m, s, e=None):
    """``e = exp((tile - m) * t)`` per column; `s` gets the column sums in float64.

    ``e=None`` overwrites `tile` (passing `tile` as `e` instead makes LLVM
    generate far slower code). Each exponential is stored and added to a
    partial sum in one loop; see ``COLUMNS_PER_PART``.
    """
    half_m = stack_array(1, BLOCK_ROWS, tile.dtype)[0]
    part = stack_array(1, BLOCK_ROWS, tile.dtype)[0]
    halves(m, half_m)
    twice_hi, twice_lo = rows.doubled(t, tile)
    zero = tile.dtype.type(0.0)
    for r in range(BLOCK_ROWS):
        s[r] = 0.0
    for first in range(0, c, COLUMNS_PER_PART):
        for r in range(BLOCK_ROWS):
            part[r] = 0.0
        for j in range(first, min(first + COLUMNS_PER_PART, c)):
            for r in range(BLOCK_ROWS):
                gap = rows.scaled_gap(tile[j, r], m[r], half_m[r], twice_hi, twice_lo, zero)
                v = exp_nonpositive(gap)
                if e is None:
                    tile[j, r] = v
                else:
                    e[j, r] = v
                part[r] += v
        for r in range(BLOCK_ROWS):
            s[r] += part[r]


@helper
def sum_exp_columns(tile, c, t, m, s, gaps=None):
    """``s[r] = sum_j exp((tile[j, r] - m[r]) * t)``, in the tile's precision.

    Enough where only ``log(s)`` is used (a sum of at most ``SHORT_ROW_MAX``
    terms per row), and one loop: faster than `exp_columns`. `gaps`, a tile
    of the same shape, receives the gaps ``(tile - m) * t`` as
    ``rows.scaled_gap`` rounds them (into a tile of their own: written over
    `tile`, the loop ran 10 % slower).
    """
    half_m = stack_array(1, BLOCK_ROWS, tile.dtype)[0]
    halves(m, half_m)
    twice_hi, twice_lo = rows.doubled(t, tile)
    zero = tile.dtype.type(0.0)
    for r in range(BLOCK_ROWS):
        s[r] = 0.0
    for j in range(c):
        for r in range(BLOCK_ROWS):
            gap = rows.scaled_gap(tile[j, r], m[r], half_m[r], twice_hi, twice_lo, zero)
            if gaps is not None:
                gaps[j, r] = gap
            s[r] += exp_nonpositive(gap)


@helper
def softmax_tiles(x, out, t, start, stop):
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
        store_tile_mapped(tile, out, first, n, scale, True)


@helper
def log_softmax_tiles(x, out, t, start, stop):
    """Log-softmax of the short rows ``start:stop``.

    At ``t = 1`` the gaps get a tile of their own and ``log(s)`` is taken off
    on the way out; elsewhere the output is computed from the unshifted tile
    with one rounding (`log_output_columns`), an extra pass over the tile.
    """
    c = x.shape[1]
    tile = stack_array(SHORT_ROW_MAX, BLOCK_ROWS, x.dtype)
    m = stack_array(1, BLOCK_ROWS, x.dtype)[0]
    gaps = stack_array(SHORT_ROW_MAX, BLOCK_ROWS, x.dtype)
    s = stack_array(1, BLOCK_ROWS, x.dtype)[0]
    log_s = stack_array(1, BLOCK_ROWS, x.dtype)[0]
    zeros = stack_array(1, BLOCK_ROWS, x.dtype)[0]
    for r in range(BLOCK_ROWS):
        zeros[r] = 0.0
    for first in range(start, stop, BLOCK_ROWS):
        n = min(BLOCK_ROWS, stop - first)
        load_tile(x, first, n, tile)
        column_max(tile, c, m)
        if t == 1.0:
            sum_exp_columns(tile, c, t, m, s, gaps)
            for r in range(BLOCK_ROWS):
                log_s[r] = log(s[r])
            store_tile_mapped(gaps, out, first, n, log_s, False)
        else:
            sum_exp_columns(tile, c, t, m, s)
            for r in range(BLOCK_ROWS):
                log_s[r] = log(s[r])
            log_output_columns(tile, c, t, m, log_s, gaps)
            store_tile_mapped(gaps, out, first, n, zeros, False)


@helper
def log_output_columns(tile, c, t, m, log_s, result):
    """``result = (tile - m) * t - log_s`` per column, rounded once (`rows.scaled_gap`).

    For ``t != 1``: gaps rounded into a tile and then shifted by ``log_s``
    round twice more, up to 1.3e-5 on float32 log-probabilities near -100
    (the contract allows 1e-5).
    """
    half_m = stack_array(1, BLOCK_ROWS, tile.dtype)[0]
    halves(m, half_m)
    twice_hi, twice_lo = rows.doubled(t, tile)
    for j in range(c):
        for r in range(BLOCK_ROWS):
            result[j, r] = rows.scaled_gap(
                tile[j, r], m[r], half_m[r], twice_hi, twice_lo, log_s[r]
            )


# As for the long rows (see ``kernels``), the common t = 1 gets code of its
# own, compiled with the literal: LLVM then drops the temperature from the tile
# loops (1048576 x 10 float64 on one thread: softmax 1.85 -> 1.45 ns per
# element, log_softmax 1.9 -> 1.6). Each case is a kernel of its own, optimized
# alone: inlined side by side into the entry kernel, the t = 1 code ran 5-9 %
# slower (1048576 x 10, one thread: float32 softmax 0.69 -> 0.66, log_softmax
# 0.78 -> 0.74; float64 1.86 -> 1.71 and 2.06 -> 1.92).


@helper
def log_softmax_registers(x, out, start, stop):
    """`log_softmax` at ``t = 1`` where ``register_rows.fits``: gaps and sums in registers."""
    gaps = stack_array(SHORT_ROW_MAX, BLOCK_ROWS, x.dtype)
    s = stack_array(1, BLOCK_ROWS, x.dtype)[0]
    log_s = stack_array(1, BLOCK_ROWS, x.dtype)[0]
    for first in range(start, stop, BLOCK_ROWS):
        n = min(BLOCK_ROWS, stop - first)
        register_rows.gap_rows(x, first, n, gaps, s)
        for r in range(BLOCK_ROWS):
            log_s[r] = log(s[r])
        store_tile_mapped(gaps, out, first, n, log_s, False)


@kernel
def softmax_unit(x, out, start, stop):
    """`softmax` at ``t = 1``."""
    if register_rows.fits(x):
        register_rows.softmax_rows(x, out, start, stop - start)
    else:
        softmax_tiles(x, out, x.dtype.type(1.0), start, stop)


@kernel
def softmax_scaled(x, out, t, start, stop):
    """`softmax` at any `t`."""
    softmax_tiles(x, out, t, start, stop)


@kernel
def log_softmax_unit(x, out, start, stop):
    """`log_softmax` at ``t = 1``."""
    if register_rows.fits(x):
        log_softmax_registers(x, out, start, stop)
    else:
        log_softmax_tiles(x, out, x.dtype.type(1.0), start, stop)


@kernel
def log_softmax_scaled(x, out, t, start, stop):
    """`log_softmax` at any `t`."""
    log_softmax_tiles(x, out, t, start, stop)


@kernel
def logsumexp(x, out, start, stop):
    """Log-sum-exp of the short rows ``start:stop`` into ``out[start:stop]``."""
    c = x.shape[1]
    tile = stack_array(SHORT_ROW_MAX, BLOCK_ROWS, x.dtype)
    m = stack_array(1, BLOCK_ROWS, x.dtype)[0]
    s = stack_array(1, BLOCK_ROWS, x.dtype)[0]
    lse = stack_array(1, BLOCK_ROWS, np.float64)[0]
    for first in range(start, stop, BLOCK_ROWS):
        n = min(BLOCK_ROWS, stop - first)
        load_tile(x, first, n, tile)
        column_max(tile, c, m)
        sum_exp_columns(tile, c, x.dtype.type(1.0), m, s)
        for r in range(BLOCK_ROWS):
            # m is NaN for rows holding NaN, so an infinite m means no NaN.
            value = m[r] + log(s[r])
            value = np.inf if m[r] == np.inf else value
            lse[r] = -np.inf if m[r] == -np.inf else value
        for r in range(n):
            out[np.uint64(first + r)] = lse[r]


@kernel
def cross_entropy_class(
    logits, target, weight, loss_out, grad_out, ignore_index, eps, z_loss, scale, start, stop
):
    """Cross-entropy of the short rows ``start:stop`` against class indices.

    The formulas of ``cross_entropy.class_target``: exponentials, sums and
    logs per tile, then each row's loss and gradient row. Rows without a
    finite maximum go to ``class_target`` itself.
    """
    c = logits.shape[1]
    dtype = logits.dtype.type
    w_total = float(c) if weight is None else rows.total(weight)
    tile = stack_array(SHORT_ROW_MAX, BLOCK_ROWS, logits.dtype)
    e = stack_array(SHORT_ROW_MAX, BLOCK_ROWS, logits.dtype)
    m = stack_array(1, BLOCK_ROWS, logits.dtype)[0]
    s = stack_array(1, BLOCK_ROWS, np.float64)[0]
    log_s = stack_array(1, BLOCK_ROWS, np.float64)[0]
    gaps = stack_array(1, BLOCK_ROWS, np.float64)[0]
    off = dtype(scale * eps / c)
    for first in range(start, stop, BLOCK_ROWS):
        n = min(BLOCK_ROWS, stop - first)
        load_tile(logits, first, n, tile)
        column_max(tile, c, m)
        exp_columns(tile, c, dtype(1.0), m, s, e)
        for r in range(BLOCK_ROWS):
            log_s[r] = log(s[r])
            gaps[r] = 0.0
        if eps > 0.0:  # gaps[r] = sum_j w[j] (m - z[j]), for the smoothing term
            for j in range(c):
                w_j = 1.0 if weight is None else float(weight[j])
                for r in range(BLOCK_ROWS):
                    gaps[r] += w_j * (m[r] - tile[j, r])
        for r in range(n):
            row = np.uint64(first + r)
            y = target[row]
            if y == ignore_index:
                loss_out[row] = 0.0
                if grad_out is not None:
                    for j in range(c):
                        grad_out[row, j] = 0.0
                continue
            if not np.isfinite(m[r]):
                z = unit_stride(logits[row])
                g = None if grad_out is None else unit_stride(grad_out[row])
                loss_out[row] = cross_entropy.class_target(
                    z, y, weight, w_total, eps, z_loss, scale, g
                )
                continue
            wy = 1.0 if weight is None else float(weight[y])
            lse = float(m[r]) + log_s[r]
            gap = float(m[r]) - float(tile[y, r])
            loss_out[row] = cross_entropy.class_loss(
                gap, log_s[r], lse, wy, gaps[r], w_total, eps, z_loss, c
            )
            if grad_out is not None:
                coefficient = cross_entropy.class_coefficient(
                    wy, lse, w_total, eps, z_loss, scale, c
                )
                a = dtype(coefficient / s[r])
                for j in range(c):
                    b = off if weight is None else off * weight[j]
                    grad_out[row, j] = a * e[j, r] - b
                grad_out[row, y] -= dtype(scale * (1.0 - eps) * wy)


@helper
def column_ranks(tile, c, rank):
    """``rank[j, r]``: how many logits of column ``r`` come before ``tile[j, r]``.

    Order: larger first, equal ones by lower index. Every pair is compared
    across the whole block at once, which for at most ``SHORT_ROW_MAX``
    classes beats keeping a sorted list per row.
    """
    for j in range(c):
        for r in range(BLOCK_ROWS):
            rank[j, r] = 0
        for i in range(j):
            for r in range(BLOCK_ROWS):
                rank[j, r] += np.int32(tile[i, r] >= tile[j, r])
        for i in range(j + 1, c):
            for r in range(BLOCK_ROWS):
                rank[j, r] += np.int32(tile[i, r] > tile[j, r])


@helper
def softmax_topk_tiles(x, t, values, index, start, stop):
    """Top-k softmax of the short rows ``start:stop``; ``k = values.shape[1]``."""
    c = x.shape[1]
    k = values.shape[1]
    tile = stack_array(SHORT_ROW_MAX, BLOCK_ROWS, x.dtype)
    e = stack_array(SHORT_ROW_MAX, BLOCK_ROWS, x.dtype)
    rank = stack_array(SHORT_ROW_MAX, BLOCK_ROWS, np.int32)
    m = stack_array(1, BLOCK_ROWS, x.dtype)[0]
    s = stack_array(1, BLOCK_ROWS, np.float64)[0]
    scale = stack_array(1, BLOCK_ROWS, x.dtype)[0]
    for first in range(start, stop, BLOCK_ROWS):
        n = min(BLOCK_ROWS, stop - first)
        load_tile(x, first, n, tile)
        column_max(tile, c, m)
        exp_columns(tile, c, t, m, s, e)
        for r in range(BLOCK_ROWS):
            scale[r] = 1.0 / s[r]
        column_ranks(tile, c, rank)
        for r in range(n):
            row = np.uint64(first + r)
            if not np.isfinite(m[r]):  # NaN, +inf or only -inf: the softmax is NaN
                for i in range(k):
                    values[row, i] = np.nan
                    index[row, i] = i
                continue
            for j in range(c):
                q = rank[j, r]
                if q < k:
                    values[row, q] = e[j, r] * scale[r]
                    index[row, q] = j


@kernel
def softmax_topk_unit(x, values, index, start, stop):
    """Top-k softmax at ``t = 1`` of the short rows ``start:stop``; ``k = values.shape[1]``."""
    softmax_topk_tiles(x, x.dtype.type(1.0), values, index, start, stop)


@kernel
def softmax_topk_scaled(x, t, values, index, start, stop):
    """Top-k softmax at any `t` of the short rows ``start:stop``; ``k = values.shape[1]``."""
    softmax_topk_tiles(x, t, values, index, start, stop)
