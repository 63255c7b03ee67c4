#!/usr/bin/env bash
# Runs on the GPU machine, from the repository root: bash gpu-bundle/run.sh [MODE]
#   all (default): tests, compute-sanitizer (memcheck + racecheck, small shapes), paradec bench,
#                  PyTorch bench, joined table
#   quick:         tests, sanitizer, a short bench (fewer shapes) and PyTorch's
#   tests | sanitize | bench: one part
#   attn:          the attention table (gpu_bench --attention, bench_torch.py --attention), joined
# Logs go under $OUT (at most 8 files: that is what comes back). The summary prints last.
set -uo pipefail
D=$(cd "$(dirname "$0")" && pwd)
OUT=${OUT:-/tmp/paradec-gpu-out}
mkdir -p "$OUT"
MODE=${1:-all}
BENCH_ARGS=()
[[ "$MODE" == quick ]] && BENCH_ARGS=(--quick)
[[ -n "${PARADEC_BENCH_ONLY:-}" ]] && BENCH_ARGS+=(--only "$PARADEC_BENCH_ONLY")
export PARADEC_REQUIRE_GPU=1
SUMMARY=()
want() { [[ "$MODE" == all || "$MODE" == quick || "$MODE" == "$1" ]]; }

{
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm,clocks.mem,temperature.gpu,power.draw --format=csv
  echo
} > "$OUT/tests.log" 2>&1
GPU=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -n1)
SUMMARY+=("card: $GPU")

if want tests; then
  PARADEC_FIXTURES="$D/fixtures" "$D/bin/gpu" --nocapture >> "$OUT/tests.log" 2>&1
  rc=$?
  SUMMARY+=("tests (rc=$rc): $(grep -E '^test result' "$OUT/tests.log" | tail -n1)")
  grep -E 'FAILED|panicked|relative error' "$OUT/tests.log" | head -n 20
fi

if want sanitize; then
  if command -v compute-sanitizer >/dev/null; then
    export PARADEC_GPU_SMALL=1
    PARADEC_FIXTURES="$D/fixtures" compute-sanitizer --tool memcheck --report-api-errors no \
      --error-exitcode 99 "$D/bin/gpu" --test-threads=1 > "$OUT/memcheck.log" 2>&1
    rc=$?
    SUMMARY+=("memcheck (rc=$rc): $(grep -E 'ERROR SUMMARY' "$OUT/memcheck.log" | tr '\n' ' ') / $(grep -E '^test result' "$OUT/memcheck.log" | tr '\n' ' ')")
    # Kernels with shared memory: norms, rotary and attention.
    compute-sanitizer --tool racecheck --error-exitcode 99 \
      "$D/bin/gpu" --test-threads=1 norm:: rope:: attention:: > "$OUT/racecheck.log" 2>&1
    rc=$?
    SUMMARY+=("racecheck (rc=$rc): $(grep -E 'RACECHECK SUMMARY|ERROR SUMMARY' "$OUT/racecheck.log" | tail -n1) / $(grep -E '^test result' "$OUT/racecheck.log" | tail -n1)")
    unset PARADEC_GPU_SMALL
  else
    SUMMARY+=("sanitizer: compute-sanitizer not found")
  fi
fi

if want bench; then
  "$D/bin/gpu_bench" "${BENCH_ARGS[@]}" --csv "$OUT/paradec_bench.csv" > "$OUT/bench.log" 2>&1
  SUMMARY+=("paradec bench rc=$?")
  PYTHONUNBUFFERED=1 python3 "$D/bench_torch.py" "${BENCH_ARGS[@]}" --csv "$OUT/torch_bench.csv" >> "$OUT/bench.log" 2>&1
  SUMMARY+=("torch bench rc=$?")
  python3 "$D/bench_join.py" "$OUT/paradec_bench.csv" "$OUT/torch_bench.csv" > "$OUT/joined.md" 2>&1
  if [[ "$MODE" == all && -x "$D/bin/gpu_smoke" ]]; then
    "$D/bin/gpu_smoke" --bench >> "$OUT/bench.log" 2>&1
    SUMMARY+=("criterion gpu_smoke rc=$?: $(grep -A1 -E '^gpu_smoke/' "$OUT/bench.log" | grep -oE 'time: +\[[^]]*\]' | tr '\n' ' ')")
  fi
fi

if [[ "$MODE" == attn ]]; then
  "$D/bin/gpu_bench" --attention --csv "$OUT/attn_paradec.csv" > "$OUT/attn_bench.log" 2>&1
  SUMMARY+=("paradec attention bench rc=$?")
  PYTHONUNBUFFERED=1 python3 "$D/bench_torch.py" --attention --csv "$OUT/attn_torch.csv" >> "$OUT/attn_bench.log" 2>&1
  SUMMARY+=("torch attention bench rc=$?")
  python3 "$D/bench_join.py" "$OUT/attn_paradec.csv" "$OUT/attn_torch.csv" > "$OUT/joined.md" 2>&1
fi

echo "==== summary"
printf '%s\n' "${SUMMARY[@]}"
if [[ -f "$OUT/joined.md" ]]; then
  cat "$OUT/joined.md"
fi
