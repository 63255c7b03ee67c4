#!/usr/bin/env bash
# Builds the GPU test and bench binaries here (release, sm_90a only by default:
# PARADEC_CUDA_ARCHS=90a — set it for another card, e.g. 80 or 86), strips them, and gathers them
# with the scripts they need into gpu-bundle/ (ignored by git), ready to copy to a GPU machine.
# There: `bash gpu-bundle/run.sh [all|quick|tests|sanitize|bench] [--out DIR]`.
#     bash scripts/gpu-bundle.sh [--max-mib N]   # fail when the bundle exceeds N MiB
# docs/GPU.md describes the whole workflow.
set -euo pipefail
cd "$(dirname "$0")/.."
MAX_MIB=""
while (( $# )); do
  case "$1" in
    --max-mib) MAX_MIB=${2:?--max-mib needs a number}; shift 2 ;;
    -h|--help) sed -n '2,7p' "$0"; exit 0 ;;
    *) echo "gpu-bundle.sh: unknown argument $1 (try --help)" >&2; exit 2 ;;
  esac
done
eval "$(bash scripts/install-cuda-toolchain.sh)"
export PARADEC_CUDA_ARCHS=${PARADEC_CUDA_ARCHS:-90a}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target}
B=gpu-bundle
rm -rf "$B"
mkdir -p "$B/bin"

# The executables cargo reports for a build (one JSON message per artifact).
executables() {
  python3 -c '
import json, sys
for line in sys.stdin:
    try:
        m = json.loads(line)
    except ValueError:
        continue
    if m.get("reason") == "compiler-artifact" and m.get("executable"):
        print(m["target"]["name"], m["executable"])
'
}

{
  cargo test --release --features cuda --no-run --test gpu --message-format=json
  cargo bench --features cuda --no-run --bench gpu_smoke --message-format=json
  cargo build --release --features cuda --example gpu_bench --message-format=json
} | executables | while read -r name exe; do
  cp "$exe" "$B/bin/$name"
  strip "$B/bin/$name"
  echo "bundled $name ($(du -h "$B/bin/$name" | cut -f1))" >&2
done

cp scripts/gpu-run.sh "$B/run.sh"
cp scripts/bench_torch.py scripts/bench_join.py "$B/"
# The fixture models the ops and decoder tests load (PARADEC_FIXTURES points there).
cp -r tests/fixtures "$B/fixtures"
size=$(du -sm "$B" | cut -f1)
echo "gpu-bundle: ${size} MiB" >&2
if [[ -n "$MAX_MIB" ]] && (( size > MAX_MIB )); then
  echo "gpu-bundle is ${size} MiB: over the --max-mib $MAX_MIB limit" >&2
  exit 1
fi
