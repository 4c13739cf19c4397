"""Credentials at run time: the headers and TLS context of every API request, kept
fresh the way client-go keeps them fresh.

:mod:`tritonfleet.adapters.kubeconfig` says *what* the credentials are (a token, a
token file, an exec plugin, an oidc provider, a client certificate);
:class:`KubeCredentials` turns that into request headers and an ``ssl.SSLContext``:

* a token file (the pod's service account, which the kubelet rotates) is re-read
  every minute and after a 401;
* an exec plugin runs on first use, again when its ``expirationTimestamp`` is near
  and after a 401 (``KUBERNETES_EXEC_INFO`` as client-go sets it; never interactive);
* an oidc ``id-token`` is used until it expires, then refreshed at the issuer with the
  ``refresh-token``, and both are written back to the kubeconfig as kubectl does;
* certificate and key data (from the kubeconfig or an exec plugin) are loaded into
  the TLS context through an anonymous in-memory file, never a file on disk.

:func:`kube_middleware` is the aiohttp client middleware every API session uses
(the reconciler's, the gateway's and kopf's): it sets the headers, retries once
after a 401 with fresh credentials, and waits what a 429 (or a GET's 503) asks for
in ``Retry-After`` before sending again, as client-go does.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import os
import ssl
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import yaml
from prometheus_client import Counter

from tritonfleet.adapters.hosted import parse_retry_after
from tritonfleet.adapters.kubeconfig import Endpoint, ExecPlugin, OidcProvider

log = logging.getLogger(__name__)

TOKEN_FILE_PERIOD_S = 60.0  # client-go re-reads a token file every minute
EXPIRY_MARGIN_S = 30.0  # renew this long before an exec or oidc credential expires
EXEC_TIMEOUT_S = 60.0
MAX_RETRIES = 10  # client-go's limit for Retry-After answers
MAX_RETRY_AFTER_S = 60.0

API_RETRIES = Counter(
    "tritonfleet_api_retries_total",
    "API requests sent again: after a 429 or 503 with Retry-After (waited as asked), "
    "or after a 401 with refreshed credentials.",
    ["reason"],
)


class CredentialError(RuntimeError):
    """The credentials could not be obtained (plugin missing or failing, expired login)."""


@dataclass(frozen=True)
class _Issued:
    """What an exec plugin or oidc refresh returned, and until when it holds."""

    token: str | None
    certificate: bytes | None
    key: bytes | None
    expires_at: float | None  # unix time


def _parse_time(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def jwt_expiry(token: str) -> float | None:
    """The ``exp`` claim of a JWT (unverified: only to know when to refresh it)."""
    try:
        payload = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        return float(claims["exp"])
    except (IndexError, KeyError, ValueError, TypeError, binascii.Error):
        return None


def _read(path: str, what: str) -> bytes:
    """A small credential file (read in the event loop: it is a page, read once a minute)."""
    try:
        return Path(path).read_bytes()
    except OSError as error:
        raise CredentialError(f"{what} {path}: {error.strerror}") from None


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def load_client_certificate(context: ssl.SSLContext, certificate: bytes, key: bytes) -> None:
    """``load_cert_chain`` from memory: ``ssl`` reads only paths, so on Linux the PEM goes
    into anonymous memory files (``memfd_create``) that vanish when closed; elsewhere
    into a private temporary directory removed before this returns."""
    if hasattr(os, "memfd_create"):
        cert_fd = os.memfd_create("tritonfleet-client-cert", os.MFD_CLOEXEC)
        key_fd = os.memfd_create("tritonfleet-client-key", os.MFD_CLOEXEC)
        try:
            _write_all(cert_fd, certificate)
            _write_all(key_fd, key)
            context.load_cert_chain(f"/proc/self/fd/{cert_fd}", f"/proc/self/fd/{key_fd}")
        finally:
            os.close(cert_fd)
            os.close(key_fd)
        return
    with tempfile.TemporaryDirectory(prefix="tritonfleet-kube-") as tmp:
        cert_path, key_path = Path(tmp) / "client.crt", Path(tmp) / "client.key"
        for path, data in ((cert_path, certificate), (key_path, key)):
            path.touch(mode=0o600)
            path.write_bytes(data)
        context.load_cert_chain(str(cert_path), str(key_path))


class KubeCredentials:
    """Headers and TLS for one :class:`Endpoint`, refreshed as needed (see module doc).

    One instance per endpoint is shared by every session of the process
    (``endpoint_credentials``), so an exec plugin runs once, not once per client.
    """

    def __init__(self, endpoint: Endpoint) -> None:
        self.endpoint = endpoint
        self._token_file_value: str | None = None
        self._token_file_read = -float("inf")
        self._issued: _Issued | None = None
        self._oidc_tokens: tuple[str, str] | None = None  # (id-token, refresh-token)
        self._tls: ssl.SSLContext | bool | None = None
        self._tls_pair: tuple[bytes, bytes] | None = None
        self.tls_generation = 0  # bumped when the client certificate changes
        self._locks: dict[int, asyncio.Lock] = {}

    # -- what callers ask -------------------------------------------------------------

    @property
    def refreshable(self) -> bool:
        """Whether a 401 may be cured by fetching the credentials again."""
        e = self.endpoint
        return bool(e.token_path or e.exec_plugin or e.oidc)

    @property
    def certificate_expires_at(self) -> float | None:
        """When the client certificate of an exec plugin expires (sessions must be renewed)."""
        issued = self._issued
        return issued.expires_at if issued and issued.certificate else None

    def invalidate(self) -> None:
        """After a 401: the next request fetches credentials again."""
        self._token_file_read = -float("inf")
        self._issued = None
        if self.endpoint.oidc is not None:
            _, refresh = self._oidc_tokens or ("", self.endpoint.oidc.get("refresh-token"))
            self._oidc_tokens = ("", refresh)

    async def headers(self) -> list[tuple[str, str]]:
        """``Authorization`` (if any) and impersonation headers for the next request."""
        out = list(self.endpoint.impersonate)
        token = await self._bearer()
        if token:
            out.append(("Authorization", f"Bearer {token}"))
        elif self.endpoint.username:
            basic = f"{self.endpoint.username}:{self.endpoint.password or ''}"
            out.append(("Authorization", "Basic " + base64.b64encode(basic.encode()).decode()))
        return out

    async def ssl_context(self) -> ssl.SSLContext | bool:
        """The TLS context with the current client certificate (False for http://)."""
        if not self.endpoint.server.startswith("https"):
            return False
        pair = await self._client_pair()
        if self._tls is None or pair != self._tls_pair:
            self._tls = self._build_tls(pair)
            if self._tls_pair is not None and pair != self._tls_pair:
                self.tls_generation += 1
            self._tls_pair = pair
        return self._tls

    # -- sources ----------------------------------------------------------------------

    def _lock(self) -> asyncio.Lock:
        # One lock per event loop: the CLI checks credentials in one loop and runs in another.
        loop_id = id(asyncio.get_running_loop())
        lock = self._locks.get(loop_id)
        if lock is None:
            lock = self._locks[loop_id] = asyncio.Lock()
        return lock

    async def _bearer(self) -> str | None:
        e = self.endpoint
        if e.exec_plugin is not None:
            return (await self._exec()).token
        if e.oidc is not None:
            return await self._oidc()
        if e.token_path:
            now = time.monotonic()
            if now - self._token_file_read > TOKEN_FILE_PERIOD_S:
                self._token_file_value = _read(e.token_path, "token file").decode().strip()
                self._token_file_read = now
            return self._token_file_value
        return e.token

    async def _client_pair(self) -> tuple[bytes, bytes] | None:
        e = self.endpoint
        if e.exec_plugin is not None:
            issued = await self._exec()
            if issued.certificate and issued.key:
                return issued.certificate, issued.key
        cert = e.certificate_data or (
            _read(e.certificate_path, "client-certificate") if e.certificate_path else None
        )
        key = e.private_key_data or (
            _read(e.private_key_path, "client-key") if e.private_key_path else None
        )
        if cert and key:
            return cert, key
        if cert or key:
            raise CredentialError(f"{e.source}: a client certificate needs both cert and key")
        return None

    def _build_tls(self, pair: tuple[bytes, bytes] | None) -> ssl.SSLContext:
        e = self.endpoint
        context = ssl.create_default_context(
            cafile=None if e.insecure else e.ca_path,
            cadata=None if e.insecure or not e.ca_data else e.ca_data.decode(),
        )
        if e.insecure:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        if pair is not None:
            load_client_certificate(context, *pair)
        return context

    @staticmethod
    def _fresh(issued: _Issued | None) -> bool:
        if issued is None:
            return False
        return issued.expires_at is None or issued.expires_at - time.time() > EXPIRY_MARGIN_S

    async def _exec(self) -> _Issued:
        issued = self._issued
        if issued is not None and self._fresh(issued):
            return issued
        async with self._lock():
            issued = self._issued
            if issued is not None and self._fresh(issued):
                return issued  # another request ran the plugin meanwhile
            assert self.endpoint.exec_plugin is not None
            issued = self._issued = await run_exec_plugin(self.endpoint.exec_plugin, self.endpoint)
            return issued

    async def _oidc(self) -> str:
        provider = self.endpoint.oidc
        assert provider is not None
        id_token, refresh = self._oidc_tokens or (
            provider.get("id-token"),
            provider.get("refresh-token"),
        )
        expiry = jwt_expiry(id_token) if id_token else None
        if id_token and (expiry is None or expiry - time.time() > EXPIRY_MARGIN_S):
            return id_token
        async with self._lock():
            if self._oidc_tokens and self._oidc_tokens[0] and self._oidc_tokens[0] != id_token:
                return self._oidc_tokens[0]
            if not refresh:
                raise CredentialError(
                    f"{self.endpoint.source}: the oidc id-token expired and there is no "
                    "refresh-token: log in again with your OIDC helper"
                )
            self._oidc_tokens = await refresh_oidc(provider, refresh)
            return self._oidc_tokens[0]


_CREDENTIALS: dict[int, KubeCredentials] = {}


def endpoint_credentials(endpoint: Endpoint) -> KubeCredentials:
    """The process's one :class:`KubeCredentials` for ``endpoint`` (shared by its clients)."""
    found = _CREDENTIALS.get(id(endpoint))
    if found is None or found.endpoint is not endpoint:
        found = _CREDENTIALS[id(endpoint)] = KubeCredentials(endpoint)
    return found


# -- exec plugins ---------------------------------------------------------------------


def _exec_info(plugin: ExecPlugin, endpoint: Endpoint) -> str:
    spec: dict[str, Any] = {"interactive": False}
    if plugin.provide_cluster_info:
        cluster: dict[str, Any] = {"server": endpoint.server}
        if endpoint.tls_server_name:
            cluster["tls-server-name"] = endpoint.tls_server_name
        if endpoint.insecure:
            cluster["insecure-skip-tls-verify"] = True
        ca = endpoint.ca_data or (Path(endpoint.ca_path).read_bytes() if endpoint.ca_path else None)
        if ca:
            cluster["certificate-authority-data"] = base64.b64encode(ca).decode()
        if endpoint.proxy_url:
            cluster["proxy-url"] = endpoint.proxy_url
        if plugin.cluster_config is not None:
            cluster["config"] = plugin.cluster_config
        spec["cluster"] = cluster
    return json.dumps({"apiVersion": plugin.api_version, "kind": "ExecCredential", "spec": spec})


async def run_exec_plugin(plugin: ExecPlugin, endpoint: Endpoint) -> _Issued:
    """Run the plugin once and read its ExecCredential (token or certificate pair)."""
    name = plugin.command
    env = dict(os.environ)
    env.update(dict(plugin.env))
    env["KUBERNETES_EXEC_INFO"] = _exec_info(plugin, endpoint)
    try:
        proc = await asyncio.create_subprocess_exec(
            plugin.command,
            *plugin.args,
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
    except (FileNotFoundError, PermissionError) as error:
        hint = f"\n{plugin.install_hint.strip()}" if plugin.install_hint else ""
        raise CredentialError(
            f"exec plugin: cannot run {name!r} ({error.strerror}){hint}"
        ) from None
    try:
        out, err = await asyncio.wait_for(proc.communicate(), EXEC_TIMEOUT_S)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise CredentialError(
            f"exec plugin {name}: no answer within {EXEC_TIMEOUT_S:.0f}s"
        ) from None
    if proc.returncode != 0:
        tail = err.decode(errors="replace").strip()[-500:]
        raise CredentialError(f"exec plugin {name} exited {proc.returncode}: {tail}")
    try:
        credential = json.loads(out)
    except ValueError:
        raise CredentialError(f"exec plugin {name} printed no JSON ExecCredential") from None
    if not isinstance(credential, dict) or credential.get("kind") != "ExecCredential":
        raise CredentialError(f"exec plugin {name} printed no ExecCredential")
    if credential.get("apiVersion") != plugin.api_version:
        raise CredentialError(
            f"exec plugin {name} is configured for {plugin.api_version} but returned "
            f"{credential.get('apiVersion')}"
        )
    status = credential.get("status") or {}
    token = status.get("token")
    cert, key = status.get("clientCertificateData"), status.get("clientKeyData")
    if bool(cert) != bool(key):
        raise CredentialError(
            f"exec plugin {name} returned only one of clientCertificateData and clientKeyData"
        )
    if not token and not cert:
        raise CredentialError(f"exec plugin {name} returned neither a token nor a certificate")
    expires = status.get("expirationTimestamp")
    try:
        expires_at = _parse_time(expires) if expires else None
    except ValueError:
        raise CredentialError(f"exec plugin {name}: bad expirationTimestamp {expires!r}") from None
    log.debug("exec plugin %s: credential until %s", name, expires or "revoked")
    return _Issued(
        str(token) if token else None,
        str(cert).encode() if cert else None,
        str(key).encode() if key else None,
        expires_at,
    )


# -- oidc -----------------------------------------------------------------------------


async def refresh_oidc(provider: OidcProvider, refresh_token: str) -> tuple[str, str]:
    """A new (id-token, refresh-token) from the issuer, written back to the kubeconfig."""
    issuer = provider.get("idp-issuer-url").rstrip("/")
    if not issuer:
        raise CredentialError("oidc: no idp-issuer-url to refresh the id-token at")
    ssl_ctx: ssl.SSLContext | bool = True
    ca_path, ca_data = (
        provider.get("idp-certificate-authority"),
        provider.get("idp-certificate-authority-data"),
    )
    if ca_path or ca_data:
        ssl_ctx = ssl.create_default_context(
            cafile=ca_path or None,
            cadata=base64.b64decode(ca_data).decode() if ca_data else None,
        )
    # Client credentials in HTTP basic auth, each form-encoded first (RFC 6749, 2.3.1).
    client_id, secret = (quote(provider.get(k), safe="") for k in ("client-id", "client-secret"))
    pair = f"{client_id}:{secret}"
    client = {"Authorization": "Basic " + base64.b64encode(pair.encode()).decode()}
    form = {"grant_type": "refresh_token", "refresh_token": refresh_token}
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
            discovery_url = f"{issuer}/.well-known/openid-configuration"
            async with session.get(discovery_url, ssl=ssl_ctx) as response:
                response.raise_for_status()
                endpoint = (await response.json(content_type=None))["token_endpoint"]
            async with session.post(endpoint, data=form, headers=client, ssl=ssl_ctx) as response:
                answer = await response.json(content_type=None)
                if response.status != 200:
                    # The error code only: the body could echo the refresh token.
                    raise CredentialError(
                        f"oidc: the issuer refused the refresh ({response.status} "
                        f"{answer.get('error', '')}): log in again"
                    )
    except (aiohttp.ClientError, TimeoutError, KeyError, ValueError) as error:
        raise CredentialError(f"oidc: refreshing at {issuer} failed: {error!r}") from None
    id_token = answer.get("id_token")
    if not id_token:
        raise CredentialError("oidc: the issuer's answer has no id_token")
    tokens = (str(id_token), str(answer.get("refresh_token") or refresh_token))
    _persist_oidc(provider, *tokens)
    return tokens


def _persist_oidc(provider: OidcProvider, id_token: str, refresh_token: str) -> None:
    """Write refreshed tokens back, as kubectl does, so the next process need not refresh."""
    path = Path(provider.kubeconfig_path)
    try:
        config = yaml.safe_load(path.read_text()) or {}
        for user in config.get("users") or ():
            if user.get("name") == provider.user_name:
                settings = user["user"]["auth-provider"].setdefault("config", {})
                settings["id-token"], settings["refresh-token"] = id_token, refresh_token
        tmp = path.with_name(f".{path.name}.tritonfleet-{os.getpid()}")
        tmp.touch(mode=0o600)
        tmp.write_text(yaml.safe_dump(config, sort_keys=False))
        tmp.chmod(path.stat().st_mode & 0o777)
        tmp.replace(path)
    except (OSError, KeyError, TypeError, yaml.YAMLError) as error:
        # The tokens still work for this process; the next one refreshes again.
        log.warning("oidc: could not write the refreshed tokens to %s: %s", path, error)


# -- the middleware -------------------------------------------------------------------

Middleware = Callable[
    [aiohttp.ClientRequest, Callable[[aiohttp.ClientRequest], Awaitable[aiohttp.ClientResponse]]],
    Awaitable[aiohttp.ClientResponse],
]


def kube_middleware(credentials: KubeCredentials) -> Middleware:
    """aiohttp client middleware: credentials on every request, 401 and Retry-After handled."""
    endpoint = credentials.endpoint

    async def middleware(
        request: aiohttp.ClientRequest,
        handler: Callable[[aiohttp.ClientRequest], Awaitable[aiohttp.ClientResponse]],
    ) -> aiohttp.ClientResponse:
        if endpoint.tls_server_name:
            request.server_hostname = endpoint.tls_server_name
        refreshed = False
        attempt = 0
        while True:
            headers = await credentials.headers()
            for name in {n for n, _ in headers}:
                request.headers.popall(name, None)
            for name, value in headers:
                request.headers.add(name, value)
            response = await handler(request)
            if response.status == 401 and credentials.refreshable and not refreshed:
                refreshed = True
                response.release()
                credentials.invalidate()
                API_RETRIES.labels("401").inc()
                continue
            wait = parse_retry_after(response.headers)
            retriable = response.status == 429 or (
                response.status == 503 and request.method == "GET"
            )
            if wait is None or not retriable or attempt >= MAX_RETRIES:
                return response
            attempt += 1
            response.release()
            API_RETRIES.labels(str(response.status)).inc()
            log.debug(
                "%s %s: %d, retrying after %.1fs as asked",
                request.method,
                request.url.path,
                response.status,
                wait,
            )
            await asyncio.sleep(min(wait, MAX_RETRY_AFTER_S))

    return middleware


def expiration_of(credentials: KubeCredentials) -> datetime | None:
    """When a session built now must be replaced (its client certificate expires)."""
    at = credentials.certificate_expires_at
    return datetime.fromtimestamp(at - EXPIRY_MARGIN_S, UTC) if at else None
