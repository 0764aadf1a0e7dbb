# Storyteller: build menu. `make` builds the host library and tools into build/host/.
#   make            library (.so, .a) and tools l2run, l2convert
#   make test       the whole test suite (pytest drives the C tests too), with scripts/setup's
#                   .venv when there is one, else python3; -rs prints why a test skipped
#   make asan       the same build with AddressSanitizer + UBSan, into build/asan/
#   make fuzz       libFuzzer targets (clang-19), into build/fuzz/
#   make lint       ruff on the Python code
# Cross targets (rv64gc, rv64gcv, c906) are built by scripts/cross-build.

# What each target is (-march, defines, kernel sets): libllama2_rvv/targets.mk, the one
# description, also read by scripts/cross-build and pip install. TARGET=host: no -march.
include libllama2_rvv/targets.mk
TARGET   ?= host
ifeq ($(origin $(TARGET).kernels),undefined)
$(error unknown TARGET '$(TARGET)': libllama2_rvv/targets.mk names the targets)
endif
TARGET_FLAGS := $(addprefix -march=,$($(TARGET).march)) $(addprefix -D,$($(TARGET).defines))

BUILD    ?= build/host
CC       ?= cc
LINK     ?= $(CC)   # cross builds compile with clang and link with the target's gcc
# -O3 vectorises the generic kernels; no -ffast-math: float results must not depend on it.
OPT      ?= -O3
CFLAGS   ?=
WARN     := -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes -Wvla
# on compile lines only (the link driver may not know a -march the compiler knows)
CPPFLAGS := -Ilibllama2_rvv/include -Ilibllama2_rvv/src -D_DEFAULT_SOURCE $(TARGET_FLAGS)
# -ffp-contract=off: no fused multiply-adds unless a kernel asks, so every compiler and
# target computes the generic kernels' float operations identically.
ALLFLAGS  = -std=c11 $(OPT) $(WARN) -ffp-contract=off -fPIC $(CFLAGS)
LDLIBS   := -lm
LDFLAGS  ?=

LIB_SRC  := $(wildcard libllama2_rvv/src/*.c) $(wildcard libllama2_rvv/src/kernels/*.c)
LIB_OBJ  := $(LIB_SRC:%.c=$(BUILD)/obj/%.o)
TOOLS    := l2run l2convert
CTESTS   := $(patsubst tests/c/%.c,%,$(wildcard tests/c/test_*.c))
FUZZERS  := $(patsubst tests/c/fuzz/%.c,%,$(wildcard tests/c/fuzz/fuzz_*.c))

.PHONY: all lib tools ctests test asan fuzz lint clean
all: lib tools ctests
lib: $(BUILD)/lib/libllama2_rvv.so $(BUILD)/lib/libllama2_rvv.a
tools: $(TOOLS:%=$(BUILD)/bin/%)
ctests: $(CTESTS:%=$(BUILD)/bin/%)

$(BUILD)/obj/%.o: %.c $(wildcard libllama2_rvv/include/*.h libllama2_rvv/src/*.h)
	@mkdir -p $(@D)
	$(CC) $(CPPFLAGS) $(ALLFLAGS) -c $< -o $@

$(BUILD)/lib/libllama2_rvv.so: $(LIB_OBJ)
	@mkdir -p $(@D)
	$(LINK) $(ALLFLAGS) -shared -Wl,-soname,libllama2_rvv.so -Wl,--no-undefined $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/lib/libllama2_rvv.a: $(LIB_OBJ)
	@mkdir -p $(@D)
	rm -f $@ && $(AR) rcs $@ $^

# Tools and C tests link the static library: one self-contained binary each.
$(BUILD)/bin/%: libllama2_rvv/tools/%.c $(wildcard libllama2_rvv/tools/*.h) $(BUILD)/lib/libllama2_rvv.a
	@mkdir -p $(@D)
	$(CC) $(CPPFLAGS) $(ALLFLAGS) -c -o $(BUILD)/obj/$(@F).o $<
	$(LINK) $(ALLFLAGS) $(LDFLAGS) -o $@ $(BUILD)/obj/$(@F).o $(BUILD)/lib/libllama2_rvv.a $(LDLIBS)

$(BUILD)/bin/test_%: tests/c/test_%.c $(BUILD)/lib/libllama2_rvv.a
	@mkdir -p $(@D)
	$(CC) $(CPPFLAGS) $(ALLFLAGS) -c -o $(BUILD)/obj/$(@F).o $<
	$(LINK) $(ALLFLAGS) $(LDFLAGS) -o $@ $(BUILD)/obj/$(@F).o $(BUILD)/lib/libllama2_rvv.a $(LDLIBS)

# The Python side: scripts/setup's virtual environment when it exists, else the python3 on PATH.
VENV   ?= .venv
PYTHON ?= $(if $(wildcard $(VENV)/bin/python),$(VENV)/bin/python,python3)
RUFF   ?= $(if $(wildcard $(VENV)/bin/ruff),$(VENV)/bin/ruff,$(if $(shell command -v ruff),ruff,$(PYTHON) -m ruff))

test: all lint
	$(PYTHON) -m pytest tests -q -rs

# Sanitized tools and C tests (static library: no sanitized .so to preload into Python).
asan:
	$(MAKE) BUILD=build/asan CC=clang-19 OPT="-O1 -g -fno-omit-frame-pointer" \
	  CFLAGS="-fsanitize=address,undefined -fno-sanitize-recover=all" \
	  LDFLAGS="-fsanitize=address,undefined" tools ctests

FUZZ_CC := clang-19
FUZZ_FLAGS := -std=c11 -O1 -g $(WARN) -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all
fuzz: $(FUZZERS:%=build/fuzz/%)
# fuzz_packed.c includes fuzz_checkpoint.c
build/fuzz/%: tests/c/fuzz/%.c tests/c/fuzz/fuzz_checkpoint.c tests/c/fuzz/memfile.h $(LIB_SRC) $(wildcard libllama2_rvv/include/*.h libllama2_rvv/src/*.h)
	@mkdir -p $(@D)
	$(FUZZ_CC) $(CPPFLAGS) $(FUZZ_FLAGS) -o $@ $< $(LIB_SRC) -lm

lint:
	$(RUFF) check daemon tests scripts

clean:
	rm -rf build
