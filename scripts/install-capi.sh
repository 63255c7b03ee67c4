#!/usr/bin/env bash
# Installs paradec's C ABI into a prefix: include/paradec.h, lib/libparadec.{a,so}, and the
# generated lib/pkgconfig/paradec.pc and lib/cmake/paradec/paradec{Config,ConfigVersion}.cmake.
#
#     bash scripts/install-capi.sh --prefix /usr/local [--features cuda]
#     bash scripts/install-capi.sh --prefix DIR --no-build --libdir target/release   # (tests)
#
# Builds `cargo build --release` first unless --no-build; --libdir names where the built
# libraries are (default target/release). The version is Cargo.toml's.
set -euo pipefail
cd "$(dirname "$0")/.."

prefix="" libdir="target/release" build=1 features=""
while [ $# -gt 0 ]; do
  case "$1" in
    --prefix) prefix=$2; shift 2 ;;
    --libdir) libdir=$2; shift 2 ;;
    --no-build) build=0; shift ;;
    --features) features=$2; shift 2 ;;
    -h|--help) sed -n '2,9p' "$0"; exit 0 ;;
    *) echo "install-capi: unknown argument $1" >&2; exit 2 ;;
  esac
done
[ -n "$prefix" ] || { echo "install-capi: --prefix DIR is required" >&2; exit 2; }

if [ "$build" = 1 ]; then
  cargo build --release ${features:+--features "$features"}
fi
version=$(sed -n 's/^version *= *"\(.*\)"/\1/p' Cargo.toml | head -1)
prefix=$(mkdir -p "$prefix" && cd "$prefix" && pwd)

install -d "$prefix/include" "$prefix/lib/pkgconfig" "$prefix/lib/cmake/paradec"
install -m 644 include/paradec.h "$prefix/include/paradec.h"
install -m 644 "$libdir/libparadec.a" "$prefix/lib/libparadec.a"
install -m 755 "$libdir/libparadec.so" "$prefix/lib/libparadec.so"

# The static library carries the CUDA runtime (when built with it) but not the system
# libraries below: static links add them (pkg-config --static prints them).
private="-lstdc++ -lpthread -ldl -lrt -lm"

cat > "$prefix/lib/pkgconfig/paradec.pc" <<PC
prefix=$prefix
exec_prefix=\${prefix}
libdir=\${exec_prefix}/lib
includedir=\${prefix}/include

Name: paradec
Description: Parallel-residual transformer decoder blocks (kernels, layers, models) with a C ABI
Version: $version
Cflags: -I\${includedir}
Libs: -L\${libdir} -lparadec
Libs.private: $private
PC

cat > "$prefix/lib/cmake/paradec/paradecConfig.cmake" <<'CMAKE'
# paradec's CMake package:
#   find_package(paradec CONFIG REQUIRED)
#   target_link_libraries(app PRIVATE paradec::paradec)          # shared library
#   target_link_libraries(app PRIVATE paradec::paradec_static)   # static library
get_filename_component(_paradec_prefix "${CMAKE_CURRENT_LIST_DIR}/../../.." ABSOLUTE)
if(NOT TARGET paradec::paradec)
  add_library(paradec::paradec SHARED IMPORTED)
  set_target_properties(paradec::paradec PROPERTIES
    IMPORTED_LOCATION "${_paradec_prefix}/lib/libparadec.so"
    INTERFACE_INCLUDE_DIRECTORIES "${_paradec_prefix}/include")
endif()
if(NOT TARGET paradec::paradec_static)
  add_library(paradec::paradec_static STATIC IMPORTED)
  set_target_properties(paradec::paradec_static PROPERTIES
    IMPORTED_LOCATION "${_paradec_prefix}/lib/libparadec.a"
    INTERFACE_INCLUDE_DIRECTORIES "${_paradec_prefix}/include"
    INTERFACE_LINK_LIBRARIES "stdc++;pthread;dl;rt;m")
endif()
unset(_paradec_prefix)
CMAKE

cat > "$prefix/lib/cmake/paradec/paradecConfigVersion.cmake" <<CMAKE
# Compatible when the major (and, before 1.0, the minor) version matches and is new enough.
set(PACKAGE_VERSION "$version")
if(PACKAGE_FIND_VERSION VERSION_GREATER PACKAGE_VERSION)
  set(PACKAGE_VERSION_COMPATIBLE FALSE)
else()
  string(REGEX MATCH "^[0-9]+\\\\.[0-9]+" _have "\${PACKAGE_VERSION}")
  string(REGEX MATCH "^[0-9]+\\\\.[0-9]+" _want "\${PACKAGE_FIND_VERSION}")
  string(REGEX MATCH "^[0-9]+" _have_major "\${PACKAGE_VERSION}")
  string(REGEX MATCH "^[0-9]+" _want_major "\${PACKAGE_FIND_VERSION}")
  if((_have_major STREQUAL "0" AND _have STREQUAL _want) OR
     (NOT _have_major STREQUAL "0" AND _have_major STREQUAL _want_major))
    set(PACKAGE_VERSION_COMPATIBLE TRUE)
  else()
    set(PACKAGE_VERSION_COMPATIBLE FALSE)
  endif()
  if(PACKAGE_FIND_VERSION STREQUAL PACKAGE_VERSION)
    set(PACKAGE_VERSION_EXACT TRUE)
  endif()
endif()
CMAKE

echo "installed paradec $version into $prefix (pkg-config: PKG_CONFIG_PATH=$prefix/lib/pkgconfig)"
