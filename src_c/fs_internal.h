/*
 * Internal interface between the per-instruction-set builds of the kernels and
 * the dispatcher (fs_dispatch.c).
 *
 * fs_kernels.h is compiled once per instruction set (fs_isa_*.c) and each
 * build exports one table of entry points; the public functions of
 * fastsoftmax.h forward to the table that suits the running CPU.
 */
#ifndef FS_INTERNAL_H
#define FS_INTERNAL_H

#include <float.h>
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "fastsoftmax.h"

/* x86 compilers that understand per-function target options get the AVX2 and
 * AVX-512 builds; everything else runs the baseline build only. */
#if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__))
#define FS_X86_DISPATCH 1
#else
#define FS_X86_DISPATCH 0
#endif

/* x86 SIMD intrinsics: usable in the per-instruction-set builds, whose
 * FS_VECTOR_BYTES names the register width they target. */
#if FS_X86_DISPATCH && defined(__SSE2__)
#include <immintrin.h>
#define FS_X86_SIMD 1
#else
#define FS_X86_SIMD 0
#endif

/*
 * For helpers that must disappear into their callers: a loop calling one is
 * vectorized, and a constant argument (t = 1, a form flag) reaches the loop,
 * only if the call is gone; GCC's inlining budget, spent on a large
 * translation unit, otherwise leaves some calls standing (a softmax over
 * rows of 32000 classes ran 4x slower for one such call to the exp).
 */
#if defined(__GNUC__) || defined(__clang__)
#define FS_ALWAYS_INLINE static inline __attribute__((always_inline))
#else
#define FS_ALWAYS_INLINE static __forceinline
#endif

/* a hint to bring the cache line at p into L2, where the compiler has one */
#if defined(__GNUC__) || defined(__clang__)
#define FS_PREFETCH_L2(p) __builtin_prefetch((p), 0, 2)
#else
#define FS_PREFETCH_L2(p) ((void)(p))
#endif

enum { FS_ISA_BASELINE = 0, FS_ISA_AVX2 = 1, FS_ISA_AVX512 = 2 };

typedef struct fs_kernel_table {
    void (*softmax_f32)(const float *, int64_t, float *, int64_t, int64_t, int64_t, double,
                        int64_t, float *);
    void (*softmax_f64)(const double *, int64_t, double *, int64_t, int64_t, int64_t, double,
                        int64_t, double *);
    int64_t (*softmax_work_f32)(int64_t, int64_t);
    int64_t (*softmax_work_f64)(int64_t, int64_t);
    void (*log_softmax_f32)(const float *, int64_t, float *, int64_t, int64_t, int64_t, double,
                            int64_t);
    void (*log_softmax_f64)(const double *, int64_t, double *, int64_t, int64_t, int64_t,
                            double, int64_t);
    void (*logsumexp_f32)(const float *, int64_t, float *, int64_t, int64_t);
    void (*logsumexp_f64)(const double *, int64_t, double *, int64_t, int64_t);
    void (*softmax_backward_f32)(const float *, int64_t, const float *, int64_t, float *,
                                 int64_t, int64_t, int64_t);
    void (*softmax_backward_f64)(const double *, int64_t, const double *, int64_t, double *,
                                 int64_t, int64_t, int64_t);
    void (*log_softmax_backward_f32)(const float *, int64_t, const float *, int64_t, float *,
                                     int64_t, int64_t, int64_t);
    void (*log_softmax_backward_f64)(const double *, int64_t, const double *, int64_t,
                                     double *, int64_t, int64_t, int64_t);
    void (*cross_entropy_f32)(const float *, int64_t, const int64_t *, const float *, float *,
                              float *, int64_t, int64_t, int64_t, const fs_ce_options *);
    void (*cross_entropy_f64)(const double *, int64_t, const int64_t *, const double *,
                              double *, double *, int64_t, int64_t, int64_t,
                              const fs_ce_options *);
    void (*cross_entropy_probs_f32)(const float *, int64_t, const float *, int64_t,
                                    const float *, float *, float *, int64_t, int64_t, int64_t,
                                    const fs_ce_options *);
    void (*cross_entropy_probs_f64)(const double *, int64_t, const double *, int64_t,
                                    const double *, double *, double *, int64_t, int64_t,
                                    int64_t, const fs_ce_options *);
    void (*softmax_topk_f32)(const float *, int64_t, double, float *, int64_t, int64_t *,
                             int64_t, int64_t, int64_t, int64_t);
    void (*softmax_topk_f64)(const double *, int64_t, double, double *, int64_t, int64_t *,
                             int64_t, int64_t, int64_t, int64_t);
    void (*exp_f32)(const float *, float *, int64_t);
    void (*exp_f64)(const double *, double *, int64_t);
    void (*exp_nonpositive_f32)(const float *, float *, int64_t);
    void (*exp_nonpositive_f64)(const double *, double *, int64_t);
    void (*log_f32)(const float *, float *, int64_t);
    void (*exp_short_rows_f32)(const float *, float *, int64_t);
} fs_kernel_table;

extern const fs_kernel_table fs_kernels_baseline;
#if FS_X86_DISPATCH
extern const fs_kernel_table fs_kernels_avx2;
extern const fs_kernel_table fs_kernels_avx512;
#endif

#endif /* FS_INTERNAL_H */
