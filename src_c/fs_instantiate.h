/*
 * Instantiates fs_kernels.h for float and double and exports the table of
 * entry points as FS_TABLE. Included by each fs_isa_*.c after it has chosen
 * the instruction set (target pragma) and defined FS_VECTOR_BYTES.
 */
#include "fs_internal.h"
#include "fs_math.h"
#include "fs_stream.h"
#include "fs_transpose.h"

#define REAL float
#define REAL_BYTES 4
#define REAL_TINY 0x1p-149f
#define NEXT_DOWN(x) nextafterf(x, 0.0f)
#define SFX f32
#define STREAM(dst, src) fs_stream_f32(dst, src)
#define EXP(x) fs_expf_nonpositive(x)
#define EXP_ANY(x) fs_expf(x)
#define LANE_LOG(x) fs_logf(x)
#define TRANSPOSE8 FS_HAVE_TRANSPOSE8
#define VECTOR_ROWS FS_HAVE_VEC_EXP
#define VECTOR_EXP(x) fs_expf_nonpositive_vec(x)
#define VECTOR_GREATER(a, b) fs_vf32_select_greater(a, b)
#include "fs_kernels.h"
#undef REAL
#undef REAL_BYTES
#undef REAL_TINY
#undef NEXT_DOWN
#undef SFX
#undef STREAM
#undef EXP
#undef EXP_ANY
#undef LANE_LOG
#undef TRANSPOSE8
#undef VECTOR_ROWS
#undef VECTOR_EXP
#undef VECTOR_GREATER

#define REAL double
#define REAL_BYTES 8
#define REAL_TINY 0x1p-1074
#define NEXT_DOWN(x) nextafter(x, 0.0)
#define SFX f64
#define STREAM(dst, src) fs_stream_f64(dst, src)
#define EXP(x) fs_exp_nonpositive(x)
#define EXP_ANY(x) fs_exp(x)
#define LANE_LOG(x) log(x)
#define TRANSPOSE8 0
/* vector rows of at least four doubles: SSE2 builds keep the blocks of LANES */
#define VECTOR_ROWS (FS_HAVE_VEC_EXP && FS_VECTOR_BYTES >= 32)
#define VECTOR_EXP(x) fs_exp_nonpositive_vec(x)
#define VECTOR_GREATER(a, b) fs_vf64_select_greater(a, b)
#include "fs_kernels.h"
#undef REAL
#undef REAL_BYTES
#undef REAL_TINY
#undef NEXT_DOWN
#undef SFX
#undef STREAM
#undef EXP
#undef EXP_ANY
#undef LANE_LOG
#undef TRANSPOSE8
#undef VECTOR_ROWS
#undef VECTOR_EXP
#undef VECTOR_GREATER

/* element-wise log, for accuracy tests */
static void log_map_f32(const float *x, float *out, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        out[i] = fs_logf(x[i]);
}

/*
 * The register kernels' exp, element-wise for accuracy tests: every other
 * vector through its vector form (where there is one), the rest lane by lane.
 */
static void exp_short_rows_map_f32(const float *x, float *out, int64_t n)
{
    int64_t i = 0;
#if FS_HAVE_VEC_EXP
    enum { VEC = FS_VECTOR_BYTES / 4 };
    for (; i + 2 * VEC <= n; i += 2 * VEC) {
        fs_vf32 v;
        memcpy(&v, x + i, sizeof v);
        v = fs_expf_nonpositive_short_vec(v);
        memcpy(out + i, &v, sizeof v);
        for (int64_t l = i + VEC; l < i + 2 * VEC; l++)
            out[l] = fs_expf_nonpositive_short(x[l]);
    }
#endif
    for (; i < n; i++)
        out[i] = fs_expf_nonpositive_short(x[i]);
}

const fs_kernel_table FS_TABLE = {
    softmax_f32,
    softmax_f64,
    softmax_work_f32,
    softmax_work_f64,
    log_softmax_f32,
    log_softmax_f64,
    logsumexp_f32,
    logsumexp_f64,
    softmax_backward_f32,
    softmax_backward_f64,
    log_softmax_backward_f32,
    log_softmax_backward_f64,
    cross_entropy_f32,
    cross_entropy_f64,
    cross_entropy_probs_f32,
    cross_entropy_probs_f64,
    softmax_topk_f32,
    softmax_topk_f64,
    exp_map_f32,
    exp_map_f64,
    exp_nonpositive_map_f32,
    exp_nonpositive_map_f64,
    log_map_f32,
    exp_short_rows_map_f32,
};
