/*
 * check: the library's answers to bad arguments, its messages, version and thread count.
 * Prints "label status" lines (and "strerror <code> <message>" lines) for the test to compare.
 */
#include <stdint.h>
#include <stdio.h>

#include <fastkl.h>

#define CALL(label, expr) printf("%s %d\n", label, (int)(expr))

int main(void)
{
    double p[8] = {0.25, 0.25, 0.25, 0.25, 0.5, 0.5, 0, 0};
    double out[2] = {-1, -1};
    float pf[4] = {0.25f, 0.25f, 0.25f, 0.25f};
    float outf[1] = {-1};
    const int64_t big = INT64_MAX / 2;

    CALL("ok", fastkl_kl_div_f64(p, p, 2, 4, 4, 4, FASTKL_PROBS, FASTKL_PROBS, out));
    printf("value %.17g %.17g\n", out[0], out[1]);
    CALL("null_p", fastkl_kl_div_f64(NULL, p, 2, 4, 4, 4, 0, 0, out));
    CALL("null_q", fastkl_js_div_f64(p, NULL, 2, 4, 4, 4, 0, 0, out));
    CALL("null_out", fastkl_sym_kl_f32(pf, pf, 1, 4, 4, 4, 0, 0, NULL));
    CALL("null_entropy", fastkl_entropy_f64(NULL, 1, 4, 4, 0, out));
    CALL("null_n0", fastkl_kl_div_f64(NULL, NULL, 0, 4, 4, 4, 0, 0, NULL));
    CALL("n_negative", fastkl_cross_entropy_f64(p, p, -1, 4, 4, 4, 0, 0, out));
    CALL("k_zero", fastkl_kl_div_f32(pf, pf, 1, 0, 4, 4, 0, 0, outf));
    CALL("k_negative", fastkl_entropy_f32(pf, 1, -5, 4, 0, outf));
    CALL("ldp_small", fastkl_kl_div_f64(p, p, 2, 4, 3, 4, 0, 0, out));
    CALL("ldq_small", fastkl_kl_div_f64(p, p, 2, 4, 4, 2, 0, 0, out));
    CALL("ldq_zero", fastkl_kl_div_f64(p, p, 2, 4, 4, 0, 0, 0, out));
    CALL("overflow", fastkl_kl_div_f64(p, p, 4, 4, big, 4, 0, 0, out));
    CALL("overflow_bytes", fastkl_entropy_f64(p, 2, 4, INT64_MAX / 8, 0, out));
    CALL("form_p", fastkl_kl_div_f64(p, p, 2, 4, 4, 4, 3, 0, out));
    CALL("form_q", fastkl_js_div_f32(pf, pf, 1, 4, 4, 4, 0, -1, outf));
    CALL("form_entropy", fastkl_entropy_f64(p, 1, 4, 4, 7, out));
    CALL("threads_negative", fastkl_set_num_threads(-1));
    CALL("threads_huge", fastkl_set_num_threads(1 << 20));
    CALL("threads_one", fastkl_set_num_threads(1));
    CALL("after_threads_one", fastkl_kl_div_f64(p, p, 2, 4, 4, 4, 0, 0, out));
    CALL("threads_all", fastkl_set_num_threads(0));
    CALL("init_again", fastkl_init());
    printf("version %s\n", fastkl_version());
    for (int code = -1; code <= 9; code++)
        printf("strerror %d %s\n", code, fastkl_strerror(code));
    return 0;
}
