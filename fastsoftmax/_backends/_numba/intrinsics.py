"""Low-level operations that Numba does not offer and LLVM can vectorize.

Each one lowers to a single LLVM instruction or intrinsic, so a loop that uses
them stays a candidate for the loop vectorizer.
"""

import platform

from llvmlite import ir
from numba.core import cgutils, types
from numba.core.imputils import impl_ret_borrowed
from numba.extending import intrinsic, overload
from numba.np.arrayobj import populate_array


@intrinsic
def float32_from_bits(typingctx, bits):
    """The float32 whose IEEE bit pattern is the low 32 bits of an integer."""
    if not isinstance(bits, types.Integer):
        return None

    def codegen(context, builder, signature, args):
        value = args[0]
        if bits.bitwidth > 32:
            value = builder.trunc(value, ir.IntType(32))
        elif bits.bitwidth < 32:
            value = builder.sext(value, ir.IntType(32))
        return builder.bitcast(value, ir.FloatType())

    return types.float32(bits), codegen


@intrinsic
def float64_from_bits(typingctx, bits):
    """The float64 whose IEEE bit pattern is a 64-bit integer."""
    if not isinstance(bits, types.Integer):
        return None

    def codegen(context, builder, signature, args):
        value = args[0]
        if bits.bitwidth < 64:
            value = builder.sext(value, ir.IntType(64))
        return builder.bitcast(value, ir.DoubleType())

    return types.float64(bits), codegen


@intrinsic
def float_bits(typingctx, value):
    """The IEEE bit pattern of a float32 (as int32) or float64 (as int64)."""
    if value == types.float32:
        result = types.int32
    elif value == types.float64:
        result = types.int64
    else:
        return None

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], context.get_value_type(result))

    return result(value), codegen


@intrinsic
def maximum(typingctx, a, b):
    """IEEE maximum of two floats of one type: NaN if either is NaN.

    ``llvm.maximum`` vectorizes as a reduction without the ``nnan`` flag, unlike
    a compare-and-select, and a NaN anywhere in a row reaches its maximum.
    """
    if not (isinstance(a, types.Float) and a == b):
        return None

    def codegen(context, builder, signature, args):
        ty = context.get_value_type(a)
        function = builder.module.declare_intrinsic(
            "llvm.maximum", [ty], ir.FunctionType(ty, [ty, ty])
        )
        return builder.call(function, args)

    return a(a, b), codegen


@intrinsic
def fused_multiply_add(typingctx, a, b, c):
    """``a * b + c`` rounded once (``llvm.fma``), three floats of one type.

    The ``contract`` flag lets LLVM fuse a multiply-add but does not make it:
    where one rounding is what keeps a result within the contract, this does.
    """
    if not (isinstance(a, types.Float) and a == b == c):
        return None

    def codegen(context, builder, signature, args):
        ty = context.get_value_type(a)
        function = builder.module.declare_intrinsic(
            "llvm.fma", [ty], ir.FunctionType(ty, [ty, ty, ty])
        )
        return builder.call(function, args)

    return a(a, b, c), codegen


@intrinsic
def unit_stride(typingctx, row):
    """The same one-dimensional view, typed as contiguous (layout ``'C'``).

    Only for views whose stride is known to be the item size (the kernel
    protocol guarantees it along the class axis): Numba then indexes without
    the stride and LLVM vectorizes without runtime stride checks.
    """
    if not (isinstance(row, types.Array) and row.ndim == 1):
        return None
    result = row.copy(layout="C")

    def codegen(context, builder, signature, args):
        return impl_ret_borrowed(context, builder, result, args[0])

    return result(row), codegen


def _scalar_type(dtype):
    """The Numba scalar type named by ``x.dtype`` or by ``np.float64``, or None."""
    if isinstance(dtype, types.DType):
        return dtype.dtype
    if isinstance(dtype, types.NumberClass):
        return dtype.instance_type
    return None


@intrinsic
def stack_array(typingctx, rows, cols, dtype):
    """A C-contiguous ``(rows, cols)`` array on the stack of the calling kernel.

    `rows` and `cols` must be compile-time constants (module-level ints). The
    memory lives as long as the kernel's frame: the array must not escape it.
    Unlike ``np.empty``, LLVM knows such arrays overlap nothing else, so loops
    over them need no runtime overlap checks, and their sizes are constants.
    """
    scalar = _scalar_type(dtype)
    if not (
        isinstance(rows, types.IntegerLiteral)
        and isinstance(cols, types.IntegerLiteral)
        and scalar is not None
    ):
        return None
    shape = (rows.literal_value, cols.literal_value)
    result = types.Array(scalar, 2, "C")

    def codegen(context, builder, signature, args):
        element = context.get_data_type(scalar)
        itemsize = context.get_abi_sizeof(element)
        data = cgutils.alloca_once(builder, element, size=shape[0] * shape[1])
        array = context.make_array(result)(context, builder)
        populate_array(
            array,
            data=data,
            shape=[context.get_constant(types.intp, n) for n in shape],
            strides=[
                context.get_constant(types.intp, shape[1] * itemsize),
                context.get_constant(types.intp, itemsize),
            ],
            itemsize=context.get_constant(types.intp, itemsize),
            meminfo=None,
        )
        return array._getvalue()

    return result(rows, cols, dtype), codegen


# 8 x 8 transposes ------------------------------------------------------------
# Shuffle masks of the three stages of an 8 x 8 transpose of <8 x float>
# vectors (rows in, columns out; it is its own inverse). On AVX2 each stage is
# one instruction per pair: unpcklps/unpckhps, shufps, vperm2f128.
_UNPACK = ((0, 8, 1, 9, 4, 12, 5, 13), (2, 10, 3, 11, 6, 14, 7, 15))
_PAIRS = ((0, 1, 8, 9, 4, 5, 12, 13), (2, 3, 10, 11, 6, 7, 14, 15))
_HALVES = ((0, 1, 2, 3, 8, 9, 10, 11), (4, 5, 6, 7, 12, 13, 14, 15))


def _shuffle(builder, a, b, mask):
    indices = ir.Constant(
        ir.VectorType(ir.IntType(32), len(mask)), [ir.IntType(32)(i) for i in mask]
    )
    return builder.shuffle_vector(a, b, indices)


def _transpose8(builder, rows):
    """The 8 columns of the 8 x 8 matrix whose rows are `rows` (<8 x float> values)."""
    unpacked = [None] * 8
    for pair in range(4):
        a, b = rows[2 * pair], rows[2 * pair + 1]
        unpacked[2 * pair] = _shuffle(builder, a, b, _UNPACK[0])
        unpacked[2 * pair + 1] = _shuffle(builder, a, b, _UNPACK[1])
    paired = [None] * 8
    for half in range(2):  # rows 0-3, then rows 4-7
        t = unpacked[4 * half : 4 * half + 4]
        paired[4 * half + 0] = _shuffle(builder, t[0], t[2], _PAIRS[0])
        paired[4 * half + 1] = _shuffle(builder, t[0], t[2], _PAIRS[1])
        paired[4 * half + 2] = _shuffle(builder, t[1], t[3], _PAIRS[0])
        paired[4 * half + 3] = _shuffle(builder, t[1], t[3], _PAIRS[1])
    columns = [None] * 8
    for k in range(4):
        columns[k] = _shuffle(builder, paired[k], paired[k + 4], _HALVES[0])
        columns[k + 4] = _shuffle(builder, paired[k], paired[k + 4], _HALVES[1])
    return columns


def _vector_pointers(context, builder, array_type, array, row, col, width, rows=None):
    """Pointers to the runs of `width` elements at ``array[row + i, col:col + width]``,
    for i below `rows` (default: `width`)."""
    ary = context.make_array(array_type)(context, builder, value=array)
    shape = cgutils.unpack_tuple(builder, ary.shape, 2)
    strides = cgutils.unpack_tuple(builder, ary.strides, 2)
    first = cgutils.get_item_pointer2(
        context, builder, ary.data, shape, strides, array_type.layout, [row, col]
    )
    address = builder.ptrtoint(first, cgutils.intp_t)
    element = context.get_value_type(array_type.dtype)
    vector_pointer = ir.VectorType(element, width).as_pointer()
    return [
        builder.inttoptr(
            builder.add(address, builder.mul(strides[0], cgutils.intp_t(i))), vector_pointer
        )
        for i in range(width if rows is None else rows)
    ]


# Shuffle masks of the two stages of a 4 x 4 transpose of <4 x double>
# vectors; on AVX2 unpcklpd/unpckhpd, then vperm2f128.
_UNPACK4 = ((0, 4, 2, 6), (1, 5, 3, 7))
_HALVES4 = ((0, 1, 4, 5), (2, 3, 6, 7))


def _transpose4(builder, rows):
    """The 4 columns of the 4 x 4 matrix whose rows are `rows` (<4 x double> values)."""
    t = [
        _shuffle(builder, rows[2 * p], rows[2 * p + 1], mask)
        for p in range(2)
        for mask in _UNPACK4
    ]
    # t: [a0 b0 a2 b2], [a1 b1 a3 b3], [c0 d0 c2 d2], [c1 d1 c3 d3]
    return [
        _shuffle(builder, t[0], t[2], _HALVES4[0]),
        _shuffle(builder, t[1], t[3], _HALVES4[0]),
        _shuffle(builder, t[0], t[2], _HALVES4[1]),
        _shuffle(builder, t[1], t[3], _HALVES4[1]),
    ]


def _is_matrix_of(array, dtype):
    return isinstance(array, types.Array) and array.ndim == 2 and array.dtype == dtype


def _is_float32_matrix(array):
    return _is_matrix_of(array, types.float32)


def _is_float64_matrix(array):
    return _is_matrix_of(array, types.float64)


def _transposed_copy_codegen(width, transpose, align, lane_op=None):
    """Code for a `width` x `width` transposed copy between two matrices.

    One vector load per source row, `transpose` (``_transpose8`` or
    ``_transpose4``) in registers, one vector store per target row; the
    intrinsic's arguments are (source, row, col, target, target_row, target_col).
    With `lane_op` (an IR builder method: ``"fsub"``, ``"fmul"``) a seventh
    argument, a contiguous row `values`, applies to every source row first:
    ``source[row + i, col + k] (op) values[col + k]``.
    """

    def codegen(context, builder, signature, args):
        src, src_row, src_col, dst, dst_row, dst_col = args[:6]
        src_type, _, _, dst_type, _, _ = signature.args[:6]
        loads = _vector_pointers(context, builder, src_type, src, src_row, src_col, width)
        rows = [builder.load(pointer, align=align) for pointer in loads]
        if lane_op is not None:
            values = context.make_array(signature.args[6])(context, builder, value=args[6])
            vector = ir.VectorType(context.get_value_type(src_type.dtype), width)
            at = builder.bitcast(builder.gep(values.data, [src_col]), vector.as_pointer())
            lanes = builder.load(at, align=align)
            rows = [getattr(builder, lane_op)(r, lanes) for r in rows]
        stores = _vector_pointers(context, builder, dst_type, dst, dst_row, dst_col, width)
        for column, pointer in zip(transpose(builder, rows), stores):
            builder.store(column, pointer, align=align)
        return context.get_dummy_value()

    return codegen


@intrinsic
def copy_transposed8(typingctx, source, row, col, target, target_row, target_col):
    """``target[target_row + k, target_col + i] = source[row + i, col + k]``, i, k < 8.

    float32 matrices with unit stride along their second axis; no bounds
    checks: the caller keeps all 64 elements of both inside their arrays.
    One unaligned vector load and store per row and 24 shuffles, where the
    plain loop takes 64 scalar loads and stores.
    """
    if not (_is_float32_matrix(source) and _is_float32_matrix(target)):
        return None
    signature = types.none(source, row, col, target, target_row, target_col)
    return signature, _transposed_copy_codegen(8, _transpose8, align=4)


@intrinsic
def copy_transposed4(typingctx, source, row, col, target, target_row, target_col):
    """``target[target_row + k, target_col + i] = source[row + i, col + k]``, i, k < 4.

    The float64 counterpart of `copy_transposed8`: one vector load and store
    per row, 8 shuffles.
    """
    if not (_is_float64_matrix(source) and _is_float64_matrix(target)):
        return None
    signature = types.none(source, row, col, target, target_row, target_col)
    return signature, _transposed_copy_codegen(4, _transpose4, align=8)


def copy_block_transposed(source, row, col, target, target_row, target_col):
    """An 8 x 8 transposed copy: `copy_transposed8` for float32 matrices, four
    `copy_transposed4` for float64 ones, element by element otherwise."""
    raise NotImplementedError("only callable from Numba-compiled code")


@overload(copy_block_transposed, jit_options={"forceinline": True})
def _copy_block_transposed(source, row, col, target, target_row, target_col):
    if _is_float32_matrix(source) and _is_float32_matrix(target):

        def in_registers(source, row, col, target, target_row, target_col):
            copy_transposed8(source, row, col, target, target_row, target_col)

        return in_registers

    if _is_float64_matrix(source) and _is_float64_matrix(target):

        def by_quarters(source, row, col, target, target_row, target_col):
            for i in range(0, 8, 4):
                for k in range(0, 8, 4):
                    copy_transposed4(
                        source, row + i, col + k, target, target_row + k, target_col + i
                    )

        return by_quarters

    def by_element(source, row, col, target, target_row, target_col):
        for i in range(8):
            for k in range(8):
                target[target_row + k, target_col + i] = source[row + i, col + k]

    return by_element


def _lane_mapped_copy(name, width, transpose, is_matrix, align, lane_op):
    """An intrinsic like `copy_transposed8` (or 4) with `lane_op` by a seventh argument."""

    def typer(typingctx, source, row, col, target, target_row, target_col, values):
        if not (
            is_matrix(source)
            and is_matrix(target)
            and _is_vector_of_floats(values)
            and values.dtype == source.dtype
        ):
            return None
        signature = types.none(source, row, col, target, target_row, target_col, values)
        return signature, _transposed_copy_codegen(width, transpose, align, lane_op)

    typer.__name__ = typer.__qualname__ = name
    return intrinsic(typer)


copy_transposed8_minus = _lane_mapped_copy(
    "copy_transposed8_minus", 8, _transpose8, _is_float32_matrix, 4, "fsub"
)
copy_transposed8_times = _lane_mapped_copy(
    "copy_transposed8_times", 8, _transpose8, _is_float32_matrix, 4, "fmul"
)
copy_transposed4_minus = _lane_mapped_copy(
    "copy_transposed4_minus", 4, _transpose4, _is_float64_matrix, 8, "fsub"
)
copy_transposed4_times = _lane_mapped_copy(
    "copy_transposed4_times", 4, _transpose4, _is_float64_matrix, 8, "fmul"
)


def copy_block_transposed_minus(source, row, col, target, target_row, target_col, values):
    """`copy_block_transposed` of ``source[row + i, col + k] - values[col + k]``."""
    raise NotImplementedError("only callable from Numba-compiled code")


def copy_block_transposed_times(source, row, col, target, target_row, target_col, values):
    """`copy_block_transposed` of ``source[row + i, col + k] * values[col + k]``."""
    raise NotImplementedError("only callable from Numba-compiled code")


def _lane_mapped_block(copy8, copy4, by_element):
    """An overload of an 8 x 8 lane-mapped copy: `copy8`, four `copy4`, or `by_element`."""

    def select(source, row, col, target, target_row, target_col, values):
        if _is_float32_matrix(source) and _is_float32_matrix(target):

            def in_registers(source, row, col, target, target_row, target_col, values):
                copy8(source, row, col, target, target_row, target_col, values)

            return in_registers

        if _is_float64_matrix(source) and _is_float64_matrix(target):

            def by_quarters(source, row, col, target, target_row, target_col, values):
                for i in range(0, 8, 4):
                    for k in range(0, 8, 4):
                        copy4(
                            source, row + i, col + k, target, target_row + k, target_col + i,
                            values,
                        )

            return by_quarters

        return by_element

    return select


def _minus_by_element(source, row, col, target, target_row, target_col, values):
    for i in range(8):
        for k in range(8):
            target[target_row + k, target_col + i] = source[row + i, col + k] - values[col + k]


def _times_by_element(source, row, col, target, target_row, target_col, values):
    for i in range(8):
        for k in range(8):
            target[target_row + k, target_col + i] = source[row + i, col + k] * values[col + k]


overload(copy_block_transposed_minus, jit_options={"forceinline": True})(
    _lane_mapped_block(copy_transposed8_minus, copy_transposed4_minus, _minus_by_element)
)
overload(copy_block_transposed_times, jit_options={"forceinline": True})(
    _lane_mapped_block(copy_transposed8_times, copy_transposed4_times, _times_by_element)
)


# `row_max_skipping_nan` takes the row this many bytes at a time: one AVX-512
# register, two AVX2 ones.
VECTOR_BYTES = 64


def _is_vector_of_floats(array):
    return (
        isinstance(array, types.Array)
        and array.ndim == 1
        and array.layout == "C"
        and isinstance(array.dtype, types.Float)
    )


def _lane_swap(builder, v, block):
    """`v` with each block of `block` lanes exchanged with its neighbour."""
    width = v.type.count
    mask = [i ^ block for i in range(width)]
    return _shuffle(builder, v, v, mask)


@intrinsic
def row_max_skipping_nan(typingctx, row):
    """The largest element of a contiguous row, NaN elements skipped (-inf if none is left).

    Each ``VECTOR_BYTES`` of the row go through one vector maximum (x86
    ``maxps``: a compare-and-select whose NaN operand loses), folded across
    lanes by swaps at the end; the remaining elements one at a time. The loop
    vectorizer makes the plain loop a NaN-propagating ``llvm.maximum``
    reduction instead, three instructions per vector and a long fold: over
    rows of 128 float32 it took 0.17 ns per element, this takes 0.09.
    """
    if not _is_vector_of_floats(row):
        return None
    width = VECTOR_BYTES // (row.dtype.bitwidth // 8)

    def codegen(context, builder, signature, args):
        (row_type,) = signature.args
        ary = context.make_array(row_type)(context, builder, value=args[0])
        n = cgutils.unpack_tuple(builder, ary.shape, 1)[0]
        element = context.get_value_type(row_type.dtype)
        vector = ir.VectorType(element, width)
        align = row_type.dtype.bitwidth // 8

        def larger(a, b):  # a > b ? a : b, so b when a is NaN
            return builder.select(builder.fcmp_ordered(">", a, b), a, b)

        lines = builder.sdiv(n, cgutils.intp_t(width))
        acc = cgutils.alloca_once_value(
            builder, ir.Constant(vector, [ir.Constant(element, float("-inf"))] * width)
        )
        with cgutils.for_range(builder, lines) as loop:
            start = builder.mul(loop.index, cgutils.intp_t(width))
            pointer = builder.bitcast(builder.gep(ary.data, [start]), vector.as_pointer())
            builder.store(larger(builder.load(pointer, align=align), builder.load(acc)), acc)
        folded = builder.load(acc)
        block = width // 2
        while block:
            folded = larger(_lane_swap(builder, folded, block), folded)
            block //= 2
        first_lane = builder.extract_element(folded, cgutils.int32_t(0))
        best = cgutils.alloca_once_value(builder, first_lane)
        with cgutils.for_range_slice(
            builder, builder.mul(lines, cgutils.intp_t(width)), n, cgutils.intp_t(1)
        ) as (j, _):
            value = builder.load(builder.gep(ary.data, [j]))
            builder.store(larger(value, builder.load(best)), best)
        return builder.load(best)

    return row.dtype(row), codegen


# Streaming (non-temporal) stores write whole cache lines of this many bytes.
LINE_BYTES = 64
_X86 = platform.machine().lower() in ("x86_64", "amd64", "i386", "i686")


def _splat(builder, value, vector):
    """`value` in every lane of a `vector`-typed value."""
    undefined = ir.Constant(vector, ir.Undefined)
    first = builder.insert_element(undefined, value, cgutils.int32_t(0))
    lanes = ir.Constant(ir.VectorType(ir.IntType(32), vector.count), [0] * vector.count)
    return builder.shuffle_vector(first, undefined, lanes)


def _stream_line(builder, source, target, start, vector, element_op, splats):
    """``target[start:] = element_op(source[start:])`` for one `vector` (a cache line),
    as one non-temporal store; ``target + start`` must be on a line boundary."""
    itemsize = LINE_BYTES // vector.count
    load_at = builder.bitcast(builder.gep(source, [start]), vector.as_pointer())
    store_at = builder.bitcast(builder.gep(target, [start]), vector.as_pointer())
    value = element_op(builder, builder.load(load_at, align=itemsize), splats)
    nontemporal = builder.module.add_metadata([ir.IntType(32)(1)])
    builder.store(value, store_at, align=LINE_BYTES).set_metadata("nontemporal", nontemporal)


def _streaming_map_codegen(element_op):
    """Codegen of ``target[:] = element_op(source, operands...)``, whole lines streamed.

    `element_op(builder, value, operands)` maps a scalar or a vector of the
    row's type; `operands` are the intrinsic's scalar arguments after the two
    rows, splatted to vectors for the streamed lines.
    """

    def codegen(context, builder, signature, args):
        source_type, target_type = signature.args[:2]
        src = context.make_array(source_type)(context, builder, value=args[0])
        dst = context.make_array(target_type)(context, builder, value=args[1])
        scalars = args[2:]
        n = cgutils.unpack_tuple(builder, dst.shape, 1)[0]
        intp = cgutils.intp_t
        itemsize = target_type.dtype.bitwidth // 8
        width = LINE_BYTES // itemsize
        element = context.get_value_type(target_type.dtype)
        vector = ir.VectorType(element, width)

        def store_one(j):
            value = builder.load(builder.gep(src.data, [j]))
            builder.store(element_op(builder, value, scalars), builder.gep(dst.data, [j]))

        # head: the elements up to the first line boundary (all of them when the
        # row is not aligned even to its element size)
        address = builder.ptrtoint(dst.data, intp)
        to_boundary = builder.urem(
            builder.sub(intp(LINE_BYTES), builder.urem(address, intp(LINE_BYTES))),
            intp(LINE_BYTES),
        )
        element_aligned = builder.icmp_unsigned(
            "==", builder.urem(address, intp(itemsize)), intp(0)
        )
        head = builder.select(element_aligned, builder.udiv(to_boundary, intp(itemsize)), n)
        head = builder.select(builder.icmp_signed("<", head, n), head, n)
        with cgutils.for_range_slice(builder, intp(0), head, intp(1)) as (j, _):
            store_one(j)
        lines = builder.sdiv(builder.sub(n, head), intp(width))
        splats = [_splat(builder, value, vector) for value in scalars]
        with cgutils.for_range(builder, lines) as loop:
            start = builder.add(head, builder.mul(loop.index, intp(width)))
            _stream_line(builder, src.data, dst.data, start, vector, element_op, splats)
        tail = builder.add(head, builder.mul(lines, intp(width)))
        with cgutils.for_range_slice(builder, tail, n, intp(1)) as (j, _):
            store_one(j)
        return context.get_dummy_value()

    return codegen


def _rows_and_scalars(source, target, *scalars):
    """Two contiguous rows of one float type, and scalars of that type."""
    return (
        _is_vector_of_floats(source)
        and _is_vector_of_floats(target)
        and source.dtype == target.dtype
        and all(scalar == source.dtype for scalar in scalars)
    )


def _gap(builder, value, scalars):
    """``(value - shift) - offset``, `scalars` being ``(shift, offset)``."""
    return builder.fsub(builder.fsub(value, scalars[0]), scalars[1])


@intrinsic
def store_gaps_streaming(typingctx, source, target, shift, offset):
    """``target[:] = (source - shift) - offset``, whole 64-byte lines of `target` streamed.

    Both are contiguous rows of one float type and one length. The elements
    before `target`'s first line boundary and after its last one are stored
    one by one, the lines between as one non-temporal vector store each,
    which skips the read-for-ownership of a line about to be overwritten: an
    output larger than the caches then costs 8 rather than 12 bytes of memory
    traffic per float32 element. (A masked store next to a streamed line is
    far slower than these scalar ones.) Call `store_fence` before the kernel
    returns.
    """
    if not _rows_and_scalars(source, target, shift, offset):
        return None

    return types.none(source, target, shift, offset), _streaming_map_codegen(_gap)


@intrinsic
def store_gaps_lines_streaming(typingctx, source, target, start, count, shift, offset):
    """``target[start : start + count] = (source[start : start + count] - shift) - offset``,
    as ``count`` elements of whole cache lines streamed.

    One vector load and one non-temporal store per line, for loops that
    interleave streamed lines with other work. `count` is a compile-time
    constant (a module-level int) that fills whole lines. No checks:
    ``target[start]`` must be on a line boundary and the lines inside both
    rows. Call `store_fence` before the kernel returns.
    """
    if not (
        _rows_and_scalars(source, target, shift, offset)
        and isinstance(start, types.Integer)
        and isinstance(count, types.IntegerLiteral)
        and count.literal_value * (source.dtype.bitwidth // 8) % LINE_BYTES == 0
    ):
        return None
    itemsize = source.dtype.bitwidth // 8
    lines = count.literal_value * itemsize // LINE_BYTES

    def codegen(context, builder, signature, args):
        source_type, target_type, start_type = signature.args[:3]
        src = context.make_array(source_type)(context, builder, value=args[0])
        dst = context.make_array(target_type)(context, builder, value=args[1])
        vector = ir.VectorType(context.get_value_type(target_type.dtype), LINE_BYTES // itemsize)
        at = context.cast(builder, args[2], start_type, types.intp)
        splats = [_splat(builder, value, vector) for value in args[4:]]
        for line in range(lines):
            line_at = builder.add(at, cgutils.intp_t(line * vector.count))
            _stream_line(builder, src.data, dst.data, line_at, vector, _gap, splats)
        return context.get_dummy_value()

    return types.none(source, target, start, count, shift, offset), codegen


@intrinsic
def store_scaled_streaming(typingctx, source, target, scale):
    """``target[:] = source * scale``, streamed as `store_gaps_streaming` streams."""
    if not _rows_and_scalars(source, target, scale):
        return None

    def scaled(builder, value, scalars):
        return builder.fmul(value, scalars[0])

    return types.none(source, target, scale), _streaming_map_codegen(scaled)


def _prefetch_l2(builder, pointer):
    """A hint that the cache line at `pointer` be brought into L2."""
    address = builder.bitcast(pointer, ir.IntType(8).as_pointer())
    i32 = ir.IntType(32)
    function = builder.module.declare_intrinsic(
        "llvm.prefetch", [address.type],
        ir.FunctionType(ir.VoidType(), [address.type, i32, i32, i32]),
    )
    # read, locality 2 (x86 prefetcht1: into L2), data cache
    builder.call(function, [address, i32(0), i32(2), i32(1)])


@intrinsic
def prefetch_to_l2(typingctx, row, index):
    """Hints that the cache line holding ``row[index]`` be brought into L2 (no bounds check)."""
    if not (_is_vector_of_floats(row) and isinstance(index, types.Integer)):
        return None

    def codegen(context, builder, signature, args):
        row_type, index_type = signature.args
        ary = context.make_array(row_type)(context, builder, value=args[0])
        position = context.cast(builder, args[1], index_type, types.intp)
        _prefetch_l2(builder, builder.gep(ary.data, [position]))
        return context.get_dummy_value()

    return types.none(row, index), codegen


@intrinsic
def prefetch_span_to_l2(typingctx, row, start, count):
    """`prefetch_to_l2` for each cache line of ``row[start : start + count]``, `count`
    a compile-time constant (a module-level int) of whole lines; no bounds check."""
    if not (
        _is_vector_of_floats(row)
        and isinstance(start, types.Integer)
        and isinstance(count, types.IntegerLiteral)
    ):
        return None
    itemsize = row.dtype.bitwidth // 8
    lines = max(1, count.literal_value * itemsize // LINE_BYTES)

    def codegen(context, builder, signature, args):
        row_type, start_type = signature.args[:2]
        ary = context.make_array(row_type)(context, builder, value=args[0])
        at = context.cast(builder, args[1], start_type, types.intp)
        for line in range(lines):
            position = builder.add(at, cgutils.intp_t(line * LINE_BYTES // itemsize))
            _prefetch_l2(builder, builder.gep(ary.data, [position]))
        return context.get_dummy_value()

    return types.none(row, start, count), codegen


@intrinsic
def store_fence(typingctx):
    """Orders the streaming stores before it before every later store (x86 ``sfence``)."""

    def codegen(context, builder, signature, args):
        if _X86:
            function = builder.module.declare_intrinsic(
                "llvm.x86.sse.sfence", [], ir.FunctionType(ir.VoidType(), [])
            )
            builder.call(function, [])
        else:
            builder.fence("seq_cst")
        return context.get_dummy_value()

    return types.none(), codegen
