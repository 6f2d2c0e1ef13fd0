# The README's two commands: `make demo` and `make test`.  Both install missing Debian
# packages (as root), configure, build, then run.  Extra CMake flags: make test CMAKE_ARGS=...
BUILD      ?= build
ASAN_BUILD ?= build-asan
JOBS       ?= $(shell nproc 2>/dev/null || echo 2)
CMAKE_ARGS ?=
DEMO_PROMPT ?= def fibonacci(n):

.PHONY: all deps build demo test test-asan fuzz bench clean

all: build

deps:
	@sh scripts/deps.sh

build: deps
	cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=Release $(CMAKE_ARGS)
	cmake --build $(BUILD) -j$(JOBS)

# The main job on the embedded model: a raw, greedy completion of a Python prompt (CPU).
demo: build
	$(BUILD)/dsv3-run/dsv3-run --ckpt models/dsv3-tiny --raw --prompt "$(DEMO_PROMPT)" \
	  --max-new-tokens 64 --temperature 0 --device cpu

test: build
	cd $(BUILD) && ctest --output-on-failure -j$(JOBS)

# The whole suite again under AddressSanitizer + UndefinedBehaviorSanitizer (CPU only).
test-asan: deps
	cmake -S . -B $(ASAN_BUILD) -DCMAKE_BUILD_TYPE=Debug -DDSV3_SANITIZE=ON $(CMAKE_ARGS)
	cmake --build $(ASAN_BUILD) -j$(JOBS)
	cd $(ASAN_BUILD) && ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	  ctest --output-on-failure -j$(JOBS)

# libFuzzer on the safetensors header parser, the tokenizer and the JSON readers, FUZZ_SECONDS each (needs clang).
FUZZ_SECONDS ?= 60
fuzz: deps
	sh tests/fuzz/run.sh $(FUZZ_SECONDS)

clean:
	rm -rf $(BUILD) $(ASAN_BUILD) build-fuzz
