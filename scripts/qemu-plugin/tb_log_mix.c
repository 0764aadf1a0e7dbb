/* tb_log_mix: the instruction mix and estimated T-Head C906 cycles of a RISC-V program run under
 * QEMU 5.2, the only QEMU that executes the C906's RVV 0.7.1, and one without plugin support.
 * Instead it reads QEMU's own execution log:
 *
 *   qemu-riscv64-static -cpu rv64,x-v=true,vlen=128,elen=64,vext_spec=v0.7.1 \
 *       -d in_asm,exec,nochain -D LOG PROG ARGS...
 *   tb_log_mix [spec=v0.7.1|v1.0] [vlen=128] [syms=FILE] [out=PATH] < LOG
 *
 * `in_asm` prints each translated block once, with the address and encoding of every
 * instruction; `exec` prints one "Trace" line per block execution, in order, and `nochain`
 * makes QEMU return to its main loop after every block, so that none goes unlogged. Replaying
 * the executions in order gives exact instruction counts, and vtype follows the program's own
 * vsetvli sequence (vsetvl, whose vtype is in a register, keeps the last known one). As in
 * insn_mix.c, a block is counted whole each time it starts.
 *
 * Output: the same "key value" lines as insn_mix.c (cost model: c906_cost.h), plus
 * unlogged_execs (executions of blocks whose instructions the log did not show; 0 expected).
 * A log is large (about 60 bytes per block execution): pipe it through a FIFO.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "c906_cost.h"
#include "fn_ranges.h"

typedef struct {
    uint64_t pc;                /* 0: empty slot */
    uint32_t *words;            /* instruction encodings; sizes in `sizes` */
    uint8_t *sizes;
    size_t n;
    fn_range *fn;
    uint64_t n_scalar, n_vset, n_vec[N_CAT];
    uint32_t seen;              /* bit v: the costs for entry vtype v are computed */
    int exit_vt[N_VTYPE];
    uint32_t cycles[N_VTYPE][N_CAT];
} block;

static block *table;
static size_t cap, used;
static enum spec spec = SPEC_V071;
static unsigned vlen = 128;

static void *xrealloc(void *p, size_t n) {
    p = realloc(p, n);
    if (!p) {
        fprintf(stderr, "tb_log_mix: out of memory\n");
        exit(1);
    }
    return p;
}

static block *slot(uint64_t pc) {
    size_t i = (size_t)(pc * 0x9e3779b97f4a7c15ull >> 20) & (cap - 1);
    while (table[i].pc && table[i].pc != pc) i = (i + 1) & (cap - 1);
    return &table[i];
}

static block *lookup(uint64_t pc) {
    block *b = slot(pc);
    return b->pc ? b : NULL;
}

/* Stores a translated block (a retranslation at the same address replaces the old one). */
static void store(uint64_t pc, uint32_t *words, uint8_t *sizes, size_t n) {
    if (2 * (used + 1) > cap) {
        block *old = table;
        size_t old_cap = cap;
        cap = cap ? 2 * cap : 1 << 16;
        table = calloc(cap, sizeof *table);
        if (!table) xrealloc(NULL, SIZE_MAX);
        for (size_t i = 0; i < old_cap; i++)
            if (old[i].pc) *slot(old[i].pc) = old[i];
        free(old);
    }
    block *b = slot(pc);
    if (b->pc) {
        free(b->words);
        free(b->sizes);
    } else {
        used++;
    }
    *b = (block){.pc = pc, .words = words, .sizes = sizes, .n = n,
                 .fn = n_fns ? fn_at(pc) : NULL};
    for (size_t i = 0; i < n; i++) {
        switch (classify(words[i], sizes[i])) {
        case K_SCALAR: b->n_scalar++; break;
        case K_VSET: b->n_vset++; break;
        default: {
            int cat;
            vec_cost(words[i], 0, spec, vlen, &cat);
            b->n_vec[cat]++;
        }
        }
    }
}

/* The block's vector cycles when entered with vtype vt, and the vtype it leaves. */
static void costs(block *b, int vt) {
    int cur = vt;
    memset(b->cycles[vt], 0, sizeof b->cycles[vt]);
    for (size_t i = 0; i < b->n; i++) {
        uint32_t w = b->words[i];
        int k = classify(w, b->sizes[i]), cat;
        if (k == K_VSET) {
            int nv = vset_vtype(w, spec);
            if (nv != VTYPE_UNKNOWN) cur = nv;
        } else if (k == K_VEC) {
            uint32_t c = vec_cost(w, cur, spec, vlen, &cat);
            b->cycles[vt][cat] += c;
        }
    }
    b->exit_vt[vt] = cur;
    b->seen |= 1u << vt;
}

int main(int argc, char **argv) {
    const char *out_path = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "spec=v0.7.1")) spec = SPEC_V071;
        else if (!strcmp(argv[i], "spec=v1.0")) spec = SPEC_V1;
        else if (!strncmp(argv[i], "vlen=", 5)) vlen = (unsigned)strtoul(argv[i] + 5, NULL, 10);
        else if (!strncmp(argv[i], "syms=", 5)) {
            if (load_syms(argv[i] + 5, "tb_log_mix")) return 1;
        } else if (!strncmp(argv[i], "out=", 4)) out_path = argv[i] + 4;
        else {
            fprintf(stderr, "tb_log_mix: unknown argument '%s' (spec=v0.7.1|v1.0, vlen=N, "
                            "syms=FILE, out=PATH)\n", argv[i]);
            return 2;
        }
    }
    if (vlen < 32 || (vlen & (vlen - 1))) {
        fprintf(stderr, "tb_log_mix: vlen must be a power of two >= 32\n");
        return 2;
    }
    store(1, NULL, NULL, 0);  /* allocates the table; pc 1 is never a block */

    mix_counts mix = {0};
    uint64_t unlogged = 0;
    int vt = 0;  /* e8 m1 at start, as insn_mix.c */
    uint32_t *words = NULL;
    uint8_t *sizes = NULL;
    size_t n = 0, n_cap = 0;
    uint64_t pending_pc = 0;
    int in_block = 0;
    char line[4096];
    while (fgets(line, sizeof line, stdin)) {
        uint64_t pc;
        unsigned long w;
        char hex[32];
        if (in_block && sscanf(line, "0x%" SCNx64 ": %31s", &pc, hex) == 2) {
            size_t len = strlen(hex);
            if ((len == 4 || len == 8) && sscanf(hex, "%lx", &w) == 1) {
                if (!n) pending_pc = pc;
                if (n == n_cap) {
                    n_cap = n_cap ? 2 * n_cap : 64;
                    words = xrealloc(words, n_cap * sizeof *words);
                    sizes = xrealloc(sizes, n_cap);
                }
                words[n] = (uint32_t)w;
                sizes[n++] = (uint8_t)(len / 2);
                continue;
            }
        }
        if (in_block) {  /* the block's listing ended */
            if (n) {
                store(pending_pc, words, sizes, n);
                words = NULL;
                sizes = NULL;
                n = n_cap = 0;
            }
            in_block = 0;
        }
        if (!strncmp(line, "IN:", 3)) {
            in_block = 1;
        } else if (!strncmp(line, "Trace ", 6)) {
            char *p = strchr(line, '/');
            if (!p || sscanf(p + 1, "%" SCNx64, &pc) != 1) continue;
            block *b = lookup(pc);
            if (!b) {
                unlogged++;
                continue;
            }
            if (!(b->seen >> vt & 1)) costs(b, vt);
            uint64_t cyc = b->n_scalar + b->n_vset;  /* 1 cycle each */
            mix.scalar_insns += b->n_scalar;
            mix.vset_insns += b->n_vset;
            for (int k = 0; k < N_CAT; k++) {
                mix.vec_insns[k] += b->n_vec[k];
                mix.vec_cycles[k] += b->cycles[vt][k];
                cyc += b->cycles[vt][k];
            }
            if (b->fn) {
                b->fn->scalar += b->n_scalar;
                b->fn->vector += b->n_vset + b->n_vec[0] + b->n_vec[1] + b->n_vec[2];
                b->fn->cycles += cyc;
            }
            vt = b->exit_vt[vt];
        }
    }

    FILE *f = out_path ? fopen(out_path, "w") : stdout;
    if (!f) {
        fprintf(stderr, "tb_log_mix: cannot write %s\n", out_path);
        return 1;
    }
    print_mix(f, &mix);
    fprintf(f, "unlogged_execs %" PRIu64 "\n", unlogged);
    print_fns(f);
    if (f != stdout) fclose(f);
    return 0;
}
