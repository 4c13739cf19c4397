"""API keys and client tokens: where they come from, and keeping them out of logs.

Routes name a key by reference (``apiKeyEnv``, ``apiKeyFile``, or in-cluster a
Secret key); :class:`KeyStore` resolves the reference when a request needs it
(files are re-read when they change, so a rotated Secret takes effect without
a restart). Every value it hands out is registered with the process-wide
:data:`REDACTOR`, which the gateway's log formatter (``adapters.logs``) applies to
every line, traceback included — a second line of defence behind never logging
them in the first place. Client bearer tokens (``--auth-tokens-file``/``-env``)
are handled the same way by :class:`ClientTokens`.
"""

from __future__ import annotations

import contextlib
import hmac
import os
import threading
import time
from pathlib import Path

from tritonfleet.adapters.hosted import redact
from tritonfleet.desired.gateway.routes import ApiKeyRef

RECHECK_S = 5.0  # how often a key or token file's mtime is looked at


class Redactor:
    """The set of secret values this process knows about."""

    def __init__(self) -> None:
        self._secrets: frozenset[str] = frozenset()
        self._lock = threading.Lock()

    def add(self, value: str) -> None:
        if value and value not in self._secrets:
            with self._lock:
                self._secrets = self._secrets | {value}

    @property
    def secrets(self) -> frozenset[str]:
        return self._secrets

    def __call__(self, text: str) -> str:
        return redact(text, self._secrets) if self._secrets else text


REDACTOR = Redactor()


class MissingKeyError(LookupError):
    """A referenced key is missing (the message names the reference, not a value)."""


class _FileCache:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.value: str | None = None
        self.mtime = -1.0
        self.checked = 0.0

    def read(self) -> str:
        now = time.monotonic()
        if self.value is not None and now - self.checked < RECHECK_S:
            return self.value
        self.checked = now
        try:
            mtime = self.path.stat().st_mtime
            if mtime != self.mtime or self.value is None:
                self.value = self.path.read_text().strip()
                self.mtime = mtime
        except OSError as err:
            if self.value is None:
                raise MissingKeyError(f"cannot read key file {self.path}: {err.strerror}") from None
        return self.value or ""


class KeyStore:
    """Resolves :class:`ApiKeyRef` to key values."""

    def __init__(self, secrets_dir: Path | None = None) -> None:
        self._files: dict[str, _FileCache] = {}
        self._secrets_dir = secrets_dir

    def get(self, ref: ApiKeyRef | None) -> str | None:
        if ref is None:
            return None
        if ref.env:
            value = os.environ.get(ref.env)
            if not value:
                raise MissingKeyError(f"environment variable {ref.env} is not set")
        elif ref.file:
            value = self._file(ref.file).read()
        elif ref.secret_name and ref.secret_key and self._secrets_dir is not None:
            # In-cluster: Secrets projected as <dir>/<namespace>/<name>/<key>.
            path = self._secrets_dir / (ref.secret_namespace or "default") / ref.secret_name
            value = self._file(str(path / ref.secret_key)).read()
        else:
            raise MissingKeyError(f"cannot resolve {ref.describe()} here")
        value = value.strip()
        REDACTOR.add(value)
        return value

    def _file(self, path: str) -> _FileCache:
        cache = self._files.get(path)
        if cache is None:
            cache = self._files[path] = _FileCache(Path(path))
        return cache


class ClientTokens:
    """Bearer tokens clients must present (optional): from a file (one per
    line, ``#`` comments) and/or an environment variable (comma-separated)."""

    def __init__(self, file: str | None = None, env: str | None = None) -> None:
        self._file = _FileCache(Path(file)) if file else None
        self._env = env
        self._static: tuple[bytes, ...] = ()
        if env:
            raw = os.environ.get(env, "")
            self._static = tuple(t.strip().encode() for t in raw.split(",") if t.strip())
        self._from_file: tuple[bytes, ...] = ()
        self._file_text: str | None = None
        for token in self._static:
            REDACTOR.add(token.decode())
        if self._file is not None:
            self._load_file()

    @property
    def enabled(self) -> bool:
        return self._file is not None or self._env is not None

    def _load_file(self) -> None:
        assert self._file is not None
        text = self._file.read()
        if text != self._file_text:
            self._file_text = text
            tokens = [
                line.strip()
                for line in text.splitlines()
                if line.strip() and not line.lstrip().startswith("#")
            ]
            for token in tokens:
                REDACTOR.add(token)
            self._from_file = tuple(t.encode() for t in tokens)

    def check(self, header: str | None) -> bool:
        if not self.enabled:
            return True
        scheme, _, credentials = (header or "").strip().partition(" ")
        # The scheme is case-insensitive (RFC 9110 section 11.1): "bearer" is "Bearer".
        if scheme.lower() != "bearer" or not credentials.strip():
            return False
        if self._file is not None:
            with contextlib.suppress(MissingKeyError):  # keep the tokens read last time
                self._load_file()
        given = credentials.strip().encode()
        ok = False
        # Compare against every token (no early exit): timing says nothing.
        for token in (*self._static, *self._from_file):
            ok |= hmac.compare_digest(given, token)
        return ok
