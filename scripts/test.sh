#!/usr/bin/env bash
# Installs what the tests need when it is missing, then runs the whole test suite.
# Works on a fresh Debian machine with Rust installed; run as root or with sudo available.
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

# Mosquitto: the real broker the end-to-end tests publish through (Debian package).
if ! command -v mosquitto >/dev/null 2>&1 && [ ! -x /usr/sbin/mosquitto ]; then
  echo "installing mosquitto (apt-get)"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mosquitto >/dev/null
fi
# The Debian package starts a system broker on 1883; tests use their own on free ports.

# Chromium: tests/status_page.rs renders /status in it, headless (Debian package; no WebDriver).
if [ ! -x /usr/bin/chromium ]; then
  echo "installing chromium (apt-get)"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi

# moto_server: the S3-compatible server of tests/object_store.rs (PyPI, in a venv).
if [ ! -x target/venv/bin/moto_server ]; then
  echo "installing moto[server] into target/venv (pip)"
  if ! python3 -m venv target/venv 2>/dev/null; then
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
    python3 -m venv target/venv
  fi
  target/venv/bin/pip install -q 'moto[server]'
fi

# Azurite: the Azure Blob emulator (npm). 3.35 is the last release that runs on Node 20.
if [ ! -x target/azurite/node_modules/.bin/azurite-blob ]; then
  if ! command -v npm >/dev/null 2>&1; then
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null
  fi
  echo "installing azurite@3.35 into target/azurite (npm)"
  npm install --silent --no-audit --no-fund --prefix target/azurite azurite@3.35
fi

# LazyFS: the file system that forgets unsynced writes, for tests/power_cut.rs (FUSE, built
# once into target/lazyfs from ../shared/lazyfs; the tests skip and say so where it is missing).
scripts/lazyfs.sh || echo "lazyfs: build failed; tests/power_cut.rs will skip"

# Four test threads: each end-to-end test mostly waits on real processes and sockets.
cargo test --all-targets -- --test-threads="${EDGERELAY_TEST_THREADS:-4}" "$@"

# The container image check: opt-in, because a cold build takes ~18 minutes on 2 cores
# (warm: seconds). EDGERELAY_CONTAINER_CHECK=1 scripts/test.sh runs it after the tests.
if [ "${EDGERELAY_CONTAINER_CHECK:-0}" = 1 ]; then
  scripts/container-check.sh
fi
