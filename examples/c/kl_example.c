/*
 * kl_example: score rows with libfastkl.
 *
 *   kl_example                 score a small built-in example and print it
 *   kl_example P.bin Q.bin K   P: n rows of K float64 values (raw, row-major); Q: n rows, or
 *                              one row scored against every row of P. Prints KL(P_i || Q_i),
 *                              one per line, with 17 significant digits.
 *
 * Build (see the README's "C API" section):
 *   fastkl build-capi --outdir $HOME/.local/fastkl
 *   cc -std=c99 -O2 kl_example.c -I$HOME/.local/fastkl/include \
 *      -L$HOME/.local/fastkl/lib -Wl,-rpath,$HOME/.local/fastkl/lib -lfastkl -o kl_example
 */
#include <stdio.h>
#include <stdlib.h>

#include <fastkl.h>

static int builtin(void)
{
    /* two teacher distributions, and student logits for each */
    const double teacher[2][4] = {{0.1, 0.2, 0.3, 0.4}, {0.25, 0.25, 0.25, 0.25}};
    const double student[2][4] = {{0.0, 1.0, 2.0, 3.0}, {1.0, 1.0, 1.0, 1.0}};
    const double reference[4] = {0.25, 0.25, 0.25, 0.25};
    double out[2];
    int status;

    status = fastkl_kl_div_f64(&teacher[0][0], &student[0][0], 2, 4, 4, 4,
                               FASTKL_PROBS, FASTKL_LOGITS, out);
    if (status != FASTKL_OK) {
        fprintf(stderr, "fastkl_kl_div_f64: %s\n", fastkl_strerror(status));
        return 1;
    }
    printf("fastkl %s\n", fastkl_version());
    printf("KL(teacher || softmax(student)): %.9f %.9f\n", out[0], out[1]);

    /* ldq == 0: every row against one reference row */
    status = fastkl_js_div_f64(&teacher[0][0], reference, 2, 4, 4, 0,
                               FASTKL_PROBS, FASTKL_PROBS, out);
    if (status != FASTKL_OK) {
        fprintf(stderr, "fastkl_js_div_f64: %s\n", fastkl_strerror(status));
        return 1;
    }
    printf("JS(teacher || uniform): %.9f %.9f\n", out[0], out[1]);

    /* a bad argument is a status, never a crash */
    status = fastkl_entropy_f64(&teacher[0][0], 2, 4, 3, FASTKL_PROBS, out);
    printf("entropy with ldp < k: status %d (%s)\n", status, fastkl_strerror(status));
    return 0;
}

static double *read_rows(const char *path, long k, long *rows)
{
    FILE *f = fopen(path, "rb");
    double *data;
    long bytes;
    if (f == NULL || fseek(f, 0, SEEK_END) != 0 || (bytes = ftell(f)) < 0) {
        fprintf(stderr, "kl_example: cannot read %s\n", path);
        if (f != NULL)
            fclose(f);
        return NULL;
    }
    rewind(f);
    if (bytes == 0 || bytes % (long)(k * sizeof(double)) != 0) {
        fprintf(stderr, "kl_example: %s does not hold rows of %ld float64 values\n", path, k);
        fclose(f);
        return NULL;
    }
    *rows = bytes / (long)(k * sizeof(double));
    data = malloc((size_t)bytes);
    if (data == NULL || fread(data, 1, (size_t)bytes, f) != (size_t)bytes) {
        fprintf(stderr, "kl_example: cannot read %s\n", path);
        free(data);
        data = NULL;
    }
    fclose(f);
    return data;
}

int main(int argc, char **argv)
{
    long k, n, nq;
    double *p, *q, *out;
    int status;

    if (argc == 1)
        return builtin();
    if (argc != 4 || (k = strtol(argv[3], NULL, 10)) < 1) {
        fprintf(stderr, "usage: kl_example [P.bin Q.bin K]\n");
        return 2;
    }
    p = read_rows(argv[1], k, &n);
    q = read_rows(argv[2], k, &nq);
    if (p == NULL || q == NULL || (nq != n && nq != 1)) {
        if (p != NULL && q != NULL)
            fprintf(stderr, "kl_example: Q has %ld rows; expected %ld or 1\n", nq, n);
        return 1;
    }
    out = malloc((size_t)n * sizeof(double));
    if (out == NULL)
        return 1;
    status = fastkl_kl_div_f64(p, q, n, k, k, nq == 1 ? 0 : k, FASTKL_PROBS, FASTKL_PROBS, out);
    if (status != FASTKL_OK) {
        fprintf(stderr, "fastkl_kl_div_f64: %s\n", fastkl_strerror(status));
        return 1;
    }
    for (long i = 0; i < n; i++)
        printf("%.17g\n", out[i]);
    free(p);
    free(q);
    free(out);
    return 0;
}
