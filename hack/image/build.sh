#!/usr/bin/env bash
# Build the tritonfleet image from the Dockerfile, here, with podman and no network
# in the build (`make image`; the pod runner's fixture runs it too):
#
#   hack/image/build.sh      # progress on stderr; the image reference last on stdout
#
# 1. podman, runc and debootstrap from Debian when missing (lib.sh);
# 2. the base image (base.sh: made locally, or $TRITONFLEET_IMAGE_BASE);
# 3. the image's tag: src-<hash of everything that goes into it> (the Dockerfile, the
#    package's files, pyproject.toml, README.md, these scripts, the base); an image
#    with that tag exists already: done (well under a second);
# 4. the wheelhouse (wheelhouse.sh) and `podman build --network=none` with
#    BASE_IMAGE=<base> WHEELHOUSE=context; also tagged :dev;
# 5. a check that it starts (`tritonfleet --version` in a container), its size;
# 6. src-* images older than a day and not used by a container are removed, and
#    the build cache older than a day (a later build may then reinstall the deps).
#
# The content tag keeps checkouts apart: two worktrees on one machine never run each
# other's code. Environment: TRITONFLEET_CACHE, TRITONFLEET_IMAGE_BASE (base.sh).
set -euo pipefail
# shellcheck source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

ensure_tools
BASE="$("$IMAGE_HACK_DIR/base.sh")"

inputs_hash() {
  (
    cd "$IMAGE_REPO_ROOT"
    echo "base $BASE $(podman_ image inspect --format '{{.Id}}' "$BASE" 2>/dev/null || true)"
    find operator -type f ! -name '*.pyc' ! -path '*/__pycache__/*' -print0 | sort -z \
      | xargs -0 sha256sum
    sha256sum Dockerfile pyproject.toml README.md hack/image/*.sh hack/image/versions.env
  ) | sha256sum | cut -c1-12
}
REF="$IMAGE_REPOSITORY:src-$(inputs_hash)"
if podman_ image exists "$REF"; then
  img_say "$REF is up to date"
  echo "$REF"
  exit 0
fi
lock_cache
if podman_ image exists "$REF"; then  # built by whoever held the lock
  echo "$REF"
  exit 0
fi

start=$(date +%s)
mkdir -p "$IMAGE_LOG_DIR"
CONTEXT="$(mktemp -d "$IMAGE_CACHE/.context-XXXXXX")"
trap 'rm -rf "$CONTEXT"' EXIT
"$IMAGE_HACK_DIR/wheelhouse.sh" "$CONTEXT"
img_say "podman build $REF (base $BASE, no network)..."
podman_ build --network=none --layers \
  --build-arg "BASE_IMAGE=$BASE" --build-arg WHEELHOUSE=context \
  --file "$IMAGE_REPO_ROOT/Dockerfile" --tag "$REF" --tag "$IMAGE_REPOSITORY:dev" \
  "$CONTEXT" >"$IMAGE_LOG_DIR/build.log" 2>&1 \
  || { tail -n 30 "$IMAGE_LOG_DIR/build.log" >&2; img_die "podman build failed; see $IMAGE_LOG_DIR/build.log"; }

version="$(podman_ run --rm --network=none "$REF" --version 2>&1)" \
  || img_die "the image does not start: $version"
expected="tritonfleet $(sed -n 's/^version = "\(.*\)"/\1/p' "$IMAGE_REPO_ROOT/pyproject.toml")"
[[ "$version" == "$expected" ]] || img_die "tritonfleet --version in the image says '$version', not '$expected'"
size=$(( $(podman_ image inspect --format '{{.Size}}' "$REF") / 1000000 ))
img_say "built $REF in $(( $(date +%s) - start ))s: $version, $size MB"

# Old content tags of any checkout (an image a container still uses is kept), then
# the build cache they leave behind.
podman_ images --filter "reference=$IMAGE_REPOSITORY:src-*" --filter until=24h \
  --format '{{.Repository}}:{{.Tag}}' | while read -r old; do
  [[ "$old" == "$REF" ]] || podman_ rmi "$old" >/dev/null 2>&1 || true
done
podman_ image prune --force --filter until=24h >/dev/null 2>&1 || true
echo "$REF"
