"""Low-level operations that Numba does not offer and LLVM can vectorize.

Each one lowers to a single LLVM instruction or intrinsic, so a loop that uses
them stays a candidate for the loop vectorizer.
"""

from llvmlite import ir
from numba.core import cgutils, types
from numba.core.imputils import impl_ret_borrowed
from numba.extending import intrinsic
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
