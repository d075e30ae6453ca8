# lumen's front door: `make demo` generates text with a real model, `make test` runs everything.
# Both install missing Debian packages first (scripts/install-deps.sh).

BUILD      ?= build
ASAN_BUILD ?= build-asan
JOBS       ?= $(shell nproc)
REALDATA   ?= ../shared/realdata
LUMEN      := $(BUILD)/bin/lumen
DEMO_MODEL := $(BUILD)/models/stories260K.gguf

.PHONY: all deps deps-build build demo test test-native test-sanitize install clean

all: build

# Everything the test suite needs (PyTorch, Emscripten, Chromium, ...).
deps:
	@scripts/install-deps.sh

# Only what building the library, the CLI and the tests needs.
deps-build:
	@scripts/install-deps.sh --build

$(BUILD)/CMakeCache.txt:
	cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=Release

build: deps-build $(BUILD)/CMakeCache.txt
	cmake --build $(BUILD) -j $(JOBS)

# Until the project's own demo model lands, the demo converts llama2.c's stories260K
# (from ../shared/realdata) to GGUF and generates a story with it.
demo: build
	@test -f $(REALDATA)/stories260K/stories260K.bin || { echo "demo: $(REALDATA)/stories260K is missing" >&2; exit 1; }
	@mkdir -p $(BUILD)/models
	$(LUMEN) convert $(REALDATA)/stories260K/stories260K.bin --tokenizer $(REALDATA)/stories260K/tok512.model -o $(DEMO_MODEL)
	@echo "demo: generating with stories260K (llama2.c's 260K-parameter TinyStories model, converted to GGUF)" >&2
	$(LUMEN) generate -m $(DEMO_MODEL) -p "Once upon a time" -n 200 --temp 0.8 -s 42

test: deps test-native test-sanitize

test-native: build
	cd $(BUILD) && ctest --output-on-failure --no-tests=error -j $(JOBS)

# The whole suite again under AddressSanitizer and UndefinedBehaviorSanitizer.
test-sanitize: deps
	cmake -S . -B $(ASAN_BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo -DLUMEN_SANITIZE=ON
	cmake --build $(ASAN_BUILD) -j $(JOBS)
	cd $(ASAN_BUILD) && ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 UBSAN_OPTIONS=print_stacktrace=1 \
		ctest --output-on-failure --no-tests=error -j $(JOBS)

install: build
	cmake --install $(BUILD)

clean:
	rm -rf $(BUILD) $(ASAN_BUILD)
