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
