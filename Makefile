# sinkscope build. `make` builds ./sinkscope; `make test` runs every test optimized and
# under AddressSanitizer+UBSan; `make bench` runs the benchmarks (not part of the tests).
# The default goal is stated: the rules the flavour macro expands below would otherwise set it.
.DEFAULT_GOAL := all
# Build and test on every core unless told otherwise (CI and README run plain `make test`).
MAKEFLAGS += -j$(shell nproc)
CC      ?= cc
CXX     ?= c++
ARCH    ?= -march=native
PKGS     = openblas lapack jansson libpng libutf8proc libpcre2-8 sentencepiece libzip
PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS))
PKG_LIBS   := $(shell pkg-config --libs $(PKGS))
WARN     = -Wall -Wextra -Wshadow -Wno-unused-parameter -Werror=implicit-function-declaration
CFLAGS_COMMON = -std=c11 -D_GNU_SOURCE $(WARN) -fopenmp -Isrc $(PKG_CFLAGS)
OPTFLAGS = -O3 $(ARCH) -g
SANFLAGS = -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=undefined
# The one C++ file (src/text/spm_shim.cc) wraps libsentencepiece behind a C interface.
CXXFLAGS_COMMON = -std=c++17 -D_GNU_SOURCE -Wall -Wextra -Wshadow -Wno-unused-parameter -Isrc $(PKG_CFLAGS)
# oneDNN (Debian's libdnnl-dev) ships no pkg-config file.
LDLIBS   = $(PKG_LIBS) -ldnnl -lstdc++ -lm -fopenmp

# Every source below src/ at any depth (folders may nest); the CLI is linked separately.
LIB_SRC := $(sort $(shell find src -name '*.c' -not -path 'src/cli/*'))
LIB_CXX := $(sort $(shell find src -name '*.cc'))
CLI_SRC  = $(sort $(wildcard src/cli/*.c))
TEST_SRC = $(sort $(wildcard tests/test_*.c))
TEST_HELPERS = $(filter-out tests/test_%,$(wildcard tests/*.c))
HDRS    := $(shell find src -name '*.h') $(wildcard tests/*.h)

# Two build flavours in separate trees: build/opt (default) and build/san.
define flavour
$(1)_LIB_OBJ  = $$(LIB_SRC:%.c=build/$(1)/%.o) $$(LIB_CXX:%.cc=build/$(1)/%.o)
$(1)_CLI_OBJ  = $$(CLI_SRC:%.c=build/$(1)/%.o)
$(1)_TH_OBJ   = $$(TEST_HELPERS:%.c=build/$(1)/%.o)
$(1)_TESTS    = $$(TEST_SRC:tests/%.c=build/$(1)/tests/%)
build/$(1)/%.o: %.c $$(HDRS)
	@mkdir -p $$(dir $$@)
	$$(CC) $$(CFLAGS_COMMON) $(2) -c $$< -o $$@
build/$(1)/%.o: %.cc $$(HDRS)
	@mkdir -p $$(dir $$@)
	$$(CXX) $$(CXXFLAGS_COMMON) $(2) -c $$< -o $$@
build/$(1)/libsinkscope.a: $$($(1)_LIB_OBJ)
	@rm -f $$@; ar rcs $$@ $$^
build/$(1)/sinkscope: $$($(1)_CLI_OBJ) build/$(1)/libsinkscope.a
	$$(CC) $(2) -o $$@ $$^ $$(LDLIBS)
build/$(1)/tests/%: tests/%.c $$($(1)_TH_OBJ) build/$(1)/libsinkscope.a $$(HDRS)
	@mkdir -p $$(dir $$@)
	$$(CC) $$(CFLAGS_COMMON) $(2) -Itests -o $$@ $$< $$($(1)_TH_OBJ) build/$(1)/libsinkscope.a $$(LDLIBS) -lcmocka
endef
$(eval $(call flavour,opt,$(OPTFLAGS)))
$(eval $(call flavour,san,$(SANFLAGS)))

.PHONY: all test test-opt test-san bench bench-diffusers fuzz clean demo model model-eval
all: sinkscope
sinkscope: build/opt/sinkscope
	cp $< $@.tmp && mv -f $@.tmp $@  # rename: a running sinkscope keeps its file

# Tests: every tests/test_*.c is one cmocka program. run-tests prints one closing line.
test: test-opt test-san
test-opt: sinkscope $(opt_TESTS)
	@tests/run-tests opt $(opt_TESTS)
test-san: build/san/sinkscope $(san_TESTS)
	@ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1 \
	  SINKSCOPE_BIN=build/san/sinkscope tests/run-tests san $(san_TESTS)

build/opt/bench/%: bench/%.c build/opt/libsinkscope.a $(HDRS)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_COMMON) $(OPTFLAGS) -o $@ $< build/opt/libsinkscope.a $(LDLIBS)
bench: sinkscope $(patsubst bench/%.c,build/opt/bench/%,$(wildcard bench/*.c))
	@for b in $(patsubst bench/%.c,build/opt/bench/%,$(wildcard bench/*.c)); do echo "== $$b"; $$b || exit 1; done

# diffusers' SD3Transformer2DModel (PyTorch, fp32 and bf16) beside bench_forward in one run; skipped
# with a message when torch and diffusers cannot be imported (tools/bench_diffusers.py):
#   make bench-diffusers DIFFUSERS_SRC=path/to/diffusers/src [DIFFUSERS_SHIM=folder with shim.py] [PYTHON=python3]
PYTHON ?= python3
bench-diffusers: build/opt/bench/bench_forward
	$(PYTHON) tools/bench_diffusers.py --bench build/opt/bench/bench_forward \
	  $(if $(DIFFUSERS_SRC),--diffusers-src $(DIFFUSERS_SRC)) $(if $(DIFFUSERS_SHIM),--shim $(DIFFUSERS_SHIM))

# libFuzzer targets (need clang): every fuzz/fuzz_NAME.c becomes build/fuzz/fuzz_NAME, linked
# against the whole library built by clang with ASan + UBSan and fuzzer coverage; see README.
FUZZ_CFLAGS = -std=c11 -D_GNU_SOURCE -g -O1 -fno-omit-frame-pointer -Isrc $(PKG_CFLAGS) -fopenmp=libgomp \
              -fsanitize=address,undefined -fno-sanitize-recover=undefined
FUZZ_LIB_OBJ = $(LIB_SRC:%.c=build/fuzz/%.o) $(LIB_CXX:%.cc=build/fuzz/%.o)
FUZZ_BINS    = $(patsubst fuzz/%.c,build/fuzz/%,$(wildcard fuzz/fuzz_*.c))
fuzz: $(FUZZ_BINS)
build/fuzz/%.o: %.c $(HDRS)
	@mkdir -p $(dir $@)
	clang $(FUZZ_CFLAGS) -fsanitize=fuzzer-no-link -c $< -o $@
build/fuzz/%.o: %.cc $(HDRS)
	@mkdir -p $(dir $@)
	clang++ $(CXXFLAGS_COMMON) -g -O1 -fno-omit-frame-pointer -fsanitize=address,undefined -fsanitize=fuzzer-no-link \
	  -c $< -o $@
build/fuzz/libsinkscope.a: $(FUZZ_LIB_OBJ)
	@rm -f $@; ar rcs $@ $^
# fuzz_args includes the CLI's option parser (not part of the library) directly
build/fuzz/fuzz_args: src/cli/args.c
build/fuzz/fuzz_%: fuzz/fuzz_%.c build/fuzz/libsinkscope.a $(HDRS)
	@mkdir -p $(dir $@)
	clang $(FUZZ_CFLAGS) -fsanitize=fuzzer-no-link -c $< -o $@.o
	clang++ $(filter-out -std=c11,$(FUZZ_CFLAGS)) -fsanitize=fuzzer -o $@ $@.o build/fuzz/libsinkscope.a $(PKG_LIBS) -ldnnl -lm -fopenmp=libgomp

# The main job on the embedded default. Until the embedded model lands this is a random-weight
# SD3-style model: init, then a probed forward pass with a top-1 sink removal at block 2.
demo: sinkscope
	./sinkscope init --config configs/sd3-tiny.json --out out/demo-model --seed 1 --inputs out/demo-model/inputs.safetensors
	./sinkscope forward --model out/demo-model --inputs out/demo-model/inputs.safetensors \
	  --out out/demo-model/out.safetensors --probe 0,1,2,3 --condition configs/conditions/a1-top1.json
	@echo "statistics: out/demo-model/out.stats.json; tensors: out/demo-model/out.safetensors"

# The embedded model (models/shapeworld): sinkscope train's defaults (30,000 steps of 32 on
# ShapeWorld), 1 h 37 min on 2 cores; 0.639 GenEval-style overall (make model-eval). A killed
# run continues with `./sinkscope train --out out/train-shapeworld --resume` (same thread count).
model: sinkscope
	rm -rf out/train-shapeworld
	./sinkscope train --out out/train-shapeworld
	rm -rf models/shapeworld && cp -r out/train-shapeworld/model models/shapeworld

# The acceptance evaluation of the embedded model: all 216 evaluation prompts x 4 seeds, 20 steps,
# the default CFG, every block probed; prints the GenEval-style score and the sink dynamics.
model-eval: sinkscope
	./sinkscope run --exp exp/model-eval --preset baseline --seeds 4 --probe 0,1,2,3,4,5 --quiet
	./sinkscope score --images exp/model-eval/images/baseline --prompts data/shapeworld_eval.jsonl \
	  --json exp/model-eval/score.json
	./sinkscope report exp/model-eval

clean:
	rm -rf build sinkscope
.SECONDARY:
