"""The kernels' exponential on whole SIMD vectors, for intrinsics.

`exp_nonpositive` builds ``elementary.exp_nonpositive`` on an LLVM vector of
float32 or float64, the same operations in the same order with the same
flags, so each lane gives the scalar function's bits (the tests check it).
Loops of scalar exponentials that LLVM vectorizes on its own come out well
in most kernels; `add_exps` is for the few where they did not (see its
docstring).
"""

import numpy as np
from llvmlite import ir
from numba.core import cgutils, types
from numba.extending import intrinsic

from . import elementary
from .intrinsics import _is_vector_of_floats
from .jit import KERNEL_FASTMATH

# the flags of every kernel's arithmetic, so LLVM fuses the same multiply-adds
FLAGS = tuple(sorted(KERNEL_FASTMATH))
VECTOR_BYTES = 32  # AVX2; LLVM splits or joins them for other widths
ACC_VECTORS = 2  # `add_exps`'s accumulators: two chains of additions

_FLOAT32 = dict(
    clamp=elementary._EXP32_CLAMP,
    rounding=elementary._ROUND_32_LOW,
    log2e=elementary._LOG2E_32,
    ln2_hi=elementary._LN2_HI_32,
    ln2_lo=elementary._LN2_LO_32,
    coefficients=elementary._E32_LOW,
    mantissa_bits=23,
)
_FLOAT64 = dict(
    clamp=elementary._EXP64_CLAMP,
    rounding=elementary._ROUND_64_LOW,
    log2e=elementary._LOG2E_64,
    ln2_hi=elementary._LN2_HI_64,
    ln2_lo=elementary._LN2_LO_64,
    coefficients=elementary._E64_LOW,
    mantissa_bits=52,
)


def splat(vector_type, value):
    """A constant vector of `value` in every lane (rounded to float32 where the lanes are)."""
    element = vector_type.element
    if isinstance(element, ir.FloatType):
        value = np.float32(value)
    return ir.Constant(vector_type, [element(float(value))] * vector_type.count)


def _rounded(builder, x, constants):
    """`x` raised to the clamp (NaN stays NaN), ``shifted = x / ln2 + rounding`` (k in
    its low bits) and ``kf = k`` as a float: the head of both exps."""
    vector_type = x.type
    clamp = splat(vector_type, constants["clamp"])
    x = builder.select(builder.fcmp_ordered("<", x, clamp), clamp, x)
    rounding = splat(vector_type, constants["rounding"])
    product = builder.fmul(x, splat(vector_type, constants["log2e"]), flags=FLAGS)
    shifted = builder.fadd(product, rounding, flags=FLAGS)
    return x, shifted, builder.fsub(shifted, rounding, flags=FLAGS)


def _reduced_two_part(builder, x, kf, constants):
    """``r = x - kf ln2`` with ln 2 in two parts, the first exact in the product."""
    vector_type = x.type
    for part in ("ln2_hi", "ln2_lo"):
        product = builder.fmul(kf, splat(vector_type, constants[part]), flags=FLAGS)
        x = builder.fsub(x, product, flags=FLAGS)
    return x


def _times_power_of_two(builder, p, shifted, constants):
    """``p * 2**(k + bias)``, the power of two shifted out of `shifted`'s low bits."""
    vector_type = p.type
    width = 64 if isinstance(vector_type.element, ir.DoubleType) else 32
    integers = ir.VectorType(ir.IntType(width), vector_type.count)
    shift = ir.Constant(integers, [constants["mantissa_bits"]] * vector_type.count)
    power = builder.bitcast(builder.shl(builder.bitcast(shifted, integers), shift), vector_type)
    return builder.fmul(p, power, flags=FLAGS)


def exp_nonpositive(builder, x):
    """``elementary.exp_nonpositive`` of a float32 or float64 vector, lane for lane."""
    vector_type = x.type
    constants = _FLOAT64 if isinstance(vector_type.element, ir.DoubleType) else _FLOAT32
    x, shifted, kf = _rounded(builder, x, constants)
    r = _reduced_two_part(builder, x, kf, constants)
    coefficients = constants["coefficients"]
    p = splat(vector_type, coefficients[-1])
    for c in reversed(coefficients[:-1]):
        p = builder.fadd(builder.fmul(p, r, flags=FLAGS), splat(vector_type, c), flags=FLAGS)
    return _times_power_of_two(builder, p, shifted, constants)


# exp_nonpositive_short, as the C backend's fs_expf_nonpositive_short_vec: ln 2
# as one float32 in a fused reduction, and q of degree 3 from
# src_c/fit_polynomials.py (exp(r) = 1 + r + r**2 q(r)), carrying 2**-64.
_LN2_32 = np.float32(0.693147182)
_Q3_LOW = tuple(
    np.float32(c) * np.float32(2.0**-64)
    for c in (4.999923117e-1, 1.666711482e-1, 4.189020358e-2, 8.312517523e-3)
)


def exp_nonpositive_short(builder, x, fused):
    """A cheaper `exp_nonpositive` of a float32 vector, for the register kernels.

    Two operations fewer: within 2.1 ulp on [-1, 0], its error growing with
    |x| through the reduction (about 2e-9 |k| relative) to 4.9 ulp near -87,
    at most 0.16 of the contract's 1e-6 + 1.2e-7 |ln p| for probabilities.
    The one-constant reduction needs a fused multiply-add (`fused`: the CPU
    has FMA); otherwise ln 2 comes in two parts as in `exp_nonpositive`.
    """
    vector_type = x.type

    def const(value):
        return splat(vector_type, value)

    def mul_add(a, b, c):
        return builder.fadd(builder.fmul(a, b, flags=FLAGS), c, flags=FLAGS)

    x, shifted, kf = _rounded(builder, x, _FLOAT32)
    if fused:
        fma = cgutils.get_or_insert_function(
            builder.module,
            ir.FunctionType(vector_type, [vector_type] * 3),
            f"llvm.fma.v{vector_type.count}f32",
        )
        r = builder.call(fma, [kf, const(-_LN2_32), x])
    else:
        r = _reduced_two_part(builder, x, kf, _FLOAT32)
    q = mul_add(r, const(_Q3_LOW[3]), const(_Q3_LOW[2]))
    q = mul_add(q, r, const(_Q3_LOW[1]))
    q = mul_add(q, r, const(_Q3_LOW[0]))
    scale = const(2.0**-64)
    p = mul_add(mul_add(q, r, scale), r, scale)
    return _times_power_of_two(builder, p, shifted, _FLOAT32)


@intrinsic
def add_exps(typingctx, acc, values, shift, count):
    """Adds ``exp_nonpositive(values[j] - shift)`` for ``j < count`` into `acc`'s first
    ACC_VECTORS 32-byte vectors: vector k of `values` into vector ``k % ACC_VECTORS``.

    `count` is a compile-time constant, a whole number of vectors of the
    arrays' dtype; no bounds checks. For the turns of
    ``rows.sum_exp_streaming``: there a loop of ``acc[j] += exp(...)`` over
    the lanes became a loop of LLVM's own, which reloaded the exponential's
    constants on each of its turns and kept eight accumulators in memory
    (float64 log_softmax, 2 threads, against the C backend in one process,
    three alternating pairs of processes: 64 x 256000 1.23-1.25 -> 1.20-1.23
    times its time, 1024 x 32000 1.20-1.24 -> 1.19-1.25).
    """
    if not (
        isinstance(count, types.IntegerLiteral)
        and _is_vector_of_floats(acc)
        and _is_vector_of_floats(values)
        and values.dtype in (types.float32, types.float64)
        and acc.dtype == values.dtype
        and shift == values.dtype
    ):
        return None
    n = count.literal_value

    def codegen(context, builder, signature, args):
        acc_value, values_value, shift_value, _ = args
        acc_array = context.make_array(signature.args[0])(context, builder, value=acc_value)
        values_array = context.make_array(signature.args[1])(context, builder, value=values_value)
        element = context.get_value_type(signature.args[1].dtype)
        itemsize = context.get_abi_sizeof(element)
        lanes = VECTOR_BYTES // itemsize
        vector_type = ir.VectorType(element, lanes)

        def vector_at(array, first):
            pointer = builder.gep(array.data, [cgutils.intp_t(first)])
            return builder.bitcast(pointer, vector_type.as_pointer())

        shift_vector = cgutils.get_null_value(vector_type)
        for lane in range(lanes):
            shift_vector = builder.insert_element(shift_vector, shift_value, ir.IntType(32)(lane))
        pointers = [vector_at(acc_array, k * lanes) for k in range(ACC_VECTORS)]
        sums = [builder.load(pointer, align=itemsize) for pointer in pointers]
        for k, first in enumerate(range(0, n, lanes)):
            x = builder.load(vector_at(values_array, first), align=itemsize)
            gap = builder.fsub(x, shift_vector, flags=FLAGS)
            e = exp_nonpositive(builder, gap)
            sums[k % ACC_VECTORS] = builder.fadd(sums[k % ACC_VECTORS], e, flags=FLAGS)
        for pointer, value in zip(pointers, sums):
            builder.store(value, pointer, align=itemsize)
        return context.get_dummy_value()

    return types.none(acc, values, shift, count), codegen
