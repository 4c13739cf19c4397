#!/usr/bin/env bash
# The base image `make image` builds on, printed on stdout (progress on stderr).
#
# Users build from python:3.11-slim. Here no registry is reachable, so the base is
# made locally: `debootstrap --variant=minbase` of Debian bookworm with python3 and
# ca-certificates (Python 3.11, like python:3.11-slim), trimmed of what an image
# does not need (apt lists and caches, man pages, docs but their copyright files,
# translations), kept as a tarball in the cache and `podman import`ed as
# localhost/tritonfleet-base:<suite>-<key>. Cold: about a minute and a half (the
# download); warm: one `podman image exists`.
#
# Environment:
#   TRITONFLEET_IMAGE_BASE      use this image instead (e.g. python:3.11-slim where a
#                               registry is reachable); nothing is made
#   TRITONFLEET_DEBIAN_MIRROR   the Debian mirror (default: the one apt uses here)
#   TRITONFLEET_CACHE           cache root (default ~/.cache/tritonfleet)
set -euo pipefail
# shellcheck source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

if [[ -n "${TRITONFLEET_IMAGE_BASE:-}" ]]; then
  echo "$TRITONFLEET_IMAGE_BASE"
  exit 0
fi

KEY="$(printf '%s\n' "$IMAGE_DEBIAN_SUITE" "$IMAGE_DEBIAN_PACKAGES" "$IMAGE_BASE_RECIPE" \
  | sha256sum | cut -c1-12)"
REF="localhost/tritonfleet-base:$IMAGE_DEBIAN_SUITE-$KEY"
TARBALL="$IMAGE_CACHE/base-$IMAGE_DEBIAN_SUITE-$KEY.tar"

ensure_tools
if podman_ image exists "$REF"; then
  echo "$REF"
  exit 0
fi
lock_cache
if podman_ image exists "$REF"; then  # imported by whoever held the lock
  echo "$REF"
  exit 0
fi

if [[ ! -f "$TARBALL" ]]; then
  mirror="${TRITONFLEET_DEBIAN_MIRROR:-}"
  if [[ -z "$mirror" ]]; then
    # " 500 http://deb.debian.org/debian bookworm/main amd64 Packages"
    mirror="$(apt-cache policy 2>/dev/null \
      | awk -v s="$IMAGE_DEBIAN_SUITE/main" '$3 == s && $2 ~ /^https?:/ {print $2; exit}')"
  fi
  mirror="${mirror:-http://deb.debian.org/debian}"
  mkdir -p "$IMAGE_LOG_DIR"
  rootfs="$(mktemp -d "$IMAGE_CACHE/.rootfs-XXXXXX")"
  cleanup() { as_root rm -rf "$rootfs"; }
  trap cleanup EXIT
  start=$(date +%s)
  img_say "debootstrap --variant=minbase $IMAGE_DEBIAN_SUITE ($IMAGE_DEBIAN_PACKAGES) from $mirror (about a minute)..."
  as_root debootstrap --variant=minbase --include="$IMAGE_DEBIAN_PACKAGES" \
    "$IMAGE_DEBIAN_SUITE" "$rootfs" "$mirror" >"$IMAGE_LOG_DIR/debootstrap.log" 2>&1 \
    || img_die "debootstrap failed; see $IMAGE_LOG_DIR/debootstrap.log"
  as_root rm -rf "$rootfs"/var/cache/apt/* "$rootfs"/var/lib/apt/lists/* \
    "$rootfs"/usr/share/man "$rootfs"/usr/share/info "$rootfs"/usr/share/locale
  as_root find "$rootfs/usr/share/doc" -mindepth 1 ! -type d ! -name copyright -delete
  as_root find "$rootfs/usr/share/doc" -mindepth 1 -type d -empty -delete
  as_root find "$rootfs/var/log" -type f -delete
  as_root tar --numeric-owner -C "$rootfs" -cf "$TARBALL.tmp" .
  mv "$TARBALL.tmp" "$TARBALL"
  img_say "base root filesystem in $(( $(date +%s) - start ))s: $TARBALL ($(du -m "$TARBALL" | cut -f1) MB)"
fi

podman_ import --quiet --change 'ENV LANG=C.UTF-8' \
  --message "debootstrap $IMAGE_DEBIAN_SUITE ($IMAGE_DEBIAN_PACKAGES)" \
  "$TARBALL" "$REF" >/dev/null
img_say "imported $REF"
echo "$REF"
