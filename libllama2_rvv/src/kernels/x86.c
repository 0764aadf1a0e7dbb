/* x86-64 kernels: AVX2 and F16C ("avx2").
 *
 * Compiled in the normal host build without -m flags: each function carries a target
 * attribute, and the set's cpu_ok asks the CPU (and OS) at run time. Every kernel gives
 * results equal to the generic ones (kernels/generic.c), not merely close:
 * - q8 group sums are exact int32, and the float epilogue does the generic operations in
 *   its order;
 * - dot products keep the generic's 8 lane sums (lane l takes the products i = l mod 8, a
 *   multiply then an add, never fused; the tail goes to lanes 0..) and add the lanes in
 *   order 0..7, eight dot products at a time through a transpose;
 * - the attention mix is element-wise, a multiply then an add.
 * FMA is deliberately not enabled: with it a compiler given -ffp-contract=fast could fuse
 * a multiply and an add and break the equality. Kernels with no vector gain worth their
 * code (RMSNorm's and softmax's sequential sums, RoPE, SiLU's expf) are the generic ones. */
#if defined(__x86_64__)
#include <immintrin.h>
#include <math.h>
#include <string.h>

#include "kernels.h"

#define AVX2 __attribute__((target("avx2,f16c")))

enum { BR = L2_Q8_BLOCK_ROWS };

/* lanes 0..n-1 set (n clamped to 0..8) */
AVX2 static inline __m256i lanes_below(int n) {
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

/* ---------------------------------------------------------------- q8 */

/* The q8 matrix-vector product, where a q8 token spends most of its time (the 32000 x 288
 * classifier alone is 60%). One block column is 32 rows' int8 weights: one register.
 * Four columns are interleaved by two rounds of unpacks so that each 32-bit element holds
 * one row's weights of the four columns; vpmaddubsw multiplies them by the four activations
 * and adds pairs (unsigned x signed bytes: |w| times x carrying w's sign; |w| <= 128 and
 * |x| <= 127, so a pair sum <= 32512 never saturates), vpmaddwd adds the two pairs into
 * int32. The group sums are exact; the unpacks leave rows in the order 0-3 16-19 | 4-7
 * 20-23 | 8-11 24-27 | 12-15 28-31, undone by four lane permutes once per group. */
AVX2 static inline __m256i dot4_columns(__m256i acc, __m256i w, __m256i x4) {
    __m256i p = _mm256_maddubs_epi16(_mm256_abs_epi8(w), _mm256_sign_epi8(x4, w));
    return _mm256_add_epi32(acc, _mm256_madd_epi16(p, _mm256_set1_epi16(1)));
}

AVX2 static void matvec_q8(float *out, const int8_t *wq, const float *ws, const int8_t *xq,
                           const float *xs, int rows, int cols, int gs) {
    int groups = (cols + gs - 1) / gs;
    const __m256i zero = _mm256_setzero_si256();
    for (int r0 = 0; r0 < rows; r0 += BR) {
        __m256 acc[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(),
                         _mm256_setzero_ps()};
        for (int g = 0; g < groups; g++) {
            const int8_t *xg = xq + (size_t)g * (size_t)gs;
            __m256i s0 = zero, s1 = zero, s2 = zero, s3 = zero;
            for (int c = 0; c < gs; c += 4) {
                __m256i c0, c1, c2, c3;
                int32_t x4 = 0;
                if (c + 4 <= gs) {
                    c0 = _mm256_loadu_si256((const __m256i *)(const void *)wq);
                    c1 = _mm256_loadu_si256((const __m256i *)(const void *)(wq + BR));
                    c2 = _mm256_loadu_si256((const __m256i *)(const void *)(wq + 2 * BR));
                    c3 = _mm256_loadu_si256((const __m256i *)(const void *)(wq + 3 * BR));
                    memcpy(&x4, xg + c, 4);
                    wq += 4 * BR;
                } else {  /* the group's last 1..3 columns, with zero columns after them */
                    int n = gs - c;
                    c0 = _mm256_loadu_si256((const __m256i *)(const void *)wq);
                    c1 = n > 1 ? _mm256_loadu_si256((const __m256i *)(const void *)(wq + BR)) : zero;
                    c2 = n > 2 ? _mm256_loadu_si256((const __m256i *)(const void *)(wq + 2 * BR)) : zero;
                    c3 = zero;
                    memcpy(&x4, xg + c, (size_t)n);
                    wq += (size_t)n * BR;
                }
                __m256i xb = _mm256_set1_epi32(x4);
                __m256i p01l = _mm256_unpacklo_epi8(c0, c1), p01h = _mm256_unpackhi_epi8(c0, c1);
                __m256i p23l = _mm256_unpacklo_epi8(c2, c3), p23h = _mm256_unpackhi_epi8(c2, c3);
                s0 = dot4_columns(s0, _mm256_unpacklo_epi16(p01l, p23l), xb);  /* rows 0-3 16-19 */
                s1 = dot4_columns(s1, _mm256_unpackhi_epi16(p01l, p23l), xb);  /* 4-7 20-23 */
                s2 = dot4_columns(s2, _mm256_unpacklo_epi16(p01h, p23h), xb);  /* 8-11 24-27 */
                s3 = dot4_columns(s3, _mm256_unpackhi_epi16(p01h, p23h), xb);  /* 12-15 28-31 */
            }
            __m256i isum[4] = {
                _mm256_permute2x128_si256(s0, s1, 0x20), _mm256_permute2x128_si256(s2, s3, 0x20),
                _mm256_permute2x128_si256(s0, s1, 0x31), _mm256_permute2x128_si256(s2, s3, 0x31)};
            /* acc[r] += (float)isum[r] * ws[r] * xs[g], as the generic kernel */
            __m256 xsg = _mm256_set1_ps(xs[g]);
            for (int j = 0; j < 4; j++) {
                __m256 f = _mm256_mul_ps(_mm256_cvtepi32_ps(isum[j]), _mm256_loadu_ps(ws + 8 * j));
                acc[j] = _mm256_add_ps(acc[j], _mm256_mul_ps(f, xsg));
            }
            ws += BR;
        }
        if (rows - r0 >= BR) {
            for (int j = 0; j < 4; j++) _mm256_storeu_ps(out + r0 + 8 * j, acc[j]);
        } else {
            float tmp[BR];
            for (int j = 0; j < 4; j++) _mm256_storeu_ps(tmp + 8 * j, acc[j]);
            memcpy(out + r0, tmp, (size_t)(rows - r0) * sizeof(float));
        }
    }
}

/* 8 int32 -> their low bytes (what the generic's (int8_t)lrintf keeps), stored at q */
AVX2 static inline void store_low_bytes(int8_t *q, __m256i v, int n) {
    const __m256i pick = _mm256_setr_epi8(0, 4, 8, 12, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
                                          -1, -1, 0, 4, 8, 12, -1, -1, -1, -1, -1, -1, -1, -1,
                                          -1, -1, -1, -1);
    v = _mm256_shuffle_epi8(v, pick);
    __m128i b = _mm_unpacklo_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    if (n == 8) {
        _mm_storel_epi64((__m128i *)(void *)q, b);
    } else {
        int8_t tmp[16];
        _mm_storeu_si128((__m128i *)(void *)tmp, b);
        memcpy(q, tmp, (size_t)n);
    }
}

/* Per group: amax by vector max (exact in any order; like fmaxf it skips NaN, as vmaxps
 * returns its second operand when the first is NaN), scale and 1 / scale as the generic
 * kernel, then vcvtps2dq rounds to nearest even as lrintf does in the default mode. */
AVX2 static void quantize_q8(int8_t *xq, float *xs, const float *x, int n, int gs) {
    const __m256 abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
    int groups = (n + gs - 1) / gs;
    for (int g = 0; g < groups; g++) {
        int start = g * gs, len = n - start < gs ? n - start : gs;
        const float *xg = x + start;
        __m256 vmax = _mm256_setzero_ps();
        for (int i = 0; i < len; i += 8) {
            __m256 v = _mm256_maskload_ps(xg + i, lanes_below(len - i));
            vmax = _mm256_max_ps(_mm256_and_ps(v, abs_mask), vmax);
        }
        float m[8], amax = 0.0f;
        _mm256_storeu_ps(m, vmax);
        for (int l = 0; l < 8; l++) amax = m[l] > amax ? m[l] : amax;
        float scale = amax / 127.0f;
        float inv = scale > 0.0f ? 1.0f / scale : 0.0f;
        __m256 vinv = _mm256_set1_ps(inv);
        for (int i = 0; i < len; i += 8) {
            __m256 v = _mm256_maskload_ps(xg + i, lanes_below(len - i));
            int k = len - i < 8 ? len - i : 8;
            store_low_bytes(xq + start + i, _mm256_cvtps_epi32(_mm256_mul_ps(v, vinv)), k);
        }
        memset(xq + start + len, 0, (size_t)(gs - len));
        xs[g] = scale;
    }
}

/* ---------------------------------------------------------------- dot products */

/* out lane j = ((0 + a[j][0]) + a[j][1]) + ... + a[j][7]: the generic's in-order sum of the
 * 8 lane sums of dot product j, for 8 dot products at once (transpose, then add rows). */
AVX2 static inline __m256 sum_lanes8(const __m256 a[8]) {
    __m256 t0 = _mm256_unpacklo_ps(a[0], a[1]), t1 = _mm256_unpackhi_ps(a[0], a[1]);
    __m256 t2 = _mm256_unpacklo_ps(a[2], a[3]), t3 = _mm256_unpackhi_ps(a[2], a[3]);
    __m256 t4 = _mm256_unpacklo_ps(a[4], a[5]), t5 = _mm256_unpackhi_ps(a[4], a[5]);
    __m256 t6 = _mm256_unpacklo_ps(a[6], a[7]), t7 = _mm256_unpackhi_ps(a[6], a[7]);
    __m256 u0 = _mm256_shuffle_ps(t0, t2, 0x44), u1 = _mm256_shuffle_ps(t0, t2, 0xee);
    __m256 u2 = _mm256_shuffle_ps(t1, t3, 0x44), u3 = _mm256_shuffle_ps(t1, t3, 0xee);
    __m256 u4 = _mm256_shuffle_ps(t4, t6, 0x44), u5 = _mm256_shuffle_ps(t4, t6, 0xee);
    __m256 u6 = _mm256_shuffle_ps(t5, t7, 0x44), u7 = _mm256_shuffle_ps(t5, t7, 0xee);
    /* u0 holds lane 0 of a[0..3] | lane 4 of a[0..3]; u4 the same of a[4..7]; ... */
    __m256 lane[8] = {
        _mm256_permute2f128_ps(u0, u4, 0x20), _mm256_permute2f128_ps(u1, u5, 0x20),
        _mm256_permute2f128_ps(u2, u6, 0x20), _mm256_permute2f128_ps(u3, u7, 0x20),
        _mm256_permute2f128_ps(u0, u4, 0x31), _mm256_permute2f128_ps(u1, u5, 0x31),
        _mm256_permute2f128_ps(u2, u6, 0x31), _mm256_permute2f128_ps(u3, u7, 0x31)};
    __m256 s = _mm256_setzero_ps();
    for (int l = 0; l < 8; l++) s = _mm256_add_ps(s, lane[l]);
    return s;
}

/* 8 f16 values (n < 8: the first n, zeros after) as floats; F16C converts exactly */
AVX2 static inline __m256 load_f16(const uint16_t *p, int n) {
    if (n >= 8) return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(const void *)p));
    uint16_t tmp[8] = {0};
    memcpy(tmp, p, (size_t)n * sizeof *p);
    return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(const void *)tmp));
}

/* The partial tail adds products of zeros to the lanes past it, which changes nothing: a
 * lane sum can only go from -0 to +0, and the in-order total starts from +0 anyway. */
AVX2 static inline void dots8_f32(float *out, const float *row[8], const float *x,
                                  int n, int nr) {
    __m256 acc[8];
    for (int j = 0; j < 8; j++) acc[j] = _mm256_setzero_ps();
    int i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 xv = _mm256_loadu_ps(x + i);
        for (int j = 0; j < 8; j++)
            acc[j] = _mm256_add_ps(acc[j], _mm256_mul_ps(_mm256_loadu_ps(row[j] + i), xv));
    }
    if (i < n) {
        __m256i m = lanes_below(n - i);
        __m256 xv = _mm256_maskload_ps(x + i, m);
        for (int j = 0; j < 8; j++)
            acc[j] = _mm256_add_ps(acc[j], _mm256_mul_ps(_mm256_maskload_ps(row[j] + i, m), xv));
    }
    __m256 s = sum_lanes8(acc);
    if (nr == 8) {
        _mm256_storeu_ps(out, s);
    } else {
        _mm256_maskstore_ps(out, lanes_below(nr), s);
    }
}

AVX2 static inline void dots8_f16(float *out, const uint16_t *row[8], const float *x,
                                  int n, int nr) {
    __m256 acc[8];
    for (int j = 0; j < 8; j++) acc[j] = _mm256_setzero_ps();
    int i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 xv = _mm256_loadu_ps(x + i);
        for (int j = 0; j < 8; j++)
            acc[j] = _mm256_add_ps(acc[j], _mm256_mul_ps(load_f16(row[j] + i, 8), xv));
    }
    if (i < n) {
        __m256 xv = _mm256_maskload_ps(x + i, lanes_below(n - i));
        for (int j = 0; j < 8; j++)
            acc[j] = _mm256_add_ps(acc[j], _mm256_mul_ps(load_f16(row[j] + i, n - i), xv));
    }
    __m256 s = sum_lanes8(acc);
    if (nr == 8) {
        _mm256_storeu_ps(out, s);
    } else {
        _mm256_maskstore_ps(out, lanes_below(nr), s);
    }
}

/* rows r0.. of a row-major matrix (at most 8; missing ones repeat the first) */
#define ROWS8(T, base, r0, nr, step)                                                      \
    const T *row[8];                                                                       \
    for (int j = 0; j < 8; j++) row[j] = (base) + (size_t)((r0) + (j < (nr) ? j : 0)) * (step)

AVX2 static void matvec_f32(float *out, const float *w, const float *x, int rows, int cols) {
    for (int r = 0; r < rows; r += 8) {
        int nr = rows - r < 8 ? rows - r : 8;
        ROWS8(float, w, r, nr, (size_t)cols);
        dots8_f32(out + r, row, x, cols, nr);
    }
}

AVX2 static void matvec_f16(float *out, const uint16_t *w, const float *x, int rows, int cols) {
    for (int r = 0; r < rows; r += 8) {
        int nr = rows - r < 8 ? rows - r : 8;
        ROWS8(uint16_t, w, r, nr, (size_t)cols);
        dots8_f16(out + r, row, x, cols, nr);
    }
}

/* ---------------------------------------------------------------- attention */

AVX2 static void attn_scores_f32(float *att, const float *q, const float *k, int n_pos,
                                 size_t stride, int head_size) {
    __m256 root = _mm256_set1_ps(sqrtf((float)head_size));
    for (int t = 0; t < n_pos; t += 8) {
        int nr = n_pos - t < 8 ? n_pos - t : 8;
        ROWS8(float, k, t, nr, stride);
        float d[8];
        dots8_f32(d, row, q, head_size, 8);
        _mm256_maskstore_ps(att + t, lanes_below(nr), _mm256_div_ps(_mm256_loadu_ps(d), root));
    }
}

AVX2 static void attn_scores_f16(float *att, const float *q, const uint16_t *k, int n_pos,
                                 size_t stride, int head_size) {
    __m256 root = _mm256_set1_ps(sqrtf((float)head_size));
    for (int t = 0; t < n_pos; t += 8) {
        int nr = n_pos - t < 8 ? n_pos - t : 8;
        ROWS8(uint16_t, k, t, nr, stride);
        float d[8];
        dots8_f16(d, row, q, head_size, 8);
        _mm256_maskstore_ps(att + t, lanes_below(nr), _mm256_div_ps(_mm256_loadu_ps(d), root));
    }
}

/* out = sum_t att[t] * v_t, 32 floats of the head at a time kept in registers */
AVX2 static void attn_mix_f32(float *out, const float *att, const float *v, int n_pos,
                              size_t stride, int head_size) {
    for (int i = 0; i < head_size; i += 32) {
        int n = head_size - i;
        __m256i m[4];
        __m256 acc[4];
        for (int j = 0; j < 4; j++) {
            m[j] = lanes_below(n - 8 * j);
            acc[j] = _mm256_setzero_ps();
        }
        int nv = n >= 32 ? 4 : (n + 7) / 8;
        for (int t = 0; t < n_pos; t++) {
            const float *vt = v + (size_t)t * stride + i;
            __m256 a = _mm256_set1_ps(att[t]);
            for (int j = 0; j < nv; j++)
                acc[j] = _mm256_add_ps(acc[j], _mm256_mul_ps(a, _mm256_maskload_ps(vt + 8 * j, m[j])));
        }
        for (int j = 0; j < nv; j++) _mm256_maskstore_ps(out + i + 8 * j, m[j], acc[j]);
    }
}

AVX2 static void attn_mix_f16(float *out, const float *att, const uint16_t *v, int n_pos,
                              size_t stride, int head_size) {
    for (int i = 0; i < head_size; i += 32) {
        int n = head_size - i;
        __m256 acc[4];
        for (int j = 0; j < 4; j++) acc[j] = _mm256_setzero_ps();
        int nv = n >= 32 ? 4 : (n + 7) / 8;
        for (int t = 0; t < n_pos; t++) {
            const uint16_t *vt = v + (size_t)t * stride + i;
            __m256 a = _mm256_set1_ps(att[t]);
            for (int j = 0; j < nv; j++)
                acc[j] = _mm256_add_ps(acc[j], _mm256_mul_ps(a, load_f16(vt + 8 * j, n - 8 * j)));
        }
        for (int j = 0; j < nv; j++) _mm256_maskstore_ps(out + i + 8 * j, lanes_below(n - 8 * j), acc[j]);
    }
}

/* ---------------------------------------------------------------- f16 KV cache */

/* vcvtps2ph rounds to nearest even like l2_f32_to_f16 and overflows to infinity; only its
 * NaNs differ (it keeps payload bits), so every NaN becomes the generic's 0x7e00 | sign. */
AVX2 static inline __m128i f32_to_f16_8(__m256 v) {
    __m128i h = _mm256_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT);
    __m128i nan = _mm_cmpgt_epi16(_mm_and_si128(h, _mm_set1_epi16(0x7fff)), _mm_set1_epi16(0x7c00));
    __m128i quiet = _mm_or_si128(_mm_and_si128(h, _mm_set1_epi16((short)0x8000)), _mm_set1_epi16(0x7e00));
    return _mm_blendv_epi8(h, quiet, nan);
}

AVX2 static void to_f16(uint16_t *out, const float *x, int n) {
    int i = 0;
    for (; i + 8 <= n; i += 8)
        _mm_storeu_si128((__m128i *)(void *)(out + i), f32_to_f16_8(_mm256_loadu_ps(x + i)));
    if (i < n) {
        uint16_t tmp[8];
        _mm_storeu_si128((__m128i *)(void *)tmp,
                         f32_to_f16_8(_mm256_maskload_ps(x + i, lanes_below(n - i))));
        memcpy(out + i, tmp, (size_t)(n - i) * sizeof *out);
    }
}

/* ---------------------------------------------------------------- the set */

static int cpu_ok(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("f16c");
}

const l2_kernels l2_kernels_avx2 = {
    .name = "avx2",
    .cpu_ok = cpu_ok,
    .matvec_f32 = matvec_f32,
    .matvec_f16 = matvec_f16,
    .matvec_q8 = matvec_q8,
    .quantize_q8 = quantize_q8,
    .rmsnorm = l2_rmsnorm_generic,
    .softmax = l2_softmax_generic,
    .silu_mul = l2_silu_mul_generic,
    .rope = l2_rope_generic,
    .attn_scores_f32 = attn_scores_f32,
    .attn_scores_f16 = attn_scores_f16,
    .attn_mix_f32 = attn_mix_f32,
    .attn_mix_f16 = attn_mix_f16,
    .to_f16 = to_f16,
};

#endif
