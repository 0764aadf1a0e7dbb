/* insn_mix: a QEMU TCG plugin (API version 1, QEMU 7.2) that counts a RISC-V guest's
 * instructions, scalar vs vector, and estimates the cycles a T-Head C906 (Milk-V Duo) would
 * spend on them. Built by scripts/qemu-plugin/build; used by scripts/bench-riscv.
 *
 *   qemu-riscv64 -cpu rv64,v=true,vlen=128 -plugin libinsn_mix.so[,out=PATH][,vlen=128] PROG
 *
 * At exit it writes "key value" lines to PATH (default stderr): total_insns, scalar_insns,
 * vector_insns (including vset*), vset_insns, vector_{mem,alu,red}_{insns,cycles},
 * vector_cycles, scalar_cycles, est_total_cycles. With syms=FILE (lines "START END NAME",
 * hex addresses of the guest's functions, e.g. from nm -S of a static binary) it also writes
 * "fn NAME SCALAR_INSNS VECTOR_INSNS EST_CYCLES" per function that ran, attributing each
 * translation block to the function its first instruction lies in.
 *
 * The guest code is RVV 1.0 (QEMU 7.2 has no XTheadVector); the rv64gcv build stands in for
 * the c906 build, which uses the same intrinsics.
 *
 * Cost model (docs/target-duo.md; numbers measured on the C906 by rvv-bench, "assumed" where
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
 * vtype is tracked per vCPU from vsetvli/vsetivli immediates. vsetvl (register operand) is
 * not decoded (this API version cannot read registers): the last known vtype stays. At the
 * start of execution vtype is taken as e8 m1.
 *
 * Speed: all counts and the costs of vector instructions whose vtype is known at translation
 * time (a vsetvli earlier in the same TB) are inline adds per TB. Only TBs with vector
 * instructions before their first vsetvli, or with a vsetvli, get one callback per
 * execution (it adds a precomputed per-vtype cost and records the TB's last vtype). The
 * whole TB is assumed to execute (as QEMU's own insn counting plugins do). Counters are
 * shared by all vCPUs without atomics: exact for single-threaded guests like l2run.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <qemu-plugin.h>

QEMU_PLUGIN_EXPORT int qemu_plugin_version = QEMU_PLUGIN_VERSION;

enum { CAT_MEM, CAT_ALU, CAT_RED, N_CAT };
static const char *const cat_name[N_CAT] = {"mem", "alu", "red"};
enum { N_VTYPE = 32 };        /* index = vlmul (3 bits) | (vsew & 3) << 3 */
enum { MAX_VCPUS = 1024 };
enum { VTYPE_UNKNOWN = -1 };

static uint64_t scalar_insns, vset_insns;
static uint64_t vec_insns[N_CAT], vec_cycles[N_CAT];
static uint8_t cur_vtype[MAX_VCPUS];  /* 0 = e8 m1 */
static unsigned vlen = 128;           /* the C906's; only FP reduction costs depend on it */
static char *out_path;

/* Optional per-function profile (syms=FILE). */
typedef struct {
    uint64_t start, end;
    char *name;
    uint64_t scalar, vector, cycles;
} fn_range;
static fn_range *fns;
static size_t n_fns;

/* Per-TB data for the exec callback. */
typedef struct {
    int has_table;
    fn_range *fn;                  /* NULL when not profiling or outside every function */
    int exit_vtype;                /* VTYPE_UNKNOWN: the TB does not change vtype */
    uint32_t table[N_VTYPE][N_CAT]; /* cycles of the TB's prefix under each entry vtype */
} tb_info;

/* ------------------------------------------------------------------------- decoding */

enum { K_SCALAR, K_VSET, K_VEC };

static int classify(uint32_t w, size_t size) {
    if (size != 4) return K_SCALAR;
    uint32_t op = w & 0x7f, f3 = (w >> 12) & 7;
    if (op == 0x57) return f3 == 7 ? K_VSET : K_VEC;
    if (op == 0x07 || op == 0x27) return (f3 == 0 || f3 >= 5) ? K_VEC : K_SCALAR;
    return K_SCALAR;
}

/* vtype index set by a vsetvli/vsetivli, or VTYPE_UNKNOWN for vsetvl. */
static int vset_vtype(uint32_t w) {
    uint32_t zimm;
    if (!(w >> 31)) zimm = (w >> 20) & 0x7ff;              /* vsetvli */
    else if ((w >> 30) == 3) zimm = (w >> 20) & 0x3ff;     /* vsetivli */
    else return VTYPE_UNKNOWN;                             /* vsetvl rd, rs1, rs2 */
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
static uint32_t fred_cost(unsigned lmul8, unsigned sew) {
    uint64_t n = (uint64_t)vlen * lmul8 / 8 / sew;
    if (n < 1) n = 1;
    return (uint32_t)(3 * n - 1);
}

/* Cycles of one vector instruction (not vset*) under vtype vt; *cat gets its category. */
static uint32_t vec_cost(uint32_t w, int vt, int *cat) {
    uint32_t op = w & 0x7f, f3 = (w >> 12) & 7, f6 = w >> 26, vs1 = (w >> 15) & 0x1f;
    unsigned l8 = lmul8_of(vt), sew = sew_of(vt);

    if (op == 0x07 || op == 0x27) {
        static const unsigned eew_of_width[8] = {8, 0, 0, 0, 0, 16, 32, 64};
        unsigned mop = (w >> 26) & 3, nf = ((w >> 29) & 7) + 1, eew = eew_of_width[f3];
        unsigned umop = (w >> 20) & 0x1f;                      /* lumop / sumop (rs2 field) */
        uint64_t g8;
        *cat = CAT_MEM;
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
        if (f6 == 0x10) return 4;                              /* vmv.x.s, vcpop, vfirst, vmv.s.x */
        if (f6 >= 0x30) return group_cost(2u * l8);            /* vw* */
        return group_cost(l8);
    case 1: case 5:                                            /* OPFVV, OPFVF */
        if (f3 == 1 && (f6 == 0x01 || f6 == 0x03 || f6 == 0x05 || f6 == 0x07 || f6 == 0x31 ||
                        f6 == 0x33)) {                         /* vfred*, vfwred* */
            *cat = CAT_RED;
            return fred_cost(l8, sew);
        }
        if (f6 == 0x10) return 4;                              /* vfmv.f.s, vfmv.s.f */
        if (f3 == 1 && f6 == 0x12 && vs1 >= 0x08 && vs1 <= 0x17)
            return group_cost(2u * l8);                        /* vfwcvt, vfncvt */
        if (f6 == 0x24 || (f6 >= 0x28 && f6 <= 0x2f)) return fmul_cost(l8); /* vfmul, FMA */
        if (f6 == 0x38 || f6 >= 0x3c) return fmul_cost(2u * l8); /* vfwmul, vfwmacc.. */
        if (f6 >= 0x30) return group_cost(2u * l8);            /* vfwadd, vfwsub.. */
        return group_cost(l8);
    default:
        return group_cost(l8);
    }
}

/* ------------------------------------------------------------------------- callbacks */

static void tb_exec(unsigned int vcpu, void *udata) {
    tb_info *t = udata;
    unsigned i = vcpu % MAX_VCPUS;
    if (t->has_table) {
        const uint32_t *c = t->table[cur_vtype[i]];
        for (int k = 0; k < N_CAT; k++) {
            vec_cycles[k] += c[k];
            if (t->fn) t->fn->cycles += c[k];
        }
    }
    if (t->exit_vtype != VTYPE_UNKNOWN) cur_vtype[i] = (uint8_t)t->exit_vtype;
}

static void add_inline(struct qemu_plugin_tb *tb, uint64_t *counter, uint64_t n) {
    if (n) qemu_plugin_register_vcpu_tb_exec_inline(tb, QEMU_PLUGIN_INLINE_ADD_U64, counter, n);
}

/* The function holding vaddr (fns is sorted by start), or NULL. */
static fn_range *fn_at(uint64_t vaddr) {
    size_t lo = 0, hi = n_fns;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (fns[mid].start <= vaddr) lo = mid + 1;
        else hi = mid;
    }
    return lo > 0 && vaddr < fns[lo - 1].end ? &fns[lo - 1] : NULL;
}

static int by_start(const void *a, const void *b) {
    const fn_range *x = a, *y = b;
    return x->start < y->start ? -1 : x->start > y->start;
}

static int load_syms(const char *path) {
    FILE *f = fopen(path, "r");
    if (!f) {
        fprintf(stderr, "insn_mix: cannot read %s\n", path);
        return -1;
    }
    char line[512], name[400];
    uint64_t start, end;
    size_t cap = 0;
    while (fgets(line, sizeof line, f)) {
        if (sscanf(line, "%" SCNx64 " %" SCNx64 " %399s", &start, &end, name) != 3 || end <= start)
            continue;
        if (n_fns == cap) {
            cap = cap ? 2 * cap : 1024;
            fns = realloc(fns, cap * sizeof *fns);
            if (!fns) abort();
        }
        fns[n_fns++] = (fn_range){.start = start, .end = end, .name = strdup(name)};
    }
    fclose(f);
    qsort(fns, n_fns, sizeof *fns, by_start);
    return 0;
}

static void tb_trans(qemu_plugin_id_t id, struct qemu_plugin_tb *tb) {
    (void)id;
    size_t n = qemu_plugin_tb_n_insns(tb);
    uint64_t n_scalar = 0, n_vset = 0, n_vec[N_CAT] = {0}, cyc[N_CAT] = {0};
    int vt = VTYPE_UNKNOWN;  /* vtype known at translation time (after a vsetvli) */
    int last_set = VTYPE_UNKNOWN;
    tb_info *t = NULL;

    for (size_t i = 0; i < n; i++) {
        struct qemu_plugin_insn *insn = qemu_plugin_tb_get_insn(tb, i);
        size_t size = qemu_plugin_insn_size(insn);
        uint32_t w = 0;
        memcpy(&w, qemu_plugin_insn_data(insn), size < 4 ? size : 4);
        switch (classify(w, size)) {
        case K_SCALAR:
            n_scalar++;
            break;
        case K_VSET: {
            n_vset++;
            int nv = vset_vtype(w);
            if (nv != VTYPE_UNKNOWN) vt = last_set = nv;
            break;
        }
        default: {
            int cat = CAT_ALU;
            if (vt != VTYPE_UNKNOWN) {
                uint32_t c = vec_cost(w, vt, &cat);
                cyc[cat] += c;
            } else {
                if (!t) t = calloc(1, sizeof *t);
                if (!t) abort();
                t->has_table = 1;
                for (int v = 0; v < N_VTYPE; v++) {
                    uint32_t c = vec_cost(w, v, &cat);
                    t->table[v][cat] += c;
                }
            }
            n_vec[cat]++;
        }
        }
    }

    add_inline(tb, &scalar_insns, n_scalar);
    add_inline(tb, &vset_insns, n_vset);
    uint64_t fn_vec = n_vset, fn_cyc = n_scalar + n_vset;
    for (int k = 0; k < N_CAT; k++) {
        add_inline(tb, &vec_insns[k], n_vec[k]);
        add_inline(tb, &vec_cycles[k], cyc[k]);
        fn_vec += n_vec[k];
        fn_cyc += cyc[k];
    }
    fn_range *fn = n_fns ? fn_at(qemu_plugin_tb_vaddr(tb)) : NULL;
    if (fn) {
        add_inline(tb, &fn->scalar, n_scalar);
        add_inline(tb, &fn->vector, fn_vec);
        add_inline(tb, &fn->cycles, fn_cyc);
    }
    if (last_set != VTYPE_UNKNOWN) {
        if (!t) t = calloc(1, sizeof *t);
        if (!t) abort();
    }
    if (t) {
        t->fn = fn;
        t->exit_vtype = last_set;
        qemu_plugin_register_vcpu_tb_exec_cb(tb, tb_exec, QEMU_PLUGIN_CB_NO_REGS, t);
    }
}

static void at_exit(qemu_plugin_id_t id, void *udata) {
    (void)id;
    (void)udata;
    FILE *f = out_path ? fopen(out_path, "w") : stderr;
    if (!f) {
        fprintf(stderr, "insn_mix: cannot write %s\n", out_path);
        f = stderr;
    }
    uint64_t vi = vset_insns, vc = vset_insns;  /* vset*: 1 cycle each */
    for (int k = 0; k < N_CAT; k++) {
        vi += vec_insns[k];
        vc += vec_cycles[k];
    }
    fprintf(f, "total_insns %" PRIu64 "\n", scalar_insns + vi);
    fprintf(f, "scalar_insns %" PRIu64 "\n", scalar_insns);
    fprintf(f, "vector_insns %" PRIu64 "\n", vi);
    fprintf(f, "vset_insns %" PRIu64 "\n", vset_insns);
    for (int k = 0; k < N_CAT; k++) {
        fprintf(f, "vector_%s_insns %" PRIu64 "\n", cat_name[k], vec_insns[k]);
        fprintf(f, "vector_%s_cycles %" PRIu64 "\n", cat_name[k], vec_cycles[k]);
    }
    fprintf(f, "vector_cycles %" PRIu64 "\n", vc);
    fprintf(f, "scalar_cycles %" PRIu64 "\n", scalar_insns);
    fprintf(f, "est_total_cycles %" PRIu64 "\n", scalar_insns + vc);
    for (size_t i = 0; i < n_fns; i++)
        if (fns[i].scalar + fns[i].vector)
            fprintf(f, "fn %s %" PRIu64 " %" PRIu64 " %" PRIu64 "\n", fns[i].name, fns[i].scalar,
                    fns[i].vector, fns[i].cycles);
    if (f != stderr) fclose(f);
}

QEMU_PLUGIN_EXPORT int qemu_plugin_install(qemu_plugin_id_t id, const qemu_info_t *info,
                                           int argc, char **argv) {
    (void)info;
    for (int i = 0; i < argc; i++) {
        if (!strncmp(argv[i], "out=", 4)) {
            out_path = strdup(argv[i] + 4);
        } else if (!strncmp(argv[i], "vlen=", 5)) {
            vlen = (unsigned)strtoul(argv[i] + 5, NULL, 10);
            if (vlen < 32 || (vlen & (vlen - 1))) {
                fprintf(stderr, "insn_mix: vlen must be a power of two >= 32\n");
                return -1;
            }
        } else if (!strncmp(argv[i], "syms=", 5)) {
            if (load_syms(argv[i] + 5)) return -1;
        } else {
            fprintf(stderr, "insn_mix: unknown argument '%s' (out=PATH, vlen=N, syms=FILE)\n",
                    argv[i]);
            return -1;
        }
    }
    qemu_plugin_register_vcpu_tb_trans_cb(id, tb_trans);
    qemu_plugin_register_atexit_cb(id, at_exit, NULL);
    return 0;
}
