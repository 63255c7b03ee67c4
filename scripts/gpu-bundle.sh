#!/usr/bin/env bash
# Builds the GPU test and bench binaries here (release, sm_90a only: PARADEC_CUDA_ARCHS=90a),
# strips them, and gathers them with the scripts they need into gpu-bundle/ (ignored by git),
# ready to travel to the GPU machine. There: `bash gpu-bundle/run.sh [all|quick|tests|bench]`.
# docs/GPU.md describes the whole workflow.
set -euo pipefail
cd "$(dirname "$0")/.."
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
# The fixture models the ops tests load (PARADEC_FIXTURES points there).
mkdir -p "$B/fixtures" && cp -r tests/fixtures/cohere "$B/fixtures/"
size=$(du -sm "$B" | cut -f1)
echo "gpu-bundle: ${size} MiB" >&2
if (( size >= 64 )); then
  echo "gpu-bundle is ${size} MiB: over the 64 MiB that may travel" >&2
  exit 1
fi
