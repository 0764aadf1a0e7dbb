/* Which kernel set runs: the sets this build has, fastest first, that this CPU can run. */
#include <string.h>

#include "kernels.h"

#if defined(L2_RISCV_V_KERNELS)
extern const l2_kernels l2_kernels_riscv_v;  /* kernels/riscv_v.c */
#endif
#if defined(__x86_64__)
extern const l2_kernels l2_kernels_avx2;  /* kernels/x86.c */
#endif

static const l2_kernels *const all_sets[] = {
#if defined(L2_RISCV_V_KERNELS)
    &l2_kernels_riscv_v,
#endif
#if defined(__x86_64__)
    &l2_kernels_avx2,
#endif
    &l2_kernels_generic,
};
enum { N_SETS = sizeof all_sets / sizeof all_sets[0] };

static int runnable(const l2_kernels *k) { return !k->cpu_ok || k->cpu_ok(); }

const l2_kernels *l2_kernels_find(const char *name) {
    for (int i = 0; i < N_SETS; i++) {
        if (!runnable(all_sets[i])) continue;
        if (!name || !*name || strcmp(all_sets[i]->name, name) == 0) return all_sets[i];
    }
    return NULL;
}

const char *l2_kernels_name(int32_t index) {
    for (int i = 0; i < N_SETS; i++) {
        if (!runnable(all_sets[i])) continue;
        if (index-- == 0) return all_sets[i]->name;
    }
    return NULL;
}
