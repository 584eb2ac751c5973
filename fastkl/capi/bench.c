/*
 * bench: the time of one fastkl_kl_div_f32 call on n x k probability rows, from C.
 *
 *   bench N K ROUNDS CALLS   prints "seconds_per_call <median over ROUNDS of the mean of CALLS
 *                            back-to-back calls>" and "first_call <seconds of the first call,
 *                            which starts the runtime>"
 *
 * Built and run by `fastkl bench --capi` and the asv suite (benchmarks/bench_capi.py).
 */
#define _POSIX_C_SOURCE 199309L
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include <fastkl.h>

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv)
{
    long n, k, rounds, calls;
    float *p, *q, *out;
    double *times, start;

    if (argc != 5 || (n = atol(argv[1])) < 1 || (k = atol(argv[2])) < 1 ||
        (rounds = atol(argv[3])) < 1 || (calls = atol(argv[4])) < 1) {
        fprintf(stderr, "usage: bench N K ROUNDS CALLS\n");
        return 2;
    }
    p = malloc(sizeof(float) * (size_t)(n * k));
    q = malloc(sizeof(float) * (size_t)(n * k));
    out = malloc(sizeof(float) * (size_t)n);
    times = malloc(sizeof(double) * (size_t)rounds);
    if (p == NULL || q == NULL || out == NULL || times == NULL)
        return 1;
    for (long i = 0; i < n; i++) {
        float sp = 0, sq = 0;
        for (long j = 0; j < k; j++) {
            p[i * k + j] = (float)((i * 131 + j * 71) % 97 + 1);
            q[i * k + j] = (float)((i * 37 + j * 53) % 89 + 1);
            sp += p[i * k + j];
            sq += q[i * k + j];
        }
        for (long j = 0; j < k; j++) {
            p[i * k + j] /= sp;
            q[i * k + j] /= sq;
        }
    }
    start = now();
    if (fastkl_kl_div_f32(p, q, n, k, k, k, FASTKL_PROBS, FASTKL_PROBS, out) != FASTKL_OK) {
        fprintf(stderr, "bench: %s\n", fastkl_strerror(fastkl_init()));
        return 1;
    }
    printf("first_call %.9g\n", now() - start);
    for (long r = 0; r < rounds; r++) {
        start = now();
        for (long c = 0; c < calls; c++)
            fastkl_kl_div_f32(p, q, n, k, k, k, FASTKL_PROBS, FASTKL_PROBS, out);
        times[r] = (now() - start) / (double)calls;
    }
    qsort(times, (size_t)rounds, sizeof(double), cmp);
    printf("seconds_per_call %.9g\n", times[rounds / 2]);
    printf("checksum %.9g\n", (double)out[0] + (double)out[n - 1]);
    free(p);
    free(q);
    free(out);
    free(times);
    return 0;
}
