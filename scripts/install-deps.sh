#!/usr/bin/env bash
# install-deps.sh: installs the Debian packages lumen's build and tests need, when missing.
# As root it runs apt-get; otherwise it prints the exact apt-get line and fails.
set -euo pipefail

# What building the library, the CLI and the tests needs (`make build`, `make demo`).
build_packages=(cmake g++ make pkg-config libxtensor-dev catch2 libcli11-dev nlohmann-json3-dev
                libsentencepiece-dev)
# What running the whole test suite needs on top (`make test`): the PyTorch oracle, spm tools,
# the WebAssembly toolchain and the browser for the web tests.
test_packages=(sentencepiece python3-numpy python3-torch emscripten chromium)
# What retraining the demo model needs (`make demo-model`): the KJV text and its reader, the
# SentencePiece Python module, and OpenBLAS in place of the reference BLAS (six times faster).
model_packages=(bible-kjv bible-kjv-text python3-sentencepiece libopenblas0-openmp)
packages=("${build_packages[@]}" "${test_packages[@]}" "${model_packages[@]}")
# --build: only what building needs.
if [[ "${1:-}" == "--build" ]]; then
  packages=("${build_packages[@]}")
fi

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
[[ ${#missing[@]} -eq 0 ]] && exit 0

cmd="apt-get install -y ${missing[*]}"
if [[ $(id -u) -ne 0 ]]; then
  echo "lumen needs these Debian packages: ${missing[*]}" >&2
  echo "Install them as root with:" >&2
  echo "  apt-get update && DEBIAN_FRONTEND=noninteractive $cmd" >&2
  exit 1
fi
echo "installing: ${missing[*]}" >&2
apt-get update -qq
DEBIAN_FRONTEND=noninteractive $cmd
