#!/usr/bin/env bash
# consumer_projects.sh: builds examples/consumer (find_package after cmake --install) and
# examples/consumer_subdirectory (add_subdirectory) as a user would, runs both on stories260K,
# and checks that their greedy text equals what the `lumen` CLI prints for the same settings.
# Usage: consumer_projects.sh SOURCE_DIR WORK_DIR LUMEN_CLI REALDATA
set -euo pipefail
src=$1 work=$2 cli=$3 realdata=$4
rm -rf "$work" && mkdir -p "$work"

model="$work/stories260K.gguf"
"$cli" convert "$realdata/stories260K/stories260K.bin" --tokenizer "$realdata/stories260K/tok512.model" -o "$model" 2>/dev/null
expected="$("$cli" generate -m "$model" -p "Once upon a time" -n 40 --temp 0 2>/dev/null)"

check() {  # name binary
  local got
  got="$("$2" "$model" "Once upon a time" 40)"
  if [[ "$got" != "$expected" ]]; then
    echo "FAIL: $1 printed:"; echo "$got"; echo "expected:"; echo "$expected"; exit 1
  fi
  echo "ok: $1"
}

# 1. install, then find_package(lumen)
cmake -S "$src" -B "$work/lumen-build" -DCMAKE_BUILD_TYPE=Release -DLUMEN_BUILD_TESTS=OFF \
      -DLUMEN_BUILD_CLI=OFF -DLUMEN_BUILD_EXAMPLES=OFF >/dev/null
cmake --install "$work/lumen-build" --prefix "$work/prefix" >/dev/null
cmake -S "$src/examples/consumer" -B "$work/consumer" -DCMAKE_BUILD_TYPE=Release \
      -DCMAKE_PREFIX_PATH="$work/prefix" >/dev/null
cmake --build "$work/consumer" >/dev/null
check find_package "$work/consumer/consumer"

# 2. add_subdirectory(lumen)
cmake -S "$src/examples/consumer_subdirectory" -B "$work/consumer_subdirectory" -DCMAKE_BUILD_TYPE=Release \
      -DLUMEN_SOURCE="$src" >/dev/null
cmake --build "$work/consumer_subdirectory" >/dev/null
check add_subdirectory "$work/consumer_subdirectory/consumer"
