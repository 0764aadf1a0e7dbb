/* The hot functions of the forward pass, one table per kernel set.
 *
 * kernels/generic.c is the reference: portable C that defines what every kernel computes.
 * An architecture file (kernels/x86.c, kernels/riscv_v.c) fills its own table with faster
 * versions where it has them and the generic ones elsewhere, and says at run time whether
 * this CPU can run it. Kernels know nothing about models, files or sessions.
 *
 * q8 matrices use the packed format's row-blocked layout (FORMAT.md): rows in blocks of
 * L2_Q8_BLOCK_ROWS; within a block, for each group of `gs` columns, the block's values are
 * stored column by column (one column = L2_Q8_BLOCK_ROWS contiguous int8), followed in a
 * separate array by one f32 scale per row and group:
 *   value(r, c) = wq[((b * G + g) * gs + c % gs) * BR + r % BR] * ws[(b * G + g) * BR + r % BR]
 * with b = r / BR, g = c / gs, G = ceil(cols / gs). Padding rows and columns hold zeros.
 */
#ifndef L2_KERNELS_H
#define L2_KERNELS_H

#include <stddef.h>
#include <stdint.h>

#define L2_Q8_BLOCK_ROWS 32
/* the largest group matvec_q8_two_part sums in int32: 4096 * 127 * (16 * 127 + 8) < 2^31 */
#define L2_MAX_TWO_PART_GROUP 4096
/* and matvec_q10: 2048 * 511 * 2040 < 2^31 */
#define L2_MAX_Q10_GROUP 2048

/* q10 matrices (FORMAT.md): a 10-bit value v = 4 h + l, value(r, c) = v * scale, with h the
 * q8 layout's int8 value (-127..127) and l (0..3) from a plane of 2-bit values that follows
 * the int8 values: per block and group, for each four columns c..c+3 (gs % 4 == 0), BR bytes,
 * row r's holding l(c) | l(c+1) << 2 | l(c+2) << 4 | l(c+3) << 6:
 *   l(r, c) = wl[((b * G + g) * (gs / 4) + c % gs / 4) * BR + r % BR] >> (2 * (c % 4)) & 3 */

/* The RISC-V vector set (kernels/riscv_v.c) is built for RVV 1.0 with Zvfhmin (vector
 * f16 <-> f32 conversions) and for the C906's XTheadVector, which has them too. */
#if defined(__riscv_xtheadvector) || (defined(__riscv_vector) && defined(__riscv_zvfhmin))
#define L2_RISCV_V_KERNELS 1
#endif
/* A target that promises them (libllama2_rvv/targets.mk: rv64gcv, c906) stops here when the
 * flags leave them out (-march=rv64gcv without _zvfhmin built a silently scalar library). */
#if defined(L2_REQUIRE_RISCV_V) && !defined(L2_RISCV_V_KERNELS)
#error "this target needs the RISC-V vector kernels: -march must enable V with Zvfhmin (rv64gcv_zvfhmin) or XTheadVector (rv64gc_xtheadvector)"
#endif

typedef struct {
    const char *name;
    int (*cpu_ok)(void);  /* NULL when every CPU this build targets can run the set */
    /* out[r] = sum_c w[r*cols + c] * x[c], row-major float weights */
    void (*matvec_f32)(float *out, const float *w, const float *x, int rows, int cols);
    void (*matvec_f16)(float *out, const uint16_t *w, const float *x, int rows, int cols);
    /* blocked int8 weights times int8 activations quantized per group by quantize_q8 */
    void (*matvec_q8)(float *out, const int8_t *wq, const float *ws, const int8_t *xq,
                      const float *xs, int rows, int cols, int gs);
    /* blocked q10 weights (wq, wl: above) times a two-part input: group sums are the exact
     * int32 sum_c v * (16 * xq[c] + xlo[c]), scaled as matvec_q8's; gs <= L2_MAX_Q10_GROUP */
    void (*matvec_q10)(float *out, const int8_t *wq, const uint8_t *wl, const float *ws,
                       const int8_t *xq, const int8_t *xlo, const float *xs, int rows, int cols,
                       int gs);
    /* x[0..n) -> xq[0..G*gs) (zero padded), xs[0..G): per group scale = max|x| / 127 */
    void (*quantize_q8)(int8_t *xq, float *xs, const float *x, int n, int gs);
    /* A two-part input (FORMAT.md): per group, t = x * (1 / scale) with quantize_q8's scale,
     * xq = rne(t) as quantize_q8, xlo = rne(16 * (t - xq)) in -8..8 (t - xq is exact), and
     * xs = scale / 16: x ~ xs * (16 * xq + xlo), about 12 bits. */
    void (*quantize_q8_two_part)(int8_t *xq, int8_t *xlo, float *xs, const float *x, int n,
                                 int gs);
    /* matvec_q8 with a two-part input: the group sums are the exact int32
     * sum_c w * (16 * xq[c] + xlo[c]), scaled as matvec_q8's; gs <= L2_MAX_TWO_PART_GROUP */
    void (*matvec_q8_two_part)(float *out, const int8_t *wq, const float *ws, const int8_t *xq,
                               const int8_t *xlo, const float *xs, int rows, int cols, int gs);
    /* out = x / sqrt(mean(x^2) + 1e-5) * w */
    void (*rmsnorm)(float *out, const float *x, const float *w, int n);
    /* in place: x = exp(x - max) / sum */
    void (*softmax)(float *x, int n);
    /* the first index of the largest value, as llama2.c's loop finds it (+0 == -0; a NaN at
     * index 0 is returned, NaNs elsewhere are passed over) */
    int (*argmax)(const float *x, int n);
    /* 1 if no element of x[0..n) is NaN or infinite (the check on every token's logits) */
    int (*all_finite)(const float *x, int n);
    /* h = silu(h) * g */
    void (*silu_mul)(float *h, const float *g, int n);
    /* rotate pairs (2i, 2i+1) of every head of v[0..n) by the angles with cos/sin[i] */
    void (*rope)(float *v, int n, int head_size, const float *cos_t, const float *sin_t);
    /* att[t] = dot(q, k_t) / sqrt(head_size) for t < n_pos; k_t = k + t * stride */
    void (*attn_scores_f32)(float *att, const float *q, const float *k, int n_pos, size_t stride,
                            int head_size);
    void (*attn_scores_f16)(float *att, const float *q, const uint16_t *k, int n_pos,
                            size_t stride, int head_size);
    /* out = sum_t att[t] * v_t for t < n_pos; v_t = v + t * stride */
    void (*attn_mix_f32)(float *out, const float *att, const float *v, int n_pos, size_t stride,
                         int head_size);
    void (*attn_mix_f16)(float *out, const float *att, const uint16_t *v, int n_pos,
                         size_t stride, int head_size);
    /* f32 -> f16 (round to nearest even), for the KV cache */
    void (*to_f16)(uint16_t *out, const float *x, int n);
} l2_kernels;

extern const l2_kernels l2_kernels_generic;

/* The generic kernels by name, for architecture sets to fall back on. */
void l2_matvec_f32_generic(float *out, const float *w, const float *x, int rows, int cols);
void l2_matvec_f16_generic(float *out, const uint16_t *w, const float *x, int rows, int cols);
void l2_matvec_q8_generic(float *out, const int8_t *wq, const float *ws, const int8_t *xq,
                          const float *xs, int rows, int cols, int gs);
void l2_quantize_q8_generic(int8_t *xq, float *xs, const float *x, int n, int gs);
void l2_matvec_q10_generic(float *out, const int8_t *wq, const uint8_t *wl, const float *ws,
                           const int8_t *xq, const int8_t *xlo, const float *xs, int rows,
                           int cols, int gs);
void l2_quantize_q8_two_part_generic(int8_t *xq, int8_t *xlo, float *xs, const float *x, int n,
                                     int gs);
void l2_matvec_q8_two_part_generic(float *out, const int8_t *wq, const float *ws,
                                   const int8_t *xq, const int8_t *xlo, const float *xs,
                                   int rows, int cols, int gs);
void l2_rmsnorm_generic(float *out, const float *x, const float *w, int n);
void l2_softmax_generic(float *x, int n);
int l2_argmax_generic(const float *x, int n);
int l2_all_finite_generic(const float *x, int n);
void l2_silu_mul_generic(float *h, const float *g, int n);
void l2_rope_generic(float *v, int n, int head_size, const float *cos_t, const float *sin_t);
void l2_attn_scores_f32_generic(float *att, const float *q, const float *k, int n_pos,
                                size_t stride, int head_size);
void l2_attn_scores_f16_generic(float *att, const float *q, const uint16_t *k, int n_pos,
                                size_t stride, int head_size);
void l2_attn_mix_f32_generic(float *out, const float *att, const float *v, int n_pos,
                             size_t stride, int head_size);
void l2_attn_mix_f16_generic(float *out, const float *att, const uint16_t *v, int n_pos,
                             size_t stride, int head_size);
void l2_to_f16_generic(uint16_t *out, const float *x, int n);

/* The scalar parts architecture sets share with generic, so that their results agree:
 * 1 / sqrt(mean(x^2) + 1e-5), the sum in llama2.c's order; x[i] = exp(x[i] - max) in place,
 * returning their sum in order; e[i] = exp(-x[i]). (libm's expf, as llama2.c calls it.) */
float l2_rms_scale(const float *x, int n);
float l2_exp_sum(float *x, int n, float max);
void l2_exp_neg(float *e, const float *x, int n);

/* Row-major q8 with groups over the flattened tensor (llama2.c v2 files, which may have
 * groups straddling rows), float activations. Compatibility path: generic only. */
void l2_matvec_q8_flat(float *out, const int8_t *wq, const unsigned char *scales,
                       const float *x, int rows, int cols, int gs);

/* The rows after a q10 matrix's last whole block: row-major int8 high parts wq, 2-bit low
 * parts of the flattened rows (value f in wl[f / 4] >> (2 * (f % 4)) & 3), one f32 scale per
 * group of the flattened rows; float activations. Generic only (a handful of rows). */
void l2_matvec_q10_flat(float *out, const int8_t *wq, const uint8_t *wl, const float *ws,
                        const float *x, int rows, int cols, int gs);

/* The set called `name`, or the fastest when name is NULL or empty; NULL if unknown or if
 * this CPU cannot run it. */
const l2_kernels *l2_kernels_find(const char *name);

#endif
