#!/usr/bin/env bash
# Builds the image from Containerfile with podman and checks what it declares: user, entrypoint,
# command, healthcheck, volume, stop signal, port. Prints the image size. Exits non-zero on any
# mismatch. scripts/test.sh runs it after the tests when EDGERELAY_CONTAINER_CHECK=1.
#
#   scripts/container-check.sh
#   RUST_IMAGE=... RUNTIME_IMAGE=... scripts/container-check.sh   # bases already in local storage
#
# No image registry is contacted (--pull=never). Base images, in this order:
#   1. RUST_IMAGE / RUNTIME_IMAGE from the environment;
#   2. the Containerfile defaults (docker.io/library/rust:1-bookworm, debian:bookworm-slim) when
#      they are already in local storage;
#   3. otherwise local stand-ins, made once and then reused from podman's storage:
#      localhost/edgerelay-base/debian:bookworm-slim, a minbase `debootstrap` of bookworm from the
#      apt mirror this machine uses, and localhost/edgerelay-base/rust:<version>-bookworm, the same
#      plus gcc and ca-certificates plus this machine's Rust toolchain (`rustc --print sysroot`).
# Needs root (debootstrap, chroot, podman's storage); installs podman, buildah and debootstrap
# with apt-get when missing.
#
# RUN steps use `--isolation chroot` (ISOLATION to change it): on machines like CI's, crun and runc
# cannot start containers (cgroups hybrid mode; setrlimit not permitted), and chroot needs neither.
# The same reason makes `podman run` fail there; the script tries it and says so, without failing.
set -euo pipefail
cd "$(dirname "$0")/.."

TAG=${TAG:-localhost/edgerelay:check}
ISOLATION=${ISOLATION:-chroot}
SUITE=bookworm
T0=$SECONDS
say() { echo "container-check: $*"; }
die() { echo "container-check: FAILED: $*" >&2; exit 1; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

missing=()
for tool in podman buildah debootstrap; do
    command -v "$tool" >/dev/null 2>&1 || [ -x "/usr/sbin/$tool" ] || missing+=("$tool")
done
if [ ${#missing[@]} -gt 0 ]; then
    say "installing ${missing[*]} (apt-get)"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
[ "$(id -u)" = 0 ] || die "run as root (podman's root storage, debootstrap, chroot isolation)"
export PATH=$PATH:/usr/sbin:/sbin

# The apt mirror this machine already reaches (deb822 or one-line sources), else Debian's.
debian_mirror() {
    local m
    m=$(grep -hoE 'https?://[^ ]+/debian/?( |$)' /etc/apt/sources.list.d/*.sources \
            /etc/apt/sources.list.d/*.list /etc/apt/sources.list 2>/dev/null | head -n1 | tr -d ' ')
    echo "${m:-http://deb.debian.org/debian}"
}

# Leaves only what an image needs; docs, manuals and locales go as in Debian's -slim images.
slim_rootfs() {
    local r=$1
    rm -rf "$r"/var/cache/apt/archives/*.deb "$r"/var/cache/apt/*.bin "$r"/var/lib/apt/lists/* \
        "$r"/var/log/* "$r"/var/cache/debconf/*-old "$r"/usr/share/man/* "$r"/usr/share/info/* \
        "$r"/usr/share/locale/* "$r"/usr/share/doc-base
    find "$r/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete 2>/dev/null || true
    find "$r/usr/share/doc" -mindepth 1 -type d -empty -delete 2>/dev/null || true
}

make_local_bases() { # runtime_tag rust_tag
    local work mirror sysroot
    mirror=$(debian_mirror)
    sysroot=$(rustc --print sysroot 2>/dev/null) || die "no rustc on this machine for the Rust base"
    if [ ! -x "$sysroot/bin/cargo" ] || [ ! -d "$sysroot/lib/rustlib" ] || [ "$sysroot" = /usr ]; then
        die "rustc's sysroot $sysroot is not a relocatable toolchain with cargo (rustup's is)"
    fi
    work=$(mktemp -d /var/tmp/edgerelay-bases.XXXXXX)
    # shellcheck disable=SC2064
    trap "rm -rf '$work'" EXIT
    say "debootstrap $SUITE from $mirror"
    debootstrap --variant=minbase "$SUITE" "$work/slim" "$mirror" >"$work/debootstrap.log" 2>&1 \
        || { tail -n 20 "$work/debootstrap.log" >&2; die "debootstrap failed"; }
    if ! podman image exists "$2"; then
        say "making $2 (gcc, ca-certificates, Rust from $sysroot)"
        cp -a "$work/slim" "$work/rust"
        chroot "$work/rust" apt-get update -qq
        # (apt-get says it cannot write its log without /dev/pts: harmless.)
        chroot "$work/rust" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
            --no-install-recommends gcc libc6-dev make pkg-config ca-certificates >/dev/null
        mkdir -p "$work/rust/usr/local/rust" "$work/rust/usr/local/cargo"
        tar -C "$sysroot" --exclude=./share/doc -cf - . | tar -C "$work/rust/usr/local/rust" -xf -
        # cargo fetches crates with this machine's trust store (which may hold a TLS-inspecting
        # proxy's CA); the image's own /etc/ssl/certs stays Debian's.
        cp /etc/ssl/certs/ca-certificates.crt "$work/rust/usr/local/share/host-ca-bundle.crt"
        slim_rootfs "$work/rust"
        tar -C "$work/rust" -cf - . | podman import \
            --change 'ENV CARGO_HOME=/usr/local/cargo' \
            --change 'ENV CARGO_HTTP_CAINFO=/usr/local/share/host-ca-bundle.crt' \
            --change 'ENV PATH=/usr/local/cargo/bin:/usr/local/rust/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
            --change 'CMD ["bash"]' - "$2" >/dev/null
    fi
    if ! podman image exists "$1"; then
        say "making $1"
        slim_rootfs "$work/slim"
        tar -C "$work/slim" -cf - . | podman import \
            --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
            --change 'CMD ["bash"]' - "$1" >/dev/null
    fi
    rm -rf "$work"
    trap - EXIT
}

if [ -n "${RUST_IMAGE:-}${RUNTIME_IMAGE:-}" ]; then
    : "${RUST_IMAGE:?set both RUST_IMAGE and RUNTIME_IMAGE}" "${RUNTIME_IMAGE:?set both}"
elif podman image exists docker.io/library/rust:1-bookworm \
    && podman image exists docker.io/library/debian:bookworm-slim; then
    RUST_IMAGE=docker.io/library/rust:1-bookworm
    RUNTIME_IMAGE=docker.io/library/debian:bookworm-slim
else
    RUNTIME_IMAGE=localhost/edgerelay-base/debian:bookworm-slim
    RUST_IMAGE="localhost/edgerelay-base/rust:$(rustc --version | awk '{print $2}')-$SUITE"
    if ! podman image exists "$RUNTIME_IMAGE" || ! podman image exists "$RUST_IMAGE"; then
        make_local_bases "$RUNTIME_IMAGE" "$RUST_IMAGE"
    fi
fi
for img in "$RUST_IMAGE" "$RUNTIME_IMAGE"; do
    podman image exists "$img" || die "base image $img is not in local storage"
done
say "bases $RUST_IMAGE, $RUNTIME_IMAGE ($((SECONDS - T0)) s so far)"

# docker format: the OCI image format has no HEALTHCHECK, and podman drops it there.
T1=$SECONDS
podman build --format docker --pull=never --isolation "$ISOLATION" -f Containerfile -t "$TAG" \
    --build-arg RUST_IMAGE="$RUST_IMAGE" --build-arg RUNTIME_IMAGE="$RUNTIME_IMAGE" . \
    || die "podman build"
say "built $TAG in $((SECONDS - T1)) s"

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
keys() { inspect "{{range \$k, \$v := .Config.$1}}{{\$k}} {{end}}"; }

expect user "$(inspect '{{.Config.User}}')" "10001:10001"
expect entrypoint "$(inspect '{{json .Config.Entrypoint}}')" '["/usr/local/bin/edgerelay"]'
expect cmd "$(inspect '{{json .Config.Cmd}}')" '["run","--config","/etc/edgerelay/config.toml"]'
expect healthcheck "$(inspect '{{json .Config.Healthcheck.Test}}')" \
    '["CMD","/usr/local/bin/edgerelay","healthcheck","--url","http://127.0.0.1:8734/healthz"]'
expect volumes "$(keys Volumes)" "/var/lib/edgerelay "
expect stopsignal "$(inspect '{{.Config.StopSignal}}')" "SIGTERM"
expect ports "$(keys ExposedPorts)" "8734/tcp "
expect workdir "$(inspect '{{.Config.WorkingDir}}')" "/var/lib/edgerelay"

# The user exists in the image and owns the volume's directory; the config is where CMD says.
mnt=$(podman image mount "$TAG")
expect passwd "$(grep '^edgerelay:' "$mnt/etc/passwd" | cut -d: -f1,3,4 || true)" "edgerelay:10001:10001"
expect volume-owner "$(stat -c %u:%g "$mnt/var/lib/edgerelay")" "10001:10001"
expect config "$(test -f "$mnt/etc/edgerelay/config.toml" && echo present || echo missing)" present
expect ca-bundle "$(test -s "$mnt/etc/ssl/certs/ca-certificates.crt" && echo present || echo missing)" present
mnt_config=$(mktemp)
cp "$mnt/etc/edgerelay/config.toml" "$mnt_config"
podman image unmount "$TAG" >/dev/null

size=$(podman image inspect --format '{{.Size}}' "$TAG")
say "image size: $((size / 1000000)) MB ($size bytes, uncompressed; podman image ls shows the same)"

# The image's process for real, without an OCI runtime: `buildah run --isolation chroot` starts
# it as the image's user in a working container of the image (host network, so free ports and a
# config of its own), then the HEALTHCHECK's command must pass and SIGTERM must stop it cleanly.
smoke() {
    local dir ctr runner rc=0 healthy=0 p1 p2 i fail_before=$fail
    dir=$(mktemp -d /tmp/edgerelay-check.XXXXXX)
    chmod 0777 "$dir"
    read -r p1 p2 < <(python3 -c 'import socket
s = [socket.socket() for _ in range(2)]
for x in s: x.bind(("127.0.0.1", 0))
print(*[x.getsockname()[1] for x in s])')
    sed -e "s|0.0.0.0:8734|127.0.0.1:$p1|" -e "s|127.0.0.1:1883|127.0.0.1:$p2|g" \
        -e 's|edgerelay-demo|edgerelay-check|' "$mnt_config" >"$dir/config.toml"
    chmod 0644 "$dir/config.toml"
    ctr=$(buildah from --pull-never --name "edgerelay-check-$$" "$TAG")
    # shellcheck disable=SC2016
    timeout 120 buildah run --isolation chroot -v "$dir:/run/check" "$ctr" -- /bin/sh -c \
        'echo $$ >/run/check/pid; exec /usr/local/bin/edgerelay run -c /run/check/config.toml' \
        >"$dir/log" 2>&1 &
    runner=$!
    for i in $(seq 30); do
        sleep 1
        if buildah run --isolation chroot "$ctr" -- /usr/local/bin/edgerelay healthcheck \
            --url "http://127.0.0.1:$p1/healthz" >/dev/null 2>&1; then
            healthy=1
            break
        fi
    done
    expect "healthcheck (running as $(buildah run --isolation chroot "$ctr" -- id -u))" \
        "$([ $healthy = 1 ] && echo "healthy after $i s" || echo unhealthy)" "healthy after $i s"
    if [ -s "$dir/pid" ]; then kill -TERM "$(cat "$dir/pid")" 2>/dev/null || true; fi
    wait "$runner" || rc=$?
    expect "SIGTERM" "exit $rc, $(grep -c 'every queued delivery was sent' "$dir/log") clean stop" \
        "exit 0, 1 clean stop"
    [ "$fail" = "$fail_before" ] || tail -n 20 "$dir/log"
    buildah rm "$ctr" >/dev/null
    rm -rf "$dir"
}
if [ "$ISOLATION" = chroot ]; then
    smoke
fi
rm -f "$mnt_config"

# podman run does not work on every machine (see the top); when it does, the binary answers.
if out=$(timeout 60 podman run --rm --network none "$TAG" check -c /etc/edgerelay/config.toml 2>&1); then
    echo "ok   podman run: edgerelay check in the image"
else
    say "note: podman run does not work here, skipped ($(echo "$out" | tail -n1))"
fi

[ "$fail" = 0 ] || die "the image does not declare what the Containerfile promises (FAIL lines above)"
say "all checks passed ($((SECONDS - T0)) s in all)"
