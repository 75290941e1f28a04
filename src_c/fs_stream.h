/*
 * Non-temporal (streaming) stores of one SIMD vector, for outputs much larger
 * than the caches: they skip the read-for-ownership of the destination line,
 * so a kernel moves 8 instead of 12 bytes per float32 element. Included by
 * fs_instantiate.h inside a translation unit compiled for one instruction
 * set (FS_VECTOR_BYTES); without x86 SIMD they are plain copies.
 */
#ifndef FS_STREAM_H
#define FS_STREAM_H

#define FS_HAVE_STREAM FS_X86_SIMD

/*
 * Outputs of at least this many bytes are streamed (the size of the whole
 * output, which callers pass to each call that writes part of it): past
 * the size of a last-level cache, caching them gains nothing. (The C tests
 * set it to 0 to run the streaming paths on small data.)
 */
#ifndef FS_STREAM_MIN_BYTES
#define FS_STREAM_MIN_BYTES ((int64_t)16 << 20)
#endif

static inline int fs_stream_aligned(const void *p)
{
    return FS_HAVE_STREAM && (uintptr_t)p % FS_VECTOR_BYTES == 0;
}

/* *dst = *src for one vector; dst aligned to FS_VECTOR_BYTES. */
static inline void fs_stream_f32(float *dst, const float *src)
{
#if FS_HAVE_STREAM && FS_VECTOR_BYTES == 64
    _mm512_stream_ps(dst, _mm512_loadu_ps(src));
#elif FS_HAVE_STREAM && FS_VECTOR_BYTES == 32
    _mm256_stream_ps(dst, _mm256_loadu_ps(src));
#elif FS_HAVE_STREAM
    _mm_stream_ps(dst, _mm_loadu_ps(src));
#else
    memcpy(dst, src, FS_VECTOR_BYTES);
#endif
}

static inline void fs_stream_f64(double *dst, const double *src)
{
#if FS_HAVE_STREAM && FS_VECTOR_BYTES == 64
    _mm512_stream_pd(dst, _mm512_loadu_pd(src));
#elif FS_HAVE_STREAM && FS_VECTOR_BYTES == 32
    _mm256_stream_pd(dst, _mm256_loadu_pd(src));
#elif FS_HAVE_STREAM
    _mm_stream_pd(dst, _mm_loadu_pd(src));
#else
    memcpy(dst, src, FS_VECTOR_BYTES);
#endif
}

/* Orders earlier streaming stores before later stores (call before returning). */
static inline void fs_stream_fence(void)
{
#if FS_HAVE_STREAM
    _mm_sfence();
#endif
}

#endif /* FS_STREAM_H */
