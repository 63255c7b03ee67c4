#!/usr/bin/env bash
# Installs what `cargo build --features cuda` needs on a machine without a CUDA toolkit:
#   - the CUDA 13.0 compiler (nvcc, crt, nvvm, cudart, cccl) from PyPI into a venv, pinned to the
#     GPU machine's driver (CUDA 13.0); skipped when a toolkit is already found (NVCC, CUDA_HOME,
#     CUDA_PATH, nvcc on PATH, /usr/local/cuda);
#   - libclang (for bindgen) from PyPI, skipped when the system already has one (LIBCLANG_PATH,
#     ldconfig, /usr/lib/llvm-*).
# Idempotent: a stamp file records the pinned versions; a second run installs nothing.
#
# Progress goes to stderr; the environment to use goes to stdout as `export` lines, so:
#     eval "$(bash scripts/install-cuda-toolchain.sh)"
# The venv lives in $PARADEC_TOOLCHAIN_DIR (default ~/.cache/paradec/cuda-13.0).
set -euo pipefail

DIR=${PARADEC_TOOLCHAIN_DIR:-$HOME/.cache/paradec/cuda-13.0}
PY=${PYTHON:-python3}
# Pinned together: mixing minor versions of nvcc, crt and nvvm breaks compilation.
CUDA_PKGS=(
  nvidia-cuda-nvcc==13.0.88
  nvidia-cuda-runtime==13.0.96
  nvidia-cuda-crt==13.0.88
  nvidia-nvvm==13.0.88
  nvidia-cuda-cccl==13.0.85
)
CLANG_PKGS=(libclang==18.1.1)
# The cuBLAS of the same CUDA release (its headers are extracted; see below).
CUBLAS_PKG=nvidia-cublas==13.0.2.14

log() { echo "install-cuda-toolchain: $*" >&2; }

# --- an existing toolkit? -------------------------------------------------------------------
cuda_home=""
if [[ -n "${NVCC:-}" && -x "${NVCC}" ]]; then
  cuda_home=$(cd "$(dirname "$NVCC")/.." && pwd)
elif [[ -n "${CUDA_HOME:-}" && -x "${CUDA_HOME}/bin/nvcc" ]]; then
  cuda_home=$CUDA_HOME
elif [[ -n "${CUDA_PATH:-}" && -x "${CUDA_PATH}/bin/nvcc" ]]; then
  cuda_home=$CUDA_PATH
elif command -v nvcc >/dev/null 2>&1; then
  cuda_home=$(cd "$(dirname "$(command -v nvcc)")/.." && pwd)
elif [[ -x /usr/local/cuda/bin/nvcc ]]; then
  cuda_home=/usr/local/cuda
fi

have_libclang() {
  local d
  if [[ -n "${LIBCLANG_PATH:-}" ]] && ls "$LIBCLANG_PATH"/libclang.so* "$LIBCLANG_PATH"/libclang-[0-9]*.so* >/dev/null 2>&1; then
    return 0
  fi
  if ldconfig -p 2>/dev/null | grep -Eq 'libclang(-[0-9.]+)?\.so'; then
    return 0
  fi
  for d in /usr/lib/llvm-*/lib /usr/lib64/llvm*/lib /usr/local/lib; do
    if ls "$d"/libclang.so* "$d"/libclang-[0-9]*.so* >/dev/null 2>&1; then
      return 0
    fi
  done
  return 1
}

need_cuda=0
[[ -z "$cuda_home" ]] && need_cuda=1
need_clang=0
have_libclang || need_clang=1

stamp="$DIR/.paradec-stamp"
want_stamp="cuda:${CUDA_PKGS[*]} clang:${CLANG_PKGS[*]}"

site_dir() { "$DIR/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])'; }

if (( need_cuda || need_clang )); then
  pkgs=()
  (( need_cuda )) && pkgs+=("${CUDA_PKGS[@]}")
  (( need_clang )) && pkgs+=("${CLANG_PKGS[@]}")
  if [[ -f "$stamp" ]] && grep -qxF "$want_stamp" "$stamp" && [[ -x "$DIR/bin/python" ]] \
     && "$DIR/bin/python" -m pip show "${pkgs[@]%%==*}" >/dev/null 2>&1; then
    log "already installed in $DIR"
  else
    log "installing ${pkgs[*]} into $DIR"
    [[ -x "$DIR/bin/python" ]] || "$PY" -m venv "$DIR"
    "$DIR/bin/python" -m pip install --disable-pip-version-check -q "${pkgs[@]}" >&2
    # The stamp lists every pin; a run that needed only some of them installed those.
    echo "$want_stamp" > "$stamp"
  fi
  site=$(site_dir)
  if (( need_cuda )); then
    cuda_home="$site/nvidia/cu13"
    [[ -x "$cuda_home/bin/nvcc" ]] || { log "nvcc missing under $cuda_home after install"; exit 1; }
  fi
  if (( need_clang )); then
    echo "export LIBCLANG_PATH=$site/clang/native"
  fi
fi

# The cuBLASLt headers (the dense large-m path loads the library at run time, so only its
# declarations are needed to build): from the nvidia-cublas wheel, which also holds the
# library, into a toolkit this script installed. A system toolkit has them already.
if [[ ! -f "$cuda_home/include/cublasLt.h" ]]; then
  if [[ -w "$cuda_home/include" ]]; then
    log "installing the cuBLASLt headers from $CUBLAS_PKG"
    pyexe="$DIR/bin/python"
    [[ -x "$pyexe" ]] || pyexe=$PY
    tmp=$(mktemp -d)
    if "$pyexe" -m pip download --disable-pip-version-check -q --no-deps -d "$tmp" "$CUBLAS_PKG" >&2; then
      "$pyexe" - "$tmp" "$cuda_home/include" <<'PY'
import glob, sys, zipfile
src, dst = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(glob.glob(src + "/*.whl")[0]) as z:
    for name in ("cublasLt.h", "cublas_api.h"):
        with z.open("nvidia/cu13/include/" + name) as f, open(dst + "/" + name, "wb") as o:
            o.write(f.read())
PY
    else
      log "warning: could not download $CUBLAS_PKG; the build will miss cublasLt.h"
    fi
    rm -rf "$tmp"
  else
    log "warning: $cuda_home/include has no cublasLt.h (install the CUDA toolkit's cuBLAS)"
  fi
fi

log "CUDA toolkit: $cuda_home ($("$cuda_home/bin/nvcc" --version | tail -n 2 | head -n 1))"
echo "export CUDA_HOME=$cuda_home"
