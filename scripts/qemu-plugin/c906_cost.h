/* c906_cost.h: decoding RISC-V vector instructions and the T-Head C906 (Milk-V Duo) cycle
 * model, shared by insn_mix.c (a QEMU 7.2 plugin: RVV 1.0 code) and tb_log_mix.c (QEMU 5.2's
 * execution log: the c906 build's own RVV 0.7.1 code). The two encodings differ in vtype's
 * layout, in the load/store fields and in a few funct6 values; `spec` says which one a word is.
 *
 * Cost model (target-duo.md; numbers measured on the C906 by rvv-bench, "assumed" where
 * nothing was measured). G = register group size touched, in registers (fractional = 1):
 *  - scalar instructions: 1 cycle each (single-issue in-order core; load-use, multiply,
 *    divide and FP latencies are ignored, so scalar code is an optimistic estimate);
 *  - vsetvli / vsetivli / vsetvl: counted as vector instructions, 1 cycle each (assumed);
 *  - most vector ops: 4 / 8 / 16 cycles at G <= 2 / 4 / 8 ("regardless of vl"), generally
 *    max(4, 2 * G); G = LMUL, or 2 * LMUL for widening ops (vw*, vfw*, vfwcvt) and
 *    narrowing ops (vn*, vfncvt), whose wide operand is the 2 * LMUL group;
 *  - FP multiply and multiply-add (vfmul, vf[n]macc/msac/madd/msub, vfwmul, vfwmacc...):
 *    5 / 10 / 20 (measured vfmul e32 m1 = 5, scaled like the rest: assumed);
 *  - mask-register logic, vmv.x.s / vmv.s.x / vfmv.f.s / vfmv.s.f, vcpop, vfirst: 4;
 *    whole-register moves vmv<n>r.v: by n registers;
 *  - integer reductions (vredsum..vredmax, vwredsum[u]): 5 / 5 / 9 at LMUL <= 1 / 2 / 4
 *    (measured vwredsum e8), 17 at m8 (extrapolated: +8 per doubling), i.e. max(5, 2G + 1);
 *  - FP reductions (all of vfred*, vfwred*): 3 cycles per element - 1, elements =
 *    VLEN / SEW * LMUL (at least 1), which fits both measured points exactly: vfredosum e32
 *    m1 (4 elements) 11, m8 (32 elements) 95; so m2 23, m4 47. Unordered, min/max and
 *    widening FP reductions are assumed to cost the same as ordered ones (not measured);
 *  - vector loads/stores: the 4/8/16 rule by data EMUL (= EEW / SEW * LMUL for unit-stride
 *    and strided, LMUL for indexed; times nf for segment accesses; nf registers for
 *    whole-register accesses, 1 for vlm/vsm). Not measured on the C906 (assumed, as in
 *    target-duo.md); strided and indexed accesses are probably slower in reality;
 *  - vector divide / sqrt and the like are not singled out (rare in inference).
 * Cycle estimate = scalar cycles + vector cycles: no overlap between the two is assumed.
 *
 * For RVV 0.7.1 the same costs apply to the same operations (0.7.1 loads always fill
 * SEW-wide elements, so their register group is LMUL; vsetivli and fractional LMUL do not
 * exist there).
 */
#ifndef C906_COST_H
#define C906_COST_H
#include <inttypes.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

enum spec { SPEC_V1, SPEC_V071 };
enum { CAT_MEM, CAT_ALU, CAT_RED, N_CAT };
static const char *const cat_name[N_CAT] = {"mem", "alu", "red"};
enum { N_VTYPE = 32 };        /* index = vlmul (3 bits, 1.0's encoding) | (vsew & 3) << 3 */
enum { VTYPE_UNKNOWN = -1 };
enum { K_SCALAR, K_VSET, K_VEC };

static int classify(uint32_t w, size_t size) {
    if (size != 4) return K_SCALAR;
    uint32_t op = w & 0x7f, f3 = (w >> 12) & 7;
    if (op == 0x57) return f3 == 7 ? K_VSET : K_VEC;
    if (op == 0x07 || op == 0x27) return (f3 == 0 || f3 >= 5) ? K_VEC : K_SCALAR;
    return K_SCALAR;
}

/* vtype index set by a vsetvli (or 1.0's vsetivli), or VTYPE_UNKNOWN for vsetvl. */
static int vset_vtype(uint32_t w, enum spec spec) {
    uint32_t zimm;
    if (!(w >> 31)) zimm = (w >> 20) & 0x7ff;                           /* vsetvli */
    else if (spec == SPEC_V1 && (w >> 30) == 3) zimm = (w >> 20) & 0x3ff; /* vsetivli */
    else return VTYPE_UNKNOWN;                                          /* vsetvl */
    if (spec == SPEC_V071)  /* vlmul in bits 1:0 (m1..m8), vsew in bits 4:2 */
        return (int)((zimm & 3) | ((zimm >> 2) & 3) << 3);
    return (int)((zimm & 7) | ((zimm >> 3) & 3) << 3);
}

/* LMUL in eighths of a register; the reserved encoding 4 is taken as m1. */
static unsigned lmul8_of(int vt) {
    static const unsigned t[8] = {8, 16, 32, 64, 8, 1, 2, 4};
    return t[vt & 7];
}
static unsigned sew_of(int vt) { return 8u << ((vt >> 3) & 3); }

/* The 4 / 8 / 16 rule for a group of g8 eighths of registers: max(4, 2 * registers). */
static uint32_t group_cost(uint64_t g8) {
    uint64_t regs = (g8 + 7) / 8;
    return regs <= 2 ? 4 : (uint32_t)(2 * regs);
}
static uint32_t fmul_cost(uint64_t g8) { return group_cost(g8) * 5 / 4; }
static uint32_t ired_cost(uint64_t g8) {
    uint64_t regs = (g8 + 7) / 8;
    return regs <= 2 ? 5 : (uint32_t)(2 * regs + 1);
}
static uint32_t fred_cost(unsigned lmul8, unsigned sew, unsigned vlen) {
    uint64_t n = (uint64_t)vlen * lmul8 / 8 / sew;
    if (n < 1) n = 1;
    return (uint32_t)(3 * n - 1);
}

/* Cycles of one vector instruction (not vset*) under vtype vt at VLEN vlen; *cat gets its
 * category. */
static uint32_t vec_cost(uint32_t w, int vt, enum spec spec, unsigned vlen, int *cat) {
    uint32_t op = w & 0x7f, f3 = (w >> 12) & 7, f6 = w >> 26, vs1 = (w >> 15) & 0x1f;
    unsigned l8 = lmul8_of(vt), sew = sew_of(vt);

    if (op == 0x07 || op == 0x27) {
        static const unsigned eew_of_width[8] = {8, 0, 0, 0, 0, 16, 32, 64};
        unsigned mop = (w >> 26) & 3, nf = ((w >> 29) & 7) + 1, eew = eew_of_width[f3];
        unsigned umop = (w >> 20) & 0x1f;                      /* lumop / sumop (rs2 field) */
        uint64_t g8;
        *cat = CAT_MEM;
        if (spec == SPEC_V071) return group_cost((uint64_t)l8 * nf); /* SEW-wide elements */
        if (mop == 0 && umop == 8) g8 = 8u * nf;               /* whole registers */
        else if (mop == 0 && umop == 0xb) g8 = 8;              /* vlm / vsm */
        else if (mop == 1 || mop == 3) g8 = (uint64_t)l8 * nf; /* indexed: data EMUL = LMUL */
        else g8 = (uint64_t)l8 * eew / sew * nf;               /* unit-stride, strided */
        return group_cost(g8);
    }

    *cat = CAT_ALU;
    switch (f3) {
    case 0: case 3: case 4:                                    /* OPIVV, OPIVI, OPIVX */
        if (f6 >= 0x2c && f6 <= 0x2f) return group_cost(2u * l8);  /* vnsrl..vnclip */
        if (f3 == 0 && (f6 == 0x30 || f6 == 0x31)) {                /* vwredsum[u] */
            *cat = CAT_RED;
            return ired_cost(l8);
        }
        if (f3 == 3 && f6 == 0x27) return group_cost(8u * (vs1 + 1)); /* vmv<n>r.v */
        return group_cost(l8);
    case 2: case 6:                                            /* OPMVV, OPMVX */
        if (f3 == 2 && f6 <= 0x07) {                           /* vredsum..vredmax */
            *cat = CAT_RED;
            return ired_cost(l8);
        }
        if (f6 >= 0x18 && f6 <= 0x1f) return 4;                /* mask logic */
        if (spec == SPEC_V1 && f6 == 0x10) return 4;          /* vmv.x.s, vcpop, vfirst, vmv.s.x */
        if (spec == SPEC_V071 && (f6 == 0x0c || f6 == 0x0d || f6 == 0x14 || f6 == 0x15))
            return 4;                                          /* vext.x.v, vmv.s.x, vmpopc, vmfirst */
        if (f6 >= 0x30) return group_cost(2u * l8);            /* vw* */
        return group_cost(l8);
    case 1: case 5:                                            /* OPFVV, OPFVF */
        if (f3 == 1 && (f6 == 0x01 || f6 == 0x03 || f6 == 0x05 || f6 == 0x07 || f6 == 0x31 ||
                        f6 == 0x33)) {                         /* vfred*, vfwred* */
            *cat = CAT_RED;
            return fred_cost(l8, sew, vlen);
        }
        if (f6 == (spec == SPEC_V1 ? 0x10u : 0x0cu) || (spec == SPEC_V071 && f6 == 0x0d))
            return 4;                                          /* vfmv.f.s, vfmv.s.f */
        if (f3 == 1 && f6 == (spec == SPEC_V1 ? 0x12u : 0x22u) && vs1 >= 0x08 && vs1 <= 0x17)
            return group_cost(2u * l8);                        /* vfwcvt, vfncvt */
        if (f6 == 0x24 || (f6 >= 0x28 && f6 <= 0x2f)) return fmul_cost(l8); /* vfmul, FMA */
        if (f6 == 0x38 || f6 >= 0x3c) return fmul_cost(2u * l8); /* vfwmul, vfwmacc.. */
        if (f6 >= 0x30) return group_cost(2u * l8);            /* vfwadd, vfwsub.. */
        return group_cost(l8);
    default:
        return group_cost(l8);
    }
}

/* What both tools count, and how they report it ("key value" lines). */
typedef struct {
    uint64_t scalar_insns, vset_insns, vec_insns[N_CAT], vec_cycles[N_CAT];
} mix_counts;

static void print_mix(FILE *f, const mix_counts *m) {
    uint64_t vi = m->vset_insns, vc = m->vset_insns;  /* vset*: 1 cycle each */
    for (int k = 0; k < N_CAT; k++) {
        vi += m->vec_insns[k];
        vc += m->vec_cycles[k];
    }
    fprintf(f, "total_insns %" PRIu64 "\n", m->scalar_insns + vi);
    fprintf(f, "scalar_insns %" PRIu64 "\n", m->scalar_insns);
    fprintf(f, "vector_insns %" PRIu64 "\n", vi);
    fprintf(f, "vset_insns %" PRIu64 "\n", m->vset_insns);
    for (int k = 0; k < N_CAT; k++) {
        fprintf(f, "vector_%s_insns %" PRIu64 "\n", cat_name[k], m->vec_insns[k]);
        fprintf(f, "vector_%s_cycles %" PRIu64 "\n", cat_name[k], m->vec_cycles[k]);
    }
    fprintf(f, "vector_cycles %" PRIu64 "\n", vc);
    fprintf(f, "scalar_cycles %" PRIu64 "\n", m->scalar_insns);
    fprintf(f, "est_total_cycles %" PRIu64 "\n", m->scalar_insns + vc);
}

#endif
