"""The tritonfleet image for the dev tooling: built from the Dockerfile, run with podman.

The pod runner (``pod_runner.py``) runs the operator's, the gateway's and the sync
and cleanup Jobs' pods as containers of this image, so the tests and ``make demo``
exercise what users deploy: the wheel and its dependencies, the entry point, the
non-root user and the read-only root filesystem.

* :func:`ensure_image` builds it through ``hack/image/build.sh`` (cached by a hash of
  its inputs: well under a second when nothing changed) and returns its reference;
* :func:`podman` runs podman with the project's ``containers.conf`` (runc, cgroupfs,
  accepted ulimits), as root or through passwordless sudo;
* :func:`unwanted_contents` lists what the image holds and should not (compilers,
  pip, wheels, caches, the source tree); :func:`image_size` its size.

``python -m hack.devtools.image`` (``make image``) builds, checks and reports.
Only the standard library is needed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

from hack.devtools.scripts import run_script

REPO_ROOT = Path(__file__).resolve().parents[2]
IMAGE_HACK_DIR = REPO_ROOT / "hack" / "image"
BUILD_SCRIPT = IMAGE_HACK_DIR / "build.sh"
CONTAINERS_CONF = IMAGE_HACK_DIR / "containers.conf"

__all__ = [
    "ImageError",
    "ensure_image",
    "image_size",
    "podman",
    "podman_argv",
    "podman_env",
    "unwanted_contents",
]


class ImageError(RuntimeError):
    """The image could not be built or checked (the message says why)."""


def podman_env() -> dict[str, str]:
    """The environment podman runs in: the project's containers.conf unless one is set."""
    env = dict(os.environ)
    env.setdefault("CONTAINERS_CONF", str(CONTAINERS_CONF))
    return env


def podman_argv() -> list[str]:
    """``podman``, or ``sudo -n podman`` (keeping CONTAINERS_CONF) for a non-root user."""
    if os.geteuid() == 0:
        return ["podman"]
    return ["sudo", "-n", "--preserve-env=CONTAINERS_CONF", "podman"]


def podman(*args: str, timeout: float = 60, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run one podman command; ImageError with its stderr when it fails and ``check``."""
    try:
        proc = subprocess.run(
            [*podman_argv(), *args],
            env=podman_env(),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.TimeoutExpired) as err:
        raise ImageError(f"podman {args[0] if args else ''}: {err}") from err
    if check and proc.returncode != 0:
        raise ImageError(f"podman {' '.join(args[:3])}... failed: {proc.stderr.strip()[-800:]}")
    return proc


_lock = threading.Lock()
_built: str | None = None


def ensure_image(*, force: bool = False) -> str:
    """Build the image if its inputs changed (progress on stderr); return its reference.

    Remembered for the process: a test session runs the code it started with.
    """
    global _built
    with _lock:
        if _built is not None and not force:
            return _built
        rc, lines, tail = run_script(BUILD_SCRIPT, tail_lines=20)
        if rc != 0 or not lines:
            errors = [ln for ln in tail if "ERROR" in ln] or tail[-10:]
            raise ImageError(
                f"{BUILD_SCRIPT.relative_to(REPO_ROOT)} failed:\n  " + "\n  ".join(errors)
            )
        _built = lines[-1]
        return _built


def image_size(ref: str) -> int:
    """Bytes of the image, all layers (what `podman images` shows)."""
    return int(podman("image", "inspect", "--format", "{{.Size}}", ref).stdout.strip())


# Runs inside the image with its own python3: what a runtime image must not hold.
_INSPECT = r"""
import json, os, shutil, sys, sysconfig
found = []
for tool in ("gcc", "cc", "c++", "g++", "clang", "make", "ld", "as", "pip", "pip3", "uv", "git"):
    if shutil.which(tool):
        found.append(f"build tool on PATH: {shutil.which(tool)}")
try:
    import pip
    found.append(f"pip importable: {os.path.dirname(pip.__file__)}")
except ImportError:
    pass
for path in ("/wheelhouse", "/src", "/root/.cache"):
    if os.path.exists(path):
        found.append(f"left over: {path}")
for path in ("/tmp", "/var/lib/apt/lists", "/var/cache/apt/archives"):
    left = os.listdir(path) if os.path.isdir(path) else []
    left = [n for n in left if n not in ("partial", "lock")]
    if left:
        found.append(f"not empty: {path} ({', '.join(sorted(left)[:5])})")
# Debian's own wheels for ensurepip (/usr/share/python-wheels) belong to its python3-venv.
for root, dirs, files in os.walk("/", topdown=True):
    dirs[:] = [d for d in dirs if os.path.join(root, d) not in ("/proc", "/sys", "/dev")]
    for name in files + dirs:
        path = os.path.join(root, name)
        if name.endswith(".whl") and not root.startswith("/usr/share/python-wheels"):
            found.append(f"wheel: {path}")
        elif name in ("tests", "test") and root.endswith("/tritonfleet"):
            found.append(f"tests in the package: {path}")
        elif name == ".git":
            found.append(f"git metadata: {path}")
json.dump(found, sys.stdout)
"""


def unwanted_contents(ref: str) -> list[str]:
    """What the image holds and should not: build tools (pip included), wheels, caches,
    build leftovers, the source tree or tests. Empty when it is clean."""
    out = podman(
        "run", "--rm", "--network=none", "--user=0", "--entrypoint", "python3", ref,
        "-c", _INSPECT,
        timeout=120,
    ).stdout  # fmt: skip
    return list(json.loads(out))


def main() -> int:
    """``make image``: build (if needed), check the contents, report the size."""
    try:
        ref = ensure_image()
        version = podman("run", "--rm", "--network=none", ref, "--version").stdout.strip()
        unwanted = unwanted_contents(ref)
        size = image_size(ref)
    except ImageError as err:
        print(f"[image] ERROR: {err}", file=sys.stderr)
        return 1
    for item in unwanted:
        print(f"[image] unwanted: {item}", file=sys.stderr)
    print(f"{ref}: {version}, {size / 1e6:.0f} MB, " + ("clean" if not unwanted else "NOT clean"))
    return 1 if unwanted else 0


if __name__ == "__main__":
    sys.exit(main())
