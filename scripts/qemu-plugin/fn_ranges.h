/* fn_ranges.h: a static binary's functions ("START END NAME" lines, hex addresses, e.g. from
 * nm -S), to attribute counts to the function a translated block starts in. Shared by
 * insn_mix.c and tb_log_mix.c. */
#ifndef FN_RANGES_H
#define FN_RANGES_H
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    uint64_t start, end;
    char *name;
    uint64_t scalar, vector, cycles;
} fn_range;
static fn_range *fns;  /* sorted by start */
static size_t n_fns;

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

static int load_syms(const char *path, const char *who) {
    FILE *f = fopen(path, "r");
    if (!f) {
        fprintf(stderr, "%s: cannot read %s\n", who, path);
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

/* "fn NAME SCALAR_INSNS VECTOR_INSNS EST_CYCLES" for every function that ran */
static void print_fns(FILE *f) {
    for (size_t i = 0; i < n_fns; i++)
        if (fns[i].scalar + fns[i].vector)
            fprintf(f, "fn %s %" PRIu64 " %" PRIu64 " %" PRIu64 "\n", fns[i].name, fns[i].scalar,
                    fns[i].vector, fns[i].cycles);
}

#endif
