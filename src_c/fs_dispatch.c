/*
 * The public functions of fastsoftmax.h: each forwards to the build of the
 * kernels for the best instruction set the running CPU supports (runtime
 * dispatch, so the extension itself is built for the compiler's portable
 * baseline and never with -march=native).
 */
#include "fs_internal.h"

static int supported_level = -1;
static int level_cap = FS_ISA_AVX512;

static int detect_level(void)
{
#if FS_X86_DISPATCH
    __builtin_cpu_init();
    /* __builtin_cpu_supports also checks that the OS saves the wide registers */
    int avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    int avx512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") &&
                 __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl");
    if (avx2 && avx512)
        return FS_ISA_AVX512;
    if (avx2)
        return FS_ISA_AVX2;
#endif
    return FS_ISA_BASELINE;
}

#if defined(__GNUC__) || defined(__clang__)
/* Detect once at load time, before any thread can call a kernel. */
__attribute__((constructor)) static void detect_at_load(void)
{
    supported_level = detect_level();
}
#endif

int fs_isa_supported(void)
{
    if (supported_level < 0)
        supported_level = detect_level();
    return supported_level;
}

int fs_isa_level(void)
{
    int supported = fs_isa_supported();
    return level_cap < supported ? level_cap : supported;
}

int fs_isa_limit(int level)
{
    level_cap = level < FS_ISA_BASELINE ? FS_ISA_BASELINE : level;
    return fs_isa_level();
}

const char *fs_isa_name(int level)
{
    switch (level) {
    case FS_ISA_AVX512:
        return "avx512";
    case FS_ISA_AVX2:
        return "avx2";
    case FS_ISA_BASELINE:
        return "baseline";
    default:
        return "unknown";
    }
}

static const fs_kernel_table *kernels(void)
{
#if FS_X86_DISPATCH
    switch (fs_isa_level()) {
    case FS_ISA_AVX512:
        return &fs_kernels_avx512;
    case FS_ISA_AVX2:
        return &fs_kernels_avx2;
    default:
        break;
    }
#endif
    return &fs_kernels_baseline;
}

void fs_softmax_f32(const float *x, int64_t x_stride, float *out, int64_t out_stride,
                    int64_t rows, int64_t cols, double inv_temperature, int64_t output_bytes,
                    float *work)
{
    kernels()->softmax_f32(x, x_stride, out, out_stride, rows, cols, inv_temperature,
                           output_bytes, work);
}

void fs_softmax_f64(const double *x, int64_t x_stride, double *out, int64_t out_stride,
                    int64_t rows, int64_t cols, double inv_temperature, int64_t output_bytes,
                    double *work)
{
    kernels()->softmax_f64(x, x_stride, out, out_stride, rows, cols, inv_temperature,
                           output_bytes, work);
}

int64_t fs_softmax_work_f32(int64_t cols, int64_t output_bytes)
{
    return kernels()->softmax_work_f32(cols, output_bytes);
}

int64_t fs_softmax_work_f64(int64_t cols, int64_t output_bytes)
{
    return kernels()->softmax_work_f64(cols, output_bytes);
}

void fs_log_softmax_f32(const float *x, int64_t x_stride, float *out, int64_t out_stride,
                        int64_t rows, int64_t cols, double inv_temperature,
                        int64_t output_bytes)
{
    kernels()->log_softmax_f32(x, x_stride, out, out_stride, rows, cols, inv_temperature,
                               output_bytes);
}

void fs_log_softmax_f64(const double *x, int64_t x_stride, double *out, int64_t out_stride,
                        int64_t rows, int64_t cols, double inv_temperature,
                        int64_t output_bytes)
{
    kernels()->log_softmax_f64(x, x_stride, out, out_stride, rows, cols, inv_temperature,
                               output_bytes);
}

void fs_logsumexp_f32(const float *x, int64_t x_stride, float *out, int64_t rows, int64_t cols)
{
    kernels()->logsumexp_f32(x, x_stride, out, rows, cols);
}

void fs_logsumexp_f64(const double *x, int64_t x_stride, double *out, int64_t rows,
                      int64_t cols)
{
    kernels()->logsumexp_f64(x, x_stride, out, rows, cols);
}

void fs_softmax_backward_f32(const float *grad, int64_t grad_stride, const float *y,
                             int64_t y_stride, float *out, int64_t out_stride, int64_t rows,
                             int64_t cols)
{
    kernels()->softmax_backward_f32(grad, grad_stride, y, y_stride, out, out_stride, rows, cols);
}

void fs_softmax_backward_f64(const double *grad, int64_t grad_stride, const double *y,
                             int64_t y_stride, double *out, int64_t out_stride, int64_t rows,
                             int64_t cols)
{
    kernels()->softmax_backward_f64(grad, grad_stride, y, y_stride, out, out_stride, rows, cols);
}

void fs_log_softmax_backward_f32(const float *grad, int64_t grad_stride, const float *logp,
                                 int64_t logp_stride, float *out, int64_t out_stride,
                                 int64_t rows, int64_t cols)
{
    kernels()->log_softmax_backward_f32(grad, grad_stride, logp, logp_stride, out, out_stride,
                                        rows, cols);
}

void fs_log_softmax_backward_f64(const double *grad, int64_t grad_stride, const double *logp,
                                 int64_t logp_stride, double *out, int64_t out_stride,
                                 int64_t rows, int64_t cols)
{
    kernels()->log_softmax_backward_f64(grad, grad_stride, logp, logp_stride, out, out_stride,
                                        rows, cols);
}

void fs_cross_entropy_f32(const float *logits, int64_t logits_stride, const int64_t *target,
                          const float *weight, float *loss, float *grad, int64_t grad_stride,
                          int64_t rows, int64_t cols, const fs_ce_options *options)
{
    kernels()->cross_entropy_f32(logits, logits_stride, target, weight, loss, grad, grad_stride,
                                 rows, cols, options);
}

void fs_cross_entropy_f64(const double *logits, int64_t logits_stride, const int64_t *target,
                          const double *weight, double *loss, double *grad, int64_t grad_stride,
                          int64_t rows, int64_t cols, const fs_ce_options *options)
{
    kernels()->cross_entropy_f64(logits, logits_stride, target, weight, loss, grad, grad_stride,
                                 rows, cols, options);
}

void fs_cross_entropy_probs_f32(const float *logits, int64_t logits_stride,
                                const float *target, int64_t target_stride,
                                const float *weight, float *loss, float *grad, int64_t grad_stride,
                                int64_t rows, int64_t cols, const fs_ce_options *options)
{
    kernels()->cross_entropy_probs_f32(logits, logits_stride, target, target_stride, weight,
                                       loss, grad, grad_stride, rows, cols, options);
}

void fs_cross_entropy_probs_f64(const double *logits, int64_t logits_stride,
                                const double *target, int64_t target_stride,
                                const double *weight, double *loss, double *grad,
                                int64_t grad_stride, int64_t rows, int64_t cols,
                                const fs_ce_options *options)
{
    kernels()->cross_entropy_probs_f64(logits, logits_stride, target, target_stride, weight,
                                       loss, grad, grad_stride, rows, cols, options);
}

void fs_softmax_topk_f32(const float *x, int64_t x_stride, double inv_temperature,
                         float *probs, int64_t probs_stride, int64_t *index,
                         int64_t index_stride, int64_t rows, int64_t cols, int64_t k)
{
    kernels()->softmax_topk_f32(x, x_stride, inv_temperature, probs, probs_stride, index,
                                index_stride, rows, cols, k);
}

void fs_softmax_topk_f64(const double *x, int64_t x_stride, double inv_temperature,
                         double *probs, int64_t probs_stride, int64_t *index,
                         int64_t index_stride, int64_t rows, int64_t cols, int64_t k)
{
    kernels()->softmax_topk_f64(x, x_stride, inv_temperature, probs, probs_stride, index,
                                index_stride, rows, cols, k);
}

void fs_exp_f32(const float *x, float *out, int64_t n)
{
    kernels()->exp_f32(x, out, n);
}

void fs_exp_f64(const double *x, double *out, int64_t n)
{
    kernels()->exp_f64(x, out, n);
}

void fs_exp_nonpositive_f32(const float *x, float *out, int64_t n)
{
    kernels()->exp_nonpositive_f32(x, out, n);
}

void fs_exp_nonpositive_f64(const double *x, double *out, int64_t n)
{
    kernels()->exp_nonpositive_f64(x, out, n);
}

void fs_log_f32(const float *x, float *out, int64_t n)
{
    kernels()->log_f32(x, out, n);
}

void fs_exp_short_rows_f32(const float *x, float *out, int64_t n)
{
    kernels()->exp_short_rows_f32(x, out, n);
}
