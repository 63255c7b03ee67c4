#!/usr/bin/env bash
# Runs on a machine with an NVIDIA GPU, from the bundle's parent folder:
#     bash gpu-bundle/run.sh [MODE] [--out DIR]
#   all (default): tests, compute-sanitizer (memcheck + racecheck, small shapes), paradec bench,
#                  PyTorch bench, joined table
#   quick:         tests, sanitizer, a short bench (fewer shapes) and PyTorch's
#   tests | sanitize | bench: one part
#   attn:          the attention table (gpu_bench --attention, bench_torch.py --attention), joined
#   optin:         the paths the defaults do not take, against the defaults: their tests and
#                  sanitizer runs, then paradec-only timings side by side (the small-M ring loop,
#                  the vendor dense GEMM, the CUDA-core and decoded-tile decodes, the prefill attention
#                  kernels that Hopper's default does not take)
#   knobs:         the switches that change a default, measured against it — dependent
#                  launches off (PARADEC_PDL=off), the fragment decode's 8 or 16 query rows a
#                  block (PARADEC_FRAG_ROWS=8 / =16), each call's own K split in the warpgroup
#                  MMA's one grid (PARADEC_WGMMA_GROUP_PLAN=own), its 64-row tiles up to 32 rows
#                  (PARADEC_WGMMA_TOK32=off), the lean loop's K splits summed through
#                  global memory or inside clusters (PARADEC_SPLIT_SUM=global, =cluster, or
#                  =resident: only where every cluster of a launch fits at once; the default
#                  is resident from 8 rows): tests and memcheck under them, then the
#                  lean linears, the decoder layers and decode attention timed under each,
#                  side by side
#   wgmma:         the warpgroup-MMA GEMM of quantized weights (sm_90a): the linear and decoder
#                  tests, memcheck and racecheck of its test, then the linears at 33…2048 rows on
#                  it (its own row tiles, and 64/128/256 forced) against the mma.sync tiles, and
#                  PyTorch's linears on the same card; the warp-specialized kernel for every
#                  width and for none (PARADEC_WGMMA_WS=on / off) under memcheck and timed at
#                  256 rows
# Logs and CSVs go to DIR (default: gpu-results/ beside the bundle). The summary prints last.
set -uo pipefail
D=$(cd "$(dirname "$0")" && pwd)
RESULTS="$D/../gpu-results"
MODE=all
while (( $# )); do
  case "$1" in
    --out) RESULTS=${2:?--out needs a folder}; shift 2 ;;
    -h|--help) sed -n '2,22p' "$0"; exit 0 ;;
    all|quick|tests|sanitize|bench|attn|optin|knobs|wgmma) MODE=$1; shift ;;
    *) echo "run.sh: unknown argument $1 (try --help)" >&2; exit 2 ;;
  esac
done
mkdir -p "$RESULTS"
BENCH_ARGS=()
[[ "$MODE" == quick ]] && BENCH_ARGS=(--quick)
[[ -n "${PARADEC_BENCH_ONLY:-}" ]] && BENCH_ARGS+=(--only "$PARADEC_BENCH_ONLY")
export PARADEC_REQUIRE_GPU=1
SUMMARY=()
want() { [[ "$MODE" == all || "$MODE" == quick || "$MODE" == "$1" ]]; }

{
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm,clocks.mem,temperature.gpu,power.draw --format=csv
  echo
} > "$RESULTS/tests.log" 2>&1
GPU=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -n1)
SUMMARY+=("card: $GPU")

if want tests; then
  PARADEC_FIXTURES="$D/fixtures" "$D/bin/gpu" --nocapture >> "$RESULTS/tests.log" 2>&1
  rc=$?
  SUMMARY+=("tests (rc=$rc): $(grep -E '^test result' "$RESULTS/tests.log" | tail -n1)")
  # The test that takes nearly all device memory runs alone.
  PARADEC_FIXTURES="$D/fixtures" "$D/bin/gpu" --ignored --test-threads=1 out_of_memory >> "$RESULTS/tests.log" 2>&1
  rc=$?
  SUMMARY+=("out-of-memory test (rc=$rc): $(grep -E '^test result' "$RESULTS/tests.log" | tail -n1)")
  grep -E 'FAILED|panicked|relative error' "$RESULTS/tests.log" | head -n 20
fi

if want sanitize; then
  if command -v compute-sanitizer >/dev/null; then
    export PARADEC_GPU_SMALL=1
    PARADEC_FIXTURES="$D/fixtures" compute-sanitizer --tool memcheck --report-api-errors no \
      --error-exitcode 99 "$D/bin/gpu" --test-threads=1 > "$RESULTS/memcheck.log" 2>&1
    rc=$?
    SUMMARY+=("memcheck (rc=$rc): $(grep -E 'ERROR SUMMARY' "$RESULTS/memcheck.log" | tr '\n' ' ') / $(grep -E '^test result' "$RESULTS/memcheck.log" | tr '\n' ' ')")
    # Kernels with shared memory: norms, rotary and attention.
    compute-sanitizer --tool racecheck --error-exitcode 99 \
      "$D/bin/gpu" --test-threads=1 norm:: rope:: attention:: > "$RESULTS/racecheck.log" 2>&1
    rc=$?
    SUMMARY+=("racecheck (rc=$rc): $(grep -E 'RACECHECK SUMMARY|ERROR SUMMARY' "$RESULTS/racecheck.log" | tail -n1) / $(grep -E '^test result' "$RESULTS/racecheck.log" | tail -n1)")
    unset PARADEC_GPU_SMALL
  else
    SUMMARY+=("sanitizer: compute-sanitizer not found")
  fi
fi

if want bench; then
  "$D/bin/gpu_bench" "${BENCH_ARGS[@]}" --csv "$RESULTS/paradec_bench.csv" > "$RESULTS/bench.log" 2>&1
  SUMMARY+=("paradec bench rc=$?")
  PYTHONUNBUFFERED=1 python3 "$D/bench_torch.py" "${BENCH_ARGS[@]}" --csv "$RESULTS/torch_bench.csv" >> "$RESULTS/bench.log" 2>&1
  SUMMARY+=("torch bench rc=$?")
  python3 "$D/bench_join.py" "$RESULTS/paradec_bench.csv" "$RESULTS/torch_bench.csv" > "$RESULTS/joined.md" 2>&1
  if [[ "$MODE" == all && -x "$D/bin/gpu_smoke" ]]; then
    "$D/bin/gpu_smoke" --bench >> "$RESULTS/bench.log" 2>&1
    SUMMARY+=("criterion gpu_smoke rc=$?: $(grep -A1 -E '^gpu_smoke/' "$RESULTS/bench.log" | grep -oE 'time: +\[[^]]*\]' | tr '\n' ' ')")
  fi
fi

if [[ "$MODE" == attn ]]; then
  "$D/bin/gpu_bench" --attention --csv "$RESULTS/attn_paradec.csv" > "$RESULTS/attn_bench.log" 2>&1
  SUMMARY+=("paradec attention bench rc=$?")
  PYTHONUNBUFFERED=1 python3 "$D/bench_torch.py" --attention --csv "$RESULTS/attn_torch.csv" >> "$RESULTS/attn_bench.log" 2>&1
  SUMMARY+=("torch attention bench rc=$?")
  python3 "$D/bench_join.py" "$RESULTS/attn_paradec.csv" "$RESULTS/attn_torch.csv" > "$RESULTS/joined.md" 2>&1
fi

if [[ "$MODE" == optin ]]; then
  F="$D/fixtures"
  {
    # The linear tests force every path themselves; the layer and graph tests run the ring loop
    # of the small-M path and the vendor GEMM through the decoder when forced for every linear.
    PARADEC_FIXTURES="$F" "$D/bin/gpu" linear::
    PARADEC_FIXTURES="$F" PARADEC_LINEAR_PATH=small "$D/bin/gpu" decoder:: graph::
    PARADEC_FIXTURES="$F" PARADEC_LINEAR_PATH=vendor "$D/bin/gpu" decoder:: graph::
    # The CUDA-core and decoded-tile decodes (quantized and native caches) where the fragment
    # one would run.
    PARADEC_FIXTURES="$F" PARADEC_KV_DECODE=simt "$D/bin/gpu" kv_quant:: attention::
    PARADEC_FIXTURES="$F" PARADEC_KV_DECODE=tile "$D/bin/gpu" kv_quant:: attention::
    # The mma.sync prefill attention where the warpgroup-MMA one would run (Hopper), the
    # warpgroup-MMA one without its producer warp, and the producer one without ping-pong.
    PARADEC_FIXTURES="$F" PARADEC_ATTN_PREFILL=mma "$D/bin/gpu" attention:: kv_quant:: decoder::
    PARADEC_FIXTURES="$F" PARADEC_ATTN_PREFILL=wgmma "$D/bin/gpu" attention:: decoder::
    PARADEC_FIXTURES="$F" PARADEC_ATTN_PINGPONG=off "$D/bin/gpu" attention:: decoder::
    # Persistent prefill blocks everywhere, then nowhere, instead of where items are short.
    PARADEC_FIXTURES="$F" PARADEC_ATTN_PERSIST=on "$D/bin/gpu" attention:: decoder::
    PARADEC_FIXTURES="$F" PARADEC_ATTN_PERSIST=off "$D/bin/gpu" attention:: decoder::
  } > "$RESULTS/optin_tests.log" 2>&1
  SUMMARY+=("other-path tests: $(grep -E '^test result' "$RESULTS/optin_tests.log" | tr '\n' ' ')")
  if command -v compute-sanitizer >/dev/null; then
    {
      PARADEC_GPU_SMALL=1 PARADEC_FIXTURES="$F" compute-sanitizer --tool memcheck --report-api-errors no \
        "$D/bin/gpu" --test-threads=1 linear::small_m linear::grouped linear::dense
      PARADEC_GPU_SMALL=1 PARADEC_FIXTURES="$F" PARADEC_KV_DECODE=simt compute-sanitizer --tool memcheck \
        --report-api-errors no "$D/bin/gpu" --test-threads=1 kv_quant::
      PARADEC_FIXTURES="$F" PARADEC_KV_DECODE=simt compute-sanitizer --tool racecheck \
        "$D/bin/gpu" --test-threads=1 linear::small_m linear::grouped kv_quant::paged
      PARADEC_GPU_SMALL=1 PARADEC_FIXTURES="$F" PARADEC_KV_DECODE=tile PARADEC_ATTN_PREFILL=mma \
        compute-sanitizer --tool memcheck --report-api-errors no "$D/bin/gpu" --test-threads=1 \
        kv_quant:: attention::
      PARADEC_GPU_SMALL=1 PARADEC_FIXTURES="$F" PARADEC_ATTN_PREFILL=wgmma compute-sanitizer \
        --tool memcheck --report-api-errors no "$D/bin/gpu" --test-threads=1 attention::
    } > "$RESULTS/optin_sanitize.log" 2>&1
    SUMMARY+=("other-path sanitizer: $(grep -E 'ERROR SUMMARY|RACECHECK SUMMARY' "$RESULTS/optin_sanitize.log" | tr '\n' ' ')")
  fi
  {
    "$D/bin/gpu_bench" --only linear --quick --lin-fmt gptq4,exl2_4b --lin-ms 1,8,16 --lin-path small,lean
    "$D/bin/gpu_bench" --only linear --quick --lin-fmt dense --lin-ms 1,16,64,512,2048 --lin-path auto,gemv,mma
    "$D/bin/gpu_bench" --attention --quick --only attn_decode
    PARADEC_KV_DECODE=simt "$D/bin/gpu_bench" --attention --quick --only attn_decode
    PARADEC_KV_DECODE=tile "$D/bin/gpu_bench" --attention --quick --only attn_decode
    "$D/bin/gpu_bench" --attention --quick --only attn_prefill
    PARADEC_ATTN_PREFILL=mma "$D/bin/gpu_bench" --attention --quick --only attn_prefill
    PARADEC_ATTN_PREFILL=wgmma "$D/bin/gpu_bench" --attention --quick --only attn_prefill
    PARADEC_ATTN_PINGPONG=off "$D/bin/gpu_bench" --attention --quick --only attn_prefill
    PARADEC_ATTN_PERSIST=on "$D/bin/gpu_bench" --attention --only attn_prefill --attn-ss 512,2048,8192
    PARADEC_ATTN_PERSIST=off "$D/bin/gpu_bench" --attention --only attn_prefill --attn-ss 512,2048,8192
    "$D/bin/gpu_bench" --decoder --quick
    PARADEC_LINEAR_PATH=small "$D/bin/gpu_bench" --decoder --quick
  } > "$RESULTS/optin_bench.log" 2>&1
  SUMMARY+=("other-path bench: $RESULTS/optin_bench.log")
fi

if [[ "$MODE" == knobs ]]; then
  F="$D/fixtures"
  KNOBS=("PARADEC_PDL=off" "PARADEC_FRAG_ROWS=8" "PARADEC_FRAG_ROWS=16"
    "PARADEC_WGMMA_GROUP_PLAN=own" "PARADEC_WGMMA_TOK32=off" "PARADEC_SPLIT_SUM=global"
    "PARADEC_SPLIT_SUM=cluster" "PARADEC_SPLIT_SUM=resident")
  {
    for k in "${KNOBS[@]}"; do
      echo "==== tests with $k"
      env $k PARADEC_FIXTURES="$F" "$D/bin/gpu" linear:: attention:: decoder:: graph::
    done
  } > "$RESULTS/knobs_tests.log" 2>&1
  SUMMARY+=("knob tests: $(grep -E '^test result' "$RESULTS/knobs_tests.log" | tr '\n' ' ')")
  if command -v compute-sanitizer >/dev/null; then
    for k in "${KNOBS[@]}"; do
      env $k PARADEC_GPU_SMALL=1 PARADEC_FIXTURES="$F" compute-sanitizer --tool memcheck \
        --report-api-errors no "$D/bin/gpu" --test-threads=1 linear::small_m linear::grouped \
        linear::summed linear::cluster_split_sum attention::attention_matches decoder::
    done > "$RESULTS/knobs_sanitize.log" 2>&1
    SUMMARY+=("knob memcheck: $(grep -E 'ERROR SUMMARY' "$RESULTS/knobs_sanitize.log" | tr '\n' ' ')")
  fi
  {
    for k in "" "${KNOBS[@]}"; do
      echo "==== lean linears: ${k:-defaults}"
      env $k "$D/bin/gpu_bench" --only linear --quick --lin-fmt gptq4,exl2_4b --lin-ms 1,8,16 \
        --lin-path lean
      echo "==== decoder layers: ${k:-defaults}"
      env $k "$D/bin/gpu_bench" --decoder --quick
      echo "==== decode attention: ${k:-defaults}"
      env $k "$D/bin/gpu_bench" --attention --quick --only attn_decode
    done
    for n in 1 2 4; do
      echo "==== decode attention: PARADEC_ATTN_MAX_SPLITS=$n"
      PARADEC_ATTN_MAX_SPLITS=$n "$D/bin/gpu_bench" --attention --quick --only attn_decode
    done
  } > "$RESULTS/knobs_bench.log" 2>&1
  SUMMARY+=("knob bench: $RESULTS/knobs_bench.log")
fi

if [[ "$MODE" == wgmma ]]; then
  F="$D/fixtures"
  PARADEC_FIXTURES="$F" "$D/bin/gpu" --nocapture linear:: decoder:: > "$RESULTS/wgmma_tests.log" 2>&1
  SUMMARY+=("wgmma tests (rc=$?): $(grep -E '^test result' "$RESULTS/wgmma_tests.log" | tr '\n' ' ')")
  grep -E 'FAILED|panicked|wgmma_path' "$RESULTS/wgmma_tests.log" | head -n 20
  if command -v compute-sanitizer >/dev/null; then
    {
      PARADEC_GPU_SMALL=1 compute-sanitizer --tool memcheck --report-api-errors no \
        "$D/bin/gpu" --test-threads=1 linear::wgmma
      PARADEC_GPU_SMALL=1 compute-sanitizer --tool racecheck "$D/bin/gpu" --test-threads=1 \
        linear::wgmma
      # The warp-specialized kernel (256-row tiles) for every width, and the plain kernel
      # alone, under memcheck.
      PARADEC_WGMMA_WS=on PARADEC_GPU_SMALL=1 compute-sanitizer --tool memcheck \
        --report-api-errors no "$D/bin/gpu" --test-threads=1 linear::wgmma
      PARADEC_WGMMA_WS=off PARADEC_GPU_SMALL=1 compute-sanitizer --tool memcheck \
        --report-api-errors no "$D/bin/gpu" --test-threads=1 linear::wgmma
    } > "$RESULTS/wgmma_sanitize.log" 2>&1
    SUMMARY+=("wgmma sanitizer: $(grep -E 'ERROR SUMMARY|RACECHECK SUMMARY' "$RESULTS/wgmma_sanitize.log" | tr '\n' ' ')")
  fi
  {
    L=(--only linear --lin-fmt gptq4,exl2_4b,gptq8 --lin-shapes 4096x12288,8192x28672
      --lin-ms 33,64,128,512,2048)
    "$D/bin/gpu_bench" "${L[@]}" --lin-path auto,mma
    "$D/bin/gpu_bench" "${L[@]}" --lin-path wgmma --lin-split 64,128,256
    echo "# PARADEC_WGMMA_WS=on / off: the warp-specialized kernel at 256 rows for every width / none"
    PARADEC_WGMMA_WS=on "$D/bin/gpu_bench" "${L[@]}" --lin-path wgmma --lin-split 256
    PARADEC_WGMMA_WS=off "$D/bin/gpu_bench" "${L[@]}" --lin-path wgmma --lin-split 256
    PYTHONUNBUFFERED=1 python3 "$D/bench_torch.py" --only linear --quick
  } > "$RESULTS/wgmma_bench.log" 2>&1
  SUMMARY+=("wgmma bench: $RESULTS/wgmma_bench.log")
fi

echo "==== summary"
printf '%s\n' "${SUMMARY[@]}"
if [[ -f "$RESULTS/joined.md" ]]; then
  cat "$RESULTS/joined.md"
fi
