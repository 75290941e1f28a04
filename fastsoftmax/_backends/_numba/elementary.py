"""Branch-free ``exp`` and ``log`` that LLVM can vectorize.

Numba lowers ``math.exp`` to a libm call, which keeps a loop scalar. These are
Cody-Waite range reductions followed by polynomials; the power of two is built
from its bit pattern and special arguments are handled with selects, so a loop
over them vectorizes (AVX2: eight float32 or four float64 lanes).

``exp(x)`` is exactly 0 for ``x = -inf`` and wherever the result would be
below the smallest normal number, ``inf`` for ``+inf`` and wherever ``2**k``
would not fit (a little before the true overflow: above 88.37 for float32 and
709.0 for float64), NaN for NaN; ``exp_nonpositive`` instead rounds results
below the smallest normal number to subnormals, down to 0 below about -104
for float32 and -745.1 for float64 (as the C backend's exp), and within 1.04
ulp (float32) and 3.1 ulp (float64) elsewhere, as sampled. ``log`` is meant
for the sums of exponentials the kernels take it of: exact to rounding for
normal positive arguments, ``-inf`` at 0, ``inf`` at ``inf``, NaN for NaN and
negative arguments (subnormal arguments are not supported).

The exp coefficients are Chebyshev fits on ``[-ln2/2, ln2/2]`` (computed with
mpmath): maximum relative error 2.1e-9 for the float32 degree 6, 2.4e-16 for
the float64 degree 10, below each type's rounding. The log is the classic
series in ``s = f / (2 + f)`` with fdlibm's coefficients, within one ulp.
"""

import numpy as np
from numba.core import types
from numba.extending import overload, register_jitable

from .intrinsics import float32_from_bits, float64_from_bits, float_bits
from .jit import KERNEL_FASTMATH

# float32 ---------------------------------------------------------------------
EXP32_MIN = np.float32(-87.33)  # below: the result would be subnormal; 0
EXP32_MAX = np.float32(88.37)  # above: 2**k would overflow; inf
_LOG2E_32 = np.float32(1.4426950408889634)
# 1.5 * 2**23 + 127: adding it rounds x / ln2 to an integer k and leaves k + 127
# (the biased exponent of 2**k) in the low mantissa bits.
_ROUND_32 = np.float32(1.5 * 2**23 + 127)
_LN2_HI_32 = np.float32(0.693359375)  # few bits, so k * _LN2_HI_32 is exact
_LN2_LO_32 = np.float32(-2.12194440e-4)
_E32 = tuple(
    np.float32(c)
    for c in (
        1.0,
        1.0000000400388699736,
        0.5000000050018797119,
        0.16666405302634304496,
        0.041666340142225575983,
        0.0083759682263114252878,
        0.0013942159833661435644,
    )
)


@register_jitable(fastmath=set(KERNEL_FASTMATH), forceinline=True)
def _reduced32(x, rounding, coefficients):
    """``(p, shifted)`` of the float32 exps, as `_reduced64` for float64."""
    shifted = x * _LOG2E_32 + rounding
    kf = shifted - rounding
    r = x - kf * _LN2_HI_32
    r = r - kf * _LN2_LO_32
    p = coefficients[6]
    p = p * r + coefficients[5]
    p = p * r + coefficients[4]
    p = p * r + coefficients[3]
    p = p * r + coefficients[2]
    p = p * r + coefficients[1]
    p = p * r + coefficients[0]
    return p, shifted


# exp_nonpositive as the C backend's vector exp (and `_exp64_nonpositive`):
# the polynomial carries 2**-64 and the bits of `shifted` end in k + 127 + 64,
# so results down to the smallest subnormal round once, and a maximum clamps
# the argument first where a compare and a select zeroed the result after.
# At the clamp k = -191 cancels the bias and the power of two is +0, so -inf
# (a masked class) gives 0 without a multiplication that underflows, which
# x86 cores finish in microcode at many times the cost.
_EXP32_CLAMP = np.float32(-132.5)  # k = -191 from -132.74 to -132.04 (exp is 0 below -103.97)
_ROUND_32_LOW = np.float32(1.5 * 2**23 + 127 + 64)
_E32_LOW = tuple(np.float32(c * 2.0**-64) for c in _E32)  # exact: a power of two


def _exp32_nonpositive(x):
    """exp of a float32 that is <= 0 or NaN (larger arguments give garbage)."""
    x = _EXP32_CLAMP if x < _EXP32_CLAMP else x  # NaN stays NaN
    p, shifted = _reduced32(x, _ROUND_32_LOW, _E32_LOW)
    # The bits of `shifted` end in k + 127 + 64; the higher ones (those of
    # 1.5 * 2**23) fall off the left when shifted by 23: 2**(k + 64).
    return p * float32_from_bits(float_bits(shifted) << np.int32(23))


def _exp32(x):
    """exp of a float32."""
    p, shifted = _reduced32(x, _ROUND_32, _E32)
    y = p * float32_from_bits(float_bits(shifted) << np.int32(23))
    y = np.float32(0.0) if x < EXP32_MIN else y
    return np.float32(np.inf) if x > EXP32_MAX else y


# float64 ---------------------------------------------------------------------
EXP64_MIN = -708.39
EXP64_MAX = 709.0
_LOG2E_64 = 1.4426950408889634
_ROUND_64 = 1.5 * 2.0**52 + 1023  # as _ROUND_32, leaving k + 1023
_LN2_HI_64 = 6.93147180369123816490e-01  # 32 significant bits
_LN2_LO_64 = 1.90821492927058770002e-10
_E64 = (
    1.0,
    1.0000000000000074481,
    0.50000000000000062048,
    0.16666666666545097716,
    0.041666666666565389888,
    0.0083333333888896164045,
    0.001388888893517243758,
    0.00019841166223756683163,
    0.000024801500976060441321,
    2.7641848603771923301e-6,
    2.7627746540946733362e-7,
)


@register_jitable(fastmath=set(KERNEL_FASTMATH), forceinline=True)
def _reduced64(x, rounding, coefficients):
    """``(p, shifted)`` of the float64 exps: ``shifted = x / ln2 + rounding`` holds
    ``k`` (plus the bias `rounding` carries) in its low bits, and ``p`` is the
    polynomial with `coefficients` at ``r = x - k ln2``."""
    shifted = x * _LOG2E_64 + rounding
    kf = shifted - rounding
    r = x - kf * _LN2_HI_64
    r = r - kf * _LN2_LO_64
    p = coefficients[10]
    p = p * r + coefficients[9]
    p = p * r + coefficients[8]
    p = p * r + coefficients[7]
    p = p * r + coefficients[6]
    p = p * r + coefficients[5]
    p = p * r + coefficients[4]
    p = p * r + coefficients[3]
    p = p * r + coefficients[2]
    p = p * r + coefficients[1]
    p = p * r + coefficients[0]
    return p, shifted


def _exp64(x):
    """exp of a float64."""
    p, shifted = _reduced64(x, _ROUND_64, _E64)
    y = p * float64_from_bits(float_bits(shifted) << np.int64(52))
    y = 0.0 if x < EXP64_MIN else y
    return np.inf if x > EXP64_MAX else y


# exp_nonpositive, as the C backend's vector exp: the polynomial carries
# 2**-512, and the bits of `shifted`, which end in k + 1023 + 512, give
# 2**(k + 512), so that results down to the smallest subnormal round once and
# only the argument needs clamping (a maximum, before the arithmetic) where
# the result would need zeroing (a compare and a mask, after it); at the clamp
# 2**(k + 512) is +0, as for float32. A loop of
# exponentials stored and summed, float64, 1000 elements in L1: 1.18-1.23 ->
# 1.06-1.07 ns per element.
_EXP64_CLAMP = -1064.0  # k = -1535 from -1064.33 to -1063.64 (exp is 0 below -745.13)
_ROUND_64_LOW = 1.5 * 2.0**52 + 1535
_E64_LOW = tuple(c * 2.0**-512 for c in _E64)  # exact: a power of two


def _exp64_nonpositive(x):
    """exp of a float64 that is <= 0 or NaN (larger arguments give garbage)."""
    x = _EXP64_CLAMP if x < _EXP64_CLAMP else x  # NaN stays NaN
    p, shifted = _reduced64(x, _ROUND_64_LOW, _E64_LOW)
    return p * float64_from_bits(float_bits(shifted) << np.int64(52))


# log -------------------------------------------------------------------------
_SQRT_HALF_BITS = np.int64(0x3FE6A09E667F3BCD)
_LG = (
    6.666666666666735130e-01,
    3.999999999940941908e-01,
    2.857142874366239149e-01,
    2.222219843214978396e-01,
    1.818357216161805012e-01,
    1.531383769920937332e-01,
    1.479819860511658591e-01,
)


def _log64(x):
    """Natural log of a float64 (normal positive numbers, 0, inf, NaN)."""
    bits = float_bits(x)
    # x = 2**k * m with m in [sqrt(1/2), sqrt(2)), read off the bit pattern.
    k = (bits - _SQRT_HALF_BITS) >> np.int64(52)
    m = float64_from_bits(bits - (k << np.int64(52)))
    f = m - 1.0
    s = f / (2.0 + f)
    z = s * s
    w = z * z
    even = w * (_LG[1] + w * (_LG[3] + w * _LG[5]))
    odd = z * (_LG[0] + w * (_LG[2] + w * (_LG[4] + w * _LG[6])))
    half_f2 = 0.5 * f * f
    kf = np.float64(k)
    y = kf * _LN2_HI_64 - ((half_f2 - (s * (half_f2 + even + odd) + kf * _LN2_LO_64)) - f)
    y = y if x < np.inf else x  # inf stays inf, NaN stays NaN
    return y if x > 0.0 else (-np.inf if x == 0.0 else np.nan)


_LN2_HI_32 = np.float32(0.693359375)  # 9 significant bits: e * _LN2_HI_32 is exact
_LN2_LO_32 = np.float32(-2.12194440e-4)
_LG32 = (np.float32(6.666677642e-1), np.float32(3.997753681e-1), np.float32(2.987186612e-1))
_FLT_MIN = np.float32(1.17549435e-38)


def _log32(x):
    """Natural log of a float32 in float32 arithmetic (within 1 ulp), as the C backend's.

    x = 2**e * m with m in [sqrt(1/2), sqrt(2)); log(m) = 2 atanh(s) with
    s = f / (2 + f), f = m - 1 exact, from a short odd polynomial. Subnormal
    inputs are scaled into the normal range first. Half the work of the
    float64 log on a vector of float32.
    """
    tiny = x < _FLT_MIN
    scaled = x * np.float32(8388608.0) if tiny else x  # 2**23
    bits = float_bits(scaled)
    # the exponent counted from sqrt(1/2): a bias of 128 keeps it positive
    shifted = bits - np.int32(0x3F3504F3) + np.int32(0x40000000)
    e_biased = shifted >> np.int32(23)
    m = float32_from_bits(bits - ((e_biased - np.int32(128)) << np.int32(23)))
    e = np.float32(e_biased - np.int32(128)) - (np.float32(23.0) if tiny else np.float32(0.0))
    f = m - np.float32(1.0)
    s = f / (f + np.float32(2.0))
    u = s * s
    poly = (_LG32[2] * u + _LG32[1]) * u + _LG32[0]
    half_f2 = np.float32(0.5) * f * f
    log_m = f - (half_f2 - s * (half_f2 + u * poly))
    y = e * _LN2_HI_32 + (e * _LN2_LO_32 + log_m)
    y = y if x < np.inf else x  # inf stays inf, NaN stays NaN
    y = -np.float32(np.inf) if x == 0.0 else y
    return np.float32(np.nan) if x < 0.0 else y


# Type-generic entry points for the kernels --------------------------------------
# Each is an overload whose implementation is the function above for the
# argument's type, compiled (and inlined) where it is called.


def exp(x):
    """exp of a float32 or float64 scalar, in its own precision."""
    raise NotImplementedError("only callable from Numba-compiled code")


def exp_nonpositive(x):
    """exp of a float32 or float64 scalar known to be <= 0 (or NaN).

    One select cheaper than `exp`: the kernels take it of ``x - max(x)``.
    """
    raise NotImplementedError("only callable from Numba-compiled code")


def log(x):
    """log of a float32 or float64 scalar, in its own precision."""
    raise NotImplementedError("only callable from Numba-compiled code")


_JIT_OPTIONS = {"fastmath": set(KERNEL_FASTMATH), "forceinline": True}


def _by_type(x, for32, for64):
    return {types.float32: for32, types.float64: for64}.get(x)


@overload(exp, jit_options=_JIT_OPTIONS)
def _exp(x):
    return _by_type(x, _exp32, _exp64)


@overload(exp_nonpositive, jit_options=_JIT_OPTIONS)
def _exp_nonpositive(x):
    return _by_type(x, _exp32_nonpositive, _exp64_nonpositive)


@overload(log, jit_options=_JIT_OPTIONS)
def _log(x):
    return _by_type(x, _log32, _log64)
