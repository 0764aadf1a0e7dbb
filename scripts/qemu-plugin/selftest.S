# A known instruction mix for insn_mix.c (tests/python/test_cross.py checks the counts).
# Build: clang-19 --target=riscv64-linux-gnu -march=rv64gcv -nostdlib -static selftest.S
# Expected cycles (VLEN 128) are in the comments; totals: scalar 2006, vector 3021 of which
# vset 6 (1 cycle each), mem 1004 / alu 1007 / red 1004 instructions of 4016 / 4072 / 5150
# cycles: vector cycles 13244, estimated total 15250.
    .globl _start
_start:
    li t0, 1000
    vsetvli t1, zero, e8, m1, ta, ma
    j loop
loop:                               # a TB entered with vtype unknown at translation time
    vle8.v v1, (sp)                 # mem, EMUL 1: 4
    vwmacc.vv v2, v1, v1            # widening, group 2: 4
    vwredsum.vs v4, v1, v4          # integer reduction m1: 5
    addi t0, t0, -1
    bnez t0, loop
    vsetivli zero, 4, e32, m2, ta, ma
    vfredosum.vs v0, v8, v16        # FP reduction, 8 elements: 23
    vfredusum.vs v0, v8, v16        # the same: 23
    vle8.v v8, (sp)                 # mem, EMUL 1/2: 4
    vnsrl.wi v2, v4, 0              # narrowing, group 4: 8
    vmand.mm v0, v1, v2             # mask logic: 4
    vsetvli zero, zero, e16, m4, ta, ma
    vredsum.vs v1, v8, v1           # integer reduction m4: 9
    vl2re8.v v8, (sp)               # whole 2 registers: 4
    vwadd.vv v16, v8, v12           # widening, group 8: 16
    vfwcvt.f.x.v v24, v8            # widening convert, group 8: 16
    vsetvli zero, zero, e8, mf2, ta, ma
    vadd.vv v1, v2, v3              # fractional LMUL: 4
    vmv.x.s t1, v1                  # 4
    csrr t2, vtype
    vsetvl t1, zero, t2             # register vtype: the last known (e8 mf2) stays
    vle32.v v8, (sp)                # EEW 32 at e8 mf2: EMUL 2: 4
    vsetvli zero, zero, e32, m8, ta, ma
    vfredosum.vs v0, v8, v16        # 32 elements: 95
    vfmacc.vv v8, v16, v24          # FP multiply-add m8: 20
    vle8.v v8, (sp)                 # EMUL 2: 4
    li a7, 93
    li a0, 0
    ecall
