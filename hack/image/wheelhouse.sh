#!/usr/bin/env bash
# The wheelhouse the Dockerfile installs from (WHEELHOUSE=context),
# made on the host so the image build itself needs no network:
#
#   hack/image/wheelhouse.sh CONTEXT_DIR   # fills CONTEXT_DIR/wheelhouse/{app,deps,tools}
#
#   app/    the tritonfleet wheel of this checkout (`uv build`, under a second)
#   deps/   its dependencies, resolved by `uv pip compile` for the image's Python and
#           glibc (versions.env), downloaded as wheels only; requirements.txt lists them
#   tools/  pip's wheel: the build runs pip from it
#
# deps/ and tools/ are cached in ${TRITONFLEET_CACHE}/image/wheels-<key>/, keyed by
# pyproject.toml and versions.env: warm, nothing is downloaded. The host's network
# (and its CA bundle: pip and uv honour SSL_CERT_FILE/PIP_CERT) is used only here.
set -euo pipefail
# shellcheck source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

CONTEXT="${1:?usage: hack/image/wheelhouse.sh CONTEXT_DIR}"
VENV_BIN="$IMAGE_REPO_ROOT/.venv/bin"
[[ -x "$VENV_BIN/uv" && -x "$VENV_BIN/python" ]] || img_die "no .venv with uv: run make venv"
export UV_CACHE_DIR="${UV_CACHE_DIR:-${TRITONFLEET_CACHE:-$HOME/.cache/tritonfleet}/uv}"
export PIP_CACHE_DIR="${PIP_CACHE_DIR:-${TRITONFLEET_CACHE:-$HOME/.cache/tritonfleet}/pip}"
export PIP_DISABLE_PIP_VERSION_CHECK=1

ARCH="$(uname -m)"
KEY="$(cat "$IMAGE_REPO_ROOT/pyproject.toml" "$IMAGE_HACK_DIR/versions.env" - <<<"$ARCH" \
  | sha256sum | cut -c1-12)"
WHEELS="$IMAGE_CACHE/wheels-$KEY"

if [[ ! -f "$WHEELS/.complete" ]]; then
  start=$(date +%s)
  tmp="$(mktemp -d "$IMAGE_CACHE/.wheels-XXXXXX")"
  trap 'rm -rf "$tmp"' EXIT
  img_say "resolving tritonfleet's dependencies for Python $IMAGE_PYTHON_VERSION, glibc $IMAGE_GLIBC_VERSION ($ARCH)"
  "$VENV_BIN/uv" pip compile --quiet --no-header --no-annotate \
    --python-version "$IMAGE_PYTHON_VERSION" \
    --python-platform "$ARCH-manylinux_${IMAGE_GLIBC_VERSION//./_}" \
    --output-file "$tmp/requirements.txt" "$IMAGE_REPO_ROOT/pyproject.toml" \
    || img_die "uv pip compile failed"
  # pip --platform takes exact tags: every manylinux glibc up to the image's.
  platforms=()
  glibc_minor="${IMAGE_GLIBC_VERSION#2.}"
  for ((minor = glibc_minor; minor >= 5; minor--)); do
    platforms+=(--platform "manylinux_2_${minor}_$ARCH")
  done
  platforms+=(--platform "manylinux2014_$ARCH" --platform "manylinux2010_$ARCH" --platform "manylinux1_$ARCH")
  img_say "downloading $(grep -c '==' "$tmp/requirements.txt") wheels into $WHEELS"
  "$VENV_BIN/python" -m pip download --quiet --no-deps --only-binary=:all: \
    --implementation cp --python-version "$IMAGE_PYTHON_VERSION" \
    --abi "cp${IMAGE_PYTHON_VERSION//./}" "${platforms[@]}" \
    --dest "$tmp/deps" --requirement "$tmp/requirements.txt" >&2 \
    || img_die "pip download of the dependencies failed"
  "$VENV_BIN/python" -m pip download --quiet --no-deps --only-binary=:all: \
    --dest "$tmp/tools" "pip==$IMAGE_PIP_VERSION" >&2 \
    || img_die "pip download of pip==$IMAGE_PIP_VERSION failed"
  touch "$tmp/.complete"
  rm -rf "$WHEELS"
  mv -T "$tmp" "$WHEELS"
  trap - EXIT
  img_say "wheelhouse in $(( $(date +%s) - start ))s ($(du -sm "$WHEELS" | cut -f1) MB)"
fi

# Wheelhouses of other pyproject.toml versions nobody used for a week go.
touch "$WHEELS/.used"
for old in "$IMAGE_CACHE"/wheels-*; do
  [[ "$old" == "$WHEELS" || ! -d "$old" ]] && continue
  [[ -n "$(find "$old/.used" -mtime -7 2>/dev/null)" ]] || rm -rf "$old"
done

mkdir -p "$CONTEXT/wheelhouse"
rm -rf "$CONTEXT/wheelhouse"/{app,deps,tools}
# Hard links when the context is on the cache's filesystem: no copy of 70 MB.
cp -al "$WHEELS/deps" "$WHEELS/tools" "$CONTEXT/wheelhouse/" 2>/dev/null \
  || cp -a "$WHEELS/deps" "$WHEELS/tools" "$CONTEXT/wheelhouse/"
"$VENV_BIN/uv" build --quiet --wheel --out-dir "$CONTEXT/wheelhouse/app" "$IMAGE_REPO_ROOT" \
  || img_die "uv build of the tritonfleet wheel failed"
rm -f "$CONTEXT/wheelhouse/app/.gitignore"
