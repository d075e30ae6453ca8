#!/usr/bin/env bash
# make_demo_model.sh CLI ROOT OUT_DIR: puts the web page's demo model in OUT_DIR with demo.json
# naming it. The project's own models/demo-kjv.gguf when it exists; until then llama2.c's
# stories260K from ../shared/realdata, converted to GGUF by the native CLI.
set -euo pipefail
cli=$1 root=$2 out=$3
mkdir -p "$out"
kjv="$root/models/demo-kjv.gguf"
if [[ -f "$kjv" ]]; then
  file=demo-kjv.gguf
  name="demo-kjv"
  about="lumen's own demo model (models/demo-kjv.gguf)"
  prompt="In the beginning"
  [[ "$out/$file" -nt "$kjv" ]] || cp -f "$kjv" "$out/$file"
else
  src="$root/../shared/realdata/stories260K"
  [[ -f "$src/stories260K.bin" ]] || { echo "make_demo_model: $src/stories260K.bin is missing" >&2; exit 1; }
  [[ -x "$cli" ]] || { echo "make_demo_model: the native CLI $cli is missing (run: make build)" >&2; exit 1; }
  file=stories260K.gguf
  name="stories260K"
  about="llama2.c's stories260K (260K parameters, trained on TinyStories), converted to GGUF by lumen convert"
  prompt="Once upon a time"
  if [[ ! "$out/$file" -nt "$src/stories260K.bin" || ! "$out/$file" -nt "$cli" ]]; then
    "$cli" convert "$src/stories260K.bin" --tokenizer "$src/tok512.model" -o "$out/$file.tmp" >/dev/null
    mv -f "$out/$file.tmp" "$out/$file"
  fi
fi
printf '{"file": "%s", "name": "%s", "about": "%s", "prompt": "%s"}\n' "$file" "$name" "$about" "$prompt" > "$out/demo.json.tmp"
mv -f "$out/demo.json.tmp" "$out/demo.json"
