/*
 * fuzz: random calls of libfastkl with exactly sized malloc'd buffers, for valgrind's memcheck
 * (the command is in tests/test_capi_fuzz.py's docstring; tests/capi_fuzz.py is the ctypes
 * fuzzer CI runs, which also compares values with the Python API).
 *
 *     fuzz [CALLS [SEED [THREADS]]]
 *
 * THREADS (optional) caps the thread counts the valid fastkl_set_num_threads calls pick (1 to
 * THREADS instead of 0 to all): under valgrind, which runs one thread at a time, 1 is fastest.
 * Progress goes to stderr every tenth of the calls.
 *
 * Each call draws n, k, ldp, ldq and the forms (valid, or negative, zero, huge, on either side
 * of the int64 overflow limit, unknown forms) and its status must be the one the header's
 * rules give, checked in the cfuncs' order. A valid call gets p of (n-1)*ldp+k elements, q of
 * (n-1)*ldq+k (k when ldq == 0) and out of n, malloc'd to the byte: memcheck reports any read
 * or write past them ("Invalid read/write"), and a read of the uninitialized padding between
 * rows, or an out element left unwritten, as a use of uninitialised values. A call that must
 * fail gets NULL, a PROT_NONE page or a 16-element buffer (out: must stay untouched) for each
 * pointer. Calls of fastkl_set_num_threads and fastkl_strerror with random ints are mixed in.
 * Prints "fuzz: calls=... ok=... errors=[...] mismatches=..."; exit status 1 on a mismatch.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include <fastkl.h>

#if defined(__has_include)
#if __has_include(<valgrind/memcheck.h>)
#include <valgrind/memcheck.h>
#define CHECK_DEFINED(ptr, bytes) ((void)VALGRIND_CHECK_MEM_IS_DEFINED(ptr, bytes))
#endif
#endif
#ifndef CHECK_DEFINED
#define CHECK_DEFINED(ptr, bytes) ((void)0)
#endif

#define SMALL 16
#define NSTATUS 9
#define CAP (1 << 20) /* elements: valid calls larger than this get a NULL pointer */

static uint64_t rng_state;

static uint64_t next_u64(void) /* splitmix64 */
{
    uint64_t z = (rng_state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static int64_t below(int64_t n) { return (int64_t)(next_u64() % (uint64_t)n); }

static double uniform(void) { return (double)(next_u64() >> 11) * 0x1.0p-53; }

static int64_t clip_add(int64_t a, int64_t b)
{
    __int128 s = (__int128)a + b;
    if (s > INT64_MAX)
        return INT64_MAX;
    if (s < INT64_MIN)
        return INT64_MIN;
    return (int64_t)s;
}

static int64_t hostile_int64(void)
{
    static const int64_t pool[] = {
        0, -1, -2, INT64_MIN, INT64_MIN + 1, INT64_MAX, INT64_MAX - 1,
        (int64_t)1 << 62, ((int64_t)1 << 62) - 1, ((int64_t)1 << 62) + 1, -((int64_t)1 << 62),
        INT64_MAX - 1, INT64_MAX / 2, INT64_MAX / 4, INT64_MAX / 4 + 1, INT64_MAX / 8,
        INT64_MAX / 8 + 1, INT32_MAX, (int64_t)1 << 31, (int64_t)1 << 32,
        ((int64_t)1 << 32) + 1, (int64_t)1 << 40, INT32_MIN,
    };
    double r = uniform();
    if (r < 0.7)
        return pool[below(sizeof pool / sizeof pool[0])];
    if (r < 0.8)
        return -1 - below((int64_t)1 << 62);
    if (r < 0.9)
        return ((int64_t)1 << 20) + below((int64_t)1 << 62);
    return 51 + below(1 << 20);
}

static int hostile_form(void)
{
    static const int pool[] = {-1, 3, 4, 255, INT32_MAX, INT32_MIN, INT32_MAX - 1, -2};
    if (uniform() < 0.8)
        return pool[below(sizeof pool / sizeof pool[0])];
    int v = (int)(uint32_t)next_u64();
    return v >= 0 && v <= 2 ? 3 : v;
}

/* The header's rules, in the cfuncs' order; the pointers are checked by the caller. */
static int size_status(int64_t n, int64_t k, int64_t ldp, int64_t ldq, int pf, int qf, int item)
{
    if (n < 0)
        return FASTKL_ERR_N;
    if (k < 1)
        return FASTKL_ERR_K;
    if (pf < 0 || pf > 2 || qf < 0 || qf > 2)
        return FASTKL_ERR_FORM;
    if (ldp < k || (ldq != 0 && ldq < k))
        return FASTKL_ERR_STRIDE;
    if (n > 0) {
        const int64_t lds[2] = {ldp, ldq};
        for (int i = 0; i < 2; i++) /* the bytes of (n-1)*ld+k elements fit in int64 */
            if ((__int128)(n - 1) * lds[i] + k > (__int128)(INT64_MAX / item))
                return FASTKL_ERR_OVERFLOW;
    }
    return FASTKL_OK;
}

/* stem 0..4: kl_div, js_div, sym_kl, cross_entropy, entropy */
static int call(int stem, int f64, const void *p, const void *q, int64_t n, int64_t k, int64_t ldp,
                int64_t ldq, int pf, int qf, void *out)
{
    switch (stem * 2 + f64) {
    case 0: return fastkl_kl_div_f32(p, q, n, k, ldp, ldq, pf, qf, out);
    case 1: return fastkl_kl_div_f64(p, q, n, k, ldp, ldq, pf, qf, out);
    case 2: return fastkl_js_div_f32(p, q, n, k, ldp, ldq, pf, qf, out);
    case 3: return fastkl_js_div_f64(p, q, n, k, ldp, ldq, pf, qf, out);
    case 4: return fastkl_sym_kl_f32(p, q, n, k, ldp, ldq, pf, qf, out);
    case 5: return fastkl_sym_kl_f64(p, q, n, k, ldp, ldq, pf, qf, out);
    case 6: return fastkl_cross_entropy_f32(p, q, n, k, ldp, ldq, pf, qf, out);
    case 7: return fastkl_cross_entropy_f64(p, q, n, k, ldp, ldq, pf, qf, out);
    case 8: return fastkl_entropy_f32(p, n, k, ldp, pf, out);
    default: return fastkl_entropy_f64(p, n, k, ldp, pf, out);
    }
}

static void store(void *buf, int f64, int64_t i, double v)
{
    if (f64)
        ((double *)buf)[i] = v;
    else
        ((float *)buf)[i] = (float)v;
}

/* m rows of k at stride ld, in a form; the padding between rows stays uninitialized */
static void fill_rows(void *buf, int f64, int64_t m, int64_t k, int64_t ld, int form)
{
    static const double specials[] = {NAN, INFINITY, -INFINITY, -1.0, -0.0, 0.0, 1e-310, 3e38};
    double zeros = uniform() < 0.3 ? uniform() : 0.0;
    for (int64_t r = 0; r < m; r++) {
        double sum = 0;
        int64_t base = r * (m > 1 ? ld : k);
        double *row = malloc(sizeof(double) * (size_t)k);
        for (int64_t j = 0; j < k; j++) {
            row[j] = uniform() < zeros ? 0.0 : uniform();
            sum += row[j];
        }
        for (int64_t j = 0; j < k; j++) {
            double v = sum > 0 ? row[j] / sum : 0.0;
            if (form == FASTKL_LOG_PROBS)
                v = log(v);
            else if (form == FASTKL_LOGITS)
                v = log(v) + 10.0 * (uniform() - 0.5);
            if (uniform() < 0.002)
                v = specials[below(sizeof specials / sizeof specials[0])];
            store(buf, f64, base + j, v);
        }
        free(row);
    }
}

int main(int argc, char **argv)
{
    long calls = argc > 1 ? atol(argv[1]) : 20000;
    rng_state = argc > 2 ? strtoull(argv[2], NULL, 10) : 1;
    int cap = argc > 3 ? atoi(argv[3]) : 0; /* 0: valid thread counts from 0 (all) up */
    long statuses[NSTATUS + 1] = {0};
    long mismatches = 0, strerrors = 0, valid = 0;
    unsigned char sentinel[SMALL * 8];
    /* a page no one may touch: a read or write through it faults (memcheck: Invalid read) */
    void *poison = mmap(NULL, 4096, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    int max_threads = 0;

    if (poison == MAP_FAILED)
        return 2;
    memset(sentinel, 0xAB, sizeof sentinel);
    if (fastkl_init() != FASTKL_OK) {
        fprintf(stderr, "fuzz: fastkl_init failed\n");
        return 2;
    }
    while (max_threads < 4096 && fastkl_set_num_threads(max_threads + 1) == FASTKL_OK)
        max_threads++;
    if (cap > max_threads)
        cap = max_threads;
    if (fastkl_set_num_threads(cap) != FASTKL_OK) {
        fprintf(stderr, "fuzz: fastkl_set_num_threads(%d) failed\n", cap);
        return 2;
    }

    for (long i = 0; i < calls; i++) {
        double kind = uniform();
        if (calls >= 10 && i % (calls / 10) == 0) {
            fprintf(stderr, "fuzz: %ld calls, %ld mismatches\n", i, mismatches);
        }
        if (kind < 0.01) {
            int v = uniform() < 0.6 ? (cap ? 1 + (int)below(cap) : (int)below(max_threads + 1))
                                    : (int)(uint32_t)next_u64();
            int want = v >= 0 && v <= max_threads ? FASTKL_OK : FASTKL_ERR_THREADS;
            int got = fastkl_set_num_threads(v);
            statuses[got >= 0 && got < NSTATUS ? got : NSTATUS]++;
            if (got != want && ++mismatches <= 20)
                printf("MISMATCH call %ld: fastkl_set_num_threads(%d) = %d, expected %d\n", i, v,
                       got, want);
            continue;
        }
        if (kind < 0.02) {
            int code = uniform() < 0.6 ? (int)below(15) - 3 : (int)(uint32_t)next_u64();
            const char *message = fastkl_strerror(code);
            strerrors++;
            if ((message == NULL || message[0] == '\0') && ++mismatches <= 20)
                printf("MISMATCH call %ld: fastkl_strerror(%d) is NULL or empty\n", i, code);
            continue;
        }

        int stem = (int)below(5), f64 = (int)below(2), item = f64 ? 8 : 4;
        int has_q = stem != 4;
        double r = uniform();
        int64_t k = r < 0.4 ? 1 + below(8) : r < 0.99 ? 9 + below(292) : 65535 + below(4470);
        int64_t n = uniform() < 0.05 ? 0 : (uniform() < 0.2 || k > 60000) ? 1 + below(2)
                                                                          : 2 + below(49);
        int64_t ldp = uniform() < 0.7 ? k : k + 1 + below(16);
        int64_t ldq = uniform() < 0.2 ? 0 : uniform() < 0.7 ? k : k + 1 + below(16);
        int pf = (int)below(3), qf = (int)below(3);
        if (uniform() >= 0.45) { /* some arguments hostile */
            if (uniform() < 0.35) {
                k = hostile_int64();
                if (uniform() < 0.5) {
                    ldp = clip_add(k, below(3) - 1);
                    ldq = ldq ? clip_add(k, below(3) - 1) : 0;
                }
            }
            if (uniform() < 0.35)
                n = hostile_int64();
            if (uniform() < 0.35)
                ldp = uniform() < 0.5 ? clip_add(k, -1 - below(99)) : hostile_int64();
            if (uniform() < 0.35)
                ldq = uniform() < 0.3 ? clip_add(k, -1) : uniform() < 0.3 ? 0 : hostile_int64();
            if (uniform() < 0.12)
                pf = hostile_form();
            if (uniform() < 0.12)
                qf = hostile_form();
            if (uniform() < 0.3 && k >= 1 && k <= INT64_MAX / item) { /* at the limit */
                int64_t limit = INT64_MAX / item, side = below(4) - 1;
                int which = (int)below(3);
                if (which == 2 && ldp > 0)
                    n = clip_add((limit - k) / ldp + 1, side);
                else if (n > 1) {
                    int64_t ld = clip_add((limit - k) / (n - 1), side);
                    if (which == 0)
                        ldp = ld;
                    else
                        ldq = ld;
                }
            }
        }
        if (!has_q) {
            ldq = ldp;
            qf = pf;
        }

        int sizes = size_status(n, k, ldp, ldq, pf, qf, item);
        int64_t span_p = 0, span_q = 0;
        void *p = NULL, *q = NULL, *out = NULL;
        int real_out = 0, want;
        if (sizes == FASTKL_OK && n > 0) {
            span_p = (n - 1) * ldp + k;
            span_q = (n - 1) * ldq + k;
            int small = n <= CAP && span_p <= CAP && span_q <= CAP;
            if (small && uniform() < 0.9) {
                p = malloc((size_t)(span_p * item));
                fill_rows(p, f64, n, k, ldp, pf);
                if (has_q) {
                    q = malloc((size_t)(span_q * item));
                    fill_rows(q, f64, ldq ? n : 1, k, ldq ? ldq : k, qf);
                }
                out = malloc((size_t)(n * item));
                want = FASTKL_OK;
                valid++;
            } else { /* sizes fine but a NULL pointer: nothing may be read */
                int null = (int)below(has_q ? 3 : 2);
                p = null == 0 ? NULL : poison;
                q = null == 1 ? NULL : poison;
                out = null == (has_q ? 2 : 1) ? NULL : poison;
                want = FASTKL_ERR_NULL;
            }
        } else {
            void **slots[3] = {&p, &q, &out};
            for (int s = 0; s < 3; s++) { /* n == 0 or a size error: no pointer is read */
                double c = uniform();
                if (c < 0.33) {
                    *slots[s] = NULL;
                } else if (c < 0.66) {
                    *slots[s] = poison;
                } else {
                    *slots[s] = malloc(SMALL * 8);
                    memcpy(*slots[s], sentinel, SMALL * 8);
                    real_out = s == 2;
                }
            }
            want = sizes;
        }

        int got = call(stem, f64, p, q, n, k, ldp, ldq, pf, qf, out);
        statuses[got >= 0 && got < NSTATUS ? got : NSTATUS]++;
        if (got != want && ++mismatches <= 20)
            printf("MISMATCH call %ld: stem %d f%d n=%lld k=%lld ldp=%lld ldq=%lld forms %d %d "
                   "p=%s q=%s out=%s: %d, expected %d\n",
                   i, stem, item * 8, (long long)n, (long long)k, (long long)ldp,
                   (long long)ldq, pf, qf, p == NULL ? "NULL" : p == poison ? "poison" : "buf",
                   q == NULL ? "NULL" : q == poison ? "poison" : "buf",
                   out == NULL ? "NULL" : out == poison ? "poison" : "buf", got, want);
        if (want == FASTKL_OK && n > 0 && got == FASTKL_OK) {
            CHECK_DEFINED(out, n * item); /* every row written */
        } else if (real_out && memcmp(out, sentinel, SMALL * 8) != 0 && ++mismatches <= 20) {
            printf("MISMATCH call %ld: out written by a call that returned %d\n", i, got);
        }
        if (p != poison)
            free(p);
        if (q != poison)
            free(q);
        if (out != poison)
            free(out);
    }
    if (fastkl_set_num_threads(0) != FASTKL_OK)
        mismatches++;

    printf("fuzz: calls=%ld ok=%ld errors=[", calls, statuses[0]);
    for (int s = 1; s <= NSTATUS; s++)
        printf("%s%ld", s > 1 ? "," : "", statuses[s]);
    printf("] valid=%ld strerror=%ld max_threads=%d mismatches=%ld\n", valid, strerrors,
           max_threads, mismatches);
    return mismatches != 0;
}
