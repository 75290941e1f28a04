/*
 * The memory passes of a row-wise softmax with no arithmetic in them: the
 * floor under any kernel that moves the same bytes the same way. Compare its
 * ns/element with the kernels' (benchmarks/side_by_side.py) on the same
 * machine, in the same minute.
 *
 *   cc -O2 -march=native -pthread benchmarks/memory_floor.c -o memory_floor
 *   ./memory_floor 1024 32000 2        # rows, classes, threads [, repeat]
 *
 * x86-64 only (streaming stores), with the widest vectors the compiler may
 * use (AVX-512, AVX or SSE). float32 rows; the input and the output both
 * start 16 bytes past a 4 KiB page, as NumPy places large arrays. (With the
 * input on the page boundary instead, each load of the streamed copy met a
 * store of the turn before at the same address modulo 4 KiB and waited for
 * it: 13 against 25 GB/s on a Zen 2 machine.) Passes, each row by row, the
 * rows split into one range per thread:
 *
 *   read                 the row's maximum: x read once
 *   copy, streamed       out = x: x read once, out written once
 *   2 reads, streamed    the maximum, then out = x - max: x read twice (the
 *                        second time from the caches when the row fits
 *                        them), out written once; what a softmax over long
 *                        rows does, less its exponentials
 *   2 reads, cached      the same with ordinary stores (read for ownership)
 *
 * Streamed rows store their partial first and last cache lines one element
 * at a time and every whole line in between as streaming stores, as the C
 * backend does. Times are the best of `repeat` runs; GB/s counts 8 bytes per
 * element (one read, one write), as the benchmark tables do.
 */
#define _POSIX_C_SOURCE 200112L
#include <immintrin.h>
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

enum pass { READ, COPY, TWO_READS, TWO_READS_CACHED, PASSES };
static const char *const pass_names[PASSES] = {"read", "copy, streamed", "2 reads, streamed",
                                                "2 reads, cached"};

typedef struct {
    const float *x;
    float *out;
    int64_t first_row, rows, cols;
    enum pass pass;
    float sink; /* keeps the maxima of `read` alive */
} range;

static double seconds(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* The widest vectors the compiler was allowed (-march=native): W floats each. */
#if defined(__AVX512F__)
#define W 16
typedef __m512 vec;
#define VLOAD _mm512_loadu_ps
#define VSTORE _mm512_storeu_ps
#define VSTREAM _mm512_stream_ps
#define VMAX _mm512_max_ps
#define VSUB _mm512_sub_ps
#define VSET1 _mm512_set1_ps
#elif defined(__AVX__)
#define W 8
typedef __m256 vec;
#define VLOAD _mm256_loadu_ps
#define VSTORE _mm256_storeu_ps
#define VSTREAM _mm256_stream_ps
#define VMAX _mm256_max_ps
#define VSUB _mm256_sub_ps
#define VSET1 _mm256_set1_ps
#else
#define W 4
typedef __m128 vec;
#define VLOAD _mm_loadu_ps
#define VSTORE _mm_storeu_ps
#define VSTREAM _mm_stream_ps
#define VMAX _mm_max_ps
#define VSUB _mm_sub_ps
#define VSET1 _mm_set1_ps
#endif

static float row_max(const float *x, int64_t n)
{
    vec m0 = VSET1(-INFINITY), m1 = m0;
    int64_t j = 0;
    for (; j + 2 * W <= n; j += 2 * W) {
        m0 = VMAX(m0, VLOAD(x + j));
        m1 = VMAX(m1, VLOAD(x + j + W));
    }
    float lanes[W], m = -INFINITY;
    VSTORE(lanes, VMAX(m0, m1));
    for (int l = 0; l < W; l++)
        m = lanes[l] > m ? lanes[l] : m;
    for (; j < n; j++)
        m = x[j] > m ? x[j] : m;
    return m;
}

/* out = x - shift, the whole 64-byte lines of out streamed when `stream` */
static void store_row(const float *x, float *out, int64_t n, float shift, int stream)
{
    vec s = VSET1(shift);
    int64_t j = 0;
    if (stream) {
        int64_t head = (int64_t)((64 - (uintptr_t)out % 64) % 64 / sizeof(float));
        for (; j < head && j < n; j++)
            out[j] = x[j] - shift;
        for (; j + 16 <= n; j += 16)
            for (int k = 0; k < 16; k += W)
                VSTREAM(out + j + k, VSUB(VLOAD(x + j + k), s));
    } else {
        for (; j + W <= n; j += W)
            VSTORE(out + j, VSUB(VLOAD(x + j), s));
    }
    for (; j < n; j++)
        out[j] = x[j] - shift;
}

static void *run_range(void *arg)
{
    range *r = arg;
    float sink = 0;
    for (int64_t i = r->first_row; i < r->first_row + r->rows; i++) {
        const float *x = r->x + i * r->cols;
        float *out = r->out + i * r->cols;
        switch (r->pass) {
        case READ:
            sink += row_max(x, r->cols);
            break;
        case COPY:
            store_row(x, out, r->cols, 0.0f, 1);
            break;
        case TWO_READS:
            store_row(x, out, r->cols, row_max(x, r->cols), 1);
            break;
        default:
            store_row(x, out, r->cols, row_max(x, r->cols), 0);
        }
    }
    _mm_sfence();
    r->sink = sink;
    return NULL;
}

int main(int argc, char **argv)
{
    if (argc < 4) {
        fprintf(stderr, "usage: %s rows classes threads [repeat]\n", argv[0]);
        return 2;
    }
    int64_t rows = atoll(argv[1]), cols = atoll(argv[2]);
    int threads = atoi(argv[3]), repeat = argc > 4 ? atoi(argv[4]) : 20;
    if (rows < 1 || cols < 1 || threads < 1 || threads > 256 || repeat < 1) {
        fprintf(stderr, "rows, classes, threads (at most 256) and repeat must be positive\n");
        return 2;
    }
    /* whole pages (aligned_alloc wants a multiple of the alignment), 16 bytes more */
    size_t bytes = ((size_t)(rows * cols) * sizeof(float) + 16 + 4095) / 4096 * 4096;
    float *x_buffer = aligned_alloc(4096, bytes), *out_buffer = aligned_alloc(4096, bytes);
    if (!x_buffer || !out_buffer) {
        fprintf(stderr, "out of memory\n");
        return 1;
    }
    float *x = x_buffer + 4, *out = out_buffer + 4; /* 16 bytes past a page, as NumPy's */
    srand(1);
    for (int64_t i = 0; i < rows * cols; i++) {
        x[i] = (float)rand() / (float)RAND_MAX * 12.0f - 6.0f;
        out[i] = 0.0f;
    }
    printf("%lldx%lld float32, %d thread(s), best of %d\n", (long long)rows, (long long)cols,
           threads, repeat);
    for (int p = 0; p < PASSES; p++) {
        range ranges[256];
        pthread_t ids[256];
        double best = 1e30;
        for (int k = 0; k < repeat; k++) {
            double start = seconds();
            for (int t = 0; t < threads; t++) {
                int64_t first = rows * t / threads, stop = rows * (t + 1) / threads;
                ranges[t] = (range){x, out, first, stop - first, cols, (enum pass)p, 0.0f};
                pthread_create(&ids[t], NULL, run_range, &ranges[t]);
            }
            for (int t = 0; t < threads; t++)
                pthread_join(ids[t], NULL);
            double elapsed = seconds() - start;
            best = elapsed < best ? elapsed : best;
        }
        double per_element = best / (double)(rows * cols);
        printf("  %-18s %.3f ns/element  %6.1f GB/s\n", pass_names[p], 1e9 * per_element,
               8.0 / per_element / 1e9);
    }
    free(x_buffer);
    free(out_buffer);
    return 0;
}
