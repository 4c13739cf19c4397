#!/usr/bin/env bash
# Install a real tritonserver (CPU, python backend) from the nvidia-pytriton wheel.
#
#   hack/triton/install.sh          # prints progress on stderr, the launcher path last on stdout
#
# Layout (keyed by the pytriton version in versions.env):
#   ${TRITONFLEET_CACHE:-~/.cache/tritonfleet}/triton/<pytriton-version>/
#     site/        pip --no-deps --target of the wheel (pytriton/tritonserver/{bin,backends,caches},
#                  nvidia_pytriton.libs/ with libtritonserver and every bundled shared lib)
#     pyenv/       small venv with numpy<2; first on PATH so the python backend stub uses it
#     bin/tritonserver   launcher: sets LD_LIBRARY_PATH/PATH, default --backend-directory and
#                  --cache-directory, then execs the real binary with the given args
#     triton.env   KEY=VALUE facts about the install (versions, paths) for other tools
#     .installed   stamp; its content must match RECIPE below for the fast path
#
# Environment:
#   TRITONFLEET_CACHE        cache root (default ~/.cache/tritonfleet)
#   TRITONFLEET_TRITON_PYTHON  base interpreter for the venv (default: python3 on PATH); its
#                            X.Y picks the bundled stub (3.8 .. 3.13)
#   TRITONFLEET_TRITON_SKIP_SMOKE=1  skip the start-and-infer check at the end of a cold install
#
# Idempotent: once installed it only checks a stamp and a few paths (well under 1 s).
set -euo pipefail

export PIP_ROOT_USER_ACTION=ignore PIP_DISABLE_PIP_VERSION_CHECK=1
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=versions.env
. "$HERE/versions.env"

RECIPE="recipe=3 pytriton=${PYTRITON_VERSION} triton=${TRITONSERVER_VERSION} numpy=${TRITON_NUMPY_VERSION}"
CACHE="${TRITONFLEET_CACHE:-$HOME/.cache/tritonfleet}"
BASE="$CACHE/triton"
ROOT="$BASE/$PYTRITON_VERSION"
LAUNCHER="$ROOT/bin/tritonserver"

log() { printf '[triton-install] %s\n' "$*" >&2; }
die() { printf '[triton-install] ERROR: %s\n' "$*" >&2; exit 1; }

# ---------------------------------------------------------------- fast path
fast_ok() {
  [[ -f "$ROOT/.installed" && -x "$LAUNCHER" && -x "$ROOT/pyenv/bin/python3" ]] || return 1
  [[ "$(<"$ROOT/.installed")" == "$RECIPE" ]] || return 1
  # libpython the stub links against (recorded at install time) must still be there
  local pylib
  pylib="$(sed -n 's/^TRITON_LIBPYTHON=//p' "$ROOT/triton.env")"
  [[ -n "$pylib" && -e "$pylib" ]] || return 1
  [[ -x "$ROOT/site/pytriton/tritonserver/bin/tritonserver" ]]
}
if fast_ok; then
  log "tritonserver ${TRITONSERVER_VERSION} (nvidia-pytriton ${PYTRITON_VERSION}) already installed"
  echo "$LAUNCHER"
  exit 0
fi

mkdir -p "$BASE"
exec 9>"$BASE/.install.lock"
if ! flock -n 9; then
  log "another install is running; waiting for $BASE/.install.lock"
  flock 9
fi
if fast_ok; then  # somebody else finished while we waited
  echo "$LAUNCHER"
  exit 0
fi

START=$(date +%s)
TMP="$(mktemp -d "$BASE/.tmp-${PYTRITON_VERSION}-XXXXXX")"
cleanup() { rm -rf "$TMP"; }
trap cleanup EXIT

# ---------------------------------------------------------------- base python
PY_CMD="${TRITONFLEET_TRITON_PYTHON:-python3}"
command -v "$PY_CMD" >/dev/null 2>&1 || die "no '$PY_CMD' on PATH (set TRITONFLEET_TRITON_PYTHON)"
read -r PYEXE PYVER PYSHARED PYLIBDIR PYSONAME < <("$PY_CMD" - <<'EOF'
import sys, sysconfig as s
print(sys.executable, "%d.%d" % sys.version_info[:2],
      s.get_config_var("Py_ENABLE_SHARED") or 0, s.get_config_var("LIBDIR") or "-",
      s.get_config_var("INSTSONAME") or "-")
EOF
)
log "base python: $PYEXE ($PYVER)"
case "$PYVER" in
  3.8|3.9|3.10|3.11|3.12|3.13) ;;
  *) die "Python $PYVER has no python backend stub in nvidia-pytriton ${PYTRITON_VERSION} (3.8-3.13); set TRITONFLEET_TRITON_PYTHON" ;;
esac

# ---------------------------------------------------------------- wheel
log "pip install --no-deps nvidia-pytriton==${PYTRITON_VERSION} (bundles tritonserver ${TRITONSERVER_VERSION}) ..."
"$PYEXE" -m pip install --quiet --no-deps --no-compile --disable-pip-version-check \
  --target "$TMP/site" "nvidia-pytriton==${PYTRITON_VERSION}" >&2 \
  || die "pip could not install nvidia-pytriton==${PYTRITON_VERSION}"
TS="$TMP/site/pytriton/tritonserver"
[[ -f "$TS/bin/tritonserver" ]] || die "wheel has no pytriton/tritonserver/bin/tritonserver"
chmod +x "$TS/bin/tritonserver"

STUB="$TS/python_backend_stubs/$PYVER/triton_python_backend_stub"
if [[ ! -f "$STUB" ]]; then
  die "no python backend stub for Python $PYVER in the wheel (has: $(ls "$TS/python_backend_stubs" | tr '\n' ' ')); set TRITONFLEET_TRITON_PYTHON to one of those"
fi
cp "$STUB" "$TS/backends/python/triton_python_backend_stub"
chmod +x "$TS/backends/python/triton_python_backend_stub"
log "python backend stub: python_backend_stubs/$PYVER -> backends/python/"

# ---------------------------------------------------------------- venv with numpy<2
log "venv $ROOT/pyenv with numpy==${TRITON_NUMPY_VERSION} ..."
"$PYEXE" -m venv --without-pip "$TMP/pyenv" || die "'$PYEXE -m venv' failed (Debian: apt-get install python3-venv)"
VSITE="$TMP/pyenv/lib/python$PYVER/site-packages"
"$PYEXE" -m pip install --quiet --no-deps --disable-pip-version-check --only-binary=:all: \
  --target "$VSITE" "numpy==${TRITON_NUMPY_VERSION}" >&2 || die "pip could not install numpy==${TRITON_NUMPY_VERSION}"

# ---------------------------------------------------------------- libpython for the stub
# The stub embeds libpython$PYVER.so.1.0. Prefer the one belonging to the base interpreter so
# the embedded runtime matches the stdlib the venv points at; fall back to the system one.
LIBPYTHON=""
PYLIBPATH=""
if [[ "$PYSHARED" == "1" && -e "$PYLIBDIR/$PYSONAME" ]]; then
  LIBPYTHON="$PYLIBDIR/$PYSONAME"
  case "$PYLIBDIR" in
    /usr/lib|/usr/lib64|/usr/lib/*-linux-gnu|/lib|/lib64|/lib/*-linux-gnu) ;;  # already searched
    *) PYLIBPATH="$PYLIBDIR" ;;
  esac
fi

# ---------------------------------------------------------------- shared libs (apt)
LIBPATH="$ROOT/site/nvidia_pytriton.libs${PYLIBPATH:+:$PYLIBPATH}"
TMPLIBPATH="$TMP/site/nvidia_pytriton.libs${PYLIBPATH:+:$PYLIBPATH}"
missing_libs() {
  local f
  for f in "$TS/bin/tritonserver" "$TS/backends/python/libtriton_python.so" \
           "$TS/backends/python/triton_python_backend_stub" "$TS"/caches/*/*.so; do
    [[ -e "$f" ]] || continue
    LD_LIBRARY_PATH="$TMPLIBPATH" ldd "$f" 2>/dev/null | awk '/not found/ {print $1}'
  done | sort -u
}
apt_pkg_for() {
  case "$1" in
    libpython3.*.so.1.0) local v="${1#libpython}"; echo "libpython${v%.so.1.0}" ;;
    libz.so.1) echo zlib1g ;;
    libstdc++.so.6) echo libstdc++6 ;;
    libgcc_s.so.1) echo libgcc-s1 ;;
    libnuma.so.1) echo libnuma1 ;;
    libarchive.so.13) echo libarchive13 ;;
    libb64.so.0d) echo libb64-0d ;;
    libre2.so.9) echo libre2-9 ;;
    libssl.so.3|libcrypto.so.3) echo libssl3 ;;
    libcurl.so.4) echo libcurl4 ;;
    libxml2.so.2) echo libxml2 ;;
    libgomp.so.1) echo libgomp1 ;;
    *) return 1 ;;
  esac
}
MISSING="$(missing_libs)"
if [[ -n "$MISSING" ]]; then
  log "missing shared libraries: $(echo $MISSING)"
  PKGS=()
  UNKNOWN=()
  for so in $MISSING; do
    if p="$(apt_pkg_for "$so")"; then PKGS+=("$p"); else UNKNOWN+=("$so"); fi
  done
  [[ ${#UNKNOWN[@]} -eq 0 ]] || die "no known Debian package provides: ${UNKNOWN[*]}"
  command -v apt-get >/dev/null || die "need apt-get to install: ${PKGS[*]}"
  SUDO=""
  [[ "$(id -u)" == 0 ]] || SUDO="sudo -n"
  log "apt-get install ${PKGS[*]}"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get install -y -qq --no-install-recommends "${PKGS[@]}" >&2 \
    || { $SUDO apt-get update -qq >&2 && $SUDO apt-get install -y -qq --no-install-recommends "${PKGS[@]}" >&2; } \
    || die "apt-get install ${PKGS[*]} failed"
  MISSING="$(missing_libs)"
  [[ -z "$MISSING" ]] || die "still missing after apt-get: $(echo $MISSING)"
fi
if [[ -z "$LIBPYTHON" ]]; then
  LIBPYTHON="$(ldd "$TS/backends/python/triton_python_backend_stub" | awk '/libpython/ {print $3}')"
  [[ -n "$LIBPYTHON" ]] || die "cannot resolve libpython$PYVER.so.1.0 for the stub"
fi
log "stub libpython: $LIBPYTHON"

# ---------------------------------------------------------------- launcher + facts
mkdir -p "$TMP/bin"
cat >"$TMP/bin/tritonserver" <<EOF
#!/usr/bin/env bash
# Generated by hack/triton/install.sh: tritonserver ${TRITONSERVER_VERSION} from nvidia-pytriton ${PYTRITON_VERSION}.
# Runs the bundled binary on CPU with the python backend. Defaults --backend-directory and
# --cache-directory unless given. The python backend runs model.py with the first python3 on
# PATH, so the numpy<2 venv goes first; PYTHONHOME/PYTHONPATH are cleared for the same reason.
ROOT='$ROOT'
TS="\$ROOT/site/pytriton/tritonserver"
export LD_LIBRARY_PATH="$LIBPATH\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}"
export PATH="\$ROOT/pyenv/bin:\$PATH"
unset PYTHONHOME PYTHONPATH VIRTUAL_ENV
defaults=()
case " \$* " in *" --backend-directory"*) ;; *) defaults+=("--backend-directory=\$TS/backends") ;; esac
case " \$* " in *" --cache-directory"*) ;; *) defaults+=("--cache-directory=\$TS/caches") ;; esac
exec "\$TS/bin/tritonserver" "\${defaults[@]}" "\$@"
EOF
chmod +x "$TMP/bin/tritonserver"
cat >"$TMP/triton.env" <<EOF
PYTRITON_VERSION=${PYTRITON_VERSION}
TRITONSERVER_VERSION=${TRITONSERVER_VERSION}
TRITON_ROOT=$ROOT
TRITON_LAUNCHER=$LAUNCHER
TRITON_BIN=$ROOT/site/pytriton/tritonserver/bin/tritonserver
TRITON_BACKEND_DIR=$ROOT/site/pytriton/tritonserver/backends
TRITON_LD_LIBRARY_PATH=$LIBPATH
TRITON_PYENV=$ROOT/pyenv
TRITON_STUB_PYTHON=$PYVER
TRITON_LIBPYTHON=$LIBPYTHON
EOF

# ---------------------------------------------------------------- move into place
if [[ -e "$ROOT" ]]; then
  OLD="$BASE/.old-${PYTRITON_VERSION}-$$"
  log "replacing incomplete/outdated $ROOT"
  mv -T "$ROOT" "$OLD"
  rm -rf "$OLD" || true
fi
mv -T "$TMP" "$ROOT"
trap - EXIT

# ---------------------------------------------------------------- smoke: start, check version, infer
if [[ "${TRITONFLEET_TRITON_SKIP_SMOKE:-0}" != 1 ]]; then
  log "smoke test: start tritonserver, check version, run a python-backend model ..."
  if ! "$PYEXE" "$HERE/smoke.py" "$LAUNCHER" "$TRITONSERVER_VERSION" "$TRITON_NUMPY_VERSION" >&2; then
    mv -T "$ROOT" "$BASE/.failed-${PYTRITON_VERSION}-$$" 2>/dev/null && rm -rf "$BASE/.failed-${PYTRITON_VERSION}-$$"
    die "smoke test failed (see above); install removed"
  fi
fi

echo "$RECIPE" >"$ROOT/.installed"
log "installed in $(( $(date +%s) - START ))s: $ROOT"
echo "$LAUNCHER"
