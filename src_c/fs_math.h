/*
 * Branch-free exp and log that GCC and Clang vectorize.
 *
 * Each function is straight-line arithmetic: comparisons become selects, the
 * power of two comes from integer bit manipulation and the polynomial is plain
 * multiply-add, so a loop calling them turns into SIMD code for whichever
 * instruction set the including translation unit targets. Nothing here relies
 * on -ffast-math: NaN, the infinities, overflow and underflow behave as IEEE
 * libm does.
 *
 * Accuracy, measured in tests/test_c_backend.py: fs_expf and fs_logf within
 * 1 ulp of the correctly rounded result over the whole float32 range (and
 * fs_expf_nonpositive over x <= 0), subnormal results included; the float64
 * exp within 1 ulp. The polynomial coefficients are minimax fits made by
 * src_c/fit_polynomials.py.
 */
#ifndef FS_MATH_H
#define FS_MATH_H

#include <float.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "fs_internal.h"

/* Every function here is forced inline (FS_ALWAYS_INLINE: see fs_internal.h). */

FS_ALWAYS_INLINE uint32_t fs_f32_bits(float x)
{
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    return u;
}

FS_ALWAYS_INLINE float fs_f32_from_bits(uint32_t u)
{
    float x;
    memcpy(&x, &u, sizeof x);
    return x;
}

FS_ALWAYS_INLINE uint64_t fs_f64_bits(double x)
{
    uint64_t u;
    memcpy(&u, &x, sizeof u);
    return u;
}

FS_ALWAYS_INLINE double fs_f64_from_bits(uint64_t u)
{
    double x;
    memcpy(&x, &u, sizeof x);
    return x;
}

/*
 * scale * (1 + r + r^2 q), the last steps of every exp below, for floats,
 * doubles and vectors of either: Horner's two fused steps with FMA; without
 * it, adding the leading terms last keeps the result within 1 ulp.
 */
#if FS_FMA
#define FS_EXP_FROM_Q(q, r, scale) (((q) * (r) + (scale)) * (r) + (scale))
#else
#define FS_EXP_FROM_Q(q, r, scale) ((scale) + ((r) * (scale) + ((r) * (r)) * (q)))
#endif

/*
 * exp in float32: x = k ln2 + r with |r| <= ln2/2 (Cody-Waite: ln2 split in a
 * high part whose products with k are exact and a low correction); exp(r)
 * from a degree-6 polynomial. Returns scale * exp(r), scale being a power of
 * two folded into the coefficients (exact), and stores k, as a two's
 * complement integer read from the low bits of the rounding shifter, in *k.
 * Valid for |x| < 2^21; callers replace results outside their range by
 * selects, so NaN flows through the arithmetic and stays NaN.
 */
FS_ALWAYS_INLINE float fs_expf_reduced(float x, float scale, uint32_t *k)
{
    const float shifter = 12582912.0f; /* 1.5 * 2^23: adding it rounds to an integer */
    const float ln2_hi = 0.693359375f;
    const float ln2_lo = -2.12194440e-4f;
    float shifted = x * 1.44269504f + shifter;
    float kf = shifted - shifter;
    *k = fs_f32_bits(shifted) - fs_f32_bits(shifter);
    float r = x - kf * ln2_hi;
    r = r - kf * ln2_lo;
    float q = 1.381458176e-3f * scale;
    q = q * r + 8.368724147e-3f * scale;
    q = q * r + 4.166838878e-2f * scale;
    q = q * r + 1.666652057e-1f * scale;
    q = q * r + 4.999999344e-1f * scale;
    return FS_EXP_FROM_Q(q, r, scale);
}

/*
 * exp(x) for x <= 0 (and -inf, NaN): what the kernels use, since they only
 * exponentiate x - max(x). The rounding shifter carries the exponent bias
 * of 2^(k+64) in its low bits, so a shift alone makes that power of two; the
 * polynomial carries a factor 2^-64, and one multiplication by 2^(k+64)
 * rounds subnormal results once. Still within 1 ulp up to x = 44.
 *
 * Arguments below FS_EXPF_FLOOR are raised to it first (a maximum that keeps
 * NaN). There k = -191 cancels the bias, and the power of two is +0: -inf
 * and every argument below -132.5 give exactly 0 with no select, and without
 * a multiplication that underflows. Such a multiplication takes a microcode
 * assist on x86 (Zen 3, the register softmax over rows of 10 float32 classes
 * with one element in 37 at -200, one thread: 0.62 -> 0.44 ns/element), and
 * masked rows hold -inf in numbers.
 * Between -132.5 and -103.97 the result still rounds to 0 by underflow.
 */
#define FS_EXPF_FLOOR -132.5f /* k = round(x / ln 2) = -191 from -132.74 to -132.04 */
#define FS_EXP_FLOOR -1064.0  /* float64: k = -1535 from -1064.33 to -1063.64 */

FS_ALWAYS_INLINE float fs_expf_nonpositive(float x)
{
    const float shifter = 12582912.0f + 191.0f; /* 1.5 * 2^23, plus the bias 127 + 64 */
    const float ln2_hi = 0.693359375f;
    const float ln2_lo = -2.12194440e-4f;
    const float scale = 0x1p-64f;
    x = FS_EXPF_FLOOR > x ? FS_EXPF_FLOOR : x; /* maxps with x second: NaN stays NaN */
    float shifted = x * 1.44269504f + shifter;
    float kf = shifted - shifter;
    float r = x - kf * ln2_hi;
    r = r - kf * ln2_lo;
    float q = 1.381458176e-3f * scale;
    q = q * r + 8.368724147e-3f * scale;
    q = q * r + 4.166838878e-2f * scale;
    q = q * r + 1.666652057e-1f * scale;
    q = q * r + 4.999999344e-1f * scale;
    float p = FS_EXP_FROM_Q(q, r, scale);
    return p * fs_f32_from_bits(fs_f32_bits(shifted) << 23);
}

/*
 * The exp of the register kernels for rows of 8 to 16 float32 classes,
 * whose exponentials are most of their work: fs_expf_nonpositive with ln 2
 * as one float32 in the reduction (where it is a fused multiply-add; the
 * product alone would round off 50 ulp) and a degree-5 polynomial (q of
 * degree 3 from src_c/fit_polynomials.py), two operations fewer. Within 2.1
 * ulp on [-1, 0], its error grows with |x| through the reduction (about
 * 2e-9 |k| relative) to 4.9 ulp near -87, where results turn subnormal (3
 * subnormal steps there), against 0.88 for fs_expf_nonpositive: at most 0.16
 * of the contract's 1e-6 + 1.2e-7 |ln p| for probabilities.
 */
FS_ALWAYS_INLINE float fs_expf_nonpositive_short(float x)
{
    const float shifter = 12582912.0f + 191.0f;
    const float scale = 0x1p-64f;
    x = FS_EXPF_FLOOR > x ? FS_EXPF_FLOOR : x;
    float shifted = x * 1.44269504f + shifter;
    float kf = shifted - shifter;
#if FS_FMA
    float r = x - kf * 0.693147182f; /* one rounding, as a fused multiply-add */
#else
    float r = x - kf * 0.693359375f; /* exact: ln 2 in two parts */
    r = r - kf * -2.12194440e-4f;
#endif
    float q = 8.312517523e-3f * scale;
    q = q * r + 4.189020358e-2f * scale;
    q = q * r + 1.666711482e-1f * scale;
    q = q * r + 4.999923117e-1f * scale;
    float p = FS_EXP_FROM_Q(q, r, scale);
    return p * fs_f32_from_bits(fs_f32_bits(shifted) << 23);
}

/*
 * exp(x) for every float: 2^k as two factors 2^floor(k/2) and 2^ceil(k/2) so
 * that subnormal results round once and overflow gives +inf; exactly 0 below
 * -104 (hence for -inf), +inf above 88.75 (hence for +inf).
 */
FS_ALWAYS_INLINE float fs_expf(float x)
{
    uint32_t k;
    float p = fs_expf_reduced(x, 1.0f, &k);
    uint32_t biased = k + 256u; /* positive wherever the result is used */
    uint32_t half = biased >> 1;
    float y = p * fs_f32_from_bits((half - 1u) << 23) * fs_f32_from_bits((biased - half - 1u) << 23);
    y = x < -104.0f ? 0.0f : y;
    return x > 88.75f ? INFINITY : y;
}

/* exp in float64: fs_expf_reduced with a degree-11 polynomial (|x| < 2^50). */
FS_ALWAYS_INLINE double fs_exp_reduced(double x, double scale, uint64_t *k)
{
    const double shifter = 6755399441055744.0; /* 1.5 * 2^52 */
    const double ln2_hi = 6.93147180369123816490e-01;
    const double ln2_lo = 1.90821492927058770002e-10;
    double shifted = x * 1.4426950408889634 + shifter;
    double kf = shifted - shifter;
    *k = fs_f64_bits(shifted) - fs_f64_bits(shifter);
    double r = x - kf * ln2_hi;
    r = r - kf * ln2_lo;
    double q = 2.500005286102709163e-8 * scale;
    q = q * r + 2.763026339755934905e-7 * scale;
    q = q * r + 2.755758647779778350e-6 * scale;
    q = q * r + 2.480149305995927505e-5 * scale;
    q = q * r + 1.984126950637735098e-4 * scale;
    q = q * r + 1.388888894366424248e-3 * scale;
    q = q * r + 8.333333333494593438e-3 * scale;
    q = q * r + 4.166666666653004428e-2 * scale;
    q = q * r + 1.666666666666641226e-1 * scale;
    q = q * r + 5.000000000000010638e-1 * scale;
    return FS_EXP_FROM_Q(q, r, scale);
}

/*
 * exp(x) for x <= 0 in float64, as fs_expf_nonpositive: the polynomial
 * carries 2^-512 and the shift makes 2^(k+512), which is +0 at the floor, so
 * that the result is exactly 0 below -1064 and rounds to 0 below -745.13.
 */
FS_ALWAYS_INLINE double fs_exp_nonpositive(double x)
{
    uint64_t k;
    x = FS_EXP_FLOOR > x ? FS_EXP_FLOOR : x; /* NaN stays NaN */
    double p = fs_exp_reduced(x, 0x1p-512, &k);
    return p * fs_f64_from_bits((k + 1535u) << 52);
}

/* exp(x) for every double; exactly 0 below -746, +inf above 709.79. */
FS_ALWAYS_INLINE double fs_exp(double x)
{
    uint64_t k;
    double p = fs_exp_reduced(x, 1.0, &k);
    uint64_t biased = k + 4096u;
    uint64_t half = biased >> 1;
    double y = p * fs_f64_from_bits((half - 1025u) << 52) *
               fs_f64_from_bits((biased - half - 1025u) << 52);
    y = x < -746.0 ? 0.0 : y;
    return x > 709.79 ? INFINITY : y;
}

/*
 * log(x) in float32, for every float: x = 2^e m with m in [sqrt(1/2), sqrt(2)),
 * log(m) = 2 atanh(s) with s = (m - 1) / (m + 1) from a short odd polynomial,
 * written around the exact f = m - 1.
 * Subnormal inputs are scaled into the normal range first; 0 gives -inf,
 * negative numbers NaN, +inf and NaN themselves.
 */
FS_ALWAYS_INLINE float fs_logf(float x)
{
    const float ln2_hi = 0.693359375f;
    const float ln2_lo = -2.12194440e-4f;
    int tiny = x < FLT_MIN;
    float scaled = tiny ? x * 8388608.0f : x; /* 2^23 */
    uint32_t bits = fs_f32_bits(scaled);
    /* offset the bits so the exponent field counts from sqrt(1/2), kept positive */
    uint32_t shifted = bits - 0x3f3504f3u + 0x40000000u;
    uint32_t e_biased = shifted >> 23;
    float m = fs_f32_from_bits(bits - ((e_biased - 128u) << 23));
    float e = (float)((int32_t)e_biased - 128) - (tiny ? 23.0f : 0.0f);
    float f = m - 1.0f;
    float s = f / (f + 2.0f);
    float u = s * s;
    float poly = 2.987186612e-1f;
    poly = poly * u + 3.997753681e-1f;
    poly = poly * u + 6.666677642e-1f;
    /* log(m) = f - s (f - R) rearranged so the exact f carries the result */
    float half_f2 = 0.5f * f * f;
    float log_m = f - (half_f2 - s * (half_f2 + u * poly));
    float result = e * ln2_hi + (e * ln2_lo + log_m);
    result = x < INFINITY ? result : x; /* +inf and NaN */
    result = x == 0.0f ? -INFINITY : result;
    result = x < 0.0f ? NAN : result;
    return result;
}

/*
 * fs_expf_nonpositive (and below, fs_exp_nonpositive) on a whole SIMD
 * register (GCC and Clang vector extensions), the same operations in the
 * same order: for kernels whose loops GCC would not keep in registers when
 * written lane by lane. Included where FS_VECTOR_BYTES names the register
 * width.
 */
#if (defined(__GNUC__) || defined(__clang__)) && defined(FS_VECTOR_BYTES)
#define FS_HAVE_VEC_EXP 1
typedef float fs_vf32 __attribute__((vector_size(FS_VECTOR_BYTES)));
typedef int32_t fs_vi32 __attribute__((vector_size(FS_VECTOR_BYTES)));
typedef uint32_t fs_vu32 __attribute__((vector_size(FS_VECTOR_BYTES)));

FS_ALWAYS_INLINE fs_vf32 fs_vf32_splat(float a)
{
    fs_vf32 v = {0};
    return v + a;
}

/*
 * per lane a > b ? a : b, so b where either is NaN: x86's maxps exactly (one
 * instruction), elsewhere bit masks (C has no vector select)
 */
FS_ALWAYS_INLINE fs_vf32 fs_vf32_select_greater(fs_vf32 a, fs_vf32 b)
{
#if FS_X86_SIMD && FS_VECTOR_BYTES == 64
    return (fs_vf32)_mm512_max_ps((__m512)a, (__m512)b);
#elif FS_X86_SIMD && FS_VECTOR_BYTES == 32
    return (fs_vf32)_mm256_max_ps((__m256)a, (__m256)b);
#elif FS_X86_SIMD && FS_VECTOR_BYTES == 16
    return (fs_vf32)_mm_max_ps((__m128)a, (__m128)b);
#else
    fs_vi32 a_wins = a > b;
    return (fs_vf32)((a_wins & (fs_vi32)a) | (~a_wins & (fs_vi32)b));
#endif
}

FS_ALWAYS_INLINE fs_vf32 fs_expf_nonpositive_vec(fs_vf32 x)
{
    const float shifter = 12582912.0f + 191.0f;
    const float ln2_hi = 0.693359375f;
    const float ln2_lo = -2.12194440e-4f;
    const float scale = 0x1p-64f;
    x = fs_vf32_select_greater(fs_vf32_splat(FS_EXPF_FLOOR), x); /* NaN stays NaN */
    fs_vf32 shifted = x * 1.44269504f + shifter;
    fs_vf32 kf = shifted - shifter;
    fs_vf32 r = x - kf * ln2_hi;
    r = r - kf * ln2_lo;
    fs_vf32 q = r * (1.381458176e-3f * scale) + 8.368724147e-3f * scale;
    q = q * r + 4.166838878e-2f * scale;
    q = q * r + 1.666652057e-1f * scale;
    q = q * r + 4.999999344e-1f * scale;
    fs_vf32 p = FS_EXP_FROM_Q(q, r, scale);
    return p * (fs_vf32)((fs_vu32)shifted << 23);
}

/* fs_expf_nonpositive_short on a whole SIMD register */
FS_ALWAYS_INLINE fs_vf32 fs_expf_nonpositive_short_vec(fs_vf32 x)
{
    const float shifter = 12582912.0f + 191.0f;
    const float scale = 0x1p-64f;
    x = fs_vf32_select_greater(fs_vf32_splat(FS_EXPF_FLOOR), x);
    fs_vf32 shifted = x * 1.44269504f + shifter;
    fs_vf32 kf = shifted - shifter;
#if FS_FMA
    fs_vf32 r = x - kf * 0.693147182f;
#else
    fs_vf32 r = x - kf * 0.693359375f;
    r = r - kf * -2.12194440e-4f;
#endif
    fs_vf32 q = r * (8.312517523e-3f * scale) + 4.189020358e-2f * scale;
    q = q * r + 1.666711482e-1f * scale;
    q = q * r + 4.999923117e-1f * scale;
    fs_vf32 p = FS_EXP_FROM_Q(q, r, scale);
    return p * (fs_vf32)((fs_vu32)shifted << 23);
}

typedef double fs_vf64 __attribute__((vector_size(FS_VECTOR_BYTES)));
typedef int64_t fs_vi64 __attribute__((vector_size(FS_VECTOR_BYTES)));
typedef uint64_t fs_vu64 __attribute__((vector_size(FS_VECTOR_BYTES)));

FS_ALWAYS_INLINE fs_vf64 fs_vf64_splat(double a)
{
    fs_vf64 v = {0};
    return v + a;
}

/* per lane a > b ? a : b, so b where either is NaN (x86: one maxpd) */
FS_ALWAYS_INLINE fs_vf64 fs_vf64_select_greater(fs_vf64 a, fs_vf64 b)
{
#if FS_X86_SIMD && FS_VECTOR_BYTES == 64
    return (fs_vf64)_mm512_max_pd((__m512d)a, (__m512d)b);
#elif FS_X86_SIMD && FS_VECTOR_BYTES == 32
    return (fs_vf64)_mm256_max_pd((__m256d)a, (__m256d)b);
#elif FS_X86_SIMD && FS_VECTOR_BYTES == 16
    return (fs_vf64)_mm_max_pd((__m128d)a, (__m128d)b);
#else
    fs_vi64 a_wins = a > b;
    return (fs_vf64)((a_wins & (fs_vi64)a) | (~a_wins & (fs_vi64)b));
#endif
}

/*
 * fs_exp_nonpositive on a whole SIMD register, lane for lane the same result:
 * the rounding shifter carries the bias 1023 + 512 in its low bits, so that a
 * shift alone makes 2^(k+512), against the polynomial's factor 2^-512.
 */
FS_ALWAYS_INLINE fs_vf64 fs_exp_nonpositive_vec(fs_vf64 x)
{
    const double shifter = 6755399441055744.0 + 1535.0; /* 1.5 * 2^52, plus the bias */
    const double ln2_hi = 6.93147180369123816490e-01;
    const double ln2_lo = 1.90821492927058770002e-10;
    const double scale = 0x1p-512;
    x = fs_vf64_select_greater(fs_vf64_splat(FS_EXP_FLOOR), x); /* NaN stays NaN */
    fs_vf64 shifted = x * 1.4426950408889634 + shifter;
    fs_vf64 kf = shifted - shifter;
    fs_vf64 r = x - kf * ln2_hi;
    r = r - kf * ln2_lo;
    fs_vf64 q = r * (2.500005286102709163e-8 * scale) + 2.763026339755934905e-7 * scale;
    q = q * r + 2.755758647779778350e-6 * scale;
    q = q * r + 2.480149305995927505e-5 * scale;
    q = q * r + 1.984126950637735098e-4 * scale;
    q = q * r + 1.388888894366424248e-3 * scale;
    q = q * r + 8.333333333494593438e-3 * scale;
    q = q * r + 4.166666666653004428e-2 * scale;
    q = q * r + 1.666666666666641226e-1 * scale;
    q = q * r + 5.000000000000010638e-1 * scale;
    fs_vf64 p = FS_EXP_FROM_Q(q, r, scale);
    return p * (fs_vf64)((fs_vu64)shifted << 52);
}
#else
#define FS_HAVE_VEC_EXP 0
#endif

#endif /* FS_MATH_H */
