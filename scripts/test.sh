#!/usr/bin/env bash
# Checks formatting, lints and dependencies, installs what the tests need when it is missing,
# then runs the whole test suite.
# Works on a fresh Debian machine with Rust installed; run as root or with sudo available.
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

# Formatting and lints first: they fail in seconds, before anything is installed or tested.
cargo fmt --check
cargo clippy --all-targets --locked -- -D warnings

# cargo-deny: licenses, bans and sources of every dependency, and RustSec advisories
# (deny.toml says what is allowed and why each ignored advisory does not apply).
# Installed once into target/tools, then cached with target/. A debug build: it installed in
# 2.3 minutes against 11.4 for a release build (one job, shared 2-core machine), and checks
# this tree in 3.5 s instead of 1.3 s per platform.
CARGO_DENY_VERSION=0.20.2
CARGO_DENY=target/tools/bin/cargo-deny
if ! "$CARGO_DENY" --version 2>/dev/null | grep -qx "cargo-deny $CARGO_DENY_VERSION"; then
  echo "installing cargo-deny $CARGO_DENY_VERSION into target/tools (cargo install, ~2 minutes)"
  cargo install --locked --debug --quiet "cargo-deny@$CARGO_DENY_VERSION" --root target/tools
fi
# The advisory database: no machine here reaches GitHub, so it comes from a dated snapshot of
# the RustSec database as a one-commit git bundle in ../shared, next to the main checkout
# (EDGERELAY_ADVISORY_DB_BUNDLE overrides). cargo-deny opens the default database from
# db-path (deny.toml) + this directory name, and `--offline` keeps it from fetching.
advisory_db=target/advisory-db/advisory-db-3157b0e258782691
main_checkout=$(dirname "$(git rev-parse --path-format=absolute --git-common-dir 2>/dev/null || echo "$PWD/.git")")
bundle=${EDGERELAY_ADVISORY_DB_BUNDLE:-}
for candidate in ../shared/advisory-db.bundle "$main_checkout/../shared/advisory-db.bundle"; do
  if [ -z "$bundle" ] && [ -f "$candidate" ]; then bundle=$candidate; fi
done
deny_checks=(advisories bans licenses sources)
if [ -n "$bundle" ]; then
  # Cloned again whenever the bundle holds another snapshot; cloning takes about a second.
  want=$(git bundle list-heads "$bundle" HEAD | cut -d' ' -f1)
  if [ "$(git -C "$advisory_db" rev-parse HEAD 2>/dev/null)" != "$want" ]; then
    rm -rf "$advisory_db"
    git clone --quiet "$bundle" "$advisory_db"
  fi
  echo "cargo deny: advisories from $(git -C "$advisory_db" log -1 --format=%s)"
else
  echo "cargo deny: SKIPPING the advisories check: no ../shared/advisory-db.bundle" \
       "(set EDGERELAY_ADVISORY_DB_BUNDLE, or run \`cargo deny check\` where GitHub is reachable)"
  deny_checks=(bans licenses sources)
fi
# Once per shipped platform, so cargo-deny reads only that platform's crates (`cargo fetch`
# downloads any the build did not; nothing when they are there). Duplicate versions are
# listed by a plain `cargo deny check`.
for target in x86_64-unknown-linux-gnu aarch64-unknown-linux-gnu; do
  cargo fetch --locked --quiet --target "$target"
  "$CARGO_DENY" --offline --locked --target "$target" \
    check --hide-inclusion-graph --allow duplicate "${deny_checks[@]}"
done

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
  # Pinned: moto 5.2.1 answers CompleteMultipartUpload with a root element the AWS SDK
  # refuses, so the multipart test depends on the version; 5.2.6 is the one measured here.
  target/venv/bin/pip install -q 'moto[server]==5.2.6'
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
