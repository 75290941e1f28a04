/*
 * C-level test of the kernels, meant to be built with
 * -fsanitize=address,undefined (tests/test_c_backend.py does, and runs it).
 *
 * Every kernel runs on every instruction set this CPU supports, for float and
 * double, over odd row lengths (1, 3, 17, the tile limit and around it, 1025,
 * several chunks), unaligned base pointers, padded and negative row strides,
 * in place, and rows holding NaN, +inf and -inf. Buffers are allocated to the
 * exact element, so the sanitizer reports any access past either end; padding
 * between rows holds a sentinel that must survive. Results are compared with
 * plain double-precision loops.
 *
 * Prints one line per failure and exits with status 1 if there was any.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fastsoftmax.h"

static int failures = 0;
static char context[256];

static void fail(const char *what, int64_t row, int64_t col, double got, double want)
{
    if (failures < 50)
        printf("FAIL %s: %s row %lld col %lld: got %.9g want %.9g\n", context, what,
               (long long)row, (long long)col, got, want);
    failures++;
}

/* got matches want: the same NaN/inf, else within rtol * |want| + atol. */
static int close_enough(double got, double want, double rtol, double atol)
{
    if (isnan(want))
        return isnan(got);
    if (isinf(want))
        return got == want;
    return fabs(got - want) <= rtol * fabs(want) + atol;
}

/* A deterministic generator: uniform doubles in [lo, hi). */
static uint64_t rng_state = 0x9E3779B97F4A7C15u;

static double uniform(double lo, double hi)
{
    rng_state = rng_state * 6364136223846793005u + 1442695040888963407u;
    return lo + (hi - lo) * (double)(rng_state >> 11) * 0x1p-53;
}

/* ------------------------------------------------------------------ */
/* Double-precision references, one row at a time                      */
/* ------------------------------------------------------------------ */

/* logsumexp of (x * t) with the contract's special values */
static double ref_lse(const double *x, int64_t n, double t)
{
    int nan = 0, pinf = 0;
    double m = -INFINITY;
    for (int64_t j = 0; j < n; j++) {
        nan |= isnan(x[j]);
        pinf |= x[j] == INFINITY;
        if (x[j] > m)
            m = x[j];
    }
    if (nan)
        return NAN;
    if (pinf)
        return INFINITY;
    if (m == -INFINITY)
        return -INFINITY;
    double s = 0;
    for (int64_t j = 0; j < n; j++)
        s += exp((x[j] - m) * t);
    return m * t + log(s);
}

static int ref_usable(const double *x, int64_t n)
{
    double lse = ref_lse(x, n, 1);
    return isfinite(lse);
}

static void ref_log_softmax(const double *x, int64_t n, double t, double *out)
{
    double m = -INFINITY;
    for (int64_t j = 0; j < n; j++)
        m = x[j] > m ? x[j] : m;
    double s = 0;
    for (int64_t j = 0; j < n; j++)
        s += exp((x[j] - m) * t);
    int usable = ref_usable(x, n);
    for (int64_t j = 0; j < n; j++)
        out[j] = usable ? (x[j] - m) * t - log(s) : NAN;
}

static void ref_softmax(const double *x, int64_t n, double t, double *out)
{
    ref_log_softmax(x, n, t, out);
    for (int64_t j = 0; j < n; j++)
        out[j] = exp(out[j]);
}

/* order = 0..n-1 sorted by descending x, ties to the lower index */
static const double *sort_keys;

static int by_logit(const void *a, const void *b)
{
    int64_t i = *(const int64_t *)a, j = *(const int64_t *)b;
    double xi = sort_keys[i], xj = sort_keys[j];
    if (xi != xj)
        return xi > xj ? -1 : 1;
    return i < j ? -1 : 1;
}

static void sort_by_logit(int64_t *order, const double *x, int64_t n)
{
    for (int64_t j = 0; j < n; j++)
        order[j] = j;
    sort_keys = x;
    qsort(order, (size_t)n, sizeof *order, by_logit);
}

/* Row of a test matrix: random logits, or one of the special patterns. */
enum {
    ROW_PLAIN,
    ROW_NAN,
    ROW_POSINF,
    ROW_ALL_NEGINF,
    ROW_SOME_NEGINF,
    ROW_TIES,
    ROW_NAN_AMONG_NEGINF, /* a NaN in a leading run of -inf, before any finite logit */
    ROW_KINDS
};

static void make_row(double *x, int64_t n, int kind)
{
    for (int64_t j = 0; j < n; j++)
        x[j] = uniform(-6, 6);
    switch (kind) {
    case ROW_NAN:
        x[(n - 1) / 2] = NAN;
        break;
    case ROW_POSINF:
        x[n - 1] = INFINITY;
        break;
    case ROW_ALL_NEGINF:
        for (int64_t j = 0; j < n; j++)
            x[j] = -INFINITY;
        break;
    case ROW_SOME_NEGINF:
        for (int64_t j = 0; j < n; j += 2)
            x[j] = -INFINITY;
        break;
    case ROW_TIES:
        for (int64_t j = 0; j < n; j++)
            x[j] = (double)((j * 7) % 5);
        break;
    case ROW_NAN_AMONG_NEGINF:
        for (int64_t j = 0; j < n / 2; j++)
            x[j] = -INFINITY;
        x[n / 4] = NAN;
        break;
    }
}

/* ------------------------------------------------------------------ */
/* Matrices with exact-size allocations                                */
/* ------------------------------------------------------------------ */

enum { LAYOUT_CONTIGUOUS, LAYOUT_PADDED, LAYOUT_NEGATIVE, LAYOUTS };
static const char *layout_names[LAYOUTS] = {"contiguous", "padded", "negative stride"};

#define SENTINEL 12345.0

/*
 * The element offsets of a rows x cols matrix inside its block: the block
 * starts one element early (so the base is not vector-aligned), padded rows
 * are 3 elements apart, negative strides start from the last row.
 */
typedef struct {
    int64_t rows, cols, stride, base, size;
} shape;

static shape make_shape(int64_t rows, int64_t cols, int layout)
{
    shape s = {rows, cols, cols, 1, 0};
    if (layout == LAYOUT_PADDED)
        s.stride = cols + 3;
    if (layout == LAYOUT_NEGATIVE) {
        s.stride = -(cols + 2);
        s.base = 1 + (rows - 1) * (cols + 2);
    }
    int64_t span = (rows - 1) * (s.stride < 0 ? -s.stride : s.stride) + cols;
    s.size = 1 + span;
    return s;
}

static int64_t at(shape s, int64_t r, int64_t j)
{
    return s.base + r * s.stride + j;
}

/* Whether element e of the block lies inside the matrix. */
static int inside(shape s, int64_t e)
{
    int64_t first = s.stride < 0 ? at(s, s.rows - 1, 0) : s.base;
    if (e < first)
        return 0;
    int64_t step = s.stride < 0 ? -s.stride : s.stride;
    return (e - first) % step < s.cols && (e - first) / step < s.rows;
}

#define REAL float
#define SFX f32
#define RTOL 2e-5
#define ATOL 1e-6
#define TINY 0x1p-149 /* the smallest subnormal */
#include "typed_tests.h"
#undef REAL
#undef SFX
#undef RTOL
#undef ATOL
#undef TINY

#define REAL double
#define SFX f64
#define RTOL 1e-12
#define ATOL 1e-14
#define TINY 0x1p-1074
#include "typed_tests.h"
#undef REAL
#undef SFX
#undef RTOL
#undef ATOL
#undef TINY

/* float log against libm over special and ordinary arguments, subnormals included. */
static void test_log(void)
{
    enum { N = 12 };
    float x[N] = {-INFINITY, -1, -0.0f, 0.0f, 0x1p-149f, 1e-40f, 1e-30f, 0.5f, 1, 1.0001f,
                  3e38f, INFINITY};
    float y[N];
    fs_log_f32(x, y, N);
    for (int i = 0; i < N; i++) {
        double want = (float)log((double)x[i]);
        if (!close_enough(y[i], want, 2e-7, 0))
            fail("log", 0, i, y[i], want);
    }
    float nan = NAN;
    fs_log_f32(&nan, y, 1);
    if (!isnan(y[0]))
        fail("log of NaN", 0, 0, y[0], NAN);
}

/* The register kernels' cheaper exp: within 3 ulp, subnormal results to one subnormal step. */
static void test_exp_short_rows(void)
{
    enum { N = 14 };
    float x[N] = {-INFINITY, -1e30f, -200, -133, -132.5f, -104, -103.9f, -87.5f, -69,
                  -20, -1, -1e-3f, -0.0f, 0.0f};
    float y[N];
    fs_exp_short_rows_f32(x, y, N);
    for (int i = 0; i < N; i++) {
        double want = (float)exp((double)x[i]);
        if (!close_enough(y[i], want, 3.6e-7, 0x1p-149))
            fail("exp_short_rows", 0, i, y[i], want);
    }
    float nan = NAN;
    fs_exp_short_rows_f32(&nan, y, 1);
    if (!isnan(y[0]))
        fail("exp_short_rows of NaN", 0, 0, y[0], NAN);
}

int main(void)
{
    static const int64_t lengths[] = {1, 2, 3, 8, 9, 10, 12, 13, 16, 17, 63, 64, 65, 100, 128, 130, 203, 255, 256, 257, 600, 1024, 1025, 2500};
    static const int64_t row_counts[] = {1, 7, 70};
    int supported = fs_isa_supported();
    for (int level = supported; level >= 0; level--) {
        fs_isa_limit(level);
        for (size_t a = 0; a < sizeof lengths / sizeof *lengths; a++)
            for (size_t b = 0; b < sizeof row_counts / sizeof *row_counts; b++)
                for (int layout = 0; layout < LAYOUTS; layout++) {
                    int64_t rows = row_counts[b], cols = lengths[a];
                    if (rows * cols > 20000)
                        continue; /* long rows are tested with fewer of them */
                    snprintf(context, sizeof context, "%s %lldx%lld %s f32",
                             fs_isa_name(level), (long long)rows, (long long)cols,
                             layout_names[layout]);
                    run_all_f32(rows, cols, layout);
                    snprintf(context, sizeof context, "%s %lldx%lld %s f64",
                             fs_isa_name(level), (long long)rows, (long long)cols,
                             layout_names[layout]);
                    run_all_f64(rows, cols, layout);
                }
        snprintf(context, sizeof context, "%s elementwise", fs_isa_name(level));
        test_elementwise_f32();
        test_elementwise_f64();
        test_log();
        test_exp_short_rows();
    }
    printf("%s: %d failures, instruction sets up to %s\n", failures ? "FAILED" : "OK", failures,
           fs_isa_name(supported));
    return failures ? 1 : 0;
}
