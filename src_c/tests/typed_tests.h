/*
 * The tests of test_kernels.c for one element type; included once for float
 * and once for double with REAL, SFX (f32/f64), RTOL and ATOL defined.
 */

#define TCAT_(a, b) a##_##b
#define TCAT(a, b) TCAT_(a, b)
#define T(name) TCAT(name, SFX)

typedef struct {
    shape s;
    REAL *block;
} T(matrix);

/* A matrix whose every element (padding too) starts as SENTINEL. */
static T(matrix) T(alloc)(int64_t rows, int64_t cols, int layout)
{
    T(matrix) m;
    m.s = make_shape(rows, cols, layout);
    m.block = malloc((size_t)m.s.size * sizeof(REAL));
    if (!m.block) {
        printf("out of memory\n");
        exit(2);
    }
    for (int64_t e = 0; e < m.s.size; e++)
        m.block[e] = (REAL)SENTINEL;
    return m;
}

static REAL *T(base)(T(matrix) m)
{
    return m.block + m.s.base;
}

static void T(set)(T(matrix) m, const double *values)
{
    for (int64_t r = 0; r < m.s.rows; r++)
        for (int64_t j = 0; j < m.s.cols; j++)
            m.block[at(m.s, r, j)] = (REAL)values[r * m.s.cols + j];
}

static double T(get)(T(matrix) m, int64_t r, int64_t j)
{
    return m.block[at(m.s, r, j)];
}

static void T(check_padding)(T(matrix) m, const char *what)
{
    for (int64_t e = 0; e < m.s.size; e++)
        if (!inside(m.s, e) && m.block[e] != (REAL)SENTINEL)
            fail(what, -1, e, m.block[e], SENTINEL);
}

/* Compare a whole matrix with rows * cols reference doubles. */
static void T(compare)(T(matrix) m, const double *want, const char *what, double rtol,
                       double atol)
{
    for (int64_t r = 0; r < m.s.rows; r++)
        for (int64_t j = 0; j < m.s.cols; j++) {
            double got = T(get)(m, r, j), w = want[r * m.s.cols + j];
            if (!close_enough(got, w, rtol, atol))
                fail(what, r, j, got, w);
        }
    T(check_padding)(m, what);
}

/* Values as the kernels see them: rounded to REAL. */
static void T(round_values)(double *values, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        values[i] = (REAL)values[i];
}

/*
 * softmax (form 0: no workspace, 1: with the workspace it asks for, exactly
 * that long) or log_softmax (form 2)
 */
static void T(rowwise)(int form, const REAL *x, int64_t x_stride, REAL *out, int64_t out_stride,
                       int64_t rows, int64_t cols, double t)
{
    int64_t bytes = rows * cols * (int64_t)sizeof(REAL);
    if (form == 2) {
        T(fs_log_softmax)(x, x_stride, out, out_stride, rows, cols, t, bytes);
        return;
    }
    int64_t size = form == 1 ? T(fs_softmax_work)(cols, bytes) : 0;
    REAL *work = size ? malloc((size_t)size * sizeof(REAL)) : NULL;
    T(fs_softmax)(x, x_stride, out, out_stride, rows, cols, t, bytes, work);
    free(work);
}

static void T(test_rowwise)(const double *x, int64_t rows, int64_t cols, int layout)
{
    double *want = malloc((size_t)(rows * cols) * sizeof(double));
    T(matrix) in = T(alloc)(rows, cols, layout), out = T(alloc)(rows, cols, layout);
    static const double temperatures[] = {1.0, 0.7, 2.5};
    static const char *const names[] = {"softmax", "softmax with a workspace", "log_softmax"};
    static const char *const in_place[] = {"softmax in place", "softmax in place with a workspace",
                                           "log_softmax in place"};
    for (int form = 0; form < 3; form++)
        for (int k = 0; k < 3; k++) {
            double t = temperatures[k];
            int log_form = form == 2;
            for (int64_t r = 0; r < rows; r++)
                (log_form ? ref_log_softmax : ref_softmax)(x + r * cols, cols, t,
                                                           want + r * cols);
            double rtol = log_form ? RTOL : 2 * RTOL, atol = log_form ? 10 * ATOL : ATOL;
            T(set)(in, x);
            T(rowwise)(form, T(base)(in), in.s.stride, T(base)(out), out.s.stride, rows, cols, t);
            T(compare)(out, want, names[form], rtol, atol);
            T(compare)(in, x, "input left alone", 0, 0);
            T(rowwise)(form, T(base)(in), in.s.stride, T(base)(in), in.s.stride, rows, cols, t);
            T(compare)(in, want, in_place[form], rtol, atol);
        }
    free(in.block);
    free(out.block);
    free(want);
}

static void T(test_logsumexp)(const double *x, int64_t rows, int64_t cols, int layout)
{
    T(matrix) in = T(alloc)(rows, cols, layout), out = T(alloc)(rows, 1, LAYOUT_CONTIGUOUS);
    T(set)(in, x);
    T(fs_logsumexp)(T(base)(in), in.s.stride, T(base)(out), rows, cols);
    for (int64_t r = 0; r < rows; r++) {
        double want = ref_lse(x + r * cols, cols, 1), got = T(get)(out, r, 0);
        if (!close_enough(got, want, RTOL, ATOL))
            fail("logsumexp", r, 0, got, want);
    }
    T(check_padding)(out, "logsumexp");
    free(in.block);
    free(out.block);
}

static void T(test_backward)(const double *x, int64_t rows, int64_t cols, int layout)
{
    int64_t n = rows * cols;
    double *g = malloc((size_t)n * sizeof(double)), *saved = malloc((size_t)n * sizeof(double));
    double *want = malloc((size_t)n * sizeof(double));
    T(matrix) mg = T(alloc)(rows, cols, layout), ms = T(alloc)(rows, cols, layout);
    T(matrix) out = T(alloc)(rows, cols, layout);
    for (int64_t i = 0; i < n; i++)
        g[i] = uniform(-1, 1);
    T(round_values)(g, n);
    for (int log_form = 0; log_form < 2; log_form++) {
        for (int64_t r = 0; r < rows; r++) {
            const double *xr = x + r * cols, *gr = g + r * cols;
            double *sr = saved + r * cols, *wr = want + r * cols;
            (log_form ? ref_log_softmax : ref_softmax)(xr, cols, 1, sr);
            for (int64_t j = 0; j < cols; j++)
                sr[j] = (REAL)sr[j];
            double acc = 0;
            for (int64_t j = 0; j < cols; j++)
                acc += log_form ? gr[j] : gr[j] * sr[j];
            for (int64_t j = 0; j < cols; j++)
                wr[j] = log_form ? gr[j] - exp(sr[j]) * acc : sr[j] * (gr[j] - acc);
        }
        const char *what = log_form ? "log_softmax_backward" : "softmax_backward";
        void (*kernel)(const REAL *, int64_t, const REAL *, int64_t, REAL *, int64_t, int64_t,
                       int64_t) = log_form ? T(fs_log_softmax_backward) : T(fs_softmax_backward);
        T(set)(mg, g);
        T(set)(ms, saved);
        kernel(T(base)(mg), mg.s.stride, T(base)(ms), ms.s.stride, T(base)(out), out.s.stride,
               rows, cols);
        T(compare)(out, want, what, 10 * RTOL, 10 * ATOL);
        kernel(T(base)(mg), mg.s.stride, T(base)(ms), ms.s.stride, T(base)(mg), mg.s.stride, rows,
               cols);
        T(compare)(mg, want, what, 10 * RTOL, 10 * ATOL);
    }
    free(mg.block);
    free(ms.block);
    free(out.block);
    free(g);
    free(saved);
    free(want);
}

/*
 * Reference loss and gradient row of the fused cross-entropy; `target` is a
 * class (probs NULL) or ignored, or `probs` holds class probabilities.
 */
static double T(ref_cross_entropy)(const double *z, int64_t n, int64_t target,
                                   const double *probs, const double *w,
                                   const fs_ce_options *o, double *grad)
{
    double eps = o->label_smoothing, lse = ref_lse(z, n, 1);
    if (!probs && target == o->ignore_index) {
        for (int64_t j = 0; j < n; j++)
            grad[j] = 0;
        return 0;
    }
    if (!isfinite(lse)) {
        for (int64_t j = 0; j < n; j++)
            grad[j] = NAN;
        return NAN;
    }
    double loss = 0, w_total = 0, wq_total = 0;
    for (int64_t j = 0; j < n; j++)
        w_total += w ? w[j] : 1;
    for (int64_t j = 0; j < n; j++) {
        double wj = w ? w[j] : 1, q;
        if (probs)
            q = (1 - eps) * probs[j] + eps / (double)n;
        else
            q = (j == target ? 1 - eps : 0) + (eps > 0 ? eps / (double)n : 0);
        if (q != 0)
            loss += wj * q * (lse - z[j]);
        wq_total += wj * q;
        grad[j] = -wj * q;
    }
    loss += o->z_loss * lse * lse;
    for (int64_t j = 0; j < n; j++)
        grad[j] = o->grad_scale * (grad[j] + (wq_total + 2 * o->z_loss * lse) * exp(z[j] - lse));
    (void)w_total;
    return loss;
}

static void T(test_cross_entropy)(const double *x, int64_t rows, int64_t cols, int layout)
{
    int64_t n = rows * cols;
    double *want_grad = malloc((size_t)n * sizeof(double)), *want_loss = malloc((size_t)rows * sizeof(double));
    double *probs = malloc((size_t)n * sizeof(double)), *w = malloc((size_t)cols * sizeof(double));
    int64_t *target = malloc((size_t)rows * sizeof(int64_t));
    T(matrix) logits = T(alloc)(rows, cols, layout), grad = T(alloc)(rows, cols, layout);
    T(matrix) mprobs = T(alloc)(rows, cols, layout), mw = T(alloc)(1, cols, LAYOUT_CONTIGUOUS);
    T(matrix) loss = T(alloc)(rows, 1, LAYOUT_CONTIGUOUS);
    for (int64_t j = 0; j < cols; j++)
        w[j] = (REAL)uniform(0.2, 2);
    T(set)(mw, w);
    for (int64_t r = 0; r < rows; r++) {
        target[r] = r == 1 ? -100 : (int64_t)(uniform(0, 1) * (double)cols) % cols;
        double total = 0;
        for (int64_t j = 0; j < cols; j++)
            total += probs[r * cols + j] = uniform(0, 1);
        for (int64_t j = 0; j < cols; j++)
            probs[r * cols + j] = (REAL)(probs[r * cols + j] / total);
    }
    T(set)(mprobs, probs);
    for (int variant = 0; variant < 16; variant++) {
        int weighted = variant & 1, in_place = variant & 2, soft = variant & 4,
            smoothing = variant & 8;
        fs_ce_options o = {-100, smoothing ? 0.1 : 0.0, soft ? 1e-3 : 0.0, 0.5,
                           rows * cols * (int64_t)sizeof(REAL)};
        const double *wr = weighted ? w : NULL;
        for (int64_t r = 0; r < rows; r++)
            want_loss[r] = T(ref_cross_entropy)(x + r * cols, cols, target[r],
                                                soft ? probs + r * cols : NULL, wr, &o,
                                                want_grad + r * cols);
        T(set)(logits, x);
        REAL *g = in_place ? T(base)(logits) : T(base)(grad);
        int64_t gs = in_place ? logits.s.stride : grad.s.stride;
        const REAL *wk = weighted ? T(base)(mw) : NULL;
        if (soft)
            T(fs_cross_entropy_probs)(T(base)(logits), logits.s.stride, T(base)(mprobs),
                                      mprobs.s.stride, wk, T(base)(loss), g, gs, rows, cols, &o);
        else
            T(fs_cross_entropy)(T(base)(logits), logits.s.stride, target, wk, T(base)(loss), g,
                                gs, rows, cols, &o);
        for (int64_t r = 0; r < rows; r++)
            if (!close_enough(T(get)(loss, r, 0), want_loss[r], 10 * RTOL, 10 * ATOL))
                fail("cross_entropy loss", r, variant, T(get)(loss, r, 0), want_loss[r]);
        T(check_padding)(loss, "cross_entropy loss");
        T(compare)(in_place ? logits : grad, want_grad, "cross_entropy grad", 10 * RTOL,
                   10 * ATOL);
        /* loss only */
        T(set)(logits, x);
        if (soft)
            T(fs_cross_entropy_probs)(T(base)(logits), logits.s.stride, T(base)(mprobs),
                                      mprobs.s.stride, wk, T(base)(loss), NULL, 0, rows, cols,
                                      &o);
        else
            T(fs_cross_entropy)(T(base)(logits), logits.s.stride, target, wk, T(base)(loss),
                                NULL, 0, rows, cols, &o);
        for (int64_t r = 0; r < rows; r++)
            if (!close_enough(T(get)(loss, r, 0), want_loss[r], 10 * RTOL, 10 * ATOL))
                fail("cross_entropy loss only", r, variant, T(get)(loss, r, 0), want_loss[r]);
        T(compare)(logits, x, "cross_entropy input left alone", 0, 0);
    }
    free(logits.block);
    free(grad.block);
    free(mprobs.block);
    free(mw.block);
    free(loss.block);
    free(want_grad);
    free(want_loss);
    free(probs);
    free(w);
    free(target);
}

static void T(test_topk)(const double *x, int64_t rows, int64_t cols, int layout)
{
    int64_t ks[3] = {1, cols < 3 ? cols : 3, cols};
    double *p = malloc((size_t)cols * sizeof(double));
    int64_t *order = malloc((size_t)cols * sizeof(int64_t));
    T(matrix) in = T(alloc)(rows, cols, layout);
    T(set)(in, x);
    for (int a = 0; a < 3; a++) {
        int64_t k = ks[a];
        T(matrix) probs = T(alloc)(rows, k, layout == LAYOUT_NEGATIVE ? LAYOUT_PADDED : layout);
        int64_t index_stride = k + 2, index_size = 1 + (rows - 1) * index_stride + k;
        int64_t *index = malloc((size_t)index_size * sizeof(int64_t));
        for (int64_t e = 0; e < index_size; e++)
            index[e] = -7;
        T(fs_softmax_topk)(T(base)(in), in.s.stride, 0.8, T(base)(probs), probs.s.stride,
                           index + 1, index_stride, rows, cols, k);
        for (int64_t r = 0; r < rows; r++) {
            const double *xr = x + r * cols;
            ref_softmax(xr, cols, 0.8, p);
            sort_by_logit(order, xr, cols);
            int usable = ref_usable(xr, cols);
            for (int64_t q = 0; q < k; q++) {
                int64_t want_index = usable ? order[q] : q;
                double want_p = usable ? p[order[q]] : NAN;
                int64_t got_index = index[1 + r * index_stride + q];
                if (got_index != want_index)
                    fail("topk index", r, q, (double)got_index, (double)want_index);
                if (!close_enough(T(get)(probs, r, q), want_p, 2 * RTOL, ATOL))
                    fail("topk prob", r, q, T(get)(probs, r, q), want_p);
            }
        }
        for (int64_t e = 0; e < index_size; e++)
            if ((e == 0 || (e - 1) % index_stride >= k) && index[e] != -7)
                fail("topk index padding", -1, e, (double)index[e], -7);
        T(check_padding)(probs, "topk probs");
        free(probs.block);
        free(index);
    }
    T(compare)(in, x, "topk input left alone", 0, 0);
    free(in.block);
    free(p);
    free(order);
}

static void T(run_all)(int64_t rows, int64_t cols, int layout)
{
    double *x = malloc((size_t)(rows * cols) * sizeof(double));
    for (int64_t r = 0; r < rows; r++)
        make_row(x + r * cols, cols, (int)(r % ROW_KINDS));
    T(round_values)(x, rows * cols);
    T(test_rowwise)(x, rows, cols, layout);
    T(test_logsumexp)(x, rows, cols, layout);
    T(test_topk)(x, rows, cols, layout);
    /* the gradients and losses of special rows are NaN; test them on plain rows */
    for (int64_t r = 0; r < rows; r++)
        if (r % ROW_KINDS != ROW_SOME_NEGINF && r % ROW_KINDS != ROW_TIES)
            make_row(x + r * cols, cols, r % 3 == 2 ? ROW_NAN : ROW_PLAIN);
    T(round_values)(x, rows * cols);
    T(test_backward)(x, rows, cols, layout);
    T(test_cross_entropy)(x, rows, cols, layout);
    free(x);
}

/* exp against libm at special and ordinary arguments, overflow and underflow included. */
static void T(test_elementwise)(void)
{
    enum { N = 23, NONPOSITIVE = 11 };
    REAL x[N] = {-INFINITY, -1e30, -1000, -745, -708, -104, -103.9, -87.5, -20, -1e-3, -0.0,
                 0.0,       1e-3,  1,     20,   88.7, 89,   709,    710,   1e30, INFINITY,
                 NAN,       -1};
    REAL y[N];
    T(fs_exp)(x, y, N);
    for (int i = 0; i < N; i++) {
        double want = (REAL)exp((double)x[i]); /* 0, subnormal, inf as REAL has them */
        if (!close_enough(y[i], want, 2 * RTOL, TINY))
            fail("exp", 0, i, y[i], want);
    }
    T(fs_exp_nonpositive)(x, y, NONPOSITIVE);
    for (int i = 0; i < NONPOSITIVE; i++) {
        double want = (REAL)exp((double)x[i]);
        if (!close_enough(y[i], want, 2 * RTOL, TINY))
            fail("exp_nonpositive", 0, i, y[i], want);
    }
}

#undef TCAT_
#undef TCAT
#undef T
