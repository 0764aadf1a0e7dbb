# The build targets: the one description of each, read by the Makefile (make TARGET=NAME),
# scripts/cross-build and daemon/storyteller/_ffi_build.py (pip install). One fact a line,
# `TARGET.KEY := VALUE`, nothing else, so that the shell and Python read it as Make does:
#   march    the -march flag (none: the compiler's default)
#   defines  -D macros; L2_REQUIRE_RISCV_V makes kernels.h stop the build when -march leaves
#            out what the vector kernels need (Zvfhmin on RVV 1.0): no silent scalar build
#   kernels  the kernel sets the build offers (l2_kernels_name), fastest first; avx2 only on
#            a CPU that has AVX2 and F16C (checked at run time)

# the machine that builds, when it is not one of the targets below
host.march :=
host.defines :=
host.kernels := generic

x86_64.march :=
x86_64.defines :=
x86_64.kernels := avx2 generic

# RISC-V without vectors: runs on every 64-bit RISC-V Linux board
rv64gc.march := rv64gc
rv64gc.defines :=
rv64gc.kernels := generic

# RVV 1.0 with Zvfhmin (vector f16 <-> f32 conversions, which the vector kernels need)
rv64gcv.march := rv64gcv_zvfhmin
rv64gcv.defines := L2_REQUIRE_RISCV_V
rv64gcv.kernels := rvv generic

# T-Head C906/C910/C920 (Milk-V Duo): "v" is RVV 0.7.1, reachable only as XTheadVector
c906.march := rv64gc_xtheadvector
c906.defines := L2_REQUIRE_RISCV_V
c906.kernels := rvv generic
