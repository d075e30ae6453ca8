#!/usr/bin/env bash
# bench/run_standard.sh: lumen's standard benchmark set. Runs `lumen bench` on random-weight models
# of the three reference shapes (stories15M, stories110M, TinyLlama-1.1B) in F32, Q8_0, Q4_0 (and
# Q4_K when lumen has it) at 2 threads, pp512 and tg128, 5 repetitions, and writes a markdown table
# with llama.cpp's reference figures (../shared/docs/BENCHMARKS.md, llama-bench -t 2 on an AMD EPYC
# Zen 1 with 2 cores) side by side to bench/results/<date>.md.
#
#   bench/run_standard.sh [path/to/lumen]          (default: build/bin/lumen)
#
# Environment: THREADS (2), REPS (5), SHAPES ("stories15M stories110M tinyllama-1.1B"),
# TYPES ("f32 q8_0 q4_0 q4_k"), TINYLLAMA_F32 (0: skipped, a 4.4 GB file with no llama.cpp figure to
# compare with), IDLE_WAIT (seconds lumen bench waits for an idle machine, 60), OUT (the result
# file). lumen bench measures the read bandwidth again before each tg repetition ("read GB/s": their
# median); "% of read BW" is the median over repetitions of the repetition's tg GB/s over the
# bandwidth measured just before it, so it compares figures taken moments apart. Ratios to llama.cpp only mean something when both
# sides ran on the same machine: the reference figures are from another one.
set -euo pipefail
cd "$(dirname "$0")/.."

LUMEN=${1:-build/bin/lumen}
THREADS=${THREADS:-2}
REPS=${REPS:-5}
SHAPES=${SHAPES:-"stories15M stories110M tinyllama-1.1B"}
TYPES=${TYPES:-"f32 q8_0 q4_0 q4_k"}
TINYLLAMA_F32=${TINYLLAMA_F32:-0}
IDLE_WAIT=${IDLE_WAIT:-60}
DATE=$(date +%Y-%m-%d)
OUT=${OUT:-bench/results/$DATE.md}

[ -x "$LUMEN" ] || { echo "run_standard.sh: $LUMEN is not built (make build)" >&2; exit 1; }
mkdir -p "$(dirname "$OUT")"
CSV=$(mktemp)
LOG=$(mktemp)
ERR=$(mktemp)
ERRS=$(mktemp)
trap 'rm -f "$CSV" "$LOG" "$ERR" "$ERRS"' EXIT

# llama.cpp (CPU, AVX2) llama-bench -t 2 on the reference machine: shape type pp512 tg128
REFERENCE="
stories15M F32 2362 274
stories15M F16 1616 292
stories15M Q8_0 1859 519
stories15M Q4_0 1984 576
stories110M F32 283 48.0
stories110M F16 173 48.4
stories110M Q8_0 197 105.0
stories110M Q4_0 219 124.3
tinyllama-1.1B F16 16.8 5.1
tinyllama-1.1B Q8_0 18.6 12.0
tinyllama-1.1B Q4_0 21.2 15.4
"

HEADER=""
SKIPPED=""
for shape in $SHAPES; do
  for type in $TYPES; do
    if [ "$shape" = tinyllama-1.1B ] && [ "$type" = f32 ] && [ "$TINYLLAMA_F32" != 1 ]; then
      echo "run_standard.sh: skipping $shape $type (TINYLLAMA_F32=1 runs it)" >&2
      SKIPPED="$SKIPPED $shape/$type (4.4 GB file, no llama.cpp figure; TINYLLAMA_F32=1 runs it);"
      continue
    fi
    if [ "$shape" = stories15M ] && [ "$type" = q4_k ]; then  # dim 288: no row fills a 256-block
      SKIPPED="$SKIPPED $shape/$type (rows of 288 and 768: almost every matrix would fall back to Q8_0);"
      continue
    fi
    echo "run_standard.sh: $shape $type ..." >&2
    status=0
    "$LUMEN" bench --shape "$shape" --type "$type" -p 512 -n 128 -t "$THREADS" -r "$REPS" \
      --idle-wait "$IDLE_WAIT" -o csv > "$LOG" 2> "$ERR" || status=$?
    cat "$ERR" >&2
    cat "$ERR" >> "$ERRS"
    if [ "$status" != 0 ]; then
      echo "run_standard.sh: $shape $type failed (type not supported by this build?), skipped" >&2
      continue
    fi
    [ -n "$HEADER" ] || HEADER=$(grep -E '^(lumen bench:|memory read bandwidth:)' "$LOG" || true)
    grep -E '^[^,]+ shape,' "$LOG" | sed "s/^/$shape,/" >> "$CSV"
  done
done
WARNINGS=$(grep -c WARNING "$ERRS" || true)

{
  echo "# lumen standard benchmark, $DATE"
  echo
  echo "\`bench/run_standard.sh\` (lumen $(git describe --always --dirty 2>/dev/null || echo unknown)), $THREADS threads,"
  echo "$REPS repetitions, random-weight models of each shape (vocabulary 32000). lumen's t/s is the"
  echo "median (mean ± stddev in the full table below); llama.cpp's figures are BENCHMARKS.md's (llama-bench"
  echo "-t 2 on an AMD EPYC Zen 1, 2 cores, read bandwidth 24.5 GB/s): unless this run was on that machine,"
  echo "the ratios compare different machines and only the % of read bandwidth is comparable."
  echo
  echo '```'
  echo "$HEADER"
  echo "load: $(cat /proc/loadavg 2>/dev/null) at the end; $WARNINGS busy-machine warnings during the run"
  echo '```'
  echo
  [ -z "$SKIPPED" ] || { echo "Not run:$SKIPPED"; echo; }
  echo "| model | type | size | pp512 | llama.cpp pp512 | ratio | tg128 | llama.cpp tg128 | ratio | tg GB/s | read GB/s | % of read BW | other CPUs |"
  echo "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
  awk -F, -v ref="$REFERENCE" '
    BEGIN { n = split(ref, lines, "\n"); for (i = 1; i <= n; i++) { split(lines[i], f, " "); if (f[1] != "") { pp[f[1] "," f[2]] = f[3]; tg[f[1] "," f[2]] = f[4] } } }
    # fields: shape,model,type,size_bytes,params,backend,threads,test,mean,stddev,median,tg_gbps,bw_gbps,other,bw_fraction
    { key = $1 "," $3; if (!(key in seen)) { order[++k] = key; seen[key] = 1; size[key] = $4 }
      if ($8 ~ /^pp/) { ppv[key] = $11; ppo[key] = $14 } else { tgv[key] = $11; gb[key] = $12; bw[key] = $13; tgo[key] = $14; bwf[key] = $15 } }
    function ratio(a, b) { return (a != "" && b != "") ? sprintf("%.2f", a / b) : "" }
    END {
      for (i = 1; i <= k; i++) {
        key = order[i]; split(key, s, ",")
        frac = (bw[key] > 0 && bwf[key] != "") ? sprintf("%.0f%%", 100 * bwf[key]) : ""
        other = ppo[key] > tgo[key] ? ppo[key] : tgo[key]
        printf "| %s | %s | %.1f MiB | %.1f | %s | %s | %.1f | %s | %s | %.1f | %.1f | %s | %.2f |\n", s[1], s[2], size[key] / 1048576,
               ppv[key], pp[key], ratio(ppv[key], pp[key]), tgv[key], tg[key], ratio(tgv[key], tg[key]), gb[key], bw[key], frac, other
      }
    }' "$CSV"
  echo
  echo "Full rows (\`lumen bench -o csv\`): shape, model, type, size bytes, params, backend, threads, test,"
  echo "t/s mean, stddev, median, tg GB/s, measured read GB/s (median over repetitions), CPUs used by other"
  echo "processes during the test, median over repetitions of tg GB/s / the read GB/s measured just before."
  echo
  echo '```'
  cat "$CSV"
  echo '```'
} > "$OUT"
echo "run_standard.sh: wrote $OUT" >&2
