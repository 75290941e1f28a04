/*
 * fastsoftmax C kernels: row-wise softmax and its relatives, float32 and float64.
 *
 * This header is the whole public interface and the single source of the cffi
 * cdef (src_c/build_ffi.py feeds it to cffi with the preprocessor lines removed).
 *
 * Conventions shared by every kernel:
 * - A matrix argument is a base pointer and a row stride: row i starts at
 *   base + i * stride. Strides count elements, not bytes, and may be negative
 *   or zero for a single row. Elements within a row are contiguous.
 * - `rows` >= 1 rows of `cols` >= 1 elements; every count is a 64-bit integer.
 * - An output may be the very same matrix as an input (same base and stride):
 *   the kernels are written for in-place use. Partial overlap is not allowed.
 * - Kernels allocate nothing (a caller may lend softmax a workspace), keep no
 *   state and are reentrant: any number of threads may call them at once on
 *   different (or the same read-only) data.
 *   Callers split large problems across threads by rows.
 * - `output_bytes` (softmax, log_softmax) and the cross-entropy's
 *   `grad_bytes` give the size of the whole output that a call writes rows
 *   of: large outputs (16 MiB and more) are written past the caches with
 *   streaming stores, and a problem split across threads passes the whole
 *   size to each call, so that its parts choose as the whole would however
 *   many threads share it.
 * - NaN and infinities follow the contract of fastsoftmax (DESIGN.md): a row
 *   holding NaN or +inf, or only -inf, gives a NaN row; -inf entries of other
 *   rows give exactly 0 (softmax) or exactly -inf (log_softmax).
 */
#ifndef FASTSOFTMAX_H
#define FASTSOFTMAX_H

#include <stdint.h>

/* Scalar options of the fused cross-entropy. */
typedef struct fs_ce_options {
    int64_t ignore_index;   /* rows whose class target equals it get loss 0, gradient 0 */
    double label_smoothing; /* eps in [0, 1] */
    double z_loss;          /* weight of the lse**2 term */
    double grad_scale;      /* factor applied to every gradient row (1 / mean denominator) */
    int64_t grad_bytes;     /* size of the whole gradient (see output_bytes above) */
} fs_ce_options;

/*
 * out = exp((x - max) * inv_temperature) / sum(...) per row. `work` is NULL
 * or fs_softmax_work_*(cols, output_bytes) elements of scratch, no longer
 * needed once the call returns (one per concurrent call); given, long rows
 * compute each exponential once instead of twice. A count of 0 means no use
 * for it.
 */
void fs_softmax_f32(const float *x, int64_t x_stride, float *out, int64_t out_stride,
                    int64_t rows, int64_t cols, double inv_temperature, int64_t output_bytes,
                    float *work);
void fs_softmax_f64(const double *x, int64_t x_stride, double *out, int64_t out_stride,
                    int64_t rows, int64_t cols, double inv_temperature, int64_t output_bytes,
                    double *work);
int64_t fs_softmax_work_f32(int64_t cols, int64_t output_bytes);
int64_t fs_softmax_work_f64(int64_t cols, int64_t output_bytes);

/* out = (x - max) * inv_temperature - log(sum(exp(...))) per row. */
void fs_log_softmax_f32(const float *x, int64_t x_stride, float *out, int64_t out_stride,
                        int64_t rows, int64_t cols, double inv_temperature,
                        int64_t output_bytes);
void fs_log_softmax_f64(const double *x, int64_t x_stride, double *out, int64_t out_stride,
                        int64_t rows, int64_t cols, double inv_temperature,
                        int64_t output_bytes);

/* out[i] = max + log(sum(exp(x - max))) of row i, one pass over the row;
 * -inf for rows of only -inf, +inf for rows with +inf, NaN for rows with NaN. */
void fs_logsumexp_f32(const float *x, int64_t x_stride, float *out,
                      int64_t rows, int64_t cols);
void fs_logsumexp_f64(const double *x, int64_t x_stride, double *out,
                      int64_t rows, int64_t cols);

/* out = y * (grad - sum(grad * y)) per row. */
void fs_softmax_backward_f32(const float *grad, int64_t grad_stride,
                             const float *y, int64_t y_stride,
                             float *out, int64_t out_stride, int64_t rows, int64_t cols);
void fs_softmax_backward_f64(const double *grad, int64_t grad_stride,
                             const double *y, int64_t y_stride,
                             double *out, int64_t out_stride, int64_t rows, int64_t cols);

/* out = grad - exp(logp) * sum(grad) per row. */
void fs_log_softmax_backward_f32(const float *grad, int64_t grad_stride,
                                 const float *logp, int64_t logp_stride,
                                 float *out, int64_t out_stride, int64_t rows, int64_t cols);
void fs_log_softmax_backward_f64(const double *grad, int64_t grad_stride,
                                 const double *logp, int64_t logp_stride,
                                 double *out, int64_t out_stride, int64_t rows, int64_t cols);

/*
 * Fused cross-entropy against class indices: per row, with lse = logsumexp(z),
 *   loss = (1 - eps) w[y] (lse - z[y]) + eps / C sum_j w[j] (lse - z[j]) + z_loss lse**2
 * (the smoothing term only when eps > 0), and when grad is not NULL the row
 * of grad_scale * d(loss)/dz, from one pass over the logits plus one over the
 * row while it is in cache. target[i] is in [0, cols) or equals ignore_index.
 * weight is NULL (all ones) or `cols` contiguous class weights. grad may be
 * the logits themselves.
 */
void fs_cross_entropy_f32(const float *logits, int64_t logits_stride, const int64_t *target,
                          const float *weight, float *loss, float *grad, int64_t grad_stride,
                          int64_t rows, int64_t cols, const fs_ce_options *options);
void fs_cross_entropy_f64(const double *logits, int64_t logits_stride, const int64_t *target,
                          const double *weight, double *loss, double *grad, int64_t grad_stride,
                          int64_t rows, int64_t cols, const fs_ce_options *options);

/*
 * Fused cross-entropy against class probabilities t (a matrix like the logits):
 *   loss = sum_j w[j] t'[j] (lse - z[j]) + z_loss lse**2,  t' = (1 - eps) t + eps / C,
 * gradient as above. ignore_index does not apply.
 */
void fs_cross_entropy_probs_f32(const float *logits, int64_t logits_stride,
                                const float *target, int64_t target_stride,
                                const float *weight, float *loss, float *grad, int64_t grad_stride,
                                int64_t rows, int64_t cols, const fs_ce_options *options);
void fs_cross_entropy_probs_f64(const double *logits, int64_t logits_stride,
                                const double *target, int64_t target_stride,
                                const double *weight, double *loss, double *grad,
                                int64_t grad_stride, int64_t rows, int64_t cols,
                                const fs_ce_options *options);

/*
 * The `k` largest softmax probabilities of each row (1 <= k <= cols),
 * ordered by logit (descending), equal logits by lower index, with their
 * class indices; one pass over the row that keeps the k best logits in the
 * output row itself. A row whose softmax is NaN gives NaN and indices 0..k-1.
 */
void fs_softmax_topk_f32(const float *x, int64_t x_stride, double inv_temperature,
                         float *probs, int64_t probs_stride, int64_t *index,
                         int64_t index_stride, int64_t rows, int64_t cols, int64_t k);
void fs_softmax_topk_f64(const double *x, int64_t x_stride, double inv_temperature,
                         double *probs, int64_t probs_stride, int64_t *index,
                         int64_t index_stride, int64_t rows, int64_t cols, int64_t k);

/*
 * Element-wise exp and log with the kernels' own vectorized functions, for
 * accuracy tests. The nonpositive variants are the exp the kernels apply to
 * x - max(x); they are exact only for x <= 0 (and NaN).
 */
void fs_exp_f32(const float *x, float *out, int64_t n);
void fs_exp_f64(const double *x, double *out, int64_t n);
void fs_exp_nonpositive_f32(const float *x, float *out, int64_t n);
void fs_exp_nonpositive_f64(const double *x, double *out, int64_t n);
void fs_log_f32(const float *x, float *out, int64_t n);
/* the cheaper exp of the register kernels for rows of 8 to 16 float32 classes (x <= 0) */
void fs_exp_short_rows_f32(const float *x, float *out, int64_t n);

/*
 * Instruction sets: 0 baseline, 1 AVX2 + FMA, 2 AVX-512 (F, DQ, BW, VL).
 * fs_isa_supported() is the best level this CPU and build can run;
 * fs_isa_level() the level in use: the supported one, or lower after
 * fs_isa_limit(level), which caps it (for tests and for CPUs that slow down
 * under AVX-512) and returns the level now in use. fs_isa_name() names a level.
 */
int fs_isa_supported(void);
int fs_isa_level(void);
int fs_isa_limit(int level);
const char *fs_isa_name(int level);

#endif /* FASTSOFTMAX_H */
