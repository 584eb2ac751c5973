/*
 * threads: NTHREADS pthreads call libfastkl at once, from the very first call (no fastkl_init),
 * and every result must equal, bit for bit, the same call made alone afterwards. One thread
 * changes the thread count while the others run. Prints "threads ok <calls>" or the first
 * mismatch; exit status 0 only when every call agreed.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <fastkl.h>

#define NTHREADS 8
#define ROUNDS 25
#define N 3000
#define K 37
#define NCASES 6

static double p64[N * K], q64[N * K];
static float p32[N * K], q32[N * K];
static double ref64[NCASES][N];
static float ref32[NCASES][N];
static pthread_barrier_t start, phase1_done, refs_ready;

/* case c on thread-private outputs; returns the status */
static int run_case(int c, double *o64, float *o32)
{
    switch (c) {
    case 0: return fastkl_kl_div_f64(p64, q64, N, K, K, K, FASTKL_PROBS, FASTKL_PROBS, o64);
    case 1: return fastkl_kl_div_f32(p32, q32, N, K, K, 0, FASTKL_PROBS, FASTKL_LOGITS, o32);
    case 2: return fastkl_js_div_f64(p64, q64, N, K, K, K, FASTKL_LOGITS, FASTKL_LOGITS, o64);
    case 3: return fastkl_sym_kl_f32(p32, q32, N, K, K, K, FASTKL_PROBS, FASTKL_PROBS, o32);
    case 4: return fastkl_cross_entropy_f64(p64, q64, N / 2, K, 2 * K, K, FASTKL_PROBS,
                                            FASTKL_LOG_PROBS, o64);
    default: return fastkl_entropy_f32(p32, N, K, K, FASTKL_LOGITS, o32);
    }
}

static int rows_of(int c) { return c == 4 ? N / 2 : N; }

static int is_f64(int c) { return c == 0 || c == 2 || c == 4; }

static int check(int c, int status, const double *o64, const float *o32)
{
    int n = rows_of(c);
    int same = is_f64(c) ? memcmp(o64, ref64[c], sizeof(double) * n) == 0
                         : memcmp(o32, ref32[c], sizeof(float) * n) == 0;
    return status == FASTKL_OK && same;
}

static void *worker(void *arg)
{
    long id = (long)arg;
    double *o64 = malloc(sizeof(double) * N * NCASES);
    float *o32 = malloc(sizeof(float) * N * NCASES);
    int first[NCASES];
    long bad = 0;

    /* phase 1: every thread's first calls are the library's first calls */
    pthread_barrier_wait(&start);
    for (int c = 0; c < NCASES; c++)
        first[c] = run_case(c, o64 + c * N, o32 + c * N);
    pthread_barrier_wait(&phase1_done);
    pthread_barrier_wait(&refs_ready);
    for (int c = 0; c < NCASES; c++)
        if (!check(c, first[c], o64 + c * N, o32 + c * N)) {
            printf("thread %ld first call, case %d: status %d or different values\n", id, c,
                   first[c]);
            bad = 1;
        }
    /* phase 2: rounds of concurrent calls, while thread 0 changes the thread count */
    for (int r = 0; r < ROUNDS && bad == 0; r++) {
        if (id == 0)
            fastkl_set_num_threads(r % 2 ? 1 : 0);
        for (int j = 0; j < NCASES; j++) {
            int c = (int)((j + id + r) % NCASES);
            int status = run_case(c, o64, o32);
            if (!check(c, status, o64, o32)) {
                printf("thread %ld round %d case %d: status %d or different values\n", id, r, c,
                       status);
                bad = 1;
            }
        }
    }
    free(o64);
    free(o32);
    return (void *)bad;
}

int main(void)
{
    pthread_t threads[NTHREADS];
    long failed = 0;
    unsigned long x = 12345;

    for (int i = 0; i < N * K; i++) {
        /* a fixed LCG; each row is then normalized (some cases read the values as log-scores) */
        x = x * 6364136223846793005UL + 1442695040888963407UL;
        p64[i] = (double)((x >> 11) & 0xFFFFF) / 0x100000 + 1e-3;
        x = x * 6364136223846793005UL + 1442695040888963407UL;
        q64[i] = (double)((x >> 11) & 0xFFFFF) / 0x100000 + 1e-3;
    }
    for (int i = 0; i < N; i++) {
        double sp = 0, sq = 0;
        for (int j = 0; j < K; j++) {
            sp += p64[i * K + j];
            sq += q64[i * K + j];
        }
        for (int j = 0; j < K; j++) {
            p64[i * K + j] /= sp;
            q64[i * K + j] /= sq;
            p32[i * K + j] = (float)p64[i * K + j];
            q32[i * K + j] = (float)q64[i * K + j];
        }
    }

    pthread_barrier_init(&start, NULL, NTHREADS);
    pthread_barrier_init(&phase1_done, NULL, NTHREADS + 1);
    pthread_barrier_init(&refs_ready, NULL, NTHREADS + 1);
    for (int t = 0; t < NTHREADS; t++)
        if (pthread_create(&threads[t], NULL, worker, (void *)(long)t) != 0)
            return 2;
    /* the references: each call made alone */
    pthread_barrier_wait(&phase1_done);
    for (int c = 0; c < NCASES; c++)
        if (run_case(c, ref64[c], ref32[c]) != FASTKL_OK) {
            printf("reference case %d failed\n", c);
            return 1;
        }
    pthread_barrier_wait(&refs_ready);
    for (int t = 0; t < NTHREADS; t++) {
        void *bad;
        pthread_join(threads[t], &bad);
        failed += (long)bad;
    }
    printf("%s %d threads x %d rounds x %d cases\n", failed ? "threads FAILED" : "threads ok",
           NTHREADS, ROUNDS, NCASES);
    return failed ? 1 : 0;
}
