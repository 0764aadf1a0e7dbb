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
 * The cost model: c906_cost.h.
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

#include "c906_cost.h"
#include "fn_ranges.h"

QEMU_PLUGIN_EXPORT int qemu_plugin_version = QEMU_PLUGIN_VERSION;

enum { MAX_VCPUS = 1024 };

static mix_counts mix;
static uint8_t cur_vtype[MAX_VCPUS];  /* 0 = e8 m1 */
static unsigned vlen = 128;           /* the C906's; only FP reduction costs depend on it */
static char *out_path;

/* Per-TB data for the exec callback. */
typedef struct {
    int has_table;
    fn_range *fn;                  /* NULL when not profiling or outside every function */
    int exit_vtype;                /* VTYPE_UNKNOWN: the TB does not change vtype */
    uint32_t table[N_VTYPE][N_CAT]; /* cycles of the TB's prefix under each entry vtype */
} tb_info;

/* ------------------------------------------------------------------------- callbacks */

static void tb_exec(unsigned int vcpu, void *udata) {
    tb_info *t = udata;
    unsigned i = vcpu % MAX_VCPUS;
    if (t->has_table) {
        const uint32_t *c = t->table[cur_vtype[i]];
        for (int k = 0; k < N_CAT; k++) {
            mix.vec_cycles[k] += c[k];
            if (t->fn) t->fn->cycles += c[k];
        }
    }
    if (t->exit_vtype != VTYPE_UNKNOWN) cur_vtype[i] = (uint8_t)t->exit_vtype;
}

static void add_inline(struct qemu_plugin_tb *tb, uint64_t *counter, uint64_t n) {
    if (n) qemu_plugin_register_vcpu_tb_exec_inline(tb, QEMU_PLUGIN_INLINE_ADD_U64, counter, n);
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
            int nv = vset_vtype(w, SPEC_V1);
            if (nv != VTYPE_UNKNOWN) vt = last_set = nv;
            break;
        }
        default: {
            int cat = CAT_ALU;
            if (vt != VTYPE_UNKNOWN) {
                uint32_t c = vec_cost(w, vt, SPEC_V1, vlen, &cat);
                cyc[cat] += c;
            } else {
                if (!t) t = calloc(1, sizeof *t);
                if (!t) abort();
                t->has_table = 1;
                for (int v = 0; v < N_VTYPE; v++) {
                    uint32_t c = vec_cost(w, v, SPEC_V1, vlen, &cat);
                    t->table[v][cat] += c;
                }
            }
            n_vec[cat]++;
        }
        }
    }

    add_inline(tb, &mix.scalar_insns, n_scalar);
    add_inline(tb, &mix.vset_insns, n_vset);
    uint64_t fn_vec = n_vset, fn_cyc = n_scalar + n_vset;
    for (int k = 0; k < N_CAT; k++) {
        add_inline(tb, &mix.vec_insns[k], n_vec[k]);
        add_inline(tb, &mix.vec_cycles[k], cyc[k]);
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
    print_mix(f, &mix);
    print_fns(f);
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
            if (load_syms(argv[i] + 5, "insn_mix")) return -1;
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
