"""Rows of 8 to 16 float32 classes, eight rows at a time in vector registers.

The tile of ``blocks`` takes four passes over a stack array for such rows
(the transposed copy in, the maxima, the exponentials, the copy out), and
those passes cost more than the arithmetic. Here an intrinsic loads eight
rows as columns through register transposes (8 x 8 of the first eight
classes, then of the last four or eight, overlapping the first) and takes
their maxima, exponentials and sums in registers: `softmax_groups8` writes
the probabilities back through the same transposes, group after group in
one software-pipelined loop, and `softmax8` one group; `tile_gaps8` leaves
the gaps ``x - m`` and the sums to a tile, where log-softmax takes the
logarithms of a whole tile in one vectorized loop (there is no vector
``log`` here) and ``blocks`` copies the gaps out transposed, less those
logarithms. Each class count from 8 to 16 gets code of its own, so no
exponential is computed twice. Into large outputs, contiguous rows of an
even number of classes move as whole 32-byte lines instead, which stream.

Log-softmax's exponential is ``vector_exp.exp_nonpositive`` on ``<8 x
float>`` vectors, which gives ``elementary.exp_nonpositive``'s bits lane for
lane (``exp_nonpositive8`` exposes it to the tests); softmax's is the
cheaper ``vector_exp.exp_nonpositive_short`` (``exp_nonpositive_short8``),
the C backend's register kernels' exp bit for bit.
A maximum is a compare and select per pair of columns, which may skip a NaN;
the row's exponentials and sum are NaN all the same, so the row comes out
NaN as the contract wants. The sums are pairwise, at most four roundings
deep.
"""

import numpy as np
from llvmlite import binding as llvm
from llvmlite import ir
from numba.core import cgutils, config, types
from numba.extending import intrinsic, overload

from .intrinsics import (
    _PAIRS,
    _UNPACK,
    _is_float32_matrix,
    _is_vector_of_floats,
    _shuffle,
    _transpose8,
    _vector_pointers,
    stack_array,
    store_fence,
)
from .jit import helper
from .vector_exp import FLAGS, exp_nonpositive, exp_nonpositive_short, splat

LANES = 8
MIN_CLASSES = 8
MAX_CLASSES = 16

_FLOAT = ir.FloatType()
_VECTOR = ir.VectorType(_FLOAT, LANES)


def _splat(value):
    return splat(_VECTOR, value)


def _maximum(builder, a, b):
    """Per lane ``a > b ? a : b``: one x86 ``maxps``, where ``llvm.maximum`` takes five."""
    return builder.select(builder.fcmp_ordered(">", a, b), a, b)


def _pairwise(builder, values, combine):
    """`values` combined pairwise: halves folded onto each other until one is left."""
    part = list(values)
    n = len(part)
    while n > 1:
        half = (n + 1) // 2
        for j in range(n // 2):
            part[j] = combine(part[j], part[j + half])
        n = half
    return part[0]


def _vector_at(builder, pointer, offset_bytes):
    address = builder.add(builder.ptrtoint(pointer, cgutils.intp_t), offset_bytes)
    return builder.inttoptr(address, _VECTOR.as_pointer())


# Up to this many classes the classes past the first eight come from a 4-wide
# transpose of the last four, as in the C backend: an 8-wide one took eight
# more registers, which LLVM found by spilling.
NARROW_TAIL_MAX = 12


def _halves(builder, low, high):
    """The <8 x float> vector ``[low | high]`` of two <4 x float> ones."""
    return _shuffle(builder, low, high, tuple(range(8)))


def _transpose4x2(builder, vectors):
    """The 4 x 4 transposes within each 128-bit half of the four `vectors`."""
    a, b, c, d = vectors
    ab_low, ab_high = (_shuffle(builder, a, b, mask) for mask in _UNPACK)
    cd_low, cd_high = (_shuffle(builder, c, d, mask) for mask in _UNPACK)
    return [
        _shuffle(builder, ab_low, cd_low, _PAIRS[0]),
        _shuffle(builder, ab_low, cd_low, _PAIRS[1]),
        _shuffle(builder, ab_high, cd_high, _PAIRS[0]),
        _shuffle(builder, ab_high, cd_high, _PAIRS[1]),
    ]


def _load_columns(context, builder, matrix_type, matrix, row, n_classes, n):
    """The `n` columns (8 to 16) of rows ``row:row + 8``, `n_classes` being n at run time.

    Classes 0-7 come from an 8 x 8 transpose; the others from a transpose of
    the last four classes or, past NARROW_TAIL_MAX, of the last eight.
    """
    first = cgutils.intp_t(0)
    pointers = _vector_pointers(context, builder, matrix_type, matrix, row, first, LANES)
    head = _transpose8(builder, [builder.load(p, align=4) for p in pointers])
    if n == LANES:
        return head
    width = 4 if n <= NARROW_TAIL_MAX else LANES
    tail_start = builder.sub(n_classes, cgutils.intp_t(width))
    pointers = _vector_pointers(
        context, builder, matrix_type, matrix, row, tail_start, width, rows=LANES
    )
    if width == LANES:
        tail = _transpose8(builder, [builder.load(p, align=4) for p in pointers])
    else:
        quarters = [builder.load(p, align=4) for p in pointers]  # rows of 4 classes
        tail = _transpose4x2(
            builder, [_halves(builder, quarters[i], quarters[i + 4]) for i in range(4)]
        )
    return head + tail[width - (n - LANES) :]


def _store_columns(context, builder, matrix_type, matrix, row, n_classes, columns):
    """Rows ``row:row + 8`` from their `columns` (all 8 to 16 of them)."""
    n = len(columns)
    if n > LANES:
        # the last classes first: the first eight then overwrite the overlap
        # with the same values
        width = 4 if n <= NARROW_TAIL_MAX else LANES
        tail_start = builder.sub(n_classes, cgutils.intp_t(width))
        pointers = _vector_pointers(
            context, builder, matrix_type, matrix, row, tail_start, width, rows=LANES
        )
        if width == LANES:
            rows = _transpose8(builder, columns[n - LANES :])
        else:
            halves = _transpose4x2(builder, columns[n - 4 :])
            rows = [_shuffle(builder, v, v, (0, 1, 2, 3)) for v in halves] + [
                _shuffle(builder, v, v, (4, 5, 6, 7)) for v in halves
            ]
        for value, pointer in zip(rows, pointers):
            builder.store(value, pointer, align=4)
    first = cgutils.intp_t(0)
    pointers = _vector_pointers(context, builder, matrix_type, matrix, row, first, LANES)
    for value, pointer in zip(_transpose8(builder, columns[:LANES]), pointers):
        builder.store(value, pointer, align=4)


# Eight contiguous rows of an even number n of classes are n 32-byte lines,
# and no pair of classes (a qword) crosses a 16-byte half: rows 0-3 can stay
# in the low 128-bit halves and rows 4-7 in the high ones all the way, as in
# the C backend's fs_columns_from_lines. `halves[s][k]` holds half s of line k
# low and of line k + n/2 high, so qword f of rows 0-3 (row f // h, pair
# f % h of it, h = n/2) is qword f % 2 of halves[f // 2 % 2][f // 4] in each
# half. Whole lines can be streamed: large outputs are written without being
# read first, 80 bytes of memory traffic per row of ten classes instead of 120.
LAYOUT_ROWS, LAYOUT_STREAMED_LINES = 0, 1
_DEAL = ((0, 2, 8, 10, 4, 6, 12, 14), (1, 3, 9, 11, 5, 7, 13, 15))  # shufps 0x88 / 0xdd


def _pick_qwords(builder, a, i, b, j):
    """Per 128-bit half: [qword i of a, qword j of b] (float pairs of <8 x float>)."""
    mask = (2 * i, 2 * i + 1, 8 + 2 * j, 9 + 2 * j, 4 + 2 * i, 5 + 2 * i, 12 + 2 * j, 13 + 2 * j)
    return _shuffle(builder, a, b, mask)


def _line_address(builder, base, byte_offset, vector_type):
    address = builder.add(base, cgutils.intp_t(byte_offset))
    return builder.inttoptr(address, vector_type.as_pointer())


def _columns_from_lines(builder, base, n):
    """The `n` columns of the eight contiguous rows whose first byte is at `base`."""
    h = n // 2
    quarter = ir.VectorType(_FLOAT, 4)
    halves = [[None] * h for _ in range(2)]
    for k in range(h):
        for half in range(2):
            low, high = (
                builder.load(_line_address(builder, base, 32 * line + 16 * half, quarter), align=4)
                for line in (k, k + h)
            )
            halves[half][k] = _halves(builder, low, high)

    def qword(f):
        return halves[f // 2 % 2][f // 4], f % 2

    pairs = [  # rows 0 and 1 (4 and 5 above), rows 2 and 3
        [
            _pick_qwords(builder, *qword(2 * p * h + q), *qword((2 * p + 1) * h + q))
            for q in range(h)
        ]
        for p in range(2)
    ]
    columns = []
    for q in range(h):
        columns += [_shuffle(builder, pairs[0][q], pairs[1][q], mask) for mask in _DEAL]
    return columns


def _stream_lines(builder, base, columns):
    """The eight contiguous rows at `base` (16-byte aligned) from their `columns`,
    by streaming stores of 16 bytes."""
    n = len(columns)
    h = n // 2
    pairs = [[], []]  # rows 0 and 1 (4 and 5 above), rows 2 and 3
    for q in range(h):
        for p, mask in enumerate(_UNPACK):
            pairs[p].append(_shuffle(builder, columns[2 * q], columns[2 * q + 1], mask))
    halves = [[None] * h for _ in range(2)]
    for f in range(0, 4 * h, 2):
        row, next_row = f // h, (f + 1) // h
        halves[f // 2 % 2][f // 4] = _pick_qwords(
            builder,
            pairs[row // 2][f % h],
            row % 2,
            pairs[next_row // 2][(f + 1) % h],
            next_row % 2,
        )
    quarter = ir.VectorType(_FLOAT, 4)
    nontemporal = builder.module.add_metadata([ir.IntType(32)(1)])
    for k in range(h):
        for line, lanes in ((k, (0, 1, 2, 3)), (k + h, (4, 5, 6, 7))):
            for half in range(2):
                value = halves[half][k]
                store = builder.store(
                    _shuffle(builder, value, value, lanes),
                    _line_address(builder, base, 32 * line + 16 * half, quarter),
                    align=16,
                )
                store.set_metadata("nontemporal", nontemporal)


def _maxima(builder, columns):
    """The per-lane maximum of `columns`."""
    return _pairwise(builder, columns, lambda a, b: _maximum(builder, a, b))


def _sum(builder, vectors):
    """The per-lane sum of `vectors`, pairwise."""
    return _pairwise(builder, vectors, lambda a, b: builder.fadd(a, b, flags=FLAGS))


def _gaps_and_exps(builder, columns, m, short=False):
    """Per lane: the gaps ``columns - m`` and their exponentials (`exp_nonpositive_short`
    where `short`, as softmax takes them)."""
    gaps, exps = [], []
    fused = short and _has_fma()
    for column in columns:
        gaps.append(builder.fsub(column, m, flags=FLAGS))
        if short:
            exps.append(exp_nonpositive_short(builder, gaps[-1], fused))
        else:
            exps.append(exp_nonpositive(builder, gaps[-1]))
    return gaps, exps


def _has_fma():
    """Whether the code is compiled for a CPU with fused multiply-adds."""
    if config.CPU_FEATURES is not None:
        return "+fma" in config.CPU_FEATURES.split(",")
    if config.CPU_NAME not in (None, "host"):
        return False
    return bool(llvm.get_host_cpu_features().get("fma", False))


def _by_classes(builder, n_classes, emit):
    """``emit(n)`` in a branch of its own for each class count n from 8 to 16.

    Each branch takes exactly its n columns (tail column k holds class
    n - 8 + k, new from class 8 on), so no exponential is computed twice.
    """
    done = builder.append_basic_block("rows_done")
    switch = builder.switch(n_classes, done)
    for n in range(MIN_CLASSES, MAX_CLASSES + 1):
        block = builder.append_basic_block(f"classes_{n}")
        switch.add_case(ir.Constant(n_classes.type, n), block)
        builder.position_at_end(block)
        emit(n)
        builder.branch(done)
    builder.position_at_end(done)


def _gaps_codegen():
    """Code of `tile_gaps8`."""

    def codegen(context, builder, signature, args):
        source, row, n_classes, tile, lane, sums = args
        source_type, row_type, classes_type, tile_type, lane_type, sums_type = signature.args
        row = context.cast(builder, row, row_type, types.intp)
        n_classes = context.cast(builder, n_classes, classes_type, types.intp)
        lane = context.cast(builder, lane, lane_type, types.intp)
        tile_array = context.make_array(tile_type)(context, builder, value=tile)
        tile_stride = cgutils.unpack_tuple(builder, tile_array.strides, 2)[0]
        tile_lane = builder.mul(lane, cgutils.intp_t(4))
        sums_array = context.make_array(sums_type)(context, builder, value=sums)

        def emit(n):
            columns = _load_columns(context, builder, source_type, source, row, n_classes, n)
            gaps, exps = _gaps_and_exps(builder, columns, _maxima(builder, columns))
            total = _sum(builder, exps)
            for j, value in enumerate(gaps):
                offset = builder.add(builder.mul(tile_stride, cgutils.intp_t(j)), tile_lane)
                builder.store(value, _vector_at(builder, tile_array.data, offset), align=4)
            builder.store(total, _vector_at(builder, sums_array.data, tile_lane), align=4)

        _by_classes(builder, n_classes, emit)
        return context.get_dummy_value()

    return codegen


def _float32_rows_and_integers(source, target, *integers):
    """Whether a softmax intrinsic's types fit: two float32 matrices, then integers."""
    return (
        _is_float32_matrix(source)
        and _is_float32_matrix(target)
        and all(isinstance(i, types.Integer) for i in integers)
    )


def _normalize_store(
    context, builder, target_type, target, target_row, n_classes, exps, layout=LAYOUT_ROWS
):
    """Rows ``target_row:target_row + 8`` of `target`: `exps` over their per-lane sum."""
    inverse = builder.fdiv(_splat(1.0), _sum(builder, exps), flags=FLAGS)
    probabilities = [builder.fmul(e, inverse, flags=FLAGS) for e in exps]
    if layout == LAYOUT_ROWS:
        _store_columns(context, builder, target_type, target, target_row, n_classes, probabilities)
    else:
        base = _row_address(context, builder, target_type, target, target_row)
        _stream_lines(builder, base, probabilities)


def _row_address(context, builder, array_type, array, row):
    """The address of ``array[row, 0]``, an integer."""
    (pointer,) = _vector_pointers(
        context, builder, array_type, array, row, cgutils.intp_t(0), 1, rows=1
    )
    return builder.ptrtoint(pointer, cgutils.intp_t)


@intrinsic
def softmax8(typingctx, source, row, n_classes, target, target_row):
    """``target[target_row + i] = softmax(source[row + i, :n_classes])`` for i < 8.

    All in registers: the rows in and out through transposes. float32
    matrices with unit stride along a row, 8 to 16 classes; no bounds checks.
    """
    if not _float32_rows_and_integers(source, target, row, n_classes, target_row):
        return None

    def codegen(context, builder, signature, args):
        source, row, n_classes, target, target_row = args
        source_type, row_type, classes_type, target_type, target_row_type = signature.args
        row = context.cast(builder, row, row_type, types.intp)
        n_classes = context.cast(builder, n_classes, classes_type, types.intp)
        target_row = context.cast(builder, target_row, target_row_type, types.intp)

        def emit(n):
            columns = _load_columns(context, builder, source_type, source, row, n_classes, n)
            _, exps = _gaps_and_exps(builder, columns, _maxima(builder, columns), short=True)
            _normalize_store(context, builder, target_type, target, target_row, n_classes, exps)

        _by_classes(builder, n_classes, emit)
        return context.get_dummy_value()

    return types.none(source, row, n_classes, target, target_row), codegen


@intrinsic
def softmax_groups8(typingctx, source, row, n_groups, n_classes, target, target_row, layout):
    """`softmax8` of the `n_groups` groups of 8 rows from `row` (and `target_row`) on.

    `layout` LAYOUT_STREAMED_LINES moves contiguous rows of an even number of
    classes, in both matrices, as whole lines, streaming them into a 16-byte
    aligned target; LAYOUT_ROWS, or an odd number of classes, rows through
    transposes. Both give the same bits. (Lines without streaming, as the C
    backend also has them, gained 2-3 % there and would cost another
    pipelined loop per even class count to compile.)

    Software-pipelined by one group, as the C backend's register kernel: each
    turn loads group g and takes its maxima, writes group g - 1, then takes
    the exponentials of group g. Group after group, the loads and maxima that
    start a group and the sum, division and stores that end it are chains
    with little parallelism, and a group is more instructions than the core
    schedules from, so the next group's exponentials could not fill them.
    The class count is switched on once, outside the loop.
    """
    if not _float32_rows_and_integers(
        source, target, row, n_groups, n_classes, target_row, layout
    ):
        return None

    def codegen(context, builder, signature, args):
        source, row, n_groups, n_classes, target, target_row, layout = args
        source_type, target_type = signature.args[0], signature.args[4]
        row, n_groups, n_classes, target_row, layout = (
            context.cast(builder, value, value_type, types.intp)
            for value, value_type in zip(
                (row, n_groups, n_classes, target_row, layout),
                (signature.args[i] for i in (1, 2, 3, 5, 6)),
            )
        )
        carried = [cgutils.alloca_once(builder, _VECTOR) for _ in range(MAX_CLASSES)]
        eight = cgutils.intp_t(LANES)
        one = cgutils.intp_t(1)

        def pipelined(n, how):
            def columns_at(offset):
                at = builder.add(row, offset)
                if how == LAYOUT_ROWS:
                    return _load_columns(
                        context, builder, source_type, source, at, n_classes, n
                    )
                base = _row_address(context, builder, source_type, source, at)
                return _columns_from_lines(builder, base, n)

            def write_carried(offset):
                at = builder.add(target_row, offset)
                exps = [builder.load(slot) for slot in carried[:n]]
                _normalize_store(context, builder, target_type, target, at, n_classes, exps, how)

            def exps_into_carried(columns, m):
                _, exps = _gaps_and_exps(builder, columns, m, short=True)
                for slot, value in zip(carried, exps):
                    builder.store(value, slot)

            with builder.if_then(builder.icmp_signed(">", n_groups, cgutils.intp_t(0))):
                columns = columns_at(cgutils.intp_t(0))
                exps_into_carried(columns, _maxima(builder, columns))
                with cgutils.for_range(builder, builder.sub(n_groups, one)) as loop:
                    offset = builder.mul(builder.add(loop.index, one), eight)
                    columns = columns_at(offset)
                    m = _maxima(builder, columns)
                    write_carried(builder.sub(offset, eight))
                    exps_into_carried(columns, m)
                write_carried(builder.mul(builder.sub(n_groups, one), eight))

        def emit(n):
            if n % 2:
                pipelined(n, LAYOUT_ROWS)
                return
            streamed = builder.icmp_signed("==", layout, cgutils.intp_t(LAYOUT_STREAMED_LINES))
            with builder.if_else(streamed) as (lines, rows):
                with lines:
                    pipelined(n, LAYOUT_STREAMED_LINES)
                with rows:
                    pipelined(n, LAYOUT_ROWS)

        _by_classes(builder, n_classes, emit)
        return context.get_dummy_value()

    return types.none(source, row, n_groups, n_classes, target, target_row, layout), codegen


@intrinsic
def tile_gaps8(typingctx, source, row, n_classes, tile, lane, sums):
    """Rows ``row:row + 8`` of `source` (8 to 16 classes, unit stride along a row).

    ``tile[j, lane + i] = source[row + i, j] - m_i`` with ``m_i`` the row's
    maximum, and ``sums[lane + i]`` the sum of their exponentials. No bounds
    checks: the caller keeps the rows and lanes inside the arrays.
    """
    if not (
        _is_float32_matrix(source)
        and isinstance(row, types.Integer)
        and isinstance(n_classes, types.Integer)
        and _is_float32_matrix(tile)
        and tile.layout == "C"
        and isinstance(lane, types.Integer)
        and _is_vector_of_floats(sums)
        and sums.dtype == types.float32
    ):
        return None
    return types.none(source, row, n_classes, tile, lane, sums), _gaps_codegen()


def _exp8_intrinsic(exp):
    """An intrinsic ``(values, out, first)`` storing ``exp`` of ``values[first:first + 8]``."""

    def typer(typingctx, values, out, first):
        if not (
            _is_vector_of_floats(values)
            and values.dtype == types.float32
            and _is_vector_of_floats(out)
            and out.dtype == types.float32
            and isinstance(first, types.Integer)
        ):
            return None

        def codegen(context, builder, signature, args):
            values_array = context.make_array(signature.args[0])(context, builder, value=args[0])
            out_array = context.make_array(signature.args[1])(context, builder, value=args[1])
            first = context.cast(builder, args[2], signature.args[2], types.intp)
            offset = builder.mul(first, cgutils.intp_t(4))
            x = builder.load(_vector_at(builder, values_array.data, offset), align=4)
            result = _vector_at(builder, out_array.data, offset)
            builder.store(exp(builder, x), result, align=4)
            return context.get_dummy_value()

        return types.none(values, out, first), codegen

    return typer


exp_nonpositive8 = intrinsic(_exp8_intrinsic(exp_nonpositive))
exp_nonpositive8.__doc__ = """``out[first:first + 8] = exp(values[first:first + 8])``
through the vector exponential."""
exp_nonpositive_short8 = intrinsic(
    _exp8_intrinsic(lambda builder, x: exp_nonpositive_short(builder, x, _has_fma()))
)
exp_nonpositive_short8.__doc__ = """`exp_nonpositive8` through softmax's cheaper exponential."""


def fits(x):
    """Whether the rows of `x` go through the registers: float32, 8 to 16 classes."""
    raise NotImplementedError("only callable from Numba-compiled code")


@overload(fits, jit_options={"forceinline": True})
def _fits(x):
    if _is_float32_matrix(x):
        return lambda x: MIN_CLASSES <= x.shape[1] <= MAX_CLASSES
    return lambda x: False


@helper
def pad_group(x, row, rest, padded):
    """``padded[:rest, :c] = x[row:row + rest]`` and zeros elsewhere: the last, partial group."""
    c = x.shape[1]
    for i in range(LANES):
        for j in range(MAX_CLASSES):
            padded[i, j] = x[row + i, j] if i < rest and j < c else 0.0


def gap_rows(x, first, n, gaps, sums):
    """Rows ``first:first + n`` (at most a tile's) into `gaps` and `sums` by `tile_gaps8`.

    The rows after the last group of eight go through a group padded with
    zeros, so each row gets the same roundings wherever the tiles start.
    Only where `fits` holds.
    """
    raise NotImplementedError("only callable from Numba-compiled code")


@overload(gap_rows, jit_options={"forceinline": True})
def _gap_rows(x, first, n, gaps, sums):
    if not _is_float32_matrix(x):
        return lambda x, first, n, gaps, sums: None

    def in_groups(x, first, n, gaps, sums):
        c = x.shape[1]
        whole = n // LANES * LANES
        for r in range(0, whole, LANES):
            tile_gaps8(x, first + r, c, gaps, r, sums)
        if whole < n:
            padded = stack_array(LANES, MAX_CLASSES, np.float32)
            pad_group(x, first + whole, n - whole, padded)
            tile_gaps8(padded, 0, c, gaps, whole, sums)

    return in_groups


def softmax_rows(x, out, first, n):
    """``out[first:first + n] = softmax(x[first:first + n])`` by `softmax8`, where `fits`.

    The rows after the last group of eight go through a group padded with
    zeros, as in `gap_rows`.
    """
    raise NotImplementedError("only callable from Numba-compiled code")


@overload(softmax_rows, jit_options={"forceinline": True})
def _softmax_rows(x, out, first, n):
    if not (_is_float32_matrix(x) and _is_float32_matrix(out)):
        return lambda x, out, first, n: None

    from .kernels import STREAMED_MIN_BYTES  # here: kernels imports this module

    def in_groups(x, out, first, n):
        c = x.shape[1]
        whole = n // LANES * LANES
        layout = LAYOUT_ROWS
        if (
            c % 2 == 0
            and x.strides == (4 * c, 4)
            and out.strides == (4 * c, 4)
            and out.nbytes >= STREAMED_MIN_BYTES
            and out.ctypes.data % 16 == 0
        ):
            layout = LAYOUT_STREAMED_LINES
        softmax_groups8(x, first, n // LANES, c, out, first, layout)
        if layout == LAYOUT_STREAMED_LINES:
            store_fence()
        rest = n - whole
        if rest:
            padded = stack_array(LANES, MAX_CLASSES, np.float32)
            result = stack_array(LANES, MAX_CLASSES, np.float32)
            pad_group(x, first + whole, rest, padded)
            softmax8(padded, 0, c, result, 0)
            for i in range(rest):
                for j in range(c):
                    out[first + whole + i, j] = result[i, j]

    return in_groups
