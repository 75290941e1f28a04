/*
 * Type-generic kernel bodies. fs_instantiate.h includes this file once for
 * float and once for double, inside a translation unit compiled for one
 * instruction set; it defines before each inclusion:
 *   REAL             the element type
 *   REAL_TINY        its smallest positive (subnormal) value
 *   NEXT_DOWN(x)     the REAL just below x > 0
 *   SFX              the type suffix of every name here (f32 or f64)
 *   EXP(x)           the vectorizable exp of fs_math.h for REAL and x <= 0
 *   EXP_ANY(x)       the same for any x
 *   LANE_LOG(x)      log of REAL used lane by lane in the short-row kernels
 *   TRANSPOSE8       1 where REAL is float and fs_transpose.h has 8 x 8
 *                    transposes for this instruction set, else 0
 *   REAL_BYTES       sizeof(REAL), for the preprocessor
 *   VECTOR_ROWS      1 where the compiler has vector extensions
 *                    (FS_HAVE_VEC_EXP) and a register holds at least four
 *                    REAL, else 0; then
 *   VECTOR_EXP(v)    EXP on a whole SIMD register of REAL
 *   VECTOR_GREATER(a, b)  per lane a > b ? a : b (b where either is NaN)
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
 * Medium rows (at most MEDIUM_COLS, where VECTOR_ROWS) are written with
 * explicit SIMD vectors, which GCC keeps in registers with the exp's
 * constants hoisted out of the row loop.
 *
 * Short rows (at most SHORT_COLS) are transposed, TILE_ROWS at a time, into a
 * stack tile whose SIMD lanes span rows, so one vector instruction serves many
 * rows; rows of 8 to 16 float32 classes skip the tile where vectors are 256
 * bits wide, eight at a time kept in registers (softmax and log_softmax).
 * Longer rows are reduced with an online maximum and sum: a chunk's maximum,
 * then its exponentials against the running maximum, the sum rescaled when
 * the maximum grows, so the row is read from memory once.
 *
 * Special rows. Maxima skip NaN (one maxps each); a NaN still makes the sum
 * of exponentials NaN, so a row is usable exactly when its maximum is finite
 * and its sum is not NaN. The others get the contract's NaN row; logsumexp
 * looks for a NaN only in rows whose maximum is infinite.
 */

#define FS_CAT_(a, b) a##_##b
#define FS_CAT(a, b) FS_CAT_(a, b)
#define F(name) FS_CAT(name, SFX)

#define VEC (FS_VECTOR_BYTES / (int)sizeof(REAL))
/*
 * Lanes of the main blocks: four SIMD registers, and at least 32 elements.
 * GCC unrolls loops of 16 or fewer iterations completely and then often fails
 * to vectorize the exp; longer loops go through its loop vectorizer.
 */
#define LANES (4 * VEC < 32 ? 32 : 4 * VEC)
#define CHUNK 1024
#define SHORT_COLS 64
/* rows per tile: eight SIMD registers of lanes, within a 16 KiB stack tile */
#define TILE_ROWS (2 * LANES < 16384 / (SHORT_COLS * (int)sizeof(REAL)) \
                       ? 2 * LANES                                         \
                       : 16384 / (SHORT_COLS * (int)sizeof(REAL)))
#define GAP_SCALE ((REAL)(1.0 / 2048)) /* keeps sums of up to CHUNK gaps (m - z) finite */

/* ------------------------------------------------------------------ */
/* Scalars and blocks                                                  */
/* ------------------------------------------------------------------ */

/* max(a, b) for a not NaN; a NaN b is skipped (one maxps instruction). */
static inline REAL F(max_of)(REAL a, REAL b)
{
    return b > a ? b : a;
}

static inline int F(is_finite)(REAL v)
{
    return v - v == 0;
}

/*
 * The inverse temperature t > 0, split as hi + lo with hi = t rounded down to
 * REAL, so that a product with t rounds once: the error of a logit gap times
 * t stays within the contract's two half-ulps of the exponent's argument.
 * lo is never 0 (at least the smallest subnormal, a relative change far
 * below any rounding), so a -inf gap times hi and lo is -inf, never NaN.
 */
typedef struct {
    REAL hi, lo;
    int one; /* t == 1: the kernels use x - m itself */
} F(factor);

static inline F(factor) F(factor_of)(double t)
{
    F(factor) f;
    f.hi = (REAL)t;
    if ((double)f.hi > t)
        f.hi = NEXT_DOWN(f.hi);
    f.lo = (REAL)(t - (double)f.hi);
    f.lo = f.lo > 0 ? f.lo : REAL_TINY;
    f.one = t == 1;
    return f;
}

/* t = 1, as a constant: a loop specialized with it computes x - m itself. */
static inline F(factor) F(unit)(void)
{
    F(factor) f = {1, REAL_TINY, 1};
    return f;
}

static inline int F(is_one)(F(factor) t)
{
    return t.one;
}

static inline double F(factor_value)(F(factor) t)
{
    return (double)t.hi + (double)t.lo;
}

/*
 * (x - m) * t - c, computed as d * 2t - c with d = x/2 - m/2: the same
 * roundings as x - m (halving is exact), but d cannot overflow when x and m
 * are huge with opposite signs and t < 1. Callers pass half_m = m / 2. The
 * terms are grouped so that FMA contraction leaves one rounding after d's.
 * With t = 1 the kernels use x - m, which overflows only where the true
 * result does.
 */
static inline REAL F(scaled_gap)(REAL x, REAL half_m, F(factor) t, REAL c)
{
    REAL d = x * (REAL)0.5 - half_m;
    return d * (2 * t.hi) + (d * (2 * t.lo) - c);
}

/* v = the first n (< LANES) elements of x, padded to LANES with `pad`. */
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

#if defined(__GNUC__) || defined(__clang__)
/* One SIMD register of REAL, for the horizontal folds below. */
typedef REAL F(vec) __attribute__((vector_size(FS_VECTOR_BYTES)));
/* the same, read from any REAL array (element alignment, aliasing allowed) */
typedef REAL F(vec_in_array)
    __attribute__((vector_size(FS_VECTOR_BYTES), aligned(sizeof(REAL)), may_alias));

/* The LANES partial results folded into one vector by `op`, pairwise. */
#define FS_FOLD_LANES(acc, op)                                               \
    F(vec) part[LANES / VEC];                                                \
    for (int k = 0; k < LANES / VEC; k++)                                    \
        part[k] = *(const F(vec_in_array) *)(acc + k * VEC);                 \
    for (int w = LANES / VEC / 2; w > 0; w /= 2)                             \
        for (int k = 0; k < w; k++)                                          \
            part[k] = op(part[k], part[k + w]);                              \
    REAL folded[VEC];                                                        \
    memcpy(folded, &part[0], sizeof folded)
#define FS_VEC_ADD(a, b) ((a) + (b))
/* per lane b > a ? b : a, as bit masks (C has no vector select): a NaN b is skipped */
#define FS_VEC_MAX(a, b) F(vec_max)(a, b)
typedef __typeof__((F(vec)){0} > (F(vec)){0}) F(vec_mask);

static inline F(vec) F(vec_max)(F(vec) a, F(vec) b)
{
#if VECTOR_ROWS /* where fs_math.h has vectors: one maxps or maxpd */
    return VECTOR_GREATER(b, a);
#else
    F(vec_mask) b_wins = b > a;
    return (F(vec))((b_wins & (F(vec_mask))b) | (~b_wins & (F(vec_mask))a));
#endif
}
#else
#define FS_FOLD_LANES(acc, op)                                               \
    for (int w = LANES / 2; w >= VEC; w /= 2)                                \
        for (int l = 0; l < w; l++)                                          \
            acc[l] = op(acc[l], acc[l + w]);                                 \
    REAL *folded = acc
#define FS_VEC_ADD(a, b) ((a) + (b))
#define FS_VEC_MAX(a, b) F(max_of)(a, b)
#endif

/*
 * Sum of the LANES partial sums: the vectors into one, then its lanes in
 * double; pairwise, so the dependent additions are log2 of their number.
 */
static inline double F(lanes_sum)(REAL *acc)
{
    FS_FOLD_LANES(acc, FS_VEC_ADD);
    double d[VEC];
    for (int l = 0; l < VEC; l++)
        d[l] = folded[l];
    for (int w = VEC / 2; w > 0; w /= 2)
        for (int l = 0; l < w; l++)
            d[l] += d[l + w];
    return d[0];
}

static inline REAL F(lanes_max)(REAL *acc)
{
    FS_FOLD_LANES(acc, FS_VEC_MAX);
    for (int w = VEC / 2; w > 0; w /= 2)
        for (int l = 0; l < w; l++)
            folded[l] = F(max_of)(folded[l], folded[l + w]);
    return folded[0];
}

#undef FS_FOLD_LANES
#undef FS_VEC_ADD
#undef FS_VEC_MAX

/* out = v for one block; streamed (non-temporal) when `stream` (out aligned). */
static inline void F(store_block)(REAL *out, const REAL *v, int stream)
{
    if (stream)
        for (int k = 0; k < LANES; k += VEC)
            STREAM(out + k, v + k);
    else
        for (int l = 0; l < LANES; l++)
            out[l] = v[l];
}

/*
 * Whether a call writing rows to out (row stride out_stride), part of an
 * output of output_bytes, streams its stores: large outputs whose every row
 * starts on a vector boundary (medium rows decide by F(streams_medium)).
 * Streaming only the rows that happen to start aligned was slower than
 * caching every store: log_softmax over 1000 classes (rows of 4000 bytes,
 * every other one aligned) 2x (Zen 4).
 */
static inline int F(streams)(const REAL *out, int64_t out_stride, int64_t output_bytes)
{
    return output_bytes >= FS_STREAM_MIN_BYTES &&
           fs_stream_aligned(out) && (out_stride * (int64_t)sizeof(REAL)) % FS_VECTOR_BYTES == 0;
}

static void F(fill)(REAL *out, int64_t n, REAL value)
{
    for (int64_t i = 0; i < n; i++)
        out[i] = value;
}

/*
 * Each operation below is written once as a *block* function over LANES
 * elements and driven the same way: whole blocks, then the last partial
 * block. Rows of at least LANES elements end with an overlapping block, the
 * last LANES elements, whose first `skip` lanes are left out of sums (maps
 * compute it before the other blocks, so it reads the input even in place,
 * and store it last: its overlap holds the values already written). Shorter
 * rows copy their elements into a local block padded with a value that
 * leaves the result alone.
 */

/* ------------------------------------------------------------------ */
/* Row reductions                                                      */
/* ------------------------------------------------------------------ */

static inline void F(max_block)(REAL *acc, const REAL *x)
{
    for (int l = 0; l < LANES; l++)
        acc[l] = F(max_of)(acc[l], x[l]);
}

/* Maximum of x[0..n), skipping NaN (-inf if there is nothing else). */
static REAL F(row_max)(const REAL *x, int64_t n)
{
    REAL acc[LANES], v[LANES];
    for (int l = 0; l < LANES; l++)
        acc[l] = -INFINITY;
    int64_t i = 0;
    for (; i + LANES <= n; i += LANES)
        F(max_block)(acc, x + i);
    if (i < n && n >= LANES) {
        F(max_block)(acc, x + n - LANES); /* overlapping: a maximum does not mind */
    } else if (i < n) {
        F(load_tail)(v, x + i, n - i, -INFINITY);
        F(max_block)(acc, v);
    }
    return F(lanes_max)(acc);
}

static inline void F(sum_exp_block)(REAL *acc, const REAL *x, REAL m, F(factor) t, int skip)
{
    if (F(is_one)(t))
        for (int l = 0; l < LANES; l++)
            acc[l] += l >= skip ? EXP(x[l] - m) : 0;
    else
        for (int l = 0; l < LANES; l++)
            acc[l] += l >= skip ? EXP(F(scaled_gap)(x[l], m * (REAL)0.5, t, 0)) : 0;
}

/* Sum of exp((x - m) * t) over at most CHUNK elements. */
static inline double F(chunk_sum_exp_at)(const REAL *x, int64_t n, REAL m, F(factor) t)
{
    REAL acc[LANES], v[LANES];
    for (int l = 0; l < LANES; l++)
        acc[l] = 0;
    int64_t i = 0;
    for (; i + LANES <= n; i += LANES)
        F(sum_exp_block)(acc, x + i, m, t, 0);
    if (i < n && n >= LANES) {
        F(sum_exp_block)(acc, x + n - LANES, m, t, (int)(LANES - (n - i)));
    } else if (i < n) {
        F(load_tail)(v, x + i, n - i, -INFINITY);
        F(sum_exp_block)(acc, v, m, t, 0);
    }
    return F(lanes_sum)(acc);
}

static double F(chunk_sum_exp)(const REAL *x, int64_t n, REAL m, F(factor) t)
{
    if (F(is_one)(t))
        return F(chunk_sum_exp_at)(x, n, m, F(unit)());
    return F(chunk_sum_exp_at)(x, n, m, t);
}

static int F(has_nan)(const REAL *x, int64_t n)
{
    int found = 0;
    for (int64_t i = 0; i < n; i++)
        found |= x[i] != x[i];
    return found;
}

/*
 * One chunk (at most CHUNK elements) of online_max_sum: its maximum, NaN
 * skipped, raises the running maximum *m (rescaling the running sum *s),
 * then its exponentials against *m are added to *s while it is still in L1.
 * Returns the chunk's maximum. Once *m is +inf nothing is summed: the
 * caller stops there, such a row being special anyway.
 */
static inline REAL F(online_chunk)(const REAL *x, int64_t len, F(factor) t, REAL *m, double *s)
{
    REAL chunk_max = F(row_max)(x, len);
    if (chunk_max > *m) {
        if (*s != 0)
            *s *= exp(((double)*m - (double)chunk_max) * F(factor_value)(t));
        *m = chunk_max;
        if (*m == INFINITY)
            return chunk_max;
    }
    if (*m > -INFINITY)
        *s += F(chunk_sum_exp)(x, len, *m, t);
    else if (F(has_nan)(x, len))
        *s = NAN; /* among -inf only, no exponential would carry it */
    return chunk_max;
}

/*
 * One read of a row: its maximum m (NaN skipped) and, when m is finite,
 * s = sum exp((x - m) * t), NaN when the row holds a NaN, a chunk at a time
 * (online_chunk). Stops at the first +inf.
 */
static void F(online_max_sum)(const REAL *x, int64_t n, F(factor) t, REAL *max_out,
                              double *sum_out)
{
    REAL m = -INFINITY;
    double s = 0.0;
    for (int64_t start = 0; start < n && m < INFINITY; start += CHUNK)
        F(online_chunk)(x + start, n - start < CHUNK ? n - start : CHUNK, t, &m, &s);
    *max_out = m;
    *sum_out = s;
}

/* Whether the row is usable: finite maximum and no NaN (a NaN makes s NaN). */
static inline int F(usable)(REAL m, double s)
{
    return F(is_finite)(m) && s == s;
}

static inline void F(dot_block)(REAL *acc, const REAL *a, const REAL *b)
{
    for (int l = 0; l < LANES; l++)
        acc[l] += a[l] * b[l];
}

/* sum a * b, per chunk into a double */
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
            F(dot_block)(acc, a + i, b + i);
        if (i < end) {
            F(load_tail)(va, a + i, end - i, 0);
            F(load_tail)(vb, b + i, end - i, 0);
            F(dot_block)(acc, va, vb);
        }
        total += F(lanes_sum)(acc);
    }
    return total;
}

static inline void F(sum_block)(REAL *acc, const REAL *a)
{
    for (int l = 0; l < LANES; l++)
        acc[l] += a[l];
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
            F(sum_block)(acc, a + i);
        if (i < end) {
            F(load_tail)(v, a + i, end - i, 0);
            F(sum_block)(acc, v);
        }
        total += F(lanes_sum)(acc);
    }
    return total;
}

/* ------------------------------------------------------------------ */
/* Row maps (out may be x: each block is read before it is written)    */
/* ------------------------------------------------------------------ */

static inline void F(exp_sum_block)(REAL *out, REAL *acc, const REAL *x, REAL m,
                                    F(factor) t, int skip)
{
    REAL v[LANES];
    if (F(is_one)(t))
        for (int l = 0; l < LANES; l++)
            v[l] = EXP(x[l] - m);
    else
        for (int l = 0; l < LANES; l++)
            v[l] = EXP(F(scaled_gap)(x[l], m * (REAL)0.5, t, 0));
    for (int l = 0; l < LANES; l++) {
        acc[l] += l >= skip ? v[l] : 0;
        out[l] = v[l];
    }
}

/* out = exp((x - m) * t); returns the sum of out, per chunk in double. */
static inline double F(exp_store_sum_at)(const REAL *x, REAL *out, int64_t n, REAL m,
                                         F(factor) t)
{
    double total = 0.0;
    REAL acc[LANES], last[LANES];
    int64_t rest = n % LANES;
    if (rest && n >= LANES) { /* the overlapping last block, before any store */
        for (int l = 0; l < LANES; l++)
            acc[l] = 0;
        F(exp_sum_block)(last, acc, x + n - LANES, m, t, (int)(LANES - rest));
        total += F(lanes_sum)(acc);
    }
    for (int64_t start = 0; start < n; start += CHUNK) {
        int64_t end = n - start < CHUNK ? n : start + CHUNK;
        for (int l = 0; l < LANES; l++)
            acc[l] = 0;
        int64_t i = start;
        for (; i + LANES <= end; i += LANES)
            F(exp_sum_block)(out + i, acc, x + i, m, t, 0);
        if (i < end && n < LANES) {
            F(load_tail)(last, x + i, end - i, -INFINITY);
            F(exp_sum_block)(last, acc, last, m, t, 0);
            F(store_tail)(out + i, last, end - i);
        }
        total += F(lanes_sum)(acc);
    }
    if (rest && n >= LANES)
        F(store_tail)(out + n - LANES, last, LANES);
    return total;
}

/* exp_store_sum_at with the test of t = 1 taken once, outside its loops */
static double F(exp_store_sum)(const REAL *x, REAL *out, int64_t n, REAL m, F(factor) t)
{
    if (F(is_one)(t))
        return F(exp_store_sum_at)(x, out, n, m, F(unit)());
    return F(exp_store_sum_at)(x, out, n, m, t);
}

static void F(scale_in_place)(REAL *out, int64_t n, REAL c)
{
    for (int64_t i = 0; i < n; i++)
        out[i] *= c;
}

/*
 * One block of a row's output: exp((x - m) * t) * c (softmax) or, when
 * log_form, (x - m) * t - c (log_softmax), computed as scaled_gap rounds it.
 */
FS_ALWAYS_INLINE void F(output_block)(REAL *out, const REAL *x, REAL m, F(factor) t, REAL c,
                                      int log_form, int stream)
{
    REAL v[LANES];
    if (F(is_one)(t) && log_form)
        for (int l = 0; l < LANES; l++)
            v[l] = (x[l] - m) - c;
    else if (F(is_one)(t))
        for (int l = 0; l < LANES; l++)
            v[l] = EXP(x[l] - m) * c;
    else if (log_form)
        for (int l = 0; l < LANES; l++)
            v[l] = F(scaled_gap)(x[l], m * (REAL)0.5, t, c);
    else
        for (int l = 0; l < LANES; l++)
            v[l] = EXP(F(scaled_gap)(x[l], m * (REAL)0.5, t, 0)) * c;
    F(store_block)(out, v, stream);
}

/* output_block over the first n (< LANES) elements of x, into out[0, n) */
FS_ALWAYS_INLINE void F(output_part)(REAL *out, const REAL *x, int64_t n, REAL m, F(factor) t,
                                     REAL c, int log_form)
{
    REAL v[LANES];
    F(load_tail)(v, x, n, -INFINITY);
    F(output_block)(v, v, m, t, c, log_form, 0);
    F(store_tail)(out, v, n);
}

/* how many of out's first n elements come before its first vector boundary */
static inline int64_t F(stream_head)(const REAL *out, int64_t n)
{
    int64_t head = (int64_t)((FS_VECTOR_BYTES - (uintptr_t)out % FS_VECTOR_BYTES) %
                             FS_VECTOR_BYTES / sizeof(REAL));
    return head < n ? head : n;
}

/*
 * out = output_block over the row (out may be x). When `stream`, out from
 * its first vector boundary on is streamed and the elements before that
 * boundary are stored plainly, so any row alignment streams.
 */
FS_ALWAYS_INLINE void F(output_store_at)(const REAL *x, REAL *out, int64_t n, REAL m,
                                         F(factor) t, REAL c, int log_form, int stream)
{
    int64_t i = 0;
    if (stream && (uintptr_t)out % sizeof(REAL) == 0) {
        i = F(stream_head)(out, n);
        if (i)
            F(output_part)(out, x, i, m, t, c, log_form);
        for (; i + LANES <= n; i += LANES)
            F(output_block)(out + i, x + i, m, t, c, log_form, 1);
    } else {
        for (; i + LANES <= n; i += LANES)
            F(output_block)(out + i, x + i, m, t, c, log_form, 0);
    }
    if (i < n)
        F(output_part)(out + i, x + i, n - i, m, t, c, log_form);
}

/* output_store_at with the tests of t = 1 and log_form taken once, outside its loops */
static void F(output_store)(const REAL *x, REAL *out, int64_t n, REAL m, F(factor) t, REAL c,
                            int log_form, int stream)
{
    if (F(is_one)(t) && log_form)
        F(output_store_at)(x, out, n, m, F(unit)(), c, 1, stream);
    else if (F(is_one)(t))
        F(output_store_at)(x, out, n, m, F(unit)(), c, 0, stream);
    else if (log_form)
        F(output_store_at)(x, out, n, m, t, c, 1, stream);
    else
        F(output_store_at)(x, out, n, m, t, c, 0, stream);
}

/*
 * softmax (log_form 0) or log_softmax (1) of one long row from one online
 * pass for its maximum and sum and one pass writing it: x read twice (the
 * second time from L2), out written once, streamed when `stream`.
 */
static void F(online_output_row)(const REAL *x, REAL *out, int64_t n, F(factor) t, int log_form,
                                 int stream)
{
    REAL m;
    double s;
    F(online_max_sum)(x, n, t, &m, &s);
    if (!F(usable)(m, s))
        F(fill)(out, n, NAN);
    else
        F(output_store)(x, out, n, m, t, (REAL)(log_form ? log(s) : 1.0 / s), log_form, stream);
}

/*
 * Whether the long rows of a call stream their output whatever their
 * alignment. Only rows of many classes gain: softmax then reads the row
 * twice and computes each exponential twice, which rows of 32000 classes
 * repay at two threads (0.32 -> 0.28 ns/element, float32, an output 16 bytes
 * off a 64-byte boundary) and rows of 2048 do not.
 */
#ifndef FS_STREAM_LONG_COLS
#define FS_STREAM_LONG_COLS 16384
#endif
static inline int F(streams_long_rows)(int64_t cols, int64_t output_bytes)
{
    return cols >= FS_STREAM_LONG_COLS && output_bytes >= FS_STREAM_MIN_BYTES;
}

/*
 * Whether log_softmax pipelines a call's long rows (log_softmax_pipelined,
 * vector builds): from the first rows past the medium ones, but float32 rows
 * of fewer than 2048 classes without AVX-512 keep the row-by-row path. C
 * harness, 2 threads, Zen 4, row by row -> pipelined, ns/element: float32
 * AVX-512 16384 x 1100 0.248 -> 0.215, 8192 x 2048 0.261 -> 0.192, 4096 x
 * 4000 0.284 -> 0.168; float32 AVX2 16384 x 1100 0.266 -> 0.275, 8192 x 2048
 * 0.262 -> 0.251; float64 AVX-512 8192 x 1100 0.58 -> 0.42, 4096 x 2048
 * 0.65 -> 0.44; float64 AVX2 16384 x 1100 0.76 -> 0.66.
 */
#ifndef FS_LOG_PIPELINE_COLS
#define FS_LOG_PIPELINE_COLS (REAL_BYTES == 4 && FS_VECTOR_BYTES < 64 ? 2048 : 1025)
#endif
static inline int F(pipelines_log_rows)(int64_t cols, int64_t output_bytes)
{
    return cols >= FS_LOG_PIPELINE_COLS && output_bytes >= FS_STREAM_MIN_BYTES;
}

/* ------------------------------------------------------------------ */
/* Medium rows: whole SIMD registers, one row at a time                */
/* ------------------------------------------------------------------ */

#if VECTOR_ROWS
/*
 * Rows of SHORT_COLS < n <= MEDIUM_COLS elements, written with explicit SIMD
 * vectors: the row's maximum, sum and output in three short loops with two
 * accumulators each, softmax's exponentials kept in the output row (or, when
 * it is streamed, in a local buffer of MEDIUM_COLS elements).
 * The two accumulators take MEDIUM_PART elements, MEDIUM_PART / (2 VEC)
 * terms per lane in REAL (8 for float32 with AVX-512), no more than the
 * blocks of the long rows do; the parts add up in double.
 *
 * A row costs little more than its exponentials only if nothing between
 * its passes goes through memory or a call: the helpers are forced inline
 * (so a constant t = 1 reaches the loops), and the maximum and the sum are
 * folded across lanes by lane swaps that leave the result in every lane.
 */
#define MEDIUM_COLS 1024
#define MEDIUM_PART 256
#define LINE_ELEMENTS (64 / (int64_t)sizeof(REAL))

#if defined(__clang__) || __GNUC__ >= 12
#define FS_SHUFFLE(v, ...) __builtin_shufflevector(v, v, __VA_ARGS__)
#else
#define FS_SHUFFLE(v, ...) __builtin_shuffle(v, (__typeof__((v) > (v))){__VA_ARGS__})
#endif
/*
 * v with each block of w lanes exchanged with its neighbour (w a power of two
 * < VEC). FS_VEC_LANES is VEC as a number the preprocessor can compare.
 */
#define FS_VEC_LANES (FS_VECTOR_BYTES / REAL_BYTES)
_Static_assert(FS_VEC_LANES == VEC, "REAL_BYTES is sizeof(REAL)");
#if FS_VEC_LANES == 16
#define FS_SWAP_LANES(v, w)                                                             \
    ((w) == 8   ? FS_SHUFFLE(v, 8, 9, 10, 11, 12, 13, 14, 15, 0, 1, 2, 3, 4, 5, 6, 7)   \
     : (w) == 4 ? FS_SHUFFLE(v, 4, 5, 6, 7, 0, 1, 2, 3, 12, 13, 14, 15, 8, 9, 10, 11)   \
     : (w) == 2 ? FS_SHUFFLE(v, 2, 3, 0, 1, 6, 7, 4, 5, 10, 11, 8, 9, 14, 15, 12, 13)   \
                : FS_SHUFFLE(v, 1, 0, 3, 2, 5, 4, 7, 6, 9, 8, 11, 10, 13, 12, 15, 14))
#elif FS_VEC_LANES == 8
#define FS_SWAP_LANES(v, w)                                                             \
    ((w) == 4   ? FS_SHUFFLE(v, 4, 5, 6, 7, 0, 1, 2, 3)                                 \
     : (w) == 2 ? FS_SHUFFLE(v, 2, 3, 0, 1, 6, 7, 4, 5)                                 \
                : FS_SHUFFLE(v, 1, 0, 3, 2, 5, 4, 7, 6))
#elif FS_VEC_LANES == 4
#define FS_SWAP_LANES(v, w) ((w) == 2 ? FS_SHUFFLE(v, 2, 3, 0, 1) : FS_SHUFFLE(v, 1, 0, 3, 2))
#else
#error "medium rows need 4, 8 or 16 lanes"
#endif

/* VEC lanes of double: the lanes of one F(vec) widened, for its sum */
typedef double F(vec_wide) __attribute__((vector_size(VEC * sizeof(double))));

FS_ALWAYS_INLINE F(vec) F(vload)(const REAL *p)
{
    return *(const F(vec_in_array) *)p;
}

FS_ALWAYS_INLINE void F(vstore)(REAL *p, F(vec) v, int stream)
{
    if (stream)
        STREAM(p, (const REAL *)&v);
    else
        *(F(vec_in_array) *)p = v;
}

FS_ALWAYS_INLINE F(vec) F(vsplat)(REAL a)
{
    F(vec) v = {0};
    return v + a;
}

/*
 * Rows whose length is not a whole number of vectors end with part of one:
 * AVX-512 reads and writes it with masked loads and stores, other builds
 * through a small local array.
 */
#if FS_X86_SIMD && FS_VECTOR_BYTES == 64
#define FS_MASKED_PARTS 1
#else
#define FS_MASKED_PARTS 0
#endif

/* the first n (0 < n < VEC) elements of x, the other lanes `pad` */
FS_ALWAYS_INLINE F(vec) F(vload_first)(const REAL *x, int64_t n, REAL pad)
{
#if FS_MASKED_PARTS && REAL_BYTES == 4
    __mmask16 first = (__mmask16)((1u << n) - 1);
    return (F(vec))_mm512_mask_loadu_ps(_mm512_set1_ps(pad), first, x);
#elif FS_MASKED_PARTS
    __mmask8 first = (__mmask8)((1u << n) - 1);
    return (F(vec))_mm512_mask_loadu_pd(_mm512_set1_pd(pad), first, x);
#else
    REAL v[VEC];
    for (int l = 0; l < VEC; l++)
        v[l] = l < n ? x[l] : pad;
    return F(vload)(v);
#endif
}

/* p[0, n) = the first n (0 < n < VEC) lanes of v */
FS_ALWAYS_INLINE void F(vstore_first)(REAL *p, F(vec) v, int64_t n)
{
#if FS_MASKED_PARTS && REAL_BYTES == 4
    _mm512_mask_storeu_ps(p, (__mmask16)((1u << n) - 1), (__m512)v);
#elif FS_MASKED_PARTS
    _mm512_mask_storeu_pd(p, (__mmask8)((1u << n) - 1), (__m512d)v);
#else
    REAL a[VEC];
    memcpy(a, &v, sizeof a);
    F(store_tail)(p, a, n);
#endif
}

/* p[0, n) = the first n (0 < n < VEC) lanes of v, in pieces of VEC / 2, ..., 2, 1 lanes */
FS_ALWAYS_INLINE void F(vstore_pieces)(REAL *p, F(vec) v, int64_t n)
{
    REAL a[VEC];
    memcpy(a, &v, sizeof a);
    int64_t i = 0;
    for (int64_t piece = VEC / 2; piece > 0; piece /= 2)
        if (n & piece) {
            memcpy(p + i, a + i, (size_t)piece * sizeof(REAL));
            i += piece;
        }
}

/* the maximum of the lanes of v (no NaN among them), in every lane */
FS_ALWAYS_INLINE F(vec) F(vmax_all)(F(vec) v)
{
    for (int w = VEC / 2; w > 0; w /= 2)
        v = F(vec_max)(v, FS_SWAP_LANES(v, w));
    return v;
}

/* the sum of the lanes of *d, pairwise (*d is overwritten) */
FS_ALWAYS_INLINE double F(wide_sum_all)(F(vec_wide) *d)
{
    for (int w = VEC / 2; w > 0; w /= 2)
        *d += FS_SWAP_LANES(*d, w);
    return (*d)[0];
}

/* the sum of the lanes of v, pairwise in double */
FS_ALWAYS_INLINE double F(vsum_all)(F(vec) v)
{
    F(vec_wide) d = __builtin_convertvector(v, F(vec_wide));
    return F(wide_sum_all)(&d);
}

/* (x - m) * t - c per lane, rounded as scaled_gap (t = 1: (x - m) - c) */
FS_ALWAYS_INLINE F(vec) F(vgap)(F(vec) x, F(vec) m, F(factor) t, REAL c)
{
    if (F(is_one)(t))
        return (x - m) - c;
    F(vec) d = x * (REAL)0.5 - m * (REAL)0.5;
    return d * (2 * t.hi) + (d * (2 * t.lo) - c);
}

/*
 * The row's maximum, NaN skipped, as a vector whose lanes' maximum it is;
 * *tail = its last n % VEC elements padded with -inf.
 */
FS_ALWAYS_INLINE F(vec) F(medium_max_lanes)(const REAL *x, int64_t n, F(vec) *tail)
{
    int64_t full = n - n % VEC, j = 0;
    F(vec) m0 = F(vsplat)(-INFINITY), m1 = m0;
    for (; j + 2 * VEC <= full; j += 2 * VEC) {
        m0 = F(vec_max)(m0, F(vload)(x + j));
        m1 = F(vec_max)(m1, F(vload)(x + j + VEC));
    }
    if (j < full)
        m0 = F(vec_max)(m0, F(vload)(x + j));
    *tail = full < n ? F(vload_first)(x + full, n - full, -INFINITY) : F(vsplat)(-INFINITY);
    return F(vec_max)(F(vec_max)(m0, m1), *tail);
}

/* the row's maximum, NaN skipped, in every lane (tail: see medium_max_lanes) */
FS_ALWAYS_INLINE F(vec) F(medium_max)(const REAL *x, int64_t n, F(vec) *tail)
{
    return F(vmax_all)(F(medium_max_lanes)(x, n, tail));
}

/*
 * Sum of exp((x - m) * t) over the row (tail: see medium_max); the
 * exponentials go to e[0, n) when e is not NULL (e may be x). When `next` is
 * not NULL, the same stretch of it (the row after this one) is prefetched
 * into L1 meanwhile, so its maximum need not wait for memory.
 */
FS_ALWAYS_INLINE F(vec) F(medium_part_sum)(const REAL *x, int64_t j, int64_t stop, F(vec) m,
                                           F(factor) t, REAL *e, const REAL *next)
{
    F(vec) s0 = F(vsplat)(0), s1 = s0;
    for (; j + 2 * VEC <= stop; j += 2 * VEC) {
        F(vec) e0 = VECTOR_EXP(F(vgap)(F(vload)(x + j), m, t, 0));
        F(vec) e1 = VECTOR_EXP(F(vgap)(F(vload)(x + j + VEC), m, t, 0));
        s0 += e0;
        s1 += e1;
        if (e) {
            F(vstore)(e + j, e0, 0);
            F(vstore)(e + j + VEC, e1, 0);
        }
        if (next)
            for (int64_t k = 0; k < 2 * VEC; k += LINE_ELEMENTS)
                __builtin_prefetch(next + j + k, 0, 3);
    }
    if (j < stop) {
        F(vec) e0 = VECTOR_EXP(F(vgap)(F(vload)(x + j), m, t, 0));
        s0 += e0;
        if (e)
            F(vstore)(e + j, e0, 0);
    }
    return s0 + s1;
}

FS_ALWAYS_INLINE double F(medium_sum_exp)(const REAL *x, int64_t n, F(vec) tail, F(vec) m,
                                          F(factor) t, REAL *e, const REAL *next)
{
    int64_t full = n - n % VEC;
    double total = 0;
    F(vec) s = F(vsplat)(0);
    for (int64_t part = 0; part < full; part += MEDIUM_PART) {
        int64_t stop = part + MEDIUM_PART < full ? part + MEDIUM_PART : full;
        if (part)
            total += F(vsum_all)(s);
        s = F(medium_part_sum)(x, part, stop, m, t, e, next);
    }
    if (full < n) { /* the -inf padding adds exact zeros */
        F(vec) last = VECTOR_EXP(F(vgap)(tail, m, t, 0));
        s += last;
        if (e)
            F(vstore_first)(e + full, last, n - full);
    }
    return total + F(vsum_all)(s);
}

/* One vector of a row's output from src[j..]: src * c, or (src - m) * t - c when log_form. */
FS_ALWAYS_INLINE F(vec) F(medium_output)(F(vec) src, F(vec) m, F(factor) t, REAL c, int log_form)
{
    return log_form ? F(vgap)(src, m, t, c) : src * c;
}

/* dest[j, stop) = medium_output(src[j, stop)) in whole vectors; returns where it stopped */
FS_ALWAYS_INLINE int64_t F(medium_store_vectors)(REAL *dest, const REAL *src, int64_t j,
                                                 int64_t stop, F(vec) m, F(factor) t, REAL c,
                                                 int log_form, int stream)
{
    for (; j + VEC <= stop; j += VEC)
        F(vstore)(dest + j, F(medium_output)(F(vload)(src + j), m, t, c, log_form), stream);
    return j;
}

/* the same for j < stop < j + VEC: one masked store, or pieces when `pieces` */
FS_ALWAYS_INLINE void F(medium_store_part)(REAL *dest, const REAL *src, int64_t j, int64_t stop,
                                           F(vec) m, F(factor) t, REAL c, int log_form, int pieces)
{
    if (j == stop)
        return;
    F(vec) v = F(medium_output)(F(vload_first)(src + j, stop - j, 0), m, t, c, log_form);
    if (pieces)
        F(vstore_pieces)(dest + j, v, stop - j);
    else
        F(vstore_first)(dest + j, v, stop - j);
}

/*
 * dest[0, n) = medium_output(src[0, n)), n > VEC. When `stream`, the whole
 * 64-byte lines of dest are streamed and the partial lines at its ends stored
 * plainly, in pieces: a masked store into the line next to a streamed one
 * made rows of 128 classes twice as slow (Zen 4).
 */
FS_ALWAYS_INLINE void F(medium_store)(REAL *dest, const REAL *src, int64_t n, F(vec) m, F(factor) t,
                                      REAL c, int log_form, int stream)
{
    int64_t head = (int64_t)((64 - (uintptr_t)dest % 64) % 64 / sizeof(REAL));
    if (!stream || head >= n) {
        int64_t j = F(medium_store_vectors)(dest, src, 0, n, m, t, c, log_form, 0);
        F(medium_store_part)(dest, src, j, n, m, t, c, log_form, 0);
        return;
    }
    int64_t lines_end = head + (n - head) / LINE_ELEMENTS * LINE_ELEMENTS;
    int64_t j = F(medium_store_vectors)(dest, src, 0, head, m, t, c, log_form, 0);
    F(medium_store_part)(dest, src, j, head, m, t, c, log_form, 1);
    j = F(medium_store_vectors)(dest, src, head, lines_end, m, t, c, log_form, 1);
    j = F(medium_store_vectors)(dest, src, j, n, m, t, c, log_form, 0);
    F(medium_store_part)(dest, src, j, n, m, t, c, log_form, 1);
}

/*
 * Whether medium rows stream their output (see medium_store): large outputs
 * of rows of at least FS_STREAM_MEDIUM_COLS, whatever their alignment. Shorter
 * rows gain less than their partial lines cost: 2 threads, outputs 16 bytes
 * off a 64-byte boundary, softmax over 1000 classes 0.25 -> 0.21 ns/element
 * (median of 8), log_softmax 0.29 -> 0.23, but over 128 classes 0.22 ->
 * 0.25 and 0.34 -> 0.34; 200 and 256 classes about even.
 */
#ifndef FS_STREAM_MEDIUM_COLS
#define FS_STREAM_MEDIUM_COLS 512
#endif
static inline int F(streams_medium)(const REAL *out, int64_t cols, int64_t output_bytes)
{
    return FS_HAVE_STREAM && cols >= FS_STREAM_MEDIUM_COLS && output_bytes >= FS_STREAM_MIN_BYTES &&
           (uintptr_t)out % sizeof(REAL) == 0;
}

/*
 * Groups of VEC medium rows of at most GROUP_COLS classes: a row that short
 * is bound by the latency of its reductions (its maximum across lanes, then
 * its sum, then the log of the sum), not by its arithmetic. A group takes
 * the maxima of its rows side by side, folds them across lanes together
 * (group_max), then the sums likewise, so the reductions of VEC rows overlap
 * and cost a few shuffles per row; the next group is prefetched meanwhile.
 * A group's rows take at most GROUP_BYTES, so that with the next group they
 * fill half of a 32 KiB L1. Float32, AVX-512, 2 threads, log_softmax from
 * memory, 64 / 100 / 128 classes: 0.31 / 0.29 / 0.24 -> 0.23 / 0.22 / 0.19
 * ns/element; 200 and 256 classes (groups of 13 and 16 KiB) were slower,
 * 0.21 -> 0.22 and 0.19 -> 0.23. softmax, whose rows have no log and
 * already prefetch the next row, did not gain (128 classes 0.20 -> 0.23).
 * float64 groups take half as many bytes: log_softmax, 2 threads, rows of
 * 256 classes took 0.62 ns/element in groups (AVX2, 4 rows) and 0.55 one
 * by one; rows of 128 classes 0.49-0.50 in groups (AVX-512, 8 rows) and
 * 0.475 one by one.
 */
#define GROUP_BYTES (REAL_BYTES == 4 ? 8192 : 4096)
#define GROUP_COLS (GROUP_BYTES / VEC / (int64_t)sizeof(REAL))

#if defined(__clang__) || __GNUC__ >= 12
#define FS_SHUFFLE2(a, b, ...) __builtin_shufflevector(a, b, __VA_ARGS__)
#else
#define FS_SHUFFLE2(a, b, ...) __builtin_shuffle(a, b, (__typeof__((a) > (a))){__VA_ARGS__})
#endif
/*
 * The blocks of w lanes at even (FS_EVEN_BLOCKS) or odd positions of a, then
 * those of b: lanes of the same row stay together, each half as wide.
 */
#if FS_VEC_LANES == 16
#define FS_EVEN_BLOCKS(a, b, w)                                                                  \
    ((w) == 8   ? FS_SHUFFLE2(a, b, 0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23)     \
     : (w) == 4 ? FS_SHUFFLE2(a, b, 0, 1, 2, 3, 8, 9, 10, 11, 16, 17, 18, 19, 24, 25, 26, 27)   \
     : (w) == 2 ? FS_SHUFFLE2(a, b, 0, 1, 4, 5, 8, 9, 12, 13, 16, 17, 20, 21, 24, 25, 28, 29)   \
                : FS_SHUFFLE2(a, b, 0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30))
#define FS_ODD_BLOCKS(a, b, w)                                                                   \
    ((w) == 8   ? FS_SHUFFLE2(a, b, 8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28, 29, 30, 31) \
     : (w) == 4 ? FS_SHUFFLE2(a, b, 4, 5, 6, 7, 12, 13, 14, 15, 20, 21, 22, 23, 28, 29, 30, 31) \
     : (w) == 2 ? FS_SHUFFLE2(a, b, 2, 3, 6, 7, 10, 11, 14, 15, 18, 19, 22, 23, 26, 27, 30, 31) \
                : FS_SHUFFLE2(a, b, 1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31))
#elif FS_VEC_LANES == 8
#define FS_EVEN_BLOCKS(a, b, w)                                       \
    ((w) == 4   ? FS_SHUFFLE2(a, b, 0, 1, 2, 3, 8, 9, 10, 11)         \
     : (w) == 2 ? FS_SHUFFLE2(a, b, 0, 1, 4, 5, 8, 9, 12, 13)         \
                : FS_SHUFFLE2(a, b, 0, 2, 4, 6, 8, 10, 12, 14))
#define FS_ODD_BLOCKS(a, b, w)                                        \
    ((w) == 4   ? FS_SHUFFLE2(a, b, 4, 5, 6, 7, 12, 13, 14, 15)       \
     : (w) == 2 ? FS_SHUFFLE2(a, b, 2, 3, 6, 7, 10, 11, 14, 15)       \
                : FS_SHUFFLE2(a, b, 1, 3, 5, 7, 9, 11, 13, 15))
#else
#define FS_EVEN_BLOCKS(a, b, w) \
    ((w) == 2 ? FS_SHUFFLE2(a, b, 0, 1, 4, 5) : FS_SHUFFLE2(a, b, 0, 2, 4, 6))
#define FS_ODD_BLOCKS(a, b, w) \
    ((w) == 2 ? FS_SHUFFLE2(a, b, 2, 3, 6, 7) : FS_SHUFFLE2(a, b, 1, 3, 5, 7))
#endif

/*
 * v[0, VEC) into one vector whose lane r is the maximum (NaN skipped) of
 * v[r]'s lanes; v is overwritten.
 */
FS_ALWAYS_INLINE F(vec) F(group_max)(F(vec) *v)
{
    for (int w = VEC / 2, count = VEC; w > 0; w /= 2, count /= 2)
        for (int k = 0; k < count / 2; k++)
            v[k] = F(vec_max)(FS_EVEN_BLOCKS(v[2 * k], v[2 * k + 1], w),
                              FS_ODD_BLOCKS(v[2 * k], v[2 * k + 1], w));
    return v[0];
}

/* the same for sums, pairwise */
FS_ALWAYS_INLINE F(vec) F(group_sum)(F(vec) *v)
{
    for (int w = VEC / 2, count = VEC; w > 0; w /= 2, count /= 2)
        for (int k = 0; k < count / 2; k++)
            v[k] = FS_EVEN_BLOCKS(v[2 * k], v[2 * k + 1], w) +
                   FS_ODD_BLOCKS(v[2 * k], v[2 * k + 1], w);
    return v[0];
}

/*
 * The maxima and the sums of exp((x - max) * t) of a group's VEC rows of n
 * <= GROUP_COLS, into maxima[] and sums[] (a NaN sum for a row holding a NaN,
 * and nothing meaningful for a row without a finite maximum); the group
 * after (NULL or its first row) is prefetched into L1 meanwhile.
 */
FS_ALWAYS_INLINE void F(group_max_sum)(const REAL *x, int64_t x_stride, int64_t n, F(factor) t,
                                       const REAL *next, REAL *maxima, REAL *sums)
{
    F(vec) v[VEC], tails[VEC];
    int64_t full = n - n % VEC;
    for (int r = 0; r < VEC; r++)
        v[r] = F(medium_max_lanes)(x + r * x_stride, n, &tails[r]);
    F(vstore)(maxima, F(group_max)(v), 0);
    for (int r = 0; r < VEC; r++) {
        F(vec) m = F(vsplat)(maxima[r]);
        v[r] = F(medium_part_sum)(x + r * x_stride, 0, full, m, t, NULL,
                                  next ? next + r * x_stride : NULL);
        if (full < n) /* the -inf padding adds exact zeros */
            v[r] += VECTOR_EXP(F(vgap)(tails[r], m, t, 0));
    }
    F(vstore)(sums, F(group_sum)(v), 0);
}

FS_ALWAYS_INLINE void F(softmax_medium_at)(const REAL *x, int64_t x_stride, REAL *out,
                                           int64_t out_stride, int64_t rows, int64_t n, F(factor) t,
                                           int stream)
{
    REAL e[MEDIUM_COLS] __attribute__((aligned(FS_VECTOR_BYTES)));
    for (int64_t r = 0; r < rows; r++) {
        const REAL *row = x + r * x_stride;
        REAL *dest = out + r * out_stride;
        F(vec) tail;
        F(vec) m = F(medium_max)(row, n, &tail);
        if (!F(is_finite)(m[0])) {
            F(fill)(dest, n, NAN);
            continue;
        }
        /*
         * The exponentials go to dest itself and are scaled there, unless
         * the row is streamed: then through e, so that dest is written once.
         * (Through e always, rows of 1000 classes 16 bytes off a 64-byte
         * boundary, as NumPy allocates them, took 0.46 ns/element instead
         * of 0.36; one thread, AVX-512.)
         */
        REAL *exps = stream ? e : dest;
        /*
         * The next row is prefetched while this one's exponentials are
         * computed: float32, 2 threads, 16384 x 1000 0.213-0.228 -> 0.207
         * ns/element, 65536 x 128 0.248 -> 0.238 (one thread, 1000 classes:
         * 0.42 -> 0.39). log_softmax, whose output pass follows, did not gain.
         */
        const REAL *next = r + 1 < rows ? row + x_stride : NULL;
        REAL c = (REAL)(1.0 / F(medium_sum_exp)(row, n, tail, m, t, exps, next));
        F(medium_store)(dest, exps, n, m, t, c, 0, stream);
    }
}

static void F(softmax_medium)(const REAL *x, int64_t x_stride, REAL *out, int64_t out_stride,
                              int64_t rows, int64_t n, F(factor) t, int stream)
{
    if (F(is_one)(t))
        F(softmax_medium_at)(x, x_stride, out, out_stride, rows, n, F(unit)(), stream);
    else
        F(softmax_medium_at)(x, x_stride, out, out_stride, rows, n, t, stream);
}

FS_ALWAYS_INLINE void F(log_softmax_medium_at)(const REAL *x, int64_t x_stride, REAL *out,
                                               int64_t out_stride, int64_t rows, int64_t n,
                                               F(factor) t, int stream)
{
    int64_t r = 0;
    for (; n <= GROUP_COLS && r + VEC <= rows; r += VEC) {
        const REAL *group = x + r * x_stride;
        REAL maxima[VEC], sums[VEC];
        F(group_max_sum)(group, x_stride, n, t, r + 2 * VEC <= rows ? group + VEC * x_stride : NULL,
                         maxima, sums);
        for (int k = 0; k < VEC; k++) {
            REAL *dest = out + (r + k) * out_stride;
            if (F(usable)(maxima[k], sums[k]))
                F(medium_store)(dest, group + k * x_stride, n, F(vsplat)(maxima[k]), t,
                                LANE_LOG(sums[k]), 1, stream);
            else
                F(fill)(dest, n, NAN);
        }
    }
    for (; r < rows; r++) {
        const REAL *row = x + r * x_stride;
        REAL *dest = out + r * out_stride;
        F(vec) tail;
        F(vec) m = F(medium_max)(row, n, &tail);
        double s = F(is_finite)(m[0]) ? F(medium_sum_exp)(row, n, tail, m, t, NULL, NULL) : 0;
        if (!F(usable)(m[0], s)) {
            F(fill)(dest, n, NAN);
            continue;
        }
        F(medium_store)(dest, row, n, m, t, (REAL)log(s), 1, stream);
    }
}

static void F(log_softmax_medium)(const REAL *x, int64_t x_stride, REAL *out,
                                  int64_t out_stride, int64_t rows, int64_t n, F(factor) t,
                                  int stream)
{
    if (F(is_one)(t))
        F(log_softmax_medium_at)(x, x_stride, out, out_stride, rows, n, F(unit)(), stream);
    else
        F(log_softmax_medium_at)(x, x_stride, out, out_stride, rows, n, t, stream);
}
/*
 * softmax and log_softmax give rows of more than SOFTMAX_TILE_COLS classes
 * to the medium path rather than to the short-row tile. With masked row ends
 * it wins from about 40 classes (AVX-512, float32, one thread: 48 classes
 * 1.16 -> 0.54 ns/element, 64 classes 1.37 -> 0.51, while 33 classes take
 * 1.34 against the tile's 0.79), and float64 from 33 (2 threads, 40 classes
 * 1.03 -> 0.56, 48 classes 1.13 -> 0.54; 33 classes even for softmax and
 * 1.06 -> 0.68 for log_softmax; rows of 18 to 28 classes, ending in part of a
 * vector, were slower). Where row ends go through a local array, the tile
 * keeps every short row (AVX2, 44 classes: 1.83 against 1.17).
 */
#if FS_MASKED_PARTS
#define SOFTMAX_TILE_COLS (REAL_BYTES == 4 ? 40 : 32)
#endif
#undef FS_MASKED_PARTS
#undef FS_SHUFFLE
#undef FS_SWAP_LANES
#undef FS_VEC_LANES
#undef FS_SHUFFLE2
#undef FS_EVEN_BLOCKS
#undef FS_ODD_BLOCKS
#undef GROUP_COLS
#undef GROUP_BYTES
#endif /* VECTOR_ROWS */
#ifndef SOFTMAX_TILE_COLS
#define SOFTMAX_TILE_COLS SHORT_COLS
#endif

/* ------------------------------------------------------------------ */
/* Short rows: a tile of TILE_ROWS rows with lanes spanning rows       */
/* ------------------------------------------------------------------ */

/*
 * Rows [0, rows) of the tile moved with 8 x 8 register transposes where the
 * instruction set has them: groups of 8 rows and 8 columns, the last column
 * group overlapping the one before (rows of at least 8 columns). Returns the
 * first row left to the scalar copies.
 */
static inline int64_t F(tile_rows_by_8)(int64_t rows, int64_t cols)
{
    return TRANSPOSE8 && cols >= 8 ? rows - rows % 8 : 0;
}

/* tile[j][r] = x[r * stride + j]; rows past `rows` are zero. */
static void F(tile_load)(REAL tile[][TILE_ROWS], const REAL *x, int64_t stride, int64_t rows,
                         int64_t cols)
{
    int64_t r = F(tile_rows_by_8)(rows, cols);
#if TRANSPOSE8
    for (int64_t r8 = 0; r8 < r; r8 += 8)
        for (int64_t j = 0; j < cols; j += 8) {
            int64_t j8 = j + 8 <= cols ? j : cols - 8;
            fs_load_transposed8(&tile[j8][r8], TILE_ROWS, x + r8 * stride + j8, stride);
        }
#endif
    for (; r < rows; r++) {
        const REAL *row = x + r * stride;
#pragma GCC unroll 4
        for (int64_t j = 0; j < cols; j++)
            tile[j][r] = row[j];
    }
    for (int64_t j = 0; j < cols; j++)
        for (int64_t r = rows; r < TILE_ROWS; r++)
            tile[j][r] = 0;
}

/* out[r * stride + j] = tile[j][r] * mul[r] - sub[r] (mul NULL: 1, sub NULL: 0) */
static void F(tile_store_map)(REAL *out, int64_t stride, REAL tile[][TILE_ROWS],
                              const REAL *mul, const REAL *sub, int64_t rows, int64_t cols)
{
    int64_t r = F(tile_rows_by_8)(rows, cols);
#if TRANSPOSE8
    for (int64_t r8 = 0; r8 < r; r8 += 8) {
        __m256 m = mul ? _mm256_loadu_ps(mul + r8) : _mm256_set1_ps(1.0f);
        __m256 s = sub ? _mm256_loadu_ps(sub + r8) : _mm256_setzero_ps();
        for (int64_t j = 0; j < cols; j += 8) {
            int64_t j8 = j + 8 <= cols ? j : cols - 8;
            fs_store_transposed8(out + r8 * stride + j8, stride, &tile[j8][r8], TILE_ROWS, m, s);
        }
    }
#endif
    for (; r < rows; r++) {
        REAL *row = out + r * stride;
        if (mul)
#pragma GCC unroll 4
            for (int64_t j = 0; j < cols; j++)
                row[j] = tile[j][r] * mul[r];
        else if (sub)
#pragma GCC unroll 4
            for (int64_t j = 0; j < cols; j++)
                row[j] = tile[j][r] - sub[r];
        else
#pragma GCC unroll 4
            for (int64_t j = 0; j < cols; j++)
                row[j] = tile[j][r];
    }
}

/* out[r * stride + j] = tile[j][r] * scale[r] */
static void F(tile_store_scaled)(REAL *out, int64_t stride, REAL tile[][TILE_ROWS],
                                 const REAL *scale, int64_t rows, int64_t cols)
{
    F(tile_store_map)(out, stride, tile, scale, NULL, rows, cols);
}

/* out[r * stride + j] = tile[j][r] - shift[r] */
static void F(tile_store_shifted)(REAL *out, int64_t stride, REAL tile[][TILE_ROWS],
                                  const REAL *shift, int64_t rows, int64_t cols)
{
    F(tile_store_map)(out, stride, tile, NULL, shift, rows, cols);
}

static void F(tile_store)(REAL *out, int64_t stride, REAL tile[][TILE_ROWS], int64_t rows,
                          int64_t cols)
{
    F(tile_store_map)(out, stride, tile, NULL, NULL, rows, cols);
}

/* Per-row (lane) maximum of a tile, NaN skipped. */
static void F(tile_max)(REAL tile[][TILE_ROWS], int64_t cols, REAL *m)
{
    for (int l = 0; l < TILE_ROWS; l++)
        m[l] = -INFINITY;
    for (int64_t j = 0; j < cols; j++)
        for (int l = 0; l < TILE_ROWS; l++)
            m[l] = F(max_of)(m[l], tile[j][l]);
}

/* tile = tile - m per lane: the gaps of log_softmax at t = 1 (else: tile_log_output). */
static void F(tile_shift)(REAL tile[][TILE_ROWS], int64_t cols, const REAL *m)
{
    for (int64_t j = 0; j < cols; j++)
        for (int l = 0; l < TILE_ROWS; l++)
            tile[j][l] -= m[l];
}

/* Per-row sum s of exp(tile) for a shifted tile. */
static void F(tile_sum_exp)(REAL tile[][TILE_ROWS], int64_t cols, REAL *s)
{
    for (int l = 0; l < TILE_ROWS; l++)
        s[l] = 0;
    for (int64_t j = 0; j < cols; j++)
        for (int l = 0; l < TILE_ROWS; l++)
            s[l] += EXP(tile[j][l]);
}

/*
 * Columns whose exponentials are summed in REAL before the sum moves to
 * double: a row sum then stays within 7 roundings of REAL, where one running
 * float32 sum over 48 equal inexact terms drifts past the probability bound.
 */
#define TILE_SUM_PART 8

/*
 * Per-row sum s of exp((tile - m) * t) for an unshifted tile, which becomes
 * the exponentials when `store`: tile_shift fused into the loop of the exp.
 */
static inline void F(tile_exp_sum_at)(REAL tile[][TILE_ROWS], int64_t cols, const REAL *m,
                                      F(factor) t, REAL *s, int store)
{
    REAL half_m[TILE_ROWS], part[TILE_ROWS];
    double total[TILE_ROWS];
    for (int l = 0; l < TILE_ROWS; l++) {
        half_m[l] = m[l] * (REAL)0.5;
        total[l] = 0;
    }
    for (int64_t j0 = 0; j0 < cols; j0 += TILE_SUM_PART) {
        int64_t j1 = cols - j0 < TILE_SUM_PART ? cols : j0 + TILE_SUM_PART;
        for (int l = 0; l < TILE_ROWS; l++)
            part[l] = 0;
        for (int64_t j = j0; j < j1; j++)
            for (int l = 0; l < TILE_ROWS; l++) {
                REAL gap = F(is_one)(t) ? tile[j][l] - m[l]
                                        : F(scaled_gap)(tile[j][l], half_m[l], t, 0);
                REAL e = EXP(gap);
                part[l] += e;
                if (store)
                    tile[j][l] = e;
            }
        for (int l = 0; l < TILE_ROWS; l++)
            total[l] += part[l];
    }
    for (int l = 0; l < TILE_ROWS; l++)
        s[l] = (REAL)total[l];
}

/* tile = exp((tile - m) * t); s = its per-row sums. */
static void F(tile_exp_sum)(REAL tile[][TILE_ROWS], int64_t cols, const REAL *m, F(factor) t,
                            REAL *s)
{
    if (F(is_one)(t))
        F(tile_exp_sum_at)(tile, cols, m, F(unit)(), s, 1);
    else
        F(tile_exp_sum_at)(tile, cols, m, t, s, 1);
}

#if TRANSPOSE8 && VECTOR_ROWS && FS_VECTOR_BYTES == 32 /* vector extensions: fs_vf32 */
/*
 * Rows of 8 to REGISTER_MAX_COLS float32 classes, eight rows at a time, kept
 * in registers: the rows come in as columns (lanes span rows) through
 * register transposes and leave the same way. The tile's four passes
 * over its stack array cost more than the arithmetic of such rows (AVX2, Zen
 * 3, 1048576 x 10, median of 4 alternating processes at 2 threads: softmax
 * 0.78 -> 0.43 ns/element, log_softmax 0.69 -> 0.59; 3 at one thread: 1.08
 * -> 0.66 and 1.08 -> 1.00). Each caller passes
 * `cols` as a constant, so the arrays of columns below become registers.
 * AVX-512 builds keep the tile, whose lanes span 16 rows.
 */
#define REGISTER_ROWS 1
#define REGISTER_MAX_COLS 16

/*
 * Classes past the first eight come from a second transpose of the row ends,
 * which overlaps the first: four classes wide up to 12 classes, eight beyond.
 */
#define TAIL_WIDTH(cols) ((cols) <= 12 ? 4 : 8)

/* col[j][i] = x[i * stride + j] for i < 8 and j < cols */
FS_ALWAYS_INLINE void F(columns_load)(fs_vf32 col[REGISTER_MAX_COLS], const float *x,
                                      int64_t stride, int cols)
{
    __m256 head[8], tail[8];
    int tail_start = cols - TAIL_WIDTH(cols);
    fs_columns8_load(head, x, stride);
    if (cols > 8 && TAIL_WIDTH(cols) == 4)
        fs_columns4_load(tail, x + tail_start, stride);
    else if (cols > 8)
        fs_columns8_load(tail, x + tail_start, stride);
#pragma GCC unroll 16
    for (int j = 0; j < cols; j++)
        col[j] = (fs_vf32)(j < 8 ? head[j] : tail[j - tail_start]);
}

/* out[i * stride + j] = col[j][i] for i < 8 and j < cols */
FS_ALWAYS_INLINE void F(columns_store)(float *out, int64_t stride,
                                       const fs_vf32 col[REGISTER_MAX_COLS], int cols)
{
    __m256 head[8], tail[8];
    int tail_start = cols - TAIL_WIDTH(cols);
#pragma GCC unroll 8
    for (int k = 0; k < 8; k++) {
        head[k] = (__m256)col[k];
        if (k < TAIL_WIDTH(cols))
            tail[k] = (__m256)col[tail_start + k];
    }
    if (cols > 8 && TAIL_WIDTH(cols) == 4)
        fs_columns4_store(out + tail_start, stride, tail);
    else if (cols > 8)
        fs_columns8_store(out + tail_start, stride, tail);
    fs_columns8_store(out, stride, head);
}

/* Per-lane maximum of the columns, NaN skipped: two chains from -inf. */
FS_ALWAYS_INLINE fs_vf32 F(columns_max)(const fs_vf32 col[REGISTER_MAX_COLS], int cols)
{
    fs_vf32 even = fs_vf32_splat(-INFINITY), odd = even;
#pragma GCC unroll 16
    for (int j = 0; j < cols; j += 2) {
        even = VECTOR_GREATER(col[j], even);
        if (j + 1 < cols)
            odd = VECTOR_GREATER(col[j + 1], odd);
    }
    return VECTOR_GREATER(odd, even);
}

/* Per-lane sum of the columns, pairwise: at most four roundings deep. */
FS_ALWAYS_INLINE fs_vf32 F(columns_sum)(const fs_vf32 col[REGISTER_MAX_COLS], int cols)
{
    fs_vf32 part[REGISTER_MAX_COLS];
#pragma GCC unroll 16
    for (int j = 0; j < cols; j++)
        part[j] = col[j];
#pragma GCC unroll 4
    for (int n = cols; n > 1; n = (n + 1) / 2)
#pragma GCC unroll 8
        for (int j = 0; j < n / 2; j++)
            part[j] += part[j + (n + 1) / 2];
    return part[0];
}

/*
 * How softmax moves a group of 8 rows: rows at any stride (columns_load and
 * columns_store), or, for contiguous rows of an even number of classes,
 * whole lines (fs_columns_from_lines and fs_columns_to_lines), whose stores
 * may stream. Every layout gives the same bits.
 */
#define GROUP_ROWS 0
#define GROUP_LINES 1
#define GROUP_STREAMED_LINES 2

FS_ALWAYS_INLINE void F(group_load)(fs_vf32 col[REGISTER_MAX_COLS], const float *x,
                                    int64_t stride, int cols, int layout)
{
    if (layout == GROUP_ROWS) {
        F(columns_load)(col, x, stride, cols);
        return;
    }
    __m256 v[REGISTER_MAX_COLS];
    fs_columns_from_lines(v, x, cols);
#pragma GCC unroll 16
    for (int j = 0; j < cols; j++)
        col[j] = (fs_vf32)v[j];
}

/* out = e / (sum of e) for one group of 8 rows held as columns (e is overwritten) */
FS_ALWAYS_INLINE void F(columns_normalize_store)(float *out, int64_t out_stride,
                                                 fs_vf32 e[REGISTER_MAX_COLS], int cols,
                                                 int layout)
{
    fs_vf32 inverse = fs_vf32_splat(1.0f) / F(columns_sum)(e, cols);
#pragma GCC unroll 16
    for (int j = 0; j < cols; j++)
        e[j] *= inverse;
    if (layout == GROUP_ROWS) {
        F(columns_store)(out, out_stride, e, cols);
        return;
    }
    __m256 v[REGISTER_MAX_COLS];
#pragma GCC unroll 16
    for (int j = 0; j < cols; j++)
        v[j] = (__m256)e[j];
    fs_columns_to_lines(out, v, cols, layout == GROUP_STREAMED_LINES);
}

/*
 * Software-pipelined by one group: each iteration loads group g and finds
 * its maxima, normalizes and stores group g - 1, then exponentiates group g.
 * Written group after group, the loads and maxima at the head of a group and
 * the sum, division and transposes at its tail are chains with little
 * parallelism, and one group's 300 or so instructions outrun the window the
 * core schedules from, so the next group's exponentials could not fill them
 * (AVX2, Zen 3, 4096 x 10 in L1, one thread: 0.55 -> 0.46 ns/element).
 * The exp is the cheaper fs_expf_nonpositive_short_vec.
 */
FS_ALWAYS_INLINE void F(softmax_registers_at)(const float *x, int64_t x_stride, float *out,
                                              int64_t out_stride, int64_t groups, int cols,
                                              int layout)
{
    if (groups <= 0)
        return;
    fs_vf32 col[REGISTER_MAX_COLS], e[REGISTER_MAX_COLS];
    F(group_load)(col, x, x_stride, cols, layout);
    fs_vf32 m = F(columns_max)(col, cols);
#pragma GCC unroll 16
    for (int j = 0; j < cols; j++)
        e[j] = fs_expf_nonpositive_short_vec(col[j] - m);
    for (int64_t g = 1; g < groups; g++) {
        F(group_load)(col, x + g * 8 * x_stride, x_stride, cols, layout);
        m = F(columns_max)(col, cols);
        F(columns_normalize_store)(out + (g - 1) * 8 * out_stride, out_stride, e, cols, layout);
#pragma GCC unroll 16
        for (int j = 0; j < cols; j++)
            e[j] = fs_expf_nonpositive_short_vec(col[j] - m);
    }
    F(columns_normalize_store)(out + (groups - 1) * 8 * out_stride, out_stride, e, cols, layout);
}

/*
 * Groups whose sums go through one vectorized loop of logarithms (there is
 * no vector log): the gaps x - m wait in a stack array meanwhile.
 */
#define LOG_BATCH_GROUPS 8

FS_ALWAYS_INLINE void F(log_softmax_registers_at)(const float *x, int64_t x_stride, float *out,
                                                  int64_t out_stride, int64_t groups, int cols)
{
    fs_vf32 gaps[LOG_BATCH_GROUPS][REGISTER_MAX_COLS];
    float log_sums[LOG_BATCH_GROUPS * 8] __attribute__((aligned(FS_VECTOR_BYTES)));
    for (int64_t g0 = 0; g0 < groups; g0 += LOG_BATCH_GROUPS) {
        int batch = groups - g0 < LOG_BATCH_GROUPS ? (int)(groups - g0) : LOG_BATCH_GROUPS;
        for (int b = 0; b < LOG_BATCH_GROUPS; b++) {
            fs_vf32 col[REGISTER_MAX_COLS], sum = fs_vf32_splat(1.0f);
            if (b < batch) {
                F(columns_load)(col, x + (g0 + b) * 8 * x_stride, x_stride, cols);
                fs_vf32 m = F(columns_max)(col, cols);
#pragma GCC unroll 16
                for (int j = 0; j < cols; j++) {
                    gaps[b][j] = col[j] - m;
                    col[j] = VECTOR_EXP(gaps[b][j]);
                }
                sum = F(columns_sum)(col, cols);
            }
            memcpy(log_sums + 8 * b, &sum, sizeof sum);
        }
        for (int l = 0; l < LOG_BATCH_GROUPS * 8; l++)
            log_sums[l] = LANE_LOG(log_sums[l]);
        for (int b = 0; b < batch; b++) {
            fs_vf32 col[REGISTER_MAX_COLS], log_sum;
            memcpy(&log_sum, log_sums + 8 * b, sizeof log_sum);
#pragma GCC unroll 16
            for (int j = 0; j < cols; j++)
                col[j] = gaps[b][j] - log_sum;
            F(columns_store)(out + (g0 + b) * 8 * out_stride, out_stride, col, cols);
        }
    }
}

/* A switch over the row lengths of the register kernels, each a constant. */
#define REGISTER_CASES(call)                                                   \
    case 8: call(8); break;                                                    \
    case 9: call(9); break;                                                    \
    case 10: call(10); break;                                                  \
    case 11: call(11); break;                                                  \
    case 12: call(12); break;                                                  \
    case 13: call(13); break;                                                  \
    case 14: call(14); break;                                                  \
    case 15: call(15); break;                                                  \
    case 16: call(16); break

static inline int F(fits_registers)(int64_t cols)
{
    return cols >= 8 && cols <= REGISTER_MAX_COLS;
}

/*
 * softmax or log_softmax (t = 1) of rows that fit the registers: whole
 * groups of 8 rows, then the rest padded with rows of zeros to one more
 * group, so that every row gets the same roundings however the rows are
 * split between threads. Softmax over contiguous rows of an even number of
 * classes moves whole lines, and streams them into large outputs: without
 * reading them first, so 80 bytes of traffic per row of ten classes where
 * ordinary stores take 120. AVX2, Zen 3, 1048576 x 10, 2 threads, best of
 * 50 alternating runs: lines instead of rows 2.94-3.00 -> 2.87-2.94 ms,
 * streamed 2.78-2.84 -> 2.62-2.64 (with the cheaper exp).
 */
static void F(rows_in_registers)(const float *x, int64_t x_stride, float *out,
                                 int64_t out_stride, int64_t rows, int64_t cols, int log_form,
                                 int64_t output_bytes)
{
    int64_t groups = rows / 8, rest = rows % 8;
    float padded[8 * REGISTER_MAX_COLS] = {0}, result[8 * REGISTER_MAX_COLS];
    for (int64_t r = 0; r < rest; r++)
        for (int64_t j = 0; j < cols; j++)
            padded[r * cols + j] = x[(groups * 8 + r) * x_stride + j];
    int lines = cols % 2 == 0 && x_stride == cols && out_stride == cols;
    int stream = lines && output_bytes >= FS_STREAM_MIN_BYTES && (uintptr_t)out % 16 == 0;
#define FS_REGISTER_CALL(c)                                                              \
    if (log_form) {                                                                      \
        F(log_softmax_registers_at)(x, x_stride, out, out_stride, groups, c);            \
        F(log_softmax_registers_at)(padded, c, result, c, rest ? 1 : 0, c);              \
    } else {                                                                             \
        if ((c) % 2 == 0 && stream)                                                      \
            F(softmax_registers_at)(x, c, out, c, groups, c, GROUP_STREAMED_LINES);      \
        else if ((c) % 2 == 0 && lines)                                                  \
            F(softmax_registers_at)(x, c, out, c, groups, c, GROUP_LINES);               \
        else                                                                             \
            F(softmax_registers_at)(x, x_stride, out, out_stride, groups, c, GROUP_ROWS); \
        F(softmax_registers_at)(padded, c, result, c, rest ? 1 : 0, c, GROUP_ROWS);      \
    }
    switch (cols) {
        REGISTER_CASES(FS_REGISTER_CALL);
    }
#undef FS_REGISTER_CALL
    if (stream)
        fs_stream_fence();
    for (int64_t r = 0; r < rest; r++)
        for (int64_t j = 0; j < cols; j++)
            out[(groups * 8 + r) * out_stride + j] = result[r * cols + j];
}
#undef REGISTER_CASES
#undef TAIL_WIDTH
#undef GROUP_ROWS
#undef GROUP_LINES
#undef GROUP_STREAMED_LINES
#undef LOG_BATCH_GROUPS
#else
#define REGISTER_ROWS 0
#endif

static void F(softmax_short)(const REAL *x, int64_t x_stride, REAL *out, int64_t out_stride,
                             int64_t rows, int64_t cols, F(factor) t, int64_t output_bytes)
{
#if REGISTER_ROWS
    if (F(is_one)(t) && F(fits_registers)(cols)) {
        F(rows_in_registers)(x, x_stride, out, out_stride, rows, cols, 0, output_bytes);
        return;
    }
#else
    (void)output_bytes; /* for the register kernels' streaming */
#endif
    REAL tile[SHORT_COLS][TILE_ROWS], m[TILE_ROWS], s[TILE_ROWS];
    for (int64_t r0 = 0; r0 < rows; r0 += TILE_ROWS) {
        int64_t n = rows - r0 < TILE_ROWS ? rows - r0 : TILE_ROWS;
        F(tile_load)(tile, x + r0 * x_stride, x_stride, n, cols);
        F(tile_max)(tile, cols, m);
        F(tile_exp_sum)(tile, cols, m, t, s);
        for (int l = 0; l < TILE_ROWS; l++)
            s[l] = 1 / s[l];
        F(tile_store_scaled)(out + r0 * out_stride, out_stride, tile, s, n, cols);
    }
}

/*
 * tile = (tile - m) * t - c per lane, from the unshifted tile with one
 * rounding (scaled_gap): log_softmax away from t = 1. Shifting the tile
 * first and subtracting c on the way out rounded twice more, up to 1.3e-5
 * on float32 log-probabilities near -100 (the contract allows 1e-5).
 */
static void F(tile_log_output)(REAL tile[][TILE_ROWS], int64_t cols, const REAL *m, F(factor) t,
                               const REAL *c)
{
    REAL half_m[TILE_ROWS];
    for (int l = 0; l < TILE_ROWS; l++)
        half_m[l] = m[l] * (REAL)0.5;
    for (int64_t j = 0; j < cols; j++)
        for (int l = 0; l < TILE_ROWS; l++)
            tile[j][l] = F(scaled_gap)(tile[j][l], half_m[l], t, c[l]);
}

static void F(log_softmax_short)(const REAL *x, int64_t x_stride, REAL *out,
                                 int64_t out_stride, int64_t rows, int64_t cols, F(factor) t)
{
#if REGISTER_ROWS
    if (F(is_one)(t) && F(fits_registers)(cols)) {
        F(rows_in_registers)(x, x_stride, out, out_stride, rows, cols, 1, 0);
        return;
    }
#endif
    REAL tile[SHORT_COLS][TILE_ROWS], m[TILE_ROWS], s[TILE_ROWS];
    for (int64_t r0 = 0; r0 < rows; r0 += TILE_ROWS) {
        int64_t n = rows - r0 < TILE_ROWS ? rows - r0 : TILE_ROWS;
        F(tile_load)(tile, x + r0 * x_stride, x_stride, n, cols);
        F(tile_max)(tile, cols, m);
        if (F(is_one)(t)) {
            F(tile_shift)(tile, cols, m);
            F(tile_sum_exp)(tile, cols, s);
            for (int l = 0; l < TILE_ROWS; l++)
                s[l] = LANE_LOG(s[l]);
            F(tile_store_shifted)(out + r0 * out_stride, out_stride, tile, s, n, cols);
        } else {
            F(tile_exp_sum_at)(tile, cols, m, t, s, 0);
            for (int l = 0; l < TILE_ROWS; l++)
                s[l] = LANE_LOG(s[l]);
            F(tile_log_output)(tile, cols, m, t, s);
            F(tile_store)(out + r0 * out_stride, out_stride, tile, n, cols);
        }
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
        int nan_seen[TILE_ROWS] = {0};
        for (int64_t j = 0; j < cols; j++)
            for (int l = 0; l < TILE_ROWS; l++)
                nan_seen[l] |= tile[j][l] != tile[j][l];
        F(tile_exp_sum_at)(tile, cols, m, F(unit)(), s, 0);
        for (int l = 0; l < TILE_ROWS; l++) {
            REAL lse = m[l] + LANE_LOG(s[l]); /* NaN if the row holds a NaN */
            lse = F(is_finite)(m[l]) ? lse : m[l];
            s[l] = nan_seen[l] ? (REAL)NAN : lse;
        }
        for (int64_t l = 0; l < n; l++)
            out[r0 + l] = s[l];
    }
}

/* ------------------------------------------------------------------ */
/* softmax, log_softmax, logsumexp                                     */
/* ------------------------------------------------------------------ */

static void F(softmax_row)(const REAL *x, REAL *out, int64_t n, F(factor) t, int stream)
{
    if (stream) { /* two reads of x for one streamed write of out */
        F(online_output_row)(x, out, n, t, 0, 1);
        return;
    }
    REAL m = F(row_max)(x, n);
    if (!F(is_finite)(m)) {
        F(fill)(out, n, NAN);
        return;
    }
    double s = F(exp_store_sum)(x, out, n, m, t);
    F(scale_in_place)(out, n, (REAL)(1.0 / s));
}

#if VECTOR_ROWS
/* the row's maximum, NaN skipped, in every lane (four accumulators: it is read from L2) */
FS_ALWAYS_INLINE F(vec) F(staged_max)(const REAL *x, int64_t n)
{
    F(vec) m0 = F(vsplat)(-INFINITY), m1 = m0, m2 = m0, m3 = m0;
    int64_t j = 0;
    for (; j + 4 * VEC <= n; j += 4 * VEC) {
        m0 = F(vec_max)(m0, F(vload)(x + j));
        m1 = F(vec_max)(m1, F(vload)(x + j + VEC));
        m2 = F(vec_max)(m2, F(vload)(x + j + 2 * VEC));
        m3 = F(vec_max)(m3, F(vload)(x + j + 3 * VEC));
    }
    for (; j + VEC <= n; j += VEC)
        m0 = F(vec_max)(m0, F(vload)(x + j));
    if (j < n)
        m1 = F(vec_max)(m1, F(vload_first)(x + j, n - j, -INFINITY));
    return F(vmax_all)(F(vec_max)(F(vec_max)(m0, m1), F(vec_max)(m2, m3)));
}

/*
 * The pipelines' prefetch of the row after next: two more lines of `ahead`
 * (ahead_bytes long) into L2 per turn, from byte *fetched on.
 */
FS_ALWAYS_INLINE void F(prefetch_turn)(const char *ahead, int64_t ahead_bytes, int64_t *fetched)
{
    if (*fetched < ahead_bytes) {
        FS_PREFETCH_L2(ahead + *fetched);
        FS_PREFETCH_L2(ahead + *fetched + 64);
        *fetched += 128;
    }
}

/*
 * One step of softmax_pipelined, each half when its flag is set: the
 * exponentials of row x into e, returning their sum (`compute`), and the
 * output of the previous row, out = ready * c, streamed (`store`). The two
 * advance together, two vectors of each per turn, while `ahead` (NULL or the
 * row after x) is prefetched into L2 two lines per turn. (Taking the
 * exponentials a part at a time through medium_part_sum and the stores
 * after each part, 256 elements per turn, was slower: 1024 x 32000, float32,
 * 2 threads, 0.189-0.204 ns/element where this step took 0.178-0.194.)
 */
FS_ALWAYS_INLINE double F(pipeline_step)(const REAL *x, REAL *e, REAL max, F(factor) t,
                                         REAL *out, const REAL *ready, REAL c, const char *ahead,
                                         int64_t n, int compute, int store)
{
    int stream = store && (uintptr_t)out % sizeof(REAL) == 0;
    int64_t i = 0, j = 0, fetched = 0, ahead_bytes = ahead ? n * (int64_t)sizeof(REAL) : 0;
    F(vec) m = F(vsplat)(max), cv = F(vsplat)(c);
    if (stream)
        for (int64_t head = F(stream_head)(out, n); i < head; i++)
            out[i] = ready[i] * c;
    F(vec_wide) total = {0};
    while (compute && j + 2 * VEC <= n) {
        int64_t stop = j + MEDIUM_PART < n ? j + MEDIUM_PART : n;
        F(vec) s0 = F(vsplat)(0), s1 = s0;
        for (; j + 2 * VEC <= stop; j += 2 * VEC) {
            F(vec) e0 = VECTOR_EXP(F(vgap)(F(vload)(x + j), m, t, 0));
            F(vec) e1 = VECTOR_EXP(F(vgap)(F(vload)(x + j + VEC), m, t, 0));
            s0 += e0;
            s1 += e1;
            F(vstore)(e + j, e0, 0);
            F(vstore)(e + j + VEC, e1, 0);
            if (store && i + 2 * VEC <= n) {
                F(vstore)(out + i, F(vload)(ready + i) * cv, stream);
                F(vstore)(out + i + VEC, F(vload)(ready + i + VEC) * cv, stream);
                i += 2 * VEC;
            }
            F(prefetch_turn)(ahead, ahead_bytes, &fetched);
        }
        total += __builtin_convertvector(s0 + s1, F(vec_wide)); /* lane by lane */
    }
    if (compute) {
        F(vec) s = F(vsplat)(0);
        for (; j + VEC <= n; j += VEC) {
            F(vec) v = VECTOR_EXP(F(vgap)(F(vload)(x + j), m, t, 0));
            s += v;
            F(vstore)(e + j, v, 0);
        }
        if (j < n) { /* the -inf padding adds exact zeros */
            F(vec) v = VECTOR_EXP(F(vgap)(F(vload_first)(x + j, n - j, -INFINITY), m, t, 0));
            s += v;
            F(vstore_first)(e + j, v, n - j);
        }
        total += __builtin_convertvector(s, F(vec_wide));
    }
    if (store) {
        for (; i + VEC <= n; i += VEC)
            F(vstore)(out + i, F(vload)(ready + i) * cv, stream);
        for (; i < n; i++)
            out[i] = ready[i] * c;
    }
    return compute ? F(wide_sum_all)(&total) : 0;
}

/* the row's maximum, NaN skipped */
FS_ALWAYS_INLINE REAL F(pipeline_max)(const REAL *x, int64_t n)
{
    return F(staged_max)(x, n)[0];
}
#else
FS_ALWAYS_INLINE REAL F(pipeline_max)(const REAL *x, int64_t n)
{
    return F(row_max)(x, n);
}

/* pipeline_step of the vector builds in blocks of LANES, for builds without vector rows */
FS_ALWAYS_INLINE double F(pipeline_step)(const REAL *x, REAL *e, REAL m, F(factor) t,
                                         REAL *out, const REAL *ready, REAL c, const char *ahead,
                                         int64_t n, int compute, int store)
{
    int stream = store && (uintptr_t)out % sizeof(REAL) == 0;
    int64_t i = 0, j = 0, fetched = 0, ahead_bytes = ahead ? n * (int64_t)sizeof(REAL) : 0;
    REAL acc[LANES], v[LANES];
    if (stream)
        for (int64_t head = F(stream_head)(out, n); i < head; i++)
            out[i] = ready[i] * c;
    double total = 0.0;
    while (compute && j + LANES <= n) {
        int64_t stop = j + CHUNK < n ? j + CHUNK : n;
        for (int l = 0; l < LANES; l++)
            acc[l] = 0;
        for (; j + LANES <= stop; j += LANES) {
            F(exp_sum_block)(e + j, acc, x + j, m, t, 0);
            if (store && i + LANES <= n) {
                for (int l = 0; l < LANES; l++)
                    v[l] = ready[i + l] * c;
                F(store_block)(out + i, v, stream);
                i += LANES;
            }
            for (int b = 0; b < LANES * (int)sizeof(REAL) && fetched < ahead_bytes; b += 64) {
                FS_PREFETCH_L2(ahead + fetched);
                fetched += 64;
            }
        }
        total += F(lanes_sum)(acc);
    }
    if (compute && j < n) { /* the last part of a block, padded with -inf: exact zeros */
        for (int l = 0; l < LANES; l++)
            acc[l] = 0;
        F(load_tail)(v, x + j, n - j, -INFINITY);
        F(exp_sum_block)(v, acc, v, m, t, 0);
        F(store_tail)(e + j, v, n - j);
        total += F(lanes_sum)(acc);
    }
    if (store) {
        for (; i + LANES <= n; i += LANES) {
            for (int l = 0; l < LANES; l++)
                v[l] = ready[i + l] * c;
            F(store_block)(out + i, v, stream);
        }
        for (; i < n; i++)
            out[i] = ready[i] * c;
    }
    return total;
}
#endif

/* pipeline_step with t = 1 made a constant where it is 1 */
static double F(pipeline_step_any)(const REAL *x, REAL *e, REAL m, F(factor) t, REAL *out,
                                   const REAL *ready, REAL c, const char *ahead, int64_t n)
{
    if (F(is_one)(t))
        return F(pipeline_step)(x, e, m, F(unit)(), out, ready, c, ahead, n, 1, 1);
    return F(pipeline_step)(x, e, m, t, out, ready, c, ahead, n, 1, 1);
}

/*
 * softmax of long rows whose output streams, given a workspace of two rows:
 * each exponential is computed once, kept in the workspace until the row's
 * sum is known, and while one row's exponentials are computed the previous
 * row's output streams out of the other half of the workspace and the row
 * after is prefetched. Arithmetic, memory reads and memory writes then
 * overlap instead of taking turns: float32, 2 threads, Zen 4, in one
 * process, 1024 x 32000 0.28-0.30 -> 0.17-0.20 ns/element, about the time
 * of a streamed copy (0.17-0.19); 2048 x 16384 0.29 -> 0.22. The builds
 * without vector rows (no vector extensions, float64 with SSE2) take the
 * steps in blocks of LANES.
 */
static void F(softmax_pipelined)(const REAL *x, int64_t x_stride, REAL *out, int64_t out_stride,
                                 int64_t rows, int64_t n, F(factor) t, REAL *work)
{
    REAL *ready = work, *filling = work + n;
    REAL c = NAN; /* of the row whose exponentials are in `ready`: NaN for a NaN row */
    for (int64_t r = -1; r < rows; r++) {
        const REAL *next = r + 1 < rows ? x + (r + 1) * x_stride : NULL;
        const char *ahead = r + 2 < rows ? (const char *)(x + (r + 2) * x_stride) : NULL;
        REAL *row_out = r >= 0 ? out + r * out_stride : NULL;
        REAL m = next ? F(pipeline_max)(next, n) : NAN;
        REAL c_next = NAN;
        if (next && F(is_finite)(m) && row_out) {
            c_next = (REAL)(1.0 / F(pipeline_step_any)(next, filling, m, t, row_out, ready, c,
                                                      ahead, n));
        } else if (next && F(is_finite)(m)) { /* the first row: nothing to store yet */
            c_next = (REAL)(1.0 / (F(is_one)(t) ? F(pipeline_step)(next, filling, m, F(unit)(),
                                                                    NULL, NULL, 0, ahead, n, 1, 0)
                                                 : F(pipeline_step)(next, filling, m, t, NULL,
                                                                    NULL, 0, ahead, n, 1, 0)));
        } else if (row_out) { /* the last row, or a next row without a finite maximum */
            F(pipeline_step)(NULL, NULL, m, t, row_out, ready, c, NULL, n, 0, 1);
        }
        c = c_next;
        REAL *swap = ready;
        ready = filling;
        filling = swap;
    }
}

#if VECTOR_ROWS
/*
 * softmax_rescaled takes rows of up to RESCALE_MAX_BYTES, whose output is
 * still in cache (L3) when it is scaled (rows of 4 MiB were 3-7 % slower
 * than with two exponentials per element), in parts of CHUNK elements (256
 * or 4096 were slower): at most RESCALE_PARTS, whose maxima fit on the stack.
 */
#define RESCALE_MAX_BYTES ((int64_t)2 << 20)
#define RESCALE_PARTS (RESCALE_MAX_BYTES / CHUNK / (int64_t)sizeof(REAL))
static inline int F(rescales_rows)(int64_t cols)
{
    return cols * (int64_t)sizeof(REAL) <= RESCALE_MAX_BYTES;
}

/*
 * One step of softmax_rescaled. When x is not NULL: row x's exponentials
 * into e (its output row, which may be x), a part at a time against the
 * running maximum, kept per part in maxima[]; returns their sum and the
 * row's maximum in *max_out. Meanwhile, two vectors per turn, the previous
 * row's output (NULL for the first row) is scaled in place by the factor of
 * each of its parts, and `ahead` (NULL or the row after x) is prefetched
 * into L2 two lines per turn. The scaling trails the exponentials by
 * RESCALE_LAG elements: rows whose length in bytes is a multiple of 4096
 * (256000 floats) would otherwise load each vector of `out` at the same
 * address modulo 4096 as the store to e just before it, which the CPU takes
 * for a possible dependence (C harness, one thread, 64 x 256000: 0.321 ->
 * 0.307 ns/element; at two threads, bound by memory, unchanged).
 */
#define RESCALE_LAG 64
FS_ALWAYS_INLINE double F(rescale_step)(const REAL *x, REAL *e, int64_t n, F(factor) t,
                                        REAL *maxima, REAL *max_out, REAL *out,
                                        const REAL *factors, const char *ahead)
{
    int64_t i = 0, j = 0, fetched = 0, ahead_bytes = ahead ? n * (int64_t)sizeof(REAL) : 0;
    int64_t next_part = CHUNK; /* where `out` takes the next factor */
    F(vec) f = F(vsplat)(out ? factors[0] : 0);
    REAL m = -INFINITY;
    F(vec_wide) total = {0};
    for (int64_t p = 0; x && j < n; p++) {
        int64_t part_end = j + CHUNK < n ? j + CHUNK : n;
        REAL part_max = F(staged_max)(x + j, part_end - j)[0];
        if (part_max > m) {
            if (m > -INFINITY)
                total *= exp(((double)m - (double)part_max) * F(factor_value)(t));
            m = part_max;
        }
        maxima[p] = m;
        /* while every element so far is -inf or NaN, no shift: exact zeros, or NaN */
        F(vec) mv = F(vsplat)(m > -INFINITY ? m : 0);
        while (j < part_end) {
            int64_t stop = j + MEDIUM_PART < part_end ? j + MEDIUM_PART : part_end;
            F(vec) s0 = F(vsplat)(0), s1 = s0;
            for (; j + 2 * VEC <= stop; j += 2 * VEC) {
                F(vec) e0 = VECTOR_EXP(F(vgap)(F(vload)(x + j), mv, t, 0));
                F(vec) e1 = VECTOR_EXP(F(vgap)(F(vload)(x + j + VEC), mv, t, 0));
                s0 += e0;
                s1 += e1;
                F(vstore)(e + j, e0, 0);
                F(vstore)(e + j + VEC, e1, 0);
                if (out && j >= RESCALE_LAG && i + 2 * VEC <= n) {
                    if (i == next_part) {
                        f = F(vsplat)(factors[i / CHUNK]);
                        next_part += CHUNK;
                    }
                    F(vstore)(out + i, F(vload)(out + i) * f, 0);
                    F(vstore)(out + i + VEC, F(vload)(out + i + VEC) * f, 0);
                    i += 2 * VEC;
                }
                F(prefetch_turn)(ahead, ahead_bytes, &fetched);
            }
            for (; j + VEC <= stop; j += VEC) { /* the row's last elements */
                F(vec) v = VECTOR_EXP(F(vgap)(F(vload)(x + j), mv, t, 0));
                s0 += v;
                F(vstore)(e + j, v, 0);
            }
            if (j < stop) { /* the -inf padding adds exact zeros */
                F(vec) v = F(vload_first)(x + j, stop - j, -INFINITY);
                v = VECTOR_EXP(F(vgap)(v, mv, t, 0));
                s1 += v;
                F(vstore_first)(e + j, v, stop - j);
                j = stop;
            }
            total += __builtin_convertvector(s0 + s1, F(vec_wide)); /* lane by lane */
        }
    }
    for (; out && i + VEC <= n; i += VEC) { /* the rest, all of it after the last row */
        if (i == next_part) {
            f = F(vsplat)(factors[i / CHUNK]);
            next_part += CHUNK;
        }
        F(vstore)(out + i, F(vload)(out + i) * f, 0);
    }
    for (; out && i < n; i++)
        out[i] *= factors[i / CHUNK];
    *max_out = m;
    return F(wide_sum_all)(&total);
}

/*
 * A row's part maxima into the factors that turn its exponentials into its
 * softmax, exp((part maximum - m) * t) / s, in place; all NaN for a row that
 * is not usable (a NaN, an infinite maximum or only -inf).
 */
static void F(rescale_factors)(REAL *maxima, int64_t parts, REAL m, double s, F(factor) t)
{
    int usable = F(usable)(m, s);
    REAL last = NAN, factor = NAN;
    for (int64_t p = 0; p < parts; p++) {
        if (usable && maxima[p] != last) { /* the running maximum changes seldom */
            last = maxima[p];
            factor = (REAL)(exp(((double)last - (double)m) * F(factor_value)(t)) / s);
        }
        maxima[p] = factor;
    }
}

/*
 * softmax of long rows whose output streams but that have no workspace (too
 * few rows for one under the memory rule): the output row is the workspace.
 * Each exponential is computed once and stored in the output, against the
 * running maximum of its part of the row; once the row's maximum and sum
 * are known, each part is scaled in place. The scaling of one row is
 * interleaved with the exponentials of the next, while the row after is
 * prefetched, so that arithmetic and memory traffic overlap. The output is
 * read and written twice, but from cache the second time; the row is read
 * once. Float32, 2 threads, Zen 4, against two exponentials per element and
 * a streamed output: 64 x 256000 0.288 -> 0.245 ns/element beside PyTorch in
 * one process (0.25-0.32 -> 0.17-0.26 in alternating processes), 400 x 32768
 * 0.294 -> 0.262, 32 x 524288 0.293 -> 0.259.
 */
static void F(softmax_rescaled)(const REAL *x, int64_t x_stride, REAL *out, int64_t out_stride,
                                int64_t rows, int64_t n, F(factor) t)
{
    REAL maxima[2][RESCALE_PARTS];
    REAL *filling = maxima[0], *factors = maxima[1];
    int64_t parts = (n + CHUNK - 1) / CHUNK;
    for (int64_t r = -1; r < rows; r++) {
        const REAL *next = r + 1 < rows ? x + (r + 1) * x_stride : NULL;
        REAL *next_out = next ? out + (r + 1) * out_stride : NULL;
        const char *ahead = r + 2 < rows ? (const char *)(x + (r + 2) * x_stride) : NULL;
        REAL *row_out = r >= 0 ? out + r * out_stride : NULL;
        REAL m;
        double s = F(is_one)(t) ? F(rescale_step)(next, next_out, n, F(unit)(), filling, &m,
                                                  row_out, factors, ahead)
                                : F(rescale_step)(next, next_out, n, t, filling, &m,
                                                  row_out, factors, ahead);
        if (next)
            F(rescale_factors)(filling, parts, m, s, t);
        REAL *swap = factors;
        factors = filling;
        filling = swap;
    }
}
#endif

/*
 * Elements of workspace softmax uses for a call over rows of cols classes,
 * part of an output of output_bytes: two rows where they stream.
 */
static int64_t F(softmax_work)(int64_t cols, int64_t output_bytes)
{
    return F(streams_long_rows)(cols, output_bytes) ? 2 * cols : 0;
}

static void F(softmax)(const REAL *x, int64_t x_stride, REAL *out, int64_t out_stride,
                       int64_t rows, int64_t cols, double inv_temperature, int64_t output_bytes,
                       REAL *work)
{
    F(factor) t = F(factor_of)(inv_temperature);
    if (cols <= SOFTMAX_TILE_COLS) {
        F(softmax_short)(x, x_stride, out, out_stride, rows, cols, t, output_bytes);
        return;
    }
#if VECTOR_ROWS
    if (cols <= MEDIUM_COLS) {
        int stream = F(streams_medium)(out, cols, output_bytes);
        F(softmax_medium)(x, x_stride, out, out_stride, rows, cols, t, stream);
        if (stream)
            fs_stream_fence();
        return;
    }
#endif
    int stream = F(streams_long_rows)(cols, output_bytes);
    if (stream && work) {
        F(softmax_pipelined)(x, x_stride, out, out_stride, rows, cols, t, work);
#if VECTOR_ROWS
    } else if (stream && F(rescales_rows)(cols)) {
        F(softmax_rescaled)(x, x_stride, out, out_stride, rows, cols, t);
#endif
    } else {
        for (int64_t r = 0; r < rows; r++)
            F(softmax_row)(x + r * x_stride, out + r * out_stride, cols, t, stream);
    }
    if (stream)
        fs_stream_fence();
}

#if VECTOR_ROWS
/*
 * The part (of MEDIUM_PART elements) of row x that lse_pipeline_step takes
 * first, the others following in turn and wrapping around: the one whose
 * loads run about 1.5 KiB ahead of the stores to `out` modulo 4 KiB. A
 * load whose address bits 11:0 match those of a store still in flight
 * waits for it (4K aliasing), and the two streams advance at one pace: with
 * rows of 256000 float32 (a stride of a whole number of pages) and x and
 * out both 16 bytes past a page, as NumPy allocates them, each load met the
 * store made a turn before it and log_softmax took 18.9 ms instead of 11.7
 * (64 x 256000, AVX2, 2 threads). The order of the parts changes only the
 * order of the sum's terms.
 */
static inline int64_t F(first_part)(const REAL *x, const REAL *out, int64_t parts)
{
    const int64_t page = 4096, target = 1536, part_bytes = MEDIUM_PART * (int64_t)sizeof(REAL);
    int64_t best = 0, best_miss = page;
    for (int64_t p = 0; p < parts && p * part_bytes < page; p++) {
        int64_t ahead = (int64_t)(((uintptr_t)x + (uintptr_t)(p * part_bytes) - (uintptr_t)out) %
                                  (uintptr_t)page);
        int64_t miss = ahead > target ? ahead - target : target - ahead;
        if (miss < best_miss) {
            best_miss = miss;
            best = p;
        }
    }
    return best;
}

/*
 * One row's maximum and sum for log_softmax_pipelined, while the previous
 * row's output streams. Each part of MEDIUM_PART elements of x, from the
 * one first_part picks on, gives its maximum (the sum so far rescaled when
 * it grows), then its exponentials against the running maximum, two vectors
 * per turn; each turn also stores two vectors of out = (src - src_max) * t -
 * c and prefetches two lines of `ahead` (NULL or the row after x) into L2.
 * Returns the row's maximum in *max_out and its sum (NaN where the row holds
 * a NaN) in *sum_out. x may be NULL (the last row: stores only); out may be
 * NULL (the first row).
 */
FS_ALWAYS_INLINE void F(lse_pipeline_step)(const REAL *x, F(factor) t, REAL *max_out,
                                           double *sum_out, REAL *out, const REAL *src,
                                           REAL src_max, REAL c, const char *ahead, int64_t n)
{
    int stream = out && (uintptr_t)out % sizeof(REAL) == 0;
    int64_t i = 0, j = 0, fetched = 0, ahead_bytes = ahead ? n * (int64_t)sizeof(REAL) : 0;
    F(vec) om = F(vsplat)(src_max);
    if (stream && (i = F(stream_head)(out, n)))
        F(output_part)(out, src, i, src_max, t, c, 1);
    REAL m = -INFINITY;
    int nan_seen = 0;
    F(vec_wide) total = {0};
    int64_t parts = (n + MEDIUM_PART - 1) / MEDIUM_PART;
    int64_t first = x && out ? F(first_part)(x, out + i, parts) : 0;
    for (int64_t k = 0; x && k < parts; k++) {
        j = (k + first < parts ? k + first : k + first - parts) * MEDIUM_PART;
        int64_t stop = j + MEDIUM_PART < n ? j + MEDIUM_PART : n;
        REAL part_max = F(staged_max)(x + j, stop - j)[0];
        if (part_max > m) {
            if (m > -INFINITY)
                total *= exp(((double)m - (double)part_max) * F(factor_value)(t));
            m = part_max;
        }
        if (!F(is_finite)(m)) { /* no sum: only a NaN among -inf still counts */
            nan_seen |= m < 0 && F(has_nan)(x + j, stop - j);
            j = stop;
            continue;
        }
        F(vec) mv = F(vsplat)(m), s0 = F(vsplat)(0), s1 = s0;
        for (; j + 2 * VEC <= stop; j += 2 * VEC) {
            s0 += VECTOR_EXP(F(vgap)(F(vload)(x + j), mv, t, 0));
            s1 += VECTOR_EXP(F(vgap)(F(vload)(x + j + VEC), mv, t, 0));
            if (out && i + 2 * VEC <= n) {
                F(vstore)(out + i, F(vgap)(F(vload)(src + i), om, t, c), stream);
                F(vstore)(out + i + VEC, F(vgap)(F(vload)(src + i + VEC), om, t, c), stream);
                i += 2 * VEC;
            }
            F(prefetch_turn)(ahead, ahead_bytes, &fetched);
        }
        for (; j + VEC <= stop; j += VEC)
            s0 += VECTOR_EXP(F(vgap)(F(vload)(x + j), mv, t, 0));
        if (j < stop) { /* the -inf padding adds exact zeros */
            s1 += VECTOR_EXP(F(vgap)(F(vload_first)(x + j, stop - j, -INFINITY), mv, t, 0));
            j = stop;
        }
        total += __builtin_convertvector(s0 + s1, F(vec_wide)); /* lane by lane */
    }
    if (out) {
        for (; i + VEC <= n; i += VEC)
            F(vstore)(out + i, F(vgap)(F(vload)(src + i), om, t, c), stream);
        if (i < n)
            F(output_part)(out + i, src + i, n - i, src_max, t, c, 1);
    }
    *max_out = m;
    *sum_out = nan_seen ? NAN : F(wide_sum_all)(&total);
}

/*
 * log_softmax of long rows whose output streams: while one row's maximum
 * and sum are taken, the previous row's output streams and the row after
 * is prefetched, so that the exponentials, the reads and the writes overlap
 * instead of taking turns (the output needs no exponential, so no
 * workspace). Interleaving the stores with the exponentials two vectors at
 * a time is what pays: float32, 2 threads, Zen 4, in one process, 1024 x
 * 32000 0.26-0.37 -> 0.19-0.25 ns/element, 64 x 256000 0.26-0.27 ->
 * 0.22-0.23, where alternating parts of 256 or 1024 elements of the two
 * rows gained 0-5 %.
 */
static void F(log_softmax_pipelined)(const REAL *x, int64_t x_stride, REAL *out,
                                     int64_t out_stride, int64_t rows, int64_t n, F(factor) t)
{
    REAL m = NAN, c = NAN; /* of the row whose output is due: c NaN for a NaN row */
    for (int64_t r = -1; r < rows; r++) {
        const REAL *next = r + 1 < rows ? x + (r + 1) * x_stride : NULL;
        const char *ahead = r + 2 < rows ? (const char *)(x + (r + 2) * x_stride) : NULL;
        REAL *row_out = r >= 0 ? out + r * out_stride : NULL;
        const REAL *row = r >= 0 ? x + r * x_stride : NULL;
        REAL next_m;
        double next_s;
        if (F(is_one)(t))
            F(lse_pipeline_step)(next, F(unit)(), &next_m, &next_s, row_out, row, m, c, ahead, n);
        else
            F(lse_pipeline_step)(next, t, &next_m, &next_s, row_out, row, m, c, ahead, n);
        m = next_m;
        c = F(usable)(next_m, next_s) ? (REAL)log(next_s) : (REAL)NAN;
    }
}
#endif

static void F(log_softmax)(const REAL *x, int64_t x_stride, REAL *out, int64_t out_stride,
                           int64_t rows, int64_t cols, double inv_temperature,
                           int64_t output_bytes)
{
    F(factor) t = F(factor_of)(inv_temperature);
    if (cols <= SOFTMAX_TILE_COLS) {
        F(log_softmax_short)(x, x_stride, out, out_stride, rows, cols, t);
        return;
    }
#if VECTOR_ROWS
    if (cols <= MEDIUM_COLS) {
        int stream = F(streams_medium)(out, cols, output_bytes);
        F(log_softmax_medium)(x, x_stride, out, out_stride, rows, cols, t, stream);
        if (stream)
            fs_stream_fence();
        return;
    }
#endif
    int stream = F(streams)(out, out_stride, output_bytes) ||
                 F(streams_long_rows)(cols, output_bytes);
#if VECTOR_ROWS
    if (F(pipelines_log_rows)(cols, output_bytes)) {
        F(log_softmax_pipelined)(x, x_stride, out, out_stride, rows, cols, t);
        fs_stream_fence();
        return;
    }
#endif
    for (int64_t r = 0; r < rows; r++)
        F(online_output_row)(x + r * x_stride, out + r * out_stride, cols, t, 1, stream);
    if (stream)
        fs_stream_fence();
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
        const REAL *row = x + r * x_stride;
        F(online_max_sum)(row, cols, F(factor_of)(1), &m, &s);
        if (F(is_finite)(m))
            out[r] = (REAL)((double)m + log(s)); /* NaN if the row holds a NaN */
        else
            out[r] = F(has_nan)(row, cols) ? (REAL)NAN : m; /* NaN wins over +-inf */
    }
}

/* ------------------------------------------------------------------ */
/* Backward passes                                                     */
/* ------------------------------------------------------------------ */

static inline void F(softmax_backward_block)(REAL *out, const REAL *g, const REAL *y, REAL dot)
{
    REAL v[LANES];
    for (int l = 0; l < LANES; l++)
        v[l] = y[l] * (g[l] - dot);
    for (int l = 0; l < LANES; l++)
        out[l] = v[l];
}

/*
 * Short rows a tile at a time, lanes across rows as in softmax_short: both
 * inputs are loaded before anything is stored, so `out` may be either input.
 * Below BACKWARD_SHORT_COLS the tile beats a row at a time (1048576 x 10
 * float32, one thread: 0.9 against 5.0 ns per element); above it the two
 * tiles cost more than the row loop's tail (measured at 16-32 classes).
 */
#define BACKWARD_SHORT_COLS (sizeof(REAL) == 4 ? 24 : 12)

/*
 * softmax_backward (log_form 0: out = y * (g - sum(g * y))) or
 * log_softmax_backward (log_form 1: out = g - exp(logp) * sum(g)) of short
 * rows; `saved` is y or logp.
 */
static inline void F(backward_short)(const REAL *grad, int64_t grad_stride, const REAL *saved,
                                     int64_t saved_stride, REAL *out, int64_t out_stride,
                                     int64_t rows, int64_t cols, int log_form)
{
    REAL tg[SHORT_COLS][TILE_ROWS], ts[SHORT_COLS][TILE_ROWS], acc[TILE_ROWS];
    for (int64_t r0 = 0; r0 < rows; r0 += TILE_ROWS) {
        int64_t n = rows - r0 < TILE_ROWS ? rows - r0 : TILE_ROWS;
        F(tile_load)(tg, grad + r0 * grad_stride, grad_stride, n, cols);
        F(tile_load)(ts, saved + r0 * saved_stride, saved_stride, n, cols);
        for (int l = 0; l < TILE_ROWS; l++)
            acc[l] = 0;
        for (int64_t j = 0; j < cols; j++)
            for (int l = 0; l < TILE_ROWS; l++)
                acc[l] += log_form ? tg[j][l] : tg[j][l] * ts[j][l];
        for (int64_t j = 0; j < cols; j++)
            for (int l = 0; l < TILE_ROWS; l++)
                tg[j][l] = log_form ? tg[j][l] - EXP_ANY(ts[j][l]) * acc[l]
                                    : ts[j][l] * (tg[j][l] - acc[l]);
        F(tile_store)(out + r0 * out_stride, out_stride, tg, n, cols);
    }
}

static void F(softmax_backward)(const REAL *grad, int64_t grad_stride, const REAL *y,
                                int64_t y_stride, REAL *out, int64_t out_stride, int64_t rows,
                                int64_t cols)
{
    if (cols <= BACKWARD_SHORT_COLS) {
        F(backward_short)(grad, grad_stride, y, y_stride, out, out_stride, rows, cols, 0);
        return;
    }
    REAL vg[LANES], vy[LANES];
    for (int64_t r = 0; r < rows; r++) {
        const REAL *g = grad + r * grad_stride, *p = y + r * y_stride;
        REAL *dest = out + r * out_stride;
        REAL dot = (REAL)F(row_dot)(g, p, cols);
        int64_t i = 0;
        for (; i + LANES <= cols; i += LANES)
            F(softmax_backward_block)(dest + i, g + i, p + i, dot);
        if (i < cols) {
            F(load_tail)(vg, g + i, cols - i, 0);
            F(load_tail)(vy, p + i, cols - i, 0);
            F(softmax_backward_block)(vg, vg, vy, dot);
            F(store_tail)(dest + i, vg, cols - i);
        }
    }
}

static inline void F(log_softmax_backward_block)(REAL *out, const REAL *g, const REAL *logp, REAL total)
{
    REAL v[LANES];
    for (int l = 0; l < LANES; l++)
        v[l] = g[l] - EXP_ANY(logp[l]) * total;
    for (int l = 0; l < LANES; l++)
        out[l] = v[l];
}

static void F(log_softmax_backward)(const REAL *grad, int64_t grad_stride, const REAL *logp,
                                    int64_t logp_stride, REAL *out, int64_t out_stride,
                                    int64_t rows, int64_t cols)
{
    if (cols <= BACKWARD_SHORT_COLS) {
        F(backward_short)(grad, grad_stride, logp, logp_stride, out, out_stride, rows, cols,
                          1);
        return;
    }
    REAL vg[LANES], vl[LANES];
    for (int64_t r = 0; r < rows; r++) {
        const REAL *g = grad + r * grad_stride, *lp = logp + r * logp_stride;
        REAL *dest = out + r * out_stride;
        REAL total = (REAL)F(row_sum)(g, cols);
        int64_t i = 0;
        for (; i + LANES <= cols; i += LANES)
            F(log_softmax_backward_block)(dest + i, g + i, lp + i, total);
        if (i < cols) {
            F(load_tail)(vg, g + i, cols - i, 0);
            F(load_tail)(vl, lp + i, cols - i, 0);
            F(log_softmax_backward_block)(vg, vg, vl, total);
            F(store_tail)(dest + i, vg, cols - i);
        }
    }
}

/* ------------------------------------------------------------------ */
/* Cross-entropy                                                       */
/* ------------------------------------------------------------------ */

/* The first n weights, or ones (w NULL), padded to LANES with zeros. */
static inline void F(load_weights_tail)(REAL *v, const REAL *w, int64_t n)
{
    for (int l = 0; l < LANES; l++)
        v[l] = l < n ? 1 : 0;
    if (w)
        F(load_tail)(v, w, n, 0);
}

/* acc += w * (m - z) * GAP_SCALE, w NULL meaning ones */
static inline void F(smooth_block)(REAL *acc, const REAL *z, const REAL *w,
                                   REAL scaled_m)
{
    if (w)
        for (int l = 0; l < LANES; l++)
            acc[l] += w[l] * (scaled_m - z[l] * GAP_SCALE);
    else
        for (int l = 0; l < LANES; l++)
            acc[l] += scaled_m - z[l] * GAP_SCALE;
}

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
        for (; i + LANES <= end; i += LANES)
            F(smooth_block)(acc, z + i, w ? w + i : NULL, scaled_m);
        if (i < end) {
            F(load_tail)(vz, z + i, end - i, m);
            F(load_weights_tail)(vw, w ? w + i : NULL, end - i);
            F(smooth_block)(acc, vz, vw, scaled_m);
        }
        total += F(lanes_sum)(acc);
    }
    return total / GAP_SCALE;
}

/*
 * g = a * e - b * w (w NULL meaning ones) from the row's exponentials e,
 * except g[y_at] = g_y when 0 <= y_at < LANES (the target's entry, computed
 * apart).
 */
static inline void F(ce_grad_block)(REAL *g, const REAL *e, const REAL *w, REAL a, REAL b,
                                    int64_t y_at, REAL g_y, int stream)
{
    REAL v[LANES];
    if (w)
        for (int l = 0; l < LANES; l++)
            v[l] = a * e[l] - b * w[l];
    else
        for (int l = 0; l < LANES; l++)
            v[l] = a * e[l] - b;
    if (y_at >= 0 && y_at < LANES)
        v[y_at] = g_y;
    F(store_block)(g, v, stream);
}

/*
 * The gradient row of ce_row from its exponentials e (e may be g), g[y] =
 * g_y; streamed stores when `stream` and g is aligned.
 */
static void F(ce_grad_store)(const REAL *e, const REAL *w, REAL *g, int64_t n, REAL a, REAL b,
                             int64_t y, REAL g_y, int stream)
{
    REAL last[LANES], vw[LANES];
    int64_t rest = n % LANES, i = 0, tail = n - LANES;
    stream = stream && fs_stream_aligned(g);
    if (rest && n >= LANES) /* the overlapping last block, before any store */
        F(ce_grad_block)(last, e + tail, w ? w + tail : NULL, a, b, y - tail, g_y, 0);
    if (stream)
        for (; i + LANES <= n; i += LANES)
            F(ce_grad_block)(g + i, e + i, w ? w + i : NULL, a, b, y - i, g_y, 1);
    else
        for (; i + LANES <= n; i += LANES)
            F(ce_grad_block)(g + i, e + i, w ? w + i : NULL, a, b, y - i, g_y, 0);
    if (rest && n >= LANES) {
        F(store_tail)(g + tail, last, LANES);
    } else if (rest) {
        F(load_tail)(last, e + i, n - i, 0);
        F(load_weights_tail)(vw, w ? w + i : NULL, n - i);
        F(ce_grad_block)(last, last, vw, a, b, y - i, g_y, 0);
        F(store_tail)(g + i, last, n - i);
    }
}

static double F(weight_total)(const REAL *w, int64_t n)
{
    return w ? F(row_sum)(w, n) : (double)n;
}

/*
 * Rows of at most CE_WORK_COLS classes keep their exponentials in a local
 * workspace when the gradient is streamed, so that it is written once;
 * longer rows keep them in the gradient itself, which then is not streamed.
 */
#define CE_WORK_COLS 2048

/*
 * Loss and gradient of one row against class y (see fastsoftmax.h).
 * Everything is taken relative to the row maximum m, so lse - z[j] is
 * log(s) + (m - z[j]) with both parts computed without cancellation.
 * Without a gradient, m and s come from one online pass. With one, each
 * exponential is computed once: the maximum first, then the exponentials
 * and their sum into `work` (CE_WORK_COLS elements) or, when work is NULL,
 * into g itself (g may be z), then scaled there into the gradient. Computing
 * them again for the gradient instead took 2x the time of softmax over 1000
 * classes where the exponential bounds it (AVX2, float32, 2 threads: 16384 x
 * 1000 26.4 ms against softmax's 12.5).
 */
static void F(ce_row)(const REAL *z, int64_t y, const REAL *w, double w_total, REAL *loss,
                      REAL *g, REAL *work, int64_t n, const fs_ce_options *o, int stream)
{
    REAL m;
    double s = 0, smooth = 0, eps = o->label_smoothing;
    double z_y = (double)z[y], w_y = w ? (double)w[y] : 1.0;
    REAL *e = work ? work : g;
    if (g) {
#if VECTOR_ROWS /* the loops of the medium rows, whatever the row's length */
        F(vec) tail, vm = F(medium_max)(z, n, &tail);
        m = vm[0];
#else
        m = F(row_max)(z, n);
#endif
        if (F(is_finite)(m)) {
            /* the smoothing sum reads z before the exponentials overwrite it (g = z) */
            if (eps > 0)
                smooth = F(ce_smooth_sum)(z, w, n, m);
#if VECTOR_ROWS
            s = F(medium_sum_exp)(z, n, tail, vm, F(unit)(), e, NULL);
#else
            s = F(exp_store_sum)(z, e, n, m, F(unit)());
#endif
        }
    } else {
        F(online_max_sum)(z, n, F(factor_of)(1), &m, &s);
        if (F(usable)(m, s) && eps > 0)
            smooth = F(ce_smooth_sum)(z, w, n, m);
    }
    if (!F(usable)(m, s)) {
        /* a NaN softmax: the formulas give NaN everywhere (lse is not finite) */
        *loss = NAN;
        if (g)
            F(fill)(g, n, NAN);
        return;
    }
    double log_s = log(s), lse = (double)m + log_s;
    double total = (1.0 - eps) * w_y * (log_s + ((double)m - z_y));
    if (eps > 0)
        total += eps / (double)n * (log_s * w_total + smooth);
    total += o->z_loss * lse * lse;
    *loss = (REAL)total;
    if (!g)
        return;
    double coeff = (1.0 - eps) * w_y + eps / (double)n * w_total + 2.0 * o->z_loss * lse;
    double a = o->grad_scale * coeff / s;
    double b = o->grad_scale * eps / (double)n;
    /* the target's entry in double: it holds the large cancellation p_y - 1 */
    double g_y = a * exp(z_y - (double)m) - b * w_y - o->grad_scale * (1.0 - eps) * w_y;
    F(ce_grad_store)(e, w, g, n, (REAL)a, (REAL)b, y, (REAL)g_y, stream);
}

/*
 * ce_row for rows of at most SHORT_COLS classes, TILE_ROWS rows at a time in
 * a transposed tile (lanes span rows): the per-element work is vectorized
 * across rows; the few per-row scalars are computed in double.
 */
static void F(cross_entropy_short)(const REAL *logits, int64_t logits_stride,
                                   const int64_t *target, const REAL *w, double w_total,
                                   REAL *loss, REAL *grad, int64_t grad_stride, int64_t rows,
                                   int64_t cols, const fs_ce_options *o)
{
    REAL tile[SHORT_COLS][TILE_ROWS], m[TILE_ROWS], s[TILE_ROWS], log_s[TILE_ROWS];
    REAL smooth[TILE_ROWS], a[TILE_ROWS], target_grad[TILE_ROWS];
    int ignored[TILE_ROWS];
    double eps = o->label_smoothing, gs = o->grad_scale;
    REAL b = (REAL)(gs * eps / (double)cols);
    for (int64_t r0 = 0; r0 < rows; r0 += TILE_ROWS) {
        int64_t n = rows - r0 < TILE_ROWS ? rows - r0 : TILE_ROWS;
        const int64_t *y = target + r0;
        F(tile_load)(tile, logits + r0 * logits_stride, logits_stride, n, cols);
        F(tile_max)(tile, cols, m);
        for (int l = 0; l < TILE_ROWS; l++)
            smooth[l] = 0;
        if (eps > 0) /* sum_j w[j] (m - z[j]), scaled as in ce_smooth_sum */
            for (int64_t j = 0; j < cols; j++) {
                REAL w_j = w ? w[j] : 1;
                for (int l = 0; l < TILE_ROWS; l++)
                    smooth[l] += w_j * (m[l] * GAP_SCALE - tile[j][l] * GAP_SCALE);
            }
        for (int64_t l = 0; l < n; l++) {
            ignored[l] = y[l] == o->ignore_index;
            a[l] = ignored[l] ? 0 : tile[y[l]][l]; /* z[y] */
        }
        F(tile_exp_sum)(tile, cols, m, F(unit)(), s);
        for (int l = 0; l < TILE_ROWS; l++)
            log_s[l] = LANE_LOG(s[l]);
        for (int64_t l = 0; l < n; l++) {
            REAL *row_loss = loss + r0 + l;
            if (ignored[l]) {
                *row_loss = 0;
                a[l] = target_grad[l] = 0;
                continue;
            }
            double w_y = w ? (double)w[y[l]] : 1.0, ls = (double)log_s[l];
            double lse = (double)m[l] + ls;
            double total = (1.0 - eps) * w_y * (ls + ((double)m[l] - (double)a[l]));
            if (eps > 0)
                total += eps / (double)cols * (ls * w_total + (double)smooth[l] / GAP_SCALE);
            total += o->z_loss * lse * lse;
            double coeff = (1.0 - eps) * w_y + eps / (double)cols * w_total;
            double scale = gs * (coeff + 2.0 * o->z_loss * lse) / (double)s[l];
            double e_y = (double)tile[y[l]][l];
            int usable = F(is_finite)(m[l]) && s[l] == s[l];
            *row_loss = usable ? (REAL)total : (REAL)NAN;
            a[l] = usable ? (REAL)scale : (REAL)NAN;
            /* the target's entry in double: it holds the large cancellation p_y - 1 */
            target_grad[l] = (REAL)(scale * e_y - (double)b * w_y - gs * (1.0 - eps) * w_y);
        }
        if (!grad)
            continue;
        for (int64_t l = n; l < TILE_ROWS; l++)
            ignored[l] = 1;
        for (int64_t j = 0; j < cols; j++) {
            REAL bw = b * (w ? w[j] : 1);
            for (int l = 0; l < TILE_ROWS; l++)
                tile[j][l] = ignored[l] ? 0 : a[l] * tile[j][l] - bw;
        }
        for (int64_t l = 0; l < n; l++)
            if (!ignored[l])
                tile[y[l]][l] = a[l] == a[l] ? target_grad[l] : (REAL)NAN;
        F(tile_store)(grad + r0 * grad_stride, grad_stride, tile, n, cols);
    }
}

static void F(cross_entropy)(const REAL *logits, int64_t logits_stride, const int64_t *target,
                             const REAL *weight, REAL *loss, REAL *grad, int64_t grad_stride,
                             int64_t rows, int64_t cols, const fs_ce_options *o)
{
    double w_total = F(weight_total)(weight, cols);
    if (cols <= SHORT_COLS) {
        F(cross_entropy_short)(logits, logits_stride, target, weight, w_total, loss, grad,
                               grad_stride, rows, cols, o);
        return;
    }
    REAL work[CE_WORK_COLS] __attribute__((aligned(FS_VECTOR_BYTES)));
    int stream = grad && cols <= CE_WORK_COLS && F(streams)(grad, grad_stride, o->grad_bytes);
    for (int64_t r = 0; r < rows; r++) {
        REAL *g = grad ? grad + r * grad_stride : NULL;
        if (target[r] == o->ignore_index) {
            loss[r] = 0;
            if (g)
                F(fill)(g, cols, 0);
            continue;
        }
        F(ce_row)(logits + r * logits_stride, target[r], weight, w_total, loss + r, g,
                  stream ? work : NULL, cols, o, stream);
    }
    if (stream)
        fs_stream_fence();
}

/* acc_q += w q and acc_gap += w q (m - z) GAP_SCALE with q = keep t + spread */
static inline void F(probs_sums_block)(REAL *acc_q, REAL *acc_gap, const REAL *z,
                                       const REAL *t, const REAL *w, REAL scaled_m,
                                       REAL keep, REAL spread)
{
    for (int l = 0; l < LANES; l++) {
        REAL q = keep * t[l] + spread;
        q = w ? q * w[l] : q;
        acc_q[l] += q;
        acc_gap[l] += q * (scaled_m - z[l] * GAP_SCALE);
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
            F(probs_sums_block)(acc_q, acc_gap, z + i, t + i, w ? w + i : NULL,
                                scaled_m, keep, spread);
        if (i < end) {
            F(load_tail)(vz, z + i, end - i, m);
            F(load_tail)(vt, t + i, end - i, 0);
            F(load_weights_tail)(vw, w ? w + i : NULL, end - i);
            F(probs_sums_block)(acc_q, acc_gap, vz, vt, vw, scaled_m, keep, spread);
        }
        total_q += F(lanes_sum)(acc_q);
        total_gap += F(lanes_sum)(acc_gap);
    }
    *weighted_gap = total_gap / GAP_SCALE;
    return total_q;
}

/* g = a * exp(z - m) - c * w * (keep t + spread), w NULL meaning ones */
static inline void F(probs_grad_block)(REAL *g, const REAL *z, const REAL *t, const REAL *w,
                                       REAL m, REAL a, REAL c, REAL keep, REAL spread,
                                       int stream)
{
    REAL v[LANES];
    for (int l = 0; l < LANES; l++) {
        REAL q = keep * t[l] + spread;
        q = w ? q * w[l] : q;
        v[l] = a * EXP(z[l] - m) - c * q;
    }
    F(store_block)(g, v, stream);
}

static void F(ce_probs_grad_store)(const REAL *z, const REAL *t, const REAL *w, REAL *g,
                                   int64_t n, REAL m, REAL a, REAL c, REAL keep, REAL spread,
                                   int stream)
{
    REAL last[LANES], vt[LANES], vw[LANES];
    int64_t rest = n % LANES, i = 0, tail = n - LANES;
    stream = stream && fs_stream_aligned(g);
    if (rest && n >= LANES) /* the overlapping last block, before any store */
        F(probs_grad_block)(last, z + tail, t + tail, w ? w + tail : NULL, m, a, c, keep,
                            spread, 0);
    if (stream)
        for (; i + LANES <= n; i += LANES)
            F(probs_grad_block)(g + i, z + i, t + i, w ? w + i : NULL, m, a, c, keep, spread,
                                1);
    else
        for (; i + LANES <= n; i += LANES)
            F(probs_grad_block)(g + i, z + i, t + i, w ? w + i : NULL, m, a, c, keep, spread,
                                0);
    if (rest && n >= LANES) {
        F(store_tail)(g + tail, last, LANES);
    } else if (rest) {
        F(load_tail)(last, z + i, n - i, m);
        F(load_tail)(vt, t + i, n - i, 0);
        F(load_weights_tail)(vw, w ? w + i : NULL, n - i);
        F(probs_grad_block)(last, last, vt, vw, m, a, c, keep, spread, 0);
        F(store_tail)(g + i, last, n - i);
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
    int stream = grad && F(streams)(grad, grad_stride, o->grad_bytes);
    for (int64_t r = 0; r < rows; r++) {
        const REAL *z = logits + r * logits_stride, *t = target + r * target_stride;
        REAL *g = grad ? grad + r * grad_stride : NULL;
        REAL m;
        double s, gap;
        F(online_max_sum)(z, cols, F(factor_of)(1), &m, &s);
        if (!F(usable)(m, s)) {
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
                               spread, stream);
    }
    if (stream)
        fs_stream_fence();
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
 * the online max/sum (online_chunk) runs over the same chunks; then sorted
 * best first and turned into probabilities. (A NaN may enter the heap and disorder it, but
 * then the row's sum is NaN and the output is the NaN row.)
 */
static void F(topk_row)(const REAL *x, int64_t n, F(factor) t, REAL *vals, int64_t *index,
                        int64_t k)
{
    REAL m = -INFINITY;
    double s = 0.0;
    int64_t kept = 0;
    for (int64_t start = 0; start < n; start += CHUNK) {
        int64_t len = n - start < CHUNK ? n - start : CHUNK;
        REAL chunk_max = F(online_chunk)(x + start, len, t, &m, &s);
        if (m == INFINITY)
            break; /* a NaN row whatever follows */
        if (kept == k && !(chunk_max > vals[0]))
            continue; /* nothing in this chunk beats the worst kept logit */
        for (int64_t j = start; j < start + len; j++) {
            if (kept < k)
                F(heap_push)(vals, index, kept++, x[j], j);
            else if (x[j] > vals[0])
                F(heap_sift_down)(vals, index, k, 0, x[j], j);
        }
    }
    if (!F(usable)(m, s)) {
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
        vals[q] = (REAL)(exp(((double)vals[q] - (double)m) * F(factor_value)(t)) / s);
}

/*
 * Rows of at most TOPK_SHORT_COLS a tile at a time, lanes across rows: the
 * exponentials and sums as in softmax_short, then the rank of every logit in
 * its row (how many logits come before it: larger ones, and equal ones at
 * lower indices) from every pair of columns, compared for the whole tile at
 * once; a logit ranked below k goes to that slot. Pairs cost `cols` compares
 * per element, so longer rows keep a heap per row. (1048576 x 10 float32,
 * k = 5, one thread: 6 against 22 ns per element row by row.)
 */
#define TOPK_SHORT_COLS 32

static void F(softmax_topk_short)(const REAL *x, int64_t x_stride, F(factor) t, REAL *probs,
                                  int64_t probs_stride, int64_t *index, int64_t index_stride,
                                  int64_t rows, int64_t cols, int64_t k)
{
    REAL tile[TOPK_SHORT_COLS][TILE_ROWS], e[TOPK_SHORT_COLS][TILE_ROWS], m[TILE_ROWS],
        s[TILE_ROWS];
    int32_t rank[TILE_ROWS];
    for (int64_t r0 = 0; r0 < rows; r0 += TILE_ROWS) {
        int64_t n = rows - r0 < TILE_ROWS ? rows - r0 : TILE_ROWS;
        F(tile_load)(tile, x + r0 * x_stride, x_stride, n, cols);
        memcpy(e, tile, sizeof e[0] * (size_t)cols);
        F(tile_max)(tile, cols, m);
        F(tile_exp_sum)(e, cols, m, t, s);
        for (int l = 0; l < TILE_ROWS; l++)
            s[l] = 1 / s[l];
        for (int64_t j = 0; j < cols; j++) {
            for (int l = 0; l < TILE_ROWS; l++)
                rank[l] = 0;
            for (int64_t i = 0; i < j; i++)
                for (int l = 0; l < TILE_ROWS; l++)
                    rank[l] += tile[i][l] >= tile[j][l];
            for (int64_t i = j + 1; i < cols; i++)
                for (int l = 0; l < TILE_ROWS; l++)
                    rank[l] += tile[i][l] > tile[j][l];
            for (int64_t l = 0; l < n; l++)
                if (rank[l] < k) {
                    probs[(r0 + l) * probs_stride + rank[l]] = e[j][l] * s[l];
                    index[(r0 + l) * index_stride + rank[l]] = j;
                }
        }
        for (int64_t l = 0; l < n; l++)
            if (!F(usable)(m[l], s[l])) /* NaN, +inf or only -inf: the NaN row */
                for (int64_t q = 0; q < k; q++) {
                    probs[(r0 + l) * probs_stride + q] = NAN;
                    index[(r0 + l) * index_stride + q] = q;
                }
    }
}

static void F(softmax_topk)(const REAL *x, int64_t x_stride, double inv_temperature,
                            REAL *probs, int64_t probs_stride, int64_t *index,
                            int64_t index_stride, int64_t rows, int64_t cols, int64_t k)
{
    F(factor) t = F(factor_of)(inv_temperature);
    if (cols <= TOPK_SHORT_COLS) {
        F(softmax_topk_short)(x, x_stride, t, probs, probs_stride, index, index_stride, rows,
                              cols, k);
        return;
    }
    for (int64_t r = 0; r < rows; r++)
        F(topk_row)(x + r * x_stride, cols, t, probs + r * probs_stride,
                    index + r * index_stride, k);
}

/* ------------------------------------------------------------------ */
/* Element-wise exp (for accuracy tests)                               */
/* ------------------------------------------------------------------ */

static void F(exp_map)(const REAL *x, REAL *out, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        out[i] = EXP_ANY(x[i]);
}

/*
 * EXP, the exp the kernels apply to x - max(x). Where they also use its
 * vector form, every other vector of x takes that form, so that the
 * accuracy tests see both.
 */
static void F(exp_nonpositive_map)(const REAL *x, REAL *out, int64_t n)
{
    int64_t i = 0;
#if VECTOR_ROWS
    for (; i + 2 * VEC <= n; i += 2 * VEC) {
        F(vstore)(out + i, VECTOR_EXP(F(vload)(x + i)), 0);
        for (int64_t l = i + VEC; l < i + 2 * VEC; l++)
            out[l] = EXP(x[l]);
    }
#endif
    for (; i < n; i++)
        out[i] = EXP(x[i]);
}

#undef FS_CAT_
#undef FS_CAT
#undef F
#undef LANES
#undef VEC
#undef CHUNK
#undef SHORT_COLS
#undef TILE_ROWS
#undef GAP_SCALE
#undef CE_WORK_COLS
#undef MEDIUM_COLS
#undef SOFTMAX_TILE_COLS
#undef REGISTER_ROWS
#undef REGISTER_MAX_COLS
#undef MEDIUM_PART
#undef LINE_ELEMENTS
