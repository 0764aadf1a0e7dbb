/* emulator_rules: which RVV 0.7.1 rules the emulator running the c906 tests enforces.
 * Built by tests/python/test_c906.py with the c906 compiler, run under QEMU 5.2; prints one
 * line per rule, "NAME: RESULT", which the test compares with what docs/c906-emulator.md
 * states. Each probe runs in a child process, so an illegal instruction is a result, not a
 * crash. XTheadVector assembly throughout: the compiler must not choose the instructions. */
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static uint32_t buf[64] __attribute__((aligned(64)));

/* vlenb (CSR 0xc22) exists only from RVV 0.9 on */
static long read_vlenb(void) {
    long v;
    __asm__ volatile("csrr %0, 0xc22" : "=r"(v));
    return v;
}

/* `vsetvli zero, zero, vtype` after vl = 3: 1.0 keeps vl (3), 0.7.1 sets VLMAX */
static long vl_after_zero_zero(void) {
    long vl, three = 3;
    __asm__ volatile("th.vsetvli zero, %1, e32, m1, d1\n"
                     "th.vsetvli zero, zero, e32, m1, d1\n"
                     "csrr %0, vl"
                     : "=r"(vl) : "r"(three) : "vl", "vtype");
    return vl;
}

/* a widening op whose destination group overlaps its narrow source */
static long widening_overlap(void) {
    long n = 4, x = 3;
    __asm__ volatile("th.vsetvli zero, %0, e16, m1, d1\n"
                     "th.vwmul.vx v2, v2, %1" : : "r"(n), "r"(x) : "v2", "v3", "vl", "vtype");
    return 0;
}

/* a compare writing a mask over its own source (the C906 itself rejects `vmsgt.vx v8, v8`) */
static long compare_overlap(void) {
    long n = 4, x = 3;
    __asm__ volatile("th.vsetvli zero, %0, e32, m1, d1\n"
                     "th.vmsgt.vx v8, v8, %1" : : "r"(n), "r"(x) : "v8", "vl", "vtype");
    return 0;
}

/* tail elements after an op at vl = 2 of 4: 0.7.1 zeroes them */
static long tail_after_short_op(void) {
    long four = 4, two = 2, ones = -1;
    __asm__ volatile("th.vsetvli zero, %0, e32, m1, d1\n"
                     "th.vmv.v.x v4, %2\n"
                     "th.vsetvli zero, %1, e32, m1, d1\n"
                     "th.vadd.vx v4, v4, %2\n"
                     "th.vsetvli zero, %0, e32, m1, d1\n"
                     "th.vse.v v4, (%3)"
                     : : "r"(four), "r"(two), "r"(ones), "r"(buf) : "v4", "memory", "vl", "vtype");
    return (long)buf[3];  /* 0: zeroed; 0xffffffff: undisturbed */
}

/* where the mask bit of element 1 sits at e32 m1: bit SEW/LMUL = 32 in 0.7.1 (MLEN), bit 1 in 1.0 */
static long mask_bit_of_element_1(void) {
    long four = 4, zero = 0;
    buf[0] = 0;
    buf[1] = 1;
    buf[2] = 0;
    buf[3] = 0;
    __asm__ volatile("th.vsetvli zero, %0, e32, m1, d1\n"
                     "th.vle.v v4, (%1)\n"
                     "th.vmsne.vx v0, v4, %2\n"
                     "th.vse.v v0, (%1)"
                     : : "r"(four), "r"(buf), "r"(zero) : "v0", "v4", "memory", "vl", "vtype");
    for (int b = 0; b < 128; b++)
        if (buf[b / 32] >> (b % 32) & 1) return b;
    return -1;
}

/* 1.0's vsetivli (bits 31:30 = 11), which 0.7.1 does not have */
static long vsetivli(void) {
    long vl;
    __asm__ volatile(".insn 0xc1017057\n"  /* vsetivli zero, 2, e32, m2 (1.0) */
                     "csrr %0, vl" : "=r"(vl) : : "vl", "vtype");
    return vl;
}

static void probe(const char *name, long (*f)(void)) {
    int fds[2];
    if (pipe(fds) != 0) return;
    pid_t pid = fork();
    if (pid == 0) {
        long v = f();
        if (write(fds[1], &v, sizeof v) != (ssize_t)sizeof v) _exit(2);
        _exit(0);
    }
    close(fds[1]);
    long v = 0;
    ssize_t got = read(fds[0], &v, sizeof v);
    close(fds[0]);
    int status = 0;
    waitpid(pid, &status, 0);
    if (WIFSIGNALED(status))
        printf("%s: %s\n", name, WTERMSIG(status) == SIGILL ? "illegal instruction" : strsignal(WTERMSIG(status)));
    else if (got == (ssize_t)sizeof v)
        printf("%s: %ld\n", name, v);
    else
        printf("%s: exit %d\n", name, WEXITSTATUS(status));
    fflush(stdout);
}

int main(void) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    probe("vlenb", read_vlenb);
    probe("vl after vsetvli zero,zero", vl_after_zero_zero);
    probe("widening op over its source", widening_overlap);
    probe("compare over its source", compare_overlap);
    probe("tail after vl=2 of 4", tail_after_short_op);
    probe("mask bit of element 1 (e32 m1)", mask_bit_of_element_1);
    probe("vsetivli", vsetivli);
    return 0;
}
