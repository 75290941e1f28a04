/*
 * Type-generic kernel bodies. fs_instantiate.h includes this file once for
 * float and once for double, inside a translation unit compiled for one
 * instruction set; it defines before each inclusion:
 *   REAL             the element type
 *   SFX              the type suffix of every name here (f32 or f64)
 *   EXP(x)           the vectorizable exp of fs_math.h for REAL
 *   LANE_LOG(x)      log of REAL used lane by lane in the short-row kernels
 *   FS_VECTOR_BYTES  the SIMD register width of the instruction set
 *
 * Shape of the code. Hot loops work on blocks of LANES elements (four SIMD
 * registers) held in small local arrays: load a block, compute, store it. The
 * fixed-trip inner loops become SIMD instructions without -ffast-math, and
 * because a block is read completely before it is written, an output may be
 * the very input (in place) without restrict pointers. Reductions keep LANES
 * partial results, so no reassociation is needed; the partials of each CHUNK
 * of a row are added into a double, which keeps rows of 256k elements within
 * the contract's accuracy.
 *
 * Short rows (at most SHORT_COLS) are transposed, TILE_ROWS at a time, into a
 * stack tile whose SIMD lanes span rows, so one vector instruction serves many
 * rows. Longer rows are reduced with an online maximum and sum: a chunk's
 * maximum, then its exponentials against the running maximum, the sum
 * rescaled when the maximum grows, so the row is read from memory once.
 *
 * Special rows. The maximum propagates NaN, so a row's maximum alone says
 * whether it is special: NaN (a NaN somewhere), +inf (an +inf and no NaN),
 * -inf (only -inf), else finite. Finite rows take the fast path; the others
 * get the contract's NaN row (or NaN/inf/-inf for logsumexp).
 */

#define FS_CAT_(a, b) a##_##b
#define FS_CAT(a, b) FS_CAT_(a, b)
#define F(name) FS_CAT(name, SFX)

#define LANES (4 * FS_VECTOR_BYTES / (int)sizeof(REAL))
#define CHUNK 1024
#define SHORT_COLS 32
#define TILE_ROWS LANES
#define GAP_SCALE ((REAL)(1.0 / 2048)) /* keeps sums of up to CHUNK gaps (m - z) finite */

/* ------------------------------------------------------------------ */
/* Scalars and blocks                                                  */
/* ------------------------------------------------------------------ */

/* max(a, b) that keeps a NaN once it has seen one. */
static inline REAL F(nan_max)(REAL a, REAL b)
{
    return ((b > a) | (b != b)) ? b : a;
}

static inline int F(is_finite)(REAL v)
{
    return v - v == 0;
}

/*
 * (x - m) * t computed as (x/2 - m/2) * 2t: the same roundings (halving is
 * exact), but x - m cannot overflow when x and m are huge with opposite signs
 * and t is small. Callers pass half_m = m / 2 and twice_t = 2 t.
 */
static inline REAL F(scaled_gap)(REAL x, REAL half_m, REAL twice_t)
{
    return (x * (REAL)0.5 - half_m) * twice_t;
}

/* v = the first n (< LANES) elements of x, padded with `pad`. */
static inline void F(load_tail)(REAL *v, const REAL *x, int64_t n, REAL pad)
{
    for (int l = 0; l < LANES; l++)
        v[l] = pad;
    for (int64_t l = 0; l < n; l++)
        v[l] = x[l];
}

static inline void F(store_tail)(REAL *out, const REAL *v, int64_t n)
{
    for (int64_t l = 0; l < n; l++)
        out[l] = v[l];
}

static inline double F(lanes_sum)(const REAL *acc)
{
    double s = 0.0;
    for (int l = 0; l < LANES; l++)
        s += acc[l];
    return s;
}

static void F(fill)(REAL *out, int64_t n, REAL value)
{
    for (int64_t i = 0; i < n; i++)
        out[i] = value;
}

/* ------------------------------------------------------------------ */
/* Row reductions                                                      */
/* ------------------------------------------------------------------ */

/* Maximum of x[0..n), NaN if one is there. */
static REAL F(row_max)(const REAL *x, int64_t n)
{
    REAL acc[LANES];
    for (int l = 0; l < LANES; l++)
        acc[l] = -INFINITY;
    int64_t i = 0;
    for (; i + LANES <= n; i += LANES)
        for (int l = 0; l < LANES; l++)
            acc[l] = F(nan_max)(acc[l], x[i + l]);
    REAL m = acc[0];
    for (int l = 1; l < LANES; l++)
        m = F(nan_max)(m, acc[l]);
    for (; i < n; i++)
        m = F(nan_max)(m, x[i]);
    return m;
}

/* Sum of exp((x - m) * t) over at most CHUNK elements. */
static double F(chunk_sum_exp)(const REAL *x, int64_t n, REAL m, REAL t)
{
    REAL acc[LANES], v[LANES], half_m = m * (REAL)0.5, twice_t = 2 * t;
    for (int l = 0; l < LANES; l++)
        acc[l] = 0;
    int64_t i = 0;
    for (; i + LANES <= n; i += LANES)
        for (int l = 0; l < LANES; l++)
            acc[l] += EXP(F(scaled_gap)(x[i + l], half_m, twice_t));
    if (i < n) {
        F(load_tail)(v, x + i, n - i, -INFINITY);
        for (int l = 0; l < LANES; l++)
            acc[l] += EXP(F(scaled_gap)(v[l], half_m, twice_t));
    }
    return F(lanes_sum)(acc);
}

/*
 * One read of a row: its maximum m (NaN-propagating) and, when m is finite,
 * s = sum exp((x - m) * t). Each chunk is scanned for its maximum, then summed
 * against the running maximum while it is still in L1.
 */
static void F(online_max_sum)(const REAL *x, int64_t n, REAL t, REAL *max_out,
                              double *sum_out)
{
    REAL m = -INFINITY;
    double s = 0.0;
    for (int64_t start = 0; start < n; start += CHUNK) {
        int64_t len = n - start < CHUNK ? n - start : CHUNK;
        REAL chunk_max = F(row_max)(x + start, len);
        if (chunk_max != chunk_max) {
            m = chunk_max;
            break; /* NaN decides the whole row */
        }
        if (chunk_max > m) {
            s *= exp(((double)m - (double)chunk_max) * (double)t);
            m = chunk_max;
        }
        if (F(is_finite)(m))
            s += F(chunk_sum_exp)(x + start, len, m, t);
    }
    *max_out = m;
    *sum_out = s;
}

/* Sum of a(x)*b(x) products or plain sums, accumulated per chunk into a double. */
static double F(row_dot)(const REAL *a, const REAL *b, int64_t n)
{
    double total = 0.0;
    REAL acc[LANES], va[LANES], vb[LANES];
    for (int64_t start = 0; start < n; start += CHUNK) {
        int64_t end = n - start < CHUNK ? n : start + CHUNK;
        for (int l = 0; l < LANES; l++)
            acc[l] = 0;
        int64_t i = start;
        for (; i + LANES <= end; i += LANES)
            for (int l = 0; l < LANES; l++)
                acc[l] += a[i + l] * b[i + l];
        if (i < end) {
            F(load_tail)(va, a + i, end - i, 0);
            F(load_tail)(vb, b + i, end - i, 0);
            for (int l = 0; l < LANES; l++)
                acc[l] += va[l] * vb[l];
        }
        total += F(lanes_sum)(acc);
    }
    return total;
}

static double F(row_sum)(const REAL *a, int64_t n)
{
    double total = 0.0;
    REAL acc[LANES], v[LANES];
    for (int64_t start = 0; start < n; start += CHUNK) {
        int64_t end = n - start < CHUNK ? n : start + CHUNK;
        for (int l = 0; l < LANES; l++)
            acc[l] = 0;
        int64_t i = start;
        for (; i + LANES <= end; i += LANES)
            for (int l = 0; l < LANES; l++)
                acc[l] += a[i + l];
        if (i < end) {
            F(load_tail)(v, a + i, end - i, 0);
            for (int l = 0; l < LANES; l++)
                acc[l] += v[l];
        }
        total += F(lanes_sum)(acc);
    }
    return total;
}

/* ------------------------------------------------------------------ */
/* Row maps (out may be x)                                             */
/* ------------------------------------------------------------------ */

/* out = exp((x - m) * t); returns the sum of out, per chunk in double. */
static double F(exp_store_sum)(const REAL *x, REAL *out, int64_t n, REAL m, REAL t)
{
    double total = 0.0;
    REAL acc[LANES], v[LANES], half_m = m * (REAL)0.5, twice_t = 2 * t;
    for (int64_t start = 0; start < n; start += CHUNK) {
        int64_t end = n - start < CHUNK ? n : start + CHUNK;
        for (int l = 0; l < LANES; l++)
            acc[l] = 0;
        int64_t i = start;
        for (; i + LANES <= end; i += LANES) {
            for (int l = 0; l < LANES; l++)
                v[l] = EXP(F(scaled_gap)(x[i + l], half_m, twice_t));
            for (int l = 0; l < LANES; l++) {
                acc[l] += v[l];
                out[i + l] = v[l];
            }
        }
        if (i < end) {
            F(load_tail)(v, x + i, end - i, -INFINITY);
            for (int l = 0; l < LANES; l++) {
                v[l] = EXP(F(scaled_gap)(v[l], half_m, twice_t));
                acc[l] += v[l];
            }
            F(store_tail)(out + i, v, end - i);
        }
        total += F(lanes_sum)(acc);
    }
    return total;
}

static void F(scale_in_place)(REAL *out, int64_t n, REAL c)
{
    for (int64_t i = 0; i < n; i++)
        out[i] *= c;
}

/* out = (x - m) * t - c */
static void F(shift_store)(const REAL *x, REAL *out, int64_t n, REAL m, REAL t, REAL c)
{
    REAL v[LANES], half_m = m * (REAL)0.5, twice_t = 2 * t;
    int64_t i = 0;
    for (; i + LANES <= n; i += LANES) {
        for (int l = 0; l < LANES; l++)
            v[l] = F(scaled_gap)(x[i + l], half_m, twice_t) - c;
        for (int l = 0; l < LANES; l++)
            out[i + l] = v[l];
    }
    if (i < n) {
        F(load_tail)(v, x + i, n - i, 0);
        for (int l = 0; l < LANES; l++)
            v[l] = F(scaled_gap)(v[l], half_m, twice_t) - c;
        F(store_tail)(out + i, v, n - i);
    }
}

/* ------------------------------------------------------------------ */
/* Short rows: a tile of TILE_ROWS rows with lanes spanning rows       */
/* ------------------------------------------------------------------ */

/* tile[j][r] = x[r * stride + j]; rows past `rows` are zero. */
static void F(tile_load)(REAL tile[][TILE_ROWS], const REAL *x, int64_t stride, int64_t rows,
                         int64_t cols)
{
    for (int64_t r = 0; r < rows; r++) {
        const REAL *row = x + r * stride;
        for (int64_t j = 0; j < cols; j++)
            tile[j][r] = row[j];
    }
    for (int64_t j = 0; j < cols; j++)
        for (int64_t r = rows; r < TILE_ROWS; r++)
            tile[j][r] = 0;
}

static void F(tile_store)(REAL *out, int64_t stride, REAL tile[][TILE_ROWS], int64_t rows,
                          int64_t cols)
{
    for (int64_t r = 0; r < rows; r++) {
        REAL *row = out + r * stride;
        for (int64_t j = 0; j < cols; j++)
            row[j] = tile[j][r];
    }
}

/* Per-row (lane) maximum of a tile. */
static void F(tile_max)(REAL tile[][TILE_ROWS], int64_t cols, REAL *m)
{
    for (int l = 0; l < TILE_ROWS; l++)
        m[l] = -INFINITY;
    for (int64_t j = 0; j < cols; j++)
        for (int l = 0; l < TILE_ROWS; l++)
            m[l] = F(nan_max)(m[l], tile[j][l]);
}

/* Per-row sum of exp((tile - m) * t); with store, the exponentials replace the tile. */
static void F(tile_sum_exp)(REAL tile[][TILE_ROWS], int64_t cols, const REAL *m, REAL t,
                            REAL *s, int store)
{
    REAL half_m[TILE_ROWS], twice_t = 2 * t;
    for (int l = 0; l < TILE_ROWS; l++) {
        s[l] = 0;
        half_m[l] = m[l] * (REAL)0.5;
    }
    for (int64_t j = 0; j < cols; j++) {
        REAL e[TILE_ROWS];
        for (int l = 0; l < TILE_ROWS; l++) {
            e[l] = EXP(F(scaled_gap)(tile[j][l], half_m[l], twice_t));
            s[l] += e[l];
        }
        if (store)
            for (int l = 0; l < TILE_ROWS; l++)
                tile[j][l] = e[l];
    }
}

static void F(softmax_short)(const REAL *x, int64_t x_stride, REAL *out, int64_t out_stride,
                             int64_t rows, int64_t cols, REAL t)
{
    REAL tile[SHORT_COLS][TILE_ROWS], m[TILE_ROWS], s[TILE_ROWS];
    for (int64_t r0 = 0; r0 < rows; r0 += TILE_ROWS) {
        int64_t n = rows - r0 < TILE_ROWS ? rows - r0 : TILE_ROWS;
        F(tile_load)(tile, x + r0 * x_stride, x_stride, n, cols);
        F(tile_max)(tile, cols, m);
        F(tile_sum_exp)(tile, cols, m, t, s, 1);
        for (int l = 0; l < TILE_ROWS; l++)
            s[l] = 1 / s[l];
        for (int64_t j = 0; j < cols; j++)
            for (int l = 0; l < TILE_ROWS; l++)
                tile[j][l] *= s[l];
        F(tile_store)(out + r0 * out_stride, out_stride, tile, n, cols);
    }
}

static void F(log_softmax_short)(const REAL *x, int64_t x_stride, REAL *out,
                                 int64_t out_stride, int64_t rows, int64_t cols, REAL t)
{
    REAL tile[SHORT_COLS][TILE_ROWS], m[TILE_ROWS], s[TILE_ROWS];
    for (int64_t r0 = 0; r0 < rows; r0 += TILE_ROWS) {
        int64_t n = rows - r0 < TILE_ROWS ? rows - r0 : TILE_ROWS;
        F(tile_load)(tile, x + r0 * x_stride, x_stride, n, cols);
        F(tile_max)(tile, cols, m);
        F(tile_sum_exp)(tile, cols, m, t, s, 0);
        for (int l = 0; l < TILE_ROWS; l++) {
            s[l] = LANE_LOG(s[l]);
            m[l] *= (REAL)0.5;
        }
        for (int64_t j = 0; j < cols; j++)
            for (int l = 0; l < TILE_ROWS; l++)
                tile[j][l] = F(scaled_gap)(tile[j][l], m[l], 2 * t) - s[l];
        F(tile_store)(out + r0 * out_stride, out_stride, tile, n, cols);
    }
}

static void F(logsumexp_short)(const REAL *x, int64_t x_stride, REAL *out, int64_t rows,
                               int64_t cols)
{
    REAL tile[SHORT_COLS][TILE_ROWS], m[TILE_ROWS], s[TILE_ROWS];
    for (int64_t r0 = 0; r0 < rows; r0 += TILE_ROWS) {
        int64_t n = rows - r0 < TILE_ROWS ? rows - r0 : TILE_ROWS;
        F(tile_load)(tile, x + r0 * x_stride, x_stride, n, cols);
        F(tile_max)(tile, cols, m);
        F(tile_sum_exp)(tile, cols, m, 1, s, 0);
        for (int l = 0; l < TILE_ROWS; l++) {
            REAL lse = m[l] + LANE_LOG(s[l]);
            s[l] = F(is_finite)(m[l]) ? lse : m[l];
        }
        for (int64_t l = 0; l < n; l++)
            out[r0 + l] = s[l];
    }
}

/* ------------------------------------------------------------------ */
/* softmax, log_softmax, logsumexp                                     */
/* ------------------------------------------------------------------ */

static void F(softmax_row)(const REAL *x, REAL *out, int64_t n, REAL t)
{
    REAL m = F(row_max)(x, n);
    if (!F(is_finite)(m)) {
        F(fill)(out, n, NAN);
        return;
    }
    double s = F(exp_store_sum)(x, out, n, m, t);
    F(scale_in_place)(out, n, (REAL)(1.0 / s));
}

static void F(softmax)(const REAL *x, int64_t x_stride, REAL *out, int64_t out_stride,
                       int64_t rows, int64_t cols, double inv_temperature)
{
    REAL t = (REAL)inv_temperature;
    if (cols <= SHORT_COLS) {
        F(softmax_short)(x, x_stride, out, out_stride, rows, cols, t);
        return;
    }
    for (int64_t r = 0; r < rows; r++)
        F(softmax_row)(x + r * x_stride, out + r * out_stride, cols, t);
}

static void F(log_softmax)(const REAL *x, int64_t x_stride, REAL *out, int64_t out_stride,
                           int64_t rows, int64_t cols, double inv_temperature)
{
    REAL t = (REAL)inv_temperature;
    if (cols <= SHORT_COLS) {
        F(log_softmax_short)(x, x_stride, out, out_stride, rows, cols, t);
        return;
    }
    for (int64_t r = 0; r < rows; r++) {
        const REAL *row = x + r * x_stride;
        REAL *dest = out + r * out_stride;
        REAL m;
        double s;
        F(online_max_sum)(row, cols, t, &m, &s);
        if (!F(is_finite)(m))
            F(fill)(dest, cols, NAN);
        else
            F(shift_store)(row, dest, cols, m, t, (REAL)log(s));
    }
}

static void F(logsumexp)(const REAL *x, int64_t x_stride, REAL *out, int64_t rows,
                         int64_t cols)
{
    if (cols <= SHORT_COLS) {
        F(logsumexp_short)(x, x_stride, out, rows, cols);
        return;
    }
    for (int64_t r = 0; r < rows; r++) {
        REAL m;
        double s;
        F(online_max_sum)(x + r * x_stride, cols, 1, &m, &s);
        out[r] = F(is_finite)(m) ? (REAL)((double)m + log(s)) : m;
    }
}

/* ------------------------------------------------------------------ */
/* Backward passes                                                     */
/* ------------------------------------------------------------------ */

static void F(softmax_backward)(const REAL *grad, int64_t grad_stride, const REAL *y,
                                int64_t y_stride, REAL *out, int64_t out_stride, int64_t rows,
                                int64_t cols)
{
    REAL vg[LANES], vy[LANES];
    for (int64_t r = 0; r < rows; r++) {
        const REAL *g = grad + r * grad_stride, *p = y + r * y_stride;
        REAL *dest = out + r * out_stride;
        REAL dot = (REAL)F(row_dot)(g, p, cols);
        int64_t i = 0;
        for (; i + LANES <= cols; i += LANES) {
            for (int l = 0; l < LANES; l++)
                vg[l] = p[i + l] * (g[i + l] - dot);
            for (int l = 0; l < LANES; l++)
                dest[i + l] = vg[l];
        }
        if (i < cols) {
            F(load_tail)(vg, g + i, cols - i, 0);
            F(load_tail)(vy, p + i, cols - i, 0);
            for (int l = 0; l < LANES; l++)
                vg[l] = vy[l] * (vg[l] - dot);
            F(store_tail)(dest + i, vg, cols - i);
        }
    }
}

static void F(log_softmax_backward)(const REAL *grad, int64_t grad_stride, const REAL *logp,
                                    int64_t logp_stride, REAL *out, int64_t out_stride,
                                    int64_t rows, int64_t cols)
{
    REAL vg[LANES], vl[LANES];
    for (int64_t r = 0; r < rows; r++) {
        const REAL *g = grad + r * grad_stride, *lp = logp + r * logp_stride;
        REAL *dest = out + r * out_stride;
        REAL total = (REAL)F(row_sum)(g, cols);
        int64_t i = 0;
        for (; i + LANES <= cols; i += LANES) {
            for (int l = 0; l < LANES; l++)
                vg[l] = g[i + l] - EXP(lp[i + l]) * total;
            for (int l = 0; l < LANES; l++)
                dest[i + l] = vg[l];
        }
        if (i < cols) {
            F(load_tail)(vg, g + i, cols - i, 0);
            F(load_tail)(vl, lp + i, cols - i, 0);
            for (int l = 0; l < LANES; l++)
                vg[l] = vg[l] - EXP(vl[l]) * total;
            F(store_tail)(dest + i, vg, cols - i);
        }
    }
}

/* ------------------------------------------------------------------ */
/* Cross-entropy                                                       */
/* ------------------------------------------------------------------ */

/*
 * sum_j w[j] * (m - z[j]) (w NULL: all ones) for the row maximum m, so the
 * terms are >= 0. They are summed scaled by GAP_SCALE (exact), which keeps
 * the float partial sums finite even for logits near the largest float.
 */
static double F(ce_smooth_sum)(const REAL *z, const REAL *w, int64_t n, REAL m)
{
    double total = 0.0;
    REAL acc[LANES], vz[LANES], vw[LANES], scaled_m = m * GAP_SCALE;
    for (int64_t start = 0; start < n; start += CHUNK) {
        int64_t end = n - start < CHUNK ? n : start + CHUNK;
        for (int l = 0; l < LANES; l++)
            acc[l] = 0;
        int64_t i = start;
        if (w) {
            for (; i + LANES <= end; i += LANES)
                for (int l = 0; l < LANES; l++)
                    acc[l] += w[i + l] * (scaled_m - z[i + l] * GAP_SCALE);
        } else {
            for (; i + LANES <= end; i += LANES)
                for (int l = 0; l < LANES; l++)
                    acc[l] += scaled_m - z[i + l] * GAP_SCALE;
        }
        if (i < end) {
            F(load_tail)(vz, z + i, end - i, m);
            if (w)
                F(load_tail)(vw, w + i, end - i, 0);
            for (int l = 0; l < LANES; l++)
                acc[l] += (w ? vw[l] : 1) * (scaled_m - vz[l] * GAP_SCALE);
        }
        total += F(lanes_sum)(acc);
    }
    return total / GAP_SCALE;
}

/* g = a * exp(z - m) - b * w (w NULL: all ones). */
static void F(ce_grad_store)(const REAL *z, const REAL *w, REAL *g, int64_t n, REAL m, REAL a,
                             REAL b)
{
    REAL v[LANES], vw[LANES];
    int64_t i = 0;
    if (w) {
        for (; i + LANES <= n; i += LANES) {
            for (int l = 0; l < LANES; l++)
                v[l] = a * EXP(z[i + l] - m) - b * w[i + l];
            for (int l = 0; l < LANES; l++)
                g[i + l] = v[l];
        }
    } else {
        for (; i + LANES <= n; i += LANES) {
            for (int l = 0; l < LANES; l++)
                v[l] = a * EXP(z[i + l] - m) - b;
            for (int l = 0; l < LANES; l++)
                g[i + l] = v[l];
        }
    }
    if (i < n) {
        F(load_tail)(v, z + i, n - i, 0);
        if (w)
            F(load_tail)(vw, w + i, n - i, 0);
        for (int l = 0; l < LANES; l++)
            v[l] = a * EXP(v[l] - m) - b * (w ? vw[l] : 1);
        F(store_tail)(g + i, v, n - i);
    }
}

static double F(weight_total)(const REAL *w, int64_t n)
{
    return w ? F(row_sum)(w, n) : (double)n;
}

/*
 * Loss and gradient of one row against class y (see fastsoftmax.h).
 * Everything is taken relative to the row maximum m, so lse - z[j] is
 * log(s) + (m - z[j]) with both parts computed without cancellation.
 */
static void F(ce_row)(const REAL *z, int64_t y, const REAL *w, double w_total, REAL *loss,
                      REAL *g, int64_t n, const fs_ce_options *o)
{
    REAL m;
    double s;
    F(online_max_sum)(z, n, 1, &m, &s);
    if (!F(is_finite)(m)) {
        /* a NaN softmax: the formulas give NaN everywhere (lse is not finite) */
        *loss = NAN;
        if (g)
            F(fill)(g, n, NAN);
        return;
    }
    double eps = o->label_smoothing, log_s = log(s), lse = (double)m + log_s;
    double w_y = w ? (double)w[y] : 1.0;
    double z_y = (double)z[y];
    double total = (1.0 - eps) * w_y * (log_s + ((double)m - z_y));
    if (eps > 0)
        total += eps / (double)n * (log_s * w_total + F(ce_smooth_sum)(z, w, n, m));
    total += o->z_loss * lse * lse;
    *loss = (REAL)total;
    if (!g)
        return;
    double coeff = (1.0 - eps) * w_y + eps / (double)n * w_total + 2.0 * o->z_loss * lse;
    double a = o->grad_scale * coeff / s;
    double b = o->grad_scale * eps / (double)n;
    F(ce_grad_store)(z, w, g, n, m, (REAL)a, (REAL)b);
    /* the target's entry in double: it holds the large cancellation p_y - 1 */
    g[y] = (REAL)(a * exp(z_y - (double)m) - b * w_y - o->grad_scale * (1.0 - eps) * w_y);
}

static void F(cross_entropy)(const REAL *logits, int64_t logits_stride, const int64_t *target,
                             const REAL *weight, REAL *loss, REAL *grad, int64_t grad_stride,
                             int64_t rows, int64_t cols, const fs_ce_options *o)
{
    double w_total = F(weight_total)(weight, cols);
    for (int64_t r = 0; r < rows; r++) {
        REAL *g = grad ? grad + r * grad_stride : NULL;
        if (target[r] == o->ignore_index) {
            loss[r] = 0;
            if (g)
                F(fill)(g, cols, 0);
            continue;
        }
        F(ce_row)(logits + r * logits_stride, target[r], weight, w_total, loss + r, g, cols, o);
    }
}

/*
 * Probability targets: with q = (1 - eps) t + eps / n, returns
 * sum_j w[j] q[j] and stores into *weighted_gap sum_j w[j] q[j] (m - z[j])
 * (summed scaled, as in ce_smooth_sum).
 */
static double F(ce_probs_sums)(const REAL *z, const REAL *t, const REAL *w, int64_t n, REAL m,
                               REAL keep, REAL spread, double *weighted_gap)
{
    double total_q = 0.0, total_gap = 0.0;
    REAL acc_q[LANES], acc_gap[LANES], vz[LANES], vt[LANES], vw[LANES];
    REAL scaled_m = m * GAP_SCALE;
    for (int64_t start = 0; start < n; start += CHUNK) {
        int64_t end = n - start < CHUNK ? n : start + CHUNK;
        for (int l = 0; l < LANES; l++)
            acc_q[l] = acc_gap[l] = 0;
        int64_t i = start;
        for (; i + LANES <= end; i += LANES)
            for (int l = 0; l < LANES; l++) {
                REAL q = (keep * t[i + l] + spread) * (w ? w[i + l] : 1);
                acc_q[l] += q;
                acc_gap[l] += q * (scaled_m - z[i + l] * GAP_SCALE);
            }
        if (i < end) {
            F(load_tail)(vz, z + i, end - i, m);
            F(load_tail)(vt, t + i, end - i, 0);
            F(load_tail)(vw, w ? w + i : vt, w ? end - i : 0, 1);
            for (int l = 0; l < LANES; l++) {
                REAL q = (keep * vt[l] + spread) * vw[l];
                q = l < end - i ? q : 0;
                acc_q[l] += q;
                acc_gap[l] += q * (scaled_m - vz[l] * GAP_SCALE);
            }
        }
        total_q += F(lanes_sum)(acc_q);
        total_gap += F(lanes_sum)(acc_gap);
    }
    *weighted_gap = total_gap / GAP_SCALE;
    return total_q;
}

/* g = a * exp(z - m) - c * w * ((1 - eps) t + eps / n). */
static void F(ce_probs_grad_store)(const REAL *z, const REAL *t, const REAL *w, REAL *g,
                                   int64_t n, REAL m, REAL a, REAL c, REAL keep, REAL spread)
{
    REAL v[LANES], vz[LANES], vt[LANES], vw[LANES];
    int64_t i = 0;
    for (; i + LANES <= n; i += LANES) {
        for (int l = 0; l < LANES; l++)
            v[l] = a * EXP(z[i + l] - m) - c * (keep * t[i + l] + spread) * (w ? w[i + l] : 1);
        for (int l = 0; l < LANES; l++)
            g[i + l] = v[l];
    }
    if (i < n) {
        F(load_tail)(vz, z + i, n - i, 0);
        F(load_tail)(vt, t + i, n - i, 0);
        F(load_tail)(vw, w ? w + i : vt, w ? n - i : 0, 1);
        for (int l = 0; l < LANES; l++)
            v[l] = a * EXP(vz[l] - m) - c * (keep * vt[l] + spread) * vw[l];
        F(store_tail)(g + i, v, n - i);
    }
}

static void F(cross_entropy_probs)(const REAL *logits, int64_t logits_stride,
                                   const REAL *target, int64_t target_stride,
                                   const REAL *weight, REAL *loss, REAL *grad,
                                   int64_t grad_stride, int64_t rows, int64_t cols,
                                   const fs_ce_options *o)
{
    double eps = o->label_smoothing;
    REAL keep = (REAL)(1.0 - eps), spread = (REAL)(eps / (double)cols);
    for (int64_t r = 0; r < rows; r++) {
        const REAL *z = logits + r * logits_stride, *t = target + r * target_stride;
        REAL *g = grad ? grad + r * grad_stride : NULL;
        REAL m;
        double s, gap;
        F(online_max_sum)(z, cols, 1, &m, &s);
        if (!F(is_finite)(m)) {
            loss[r] = NAN;
            if (g)
                F(fill)(g, cols, NAN);
            continue;
        }
        double log_s = log(s), lse = (double)m + log_s;
        double total_q = F(ce_probs_sums)(z, t, weight, cols, m, keep, spread, &gap);
        loss[r] = (REAL)(log_s * total_q + gap + o->z_loss * lse * lse);
        if (!g)
            continue;
        double a = o->grad_scale * (total_q + 2.0 * o->z_loss * lse) / s;
        F(ce_probs_grad_store)(z, t, weight, g, cols, m, (REAL)a, (REAL)o->grad_scale, keep,
                               spread);
    }
}

/* ------------------------------------------------------------------ */
/* Top-k                                                               */
/* ------------------------------------------------------------------ */

/* Heap order: the root is the worst kept entry (lowest logit, then highest index). */
static inline int F(worse)(REAL va, int64_t ia, REAL vb, int64_t ib)
{
    return va < vb || (va == vb && ia > ib);
}

static void F(heap_sift_down)(REAL *vals, int64_t *index, int64_t size, int64_t pos, REAL v,
                              int64_t i)
{
    for (;;) {
        int64_t child = 2 * pos + 1;
        if (child >= size)
            break;
        if (child + 1 < size &&
            F(worse)(vals[child + 1], index[child + 1], vals[child], index[child]))
            child++;
        if (!F(worse)(vals[child], index[child], v, i))
            break;
        vals[pos] = vals[child];
        index[pos] = index[child];
        pos = child;
    }
    vals[pos] = v;
    index[pos] = i;
}

static void F(heap_push)(REAL *vals, int64_t *index, int64_t size, REAL v, int64_t i)
{
    int64_t pos = size;
    while (pos > 0) {
        int64_t parent = (pos - 1) / 2;
        if (!F(worse)(v, i, vals[parent], index[parent]))
            break;
        vals[pos] = vals[parent];
        index[pos] = index[parent];
        pos = parent;
    }
    vals[pos] = v;
    index[pos] = i;
}

/*
 * The k best logits of one row kept in a heap in the output row itself while
 * the online max/sum runs over the same chunks; then sorted best first and
 * turned into probabilities.
 */
static void F(topk_row)(const REAL *x, int64_t n, REAL t, REAL *vals, int64_t *index,
                        int64_t k)
{
    REAL m = -INFINITY;
    double s = 0.0;
    int64_t kept = 0;
    for (int64_t start = 0; start < n; start += CHUNK) {
        int64_t len = n - start < CHUNK ? n - start : CHUNK;
        REAL chunk_max = F(row_max)(x + start, len);
        if (chunk_max != chunk_max) {
            m = chunk_max;
            break;
        }
        if (chunk_max > m) {
            s *= exp(((double)m - (double)chunk_max) * (double)t);
            m = chunk_max;
        }
        if (F(is_finite)(m))
            s += F(chunk_sum_exp)(x + start, len, m, t);
        if (kept == k && !(chunk_max > vals[0]))
            continue; /* nothing in this chunk beats the worst kept logit */
        for (int64_t j = start; j < start + len; j++) {
            if (kept < k)
                F(heap_push)(vals, index, kept++, x[j], j);
            else if (x[j] > vals[0])
                F(heap_sift_down)(vals, index, k, 0, x[j], j);
        }
    }
    if (!F(is_finite)(m)) {
        for (int64_t q = 0; q < k; q++) {
            vals[q] = NAN;
            index[q] = q;
        }
        return;
    }
    /* heap sort: moving the worst to the back leaves the best first */
    for (int64_t end = k - 1; end > 0; end--) {
        REAL v = vals[end];
        int64_t i = index[end];
        vals[end] = vals[0];
        index[end] = index[0];
        F(heap_sift_down)(vals, index, end, 0, v, i);
    }
    for (int64_t q = 0; q < k; q++)
        vals[q] = (REAL)(exp(((double)vals[q] - (double)m) * (double)t) / s);
}

static void F(softmax_topk)(const REAL *x, int64_t x_stride, double inv_temperature,
                            REAL *probs, int64_t probs_stride, int64_t *index,
                            int64_t index_stride, int64_t rows, int64_t cols, int64_t k)
{
    REAL t = (REAL)inv_temperature;
    for (int64_t r = 0; r < rows; r++)
        F(topk_row)(x + r * x_stride, cols, t, probs + r * probs_stride,
                    index + r * index_stride, k);
}

/* ------------------------------------------------------------------ */
/* Element-wise exp (for accuracy tests)                               */
/* ------------------------------------------------------------------ */

static void F(exp_map)(const REAL *x, REAL *out, int64_t n)
{
    REAL v[LANES];
    int64_t i = 0;
    for (; i + LANES <= n; i += LANES) {
        for (int l = 0; l < LANES; l++)
            v[l] = EXP(x[i + l]);
        for (int l = 0; l < LANES; l++)
            out[i + l] = v[l];
    }
    for (; i < n; i++)
        out[i] = EXP(x[i]);
}

#undef FS_CAT_
#undef FS_CAT
#undef F
#undef LANES
#undef CHUNK
#undef SHORT_COLS
#undef TILE_ROWS
#undef GAP_SCALE
