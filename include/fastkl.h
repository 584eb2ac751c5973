/* fastkl.h: the fastkl C API. Generated from fastkl/capi/fastkl.cdef and the
 * divergence registry (fastkl/divergences.py) by
 * `fastkl build-capi --header-only --outdir .`: edit those files, not this one. */
#ifndef FASTKL_H
#define FASTKL_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/*
 * The fastkl C API: row-wise divergences of probability distributions.
 *
 * Each function scores n rows of k values. Row i of p starts at p + i * ldp, row i of q at
 * q + i * ldq (strides in elements, >= k; ldq == 0 scores every row of p against the single
 * row q), and out[i] receives its value in nats. A form says how a side is given:
 * probabilities, natural-log probabilities, or logits (a log-softmax is fused into the
 * kernel). The exact semantics are those of the Python API: a term is 0 where p = 0, +inf
 * where p > 0 and q = 0; a NaN in a row makes that row NaN.
 *
 * Every function returns FASTKL_OK or an error status (fastkl_strerror explains it) and
 * checks its arguments before reading memory. With n == 0 no pointer is read. Results are
 * those of fastkl's Python functions with default options, bit for bit (the same kernels).
 *
 * The functions are thread-safe: any number of threads may call them at once. The first call
 * (or fastkl_init) starts an embedded Python interpreter and loads fastkl's compiled kernels,
 * once; later calls run machine code only, without the GIL.
 */

/* Status codes. */
#define FASTKL_OK 0                /* success */
#define FASTKL_ERR_NULL 1          /* a pointer argument is NULL (p, q and out are read or written when n > 0) */
#define FASTKL_ERR_N 2             /* n is negative */
#define FASTKL_ERR_K 3             /* k is smaller than 1 */
#define FASTKL_ERR_STRIDE 4        /* a row stride is smaller than k (ldp >= k; ldq >= k, or 0 for a single row of q) */
#define FASTKL_ERR_OVERFLOW 5      /* n rows of stride ld do not fit in the address space ((n - 1) * ld + k elements overflow int64 bytes) */
#define FASTKL_ERR_FORM 6          /* unknown form: use FASTKL_PROBS, FASTKL_LOG_PROBS or FASTKL_LOGITS */
#define FASTKL_ERR_THREADS 7       /* thread count out of range: 0 for all, or 1 to the number fastkl started with */
#define FASTKL_ERR_INIT 8          /* fastkl could not start its runtime (the embedded Python or its kernels); details are on stderr */

/* Forms of an input. */
#define FASTKL_PROBS 0             /* probabilities */
#define FASTKL_LOG_PROBS 1         /* natural-log probabilities */
#define FASTKL_LOGITS 2            /* unnormalized log-scores: a log-softmax is applied to each row */

/* Kullback-Leibler divergence D(P || Q). */
int fastkl_kl_div_f32(const float *p, const float *q, int64_t n, int64_t k, int64_t ldp, int64_t ldq, int p_form, int q_form, float *out);
int fastkl_kl_div_f64(const double *p, const double *q, int64_t n, int64_t k, int64_t ldp, int64_t ldq, int p_form, int q_form, double *out);

/* Jensen-Shannon divergence. */
int fastkl_js_div_f32(const float *p, const float *q, int64_t n, int64_t k, int64_t ldp, int64_t ldq, int p_form, int q_form, float *out);
int fastkl_js_div_f64(const double *p, const double *q, int64_t n, int64_t k, int64_t ldp, int64_t ldq, int p_form, int q_form, double *out);

/* Jeffreys divergence D(P || Q) + D(Q || P). */
int fastkl_sym_kl_f32(const float *p, const float *q, int64_t n, int64_t k, int64_t ldp, int64_t ldq, int p_form, int q_form, float *out);
int fastkl_sym_kl_f64(const double *p, const double *q, int64_t n, int64_t k, int64_t ldp, int64_t ldq, int p_form, int q_form, double *out);

/* Cross-entropy H(P, Q) = H(P) + D(P || Q). */
int fastkl_cross_entropy_f32(const float *p, const float *q, int64_t n, int64_t k, int64_t ldp, int64_t ldq, int p_form, int q_form, float *out);
int fastkl_cross_entropy_f64(const double *p, const double *q, int64_t n, int64_t k, int64_t ldp, int64_t ldq, int p_form, int q_form, double *out);

/* Shannon entropy H(P). */
int fastkl_entropy_f32(const float *p, int64_t n, int64_t k, int64_t ldp, int p_form, float *out);
int fastkl_entropy_f64(const double *p, int64_t n, int64_t k, int64_t ldp, int p_form, double *out);

/* Total variation distance, half the L1 distance (a metric). */
int fastkl_tv_distance_f32(const float *p, const float *q, int64_t n, int64_t k, int64_t ldp, int64_t ldq, int p_form, int q_form, float *out);
int fastkl_tv_distance_f64(const double *p, const double *q, int64_t n, int64_t k, int64_t ldp, int64_t ldq, int p_form, int q_form, double *out);

/* Hellinger distance (a metric). */
int fastkl_hellinger_f32(const float *p, const float *q, int64_t n, int64_t k, int64_t ldp, int64_t ldq, int p_form, int q_form, float *out);
int fastkl_hellinger_f64(const double *p, const double *q, int64_t n, int64_t k, int64_t ldp, int64_t ldq, int p_form, int q_form, double *out);

/* A static, human-readable description of a status code (never NULL). */
const char *fastkl_strerror(int status);

/* The version of fastkl this library was built from. */
const char *fastkl_version(void);

/* Start the runtime now instead of on the first call (optional; safe to call again). */
int fastkl_init(void);

/* Threads used by every later call, from any thread: 0 for all (the default), or 1 to the
   number fastkl started with (NUMBA_NUM_THREADS, by default the number of cores). */
int fastkl_set_num_threads(int n);

#ifdef __cplusplus
}
#endif

#endif /* FASTKL_H */
