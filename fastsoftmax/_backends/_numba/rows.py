"""Per-row helpers for rows longer than ``blocks.SHORT_ROW_MAX`` classes.

Every function takes contiguous one-dimensional rows (layout ``'C'``) of
float32 or float64 and computes in that precision, except that sums are
accumulated in float64, so that rows of 256k classes stay exact to rounding.
Exponentials are summed a chunk at a time, in the row's precision across
vector lanes within a chunk and in float64 across chunks: a float64 sum inside
the loop computing float32 exponentials would make LLVM generate far slower
code. ``out`` may be the very same row as an input.
"""

import math

import numpy as np

from .elementary import exp, exp_nonpositive, log
from .intrinsics import (
    LINE_BYTES,
    fused_multiply_add,
    maximum,
    prefetch_span_to_l2,
    prefetch_to_l2,
    row_max_skipping_nan,
    stack_array,
    store_gaps_lines_streaming,
    store_gaps_streaming,
    store_scaled_streaming,
    unit_stride,
)
from .jit import helper, reduction
from .vector_exp import add_exps

# The one-pass log-sum-exp reads the row in blocks of this many elements: each
# block comes from memory once and is scanned twice from the L1 cache.
BLOCK = 2048
CHUNK = 1024
# Chunks summed in the row's precision by `store_exp`.
LANE_CHUNK = 256


@helper
def row_max(x):
    """Largest element, NaN if any element is NaN."""
    m = x[0]
    for j in range(1, x.shape[0]):
        m = maximum(m, x[j])
    return m


@reduction
def total(x):
    """``sum(x)`` in float64."""
    s = 0.0
    for j in range(x.shape[0]):
        s += x[j]
    return s


@helper
def doubled(t, x):
    """``2 t`` as two numbers ``(hi, lo)`` of `x`'s dtype, for `scaled_gap`.

    ``hi + lo`` carries ``2 t`` to twice the dtype's precision: the inverse
    temperature arrives in float64, and rounded to float32 once its error
    alone would reach the contract's 1e-5 on log-probabilities near -100.
    ``hi`` is rounded down, so ``lo >= 0`` and an infinite gap times either
    has one sign (never ``inf - inf``); ``lo = 0`` where ``hi`` is exact
    (every float64 row, and ``t = 1``, which gives ``(2, 0)``).
    """
    kind = x.dtype.type
    twice = float(t) + float(t)
    hi = kind(twice)
    if float(hi) > twice:
        hi = np.nextafter(hi, kind(0.0))
    return hi, kind(twice - float(hi))


@helper
def scaled_gap(v, shift, half_shift, twice_hi, twice_lo, offset):
    """``(v - shift) * t - offset``, with ``half_shift = shift / 2`` and `doubled` ``2 t``.

    Computed as ``d * hi + (d * lo - offset)`` with ``d = v/2 - shift/2``:
    the same roundings as ``v - shift`` (halving is exact), but the
    difference cannot overflow when `v` and the shift are huge with opposite
    signs and ``t`` is small; the two fused multiply-adds round once more at
    most. Without ``lo`` (``lo = 0`` would turn an infinite `d` into NaN) it
    is ``d * hi - offset``. For ``t = 1`` it is ``(v - shift) - offset``,
    which overflows only where the true result is ``-inf`` anyway. The tests
    are loop-invariant, so LLVM compiles a loop for each case.
    """
    if twice_hi == 2.0 and twice_lo == 0.0:
        return (v - shift) - offset
    d = v * np.float32(0.5) - half_shift
    if twice_lo == 0.0:
        return fused_multiply_add(d, twice_hi, -offset)
    return fused_multiply_add(d, twice_hi, fused_multiply_add(d, twice_lo, -offset))


# The chunk loops below index slices from 0: LLVM then knows every index is
# non-negative and drops Numba's negative-index wraparound from the loop body.


@reduction
def store_exp_chunk(source, target, shift, half_shift, twice_hi, twice_lo):
    """``target = exp((source - shift) * t)``; returns ``sum(target)`` in the row's precision.

    One loop that stores each exponential and adds it to a sum spread over
    the vector lanes; ``t = 1`` is tested once, outside the loops.
    """
    zero = source.dtype.type(0.0)
    part = zero
    if twice_hi == 2.0 and twice_lo == 0.0:
        for j in range(source.shape[0]):
            v = exp_nonpositive(source[j] - shift)
            target[j] = v
            part += v
    else:
        for j in range(source.shape[0]):
            v = exp_nonpositive(scaled_gap(source[j], shift, half_shift, twice_hi, twice_lo, zero))
            target[j] = v
            part += v
    return part


@helper
def store_exp(x, out, shift, t):
    """``out = exp((x - shift) * t)`` for ``x <= shift``; returns ``sum(out)`` in float64.

    Each ``LANE_CHUNK`` elements are summed in the row's precision (a few
    terms per vector lane, so within a few roundings), the chunks in float64.
    """
    n = x.shape[0]
    half_shift = shift * x.dtype.type(0.5)
    twice_hi, twice_lo = doubled(t, x)
    s = 0.0
    for start in range(0, n, LANE_CHUNK):
        stop = min(start + LANE_CHUNK, n)
        s += store_exp_chunk(
            x[start:stop], out[start:stop], shift, half_shift, twice_hi, twice_lo
        )
    return s


@helper
def store_exp_in_place(x, shift, t):
    """`store_exp` with ``out = x``.

    Each chunk is first copied to the stack: the vector loop of
    `store_exp_chunk` runs only for a source and a target that do not
    overlap, and would otherwise fall back to its scalar loop.
    """
    n = x.shape[0]
    half_shift = shift * x.dtype.type(0.5)
    twice_hi, twice_lo = doubled(t, x)
    buffer = stack_array(1, LANE_CHUNK, x.dtype)[0]
    s = 0.0
    for start in range(0, n, LANE_CHUNK):
        stop = min(start + LANE_CHUNK, n)
        source = buffer[: stop - start]
        source[:] = x[start:stop]
        s += store_exp_chunk(source, x[start:stop], shift, half_shift, twice_hi, twice_lo)
    return s


@reduction
def sum_exp_by_chunks(x, shift, t, chunk):
    """``sum(exp((x - shift) * t))`` for ``x <= shift``, summed across vector lanes.

    Each `chunk` elements are summed in the row's precision, their partial
    sums spread over the vector lanes, and the chunks in float64. One loop,
    no buffer.
    """
    n = x.shape[0]
    half_shift = shift * x.dtype.type(0.5)
    twice_hi, twice_lo = doubled(t, x)
    zero = x.dtype.type(0.0)
    s = 0.0
    for start in range(0, n, chunk):
        source = x[start : min(start + chunk, n)]
        part = zero
        for j in range(source.shape[0]):
            part += exp_nonpositive(
                scaled_gap(source[j], shift, half_shift, twice_hi, twice_lo, zero)
            )
        s += part
    return s


@helper
def sum_exp(x, shift, t):
    """`sum_exp_by_chunks` by ``LANE_CHUNK``: as accurate as `store_exp`'s sums."""
    return sum_exp_by_chunks(x, shift, t, LANE_CHUNK)


@helper
def sum_exp_in_lanes(x, shift, t):
    """`sum_exp_by_chunks` by ``CHUNK``: faster, but with 4 times as many terms
    per lane; within about 1e-6 relative in float32, enough where only
    ``log(s)`` is used."""
    return sum_exp_by_chunks(x, shift, t, CHUNK)


@reduction
def weighted_sum(x, w, shift):
    """``sum(w * (shift - x))`` in float64; `w` may be None for unit weights."""
    s = 0.0
    for j in range(x.shape[0]):
        if w is None:
            s += shift - x[j]
        else:
            s += w[j] * (shift - x[j])
    return s


@helper
def lse_update(block, m, s, t, in_lanes=False):
    """Fold one block into a running maximum `m` and ``s = sum(exp((x - m) * t))``.

    Returns the new ``(m, s)`` and the block's maximum. Once a NaN is seen, `m`
    stays NaN; a row of only ``-inf`` keeps ``(-inf, 0)``; ``+inf`` gives
    ``(inf, NaN)``. `in_lanes` picks `sum_exp_in_lanes` over `sum_exp`.
    """
    block_max = row_max(block)
    if block_max > m:
        s *= exp_nonpositive((float(m) - float(block_max)) * float(t))
        m = block_max
    elif block_max != block_max:
        m = block_max
    # While the maximum is -inf every element seen is -inf: shift by 0 so that
    # they add exactly 0 rather than exp(-inf - -inf) = NaN.
    shift = m if m > -np.inf else block.dtype.type(0.0)
    if in_lanes:
        s += sum_exp_in_lanes(block, shift, t)
    else:
        s += sum_exp(block, shift, t)
    return m, s, block_max


@helper
def online_lse(x, t, in_lanes=False, nan_max=True):
    """``(m, s)``: the row maximum and ``sum(exp((x - m) * t))``, in one pass.

    `in_lanes`: a faster sum, accurate enough for ``log(s)`` only.
    `nan_max`: a NaN in the row makes `m` NaN too. Without it, rows of up to
    ``BLOCK`` classes take their maximum over the other elements, which is
    cheaper; the NaN then reaches `s` only, enough where `m` and `s` are
    used together in arithmetic.
    """
    n = x.shape[0]
    if n <= BLOCK:  # one block: no running maximum to rescale by
        m = row_max(x) if nan_max else row_max_skipping_nan(x)
        shift = m if m > -np.inf else x.dtype.type(0.0)
        if in_lanes:
            return m, sum_exp_in_lanes(x, shift, t)
        return m, sum_exp(x, shift, t)
    m = x.dtype.type(-np.inf)
    s = 0.0
    for start in range(0, n, BLOCK):
        m, s, _ = lse_update(x[start : min(start + BLOCK, n)], m, s, t, in_lanes)
    return m, s


@helper
def lse_value(m, s):
    """``m + log(s)`` as float64, with the contract's values for special rows.

    NaN anywhere gives NaN (`m` is NaN), ``+inf`` gives ``+inf``, a row of
    only ``-inf`` gives ``-inf``.
    """
    if m == np.inf:
        return math.inf
    return float(m) + log(s)


@helper
def logsumexp(x):
    """``log(sum(exp(x)))`` of one row."""
    m, s = online_lse(x, x.dtype.type(1.0), True)
    return lse_value(m, s)


@helper
def softmax(x, out, t):
    """``out = exp((x - max) * t) / sum(...)``; a NaN row when max is not finite.

    The maximum skips NaN: a NaN element still makes the sum, so every
    output, NaN.
    """
    s = store_exp(x, out, row_max_skipping_nan(x), t)
    scale_row(out, x.dtype.type(1.0 / s))


@helper
def softmax_in_place(x, t):
    """`softmax` with ``out = x``."""
    s = store_exp_in_place(x, row_max_skipping_nan(x), t)
    scale_row(x, x.dtype.type(1.0 / s))


@helper
def prefetch_lines(row, start, stop):
    """Hints that ``row[start:stop]`` be brought into L2, one cache line at a time."""
    for j in range(start, stop, LINE_BYTES // row.itemsize):
        prefetch_to_l2(row, j)


@helper
def line_head(row):
    """How many elements of `row` come before its first cache line boundary (all of
    them when the row is not aligned even to its element size)."""
    address = row.ctypes.data
    if address % row.itemsize != 0:
        return row.shape[0]
    return min(row.shape[0], (LINE_BYTES - address % LINE_BYTES) % LINE_BYTES // row.itemsize)


@helper
def exp_store_step(x, e, m, t, out, ready, c, ahead, fetch):
    """`store_exp` into `e` (a workspace row), and at the same pace ``out = ready * c``
    streamed, one chunk of each per turn; when `fetch`, prefetches `ahead` meanwhile.

    The chunks of `out` start on its cache lines, so that each streams whole.
    """
    n = x.shape[0]
    half_m = m * x.dtype.type(0.5)
    twice_hi, twice_lo = doubled(t, x)
    head = line_head(out)
    store_scaled_streaming(ready[:head], out[:head], c)
    done = head
    s = 0.0
    for start in range(0, n, LANE_CHUNK):
        stop = min(start + LANE_CHUNK, n)
        s += store_exp_chunk(x[start:stop], e[start:stop], m, half_m, twice_hi, twice_lo)
        end = min(done + LANE_CHUNK, n)
        store_scaled_streaming(ready[done:end], out[done:end], c)
        done = end
        if fetch:
            prefetch_lines(ahead, start, stop)
    store_scaled_streaming(ready[done:], out[done:], c)
    return s


@helper
def softmax_pipelined(x, out, t, start, stop):
    """Softmax of the long rows ``start:stop`` of `x`, pipelined through a two-row workspace.

    Each exponential is computed once and kept in the workspace until its
    row's sum is known; while one row's exponentials are computed, the
    previous row's output streams out of the other workspace row and the row
    after is prefetched, so that arithmetic, memory reads and memory writes
    overlap (the C backend's `softmax_pipelined`). Call `store_fence` before
    the kernel returns.
    """
    work = np.empty((2, x.shape[1]), x.dtype)
    nan = x.dtype.type(math.nan)
    c = nan  # of the row whose exponentials are ready: NaN for a NaN row
    filling = 0
    for i in range(start - 1, stop):
        c_next = nan
        pending = i >= start  # row i's output, still to store
        if i + 1 < stop:
            following = unit_stride(x[i + 1])
            m = row_max_skipping_nan(following)
            fetch = i + 2 < stop
            ahead = unit_stride(x[i + 2]) if fetch else following
            if math.isfinite(m) and pending:
                s = exp_store_step(
                    following, work[filling], m, t, unit_stride(out[i]), work[1 - filling], c,
                    ahead, fetch,
                )
                c_next = x.dtype.type(1.0 / s)
                pending = False
            elif math.isfinite(m):  # the first row: nothing to store yet
                c_next = x.dtype.type(1.0 / store_exp(following, work[filling], m, t))
        if pending:
            store_scaled_streaming(work[1 - filling], unit_stride(out[i]), c)
        c = c_next
        filling = 1 - filling


@helper
def scale_row(x, scale):
    """``x *= scale``."""
    for j in range(x.shape[0]):
        x[j] *= scale


@helper
def log_softmax(x, out, t):
    """``out = (x - max) * t - log(sum(exp((x - max) * t)))``."""
    m, s = online_lse(x, t, True, False)
    c = x.dtype.type(log(s))
    half_m = m * x.dtype.type(0.5)
    twice_hi, twice_lo = doubled(t, x)
    for j in range(x.shape[0]):
        out[j] = scaled_gap(x[j], m, half_m, twice_hi, twice_lo, c)


# `log_softmax_rows` takes rows of at most PAIRED_ROW_MAX classes two at a
# time (`log_softmax_pair`): one thread, float32, 64 / 128 / 256 / 512
# classes 0.67 / 0.48 / 0.40 / 0.37 -> 0.55 / 0.43 / 0.37 / 0.35 ns per
# element; rows of 1000 and 2048 classes were slower (0.39 -> 0.66, 0.42 ->
# 0.49), and four rows at a time gained no more.
PAIRED_ROW_MAX = 512


@helper
def log_softmax_pair(a, b, out_a, out_b, t):
    """`log_softmax` of rows `a` and `b` (of at most ``BLOCK`` classes) side by side.

    A short row is bound by the latency of its reductions (maximum, sum, log)
    rather than by its arithmetic; taking each step for both rows before the
    next lets the two rows' chains overlap. Same results as `log_softmax`.
    """
    zero = a.dtype.type(0.0)
    m_a = row_max_skipping_nan(a)
    m_b = row_max_skipping_nan(b)
    # a row of -inf: shift by 0, so that its terms add exactly 0
    s_a = sum_exp_in_lanes(a, m_a if m_a > -np.inf else zero, t)
    s_b = sum_exp_in_lanes(b, m_b if m_b > -np.inf else zero, t)
    c_a = a.dtype.type(log(s_a))
    c_b = a.dtype.type(log(s_b))
    twice_hi, twice_lo = doubled(t, a)
    half = a.dtype.type(0.5)
    for j in range(a.shape[0]):
        out_a[j] = scaled_gap(a[j], m_a, m_a * half, twice_hi, twice_lo, c_a)
    for j in range(b.shape[0]):
        out_b[j] = scaled_gap(b[j], m_b, m_b * half, twice_hi, twice_lo, c_b)


@helper
def log_softmax_unit_streamed(x, out):
    """`log_softmax` at ``t = 1``, `out` written by streaming stores."""
    m, s = online_lse(x, x.dtype.type(1.0), True, False)
    store_gaps_streaming(x, out, m, x.dtype.type(log(s)))


# `log_softmax_unit_pipelined` takes the exponentials of one row PIPE_STEP
# elements per turn, each turn also streaming PIPE_STEP elements of the
# previous row's output, and adds them up in float64 every PIPE_BLOCK
# elements. float32, 2 threads, in one process: 1024 rows of 32000 classes
# 0.243 -> 0.179 ns/element, 64 of 256000 0.279 -> 0.238. Alternating whole
# blocks of 256 elements of the two rows had gained only 10 % over no
# pipeline; taking each block's maximum just before its exponentials (one
# read of the row instead of two) ran at 0.25-0.30, its loop compiled far
# worse. float64 rows take their maximum in stages of PIPE_STAGE_BYTES, each
# just before its exponentials (a running maximum, the sum rescaled when it
# grows), so that a row of 256 KiB or more is not read twice from beyond an
# L2 of 512 KiB that also holds the previous row: AVX2, 2 threads, median of
# 3 alternating processes, 1024 x 32000 2.77 -> 2.31 ns/element, 64 x
# 256000 2.99 -> 2.61; float32 rows so staged were 2-3 % slower.
PIPE_BLOCK = 256
PIPE_STEP = 32  # two cache lines of float32, four of float64
PIPE_STAGE_BYTES = 16 << 10

# A load whose address matches that of a store still in flight in bits 11:0
# waits for it (4K aliasing). Row i's output streams at the pace of the loads
# of row i + 1: with both rows at one offset in a page (rows of 256000
# float64, a whole number of pages, in NumPy's arrays), each load met the store
# of the turn before it. The stores start where the loads run LOADS_AHEAD
# bytes ahead of them (`store_start`) and wrap around at the row's end, which
# changes only their order. float64, one thread, 16 rows of 32768 (in L3),
# output at the input's offset in a page: 1.95-2.06 -> 1.60-1.64 ns per
# element, as fast as at any other offset; 64 x 256000 at 2 threads, against
# the C backend in one process: 1.40 -> 1.19 times its time.
ALIAS_PAGE = 4096
LOADS_AHEAD = 1536


@helper
def store_start(row_out, following, head, end):
    """Where the streamed lines of ``row_out[head:end]`` start (a whole number of
    turns past `head`), so that the loads of `following` taken at their pace
    run ``LOADS_AHEAD`` bytes ahead of them modulo ``ALIAS_PAGE``."""
    step_bytes = PIPE_STEP * row_out.itemsize
    distance = np.int64(following.ctypes.data) - np.int64(row_out.ctypes.data)
    turns = (distance - head * row_out.itemsize - LOADS_AHEAD) % ALIAS_PAGE // step_bytes
    start = head + turns * PIPE_STEP
    return start if start < end else head


@helper
def store_turn(row, row_out, k, lines, m, c):
    """Streams the `k`-th ``PIPE_STEP`` elements of ``row_out = (row - m) - c`` in the
    order `lines` ``= (head, start, end)`` gives: from `start` to `end`, then
    from `head` to `start`."""
    head, start, end = lines
    at = start + k * PIPE_STEP
    if at >= end:
        at -= end - head
    store_gaps_lines_streaming(row, row_out, at, PIPE_STEP, m, c)


@helper
def sum_exp_streaming(x, shift, row, row_out, k, lines, m, c, ahead, fetch):
    """``sum(exp(x - shift))`` in float64, while ``row_out = (row - m) - c`` streams
    whole cache lines, ``PIPE_STEP`` elements of each per turn, from its
    `k`-th turn on (`store_turn`).

    When `fetch`, `ahead` is prefetched into L2 meanwhile. Returns the sum
    and the new `k`.
    """
    head, _, end = lines
    turns = (end - head) // PIPE_STEP
    acc = stack_array(1, PIPE_STEP, x.dtype)[0]  # add_exps fills its first two vectors
    s = 0.0
    blocks = x.shape[0] // PIPE_BLOCK
    for b in range(blocks):
        for lane in range(PIPE_STEP):
            acc[lane] = 0.0
        for turn in range(b * PIPE_BLOCK, (b + 1) * PIPE_BLOCK, PIPE_STEP):
            add_exps(acc, x[turn : turn + PIPE_STEP], shift, PIPE_STEP)
            if k < turns:
                store_turn(row, row_out, k, lines, m, c)
                k += 1
            if fetch:
                prefetch_span_to_l2(ahead, turn, PIPE_STEP)
        s += total(acc)  # pairwise: a lane-by-lane float64 sum would be a long chain
    j = blocks * PIPE_BLOCK
    if j < x.shape[0]:
        s += sum_exp_by_chunks(x[j:], shift, x.dtype.type(1.0), LANE_CHUNK)
    return s, k


@helper
def log_softmax_unit_pipelined(x, out, start, stop):
    """`log_softmax_unit_streamed` over the rows ``start:stop`` of `x`, pipelined.

    Row ``i + 1``'s maximum is taken first (the row then sits in L2; float64
    rows a stage at a time, see ``PIPE_STAGE_BYTES``); while its
    exponentials are summed, row ``i``'s output streams at their pace
    (`sum_exp_streaming`) and row ``i + 2`` is prefetched into L2, so that
    the exponentials, the reads and the writes overlap instead of taking
    turns.
    """
    n = x.shape[1]
    one = x.dtype.type(1.0)
    m, s = online_lse(unit_stride(x[start]), one, True, False)
    for i in range(start, stop):
        row = unit_stride(x[i])
        row_out = unit_stride(out[i])
        c = x.dtype.type(log(s))
        # up to the output's first cache line, and after its last whole turn:
        # element by element; the turns between stream (`store_turn`)
        head = line_head(row_out)
        end = head + (n - head) // PIPE_STEP * PIPE_STEP
        store_gaps_streaming(row[:head], row_out[:head], m, c)
        lines = (head, head, end)
        k = 0
        next_m = x.dtype.type(-np.inf)
        next_s = 0.0
        if i + 1 < stop:
            following = unit_stride(x[i + 1])
            lines = (head, store_start(row_out, following, head, end), end)
            fetch = i + 2 < stop
            ahead = unit_stride(x[i + 2]) if fetch else following
            stage = PIPE_STAGE_BYTES // x.itemsize if x.itemsize == 8 else n
            for first in range(0, n, stage):
                part = following[first : first + stage]
                # NaN skipped (one vector maximum per vector, where the
                # NaN-propagating maximum takes three): a NaN still reaches the
                # sum, and through log(sum) every output of its row
                part_max = row_max_skipping_nan(part)
                if part_max > next_m:
                    if next_m > -np.inf:
                        next_s *= exp_nonpositive(float(next_m) - float(part_max))
                    next_m = part_max
                # while the row is all -inf: shift by 0, so that its terms add exactly 0
                shift = next_m if next_m > -np.inf else x.dtype.type(0.0)
                part_s, k = sum_exp_streaming(
                    part, shift, row, row_out, k, lines, m, c,
                    ahead[first : first + stage], fetch,
                )
                next_s += part_s
        for turn in range(k, (end - head) // PIPE_STEP):
            store_turn(row, row_out, turn, lines, m, c)
        store_gaps_streaming(row[end:], row_out[end:], m, c)
        m, s = next_m, next_s


# Softmax without a workspace (`softmax_rescaled`) takes rows of at least
# RESCALE_MIN_BYTES (shorter rows fit L2 with their output, and `softmax`
# was faster there: 200 x 65536 float32, 0.26-0.27 against 0.29-0.33 ns per
# element) and at most RESCALE_MAX_BYTES, whose output is still in cache (L3)
# when it is scaled. Each part of CHUNK elements keeps the running maximum
# its exponentials were taken against.
RESCALE_MIN_BYTES = 512 << 10
RESCALE_MAX_BYTES = 2 << 20


@helper
def scale_parts(row, factors, start, stop):
    """``row[j] *= factors[j // CHUNK]`` for ``start <= j < stop``."""
    j = start
    while j < stop:
        end = min((j // CHUNK + 1) * CHUNK, stop)
        part = row[j:end]
        f = factors[j // CHUNK]
        for k in range(part.shape[0]):
            part[k] *= f
        j = end


@helper
def rescale_step(x, e, t, maxima, prev, factors, pending, ahead, fetch, in_place):
    """Row `x`'s exponentials into `e` (its output row, which may be `x`), a part of
    ``CHUNK`` elements at a time against the running maximum, kept per part in
    `maxima`; returns the row's maximum and the sum of `e` in float64.

    Meanwhile, ``PIPE_BLOCK`` elements per turn, `prev` (the previous row's
    output, when `pending`) is scaled in place by the factor of each of its
    parts, and when `fetch`, `ahead` is prefetched into L2. `in_place` (``e`` is
    ``x``) is a constant at each call, so that each call compiles to one loop.
    """
    n = x.shape[0]
    twice_hi, twice_lo = doubled(t, x)
    buffer = stack_array(1, PIPE_BLOCK, x.dtype)[0]
    m = x.dtype.type(-np.inf)
    s = 0.0
    for part in range((n + CHUNK - 1) // CHUNK):
        start = part * CHUNK
        stop = min(start + CHUNK, n)
        part_max = row_max_skipping_nan(x[start:stop])
        if part_max > m:
            if m > -np.inf:
                s *= exp((float(m) - float(part_max)) * float(t))
            m = part_max
        maxima[part] = m
        # while every element so far is -inf or NaN, no shift: exact zeros, or NaN
        shift = m if m > -np.inf else x.dtype.type(0.0)
        half_shift = shift * x.dtype.type(0.5)
        for block in range(start, stop, PIPE_BLOCK):
            block_stop = min(block + PIPE_BLOCK, stop)
            source = x[block:block_stop]
            if in_place:  # a loop from the stack vectorizes without an overlap check
                source = buffer[: block_stop - block]
                source[:] = x[block:block_stop]
            s += store_exp_chunk(
                source, e[block:block_stop], shift, half_shift, twice_hi, twice_lo
            )
            if pending:
                scale_parts(prev, factors, block, block_stop)
            if fetch:
                prefetch_span_to_l2(ahead, block, PIPE_BLOCK)  # past the row's end: harmless
    return m, s


@helper
def rescale_factors(maxima, parts, m, s, t):
    """A row's part maxima into the factors ``exp((part maximum - m) * t) / s``
    that turn its exponentials into its softmax, in place; all NaN for a row
    that is not usable (a NaN, an infinite maximum, or only ``-inf``)."""
    usable = math.isfinite(m) and s == s
    last = maxima.dtype.type(math.nan)
    factor = last
    for part in range(parts):
        if usable and maxima[part] != last:  # the running maximum changes seldom
            last = maxima[part]
            factor = maxima.dtype.type(exp((float(last) - float(m)) * float(t)) / s)
        maxima[part] = factor


@helper
def softmax_rescaled(x, out, t, start, stop):
    """Softmax of the long rows ``start:stop`` of `x`, each output row its own workspace.

    For rows too few for a workspace under the memory rule: each exponential
    is computed once and kept in the output, against the running maximum of
    its part of the row, and each part is scaled in place once the row's
    maximum and sum are known. One row's scaling runs at the pace of the
    next row's exponentials (`rescale_step`), while the row after is
    prefetched: the row is read once, and its output written twice, the
    second time from cache (the C backend's `softmax_rescaled`).
    """
    if start >= stop:
        return
    n = x.shape[1]
    parts = (n + CHUNK - 1) // CHUNK
    maxima = np.empty((2, parts), x.dtype)
    in_place = x.ctypes.data == out.ctypes.data
    filling = 0
    for i in range(start - 1, stop):
        pending = i >= start  # row i's output, still to scale
        prev = unit_stride(out[max(i, start)])  # (not touched unless pending)
        if i + 1 < stop:
            fetch = i + 2 < stop
            following = unit_stride(x[i + 1])
            e = unit_stride(out[i + 1])
            ahead = unit_stride(x[i + 2]) if fetch else following
            filled, ready = maxima[filling], maxima[1 - filling]
            if in_place:
                m, s = rescale_step(
                    following, e, t, filled, prev, ready, pending, ahead, fetch, True
                )
            else:
                m, s = rescale_step(
                    following, e, t, filled, prev, ready, pending, ahead, fetch, False
                )
            rescale_factors(maxima[filling], parts, m, s, t)
        elif pending:
            scale_parts(prev, maxima[1 - filling], 0, n)
        filling = 1 - filling


@reduction
def dot(a, b):
    """``sum(a * b)`` in float64."""
    s = 0.0
    for j in range(a.shape[0]):
        s += a[j] * b[j]
    return s


@helper
def softmax_backward(grad, y, out):
    """``out = y * (grad - sum(grad * y))``."""
    d = grad.dtype.type(dot(grad, y))
    for j in range(grad.shape[0]):
        out[j] = y[j] * (grad[j] - d)


@helper
def log_softmax_backward(grad, logp, out):
    """``out = grad - exp(logp) * sum(grad)``."""
    n = grad.shape[0]
    g = grad.dtype.type(total(grad))
    for j in range(n):
        out[j] = grad[j] - exp(logp[j]) * g
