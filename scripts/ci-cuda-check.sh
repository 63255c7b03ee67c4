#!/usr/bin/env bash
# CI's compile check of the CUDA backend, on a machine with no GPU and no CUDA toolkit:
# installs the CUDA 13.0 compiler from PyPI (and libclang for bindgen) when missing, then builds
# every target with the `cuda` feature for PTX only (PARADEC_CUDA_ARCHS=compute_80,compute_90a:
# the Ampere and Hopper code paths; nvcc's front end and bindgen run, ptxas does not — it
# dominates build time on 2 cores), and runs clippy on the same with -D warnings. The GPU tests
# compile here and skip at run time without a device; they run on the GPU machine (docs/GPU.md).
# The host checks of csrc/host_checks (device bit arithmetic run on the CPU) build and run too.
set -euo pipefail
cd "$(dirname "$0")/.."
eval "$(bash scripts/install-cuda-toolchain.sh)"
export PARADEC_CUDA_ARCHS=compute_80,compute_90a
mkdir -p target/host_checks
for check in csrc/host_checks/*.cpp; do
  out="target/host_checks/$(basename "$check" .cpp)"
  c++ -std=c++17 -O1 -Wall -Wextra -Wno-unknown-pragmas -Werror -Icsrc -I"$CUDA_HOME/include" \
    -o "$out" "$check"
  "$out"
done
cargo build --features cuda --all-targets
cargo clippy --features cuda --all-targets -- -D warnings
RUSTDOCFLAGS="-D warnings" cargo doc --no-deps --features cuda
# Without a device every GPU test must skip cleanly (and the no-device test must pass).
cargo test --features cuda --test gpu
