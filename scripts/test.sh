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

# Two jobs: the machine has 2 cores, and each end-to-end test runs real processes.
cargo test --all-targets -- --test-threads="${EDGERELAY_TEST_THREADS:-4}" "$@"
