/* test_kernels: every kernel of every kernel set this CPU runs, on seeded random inputs with
 * odd sizes and tails.
 *
 * The generic set is checked against straightforward double-precision references written
 * from the contracts in kernels.h (and, for quantize_q8 and to_f16, bit for bit against the
 * formulas those contracts give). Every other set is checked against the generic set:
 * - quantize_q8 and to_f16 must be bitwise equal;
 * - float kernels must be within TOL_DOT of generic, measured relative to the magnitude of
 *   what is summed (sum of |terms|: the scale of any reordering's rounding error), and
 *   must be exactly equal if the set promises it (`exact_sets` below).
 * "Exactly equal" means equal as floats (+0 == -0) or both NaN.
 *
 * One line per set and kernel, then `N passed, M failed`; exits non-zero on any failure.
 * Plain C11: the same program runs under qemu for the RISC-V sets. */
#include <float.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "kernels.h"
#include "llama2_rvv.h"

enum { BR = L2_Q8_BLOCK_ROWS };

/* Sets whose kernels promise results equal to generic's ("*": all of them; or a list of
 * kernel names). A set not listed is held to the tolerances below. */
static const struct {
    const char *set, *kernels;
} exact_sets[] = {
    {"avx2", "*"},
    {"rvv", "*"},
};

#define TOL_DOT 2e-6     /* float sums in another order, relative to sum |terms| */
#define TOL_Q8 1e-6      /* q8 epilogue in another order, relative to sum |group terms| */
#define TOL_REF 2e-5     /* generic against the double-precision references */

/* ---------------------------------------------------------------- random inputs */

static uint64_t rng = 0x2545f4914f6cdd1dull;

static uint32_t rnd(void) {  /* xorshift64* */
    rng ^= rng >> 12;
    rng ^= rng << 25;
    rng ^= rng >> 27;
    return (uint32_t)((rng * 0x2545f4914f6cdd1dull) >> 32);
}
static int rnd_int(int lo, int hi) { return lo + (int)(rnd() % (uint32_t)(hi - lo + 1)); }
static float uniform(float lo, float hi) { return lo + (hi - lo) * (float)(rnd() >> 8) * 0x1p-24f; }

/* values spread over a few orders of magnitude, some exact zeros */
static void fill(float *x, int n) {
    float mag = uniform(0.01f, 4.0f);
    for (int i = 0; i < n; i++) x[i] = rnd() % 29 == 0 ? 0.0f : mag * uniform(-1.0f, 1.0f);
}

static void *xmalloc(size_t n) {
    void *p = malloc(n ? n : 1);
    if (!p) {
        fprintf(stderr, "test_kernels: out of memory\n");
        exit(2);
    }
    return p;
}

/* ---------------------------------------------------------------- checking */

typedef struct {
    const l2_kernels *k;
    const char *kernel;
    int is_generic;      /* compared with the double references instead of with generic */
    int must_be_exact;
    long cases, values;
    int exact;           /* every value so far equal to generic's */
    double worst;        /* largest error / scale */
    double tol;          /* the largest allowed (0: bitwise comparison) */
    char failure[300];   /* the first failure */
} check;

static void start(check *c, const l2_kernels *k, const char *kernel) {
    memset(c, 0, sizeof *c);
    c->k = k;
    c->kernel = kernel;
    c->is_generic = k == &l2_kernels_generic;
    c->exact = 1;
    for (size_t i = 0; i < sizeof exact_sets / sizeof exact_sets[0]; i++)
        if (!strcmp(exact_sets[i].set, k->name) &&
            (!strcmp(exact_sets[i].kernels, "*") || strstr(exact_sets[i].kernels, kernel)))
            c->must_be_exact = 1;
}

static void fail(check *c, const char *fmt, ...) {
    if (c->failure[0]) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->failure, sizeof c->failure, fmt, ap);
    va_end(ap);
}

/* got[i] against want[i] (generic's result, or the double reference for generic itself);
 * scale[i] is the magnitude errors are measured against (NULL: |want[i]|). */
static void compare(check *c, const float *got, const double *want, const double *scale, int n,
                    double tol, const char *what) {
    c->cases++;
    for (int i = 0; i < n; i++) {
        c->values++;
        double g = got[i], w = want[i];
        int same = g == w || (isnan(g) && isnan(w));
        if (!same) {
            c->exact = 0;
            if (c->must_be_exact && !c->is_generic) {
                fail(c, "%s: [%d] = %.9g, generic %.9g (promised equal)", what, i, g, w);
                continue;
            }
        }
        double s = scale ? scale[i] : fabs(w);
        double err = same ? 0.0 : fabs(g - w) / (s > 1e-30 ? s : 1e-30);
        if (isnan(err)) err = INFINITY;
        if (err > c->worst) c->worst = err;
        if (tol > c->tol) c->tol = tol;
        if (err > tol)
            fail(c, "%s: [%d] = %.9g, want %.9g (error %.3g of scale %.3g)", what, i, g, w, err, s);
    }
}

/* bitwise comparison of integers */
static void compare_bits(check *c, const void *got, const void *want, int n, int size,
                         const char *what) {
    c->cases++;
    c->values += n;
    for (int i = 0; i < n; i++) {
        const unsigned char *a = (const unsigned char *)got + (size_t)i * (size_t)size;
        const unsigned char *b = (const unsigned char *)want + (size_t)i * (size_t)size;
        if (memcmp(a, b, (size_t)size)) {
            unsigned va = 0, vb = 0;
            memcpy(&va, a, (size_t)size);
            memcpy(&vb, b, (size_t)size);
            c->exact = 0;
            fail(c, "%s: [%d] = 0x%x, want 0x%x", what, i, va, vb);
            return;
        }
    }
}

static double *dalloc(int n) { return xmalloc((size_t)n * sizeof(double)); }

static int n_passed, n_failed;

static void finish(check *c) {
    int ok = !c->failure[0];
    ok ? n_passed++ : n_failed++;
    printf("%-8s %-16s %s  ", c->k->name, c->kernel, ok ? "ok  " : "FAIL");
    if (!ok) printf("%s\n", c->failure);
    else if (c->is_generic && c->tol == 0.0)
        printf("%ld cases, bitwise equal to the definition\n", c->cases);
    else if (c->is_generic)
        printf("%ld cases, max relative error %.2g vs double (tolerance %.0e)\n", c->cases,
               c->worst, c->tol);
    else if (c->exact)
        printf("%ld cases, equal to generic\n", c->cases);
    else
        printf("%ld cases, max relative error %.2g vs generic (tolerance %.0e)\n", c->cases,
               c->worst, c->tol);
}

/* ---------------------------------------------------------------- q8 */

/* A random rows x cols matrix in the row-blocked layout of kernels.h, built directly:
 * dense values w and scales s per row and group, packed with zero padding. |w| <= 127, as
 * FORMAT.md's quantization gives (the avx2 kernel relies on it: -128 is never written). */
typedef struct {
    int rows, cols, gs, groups;
    int8_t *w;           /* (rows, cols) */
    float *s;            /* (rows, groups) */
    int8_t *wq;          /* blocked values */
    float *ws;           /* blocked scales */
} q8mat;

static q8mat q8_random(int rows, int cols, int gs, int extreme) {
    q8mat m = {rows, cols, gs, (cols + gs - 1) / gs, NULL, NULL, NULL, NULL};
    size_t blocks = (size_t)(rows + BR - 1) / BR, G = (size_t)m.groups;
    m.w = xmalloc((size_t)rows * (size_t)cols);
    m.s = xmalloc((size_t)rows * G * sizeof(float));
    m.wq = calloc(blocks * BR * G * (size_t)gs, 1);
    m.ws = calloc(blocks * BR * G, sizeof(float));
    if (!m.wq || !m.ws) exit(2);
    for (size_t i = 0; i < (size_t)rows * (size_t)cols; i++)
        m.w[i] = (int8_t)(extreme ? (rnd() & 1 ? 127 : -127) : rnd_int(-127, 127));
    for (size_t i = 0; i < (size_t)rows * G; i++) m.s[i] = uniform(0.0f, 0.02f);
    for (int r = 0; r < rows; r++) {
        size_t b = (size_t)r / BR, rr = (size_t)r % BR;
        for (int c = 0; c < cols; c++) {
            size_t bg = b * G + (size_t)(c / gs);
            m.wq[(bg * (size_t)gs + (size_t)(c % gs)) * BR + rr] =
                m.w[(size_t)r * (size_t)cols + (size_t)c];
        }
        for (size_t g = 0; g < G; g++) m.ws[(b * G + g) * BR + rr] = m.s[(size_t)r * G + g];
    }
    return m;
}

static void q8_free(q8mat *m) {
    free(m->w);
    free(m->s);
    free(m->wq);
    free(m->ws);
}

/* the contract of quantize_q8, written out: scale = max|x| / 127, q = x * (1 / scale)
 * rounded to nearest even, zero padding; a group with NaN or infinity: zeros, scale NaN.
 * With lo (quantize_q8_two_part): lo = rne(16 * (t - q)) of t = x * (1 / scale), and the
 * scale / 16. */
static void ref_quantize(int8_t *xq, int8_t *lo, float *xs, const float *x, int n, int gs) {
    for (int g = 0; g * gs < n; g++) {
        float amax = 0.0f;
        int finite = 1;
        for (int i = g * gs; i < n && i < (g + 1) * gs; i++) {
            amax = fabsf(x[i]) > amax ? fabsf(x[i]) : amax;
            finite &= isfinite(x[i]) != 0;
        }
        float scale = amax / 127.0f, inv = scale > 0.0f ? 1.0f / scale : 0.0f;
        for (int i = g * gs; i < (g + 1) * gs; i++) {
            float t = i < n && finite ? x[i] * inv : 0.0f;
            long q = lrintf(t);
            xq[i] = (int8_t)q;
            if (lo) lo[i] = (int8_t)lrintf((t - (float)q) * 16.0f);
        }
        xs[g] = finite ? (lo ? scale / 16.0f : scale) : NAN;
    }
}

static const int group_sizes[] = {1, 2, 3, 7, 16, 31, 32, 33, 48, 64, 100, 256};
enum { N_GS = sizeof group_sizes / sizeof group_sizes[0] };

/* quantize_q8, or quantize_q8_two_part (two_part): bitwise against the contract (generic) or
 * against generic; a two-part input must also be x to within half its step, xs / 2 */
static void test_quantize(const l2_kernels *k, int two_part) {
    static const int ns[] = {1, 2, 3, 5, 7, 8, 9, 16, 31, 32, 33, 63, 64, 100, 255, 288, 300, 768};
    check c;
    start(&c, k, two_part ? "quantize_q8_two_part" : "quantize_q8");
    for (int gi = 0; gi < N_GS; gi++)
        for (size_t ni = 0; ni < sizeof ns / sizeof ns[0]; ni++)
            for (int kind = 0; kind < 4; kind++) {
                int n = ns[ni], gs = group_sizes[gi], G = (n + gs - 1) / gs;
                float *x = xmalloc((size_t)n * sizeof *x);
                fill(x, n);
                for (int i = 0; i < n; i++) {
                    /* kind 1: scale 1 (each group has a 127), halves are ties; zero groups */
                    if (kind == 1) x[i] = i % gs ? (float)rnd_int(-254, 254) * 0.5f : 127.0f;
                    if (kind == 1 && two_part && i % 5 == 1) x[i] += 1.0f / 32.0f;  /* lo ties */
                    if (kind == 1 && i / gs % 4 == 3) x[i] = 0.0f;
                    if (kind == 2) x[i] *= rnd() % 3 ? 1e30f : 1e-38f;  /* huge, tiny */
                    if (kind == 3 && rnd() % 40 == 0)  /* NaN, infinities */
                        x[i] = (float[]){NAN, INFINITY, -INFINITY}[rnd() % 3];
                }
                size_t padded = (size_t)G * (size_t)gs;
                int8_t *q = xmalloc(padded), *qr = xmalloc(padded);
                int8_t *lo = two_part ? xmalloc(padded) : NULL, *lor = two_part ? xmalloc(padded) : NULL;
                float *s = xmalloc((size_t)G * sizeof *s), *sr = xmalloc((size_t)G * sizeof *sr);
                memset(q, 0x55, padded);  /* the padding must be written */
                if (lo) memset(lo, 0x55, padded);
                if (c.is_generic) ref_quantize(qr, lor, sr, x, n, gs);
                else if (two_part) l2_kernels_generic.quantize_q8_two_part(qr, lor, sr, x, n, gs);
                else l2_kernels_generic.quantize_q8(qr, sr, x, n, gs);
                if (two_part) k->quantize_q8_two_part(q, lo, s, x, n, gs);
                else k->quantize_q8(q, s, x, n, gs);
                char what[64];
                snprintf(what, sizeof what, "n=%d gs=%d kind=%d values", n, gs, kind);
                compare_bits(&c, q, qr, G * gs, 1, what);
                snprintf(what, sizeof what, "n=%d gs=%d kind=%d scales", n, gs, kind);
                compare_bits(&c, s, sr, G, 4, what);
                if (two_part) {
                    snprintf(what, sizeof what, "n=%d gs=%d kind=%d low parts", n, gs, kind);
                    compare_bits(&c, lo, lor, G * gs, 1, what);
                    for (int i = 0; i < n && kind != 2; i++) {  /* kind 2: denormal scales */
                        float step = s[i / gs];
                        double err = fabs((double)x[i] - (double)step * (16.0 * q[i] + lo[i]));
                        if (isfinite(step) && (err > 0.5001 * step || lo[i] < -8 || lo[i] > 8))
                            fail(&c, "n=%d gs=%d kind=%d: x[%d] = %.9g is %d*16%+d steps of %.9g",
                                 n, gs, kind, i, x[i], q[i], lo[i], step);
                    }
                }
                free(x), free(q), free(qr), free(lo), free(lor), free(s), free(sr);
            }
    finish(&c);
}

/* want[r] = sum_g scale_w * scale_x * (exact int sum), scale[r] the sum of the terms' sizes:
 * weights w (4 w + lows with lows: q10), inputs xq (16 xq + xlo with xlo: two-part) */
static void q8_reference(const q8mat *m, const int8_t *lows, const int8_t *xq, const int8_t *xlo,
                         const float *xs, double *want, double *scale) {
    int G = m->groups, gs = m->gs, cols = m->cols;
    for (int r = 0; r < m->rows; r++) {
        double v = 0.0, a = 0.0;
        for (int g = 0; g < G; g++) {
            long long isum = 0;
            for (int cc = g * gs; cc < cols && cc < (g + 1) * gs; cc++) {
                size_t i = (size_t)r * (size_t)cols + (size_t)cc;
                isum += (lows ? 4LL * m->w[i] + lows[i] : m->w[i]) * (xlo ? 16 * xq[cc] + xlo[cc] : xq[cc]);
            }
            double t = (double)isum * m->s[(size_t)r * (size_t)G + (size_t)g] * xs[g];
            v += t;
            a += fabs(t);
        }
        want[r] = v;
        scale[r] = a;
    }
}

/* matvec_q8, or matvec_q8_two_part on quantize_q8_two_part's input (two_part) */
static void q8_case(check *c, int rows, int cols, int gs, int extreme, int two_part) {
    q8mat m = q8_random(rows, cols, gs, extreme == 1);
    int G = m.groups;
    float *x = xmalloc((size_t)cols * sizeof *x), *xs = xmalloc((size_t)G * sizeof *xs);
    int8_t *xq = xmalloc((size_t)G * (size_t)gs), *xlo = xmalloc((size_t)G * (size_t)gs);
    fill(x, cols);
    if (extreme == 1)  /* all activations +-127 (two-part: 16 * +-127 + 0, the largest) */
        for (int i = 0; i < cols; i++) x[i] = rnd() & 1 ? 1.0f : -1.0f;
    if (extreme == 2) x[rnd() % (unsigned)cols] = rnd() & 1 ? NAN : -INFINITY;  /* must reach out */
    if (two_part) l2_kernels_generic.quantize_q8_two_part(xq, xlo, xs, x, cols, gs);
    else l2_kernels_generic.quantize_q8(xq, xs, x, cols, gs);
    float *out = xmalloc((size_t)rows * sizeof *out);
    double *want = dalloc(rows), *scale = dalloc(rows);
    q8_reference(&m, NULL, xq, two_part ? xlo : NULL, xs, want, scale);
    if (!c->is_generic) {
        float *ref = xmalloc((size_t)rows * sizeof *ref);
        if (two_part)
            l2_kernels_generic.matvec_q8_two_part(ref, m.wq, m.ws, xq, xlo, xs, rows, cols, gs);
        else
            l2_kernels_generic.matvec_q8(ref, m.wq, m.ws, xq, xs, rows, cols, gs);
        for (int r = 0; r < rows; r++) want[r] = ref[r];
        free(ref);
    }
    if (two_part) c->k->matvec_q8_two_part(out, m.wq, m.ws, xq, xlo, xs, rows, cols, gs);
    else c->k->matvec_q8(out, m.wq, m.ws, xq, xs, rows, cols, gs);
    char what[80];
    snprintf(what, sizeof what, "rows=%d cols=%d gs=%d%s", rows, cols, gs,
             (const char *[]){"", " extreme", " non-finite x"}[extreme]);
    compare(c, out, want, scale, rows, c->is_generic ? TOL_REF : TOL_Q8, what);
    q8_free(&m);
    free(x), free(xs), free(xq), free(xlo), free(out), free(want), free(scale);
}

static void test_matvec_q8(const l2_kernels *k, int two_part) {
    static const int rows[] = {1, 5, 31, 32, 33, 64, 65, 100};
    static const int cols[] = {1, 2, 3, 5, 31, 32, 33, 63, 100, 255, 288, 300};
    check c;
    start(&c, k, two_part ? "matvec_q8_two_part" : "matvec_q8");
    for (int gi = 0; gi < N_GS; gi++)
        for (size_t ri = 0; ri < sizeof rows / sizeof rows[0]; ri++)
            for (size_t ci = 0; ci < sizeof cols / sizeof cols[0]; ci++)
                q8_case(&c, rows[ri], cols[ci], group_sizes[gi], 0, two_part);
    for (int gi = 0; gi < N_GS; gi++) q8_case(&c, 70, 300, group_sizes[gi], 1, two_part);
    for (int gi = 0; gi < N_GS; gi++) q8_case(&c, 40, 100, group_sizes[gi], 2, two_part);
    if (two_part) q8_case(&c, 33, 2 * L2_MAX_TWO_PART_GROUP, L2_MAX_TWO_PART_GROUP, 1, 1);
    /* stories15M's shapes, the classifier last */
    q8_case(&c, 288, 288, 32, 0, two_part);
    q8_case(&c, 768, 288, 32, 0, two_part);
    q8_case(&c, 288, 768, 32, 0, two_part);
    if (!two_part) q8_case(&c, 32000, 288, 32, 0, 0);
    finish(&c);
}

/* q10 (kernels.h): the q8 matrix's values as high parts and a random plane of low parts */
static uint8_t *q10_plane(const q8mat *m, int8_t *lows) {
    size_t blocks = (size_t)(m->rows + BR - 1) / BR, G = (size_t)m->groups, gs = (size_t)m->gs;
    uint8_t *wl = calloc(blocks * G * gs / 4 * BR + 1, 1);
    if (!wl) exit(2);
    for (int r = 0; r < m->rows; r++)
        for (int c = 0; c < m->cols; c++) {
            int lo = rnd_int(0, 3);
            lows[(size_t)r * (size_t)m->cols + (size_t)c] = (int8_t)lo;
            size_t b = (size_t)r / BR, g = (size_t)c / gs;
            wl[((b * G + g) * (gs / 4) + (size_t)c % gs / 4) * BR + (size_t)r % BR] |=
                (uint8_t)(lo << (2 * (c % 4)));
        }
    return wl;
}

static void q10_case(check *c, int rows, int cols, int gs, int extreme) {
    q8mat m = q8_random(rows, cols, gs, extreme == 1);
    int G = m.groups;
    int8_t *lows = xmalloc((size_t)rows * (size_t)cols);
    uint8_t *wl = q10_plane(&m, lows);
    if (extreme == 1)  /* v = 4 * +-127 + 3 or + 0: the largest magnitudes */
        for (size_t i = 0; i < (size_t)rows * (size_t)cols; i++) {
            lows[i] = (int8_t)(m.w[i] > 0 ? 3 : 0);
            size_t r = i / (size_t)cols, cc = i % (size_t)cols, b = r / BR, g = cc / (size_t)gs;
            uint8_t *at = &wl[((b * (size_t)G + g) * (size_t)(gs / 4) + cc % (size_t)gs / 4) * BR + r % BR];
            *at = (uint8_t)((*at & ~(3u << (2 * (cc % 4)))) | (unsigned)lows[i] << (2 * (cc % 4)));
        }
    float *x = xmalloc((size_t)cols * sizeof *x), *xs = xmalloc((size_t)G * sizeof *xs);
    int8_t *xq = xmalloc((size_t)G * (size_t)gs), *xlo = xmalloc((size_t)G * (size_t)gs);
    fill(x, cols);
    if (extreme == 1)
        for (int i = 0; i < cols; i++) x[i] = rnd() & 1 ? 1.0f : -1.0f;
    if (extreme == 2) x[rnd() % (unsigned)cols] = rnd() & 1 ? NAN : -INFINITY;
    l2_kernels_generic.quantize_q8_two_part(xq, xlo, xs, x, cols, gs);
    float *out = xmalloc((size_t)rows * sizeof *out);
    double *want = dalloc(rows), *scale = dalloc(rows);
    q8_reference(&m, lows, xq, xlo, xs, want, scale);
    if (!c->is_generic) {
        float *ref = xmalloc((size_t)rows * sizeof *ref);
        l2_kernels_generic.matvec_q10(ref, m.wq, wl, m.ws, xq, xlo, xs, rows, cols, gs);
        for (int r = 0; r < rows; r++) want[r] = ref[r];
        free(ref);
    }
    c->k->matvec_q10(out, m.wq, wl, m.ws, xq, xlo, xs, rows, cols, gs);
    char what[80];
    snprintf(what, sizeof what, "rows=%d cols=%d gs=%d%s", rows, cols, gs,
             (const char *[]){"", " extreme", " non-finite x"}[extreme]);
    compare(c, out, want, scale, rows, c->is_generic ? TOL_REF : TOL_Q8, what);
    q8_free(&m);
    free(lows), free(wl), free(x), free(xs), free(xq), free(xlo), free(out), free(want), free(scale);
}

static void test_matvec_q10(const l2_kernels *k) {
    static const int rows[] = {1, 5, 31, 32, 33, 64, 65, 100};
    static const int cols[] = {1, 3, 4, 5, 31, 32, 33, 64, 100, 172, 288};
    static const int gss[] = {4, 8, 12, 16, 32, 64, 100};
    check c;
    start(&c, k, "matvec_q10");
    for (size_t gi = 0; gi < sizeof gss / sizeof gss[0]; gi++)
        for (size_t ri = 0; ri < sizeof rows / sizeof rows[0]; ri++)
            for (size_t ci = 0; ci < sizeof cols / sizeof cols[0]; ci++)
                q10_case(&c, rows[ri], cols[ci], gss[gi], 0);
    for (size_t gi = 0; gi < sizeof gss / sizeof gss[0]; gi++) q10_case(&c, 70, 300, gss[gi], 1);
    for (size_t gi = 0; gi < sizeof gss / sizeof gss[0]; gi++) q10_case(&c, 40, 100, gss[gi], 2);
    q10_case(&c, 33, 2 * L2_MAX_Q10_GROUP, L2_MAX_Q10_GROUP, 1);
    q10_case(&c, 288, 288, 32, 0);
    q10_case(&c, 768, 288, 32, 0);
    q10_case(&c, 288, 768, 32, 0);
    finish(&c);
}

/* l2_matvec_q10_flat (generic only: a q10 matrix's tail rows) against the double reference */
static void test_matvec_q10_flat(void) {
    static const int shapes[][3] = {{1, 1, 4}, {3, 5, 4}, {12, 64, 32}, {7, 33, 8}, {31, 172, 32}, {5, 100, 100}};
    check c;
    start(&c, &l2_kernels_generic, "matvec_q10_flat");
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) {
        int rows = shapes[i][0], cols = shapes[i][1], gs = shapes[i][2];
        size_t n = (size_t)rows * (size_t)cols, G = (n + (size_t)gs - 1) / (size_t)gs;
        int8_t *wq = xmalloc(n), *lo = xmalloc(n);
        uint8_t *wl = calloc((n + 3) / 4, 1);
        float *ws = xmalloc(G * sizeof *ws), *x = xmalloc((size_t)cols * sizeof *x);
        float *out = xmalloc((size_t)rows * sizeof *out);
        double *want = dalloc(rows), *scale = dalloc(rows);
        if (!wl) exit(2);
        for (size_t f = 0; f < n; f++) {
            wq[f] = (int8_t)rnd_int(-127, 127);
            lo[f] = (int8_t)rnd_int(0, 3);
            wl[f / 4] |= (uint8_t)(lo[f] << (2 * (f % 4)));
        }
        for (size_t g = 0; g < G; g++) ws[g] = uniform(0.0f, 0.02f);
        fill(x, cols);
        for (int r = 0; r < rows; r++) {
            double v = 0.0, a = 0.0;
            for (int cc = 0; cc < cols; cc++) {
                size_t f = (size_t)r * (size_t)cols + (size_t)cc;
                double t = (4.0 * wq[f] + lo[f]) * ws[f / (size_t)gs] * x[cc];
                v += t;
                a += fabs(t);
            }
            want[r] = v;
            scale[r] = a;
        }
        l2_matvec_q10_flat(out, wq, wl, ws, x, rows, cols, gs);
        char what[64];
        snprintf(what, sizeof what, "rows=%d cols=%d gs=%d", rows, cols, gs);
        compare(&c, out, want, scale, rows, TOL_REF, what);
        free(wq), free(lo), free(wl), free(ws), free(x), free(out), free(want), free(scale);
    }
    finish(&c);
}

/* ---------------------------------------------------------------- float matrices */

static const int mv_rows[] = {1, 2, 3, 7, 8, 9, 15, 16, 17, 31, 33, 64, 100};
static const int mv_cols[] = {1, 2, 3, 7, 8, 9, 15, 16, 17, 31, 33, 48, 100, 255, 288, 300};

static void test_matvec(const l2_kernels *k, int f16) {
    check c;
    start(&c, k, f16 ? "matvec_f16" : "matvec_f32");
    for (size_t ri = 0; ri < sizeof mv_rows / sizeof mv_rows[0]; ri++)
        for (size_t ci = 0; ci < sizeof mv_cols / sizeof mv_cols[0]; ci++) {
            int rows = mv_rows[ri], cols = mv_cols[ci];
            size_t n = (size_t)rows * (size_t)cols;
            float *w = xmalloc(n * sizeof *w), *x = xmalloc((size_t)cols * sizeof *x);
            uint16_t *wh = xmalloc(n * sizeof *wh);
            fill(w, (int)n);
            fill(x, cols);
            for (size_t i = 0; i < n; i++) {
                wh[i] = l2_f32_to_f16(w[i]);
                if (f16) w[i] = l2_f16_to_f32(wh[i]);
            }
            float *out = xmalloc((size_t)rows * sizeof *out);
            double *want = dalloc(rows), *scale = dalloc(rows);
            for (int r = 0; r < rows; r++) {
                double v = 0.0, a = 0.0;
                for (int i = 0; i < cols; i++) {
                    double t = (double)w[(size_t)r * (size_t)cols + (size_t)i] * x[i];
                    v += t;
                    a += fabs(t);
                }
                want[r] = v;
                scale[r] = a;
            }
            if (!c.is_generic) {
                if (f16) l2_kernels_generic.matvec_f16(out, wh, x, rows, cols);
                else l2_kernels_generic.matvec_f32(out, w, x, rows, cols);
                for (int r = 0; r < rows; r++) want[r] = out[r];
            }
            if (f16) k->matvec_f16(out, wh, x, rows, cols);
            else k->matvec_f32(out, w, x, rows, cols);
            char what[64];
            snprintf(what, sizeof what, "rows=%d cols=%d", rows, cols);
            compare(&c, out, want, scale, rows, c.is_generic ? TOL_REF : TOL_DOT, what);
            free(w), free(x), free(wh), free(out), free(want), free(scale);
        }
    finish(&c);
}

/* ---------------------------------------------------------------- attention */

static const int n_positions[] = {1, 2, 3, 7, 8, 9, 16, 17, 31, 64, 100, 255, 256, 300};
static const int head_sizes[] = {2, 4, 6, 8, 10, 16, 30, 32, 46, 48, 64, 66, 126, 128};

/* the cache of one head: n_pos rows of hs values, `stride` apart (several heads per row) */
static void test_attention(const l2_kernels *k, int f16, int mix) {
    check c;
    start(&c, k, mix ? (f16 ? "attn_mix_f16" : "attn_mix_f32")
                     : (f16 ? "attn_scores_f16" : "attn_scores_f32"));
    for (size_t pi = 0; pi < sizeof n_positions / sizeof n_positions[0]; pi++)
        for (size_t hi = 0; hi < sizeof head_sizes / sizeof head_sizes[0]; hi++) {
            int n_pos = n_positions[pi], hs = head_sizes[hi];
            size_t stride = (size_t)hs * 3 + (size_t)(hi % 2), n = (size_t)n_pos * stride;
            float *cache = xmalloc(n * sizeof *cache), *q = xmalloc((size_t)hs * sizeof *q);
            float *att = xmalloc((size_t)n_pos * sizeof *att);
            uint16_t *cache_h = xmalloc(n * sizeof *cache_h);
            fill(cache, (int)n);
            fill(q, hs);
            for (int t = 0; t < n_pos; t++) att[t] = uniform(0.0f, 1.0f);
            for (size_t i = 0; i < n; i++) {
                cache_h[i] = l2_f32_to_f16(cache[i]);
                if (f16) cache[i] = l2_f16_to_f32(cache_h[i]);
            }
            const float *head = cache + hs;  /* the second head of each row */
            const uint16_t *head_h = cache_h + hs;
            int m = mix ? hs : n_pos;
            float *out = xmalloc((size_t)m * sizeof *out);
            double *want = dalloc(m), *scale = dalloc(m);
            for (int i = 0; i < m; i++) want[i] = scale[i] = 0.0;
            for (int t = 0; t < n_pos; t++)
                for (int i = 0; i < hs; i++) {
                    double kv = head[(size_t)t * stride + (size_t)i];
                    double p = mix ? att[t] * kv : q[i] * kv / sqrt((double)hs);
                    want[mix ? i : t] += p;
                    scale[mix ? i : t] += fabs(p);
                }
            if (!c.is_generic) {
                const l2_kernels *g = &l2_kernels_generic;
                if (mix && f16) g->attn_mix_f16(out, att, head_h, n_pos, stride, hs);
                else if (mix) g->attn_mix_f32(out, att, head, n_pos, stride, hs);
                else if (f16) g->attn_scores_f16(out, q, head_h, n_pos, stride, hs);
                else g->attn_scores_f32(out, q, head, n_pos, stride, hs);
                for (int i = 0; i < m; i++) want[i] = out[i];
            }
            if (mix && f16) k->attn_mix_f16(out, att, head_h, n_pos, stride, hs);
            else if (mix) k->attn_mix_f32(out, att, head, n_pos, stride, hs);
            else if (f16) k->attn_scores_f16(out, q, head_h, n_pos, stride, hs);
            else k->attn_scores_f32(out, q, head, n_pos, stride, hs);
            char what[64];
            snprintf(what, sizeof what, "n_pos=%d head_size=%d", n_pos, hs);
            compare(&c, out, want, scale, m, c.is_generic ? TOL_REF : TOL_DOT, what);
            free(cache), free(q), free(att), free(cache_h), free(out), free(want), free(scale);
        }
    finish(&c);
}

/* ---------------------------------------------------------------- element-wise */

static const int vec_sizes[] = {1, 2, 3, 4, 7, 8, 9, 16, 17, 31, 32, 33, 64, 100, 172, 255, 288,
                                300, 768};
enum { N_VEC = sizeof vec_sizes / sizeof vec_sizes[0] };

static void test_rmsnorm(const l2_kernels *k) {
    check c;
    start(&c, k, "rmsnorm");
    for (int vi = 0; vi < N_VEC; vi++) {
        int n = vec_sizes[vi];
        float *x = xmalloc((size_t)n * sizeof *x), *w = xmalloc((size_t)n * sizeof *w);
        float *out = xmalloc((size_t)n * sizeof *out);
        double *want = xmalloc((size_t)n * sizeof *want), ss = 0.0;
        fill(x, n);
        fill(w, n);
        for (int i = 0; i < n; i++) ss += (double)x[i] * x[i];
        ss = 1.0 / sqrt(ss / n + 1e-5);
        for (int i = 0; i < n; i++) want[i] = w[i] * (ss * x[i]);
        if (!c.is_generic) {
            l2_kernels_generic.rmsnorm(out, x, w, n);
            for (int i = 0; i < n; i++) want[i] = out[i];
        }
        k->rmsnorm(out, x, w, n);
        char what[32];
        snprintf(what, sizeof what, "n=%d", n);
        compare(&c, out, want, NULL, n, c.is_generic ? 3e-5 : TOL_DOT, what);
        free(x), free(w), free(out), free(want);
    }
    finish(&c);
}

/* k's softmax of x[0..n) against generic's (which is the spec: llama2.c's) */
static void softmax_vs_generic(check *c, const l2_kernels *k, const float *x, int n,
                               const char *what) {
    float *y = xmalloc((size_t)n * sizeof *y);
    double *want = xmalloc((size_t)n * sizeof *want);
    memcpy(y, x, (size_t)n * sizeof *y);
    l2_kernels_generic.softmax(y, n);
    for (int i = 0; i < n; i++) want[i] = y[i];
    memcpy(y, x, (size_t)n * sizeof *y);
    k->softmax(y, n);
    compare(c, y, want, NULL, n, TOL_DOT, what);
    free(y), free(want);
}

static void test_softmax(const l2_kernels *k) {
    check c;
    start(&c, k, "softmax");
    char what[32];
    for (int vi = 0; vi < N_VEC; vi++) {
        int n = vec_sizes[vi];
        float *x = xmalloc((size_t)n * sizeof *x);
        fill(x, n);
        for (int i = 0; i < n; i++) x[i] *= 5.0f;
        snprintf(what, sizeof what, "n=%d", n);
        if (c.is_generic) {  /* against the definition, in double */
            float *y = xmalloc((size_t)n * sizeof *y);
            double *want = xmalloc((size_t)n * sizeof *want), max = -INFINITY, sum = 0.0;
            for (int i = 0; i < n; i++) max = x[i] > max ? x[i] : max;
            for (int i = 0; i < n; i++) sum += want[i] = exp(x[i] - max);
            for (int i = 0; i < n; i++) want[i] /= sum;
            memcpy(y, x, (size_t)n * sizeof *y);
            k->softmax(y, n);
            compare(&c, y, want, NULL, n, 5e-5, what);
            free(y), free(want);
        } else {
            softmax_vs_generic(&c, k, x, n, what);
        }
        free(x);
    }
    /* a vocabulary's worth, and the inputs where a maximum taken another way could differ:
     * -0 before +0, NaN first or later, -inf */
    static const int sizes[] = {5, 33, 1000, 32000};
    for (size_t si = 0; si < sizeof sizes / sizeof sizes[0] && !c.is_generic; si++) {
        int n = sizes[si];
        float *x = xmalloc((size_t)n * sizeof *x);
        for (int kind = 0; kind < 5; kind++) {
            fill(x, n);
            for (int i = 0; i < n; i++) x[i] *= 8.0f;
            if (kind == 1)
                for (int i = 0; i < n; i++) x[i] = i == 0 ? -0.0f : i == n / 2 ? 0.0f : -fabsf(x[i]) - 1.0f;
            if (kind == 2) x[0] = NAN;
            if (kind == 3) x[n / 2] = NAN;
            if (kind == 4) x[n - 1] = x[0] = -INFINITY;
            snprintf(what, sizeof what, "n=%d kind %d", n, kind);
            softmax_vs_generic(&c, k, x, n, what);
        }
        free(x);
    }
    finish(&c);
}

/* argmax from its contract: a NaN at 0 wins; otherwise the largest non-NaN value (+0 == -0)
 * and the first index holding it */
static int ref_argmax(const float *x, int n) {
    if (isnan(x[0])) return 0;
    float m = x[0];
    for (int i = 1; i < n; i++) m = x[i] > m ? x[i] : m;
    for (int i = 0; i < n; i++)
        if (x[i] == m) return i;
    return -1;
}

static void test_argmax(const l2_kernels *k) {
    check c;
    start(&c, k, "argmax");
    static const int sizes[] = {1, 2, 3, 7, 8, 9, 31, 32, 33, 100, 255, 256, 257, 1000, 32000};
    for (size_t si = 0; si < sizeof sizes / sizeof sizes[0]; si++) {
        int n = sizes[si];
        float *x = xmalloc((size_t)n * sizeof *x);
        for (int kind = 0; kind < 8; kind++) {
            fill(x, n);
            int a = rnd_int(0, n - 1), b = rnd_int(0, n - 1);
            switch (kind) {
            case 1: x[a] = x[b] = 100.0f; break;                 /* a tie: the first wins */
            case 2: for (int i = 0; i < n; i++) x[i] = -fabsf(x[i]) - 1.0f;
                    x[a] = -0.0f, x[b] = 0.0f; break;            /* +0 and -0 tie */
            case 3: x[a] = NAN; break;                           /* passed over (or wins at 0) */
            case 4: x[0] = NAN; break;
            case 5: for (int i = 0; i < n; i++) x[i] = 1.5f; break;
            case 6: for (int i = 0; i < n; i++) x[i] = -INFINITY;
                    x[a] = INFINITY; break;
            case 7: x[n - 1] = 1e30f; break;                     /* in the tail */
            default: break;
            }
            int want = c.is_generic ? ref_argmax(x, n) : l2_kernels_generic.argmax(x, n);
            int got = k->argmax(x, n);
            char what[48];
            snprintf(what, sizeof what, "n=%d kind %d", n, kind);
            compare_bits(&c, &got, &want, 1, sizeof got, what);
        }
        free(x);
    }
    finish(&c);
}

/* all_finite from its contract: 1 unless some element is NaN or infinite */
static int ref_all_finite(const float *x, int n) {
    for (int i = 0; i < n; i++)
        if (!isfinite(x[i])) return 0;
    return 1;
}

static void test_all_finite(const l2_kernels *k) {
    check c;
    start(&c, k, "all_finite");
    static const int sizes[] = {1, 2, 7, 8, 9, 31, 32, 33, 100, 255, 256, 257, 1000, 32000};
    static const float odd[] = {NAN, -NAN, INFINITY, -INFINITY, FLT_MAX, -FLT_MAX, 0x1p-149f, -0.0f};
    for (size_t si = 0; si < sizeof sizes / sizeof sizes[0]; si++) {
        int n = sizes[si];
        float *x = xmalloc((size_t)n * sizeof *x);
        for (size_t oi = 0; oi <= sizeof odd / sizeof odd[0]; oi++) {
            for (int where = 0; where < 3; where++) {  /* first, anywhere, last */
                fill(x, n);
                int at = where == 0 ? 0 : where == 1 ? rnd_int(0, n - 1) : n - 1;
                if (oi < sizeof odd / sizeof odd[0]) x[at] = odd[oi];
                int want = ref_all_finite(x, n), got = k->all_finite(x, n);
                char what[48];
                snprintf(what, sizeof what, "n=%d value %zu at %d", n, oi, at);
                compare_bits(&c, &got, &want, 1, sizeof got, what);
            }
        }
        free(x);
    }
    finish(&c);
}

static void test_silu_mul(const l2_kernels *k) {
    check c;
    start(&c, k, "silu_mul");
    for (int vi = 0; vi < N_VEC; vi++) {
        int n = vec_sizes[vi];
        float *h = xmalloc((size_t)n * sizeof *h), *g = xmalloc((size_t)n * sizeof *g);
        float *y = xmalloc((size_t)n * sizeof *y);
        double *want = xmalloc((size_t)n * sizeof *want);
        fill(h, n);
        fill(g, n);
        for (int i = 0; i < n; i++) h[i] *= 8.0f;
        for (int i = 0; i < n; i++) want[i] = h[i] / (1.0 + exp(-(double)h[i])) * g[i];
        if (!c.is_generic) {
            memcpy(y, h, (size_t)n * sizeof *y);
            l2_kernels_generic.silu_mul(y, g, n);
            for (int i = 0; i < n; i++) want[i] = y[i];
        }
        memcpy(y, h, (size_t)n * sizeof *y);
        k->silu_mul(y, g, n);
        char what[32];
        snprintf(what, sizeof what, "n=%d", n);
        compare(&c, y, want, NULL, n, c.is_generic ? 1e-5 : TOL_DOT, what);
        free(h), free(g), free(y), free(want);
    }
    finish(&c);
}

static void test_rope(const l2_kernels *k) {
    check c;
    start(&c, k, "rope");
    for (size_t hi = 0; hi < sizeof head_sizes / sizeof head_sizes[0]; hi++)
        for (int heads = 1; heads <= 6; heads += 5) {
            int hs = head_sizes[hi], n = hs * heads;
            float *v = xmalloc((size_t)n * sizeof *v), *y = xmalloc((size_t)n * sizeof *y);
            float *cs = xmalloc((size_t)hs / 2 * sizeof *cs);
            float *sn = xmalloc((size_t)hs / 2 * sizeof *sn);
            double *want = dalloc(n), *scale = dalloc(n);
            fill(v, n);
            for (int i = 0; i < hs / 2; i++) {
                float a = uniform(0.0f, 100.0f);
                cs[i] = cosf(a);
                sn[i] = sinf(a);
            }
            for (int i = 0; i < n; i += 2) {
                int p = (i % hs) / 2;
                double v0 = v[i], v1 = v[i + 1];
                want[i] = v0 * cs[p] - v1 * sn[p];
                want[i + 1] = v0 * sn[p] + v1 * cs[p];
                scale[i] = fabs(v0 * cs[p]) + fabs(v1 * sn[p]);
                scale[i + 1] = fabs(v0 * sn[p]) + fabs(v1 * cs[p]);
            }
            if (!c.is_generic) {
                memcpy(y, v, (size_t)n * sizeof *y);
                l2_kernels_generic.rope(y, n, hs, cs, sn);
                for (int i = 0; i < n; i++) want[i] = y[i];
            }
            memcpy(y, v, (size_t)n * sizeof *y);
            k->rope(y, n, hs, cs, sn);
            char what[48];
            snprintf(what, sizeof what, "n=%d head_size=%d", n, hs);
            compare(&c, y, want, scale, n, c.is_generic ? 1e-6 : TOL_DOT, what);
            free(v), free(y), free(cs), free(sn), free(want), free(scale);
        }
    finish(&c);
}

/* ---------------------------------------------------------------- f16 */

/* f32 -> f16 from the definition: the nearest f16 (ties to even), infinity from 65520 on,
 * every NaN as the canonical quiet 0x7e00 */
static uint16_t ref_f16(float f) {
    uint16_t sign = signbit(f) ? 0x8000u : 0;
    if (isnan(f)) return 0x7e00u;
    double a = fabs((double)f);
    if (a >= 65520.0) return sign | 0x7c00u;
    int e;
    frexp(a, &e);                                  /* a = m * 2^e, 0.5 <= m < 1 */
    e = e - 1 < -14 ? -14 : e - 1;                 /* exponent of a, or of the subnormals */
    double q = nearbyint(ldexp(a, 10 - e));        /* a in units of its f16 ulp, rounded */
    if (a < 0x1p-14) return sign | (uint16_t)q;    /* subnormal (q = 1024 is the least normal) */
    return sign | (uint16_t)(((e + 15) << 10) + (int)q - 1024);
}

static float from_bits(uint32_t u) {
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

static void test_to_f16(const l2_kernels *k) {
    check c;
    start(&c, k, "to_f16");
    /* every f16 value, the midpoints between neighbours and the floats next to both, both
     * signs; around overflow, NaNs with payloads, infinities; random bit patterns */
    size_t cap = 0x7c00 * 12 + 64 + 100000, n = 0;
    float *x = xmalloc(cap * sizeof *x);
    for (uint16_t h = 0; h < 0x7c00; h++) {
        float v = l2_f16_to_f32(h);
        float next = h + 1 < 0x7c00 ? l2_f16_to_f32((uint16_t)(h + 1)) : 65520.0f;  /* ties: inf */
        float mid = (v + next) / 2;
        float pts[6] = {v,   nextafterf(v, INFINITY),   nextafterf(v, -INFINITY),
                        mid, nextafterf(mid, INFINITY), nextafterf(mid, -INFINITY)};
        for (int i = 0; i < 6; i++) x[n++] = pts[i], x[n++] = -pts[i];
    }
    static const uint32_t special[] = {0x477fe000u, 0x477fefffu, 0x477ff000u, 0x477ff001u,
                                       0x47800000u, 0x7f7fffffu, 0x7f800000u, 0x7f800001u,
                                       0x7fbfffffu, 0x7fc00000u, 0x7fc00001u, 0x7fffffffu,
                                       0x00000001u, 0x00800000u, 0x33000000u, 0x33000001u,
                                       0x337fffffu, 0x33800000u, 0x387fe000u, 0x387ff000u,
                                       0x387fffffu, 0x38800000u};
    for (size_t i = 0; i < sizeof special / sizeof special[0]; i++)
        x[n++] = from_bits(special[i]), x[n++] = from_bits(special[i] | 0x80000000u);
    while (n < cap) x[n++] = from_bits(rnd());
    uint16_t *got = xmalloc(n * sizeof *got), *want = xmalloc(n * sizeof *want);
    for (size_t i = 0; i < n; i++) want[i] = ref_f16(x[i]);
    if (!c.is_generic) l2_kernels_generic.to_f16(want, x, (int)n);
    /* in chunks of every length 1..17, so tails of every size are converted */
    for (size_t i = 0, len = 1; i < n; i += len, len = len % 17 + 1) {
        size_t m = n - i < len ? n - i : len;
        k->to_f16(got + i, x + i, (int)m);
    }
    for (size_t i = 0; i < n; i += 4096) {
        char what[48];
        uint32_t bits;
        size_t m = n - i < 4096 ? n - i : 4096;
        memcpy(&bits, &x[i], 4);
        snprintf(what, sizeof what, "chunk at %zu (first input 0x%08x)", i, bits);
        compare_bits(&c, got + i, want + i, (int)m, 2, what);
        if (c.failure[0]) {  /* name the input that failed */
            for (size_t j = i; j < i + m; j++)
                if (got[j] != want[j]) {
                    memcpy(&bits, &x[j], 4);
                    snprintf(c.failure, sizeof c.failure, "f32 0x%08x -> 0x%04x, want 0x%04x", bits,
                             got[j], want[j]);
                    break;
                }
            break;
        }
    }
    free(x), free(got), free(want);
    finish(&c);
}

/* ---------------------------------------------------------------- main */

int main(void) {
    for (int32_t i = 0; l2_kernels_name(i); i++) {
        const l2_kernels *k = l2_kernels_find(l2_kernels_name(i));
        if (!k) {
            printf("%-8s FAIL  listed but not found\n", l2_kernels_name(i));
            n_failed++;
            continue;
        }
        rng = 0x2545f4914f6cdd1dull + (uint64_t)i;  /* each set sees its own inputs */
        test_quantize(k, 0);
        test_quantize(k, 1);
        test_matvec_q8(k, 0);
        test_matvec_q8(k, 1);
        test_matvec_q10(k);
        test_matvec(k, 0);
        test_matvec(k, 1);
        test_attention(k, 0, 0);
        test_attention(k, 1, 0);
        test_attention(k, 0, 1);
        test_attention(k, 1, 1);
        test_rmsnorm(k);
        test_softmax(k);
        test_argmax(k);
        test_all_finite(k);
        test_silu_mul(k);
        test_rope(k);
        test_to_f16(k);
    }
    test_matvec_q10_flat();
    printf("%d passed, %d failed\n", n_passed, n_failed);
    return n_failed ? 1 : 0;
}
