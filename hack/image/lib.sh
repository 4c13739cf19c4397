# shellcheck shell=bash
# Shared by hack/image/*.sh: the cache layout, podman's configuration, and the
# tools (podman, runc, debootstrap) installed from Debian when they are missing.
#
#   ${TRITONFLEET_CACHE:-~/.cache/tritonfleet}/image/
#     base-<suite>-<key>.tar     the debootstrapped base root filesystem (podman import)
#     wheels-<key>/              the dependencies' wheels for the image's Python (+ pip)
#     logs/                      debootstrap and build logs of the last cold runs
#
# The images themselves live in podman's storage (root: /var/lib/containers).

IMAGE_HACK_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
IMAGE_REPO_ROOT="$(cd "$IMAGE_HACK_DIR/../.." && pwd)"
# shellcheck source=versions.env
. "$IMAGE_HACK_DIR/versions.env"

IMAGE_CACHE="${TRITONFLEET_CACHE:-$HOME/.cache/tritonfleet}/image"
IMAGE_LOG_DIR="$IMAGE_CACHE/logs"
# runc, cgroupfs, file events, accepted ulimits: see containers.conf.
export CONTAINERS_CONF="${TRITONFLEET_CONTAINERS_CONF:-$IMAGE_HACK_DIR/containers.conf}"

img_say() { printf '[image] %s\n' "$*" >&2; }
img_die() { printf '[image] ERROR: %s\n' "$*" >&2; exit 1; }

# Root runs podman and debootstrap directly; anyone else through passwordless sudo.
as_root() {
  if [[ "$(id -u)" == 0 ]]; then "$@"; else sudo -n env CONTAINERS_CONF="$CONTAINERS_CONF" "$@"; fi
}

# podman, runc (crun fails on a hybrid cgroup hierarchy) and debootstrap, from Debian.
ensure_tools() {
  local missing=() tool
  for tool in podman runc debootstrap; do
    command -v "$tool" >/dev/null 2>&1 || [[ -x "/usr/sbin/$tool" ]] || missing+=("$tool")
  done
  [[ ${#missing[@]} -eq 0 ]] && return 0
  command -v apt-get >/dev/null 2>&1 \
    || img_die "need ${missing[*]} (no apt-get here: install podman, runc and debootstrap)"
  img_say "apt-get install podman runc debootstrap (missing: ${missing[*]})"
  export DEBIAN_FRONTEND=noninteractive
  local pkgs=(podman runc debootstrap) log="$IMAGE_LOG_DIR/apt-get.log"
  mkdir -p "$IMAGE_LOG_DIR"
  as_root apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >"$log" 2>&1 \
    || { as_root apt-get update -qq >>"$log" 2>&1 \
         && as_root apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >>"$log" 2>&1; } \
    || { tail -n 20 "$log" >&2; img_die "apt-get install ${pkgs[*]} failed; see $log"; }
}

podman_() { as_root podman "$@"; }

# One cold build at a time per cache (the pytest fixture and `make image` may race).
lock_cache() {
  mkdir -p "$IMAGE_CACHE"
  exec 9>"$IMAGE_CACHE/.lock"
  if ! flock -n 9; then
    img_say "another image build is running; waiting for $IMAGE_CACHE/.lock"
    flock 9
  fi
}
