#!/usr/bin/env bash
# Builds LazyFS (a FUSE filesystem that drops unsynced writes on command, to simulate a power
# cut) once into target/lazyfs from ../shared/lazyfs, for tests/power_cut.rs.
# Its CMake files download toml11 and spdlog at configure time, which fails here; Debian ships
# the same versions (libtoml11-dev, libspdlog-dev), so a patched copy finds them instead.
# Exits 0 without building when ../shared/lazyfs is missing (the tests then skip and say so).
set -euo pipefail
cd "$(dirname "$0")/.."

SRC=${LAZYFS_SRC:-../shared/lazyfs}
# A worktree finds ../shared beside the main checkout, as test.sh finds the advisory bundle.
if [ -z "${LAZYFS_SRC:-}" ] && [ ! -d "$SRC/lazyfs" ]; then
  main_checkout=$(dirname "$(git rev-parse --path-format=absolute --git-common-dir 2>/dev/null || echo "$PWD/.git")")
  SRC=$main_checkout/../shared/lazyfs
fi
OUT=target/lazyfs
if [ ! -d "$SRC/lazyfs" ]; then
  echo "lazyfs: $SRC not found; power-cut tests will skip"
  exit 0
fi
if [ -x "$OUT/lazyfs/build/lazyfs" ]; then
  exit 0
fi

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
need=()
for p in cmake g++ make pkg-config libfuse3-dev fuse3 libtoml11-dev libspdlog-dev; do
  dpkg -s "$p" >/dev/null 2>&1 || need+=("$p")
done
if [ ${#need[@]} -gt 0 ]; then
  echo "installing ${need[*]} (apt-get)"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
# LazyFS mounts with allow_other, which FUSE grants only with this line.
if ! grep -qs '^user_allow_other' /etc/fuse.conf; then
  echo user_allow_other | as_root tee -a /etc/fuse.conf >/dev/null
fi

rm -rf "$OUT"
mkdir -p "$OUT"
cp -r "$SRC/lazyfs" "$SRC/libs" "$OUT/"
chmod -R u+w "$OUT"

# libpcache: Debian's toml11 and spdlog through find_package instead of FetchContent.
python3 - "$OUT" <<'PY'
import re, sys
out = sys.argv[1]
p = f"{out}/libs/libpcache/CMakeLists.txt"
s = open(p).read()
s = re.sub(r"include\(FetchContent\).*?FetchContent_MakeAvailable\(spdlog\)\n",
           "find_package(toml11 REQUIRED)\nfind_package(spdlog REQUIRED)\n", s, flags=re.S)
s = s.replace("set_target_properties(spdlog PROPERTIES POSITION_INDEPENDENT_CODE ON)\n", "")
s = s.replace("target_link_libraries(pcache toml11::toml11 spdlog)",
              "target_link_libraries(pcache toml11::toml11 spdlog::spdlog)")
open(p, "w").write(s)
p = f"{out}/lazyfs/CMakeLists.txt"
s = open(p).read()
s = s.replace("find_package(Threads REQUIRED)",
              "find_package(Threads REQUIRED)\nfind_package(toml11 REQUIRED)\nfind_package(spdlog REQUIRED)")
s = s.replace("target_link_libraries(${CMAKE_PROJECT_NAME} fuse3 Threads::Threads libpcache.so)",
              "target_link_libraries(${CMAKE_PROJECT_NAME} fuse3 Threads::Threads pcache toml11::toml11 spdlog::spdlog)")
open(p, "w").write(s)
PY

jobs=${LAZYFS_BUILD_JOBS:-1}
(cd "$OUT/libs/libpcache" && cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null && cmake --build build -j "$jobs" >/dev/null)
(cd "$OUT/lazyfs" && cmake -S . -B build -DLAZYFS_BUILD_TESTS=OFF -DCMAKE_BUILD_TYPE=Release \
   -DCMAKE_BUILD_RPATH="$(pwd)/../libs/libpcache/build" >/dev/null && cmake --build build -j "$jobs" >/dev/null)
echo "lazyfs: built $OUT/lazyfs/build/lazyfs"
