/* Which kernel set runs: the sets this build has, fastest first, that this CPU can run. */
#include <string.h>

#include "kernels.h"

static const l2_kernels *const all_sets[] = {
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
