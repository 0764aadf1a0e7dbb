/* x86-64 kernels: AVX2 and F16C ("avx2").
 *
 * Compiled in the normal host build without -m flags: each function carries a target
 * attribute, and the set's cpu_ok asks the CPU (and OS) at run time. Every kernel gives
 * results equal to the generic ones (kernels/generic.c), not merely close, which
 * tests/c/test_kernels.c holds it to:
 * - q8 group sums are exact int32 (for weights in -127..127, all the format holds), and the
 *   float epilogue does the generic operations in its order;
 * - quantize_q8 and quantize_q8_two_part use the same scale, reciprocal and
 *   round-to-nearest-even; to_f16 is F16C's conversion with the generic's NaN;
 * - dot products keep the generic's order (one running sum over the elements in order, a
 *   multiply then an add, never fused), 8 rows or positions a vector;
 * - the attention mix is element-wise, a multiply then an add.
 * FMA is deliberately not enabled (nor checked for): with it a compiler given
 * -ffp-contract=fast could fuse a multiply and an add and break the equality. RMSNorm's and
 * softmax's sums stay sequential, and exps stay libm's expf (both shared with generic). */
#if defined(__x86_64__)
#include <immintrin.h>
#include <math.h>
#include <string.h>

#include "kernels.h"

#define AVX2 __attribute__((target("avx2,f16c")))

/* Bytes ahead of the q8 loads to prefetch: when the weights come from DRAM (a model larger
 * than the free L3), 5-15% faster on AMD Zen 3; 1-2% slower when they are cached. */
enum { BR = L2_Q8_BLOCK_ROWS, Q8_PREFETCH = 512 };

/* lanes 0..n-1 set (n clamped to 0..8) */
AVX2 static inline __m256i lanes_below(int n) {
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

/* 8 floats (n < 8: the first n, zeros after, nothing read past them) */
AVX2 static inline __m256 load_f32(const float *p, int n) {
    return n >= 8 ? _mm256_loadu_ps(p) : _mm256_maskload_ps(p, lanes_below(n));
}

/* ---------------------------------------------------------------- q8 */

/* The q8 matrix-vector product, where a q8 token spends most of its time (the 32000 x 288
 * classifier alone is 60%). A block column (32 rows of one column) is one register. Four
 * columns are interleaved by two rounds of unpacks so that each 32-bit element holds one
 * row's weights of the four columns; vpmaddubsw multiplies the four activations' absolute
 * values (unsigned) by the weights carrying the activations' signs (vpsignb) and adds
 * pairs, vpmaddwd adds the two pairs into int32. Exact: |x| <= 127 (quantize_q8) and
 * |w| <= 127 (FORMAT.md: q = round(w / (max|w| / 127))) make a pair at most 32258, so
 * vpmaddubsw never saturates; a weight of -128, which no file written to the format holds,
 * would not be negated by vpsignb. (Signing the activations and taking |w| instead is exact
 * for -128 too, but costs one more instruction per register: 8-10% slower.)
 * The unpacks leave rows in the order 0-3 16-19 | 4-7 20-23 | 8-11 24-27 | 12-15 28-31,
 * put back by four lane permutes once per group. Two blocks go through each group together,
 * sharing the activations' broadcasts (4-8% faster than one).
 * A two-part input (xlo) adds a second product of the same interleaved weights with the low
 * parts (|xlo| <= 8: no saturation either) into the same sums, and vpmaddwd weights the
 * high part's pairs by 16 instead of 1: a sum is 16 * sum w xq + sum w xlo, the generic's
 * int32 exactly (it fits, L2_MAX_TWO_PART_GROUP; vpaddd wraps, so no partial sum can spoil
 * it). One set of sums, no combining at the group end; and one block at a time, because
 * with two the eight sums, four broadcasts and two constants outgrow the 16 registers and
 * the sums spill (one block: 5-7% faster on 32000 x 288, the same on 768 x 288).
 * q10 (kernels.h) goes through the same loops with 16-bit products instead: a column's
 * values v = 4h + l as 16-bit elements (vpunpck puts h in the high byte and the plane's
 * byte, shifted so that l(c) is in bits 6-7, in the low one: an arithmetic shift by 6 leaves
 * 4h + l and drops the other columns' bits), two columns interleaved into each 32-bit
 * element (the same row order as q8's), and vpmaddwd by 16 xq + xlo (|v| <= 511, |16 xq +
 * xlo| <= 2040: no 8-bit operand holds either). Each pair is exact in int32 and so, as
 * above, is the wrapping sum (L2_MAX_Q10_GROUP). Two blocks at a time: four of the eight
 * sums spill, yet 5% faster than one on 768 x 288 and 288 x 768. */
typedef struct {
    __m256i s[4];  /* int32 group sums, rows in the unpacked order above */
    __m256 acc[4];  /* float row sums, rows 0-7, 8-15, 16-23, 24-31 */
} q8_block;

/* four activations in every 32-bit element: |x| and x (whose signs go onto the weights) */
typedef struct {
    __m256i abs, sgn;
} q8_x4;

/* x[0..n) (n <= 4; missing ones are zero) */
AVX2 static inline q8_x4 q8_broadcast(const int8_t *x, int n) {
    int32_t x4 = 0;
    memcpy(&x4, x, (size_t)n);
    __m256i v = _mm256_set1_epi32(x4);
    return (q8_x4){_mm256_abs_epi8(v), v};
}

/* a two-part input's 16 x + lo of columns c, c+1 in every 32-bit element (f01), of c+2, c+3
 * (f23) */
typedef struct {
    __m256i f01, f23;
} q10_x4;

AVX2 static inline q10_x4 q10_broadcast(const int8_t *x, const int8_t *lo) {
    int32_t x4, lo4;
    memcpy(&x4, x, 4);
    memcpy(&lo4, lo, 4);
    __m128i f = _mm_add_epi16(_mm_slli_epi16(_mm_cvtepi8_epi16(_mm_cvtsi32_si128(x4)), 4),
                              _mm_cvtepi8_epi16(_mm_cvtsi32_si128(lo4)));
    return (q10_x4){_mm256_broadcastd_epi32(f), _mm256_broadcastd_epi32(_mm_srli_si128(f, 4))};
}

/* s + the products of four rows' interleaved weights w with x, or with 16 x + lo */
AVX2 static inline __attribute__((always_inline)) __m256i q8_dot4(__m256i s, __m256i w,
                                                                  q8_x4 x, const q8_x4 *lo) {
    __m256i p = _mm256_maddubs_epi16(x.abs, _mm256_sign_epi8(w, x.sgn));
    s = _mm256_add_epi32(s, _mm256_madd_epi16(p, _mm256_set1_epi16(lo ? 16 : 1)));
    if (lo) {
        __m256i plo = _mm256_maddubs_epi16(lo->abs, _mm256_sign_epi8(w, lo->sgn));
        s = _mm256_add_epi32(s, _mm256_madd_epi16(plo, _mm256_set1_epi16(1)));
    }
    return s;
}

/* columns c..c+n-1 (n <= 4; missing ones are zero) of a block, times x[0..n), or with lo
 * (a two-part input's low parts) times 16 x + lo */
AVX2 static inline __attribute__((always_inline)) void q8_columns(
        q8_block *b, const int8_t *w, int n, q8_x4 x, const q8_x4 *lo) {
    __m256i col[4];
    for (int j = 0; j < 4; j++)
        col[j] = j < n ? _mm256_loadu_si256((const __m256i *)(const void *)(w + j * BR))
                       : _mm256_setzero_si256();
    __m256i p01l = _mm256_unpacklo_epi8(col[0], col[1]);
    __m256i p01h = _mm256_unpackhi_epi8(col[0], col[1]);
    __m256i p23l = _mm256_unpacklo_epi8(col[2], col[3]);
    __m256i p23h = _mm256_unpackhi_epi8(col[2], col[3]);
    b->s[0] = q8_dot4(b->s[0], _mm256_unpacklo_epi16(p01l, p23l), x, lo);
    b->s[1] = q8_dot4(b->s[1], _mm256_unpackhi_epi16(p01l, p23l), x, lo);
    b->s[2] = q8_dot4(b->s[2], _mm256_unpacklo_epi16(p01h, p23h), x, lo);
    b->s[3] = q8_dot4(b->s[3], _mm256_unpackhi_epi16(p01h, p23h), x, lo);
}

/* columns c..c+3 of a q10 block (high parts w, the plane's 32 bytes l) times f */
AVX2 static inline __attribute__((always_inline)) void q10_columns(
        q8_block *b, const int8_t *w, const uint8_t *l, q10_x4 f) {
    __m256i p = _mm256_loadu_si256((const __m256i *)(const void *)l);
    __m256i v[4][2];  /* column j's 4h + l: rows 0-7 16-23 | 8-15 24-31 */
    for (int j = 0; j < 4; j++) {
        __m256i h = _mm256_loadu_si256((const __m256i *)(const void *)(w + j * BR));
        __m256i lj = j == 3 ? p : _mm256_slli_epi16(p, 6 - 2 * j);  /* l(c+j) in bits 6-7 */
        v[j][0] = _mm256_srai_epi16(_mm256_unpacklo_epi8(lj, h), 6);
        v[j][1] = _mm256_srai_epi16(_mm256_unpackhi_epi8(lj, h), 6);
    }
    for (int k = 0; k < 2; k++) {
        __m256i lo = _mm256_add_epi32(
            _mm256_madd_epi16(_mm256_unpacklo_epi16(v[0][k], v[1][k]), f.f01),
            _mm256_madd_epi16(_mm256_unpacklo_epi16(v[2][k], v[3][k]), f.f23));
        __m256i hi = _mm256_add_epi32(
            _mm256_madd_epi16(_mm256_unpackhi_epi16(v[0][k], v[1][k]), f.f01),
            _mm256_madd_epi16(_mm256_unpackhi_epi16(v[2][k], v[3][k]), f.f23));
        b->s[2 * k] = _mm256_add_epi32(b->s[2 * k], lo);
        b->s[2 * k + 1] = _mm256_add_epi32(b->s[2 * k + 1], hi);
    }
}

/* acc[r] += (float)isum[r] * ws[r] * xs, as the generic kernel; clears the group sums */
AVX2 static inline void q8_group_end(q8_block *b, const float *ws, float xs) {
    __m256i isum[4] = {_mm256_permute2x128_si256(b->s[0], b->s[1], 0x20),
                       _mm256_permute2x128_si256(b->s[2], b->s[3], 0x20),
                       _mm256_permute2x128_si256(b->s[0], b->s[1], 0x31),
                       _mm256_permute2x128_si256(b->s[2], b->s[3], 0x31)};
    __m256 xsg = _mm256_set1_ps(xs);
    for (int j = 0; j < 4; j++) {
        __m256 f = _mm256_mul_ps(_mm256_cvtepi32_ps(isum[j]), _mm256_loadu_ps(ws + 8 * j));
        b->acc[j] = _mm256_add_ps(b->acc[j], _mm256_mul_ps(f, xsg));
        b->s[j] = _mm256_setzero_si256();
    }
}

AVX2 static inline void q8_store(float *out, int n, const q8_block *b) {
    if (n >= BR) {
        for (int j = 0; j < 4; j++) _mm256_storeu_ps(out + 8 * j, b->acc[j]);
    } else {
        float tmp[BR];
        for (int j = 0; j < 4; j++) _mm256_storeu_ps(tmp + 8 * j, b->acc[j]);
        memcpy(out, tmp, (size_t)n * sizeof(float));
    }
}

/* nb consecutive blocks from row r0 (nb = 1 or 2, `tail` = gs % 4 != 0, `two_part`, with
 * the low parts xlo, and `q10` (two-part too), with the plane wl, are constants after
 * inlining: the common case compiles to a loop with no remainder handling, and matvec_q8 to
 * one with no low parts) */
AVX2 static inline __attribute__((always_inline)) void q8_blocks(
        float *out, const int8_t *wq, const uint8_t *wl, int q10, const float *ws,
        const int8_t *xq, const int8_t *xlo, int two_part, const float *xs, int rows,
        int groups, int gs, int r0, int nb, int tail) {
    size_t wstride = (size_t)groups * (size_t)gs * BR, sstride = (size_t)groups * BR;
    size_t lstride = wstride / 4;  /* q10's plane */
    q8_block b[2];
    for (int k = 0; k < nb; k++)
        for (int j = 0; j < 4; j++) {
            b[k].s[j] = _mm256_setzero_si256();
            b[k].acc[j] = _mm256_setzero_ps();
        }
    int gs4 = tail ? gs & ~3 : gs;
    for (int g = 0; g < groups; g++) {
        size_t x0 = (size_t)g * (size_t)gs;
        const int8_t *xg = xq + x0, *xlo_g = two_part ? xlo + x0 : NULL;
        for (int c = 0; c < gs4; c += 4, wq += 4 * BR) {
            q8_x4 x = q8_broadcast(xg + c, 4), lo = two_part ? q8_broadcast(xlo_g + c, 4) : x;
            /* q10 uses f only, the others x and lo */
            q10_x4 f = q10 ? q10_broadcast(xg + c, xlo_g + c) : (q10_x4){x.abs, x.abs};
            for (int k = 0; k < nb; k++) {
                const int8_t *w = wq + k * wstride;
                _mm_prefetch((const char *)(w + Q8_PREFETCH), _MM_HINT_T0);
                _mm_prefetch((const char *)(w + Q8_PREFETCH + 64), _MM_HINT_T0);
                if (q10) {
                    const uint8_t *l = wl + k * lstride;
                    /* the plane as far ahead: 10-15% faster from DRAM, the same cached */
                    _mm_prefetch((const char *)(l + Q8_PREFETCH / 4), _MM_HINT_T0);
                    q10_columns(&b[k], w, l, f);
                } else {
                    q8_columns(&b[k], w, 4, x, two_part ? &lo : NULL);
                }
            }
            if (q10) wl += BR;
        }
        if (tail && gs4 < gs) {  /* the group's last 1..3 columns */
            int n = gs - gs4;
            q8_x4 x = q8_broadcast(xg + gs4, n);
            q8_x4 lo = two_part ? q8_broadcast(xlo_g + gs4, n) : x;
            for (int k = 0; k < nb; k++)
                q8_columns(&b[k], wq + k * wstride, n, x, two_part ? &lo : NULL);
            wq += (size_t)n * BR;
        }
        for (int k = 0; k < nb; k++) q8_group_end(&b[k], ws + k * sstride, xs[g]);
        ws += BR;
    }
    for (int k = 0; k < nb; k++) q8_store(out + r0 + k * BR, rows - r0 - k * BR, &b[k]);
}

/* matvec_q8, matvec_q8_two_part (two_part) or matvec_q10 (q10 and two_part; the flags are
 * constants after inlining) */
AVX2 static inline __attribute__((always_inline)) void q8_product(
        float *out, const int8_t *wq, const uint8_t *wl, int q10, const float *ws,
        const int8_t *xq, const int8_t *xlo, int two_part, const float *xs, int rows, int cols,
        int gs) {
    int groups = (cols + gs - 1) / gs;
    size_t wstride = (size_t)groups * (size_t)gs * BR, sstride = (size_t)groups * BR;
    if (gs % 4) {  /* rare group sizes: one block at a time (q10 has none: kernels.h) */
        if (q10) {
            l2_matvec_q10_generic(out, wq, wl, ws, xq, xlo, xs, rows, cols, gs);
            return;
        }
        for (int r0 = 0; r0 < rows; r0 += BR, wq += wstride, ws += sstride)
            q8_blocks(out, wq, wl, 0, ws, xq, xlo, two_part, xs, rows, groups, gs, r0, 1, 1);
        return;
    }
    int r0 = 0;
    if (two_part && !q10) {  /* one block at a time (registers: see above) */
        for (; r0 < rows; r0 += BR, wq += wstride, ws += sstride)
            q8_blocks(out, wq, wl, 0, ws, xq, xlo, two_part, xs, rows, groups, gs, r0, 1, 0);
        return;
    }
    for (; r0 + BR < rows; r0 += 2 * BR, wq += 2 * wstride, ws += 2 * sstride) {
        q8_blocks(out, wq, wl, q10, ws, xq, xlo, two_part, xs, rows, groups, gs, r0, 2, 0);
        if (q10) wl += wstride / 2;
    }
    if (r0 < rows)
        q8_blocks(out, wq, wl, q10, ws, xq, xlo, two_part, xs, rows, groups, gs, r0, 1, 0);
}

AVX2 static void matvec_q8(float *out, const int8_t *wq, const float *ws, const int8_t *xq,
                           const float *xs, int rows, int cols, int gs) {
    q8_product(out, wq, NULL, 0, ws, xq, NULL, 0, xs, rows, cols, gs);
}

AVX2 static void matvec_q8_two_part(float *out, const int8_t *wq, const float *ws,
                                    const int8_t *xq, const int8_t *xlo, const float *xs,
                                    int rows, int cols, int gs) {
    q8_product(out, wq, NULL, 0, ws, xq, xlo, 1, xs, rows, cols, gs);
}

AVX2 static void matvec_q10(float *out, const int8_t *wq, const uint8_t *wl, const float *ws,
                            const int8_t *xq, const int8_t *xlo, const float *xs, int rows,
                            int cols, int gs) {
    q8_product(out, wq, wl, 1, ws, xq, xlo, 1, xs, rows, cols, gs);
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

/* Per group, as the generic kernel: amax by vector max (exact in any order), scale and
 * 1 / scale, vcvtps2dq rounding to nearest even as lrintf does in the default mode; a
 * group holding NaN or infinity becomes zeros with a NaN scale. With xlo (a two-part
 * input; NULL in quantize_q8, which inlining leaves as it was) also the low parts
 * rne(16 * (t - q)), t - q exact as in the generic, and the scale / 16. */
AVX2 static inline __attribute__((always_inline)) void q8_quantize(
        int8_t *xq, int8_t *xlo, float *xs, const float *x, int n, int gs) {
    const __m256i abs_mask = _mm256_set1_epi32(0x7fffffff);
    const __m256i max_finite = _mm256_set1_epi32(0x7f7fffff);
    const __m256 sixteen = _mm256_set1_ps(16.0f);
    int groups = (n + gs - 1) / gs;
    for (int g = 0; g < groups; g++) {
        int start = g * gs, len = n - start < gs ? n - start : gs;
        const float *xg = x + start;
        __m256i vmax = _mm256_setzero_si256();  /* |x| as integers: ordered like the floats */
        for (int i = 0; i < len; i += 8) {
            __m256i a = _mm256_and_si256(_mm256_castps_si256(load_f32(xg + i, len - i)), abs_mask);
            vmax = _mm256_max_epi32(vmax, a);
        }
        int32_t m[8], amax_bits = 0;
        _mm256_storeu_si256((__m256i *)(void *)m, vmax);
        for (int l = 0; l < 8; l++) amax_bits = m[l] > amax_bits ? m[l] : amax_bits;
        int8_t *q = xq + start, *lo = xlo ? xlo + start : NULL;
        if (_mm256_movemask_epi8(_mm256_cmpgt_epi32(vmax, max_finite))) {  /* NaN or inf */
            memset(q, 0, (size_t)gs);
            if (lo) memset(lo, 0, (size_t)gs);
            xs[g] = NAN;  /* the generic's NaN / 16 is the same NaN */
            continue;
        }
        float amax;
        memcpy(&amax, &amax_bits, sizeof amax);
        float scale = amax / 127.0f;
        float inv = scale > 0.0f ? 1.0f / scale : 0.0f;
        __m256 vinv = _mm256_set1_ps(inv);
        for (int i = 0; i < len; i += 8) {
            __m256 v = load_f32(xg + i, len - i);
            int k = len - i < 8 ? len - i : 8;
            __m256 t = _mm256_mul_ps(v, vinv);
            __m256i qi = _mm256_cvtps_epi32(t);
            store_low_bytes(q + i, qi, k);
            if (lo) {
                __m256 fine = _mm256_mul_ps(_mm256_sub_ps(t, _mm256_cvtepi32_ps(qi)), sixteen);
                store_low_bytes(lo + i, _mm256_cvtps_epi32(fine), k);
            }
        }
        memset(q + len, 0, (size_t)(gs - len));
        if (lo) memset(lo + len, 0, (size_t)(gs - len));
        xs[g] = lo ? scale * 0.0625f : scale;
    }
}

AVX2 static void quantize_q8(int8_t *xq, float *xs, const float *x, int n, int gs) {
    q8_quantize(xq, NULL, xs, x, n, gs);
}

AVX2 static void quantize_q8_two_part(int8_t *xq, int8_t *xlo, float *xs, const float *x,
                                      int n, int gs) {
    q8_quantize(xq, xlo, xs, x, n, gs);
}

/* ---------------------------------------------------------------- dot products */

/* 8 f16 values (n < 8: the first n, zeros after) as floats; F16C converts exactly */
AVX2 static inline __m256 load_f16(const uint16_t *p, int n) {
    if (n >= 8) return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(const void *)p));
    uint16_t tmp[8] = {0};
    memcpy(tmp, p, (size_t)n * sizeof *p);
    return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(const void *)tmp));
}

/* v[j] = row j of an 8 x 8 block -> v[i] = column i (row j's value in lane j) */
AVX2 static inline void transpose8(__m256 v[8]) {
    __m256 t0 = _mm256_unpacklo_ps(v[0], v[1]), t1 = _mm256_unpackhi_ps(v[0], v[1]);
    __m256 t2 = _mm256_unpacklo_ps(v[2], v[3]), t3 = _mm256_unpackhi_ps(v[2], v[3]);
    __m256 t4 = _mm256_unpacklo_ps(v[4], v[5]), t5 = _mm256_unpackhi_ps(v[4], v[5]);
    __m256 t6 = _mm256_unpacklo_ps(v[6], v[7]), t7 = _mm256_unpackhi_ps(v[6], v[7]);
    __m256 u0 = _mm256_shuffle_ps(t0, t2, 0x44), u1 = _mm256_shuffle_ps(t0, t2, 0xee);
    __m256 u2 = _mm256_shuffle_ps(t1, t3, 0x44), u3 = _mm256_shuffle_ps(t1, t3, 0xee);
    __m256 u4 = _mm256_shuffle_ps(t4, t6, 0x44), u5 = _mm256_shuffle_ps(t4, t6, 0xee);
    __m256 u6 = _mm256_shuffle_ps(t5, t7, 0x44), u7 = _mm256_shuffle_ps(t5, t7, 0xee);
    /* u0 holds column 0 of rows 0-3 | column 4 of rows 0-3; u4 the same of rows 4-7; ... */
    v[0] = _mm256_permute2f128_ps(u0, u4, 0x20), v[1] = _mm256_permute2f128_ps(u1, u5, 0x20);
    v[2] = _mm256_permute2f128_ps(u2, u6, 0x20), v[3] = _mm256_permute2f128_ps(u3, u7, 0x20);
    v[4] = _mm256_permute2f128_ps(u0, u4, 0x31), v[5] = _mm256_permute2f128_ps(u1, u5, 0x31);
    v[6] = _mm256_permute2f128_ps(u2, u6, 0x31), v[7] = _mm256_permute2f128_ps(u3, u7, 0x31);
}

/* Dot products in the generic (llama2.c) order: each is one running sum over i in order,
 * of the products row[i] * x[i] (a multiply then an add). A lane holds one row's sum: an
 * 8 x 8 block of products (8 rows, 8 columns) is transposed into columns, added to the
 * sums one column after the other. */
AVX2 static inline __attribute__((always_inline)) __m256 dot_block(
        __m256 acc, const void *base, int f16, const size_t *off, int i, int m, __m256 xv) {
    __m256 p[8];
    for (int j = 0; j < 8; j++) {
        __m256 w = f16 ? load_f16((const uint16_t *)base + off[j] + i, m)
                       : load_f32((const float *)base + off[j] + i, m);
        p[j] = _mm256_mul_ps(w, xv);
    }
    transpose8(p);
    if (m == 8) {
        for (int c = 0; c < 8; c++) acc = _mm256_add_ps(acc, p[c]);
    } else {
        for (int c = 0; c < m; c++) acc = _mm256_add_ps(acc, p[c]);
    }
    return acc;
}

/* out[j] = sum_i row_j[i] * x[i] for j < 8 * g, row_j at base + (r0 + j) * stride elements
 * (f16 or f32). The adds of one sum depend on each other, so g = 2 groups of 8 rows go
 * together to overlap their latencies: 1.6x faster than one group; four are no faster.
 * (f16, g and the main loop's m = 8 are constants after inlining.) With g = 1, only rows
 * j < nr are read. */
AVX2 static inline __attribute__((always_inline)) void dots(
        float *out, const void *base, int f16, size_t stride, const float *x, int n, int r0,
        int g, int nr) {
    size_t off[16];  /* each row's first element; missing rows repeat row r0 */
    for (int j = 0; j < 8 * g; j++) off[j] = (size_t)(r0 + (j < nr ? j : 0)) * stride;
    __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
    int i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 xv = _mm256_loadu_ps(x + i);
        acc0 = dot_block(acc0, base, f16, off, i, 8, xv);
        if (g == 2) acc1 = dot_block(acc1, base, f16, off + 8, i, 8, xv);
    }
    if (i < n) {
        __m256 xv = load_f32(x + i, n - i);
        acc0 = dot_block(acc0, base, f16, off, i, n - i, xv);
        if (g == 2) acc1 = dot_block(acc1, base, f16, off + 8, i, n - i, xv);
    }
    if (g == 2) {
        _mm256_storeu_ps(out, acc0);
        _mm256_storeu_ps(out + 8, acc1);
    } else if (nr == 8) {
        _mm256_storeu_ps(out, acc0);
    } else {
        _mm256_maskstore_ps(out, lanes_below(nr), acc0);
    }
}

/* out[0..rows): 16 rows at a time, then 8 or fewer */
AVX2 static inline __attribute__((always_inline)) void dots_rows(
        float *out, const void *base, int f16, size_t stride, const float *x, int n, int rows) {
    int r = 0;
    for (; r + 16 <= rows; r += 16) dots(out + r, base, f16, stride, x, n, r, 2, 16);
    for (; r < rows; r += 8)
        dots(out + r, base, f16, stride, x, n, r, 1, rows - r < 8 ? rows - r : 8);
}

AVX2 static void matvec_f32(float *out, const float *w, const float *x, int rows, int cols) {
    dots_rows(out, w, 0, (size_t)cols, x, cols, rows);
}

AVX2 static void matvec_f16(float *out, const uint16_t *w, const float *x, int rows, int cols) {
    dots_rows(out, w, 1, (size_t)cols, x, cols, rows);
}

/* ---------------------------------------------------------------- attention */

/* scores of every position, each divided by sqrt(head_size) as generic does */
AVX2 static void attn_scores_f32(float *att, const float *q, const float *k, int n_pos,
                                 size_t stride, int head_size) {
    float root = sqrtf((float)head_size);
    dots_rows(att, k, 0, stride, q, head_size, n_pos);
    for (int t = 0; t < n_pos; t++) att[t] /= root;
}

AVX2 static void attn_scores_f16(float *att, const float *q, const uint16_t *k, int n_pos,
                                 size_t stride, int head_size) {
    float root = sqrtf((float)head_size);
    dots_rows(att, k, 1, stride, q, head_size, n_pos);
    for (int t = 0; t < n_pos; t++) att[t] /= root;
}

/* out[0..8 * nv + tail) = sum_t att[t] * v_t: nv full vectors (0..8, a constant after
 * inlining, so the sums stay in registers) and a partial one of `tail` floats. The sums
 * over t are sequential per element, so the independent vectors hide the add latency. */
AVX2 static inline __attribute__((always_inline)) void mix_chunk(
        float *out, const float *att, const void *v, int f16, int n_pos, size_t stride, int nv,
        int tail) {
    __m256 acc[9];
    for (int j = 0; j <= nv; j++) acc[j] = _mm256_setzero_ps();
    __m256i m = lanes_below(tail);
    for (int t = 0; t < n_pos; t++) {
        __m256 a = _mm256_set1_ps(att[t]);
        if (f16) {
            const uint16_t *vt = (const uint16_t *)v + (size_t)t * stride;
            for (int j = 0; j < nv; j++)
                acc[j] = _mm256_add_ps(acc[j], _mm256_mul_ps(a, load_f16(vt + 8 * j, 8)));
            if (tail)
                acc[nv] = _mm256_add_ps(acc[nv], _mm256_mul_ps(a, load_f16(vt + 8 * nv, tail)));
        } else {
            const float *vt = (const float *)v + (size_t)t * stride;
            for (int j = 0; j < nv; j++)
                acc[j] = _mm256_add_ps(acc[j], _mm256_mul_ps(a, _mm256_loadu_ps(vt + 8 * j)));
            if (tail)
                acc[nv] = _mm256_add_ps(acc[nv], _mm256_mul_ps(a, load_f32(vt + 8 * nv, tail)));
        }
    }
    for (int j = 0; j < nv; j++) _mm256_storeu_ps(out + 8 * j, acc[j]);
    if (tail) _mm256_maskstore_ps(out + 8 * nv, m, acc[nv]);
}

/* the head in chunks of 64 floats: a multiply then an add per element, as generic */
AVX2 static inline __attribute__((always_inline)) void mix(
        float *out, const float *att, const void *v, int f16, int n_pos, size_t stride, int hs) {
    for (int i = 0; i < hs; i += 64) {
        int n = hs - i < 64 ? hs - i : 64, tail = n % 8;
        const void *vi = f16 ? (const void *)((const uint16_t *)v + i)
                             : (const void *)((const float *)v + i);
        switch (n / 8) {
        case 8: mix_chunk(out + i, att, vi, f16, n_pos, stride, 8, tail); break;
        case 7: mix_chunk(out + i, att, vi, f16, n_pos, stride, 7, tail); break;
        case 6: mix_chunk(out + i, att, vi, f16, n_pos, stride, 6, tail); break;
        case 5: mix_chunk(out + i, att, vi, f16, n_pos, stride, 5, tail); break;
        case 4: mix_chunk(out + i, att, vi, f16, n_pos, stride, 4, tail); break;
        case 3: mix_chunk(out + i, att, vi, f16, n_pos, stride, 3, tail); break;
        case 2: mix_chunk(out + i, att, vi, f16, n_pos, stride, 2, tail); break;
        case 1: mix_chunk(out + i, att, vi, f16, n_pos, stride, 1, tail); break;
        default: mix_chunk(out + i, att, vi, f16, n_pos, stride, 0, tail); break;
        }
    }
}

AVX2 static void attn_mix_f32(float *out, const float *att, const float *v, int n_pos,
                              size_t stride, int head_size) {
    mix(out, att, v, 0, n_pos, stride, head_size);
}

AVX2 static void attn_mix_f16(float *out, const float *att, const uint16_t *v, int n_pos,
                              size_t stride, int head_size) {
    mix(out, att, v, 1, n_pos, stride, head_size);
}

/* ---------------------------------------------------------------- f16 KV cache */

/* vcvtps2ph rounds to nearest even like l2_f32_to_f16 and overflows to infinity; only its
 * NaNs differ (it keeps sign and payload bits), so every NaN becomes the generic's 0x7e00. */
AVX2 static inline __m128i f32_to_f16_8(__m256 v) {
    __m128i h = _mm256_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT);
    __m128i nan = _mm_cmpgt_epi16(_mm_and_si128(h, _mm_set1_epi16(0x7fff)), _mm_set1_epi16(0x7c00));
    return _mm_blendv_epi8(h, _mm_set1_epi16(0x7e00), nan);
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

/* ---------------------------------------------------------------- element-wise */

/* out = w * (ss * x), as the generic: the sum of squares in order, then the scaling */
AVX2 static void rmsnorm(float *out, const float *x, const float *w, int n) {
    float ss = l2_rms_scale(x, n);
    __m256 s = _mm256_set1_ps(ss);
    int i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(out + i, _mm256_mul_ps(_mm256_loadu_ps(w + i),
                                                _mm256_mul_ps(s, _mm256_loadu_ps(x + i))));
    for (; i < n; i++) out[i] = w[i] * (ss * x[i]);
}

/* As the generic: the maximum and the divisions by vector, the exps and their sum in order
 * (l2_exp_sum). Any maximum of the values gives the same x - max; a NaN anywhere makes
 * every result NaN in both, whatever vmaxps makes of it. */
AVX2 static void softmax(float *x, int n) {
    __m256 m = _mm256_set1_ps(x[0]);
    int i = 0;
    for (; i + 8 <= n; i += 8) m = _mm256_max_ps(m, _mm256_loadu_ps(x + i));
    float lanes[8], max = x[0];
    _mm256_storeu_ps(lanes, m);
    for (int l = 0; l < 8; l++) max = lanes[l] > max ? lanes[l] : max;
    for (; i < n; i++) max = x[i] > max ? x[i] : max;
    float sum = l2_exp_sum(x, n, max);
    __m256 s = _mm256_set1_ps(sum);
    for (i = 0; i + 8 <= n; i += 8) _mm256_storeu_ps(x + i, _mm256_div_ps(_mm256_loadu_ps(x + i), s));
    for (; i < n; i++) x[i] /= sum;
}

/* h = h * (1 / (1 + exp(-h))) * g, as the generic: the exps by libm (l2_exp_neg), the rest
 * eight at a time with the same operations. */
AVX2 static void silu_mul(float *h, const float *g, int n) {
    const __m256 one = _mm256_set1_ps(1.0f);
    float e[8];
    int i = 0;
    for (; i + 8 <= n; i += 8) {
        l2_exp_neg(e, h + i, 8);
        __m256 r = _mm256_div_ps(one, _mm256_add_ps(one, _mm256_loadu_ps(e)));
        __m256 v = _mm256_mul_ps(_mm256_loadu_ps(h + i), r);
        _mm256_storeu_ps(h + i, _mm256_mul_ps(v, _mm256_loadu_ps(g + i)));
    }
    l2_silu_mul_generic(h + i, g + i, n - i);
}

/* Four pairs a step: [v0 v1] * [c c] then addsub with [v1 v0] * [s s] gives the generic's
 * v0*c - v1*s and v1*c + v0*s (the same products and sums). */
AVX2 static void rope(float *v, int n, int head_size, const float *cos_t, const float *sin_t) {
    const __m256i dup = _mm256_setr_epi32(0, 0, 1, 1, 2, 2, 3, 3);
    int half = head_size / 2;
    for (int h = 0; h < n; h += head_size) {
        int p = 0;
        for (; p + 4 <= half; p += 4) {
            float *at = v + h + 2 * p;
            __m256 a = _mm256_loadu_ps(at);
            __m256 c = _mm256_permutevar8x32_ps(_mm256_castps128_ps256(_mm_loadu_ps(cos_t + p)), dup);
            __m256 s = _mm256_permutevar8x32_ps(_mm256_castps128_ps256(_mm_loadu_ps(sin_t + p)), dup);
            __m256 swapped = _mm256_permute_ps(a, 0xb1);
            _mm256_storeu_ps(at, _mm256_addsub_ps(_mm256_mul_ps(a, c), _mm256_mul_ps(swapped, s)));
        }
        for (; p < half; p++) {
            float *at = v + h + 2 * p, v0 = at[0], v1 = at[1];
            at[0] = v0 * cos_t[p] - v1 * sin_t[p];
            at[1] = v0 * sin_t[p] + v1 * cos_t[p];
        }
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
    .quantize_q8_two_part = quantize_q8_two_part,
    .matvec_q8_two_part = matvec_q8_two_part,
    .matvec_q10 = matvec_q10,
    .rmsnorm = rmsnorm,
    .softmax = softmax,
    .argmax = l2_argmax_generic,
    .all_finite = l2_all_finite_generic,  /* the compiler vectorises it */
    .silu_mul = silu_mul,
    .rope = rope,
    .attn_scores_f32 = attn_scores_f32,
    .attn_scores_f16 = attn_scores_f16,
    .attn_mix_f32 = attn_mix_f32,
    .attn_mix_f16 = attn_mix_f16,
    .to_f16 = to_f16,
};

#endif
