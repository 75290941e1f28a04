"""Rows of 8 to 16 float32 classes, eight rows at a time in vector registers.

The tile of ``blocks`` takes four passes over a stack array for such rows
(the transposed copy in, the maxima, the exponentials, the copy out), and
those passes cost more than the arithmetic. Here an intrinsic loads eight
rows as columns through two 8 x 8 register transposes (the second one of the
last eight classes, overlapping the first) and takes their maxima,
exponentials and sums in registers: `softmax8` writes the probabilities back
through the same transposes; `tile_gaps8` leaves the gaps ``x - m`` and the
sums to a tile, where log-softmax takes the logarithms of a whole tile in one
vectorized loop (there is no vector ``log`` here) and ``blocks`` copies the
gaps out transposed, less those logarithms. Each class count from 8 to 16
gets code of its own, so no exponential is computed twice.

The exponential is ``elementary.exp_nonpositive`` for float32, the same
operations in the same order on ``<8 x float>`` vectors, so each lane gives
the scalar function's bits (``exp_nonpositive8`` exposes it to the tests).
A maximum is a compare and select per pair of columns, which may skip a NaN;
the row's exponentials and sum are NaN all the same, so the row comes out
NaN as the contract wants. The sums are pairwise, at most four roundings
deep.
"""

import numpy as np
from llvmlite import ir
from numba.core import cgutils, types
from numba.extending import intrinsic, overload

from . import elementary
from .intrinsics import (
    _is_float32_matrix,
    _is_vector_of_floats,
    _transpose8,
    _vector_pointers,
    stack_array,
)
from .jit import KERNEL_FASTMATH, helper

LANES = 8
MIN_CLASSES = 8
MAX_CLASSES = 16

_FLOAT = ir.FloatType()
_VECTOR = ir.VectorType(_FLOAT, LANES)
_INT_VECTOR = ir.VectorType(ir.IntType(32), LANES)
# the flags of every kernel's arithmetic, so LLVM fuses the same multiply-adds
_FLAGS = tuple(sorted(KERNEL_FASTMATH))


def _splat(value):
    return ir.Constant(_VECTOR, [_FLOAT(float(np.float32(value)))] * LANES)


def _exp_nonpositive(builder, x):
    """``elementary.exp_nonpositive`` of a float32 vector, lane for lane."""

    def mul(a, b):
        return builder.fmul(a, b, flags=_FLAGS)

    def add(a, b):
        return builder.fadd(a, b, flags=_FLAGS)

    def sub(a, b):
        return builder.fsub(a, b, flags=_FLAGS)

    clamp = _splat(elementary._EXP32_CLAMP)
    x = builder.select(builder.fcmp_ordered("<", x, clamp), clamp, x)  # NaN stays NaN
    rounding = _splat(elementary._ROUND_32_LOW)
    shifted = add(mul(x, _splat(elementary._LOG2E_32)), rounding)
    kf = sub(shifted, rounding)
    r = sub(x, mul(kf, _splat(elementary._LN2_HI_32)))
    r = sub(r, mul(kf, _splat(elementary._LN2_LO_32)))
    coefficients = elementary._E32_LOW
    p = _splat(coefficients[-1])
    for c in reversed(coefficients[:-1]):
        p = add(mul(p, r), _splat(c))
    mantissa_bits = ir.Constant(_INT_VECTOR, [23] * LANES)
    bits = builder.shl(builder.bitcast(shifted, _INT_VECTOR), mantissa_bits)
    return mul(p, builder.bitcast(bits, _VECTOR))


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


def _load_columns(context, builder, matrix_type, matrix, row, n_classes):
    """The columns of rows ``row:row + 8``: those of classes 0-7, then of the last 8."""
    tail_start = builder.sub(n_classes, cgutils.intp_t(LANES))
    head_tail = []
    for col in (cgutils.intp_t(0), tail_start):
        pointers = _vector_pointers(context, builder, matrix_type, matrix, row, col, LANES)
        head_tail.append(_transpose8(builder, [builder.load(p, align=4) for p in pointers]))
    return head_tail


def _store_columns(context, builder, matrix_type, matrix, row, n_classes, columns):
    """Rows ``row:row + 8`` from their `columns` (all 8 to 16 of them)."""
    n = len(columns)
    tail_start = builder.sub(n_classes, cgutils.intp_t(LANES))
    # the last eight classes first: the first eight then overwrite the overlap
    # with the same values
    for col, block in ((tail_start, columns[n - LANES :]), (cgutils.intp_t(0), columns[:LANES])):
        pointers = _vector_pointers(context, builder, matrix_type, matrix, row, col, LANES)
        for value, pointer in zip(_transpose8(builder, block), pointers):
            builder.store(value, pointer, align=4)


def _exponentials(builder, columns):
    """Per lane: the maximum m, the gaps ``columns - m``, their exponentials and sum."""
    m = _pairwise(builder, columns, lambda a, b: _maximum(builder, a, b))
    gaps = [builder.fsub(column, m, flags=_FLAGS) for column in columns]
    exps = [_exp_nonpositive(builder, gap) for gap in gaps]
    total = _pairwise(builder, exps, lambda a, b: builder.fadd(a, b, flags=_FLAGS))
    return gaps, exps, total


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
        head, tail = _load_columns(context, builder, source_type, source, row, n_classes)
        tile_array = context.make_array(tile_type)(context, builder, value=tile)
        tile_stride = cgutils.unpack_tuple(builder, tile_array.strides, 2)[0]
        tile_lane = builder.mul(lane, cgutils.intp_t(4))
        sums_array = context.make_array(sums_type)(context, builder, value=sums)

        def emit(n):
            gaps, _, total = _exponentials(builder, head + tail[MAX_CLASSES - n :])
            for j, value in enumerate(gaps):
                offset = builder.add(builder.mul(tile_stride, cgutils.intp_t(j)), tile_lane)
                builder.store(value, _vector_at(builder, tile_array.data, offset), align=4)
            builder.store(total, _vector_at(builder, sums_array.data, tile_lane), align=4)

        _by_classes(builder, n_classes, emit)
        return context.get_dummy_value()

    return codegen


@intrinsic
def softmax8(typingctx, source, row, n_classes, target, target_row):
    """``target[target_row + i] = softmax(source[row + i, :n_classes])`` for i < 8.

    All in registers: the rows in and out through transposes. float32
    matrices with unit stride along a row, 8 to 16 classes; no bounds checks.
    """
    if not (
        _is_float32_matrix(source)
        and _is_float32_matrix(target)
        and isinstance(row, types.Integer)
        and isinstance(n_classes, types.Integer)
        and isinstance(target_row, types.Integer)
    ):
        return None

    def codegen(context, builder, signature, args):
        source, row, n_classes, target, target_row = args
        source_type, row_type, classes_type, target_type, target_row_type = signature.args
        row = context.cast(builder, row, row_type, types.intp)
        n_classes = context.cast(builder, n_classes, classes_type, types.intp)
        target_row = context.cast(builder, target_row, target_row_type, types.intp)
        head, tail = _load_columns(context, builder, source_type, source, row, n_classes)

        def emit(n):
            _, exps, total = _exponentials(builder, head + tail[MAX_CLASSES - n :])
            inverse = builder.fdiv(_splat(1.0), total, flags=_FLAGS)
            probabilities = [builder.fmul(e, inverse, flags=_FLAGS) for e in exps]
            _store_columns(
                context, builder, target_type, target, target_row, n_classes, probabilities
            )

        _by_classes(builder, n_classes, emit)
        return context.get_dummy_value()

    return types.none(source, row, n_classes, target, target_row), codegen


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


@intrinsic
def exp_nonpositive8(typingctx, values, out, first):
    """``out[first:first + 8] = exp(values[first:first + 8])`` through the vector exponential."""
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
        builder.store(_exp_nonpositive(builder, x), result, align=4)
        return context.get_dummy_value()

    return types.none(values, out, first), codegen


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
        padded = stack_array(LANES, MAX_CLASSES, np.float32)
        for r in range(0, n, LANES):
            source, row = x, first + r
            rest = n - r
            if rest < LANES:
                pad_group(x, first + r, rest, padded)
                source, row = padded, 0
            tile_gaps8(source, row, c, gaps, r, sums)

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

    def in_groups(x, out, first, n):
        c = x.shape[1]
        padded = stack_array(LANES, MAX_CLASSES, np.float32)
        result = stack_array(LANES, MAX_CLASSES, np.float32)
        for r in range(0, n, LANES):
            source, row, target, target_row = x, first + r, out, first + r
            rest = n - r
            if rest < LANES:
                pad_group(x, first + r, rest, padded)
                source, row, target, target_row = padded, 0, result, 0
            softmax8(source, row, c, target, target_row)
            if rest < LANES:
                for i in range(rest):
                    for j in range(c):
                        out[first + r + i, j] = result[i, j]

    return in_groups
