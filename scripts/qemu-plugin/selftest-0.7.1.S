# A known RVV 0.7.1 (XTheadVector) instruction mix for tb_log_mix.c under QEMU 5.2
# (tests/python/test_c906.py checks the counts).
# Build: riscv64-linux-gnu-gcc-15 -march=rv64gc_xtheadvector -nostdlib -static selftest-0.7.1.S
# Expected cycles (VLEN 128) in the comments; totals: scalar 2006, vector 3018 of which vset
# 5 (1 cycle each), mem 1002 / alu 1007 / red 1004 instructions of 4020 / 4072 / 5150 cycles:
# vector cycles 13247, estimated total 15253.
    .globl _start
_start:
    li t0, 1000
    th.vsetvli t1, zero, e8, m1, d1
    j loop
loop:                               # a block entered with vtype set by an earlier block
    th.vle.v v1, (sp)               # mem, m1: 4
    th.vwmacc.vv v2, v1, v1         # widening, group 2: 4
    th.vwredsum.vs v4, v1, v4       # integer reduction m1: 5
    addi t0, t0, -1
    bnez t0, loop
    th.vsetvli zero, zero, e32, m2, d1
    th.vfredosum.vs v0, v8, v16     # FP reduction, 8 elements: 23
    th.vfredsum.vs v0, v8, v16      # the same: 23
    th.vlb.v v8, (sp)               # 0.7.1 byte load into e32 elements: group m2: 4
    th.vnsrl.vi v2, v4, 0           # narrowing, group 4: 8
    th.vmand.mm v0, v1, v2          # mask logic: 4
    th.vsetvli zero, zero, e16, m4, d1
    th.vredsum.vs v1, v8, v1        # integer reduction m4: 9
    th.vwadd.vv v16, v8, v12        # widening, group 8: 16
    th.vfwcvt.f.x.v v24, v8         # widening convert (0.7.1 funct6 0x22), group 8: 16
    th.vext.x.v t1, v1, zero        # vext.x.v (0.7.1's vmv.x.s): 4
    csrr t2, th.vtype
    th.vsetvl t1, zero, t2          # register vtype: the last known (e16 m4) stays
    th.vfmv.f.s ft0, v8             # 0.7.1 funct6 0x0c: 4
    th.vsetvli zero, zero, e32, m8, d1
    th.vfredosum.vs v0, v8, v16     # 32 elements: 95
    th.vfmacc.vv v8, v16, v24       # FP multiply-add m8: 20
    th.vle.v v8, (sp)               # m8: 16
    li a7, 93
    li a0, 0
    ecall
