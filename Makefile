# lumen's front door: `make demo` generates text with a real model, `make test` runs everything.
# Both install missing Debian packages first (scripts/install-deps.sh).

BUILD      ?= build
ASAN_BUILD ?= build-asan
JOBS       ?= $(shell nproc)
REALDATA   ?= ../shared/realdata
LUMEN      := $(BUILD)/bin/lumen
WEB_BUILD  ?= build-web
WEB_HOST   ?= 127.0.0.1
WEB_PORT   ?= 8080

.PHONY: all deps deps-build build demo demo-model test test-native test-sanitize install clean web web-serve web-bench test-web

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

# The demo: the project's own model (models/demo-kjv.gguf, trained on the King James Bible by
# models/train_demo.py; models/README.md), continuing a prompt. DEMO_PROMPT etc. override.
DEMO_GGUF   ?= models/demo-kjv.gguf
DEMO_PROMPT ?= And it came to pass
demo: build
	@test -f $(DEMO_GGUF) || { echo "demo: $(DEMO_GGUF) is missing" >&2; exit 1; }
	@echo "demo: generating with $(DEMO_GGUF) (5.8M parameters, trained by this project on the KJV; models/README.md)" >&2
	$(LUMEN) generate -m $(DEMO_GGUF) -p "$(DEMO_PROMPT)" -n 200 --temp 0.8 -s 42
	@echo

# Retrains the demo model from a clean clone (about 40 minutes on 2 cores; models/README.md) and
# makes models/demo-kjv.gguf with `lumen convert` and `lumen quantize`. CI does not run this.
PYTHON ?= /usr/bin/python3
demo-model: deps build
	$(PYTHON) models/train_demo.py --out models/build
	$(LUMEN) convert models/build/kjv-llama-hf -o models/build/demo-kjv-f32.gguf --outtype f32
	$(LUMEN) quantize models/build/demo-kjv-f32.gguf models/demo-kjv.gguf q8_0

test: deps test-native test-sanitize test-web

test-native: build
	cd $(BUILD) && ctest --output-on-failure --no-tests=error -j $(JOBS)

# The whole suite again under AddressSanitizer and UndefinedBehaviorSanitizer.
test-sanitize: deps
	cmake -S . -B $(ASAN_BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo -DLUMEN_SANITIZE=ON
	cmake --build $(ASAN_BUILD) -j $(JOBS)
	cd $(ASAN_BUILD) && ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 UBSAN_OPTIONS=print_stacktrace=1 \
		ctest --output-on-failure --no-tests=error -j $(JOBS)

# The browser build into web/dist/ (Emscripten: a SIMD128 + pthreads module, a single-thread one,
# and the demo model); see the README's "In the browser".
web: deps build
	emcmake cmake -S web -B $(WEB_BUILD) -DLUMEN_CLI=$(abspath $(LUMEN)) > /dev/null
	cmake --build $(WEB_BUILD) -j $(JOBS)

# Serves web/ on $(WEB_HOST):$(WEB_PORT) with the COOP/COEP headers that threads need.
web-serve: web
	node web/serve.mjs --host $(WEB_HOST) --port $(WEB_PORT)

web/node_modules/.package-lock.json: web/package-lock.json
	cd web && npm ci --no-audit --no-fund

# The WebAssembly build under Node, and the demo page in headless Chromium.
test-web: web web/node_modules/.package-lock.json
	cd $(WEB_BUILD) && ctest --output-on-failure --no-tests=error

# Tokens/s of the browser builds (headless Chromium) next to the native CLI, on the same files.
web-bench: web web/node_modules/.package-lock.json
	node web/tests/bench_run.mjs --cli $(LUMEN) --realdata $(REALDATA) --tmp $(WEB_BUILD)/bench

install: build
	cmake --install $(BUILD)

clean:
	rm -rf $(BUILD) $(ASAN_BUILD) $(WEB_BUILD) web/dist
