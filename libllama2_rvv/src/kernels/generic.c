/* Portable reference kernels: the definition of what every kernel computes.
 * llama2.c's operations in llama2.c's order: every sum is accumulated sequentially, so the
 * float32 path gives upstream `run`'s logits bit for bit (built as its Makefile does, with
 * no -ffast-math). Vector kernels keep each sum's order and vectorise across rows,
 * positions or elements instead. */
#include <math.h>
#include <string.h>

#include "common.h"
#include "kernels.h"

static float dot_f32(const float *a, const float *b, int n) {
    float sum = 0.0f;
    for (int i = 0; i < n; i++) sum += a[i] * b[i];
    return sum;
}

static float dot_f16(const uint16_t *a, const float *b, int n) {
    float sum = 0.0f;
    for (int i = 0; i < n; i++) sum += l2_f16_to_f32(a[i]) * b[i];
    return sum;
}

void l2_matvec_f32_generic(float *out, const float *w, const float *x, int rows, int cols) {
    for (int r = 0; r < rows; r++) out[r] = dot_f32(w + (size_t)r * (size_t)cols, x, cols);
}

void l2_matvec_f16_generic(float *out, const uint16_t *w, const float *x, int rows, int cols) {
    for (int r = 0; r < rows; r++) out[r] = dot_f16(w + (size_t)r * (size_t)cols, x, cols);
}

/* This is where the time goes in q8 mode: int8 x int8 products summed exactly in int32 per
 * group, then scaled once per row and group. The column-major block lets every step work on
 * BR consecutive rows at once, with no horizontal sums (see kernels.h for the layout).
 * xlo, when given, is a two-part input's low part: each product becomes w * (16 x + xlo);
 * wl, when given (q10, always with xlo), the plane of low weight bits: w becomes 4 w + l. */
static void q8_product(float *out, const int8_t *wq, const uint8_t *wl, const float *ws,
                       const int8_t *xq, const int8_t *xlo, const float *xs, int rows, int cols,
                       int gs) {
    enum { BR = L2_Q8_BLOCK_ROWS };
    int groups = (cols + gs - 1) / gs;
    for (int r0 = 0; r0 < rows; r0 += BR) {
        float acc[BR] = {0};
        for (int g = 0; g < groups; g++) {
            int32_t isum[BR] = {0};
            size_t x0 = (size_t)g * (size_t)gs;
            for (int c = 0; c < gs; c++) {
                int16_t xv = xq[x0 + (size_t)c];  /* |w * x| <= 127 * 127: fits 16 bits */
                if (xlo) {
                    int32_t fine = 16 * (int32_t)xv + xlo[x0 + (size_t)c];
                    int shift = 2 * (c % 4);
                    for (int r = 0; r < BR; r++)
                        isum[r] += (wl ? 4 * wq[r] + (wl[r] >> shift & 3) : wq[r]) * fine;
                } else {
                    for (int r = 0; r < BR; r++) isum[r] += (int16_t)(wq[r] * xv);
                }
                wq += BR;
                if (wl && c % 4 == 3) wl += BR;
            }
            for (int r = 0; r < BR; r++) acc[r] += (float)isum[r] * ws[r] * xs[g];
            ws += BR;
        }
        int n = rows - r0 < BR ? rows - r0 : BR;
        memcpy(out + r0, acc, (size_t)n * sizeof(float));
    }
}

void l2_matvec_q8_generic(float *out, const int8_t *wq, const float *ws, const int8_t *xq,
                          const float *xs, int rows, int cols, int gs) {
    q8_product(out, wq, NULL, ws, xq, NULL, xs, rows, cols, gs);
}

void l2_matvec_q8_two_part_generic(float *out, const int8_t *wq, const float *ws,
                                   const int8_t *xq, const int8_t *xlo, const float *xs,
                                   int rows, int cols, int gs) {
    q8_product(out, wq, NULL, ws, xq, xlo, xs, rows, cols, gs);
}

void l2_matvec_q10_generic(float *out, const int8_t *wq, const uint8_t *wl, const float *ws,
                           const int8_t *xq, const int8_t *xlo, const float *xs, int rows,
                           int cols, int gs) {
    q8_product(out, wq, wl, ws, xq, xlo, xs, rows, cols, gs);
}

/* quantize_q8, and with xlo the low part of a two-part input (kernels.h) */
static void q8_quantize(int8_t *xq, int8_t *xlo, float *xs, const float *x, int n, int gs) {
    int groups = (n + gs - 1) / gs;
    for (int g = 0; g < groups; g++) {
        int start = g * gs, len = n - start < gs ? n - start : gs;
        float amax = 0.0f;
        for (int i = 0; i < len; i++) amax = fmaxf(amax, fabsf(x[start + i]));
        int finite = 1;
        for (int i = 0; i < len; i++) finite &= isfinite(x[start + i]);
        /* NaN or infinity must reach the output (fmaxf skips NaN, and rounding either is
         * undefined): the group becomes zeros with a NaN scale */
        float scale = finite ? amax / 127.0f : NAN;
        float inv = scale > 0.0f ? 1.0f / scale : 0.0f;
        for (int i = 0; i < len; i++) {
            float t = finite ? x[start + i] * inv : 0.0f;
            long q = lrintf(t);
            xq[start + i] = (int8_t)q;
            if (xlo) xlo[start + i] = (int8_t)lrintf((t - (float)q) * 16.0f);
        }
        for (int i = len; i < gs; i++) {
            xq[start + i] = 0;
            if (xlo) xlo[start + i] = 0;
        }
        xs[g] = xlo ? scale * 0.0625f : scale;
    }
}

void l2_quantize_q8_generic(int8_t *xq, float *xs, const float *x, int n, int gs) {
    q8_quantize(xq, NULL, xs, x, n, gs);
}

void l2_quantize_q8_two_part_generic(int8_t *xq, int8_t *xlo, float *xs, const float *x, int n,
                                     int gs) {
    q8_quantize(xq, xlo, xs, x, n, gs);
}

float l2_rms_scale(const float *x, int n) {
    float ss = dot_f32(x, x, n);
    ss /= (float)n;
    ss += 1e-5f;
    return 1.0f / sqrtf(ss);
}

void l2_rmsnorm_generic(float *out, const float *x, const float *w, int n) {
    float ss = l2_rms_scale(x, n);
    for (int i = 0; i < n; i++) out[i] = w[i] * (ss * x[i]);
}

float l2_exp_sum(float *x, int n, float max) {
    float sum = 0.0f;
    for (int i = 0; i < n; i++) {
        x[i] = expf(x[i] - max);
        sum += x[i];
    }
    return sum;
}

void l2_softmax_generic(float *x, int n) {
    float max = x[0];
    for (int i = 1; i < n; i++) if (x[i] > max) max = x[i];
    float sum = l2_exp_sum(x, n, max);
    for (int i = 0; i < n; i++) x[i] /= sum;
}

int l2_argmax_generic(const float *x, int n) {
    int best = 0;
    float best_value = x[0];
    for (int i = 1; i < n; i++) {
        if (x[i] > best_value) {
            best_value = x[i];
            best = i;
        }
    }
    return best;
}

/* Integer tests on the exponent bits, so that compilers vectorise the loop. */
int l2_all_finite_generic(const float *x, int n) {
    uint32_t non_finite = 0;
    for (int i = 0; i < n; i++) {
        uint32_t u;
        memcpy(&u, &x[i], sizeof u);
        non_finite |= (u & 0x7f800000u) == 0x7f800000u;
    }
    return !non_finite;
}

void l2_exp_neg(float *e, const float *x, int n) {
    for (int i = 0; i < n; i++) e[i] = expf(-x[i]);
}

void l2_silu_mul_generic(float *h, const float *g, int n) {
    for (int i = 0; i < n; i++) {
        float v = h[i];
        v *= 1.0f / (1.0f + expf(-v));
        h[i] = v * g[i];
    }
}

void l2_rope_generic(float *v, int n, int head_size, const float *cos_t, const float *sin_t) {
    for (int i = 0; i < n; i += 2) {
        int p = (i % head_size) / 2;
        float v0 = v[i], v1 = v[i + 1];
        v[i] = v0 * cos_t[p] - v1 * sin_t[p];
        v[i + 1] = v0 * sin_t[p] + v1 * cos_t[p];
    }
}

void l2_attn_scores_f32_generic(float *att, const float *q, const float *k, int n_pos, size_t stride,
                            int head_size) {
    for (int t = 0; t < n_pos; t++)
        att[t] = dot_f32(k + (size_t)t * stride, q, head_size) / sqrtf((float)head_size);
}

void l2_attn_scores_f16_generic(float *att, const float *q, const uint16_t *k, int n_pos,
                            size_t stride, int head_size) {
    for (int t = 0; t < n_pos; t++)
        att[t] = dot_f16(k + (size_t)t * stride, q, head_size) / sqrtf((float)head_size);
}

void l2_attn_mix_f32_generic(float *out, const float *att, const float *v, int n_pos, size_t stride,
                         int head_size) {
    memset(out, 0, (size_t)head_size * sizeof(float));
    for (int t = 0; t < n_pos; t++) {
        const float *vt = v + (size_t)t * stride;
        float a = att[t];
        for (int i = 0; i < head_size; i++) out[i] += a * vt[i];
    }
}

void l2_attn_mix_f16_generic(float *out, const float *att, const uint16_t *v, int n_pos,
                         size_t stride, int head_size) {
    memset(out, 0, (size_t)head_size * sizeof(float));
    for (int t = 0; t < n_pos; t++) {
        const uint16_t *vt = v + (size_t)t * stride;
        float a = att[t];
        for (int i = 0; i < head_size; i++) out[i] += a * l2_f16_to_f32(vt[i]);
    }
}

void l2_to_f16_generic(uint16_t *out, const float *x, int n) {
    for (int i = 0; i < n; i++) out[i] = l2_f32_to_f16(x[i]);
}

const l2_kernels l2_kernels_generic = {
    .name = "generic",
    .matvec_f32 = l2_matvec_f32_generic,
    .matvec_f16 = l2_matvec_f16_generic,
    .matvec_q8 = l2_matvec_q8_generic,
    .quantize_q8 = l2_quantize_q8_generic,
    .quantize_q8_two_part = l2_quantize_q8_two_part_generic,
    .matvec_q8_two_part = l2_matvec_q8_two_part_generic,
    .matvec_q10 = l2_matvec_q10_generic,
    .rmsnorm = l2_rmsnorm_generic,
    .softmax = l2_softmax_generic,
    .argmax = l2_argmax_generic,
    .all_finite = l2_all_finite_generic,
    .silu_mul = l2_silu_mul_generic,
    .rope = l2_rope_generic,
    .attn_scores_f32 = l2_attn_scores_f32_generic,
    .attn_scores_f16 = l2_attn_scores_f16_generic,
    .attn_mix_f32 = l2_attn_mix_f32_generic,
    .attn_mix_f16 = l2_attn_mix_f16_generic,
    .to_f16 = l2_to_f16_generic,
};

void l2_matvec_q8_flat(float *out, const int8_t *wq, const unsigned char *scales,
                       const float *x, int rows, int cols, int gs) {
    for (int r = 0; r < rows; r++) {
        size_t f = (size_t)r * (size_t)cols;  /* flat index of the row's first value */
        float val = 0.0f;
        for (int c = 0; c < cols;) {
            /* the stretch of this row that lies in one flat group */
            size_t g = f / (size_t)gs;
            int len = (int)((g + 1) * (size_t)gs - f);
            if (len > cols - c) len = cols - c;
            float scale = l2_read_f32(scales + 4 * g), part = 0.0f;
            for (int i = 0; i < len; i++) part += (float)wq[f + (size_t)i] * x[c + i];
            val += part * scale;
            c += len;
            f += (size_t)len;
        }
        out[r] = val;
    }
}

void l2_matvec_q10_flat(float *out, const int8_t *wq, const uint8_t *wl, const float *ws,
                        const float *x, int rows, int cols, int gs) {
    for (int r = 0; r < rows; r++) {
        size_t f = (size_t)r * (size_t)cols;  /* flat index of the row's first value */
        float val = 0.0f;
        for (int c = 0; c < cols;) {
            size_t g = f / (size_t)gs;  /* the stretch of this row in one flat group */
            int len = (int)((g + 1) * (size_t)gs - f);
            if (len > cols - c) len = cols - c;
            float part = 0.0f;
            for (int i = 0; i < len; i++, f++)
                part += (float)(4 * wq[f] + (wl[f / 4] >> (2 * (f % 4)) & 3)) * x[c + i];
            val += part * ws[g];
            c += len;
        }
        out[r] = val;
    }
}
