#!/usr/bin/env bash
# Build Pollen's edge images where no container registry can be reached:
#   1. install docker.io + debootstrap if missing, start dockerd if no engine answers;
#   2. make the Debian base `pollen-base:bookworm` with debootstrap + docker import;
#   3. stage build inputs that live on this host (a torch CPU wheel, this host's CA bundle);
#   4. docker build pollen-server and pollen-client.
# Usage: docker/bootstrap.sh [--base-only] [--rebuild-base] [--no-build]   (as root, from anywhere)
# Env: POLLEN_IMAGE_TAG (0.1.0), POLLEN_BASE_IMAGE (pollen-base:bookworm), DEBIAN_MIRROR and
#      DEBIAN_SECURITY_MIRROR (deb.debian.org), TORCH_VERSION (2.13.0), TORCH_INDEX_URL (empty:
#      the host's pip configuration picks the wheel; e.g. https://download.pytorch.org/whl/cpu).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
STAGE="$ROOT/docker/context"
TAG="${POLLEN_IMAGE_TAG:-0.1.0}"
BASE="${POLLEN_BASE_IMAGE:-pollen-base:bookworm}"
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
SECURITY_MIRROR="${DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}"
TORCH_VERSION="${TORCH_VERSION:-2.13.0}"
TORCH_INDEX_URL="${TORCH_INDEX_URL:-}"
PYTHON="${PYTHON:-python3}"
BASE_ONLY=0
REBUILD_BASE=0
BUILD=1
for arg in "$@"; do
  case "$arg" in
    --base-only) BASE_ONLY=1 ;;
    --rebuild-base) REBUILD_BASE=1 ;;
    --no-build) BUILD=0 ;;
    -h|--help) sed -n '2,11p' "$0"; exit 0 ;;
    *) echo "bootstrap.sh: unknown option $arg" >&2; exit 2 ;;
  esac
done

log() { printf '[bootstrap] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

[ "$(id -u)" -eq 0 ] || die "run as root (apt-get, dockerd and debootstrap need it)"

# 1. Engine ------------------------------------------------------------------------------------
if ! command -v dockerd >/dev/null 2>&1 || ! command -v debootstrap >/dev/null 2>&1; then
  log "installing docker.io and debootstrap"
  apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
    docker.io debootstrap ca-certificates
fi
if ! docker info >/dev/null 2>&1; then
  log "no Docker engine answers; starting dockerd (log: /var/log/pollen-dockerd.log)"
  nohup dockerd >/var/log/pollen-dockerd.log 2>&1 &
  for _ in $(seq 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
  docker info >/dev/null 2>&1 || die "dockerd did not come up; see /var/log/pollen-dockerd.log"
fi

# 2. Base image --------------------------------------------------------------------------------
# (`docker import` to an existing tag just moves the tag, so a rebuild needs no removal.)
if [ "$REBUILD_BASE" -eq 0 ] && docker image inspect "$BASE" >/dev/null 2>&1; then
  log "base image $BASE exists"
else
  ROOTFS="$(mktemp -d /tmp/pollen-rootfs.XXXXXX)"
  trap 'rm -rf "$ROOTFS"' EXIT
  log "debootstrap --variant=minbase bookworm from $MIRROR"
  debootstrap --variant=minbase bookworm "$ROOTFS" "$MIRROR" >/tmp/pollen-debootstrap.log 2>&1 \
    || die "debootstrap failed; see /tmp/pollen-debootstrap.log"
  # Point releases and security fixes, as in the official debian images.
  cat >"$ROOTFS/etc/apt/sources.list" <<EOF
deb $MIRROR bookworm main
deb $MIRROR bookworm-updates main
deb $SECURITY_MIRROR bookworm-security main
EOF
  # Same slimming the official debian images do: no apt caches, docs or man pages.
  rm -rf "$ROOTFS"/var/cache/apt/archives/*.deb "$ROOTFS"/var/lib/apt/lists/* \
         "$ROOTFS"/usr/share/doc/* "$ROOTFS"/usr/share/man/*
  tar -C "$ROOTFS" -c . | docker import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'CMD ["/bin/bash"]' - "$BASE" >/dev/null
  rm -rf "$ROOTFS"
  trap - EXIT
  log "imported $BASE"
fi
[ "$BASE_ONLY" -eq 1 ] && exit 0

# 3. Host-side build inputs (docker/context/, git-ignored) ----------------------------------------
mkdir -p "$STAGE/wheels"
# Outbound TLS may be re-signed by a proxy: pip inside the build trusts what this host trusts.
if [ -s /etc/ssl/certs/ca-certificates.crt ]; then
  cp /etc/ssl/certs/ca-certificates.crt "$STAGE/ca-certificates.crt"
fi
if ! ls "$STAGE"/wheels/torch-"$TORCH_VERSION"*.whl >/dev/null 2>&1; then
  log "staging torch==$TORCH_VERSION (CPU wheel) for the image"
  extra=()
  [ -n "$TORCH_INDEX_URL" ] && extra=(--index-url "$TORCH_INDEX_URL")
  "$PYTHON" -m pip download --no-deps --only-binary=:all: --python-version 3.11 \
    --platform manylinux_2_28_x86_64 "${extra[@]}" -d "$STAGE/wheels" "torch==$TORCH_VERSION"
fi

# 4. Images ------------------------------------------------------------------------------------
[ "$BUILD" -eq 1 ] || exit 0
for role in server client; do
  log "building pollen-$role:$TAG"
  docker build --force-rm -f "$ROOT/docker/$role.Dockerfile" -t "pollen-$role:$TAG" \
    --build-arg BASE_IMAGE="$BASE" --build-arg TORCH_VERSION="$TORCH_VERSION" "$ROOT"
done
log "done: pollen-server:$TAG pollen-client:$TAG"
