/* RISC-V vector kernels: RVV 1.0 with Zvfhmin (for the f16 KV cache's conversions), and the
 * C906's RVV 0.7.1 through GCC's XTheadVector (kernels.h: L2_RISCV_V_KERNELS).
 *
 * Vector-length agnostic (correct at any VLEN >= 128). The source stays inside what both
 * targets accept: LMUL >= 1, no policy (_tu/_mu) intrinsics, no vsext/vzext (0.7.1 lacks
 * them, and GCC turns a widening add of zero into one). Exps stay libm's scalar expf, as
 * llama2.c computes them, so that softmax and SiLU give the generic's results exactly. */
#include "kernels.h"
#if defined(L2_RISCV_V_KERNELS)
#include <math.h>
#include <riscv_vector.h>

#include "common.h"

#if !defined(__riscv_xtheadvector)
/* The q8 matrix-vector product, where a stories15M token spends nearly all its time.
 * Per block of 32 rows and per group: a column (32 int8, one e8m2 register group) times the
 * scalar activation x[c] gives 16-bit products; two columns' products fit 16 bits
 * (2 * 127 * 127 < 32767), so pairs are summed in int16 and then widened into the 32 int32
 * group sums. Group sums become floats once per group, scaled as the generic kernel does
 * (same operations, same order: the results are bitwise equal).
 * e8m2, e16m4 and e32m8 hold the same 32 elements, so vl never changes and moving between
 * them is a vtype switch only. Eight columns go per step, so that one switch to 16 bits and
 * back serves four widening adds; the block's float sums wait in `out` between groups,
 * which leaves the 32 vector registers to the step. */

/* A block's group sums into its n rows of out (n < BR: the matrix's last rows), as the
 * generic kernel: out = (g ? out : 0) + float(isum) * ws * xs */
static inline __attribute__((always_inline)) void group_end(float *out, vint32m8_t isum,
                                                            const float *ws, float xs, size_t n,
                                                            int g, size_t vl) {
    vfloat32m8_t f = __riscv_vfcvt_f_x_v_f32m8(isum, vl);
    f = __riscv_vfmul_vv_f32m8(f, __riscv_vle32_v_f32m8(ws, vl), vl);
    f = __riscv_vfmul_vf_f32m8(f, xs, vl);
    if (g > 0) f = __riscv_vfadd_vv_f32m8(__riscv_vle32_v_f32m8(out, n), f, vl);
    __riscv_vse32_v_f32m8(out, f, n);
}

/* 16-bit products of two block columns with their activations */
static inline vint16m4_t pair_products(vint8m2_t c0, vint8m2_t c1, const int8_t *x, size_t vl) {
    return __riscv_vwmacc_vx_i16m4(__riscv_vwmul_vx_i16m4(c0, x[0], vl), x[1], c1, vl);
}

/* the pair products of four consecutive block columns */
static inline __attribute__((always_inline)) void products4(vint16m4_t *p01, vint16m4_t *p23,
                                                            const int8_t *wq, const int8_t *x,
                                                            int one_load, size_t vl) {
    enum { BR = L2_Q8_BLOCK_ROWS };
    vint8m2_t c0, c1, c2, c3;
    if (one_load) {
        /* VLEN 128: four columns (128 bytes) fill an e32m8 group exactly; loaded as 32-bit
         * elements they need no vtype switch either */
        vint8m8_t w = __riscv_vreinterpret_v_i32m8_i8m8(
            __riscv_vle32_v_i32m8((const int32_t *)(const void *)wq, vl));
        c0 = __riscv_vget_v_i8m8_i8m2(w, 0);
        c1 = __riscv_vget_v_i8m8_i8m2(w, 1);
        c2 = __riscv_vget_v_i8m8_i8m2(w, 2);
        c3 = __riscv_vget_v_i8m8_i8m2(w, 3);
    } else {
        c0 = __riscv_vle8_v_i8m2(wq, vl);
        c1 = __riscv_vle8_v_i8m2(wq + BR, vl);
        c2 = __riscv_vle8_v_i8m2(wq + 2 * BR, vl);
        c3 = __riscv_vle8_v_i8m2(wq + 3 * BR, vl);
    }
    *p01 = pair_products(c0, c1, x, vl);
    *p23 = pair_products(c2, c3, x + 2, vl);
}

/* isum + the products of eight consecutive block columns; `first` starts the sums instead
 * (no zeroed registers) */
static inline __attribute__((always_inline)) vint32m8_t columns8(vint32m8_t isum,
                                                                 const int8_t *wq,
                                                                 const int8_t *x, int first,
                                                                 int one_load, size_t vl) {
    vint16m4_t p01, p23, p45, p67;
    products4(&p01, &p23, wq, x, one_load, vl);
    products4(&p45, &p67, wq + 4 * L2_Q8_BLOCK_ROWS, x + 4, one_load, vl);
    isum = first ? __riscv_vwadd_vv_i32m8(p01, p23, vl)
                 : __riscv_vwadd_wv_i32m8(__riscv_vwadd_wv_i32m8(isum, p01, vl), p23, vl);
    isum = __riscv_vwadd_wv_i32m8(isum, p45, vl);
    return __riscv_vwadd_wv_i32m8(isum, p67, vl);
}

/* lo16 + the low part's products of four consecutive block columns (two-part inputs:
 * |xlo| <= 8, so 32 columns' products fit 16 bits) */
static inline __attribute__((always_inline)) vint16m4_t low4(vint16m4_t lo16, const int8_t *wq,
                                                             const int8_t *xlo, size_t vl) {
    for (int j = 0; j < 4; j++)
        lo16 = __riscv_vwmacc_vx_i16m4(lo16, xlo[j], __riscv_vle8_v_i8m2(wq + j * L2_Q8_BLOCK_ROWS, vl), vl);
    return lo16;
}

/* one_load (VLEN 128), `tail` (gs % 8 != 0) and whether xlo (a two-part input's low part)
 * is given are constants after inlining: the common case compiles to a straight 8-column
 * loop. A two-part group's sum is 16 * (the high part's) + the low part's. */
static inline __attribute__((always_inline)) void q8_blocks(
        float *out, const int8_t *wq, const float *ws, const int8_t *xq, const int8_t *xlo,
        const float *xs, int rows, int groups, int gs, int one_load, int tail) {
    enum { BR = L2_Q8_BLOCK_ROWS };
    size_t vl = __riscv_vsetvl_e8m2(BR);  /* BR at every VLEN >= 128 */
    int gs8 = tail ? gs & ~7 : gs;
    for (int r0 = 0; r0 < rows; r0 += BR, out += BR) {
        for (int g = 0; g < groups; g++, ws += BR) {
            const int8_t *x = xq + (size_t)g * (size_t)gs, *x8_end = x + gs8;
            const int8_t *lo = xlo ? xlo + (size_t)g * (size_t)gs : NULL;
            vint32m8_t isum, lsum = __riscv_vmv_v_x_i32m8(0, vl);
            vint16m4_t lo16 = __riscv_vmv_v_x_i16m4(0, vl);
            if (x < x8_end) {
                if (lo) lo16 = low4(low4(lo16, wq, lo, vl), wq + 4 * BR, lo + 4, vl);
                isum = columns8(__riscv_vundefined_i32m8(), wq, x, 1, one_load, vl);
                x += 8;
                wq += 8 * BR;
            } else {
                isum = __riscv_vmv_v_x_i32m8(0, vl);
            }
            for (; x < x8_end; x += 8, wq += 8 * BR) {
                if (lo) {
                    const int8_t *l = lo + (x - (xq + (size_t)g * (size_t)gs));
                    if ((l - lo) % 32 == 0) {  /* 32 columns' low products: into 32 bits */
                        lsum = __riscv_vwadd_wv_i32m8(lsum, lo16, vl);
                        lo16 = __riscv_vmv_v_x_i16m4(0, vl);
                    }
                    lo16 = low4(low4(lo16, wq, l, vl), wq + 4 * BR, l + 4, vl);
                }
                isum = columns8(isum, wq, x, 0, one_load, vl);
            }
            if (tail) {  /* the group's last 1..7 columns */
                const int8_t *x_end = xq + (size_t)g * (size_t)gs + gs;
                if (lo) {  /* their low products, in 16 bits of their own */
                    lsum = __riscv_vwadd_wv_i32m8(lsum, lo16, vl);
                    lo16 = __riscv_vmv_v_x_i16m4(0, vl);
                    const int8_t *l = lo + (x - (xq + (size_t)g * (size_t)gs));
                    for (long j = 0; j < x_end - x; j++)
                        lo16 = __riscv_vwmacc_vx_i16m4(lo16, l[j], __riscv_vle8_v_i8m2(wq + j * BR, vl), vl);
                }
                for (; x_end - x >= 2; x += 2, wq += 2 * BR)
                    isum = __riscv_vwadd_wv_i32m8(
                        isum, pair_products(__riscv_vle8_v_i8m2(wq, vl),
                                            __riscv_vle8_v_i8m2(wq + BR, vl), x, vl), vl);
                if (x < x_end) {
                    isum = __riscv_vwadd_wv_i32m8(
                        isum, __riscv_vwmul_vx_i16m4(__riscv_vle8_v_i8m2(wq, vl), x[0], vl), vl);
                    wq += BR;
                }
            }
            if (lo)
                isum = __riscv_vadd_vv_i32m8(__riscv_vsll_vx_i32m8(isum, 4, vl),
                                             __riscv_vwadd_wv_i32m8(lsum, lo16, vl), vl);
            group_end(out, isum, ws, xs[g], rows - r0 < BR ? (size_t)(rows - r0) : (size_t)BR, g,
                      vl);
        }
    }
}

/* matvec_q8 (xlo NULL) or matvec_q8_two_part */
static inline __attribute__((always_inline)) void q8_product(
        float *out, const int8_t *wq, const float *ws, const int8_t *xq, const int8_t *xlo,
        const float *xs, int rows, int cols, int gs) {
    int groups = (cols + gs - 1) / gs;
    int one_load = __riscv_vsetvlmax_e8m2() == L2_Q8_BLOCK_ROWS;
    if (gs % 8) q8_blocks(out, wq, ws, xq, xlo, xs, rows, groups, gs, one_load, 1);
    else if (one_load) q8_blocks(out, wq, ws, xq, xlo, xs, rows, groups, gs, 1, 0);
    else q8_blocks(out, wq, ws, xq, xlo, xs, rows, groups, gs, 0, 0);
}

static void matvec_q8(float *out, const int8_t *wq, const float *ws, const int8_t *xq,
                      const float *xs, int rows, int cols, int gs) {
    q8_product(out, wq, ws, xq, NULL, xs, rows, cols, gs);
}

static void matvec_q8_two_part(float *out, const int8_t *wq, const float *ws, const int8_t *xq,
                               const int8_t *xlo, const float *xs, int rows, int cols, int gs) {
    q8_product(out, wq, ws, xq, xlo, xs, rows, cols, gs);
}

#else
/* The C906's q8 product, written in XTheadVector assembly: GCC's code for the intrinsics above
 * copies registers around the widening multiply-adds and spills vector registers, and a spill
 * reads vlenb, which the C906 lacks (it traps). By hand the step fits the 32 registers
 * exactly: four block columns in v0-v7 (e8m2), four pair products in v8, v12, v24, v28
 * (e16m4) and the group sums in v16-v23 (e32m8). Every vsetvli names its vl (32 rows),
 * because in RVV 0.7.1 `vsetvli zero, zero` sets vl to VLMAX rather than keeping it.
 * Same arithmetic, same order as the intrinsics: bitwise equal to generic. */

/* The group sums v16-v23 (int32) of n rows into out, as the generic kernel's epilogue:
 * out = (g ? out : 0) + float(sums) * ws * xs. Needs %[n], %[ws], %[xs], %[out], %[g]. */
#define XT_GROUP_END                                                                         \
    "th.vsetvli zero, %[n], e32, m8, d1\n"                                                 \
    "th.vfcvt.f.x.v v16, v16\n"                                                            \
    "th.vle.v v0, (%[ws])\n"                                                               \
    "th.vfmul.vv v16, v16, v0\n"                                                           \
    "th.vfmul.vf v16, v16, %[xs]\n"                                                        \
    "beqz %[g], 9f\n"                                                                      \
    "th.vle.v v8, (%[out])\n"                                                              \
    "th.vfadd.vv v16, v8, v16\n"                                                           \
    "9:\n"                                                                                 \
    "th.vse.v v16, (%[out])\n"

/* v8/v12/v24/v28 = pair products of eight columns at wq (advanced past them), activations at x */
#define XT_PRODUCTS8                                                                         \
    "th.vsetvli zero, %[br], e8, m2, d1\n"                                                  \
    "th.vle.v v0, (%[wq])\n addi %[wq], %[wq], 32\n"                                       \
    "th.vle.v v2, (%[wq])\n addi %[wq], %[wq], 32\n"                                       \
    "th.vle.v v4, (%[wq])\n addi %[wq], %[wq], 32\n"                                       \
    "th.vle.v v6, (%[wq])\n addi %[wq], %[wq], 32\n"                                       \
    "lb %[a], 0(%[x])\n lb %[b], 1(%[x])\n"                                                \
    "th.vwmul.vx v8, v0, %[a]\n th.vwmacc.vx v8, %[b], v2\n"                               \
    "lb %[a], 2(%[x])\n lb %[b], 3(%[x])\n"                                                \
    "th.vwmul.vx v12, v4, %[a]\n th.vwmacc.vx v12, %[b], v6\n"                             \
    "th.vle.v v0, (%[wq])\n addi %[wq], %[wq], 32\n"                                       \
    "th.vle.v v2, (%[wq])\n addi %[wq], %[wq], 32\n"                                       \
    "th.vle.v v4, (%[wq])\n addi %[wq], %[wq], 32\n"                                       \
    "th.vle.v v6, (%[wq])\n addi %[wq], %[wq], 32\n"                                       \
    "lb %[a], 4(%[x])\n lb %[b], 5(%[x])\n"                                                \
    "th.vwmul.vx v24, v0, %[a]\n th.vwmacc.vx v24, %[b], v2\n"                             \
    "lb %[a], 6(%[x])\n lb %[b], 7(%[x])\n"                                                \
    "th.vwmul.vx v28, v4, %[a]\n th.vwmacc.vx v28, %[b], v6\n"                             \
    "addi %[x], %[x], 8\n"                                                                  \
    "th.vsetvli zero, %[br], e16, m4, d1\n"

/* One block of 32 rows times one group of gs = 8 * steps columns: out[0..n) = (g ? out : 0)
 * + float(group sums) * ws * xs. Returns wq advanced past the group. */
static const int8_t *q8_group_xthead(float *out, const int8_t *wq, const float *ws,
                                     const int8_t *x, float xs, long steps, long n, long g) {
    long a, b;
    __asm__ volatile(
        XT_PRODUCTS8  /* the first eight columns start the sums */
        "th.vwadd.vv v16, v8, v12\n"
        "th.vwadd.wv v16, v16, v24\n"
        "th.vwadd.wv v16, v16, v28\n"
        "addi %[steps], %[steps], -1\n"
        "beqz %[steps], 2f\n"
        "1:\n"
        XT_PRODUCTS8
        "th.vwadd.wv v16, v16, v8\n"
        "th.vwadd.wv v16, v16, v12\n"
        "th.vwadd.wv v16, v16, v24\n"
        "th.vwadd.wv v16, v16, v28\n"
        "addi %[steps], %[steps], -1\n"
        "bnez %[steps], 1b\n"
        "2:\n"
        XT_GROUP_END
        : [wq] "+r"(wq), [x] "+r"(x), [steps] "+r"(steps), [a] "=&r"(a), [b] "=&r"(b)
        : [br] "r"((long)L2_Q8_BLOCK_ROWS), [n] "r"(n), [ws] "r"(ws), [xs] "f"(xs),
          [out] "r"(out), [g] "r"(g)
        : "memory", "v0", "v1", "v2", "v3", "v4", "v5", "v6", "v7", "v8", "v9", "v10", "v11",
          "v12", "v13", "v14", "v15", "v16", "v17", "v18", "v19", "v20", "v21", "v22", "v23",
          "v24", "v25", "v26", "v27", "v28", "v29", "v30", "v31", "vl", "vtype");
    return wq;
}
#undef XT_PRODUCTS8

/* Two-part inputs: one block of 32 rows times one group of gs = 4 * quads columns
 * (gs <= 32), high part x and low part lo. Per four columns: the high part's two pair
 * products in v8 and v12, widened into the group sums v16-v23 as above; the low part's
 * products go straight into 16-bit sums in v24-v27 (|lo| <= 8: 32 columns fit). At the end
 * v16 = 16 * v16 + v24, then the epilogue above. Same sums, same epilogue as generic. */
static const int8_t *q8_group_two_part_xthead(float *out, const int8_t *wq, const float *ws,
                                              const int8_t *x, const int8_t *lo, float xs,
                                              long quads, long n, long g) {
    long a, b;
    __asm__ volatile(
        "th.vsetvli zero, %[br], e16, m4, d1\n"
        "th.vmv.v.i v24, 0\n"
        "li %[a], 1\n"  /* the first four columns start the group sums */
        "1:\n"
        "th.vsetvli zero, %[br], e8, m2, d1\n"
        "th.vle.v v0, (%[wq])\n addi %[wq], %[wq], 32\n"
        "th.vle.v v2, (%[wq])\n addi %[wq], %[wq], 32\n"
        "th.vle.v v4, (%[wq])\n addi %[wq], %[wq], 32\n"
        "th.vle.v v6, (%[wq])\n addi %[wq], %[wq], 32\n"
        "lb %[b], 0(%[x])\n th.vwmul.vx v8, v0, %[b]\n"
        "lb %[b], 1(%[x])\n th.vwmacc.vx v8, %[b], v2\n"
        "lb %[b], 2(%[x])\n th.vwmul.vx v12, v4, %[b]\n"
        "lb %[b], 3(%[x])\n th.vwmacc.vx v12, %[b], v6\n"
        "lb %[b], 0(%[lo])\n th.vwmacc.vx v24, %[b], v0\n"
        "lb %[b], 1(%[lo])\n th.vwmacc.vx v24, %[b], v2\n"
        "lb %[b], 2(%[lo])\n th.vwmacc.vx v24, %[b], v4\n"
        "lb %[b], 3(%[lo])\n th.vwmacc.vx v24, %[b], v6\n"
        "addi %[x], %[x], 4\n addi %[lo], %[lo], 4\n"
        "th.vsetvli zero, %[br], e16, m4, d1\n"
        "beqz %[a], 2f\n"
        "th.vwadd.vv v16, v8, v12\n"
        "li %[a], 0\n"
        "j 3f\n"
        "2:\n"
        "th.vwadd.wv v16, v16, v8\n"
        "th.vwadd.wv v16, v16, v12\n"
        "3:\n"
        "addi %[quads], %[quads], -1\n"
        "bnez %[quads], 1b\n"
        "th.vsetvli zero, %[br], e32, m8, d1\n"
        "th.vsll.vi v16, v16, 4\n"
        "th.vsetvli zero, %[br], e16, m4, d1\n"
        "th.vwadd.wv v16, v16, v24\n"
        XT_GROUP_END
        : [wq] "+r"(wq), [x] "+r"(x), [lo] "+r"(lo), [quads] "+r"(quads), [a] "=&r"(a),
          [b] "=&r"(b)
        : [br] "r"((long)L2_Q8_BLOCK_ROWS), [n] "r"(n), [ws] "r"(ws), [xs] "f"(xs),
          [out] "r"(out), [g] "r"(g)
        : "memory", "v0", "v1", "v2", "v3", "v4", "v5", "v6", "v7", "v8", "v9", "v10", "v11",
          "v12", "v13", "v14", "v15", "v16", "v17", "v18", "v19", "v20", "v21", "v22", "v23",
          "v24", "v25", "v26", "v27", "vl", "vtype");
    return wq;
}

static void matvec_q8_two_part(float *out, const int8_t *wq, const float *ws, const int8_t *xq,
                               const int8_t *xlo, const float *xs, int rows, int cols, int gs) {
    enum { BR = L2_Q8_BLOCK_ROWS };
    if (gs % 4 || gs > 32) {  /* groups the 16-bit low sums cannot hold: generic */
        l2_matvec_q8_two_part_generic(out, wq, ws, xq, xlo, xs, rows, cols, gs);
        return;
    }
    int groups = (cols + gs - 1) / gs;
    for (int r0 = 0; r0 < rows; r0 += BR, out += BR) {
        long n = rows - r0 < BR ? rows - r0 : BR;
        for (int g = 0; g < groups; g++, ws += BR) {
            size_t at = (size_t)g * (size_t)gs;
            wq = q8_group_two_part_xthead(out, wq, ws, xq + at, xlo + at, xs[g], gs / 4, n, g);
        }
    }
}

/* Groups of 8k columns (l2convert's choices) in assembly; other group sizes, which only a
 * hand-made file has, by the generic kernel. */
static void matvec_q8(float *out, const int8_t *wq, const float *ws, const int8_t *xq,
                      const float *xs, int rows, int cols, int gs) {
    enum { BR = L2_Q8_BLOCK_ROWS };
    if (gs % 8) {
        l2_matvec_q8_generic(out, wq, ws, xq, xs, rows, cols, gs);
        return;
    }
    int groups = (cols + gs - 1) / gs;
    for (int r0 = 0; r0 < rows; r0 += BR, out += BR) {
        long n = rows - r0 < BR ? rows - r0 : BR;
        for (int g = 0; g < groups; g++, ws += BR)
            wq = q8_group_xthead(out, wq, ws, xq + (size_t)g * (size_t)gs, xs[g], gs / 8, n, g);
    }
}
#endif

#if !defined(__riscv_xtheadvector)
/* q10 (kernels.h): per block column, the 10-bit values v = 4 h + l as 16-bit elements (h * 4
 * widened, the column's 2-bit l added), times the two-part input's 16 xq + xlo, into 32-bit
 * group sums; matvec_q8's epilogue. Exact: bitwise equal to generic. */
static void matvec_q10(float *out, const int8_t *wq, const uint8_t *wl, const float *ws,
                       const int8_t *xq, const int8_t *xlo, const float *xs, int rows, int cols,
                       int gs) {
    enum { BR = L2_Q8_BLOCK_ROWS };
    size_t vl = __riscv_vsetvl_e8m2(BR);
    int groups = (cols + gs - 1) / gs;
    for (int r0 = 0; r0 < rows; r0 += BR, out += BR) {
        for (int g = 0; g < groups; g++, ws += BR) {
            const int8_t *x = xq + (size_t)g * (size_t)gs, *lo = xlo + (size_t)g * (size_t)gs;
            vint32m8_t isum = __riscv_vmv_v_x_i32m8(0, vl);
            for (int c = 0; c < gs; c += 4, wl += BR) {
                vuint8m2_t quad = __riscv_vle8_v_u8m2(wl, vl);
                for (int j = 0; j < 4; j++, wq += BR) {
                    vuint8m2_t l = __riscv_vand_vx_u8m2(__riscv_vsrl_vx_u8m2(quad, 2 * j, vl), 3, vl);
                    vint16m4_t v = __riscv_vwmul_vx_i16m4(__riscv_vle8_v_i8m2(wq, vl), 4, vl);
                    v = __riscv_vreinterpret_v_u16m4_i16m4(
                        __riscv_vwaddu_wv_u16m4(__riscv_vreinterpret_v_i16m4_u16m4(v), l, vl));
                    isum = __riscv_vwmacc_vx_i32m8(isum, (int16_t)(16 * x[c + j] + lo[c + j]), v, vl);
                }
            }
            group_end(out, isum, ws, xs[g], rows - r0 < BR ? (size_t)(rows - r0) : (size_t)BR, g,
                      vl);
        }
    }
}

#else
/* The C906's q10 product in XTheadVector assembly (GCC's code for the intrinsics above spills
 * vector registers, reading vlenb, which traps). Per four block columns at e8: the plane's
 * 32 bytes in v2, each column in v0, its l in v4, v = 4 h (vwmul) + l (vwaddu.wv) into v8,
 * v12, v24 and v28 (e16m4); then at e16 the four multiply-adds by 16 xq + xlo into the group
 * sums v16-v23. Same sums, same epilogue as generic. */
#define XT_Q10_COLUMN(j, dst)                                                                \
    "th.vle.v v0, (%[wq])\n addi %[wq], %[wq], 32\n"                                      \
    "th.vsrl.vi v4, v2, " #j "*2\n th.vand.vi v4, v4, 3\n"                                \
    "th.vwmul.vx " #dst ", v0, %[four]\n th.vwaddu.wv " #dst ", " #dst ", v4\n"           \
    "lb %[f" #j "], " #j "(%[x])\n lb %[t], " #j "(%[lo])\n"                              \
    "slli %[f" #j "], %[f" #j "], 4\n add %[f" #j "], %[f" #j "], %[t]\n"

static const int8_t *q10_group_xthead(float *out, const int8_t *wq, const uint8_t **wl,
                                      const float *ws, const int8_t *x, const int8_t *lo,
                                      float xs, long quads, long n, long g) {
    long f0, f1, f2, f3, t;
    const uint8_t *plane = *wl;
    __asm__ volatile(
        "th.vsetvli zero, %[br], e32, m8, d1\n"
        "th.vmv.v.i v16, 0\n"
        "1:\n"
        "th.vsetvli zero, %[br], e8, m2, d1\n"
        "th.vle.v v2, (%[wl])\n addi %[wl], %[wl], 32\n"
        XT_Q10_COLUMN(0, v8)
        XT_Q10_COLUMN(1, v12)
        XT_Q10_COLUMN(2, v24)
        XT_Q10_COLUMN(3, v28)
        "addi %[x], %[x], 4\n addi %[lo], %[lo], 4\n"
        "th.vsetvli zero, %[br], e16, m4, d1\n"
        "th.vwmacc.vx v16, %[f0], v8\n"
        "th.vwmacc.vx v16, %[f1], v12\n"
        "th.vwmacc.vx v16, %[f2], v24\n"
        "th.vwmacc.vx v16, %[f3], v28\n"
        "addi %[quads], %[quads], -1\n"
        "bnez %[quads], 1b\n"
        XT_GROUP_END
        : [wq] "+r"(wq), [wl] "+r"(plane), [x] "+r"(x), [lo] "+r"(lo), [quads] "+r"(quads),
          [f0] "=&r"(f0), [f1] "=&r"(f1), [f2] "=&r"(f2), [f3] "=&r"(f3), [t] "=&r"(t)
        : [br] "r"((long)L2_Q8_BLOCK_ROWS), [n] "r"(n), [ws] "r"(ws), [xs] "f"(xs),
          [out] "r"(out), [g] "r"(g), [four] "r"(4L)
        : "memory", "v0", "v1", "v2", "v3", "v4", "v5", "v6", "v7", "v8", "v9", "v10", "v11",
          "v12", "v13", "v14", "v15", "v16", "v17", "v18", "v19", "v20", "v21", "v22", "v23",
          "v24", "v25", "v26", "v27", "v28", "v29", "v30", "v31", "vl", "vtype");
    *wl = plane;
    return wq;
}
#undef XT_Q10_COLUMN
#undef XT_GROUP_END

static void matvec_q10(float *out, const int8_t *wq, const uint8_t *wl, const float *ws,
                       const int8_t *xq, const int8_t *xlo, const float *xs, int rows, int cols,
                       int gs) {
    enum { BR = L2_Q8_BLOCK_ROWS };
    int groups = (cols + gs - 1) / gs;  /* gs % 4 == 0: the loader's rule for q10 */
    for (int r0 = 0; r0 < rows; r0 += BR, out += BR) {
        long n = rows - r0 < BR ? rows - r0 : BR;
        for (int g = 0; g < groups; g++, ws += BR) {
            size_t at = (size_t)g * (size_t)gs;
            wq = q10_group_xthead(out, wq, &wl, ws, xq + at, xlo + at, xs[g], gs / 4, n, g);
        }
    }
}
#endif

/* int32 -> their low bytes at q (what the generic's (int8_t) of lrintf keeps) */
static inline void store_low_bytes(int8_t *q, vint32m4_t v, size_t vl) {
    __riscv_vse8_v_i8m1(q, __riscv_vnsra_wx_i8m1(__riscv_vnsra_wx_i16m2(v, 0, vl), 0, vl), vl);
}

/* Per group: scale = max|x| / 127, q = round-to-nearest-even(x / scale) computed as
 * x * (1 / scale), exactly as the generic kernel; the int8 results are bitwise equal.
 * With xlo (a two-part input, a constant after inlining) also the low part and scale / 16. */
static inline __attribute__((always_inline)) void q8_quantize(int8_t *xq, int8_t *xlo,
                                                              float *xs, const float *x, int n,
                                                              int gs) {
    int groups = (n + gs - 1) / gs;
    for (int g = 0; g < groups; g++) {
        int start = g * gs, len = n - start < gs ? n - start : gs;
        const float *xg = x + start;
        int8_t *qg = xq + start, *lg = xlo ? xlo + start : NULL;
        vfloat32m1_t vmax = __riscv_vfmv_v_f_f32m1(0.0f, 1);
        long non_finite = 0;
        for (int i = 0; i < len;) {
            size_t vl = __riscv_vsetvl_e32m8((size_t)(len - i));
            vfloat32m8_t v = __riscv_vfabs_v_f32m8(__riscv_vle32_v_f32m8(xg + i, vl), vl);
            vmax = __riscv_vfredmax_vs_f32m8_f32m1(v, vmax, vl);
            /* !(|x| <= FLT_MAX) holds for NaN and infinity */
            non_finite += __riscv_vcpop_m_b4(__riscv_vmfgt_vf_f32m8_b4(v, 3.4028235e38f, vl), vl);
            non_finite += __riscv_vcpop_m_b4(__riscv_vmfne_vv_f32m8_b4(v, v, vl), vl);
            i += (int)vl;
        }
        if (non_finite) {  /* as generic: zeros and a NaN scale, so the NaN reaches the output */
            for (int i = 0; i < gs; i++) qg[i] = 0;
            for (int i = 0; lg && i < gs; i++) lg[i] = 0;
            xs[g] = NAN;
            continue;
        }
        float scale = __riscv_vfmv_f_s_f32m1_f32(vmax) / 127.0f;
        float inv = scale > 0.0f ? 1.0f / scale : 0.0f;
        for (int i = 0; i < len;) {
            size_t vl = __riscv_vsetvl_e32m4((size_t)(len - i));
            vfloat32m4_t t = __riscv_vfmul_vf_f32m4(__riscv_vle32_v_f32m4(xg + i, vl), inv, vl);
            vint32m4_t q32 = __riscv_vfcvt_x_f_v_i32m4(t, vl);  /* dynamic rounding: RNE */
            store_low_bytes(qg + i, q32, vl);
            if (lg) {  /* t - q is exact */
                vfloat32m4_t r = __riscv_vfsub_vv_f32m4(t, __riscv_vfcvt_f_x_v_f32m4(q32, vl), vl);
                store_low_bytes(lg + i, __riscv_vfcvt_x_f_v_i32m4(__riscv_vfmul_vf_f32m4(r, 16.0f, vl), vl), vl);
            }
            i += (int)vl;
        }
        for (int i = len; i < gs; i++) qg[i] = 0;
        for (int i = len; lg && i < gs; i++) lg[i] = 0;
        xs[g] = lg ? scale * 0.0625f : scale;
    }
}

static void quantize_q8(int8_t *xq, float *xs, const float *x, int n, int gs) {
    q8_quantize(xq, NULL, xs, x, n, gs);
}

static void quantize_q8_two_part(int8_t *xq, int8_t *xlo, float *xs, const float *x, int n,
                                 int gs) {
    q8_quantize(xq, xlo, xs, x, n, gs);
}

/* ---- float kernels: every sum in the generic (llama2.c) order, so results are bitwise
 * equal everywhere. A vector holds one running sum per row (or per position) and steps
 * through the columns in order, loading a column across rows with a strided load. */

/* f16 -> f32 by the vector unit (exact; NaNs become the canonical NaN) */
static vfloat32m4_t f16_to_f32m4(vuint16m2_t h, size_t vl) {
    return __riscv_vfwcvt_f_f_v_f32m4(__riscv_vreinterpret_v_u16m2_f16m2(h), vl);
}

/* f32 or f16 (`f16`, a constant after inlining) elements as f32: vl of them from a + at,
 * `stride` elements apart (1: consecutive) */
static inline __attribute__((always_inline)) vfloat32m4_t load_f32(const void *a, size_t at,
                                                                   size_t stride, int f16,
                                                                   size_t vl) {
    if (f16) {
        const uint16_t *h = (const uint16_t *)a + at;
        return f16_to_f32m4(stride == 1 ? __riscv_vle16_v_u16m2(h, vl)
                                         : __riscv_vlse16_v_u16m2(h, (ptrdiff_t)(stride * 2), vl),
                            vl);
    }
    const float *f = (const float *)a + at;
    return stride == 1 ? __riscv_vle32_v_f32m4(f, vl)
                       : __riscv_vlse32_v_f32m4(f, (ptrdiff_t)(stride * 4), vl);
}

/* sums[j] = sum over i < n, in order, of a[j * stride + i] * b[i], for j < count */
static inline __attribute__((always_inline)) void dots(float *sums, const void *a, size_t stride,
                                                       const float *b, int n, int count, int f16) {
    for (int j = 0; j < count;) {
        size_t vl = __riscv_vsetvl_e32m4((size_t)(count - j));
        vfloat32m4_t acc = __riscv_vfmv_v_f_f32m4(0.0f, vl);
        for (int i = 0; i < n; i++) {
            vfloat32m4_t col = load_f32(a, (size_t)j * stride + (size_t)i, stride, f16, vl);
            acc = __riscv_vfadd_vv_f32m4(acc, __riscv_vfmul_vf_f32m4(col, b[i], vl), vl);
        }
        __riscv_vse32_v_f32m4(sums + j, acc, vl);
        j += (int)vl;
    }
}

static void matvec_f32(float *out, const float *w, const float *x, int rows, int cols) {
    dots(out, w, (size_t)cols, x, cols, rows, 0);
}

static void matvec_f16(float *out, const uint16_t *w, const float *x, int rows, int cols) {
    dots(out, w, (size_t)cols, x, cols, rows, 1);
}

static void divide(float *att, float d, int n) {
    for (int t = 0; t < n;) {
        size_t vl = __riscv_vsetvl_e32m8((size_t)(n - t));
        __riscv_vse32_v_f32m8(att + t, __riscv_vfdiv_vf_f32m8(__riscv_vle32_v_f32m8(att + t, vl), d, vl), vl);
        t += (int)vl;
    }
}

static void attn_scores_f32(float *att, const float *q, const float *k, int n_pos, size_t stride,
                            int head_size) {
    dots(att, k, stride, q, head_size, n_pos, 0);
    divide(att, sqrtf((float)head_size), n_pos);
}

static void attn_scores_f16(float *att, const float *q, const uint16_t *k, int n_pos,
                            size_t stride, int head_size) {
    dots(att, k, stride, q, head_size, n_pos, 1);
    divide(att, sqrtf((float)head_size), n_pos);
}

/* out += a_t * v_t, element-wise with a separate multiply and add: bitwise equal to generic.
 * LMUL 4 here and in the dot products: on the C906 an op costs 4 cycles up to LMUL 2, 8 at 4,
 * so the wider groups cost the same per element in half the instructions and loop steps. */
static inline __attribute__((always_inline)) void mix(float *out, const float *att,
                                                      const void *v, int n_pos, size_t stride,
                                                      int head_size, int f16) {
    for (int i = 0; i < head_size;) {
        size_t vl = __riscv_vsetvl_e32m4((size_t)(head_size - i));
        vfloat32m4_t acc = __riscv_vfmv_v_f_f32m4(0.0f, vl);
        for (int t = 0; t < n_pos; t++) {
            vfloat32m4_t vt = load_f32(v, (size_t)t * stride + (size_t)i, 1, f16, vl);
            acc = __riscv_vfadd_vv_f32m4(acc, __riscv_vfmul_vf_f32m4(vt, att[t], vl), vl);
        }
        __riscv_vse32_v_f32m4(out + i, acc, vl);
        i += (int)vl;
    }
}

static void attn_mix_f32(float *out, const float *att, const float *v, int n_pos, size_t stride,
                         int head_size) {
    mix(out, att, v, n_pos, stride, head_size, 0);
}

static void attn_mix_f16(float *out, const float *att, const uint16_t *v, int n_pos,
                         size_t stride, int head_size) {
    mix(out, att, v, n_pos, stride, head_size, 1);
}

/* out = w * (ss * x), as the generic: the sum of squares in order (l2_rms_scale), then the
 * scaling by vector. */
static void rmsnorm(float *out, const float *x, const float *w, int n) {
    float ss = l2_rms_scale(x, n);
    for (int i = 0; i < n;) {
        size_t vl = __riscv_vsetvl_e32m8((size_t)(n - i));
        vfloat32m8_t v = __riscv_vfmul_vf_f32m8(__riscv_vle32_v_f32m8(x + i, vl), ss, vl);
        __riscv_vse32_v_f32m8(out + i, __riscv_vfmul_vv_f32m8(__riscv_vle32_v_f32m8(w + i, vl), v, vl), vl);
        i += (int)vl;
    }
}

/* Per head: the even and odd elements by strided loads, rotated with the generic's products
 * and sums (separate multiplies and adds), stored back strided. */
static void rope(float *v, int n, int head_size, const float *cos_t, const float *sin_t) {
    const ptrdiff_t pair = 2 * sizeof(float);
    for (int h = 0; h < n; h += head_size) {
        for (int p = 0; p < head_size / 2;) {
            size_t vl = __riscv_vsetvl_e32m4((size_t)(head_size / 2 - p));
            float *at = v + h + 2 * p;
            vfloat32m4_t v0 = __riscv_vlse32_v_f32m4(at, pair, vl);
            vfloat32m4_t v1 = __riscv_vlse32_v_f32m4(at + 1, pair, vl);
            vfloat32m4_t c = __riscv_vle32_v_f32m4(cos_t + p, vl);
            vfloat32m4_t sn = __riscv_vle32_v_f32m4(sin_t + p, vl);
            vfloat32m4_t r0 = __riscv_vfsub_vv_f32m4(__riscv_vfmul_vv_f32m4(v0, c, vl),
                                                     __riscv_vfmul_vv_f32m4(v1, sn, vl), vl);
            vfloat32m4_t r1 = __riscv_vfadd_vv_f32m4(__riscv_vfmul_vv_f32m4(v0, sn, vl),
                                                     __riscv_vfmul_vv_f32m4(v1, c, vl), vl);
            __riscv_vsse32_v_f32m4(at, pair, r0, vl);
            __riscv_vsse32_v_f32m4(at + 1, pair, r1, vl);
            p += (int)vl;
        }
    }
}

/* h = h * (1 / (1 + exp(-h))) * g, as the generic: the exps by libm (l2_exp_neg) a chunk
 * at a time, the rest by vector with the same operations (an exact division included). */
static void silu_mul(float *h, const float *g, int n) {
    enum { CHUNK = 64 };
    float e[CHUNK];
    for (int i = 0; i < n;) {
        size_t vl = __riscv_vsetvl_e32m8((size_t)(n - i < CHUNK ? n - i : CHUNK));
        l2_exp_neg(e, h + i, (int)vl);
        vfloat32m8_t r = __riscv_vfrdiv_vf_f32m8(
            __riscv_vfadd_vf_f32m8(__riscv_vle32_v_f32m8(e, vl), 1.0f, vl), 1.0f, vl);
        vfloat32m8_t v = __riscv_vfmul_vv_f32m8(__riscv_vle32_v_f32m8(h + i, vl), r, vl);
        __riscv_vse32_v_f32m8(h + i, __riscv_vfmul_vv_f32m8(v, __riscv_vle32_v_f32m8(g + i, vl), vl), vl);
        i += (int)vl;
    }
}

/* The largest of x[0..n) and `start`, NaNs passed over (vfmax), -0 below +0: element-wise
 * over whole vectors, then one reduction (an ordered-or-not FP reduction costs the C906
 * ~3 cycles per element, ten times an element-wise max). */
static float max_f32(const float *x, int n, float start) {
    size_t vlmax = __riscv_vsetvlmax_e32m8();
    vfloat32m1_t best = __riscv_vfmv_s_f_f32m1(start, 1);
    int i = 0;
    if ((size_t)n >= vlmax) {
        vfloat32m8_t m = __riscv_vle32_v_f32m8(x, vlmax);
        for (i = (int)vlmax; (size_t)(n - i) >= vlmax; i += (int)vlmax)
            m = __riscv_vfmax_vv_f32m8(m, __riscv_vle32_v_f32m8(x + i, vlmax), vlmax);
        best = __riscv_vfredmax_vs_f32m8_f32m1(m, best, vlmax);
    }
    if (i < n) {
        size_t vl = __riscv_vsetvl_e32m8((size_t)(n - i));
        best = __riscv_vfredmax_vs_f32m8_f32m1(__riscv_vle32_v_f32m8(x + i, vl), best, vl);
    }
    return __riscv_vfmv_f_s_f32m1_f32(best);
}

/* llama2.c's softmax, bitwise: its exps and their running sum stay in order (l2_exp_sum),
 * while the maximum (order does not matter) and the divisions (exact) go by vector. Where
 * the generic loop would keep -0 over a later +0, vfmax takes +0: x - max, and so every
 * result, is the same; a NaN anywhere makes the sum, and so every result, NaN in both. */
static void softmax(float *x, int n) {
    float max = max_f32(x, n, x[0]);
    float sum = l2_exp_sum(x, n, max);
    for (int i = 0; i < n;) {
        size_t vl = __riscv_vsetvl_e32m8((size_t)(n - i));
        __riscv_vse32_v_f32m8(x + i, __riscv_vfdiv_vf_f32m8(__riscv_vle32_v_f32m8(x + i, vl), sum, vl), vl);
        i += (int)vl;
    }
}

/* Two passes: the largest value (NaNs passed over), then the first index equal to it
 * (vmfeq: -0 == +0, as llama2.c's comparisons). */
static int argmax(const float *x, int n) {
    if (isnan(x[0])) return 0;  /* nothing compares greater than it */
    float max = max_f32(x, n, x[0]);
    for (int i = 0; i < n;) {
        size_t vl = __riscv_vsetvl_e32m8((size_t)(n - i));
        long first = __riscv_vfirst_m_b4(
            __riscv_vmfeq_vf_f32m8_b4(__riscv_vle32_v_f32m8(x + i, vl), max, vl), vl);
        if (first >= 0) return i + (int)first;
        i += (int)vl;
    }
    return 0;  /* not reached: max is one of the values */
}

/* The exponent bits by vector (GCC does not vectorise the generic loop for XTheadVector). */
static int all_finite(const float *x, int n) {
    for (int i = 0; i < n;) {
        size_t vl = __riscv_vsetvl_e32m8((size_t)(n - i));
        vuint32m8_t e = __riscv_vand_vx_u32m8(
            __riscv_vle32_v_u32m8((const uint32_t *)(const void *)(x + i), vl), 0x7f800000u, vl);
        if (__riscv_vcpop_m_b4(__riscv_vmseq_vx_u32m8_b4(e, 0x7f800000u, vl), vl)) return 0;
        i += (int)vl;
    }
    return 1;
}

/* f32 -> f16 for the KV cache: the conversion rounds to nearest even (the default rounding
 * mode) and gives NaNs as the canonical 0x7e00, as l2_f32_to_f16 does. */
static void to_f16(uint16_t *out, const float *x, int n) {
    for (int i = 0; i < n;) {
        size_t vl = __riscv_vsetvl_e32m8((size_t)(n - i));
        vfloat16m4_t h = __riscv_vfncvt_f_f_w_f16m4(__riscv_vle32_v_f32m8(x + i, vl), vl);
        __riscv_vse16_v_u16m4(out + i, __riscv_vreinterpret_v_f16m4_u16m4(h), vl);
        i += (int)vl;
    }
}

const l2_kernels l2_kernels_riscv_v = {
    .name = "rvv",
    .cpu_ok = NULL,  /* built only for targets that have the vector unit */
    .matvec_f32 = matvec_f32,
    .matvec_f16 = matvec_f16,
    .matvec_q8 = matvec_q8,
    .quantize_q8 = quantize_q8,
    .quantize_q8_two_part = quantize_q8_two_part,
    .matvec_q8_two_part = matvec_q8_two_part,
    .matvec_q10 = matvec_q10,
    .rmsnorm = rmsnorm,
    .softmax = softmax,
    .argmax = argmax,
    .all_finite = all_finite,
    .silu_mul = silu_mul,
    .rope = rope,
    .attn_scores_f32 = attn_scores_f32,
    .attn_scores_f16 = attn_scores_f16,
    .attn_mix_f32 = attn_mix_f32,
    .attn_mix_f16 = attn_mix_f16,
    .to_f16 = to_f16,
};
#endif
