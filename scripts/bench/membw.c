/* membw: the rate at which one thread can stream N bytes that were read N bytes ago, as
 * decoding streams every weight once per token. Best of several passes, in GB/s.
 * Used by scripts/bench-host for the memory ceiling of single-token decode.
 *
 *   membw BYTES [PASSES]
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: membw BYTES [PASSES]\n");
        return 2;
    }
    size_t n = (size_t)strtoull(argv[1], NULL, 10) / 64 * 64;
    int passes = argc > 2 ? atoi(argv[2]) : 30;
    uint64_t *buf = aligned_alloc(64, n);
    if (!buf || n == 0) return 1;
    memset(buf, 1, n);
    size_t words = n / 8;
    uint64_t sink = 0;
    double best = 1e30;
    for (int p = 0; p < passes; p++) {
        uint64_t s0 = 0, s1 = 0, s2 = 0, s3 = 0;
        double t = now();
        for (size_t i = 0; i < words; i += 4) {  /* independent sums: vectorised, not latency-bound */
            s0 += buf[i];
            s1 += buf[i + 1];
            s2 += buf[i + 2];
            s3 += buf[i + 3];
        }
        t = now() - t;
        sink += s0 + s1 + s2 + s3;
        if (t < best) best = t;
    }
    printf("%.2f\n", (double)n / best / 1e9);
    return sink == 42;  /* keeps the sums alive */
}
