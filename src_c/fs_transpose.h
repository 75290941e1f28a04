/*
 * 8 x 8 float32 transposes between the rows of a matrix and the short-row
 * tile of fs_kernels.h, whose vector lanes span rows. Done in registers
 * (loads of half rows, unpacks and shuffles), they replace 64 scalar loads
 * and 64 scalar stores per block, which dominate softmax over rows of ten
 * classes. Included by fs_instantiate.h inside a translation unit compiled
 * for one instruction set; only builds with 256-bit vectors and FMA get
 * them (FS_HAVE_TRANSPOSE8), the others keep the scalar copies.
 */
#ifndef FS_TRANSPOSE_H
#define FS_TRANSPOSE_H

#if FS_HAVE_STREAM && FS_VECTOR_BYTES >= 32 && FS_FMA
#define FS_HAVE_TRANSPOSE8 1

/* Transposes the 4 x 4 blocks in each 128-bit half of a, b, c, d (rows to columns). */
FS_ALWAYS_INLINE void fs_transpose4x2(__m256 *a, __m256 *b, __m256 *c, __m256 *d)
{
    __m256 t0 = _mm256_unpacklo_ps(*a, *b), t1 = _mm256_unpackhi_ps(*a, *b);
    __m256 t2 = _mm256_unpacklo_ps(*c, *d), t3 = _mm256_unpackhi_ps(*c, *d);
    *a = _mm256_shuffle_ps(t0, t2, 0x44);
    *b = _mm256_shuffle_ps(t0, t2, 0xee);
    *c = _mm256_shuffle_ps(t1, t3, 0x44);
    *d = _mm256_shuffle_ps(t1, t3, 0xee);
}

/* [the 4 floats at lo | the 4 floats at hi] */
FS_ALWAYS_INLINE __m256 fs_load_halves(const float *lo, const float *hi)
{
    return _mm256_insertf128_ps(_mm256_castps128_ps256(_mm_loadu_ps(lo)), _mm_loadu_ps(hi), 1);
}

/* v[k][i] = x[i * stride + k] for i, k < 8: eight rows in, eight columns out */
FS_ALWAYS_INLINE void fs_columns8_load(__m256 v[8], const float *x, int64_t stride)
{
    for (int i = 0; i < 4; i++) {
        v[i] = fs_load_halves(x + i * stride, x + (i + 4) * stride);
        v[i + 4] = fs_load_halves(x + i * stride + 4, x + (i + 4) * stride + 4);
    }
    fs_transpose4x2(&v[0], &v[1], &v[2], &v[3]);
    fs_transpose4x2(&v[4], &v[5], &v[6], &v[7]);
}

/* out[i * stride + k] = v[k][i] for i, k < 8 (v is overwritten) */
FS_ALWAYS_INLINE void fs_columns8_store(float *out, int64_t stride, __m256 v[8])
{
    fs_transpose4x2(&v[0], &v[1], &v[2], &v[3]);
    fs_transpose4x2(&v[4], &v[5], &v[6], &v[7]);
    for (int i = 0; i < 4; i++) {
        _mm256_storeu_ps(out + i * stride, _mm256_permute2f128_ps(v[i], v[i + 4], 0x20));
        _mm256_storeu_ps(out + (i + 4) * stride, _mm256_permute2f128_ps(v[i], v[i + 4], 0x31));
    }
}

/* v[k][i] = x[i * stride + k] for i < 8 and k < 4: eight rows of four in */
FS_ALWAYS_INLINE void fs_columns4_load(__m256 v[4], const float *x, int64_t stride)
{
    for (int i = 0; i < 4; i++)
        v[i] = fs_load_halves(x + i * stride, x + (i + 4) * stride);
    fs_transpose4x2(&v[0], &v[1], &v[2], &v[3]);
}

/* out[i * stride + k] = v[k][i] for i < 8 and k < 4 (v is overwritten) */
FS_ALWAYS_INLINE void fs_columns4_store(float *out, int64_t stride, __m256 v[4])
{
    fs_transpose4x2(&v[0], &v[1], &v[2], &v[3]);
    for (int i = 0; i < 4; i++) {
        _mm_storeu_ps(out + i * stride, _mm256_castps256_ps128(v[i]));
        _mm_storeu_ps(out + (i + 4) * stride, _mm256_extractf128_ps(v[i], 1));
    }
}

/*
 * Eight contiguous rows of an even number of classes, 8 to 16, are as many
 * 32-byte lines as classes, and their pairs of classes (qwords) never cross
 * a 16-byte half. So the rows of 0-3 can be kept in the low 128-bit halves
 * and rows 4-7 in the high ones all the way: the halves of line k and of
 * line k + cols/2 (the same place four rows on) share a register, and the
 * rest are unpacks and shuffles within halves. The row transposes above move
 * half rows across halves (inserts, permutes) at eight per group each way,
 * which on Zen 3 compete with the exps' fused multiply-adds; whole lines
 * are also loads and stores that never split a cache line, and stores that
 * can stream.
 */

/* per 128-bit half [qword i of a, qword j of b] */
FS_ALWAYS_INLINE __m256d fs_pick_qwords(__m256d a, int i, __m256d b, int j)
{
    switch (2 * i + j) {
    case 0: return _mm256_unpacklo_pd(a, b);
    case 1: return _mm256_shuffle_pd(a, b, 0xa);
    case 2: return _mm256_shuffle_pd(a, b, 0x5);
    default: return _mm256_unpackhi_pd(a, b);
    }
}

/*
 * halves[s][k] = [16-byte half s of line k | the same of line k + cols/2] for
 * k < cols/2, the first four rows in the low halves: qword f of those rows
 * (f < 2 * cols) is qword f % 2 of halves[f / 2 % 2][f / 4].
 */
#define FS_QWORD_OF_HALVES(halves, f) (halves)[(f) / 2 % 2][(f) / 4], (f) % 2

/* col[c][i] = x[i * cols + c] for i < 8 and c < cols: eight contiguous rows in */
FS_ALWAYS_INLINE void fs_columns_from_lines(__m256 col[16], const float *x, int cols)
{
    int h = cols / 2; /* qwords in a row */
    __m256d halves[2][8], pair[2][8];
#pragma GCC unroll 8
    for (int k = 0; k < h; k++)
#pragma GCC unroll 2
        for (int s = 0; s < 2; s++) /* broadcasts and a blend: no cross-half op */
            halves[s][k] = _mm256_castps_pd(
                _mm256_blend_ps(_mm256_broadcast_ps((const __m128 *)(x + 8 * k + 4 * s)),
                                _mm256_broadcast_ps((const __m128 *)(x + 8 * (k + h) + 4 * s)),
                                0xf0));
    /* pair[0][q] = qword q of rows 0 and 1 (4 and 5 above), pair[1][q] of rows 2 and 3 */
#pragma GCC unroll 8
    for (int q = 0; q < h; q++)
#pragma GCC unroll 2
        for (int p = 0; p < 2; p++)
            pair[p][q] = fs_pick_qwords(FS_QWORD_OF_HALVES(halves, 2 * p * h + q),
                                        FS_QWORD_OF_HALVES(halves, (2 * p + 1) * h + q));
#pragma GCC unroll 8
    for (int q = 0; q < h; q++) {
        __m256 a = _mm256_castpd_ps(pair[0][q]), b = _mm256_castpd_ps(pair[1][q]);
        col[2 * q] = _mm256_shuffle_ps(a, b, 0x88);
        col[2 * q + 1] = _mm256_shuffle_ps(a, b, 0xdd);
    }
}

/* out[i * cols + c] = col[c][i] for i < 8 and c < cols; streaming stores
 * (out 16-byte aligned) or ordinary ones */
FS_ALWAYS_INLINE void fs_columns_to_lines(float *out, const __m256 col[16], int cols, int stream)
{
    int h = cols / 2;
    __m256d pair[2][8], halves[2][8];
#pragma GCC unroll 8
    for (int q = 0; q < h; q++) {
        pair[0][q] = _mm256_castps_pd(_mm256_unpacklo_ps(col[2 * q], col[2 * q + 1]));
        pair[1][q] = _mm256_castps_pd(_mm256_unpackhi_ps(col[2 * q], col[2 * q + 1]));
    }
    /* qword f of rows 0-3 (row f / h, qword f % h) is qword row % 2 of pair[row / 2][f % h] */
#pragma GCC unroll 16
    for (int f = 0; f < 4 * h; f += 2)
        halves[f / 2 % 2][f / 4] =
            fs_pick_qwords(pair[f / h / 2][f % h], f / h % 2,
                           pair[(f + 1) / h / 2][(f + 1) % h], (f + 1) / h % 2);
#pragma GCC unroll 8
    for (int k = 0; k < h; k++) {
        __m256 lo = _mm256_castpd_ps(halves[0][k]), hi = _mm256_castpd_ps(halves[1][k]);
        if (stream) { /* 16 bytes at a time: outputs are seldom 32-byte aligned */
            _mm_stream_ps(out + 8 * k, _mm256_castps256_ps128(lo));
            _mm_stream_ps(out + 8 * k + 4, _mm256_castps256_ps128(hi));
            _mm_stream_ps(out + 8 * (k + h), _mm256_extractf128_ps(lo, 1));
            _mm_stream_ps(out + 8 * (k + h) + 4, _mm256_extractf128_ps(hi, 1));
        } else {
            _mm256_storeu_ps(out + 8 * k, _mm256_permute2f128_ps(lo, hi, 0x20));
            _mm256_storeu_ps(out + 8 * (k + h), _mm256_permute2f128_ps(lo, hi, 0x31));
        }
    }
}
#undef FS_QWORD_OF_HALVES

/* tile[k * tile_stride + i] = x[i * stride + k] for i, k < 8 */
static inline void fs_load_transposed8(float *tile, int64_t tile_stride, const float *x,
                                       int64_t stride)
{
    __m256 v[8];
    fs_columns8_load(v, x, stride);
    for (int k = 0; k < 8; k++)
        _mm256_storeu_ps(tile + k * tile_stride, v[k]);
}

/*
 * out[i * stride + k] = tile[k * tile_stride + i] * mul[i] - sub[i] for
 * i, k < 8 (one rounding: mul = 1 and sub = 0 copy exactly).
 */
static inline void fs_store_transposed8(float *out, int64_t stride, const float *tile,
                                        int64_t tile_stride, __m256 mul, __m256 sub)
{
    __m256 v[8];
    for (int k = 0; k < 8; k++)
        v[k] = _mm256_fmsub_ps(_mm256_loadu_ps(tile + k * tile_stride), mul, sub);
    fs_columns8_store(out, stride, v);
}
#else
#define FS_HAVE_TRANSPOSE8 0
#endif

#endif /* FS_TRANSPOSE_H */
