#!/usr/bin/env bash
# Builds the image from Containerfile and checks what it declares: user, entrypoint,
# healthcheck, volume, stop signal, exposed port. Needs podman and the base images present
# locally (no registry is contacted: --pull=never); otherwise it says it skipped and exits 0.
# Not part of the test suite.
#
#   scripts/container-check.sh            # base images from the Containerfile defaults
#   RUST_IMAGE=... RUNTIME_IMAGE=... scripts/container-check.sh
set -euo pipefail
cd "$(dirname "$0")/.."

RUST_IMAGE=${RUST_IMAGE:-docker.io/library/rust:1-bookworm}
RUNTIME_IMAGE=${RUNTIME_IMAGE:-docker.io/library/debian:bookworm-slim}
TAG=${TAG:-localhost/edgerelay:check}

skip() { echo "container-check: skipped: $*"; exit 0; }

command -v podman >/dev/null 2>&1 || skip "podman is not installed"
for img in "$RUST_IMAGE" "$RUNTIME_IMAGE"; do
    podman image exists "$img" || skip "base image $img is not present locally"
done

# docker format: the OCI format drops HEALTHCHECK.
podman build --format docker --pull=never -f Containerfile -t "$TAG" \
    --build-arg RUST_IMAGE="$RUST_IMAGE" --build-arg RUNTIME_IMAGE="$RUNTIME_IMAGE" .

fail=0
expect() { # name, actual, wanted
    if [[ "$2" == "$3" ]]; then
        echo "ok   $1: $2"
    else
        echo "FAIL $1: got '$2', want '$3'"
        fail=1
    fi
}
inspect() { podman image inspect --format "$1" "$TAG"; }

expect user "$(inspect '{{.Config.User}}')" "edgerelay:edgerelay"
expect entrypoint "$(inspect '{{json .Config.Entrypoint}}')" '["/usr/local/bin/edgerelay"]'
expect cmd "$(inspect '{{json .Config.Cmd}}')" '["run","--config","/etc/edgerelay/config.toml"]'
expect healthcheck "$(inspect '{{json .Config.Healthcheck.Test}}')" \
    '["CMD","/usr/local/bin/edgerelay","healthcheck","--url","http://127.0.0.1:9090/healthz"]'
expect volume "$(inspect '{{range $k, $v := .Config.Volumes}}{{$k}} {{end}}')" "/var/lib/edgerelay "
expect stopsignal "$(inspect '{{.Config.StopSignal}}')" "SIGTERM"
expect port "$(inspect '{{range $k, $v := .Config.ExposedPorts}}{{$k}} {{end}}')" "9090/tcp "

# The binary in the image answers without a network (podman run may not work everywhere).
if podman run --rm --entrypoint /usr/local/bin/edgerelay "$TAG" check -c /etc/edgerelay/config.toml; then
    echo "ok   edgerelay check inside the image"
else
    echo "note: podman run did not work here; image metadata checked only"
fi
exit $fail
