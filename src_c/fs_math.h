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
 * Accuracy (measured over the whole float32 range in tests/test_c_backend.py):
 * fs_expf and fs_logf within 2 ulp of the float64 result, fs_exp within 2 ulp
 * of a long double result. The polynomial coefficients are minimax fits made by
 * src_c/fit_polynomials.py.
 */
#ifndef FS_MATH_H
#define FS_MATH_H

#include <float.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

static inline uint32_t fs_f32_bits(float x)
{
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    return u;
}

static inline float fs_f32_from_bits(uint32_t u)
{
    float x;
    memcpy(&x, &u, sizeof x);
    return x;
}

static inline uint64_t fs_f64_bits(double x)
{
    uint64_t u;
    memcpy(&u, &x, sizeof u);
    return u;
}

static inline double fs_f64_from_bits(uint64_t u)
{
    double x;
    memcpy(&x, &u, sizeof x);
    return x;
}

/*
 * exp(x) in float32.
 *
 * x = k ln2 + r with |r| <= ln2/2 (Cody-Waite: ln2 split in a high part whose
 * products with k are exact and a low correction); exp(r) from a degree-6
 * polynomial; 2^k applied as two factors 2^floor(k/2) and 2^ceil(k/2), so
 * results in the subnormal range round once and overflow gives +inf.
 * Arguments are clamped first: below -105 the result is exactly 0 (so -inf
 * gives 0), above 89 it is +inf; NaN passes the clamps and stays NaN.
 */
static inline float fs_expf(float x)
{
    const float shifter = 12582912.0f; /* 1.5 * 2^23: adding it rounds to an integer */
    const float ln2_hi = 0.693359375f;
    const float ln2_lo = -2.12194440e-4f;
    x = x < -105.0f ? -105.0f : x;
    x = x > 89.0f ? 89.0f : x;
    float shifted = x * 1.44269504f + shifter;
    float k = shifted - shifter;
    /* k as a two's complement integer, from the low bits of `shifted` */
    uint32_t k_bits = fs_f32_bits(shifted) - fs_f32_bits(shifter);
    float r = x - k * ln2_hi;
    r = r - k * ln2_lo;
    float p = 1.381458176e-3f;
    p = p * r + 8.368724147e-3f;
    p = p * r + 4.166838878e-2f;
    p = p * r + 1.666652057e-1f;
    p = p * r + 4.999999344e-1f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    /* k + 256 is positive for every clamped x, so the shift is a plain halving */
    uint32_t biased = k_bits + 256u;
    uint32_t half = biased >> 1;
    float scale_lo = fs_f32_from_bits((half - 1u) << 23);
    float scale_hi = fs_f32_from_bits((biased - half - 1u) << 23);
    return p * scale_lo * scale_hi;
}

/*
 * exp(x) in float64: the same scheme as fs_expf with a degree-11 polynomial;
 * results are exactly 0 below -746 and +inf above 710.
 */
static inline double fs_exp(double x)
{
    const double shifter = 6755399441055744.0; /* 1.5 * 2^52 */
    const double ln2_hi = 6.93147180369123816490e-01;
    const double ln2_lo = 1.90821492927058770002e-10;
    x = x < -746.0 ? -746.0 : x;
    x = x > 710.0 ? 710.0 : x;
    double shifted = x * 1.4426950408889634 + shifter;
    double k = shifted - shifter;
    uint64_t k_bits = fs_f64_bits(shifted) - fs_f64_bits(shifter);
    double r = x - k * ln2_hi;
    r = r - k * ln2_lo;
    double p = 2.500005286102709163e-8;
    p = p * r + 2.763026339755934905e-7;
    p = p * r + 2.755758647779778350e-6;
    p = p * r + 2.480149305995927505e-5;
    p = p * r + 1.984126950637735098e-4;
    p = p * r + 1.388888894366424248e-3;
    p = p * r + 8.333333333494593438e-3;
    p = p * r + 4.166666666653004428e-2;
    p = p * r + 1.666666666666641226e-1;
    p = p * r + 5.000000000000010638e-1;
    p = p * r + 1.0;
    p = p * r + 1.0;
    uint64_t biased = k_bits + 4096u;
    uint64_t half = biased >> 1;
    double scale_lo = fs_f64_from_bits((half - 1025u) << 52);
    double scale_hi = fs_f64_from_bits((biased - half - 1025u) << 52);
    return p * scale_lo * scale_hi;
}

/*
 * log(x) in float32, for every float: x = 2^e m with m in [sqrt(1/2), sqrt(2)),
 * log(m) = 2 atanh(s) with s = (m - 1) / (m + 1) from a short odd polynomial,
 * written around the exact f = m - 1.
 * Subnormal inputs are scaled into the normal range first; 0 gives -inf,
 * negative numbers NaN, +inf and NaN themselves.
 */
static inline float fs_logf(float x)
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

#endif /* FS_MATH_H */
