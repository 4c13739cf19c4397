"""Where the API server is and who we are to it, found the way ``kubectl`` finds it.

The operator and the gateway run in a pod (the service account's token, which the
kubelet rotates) or from a laptop against a managed cluster (a kubeconfig whose
user is an ``exec`` plugin such as ``aws eks get-token``, ``gke-gcloud-auth-plugin``
or ``kubelogin``, or an ``oidc`` auth provider). This module turns those sources
into one :class:`Endpoint` description; :mod:`tritonfleet.adapters.kube_auth` turns
the description into request headers and a TLS context at run time, and
:mod:`tritonfleet.adapters.kube` is the client that uses both.

Lookup order (as controller-runtime, which operators share): ``--kubeconfig``, then
every file of ``$KUBECONFIG``, then the pod's service account, then
``~/.kube/config``. Several files are merged as ``kubectl`` merges them: the first
file to set ``current-context`` wins, the first file to define a cluster, user or
context name wins, missing files are skipped, and a relative path is read relative
to the file that holds it.

Nothing here writes a file: certificate and key data stay in memory.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
EXEC_API_VERSIONS = ("client.authentication.k8s.io/v1", "client.authentication.k8s.io/v1beta1")
# What kubectl says since 1.26 for the auth providers it no longer carries.
REMOVED_AUTH_PROVIDERS = {
    "gcp": "the gcp auth provider was removed from kubectl and client-go in 1.26: use the "
    "gke-gcloud-auth-plugin exec plugin (`gcloud components install gke-gcloud-auth-plugin`, "
    "then `gcloud container clusters get-credentials ...` writes an exec user)",
    "azure": "the azure auth provider was removed from kubectl and client-go in 1.26: use the "
    "kubelogin exec plugin (`kubelogin convert-kubeconfig -l azurecli`)",
}


class KubeconfigError(ValueError):
    """The cluster cannot be reached with what the kubeconfig (or the pod) says."""


@dataclass(frozen=True)
class ExecPlugin:
    """A ``users[].user.exec`` entry: a command that prints an ExecCredential."""

    api_version: str
    command: str
    args: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()
    install_hint: str = ""
    provide_cluster_info: bool = False
    interactive_mode: str = "IfAvailable"
    cluster_config: Any = None  # clusters[].cluster.extensions["client.authentication.k8s.io/exec"]


@dataclass(frozen=True)
class OidcProvider:
    """A ``users[].user.auth-provider`` named ``oidc`` (id-token, refreshed with refresh-token)."""

    config: tuple[tuple[str, str], ...]
    kubeconfig_path: str  # the file that defines the user: refreshed tokens are written back
    user_name: str

    def get(self, key: str) -> str:
        return dict(self.config).get(key, "")


@dataclass(frozen=True)
class Endpoint:
    """How to reach and authenticate to the API server (from kubeconfig or in-cluster)."""

    server: str
    ca_path: str | None = None
    ca_data: bytes | None = field(default=None, repr=False)  # PEM
    insecure: bool = False
    tls_server_name: str | None = None
    proxy_url: str | None = None
    certificate_path: str | None = None
    certificate_data: bytes | None = field(default=None, repr=False)  # PEM
    private_key_path: str | None = None
    private_key_data: bytes | None = field(default=None, repr=False)  # PEM
    token: str | None = field(default=None, repr=False)
    token_path: str | None = None  # re-read: in-cluster tokens rotate
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    exec_plugin: ExecPlugin | None = None
    oidc: OidcProvider | None = None
    impersonate: tuple[tuple[str, str], ...] = ()  # (header, value) pairs
    default_namespace: str | None = None
    source: str = ""  # where this came from, for messages ("kubeconfig ... context ...")

    @property
    def auth_kind(self) -> str:
        """How requests authenticate, for logs (never a secret)."""
        if self.exec_plugin is not None:
            return f"exec plugin {Path(self.exec_plugin.command).name}"
        if self.oidc is not None:
            return "oidc auth provider"
        if self.token_path:
            return f"token file {self.token_path}"
        if self.token:
            return "bearer token"
        if self.certificate_path or self.certificate_data:
            return "client certificate"
        if self.username:
            return "basic auth"
        return "anonymous"


def _pem(data: str | bytes | None) -> bytes | None:
    """``*-data`` fields are base64 of PEM; a PEM string is accepted too."""
    if data is None:
        return None
    raw = data.encode() if isinstance(data, str) else data
    return raw if raw.lstrip().startswith(b"-----BEGIN") else base64.b64decode(raw)


@dataclass
class _Merged:
    """kubeconfig files merged by kubectl's rules; each entry remembers its file."""

    current_context: str | None = None
    clusters: dict[str, tuple[Mapping[str, Any], Path]] = field(default_factory=dict)
    users: dict[str, tuple[Mapping[str, Any], Path]] = field(default_factory=dict)
    contexts: dict[str, tuple[Mapping[str, Any], Path]] = field(default_factory=dict)
    files: list[Path] = field(default_factory=list)

    def add(self, path: Path) -> None:
        try:
            config = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as error:
            raise KubeconfigError(f"{path}: not a kubeconfig: {error}") from None
        if not isinstance(config, Mapping):
            raise KubeconfigError(f"{path}: not a kubeconfig (a YAML mapping is expected)")
        self.files.append(path)
        if not self.current_context and config.get("current-context"):
            self.current_context = str(config["current-context"])
        for section, target in (
            ("clusters", self.clusters),
            ("users", self.users),
            ("contexts", self.contexts),
        ):
            for item in config.get(section) or ():
                name = str(item.get("name", ""))
                if name and name not in target:
                    target[name] = (dict(item.get(section[:-1]) or {}), path)

    def entry(self, section: str, name: str) -> tuple[Mapping[str, Any], Path]:
        table: dict[str, tuple[Mapping[str, Any], Path]] = getattr(self, section)
        if name not in table:
            where = ", ".join(str(p) for p in self.files)
            raise KubeconfigError(f"no {section[:-1]} named {name!r} in {where}")
        return table[name]


def kubeconfig_paths(explicit: str | os.PathLike[str] | None = None) -> list[Path]:
    """The files kubectl would read: the flag's file, else every ``$KUBECONFIG`` entry."""
    if explicit:
        path = Path(explicit).expanduser()
        if not path.is_file():
            raise KubeconfigError(f"kubeconfig {path} does not exist")
        return [path]
    listed = [p for p in os.environ.get("KUBECONFIG", "").split(os.pathsep) if p.strip()]
    return [Path(p).expanduser() for p in listed]


def endpoint_from_kubeconfig(
    paths: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    context: str | None = None,
) -> Endpoint:
    """The context ``context`` (default: the current one) of the merged kubeconfig files."""
    listed = [paths] if isinstance(paths, str | os.PathLike) else list(paths)
    merged = _Merged()
    for path in (Path(p).expanduser() for p in listed):
        if path.is_file():  # kubectl skips missing entries of $KUBECONFIG
            merged.add(path)
    if not merged.files:
        raise KubeconfigError("none of the kubeconfig files exists: " + ", ".join(map(str, listed)))
    context_name = context or merged.current_context
    if not context_name:
        raise KubeconfigError(
            "no current-context in " + ", ".join(map(str, merged.files)) + " (pass --context)"
        )
    ctx, _ = merged.entry("contexts", context_name)
    if not ctx.get("cluster"):
        raise KubeconfigError(f"context {context_name!r} names no cluster")
    cluster, cluster_file = merged.entry("clusters", str(ctx["cluster"]))
    user: Mapping[str, Any] = {}
    user_file = cluster_file
    if ctx.get("user"):
        user, user_file = merged.entry("users", str(ctx["user"]))
    return _endpoint(
        cluster,
        cluster_file,
        user,
        user_file,
        user_name=str(ctx.get("user") or ""),
        namespace=ctx.get("namespace"),
        source=f"kubeconfig {', '.join(map(str, merged.files))}, context {context_name}",
    )


def _relative_to(base: Path, value: Any) -> str | None:
    if not value:
        return None
    path = Path(str(value)).expanduser()
    return str(path if path.is_absolute() else base.parent / path)


def _endpoint(
    cluster: Mapping[str, Any],
    cluster_file: Path,
    user: Mapping[str, Any],
    user_file: Path,
    *,
    user_name: str,
    namespace: Any,
    source: str,
) -> Endpoint:
    if not cluster.get("server"):
        raise KubeconfigError(f"{source}: the cluster has no server")
    proxy = cluster.get("proxy-url")
    if proxy and not str(proxy).startswith(("http://", "https://")):
        raise KubeconfigError(f"{source}: proxy-url {proxy!r}: only http(s) proxies are supported")
    impersonate: list[tuple[str, str]] = []
    if user.get("as"):
        impersonate.append(("Impersonate-User", str(user["as"])))
    if user.get("as-uid"):
        impersonate.append(("Impersonate-Uid", str(user["as-uid"])))
    impersonate += [("Impersonate-Group", str(g)) for g in user.get("as-groups") or ()]
    for key, values in (user.get("as-user-extra") or {}).items():
        impersonate += [(f"Impersonate-Extra-{key}", str(v)) for v in values or ()]
    return Endpoint(
        server=str(cluster["server"]).rstrip("/"),
        ca_path=_relative_to(cluster_file, cluster.get("certificate-authority")),
        ca_data=_pem(cluster.get("certificate-authority-data")),
        insecure=bool(cluster.get("insecure-skip-tls-verify")),
        tls_server_name=cluster.get("tls-server-name"),
        proxy_url=str(proxy) if proxy else None,
        certificate_path=_relative_to(user_file, user.get("client-certificate")),
        certificate_data=_pem(user.get("client-certificate-data")),
        private_key_path=_relative_to(user_file, user.get("client-key")),
        private_key_data=_pem(user.get("client-key-data")),
        token=str(user["token"]) if user.get("token") else None,
        token_path=_relative_to(user_file, user.get("tokenFile")),
        username=user.get("username"),
        password=user.get("password"),
        exec_plugin=_exec_plugin(user.get("exec"), user_file, cluster, source),
        oidc=_auth_provider(user.get("auth-provider"), user_file, user_name, source),
        impersonate=tuple(impersonate),
        default_namespace=str(namespace) if namespace else None,
        source=source,
    )


def _exec_plugin(
    spec: Mapping[str, Any] | None, user_file: Path, cluster: Mapping[str, Any], source: str
) -> ExecPlugin | None:
    if not spec:
        return None
    api_version = str(spec.get("apiVersion") or "")
    if api_version not in EXEC_API_VERSIONS:
        raise KubeconfigError(
            f"{source}: exec plugin apiVersion {api_version!r} is not supported "
            f"(use one of {', '.join(EXEC_API_VERSIONS)})"
        )
    command = str(spec.get("command") or "")
    if not command:
        raise KubeconfigError(f"{source}: exec plugin without a command")
    # As client-go: a relative path with a separator is relative to the kubeconfig file.
    if os.sep in command and not Path(command).is_absolute():
        command = str(user_file.parent / command)
    mode = str(spec.get("interactiveMode") or "IfAvailable")
    if mode == "Always":
        raise KubeconfigError(
            f"{source}: exec plugin {command} needs an interactive terminal "
            "(interactiveMode: Always), which a controller never has"
        )
    extensions = {str(e.get("name")): e.get("extension") for e in cluster.get("extensions") or ()}
    return ExecPlugin(
        api_version=api_version,
        command=command,
        args=tuple(str(a) for a in spec.get("args") or ()),
        env=tuple((str(e["name"]), str(e.get("value", ""))) for e in spec.get("env") or ()),
        install_hint=str(spec.get("installHint") or ""),
        provide_cluster_info=bool(spec.get("provideClusterInfo")),
        interactive_mode=mode,
        cluster_config=extensions.get("client.authentication.k8s.io/exec"),
    )


def _auth_provider(
    spec: Mapping[str, Any] | None, user_file: Path, user_name: str, source: str
) -> OidcProvider | None:
    if not spec:
        return None
    name = str(spec.get("name") or "")
    if name in REMOVED_AUTH_PROVIDERS:
        raise KubeconfigError(f"{source}: {REMOVED_AUTH_PROVIDERS[name]}")
    if name != "oidc":
        raise KubeconfigError(f"{source}: auth provider {name!r} is not known to kubectl either")
    config = {str(k): str(v) for k, v in (spec.get("config") or {}).items()}
    if not config.get("id-token") and not config.get("refresh-token"):
        raise KubeconfigError(f"{source}: the oidc auth provider has neither id-token nor "
                              "refresh-token (log in with your OIDC helper first)")  # fmt: skip
    return OidcProvider(tuple(sorted(config.items())), str(user_file), user_name)


def endpoint_in_cluster(directory: Path = SERVICE_ACCOUNT_DIR) -> Endpoint | None:
    """The pod's service account: its token file is re-read, since the kubelet rotates it."""
    token = directory / "token"
    host, port = (
        os.environ.get("KUBERNETES_SERVICE_HOST"),
        os.environ.get("KUBERNETES_SERVICE_PORT"),
    )
    if not (token.exists() and host and port):
        return None
    namespace = directory / "namespace"
    server_host = f"[{host}]" if ":" in host else host
    return Endpoint(
        server=f"https://{server_host}:{port}",
        ca_path=str(directory / "ca.crt"),
        token_path=str(token),
        default_namespace=namespace.read_text().strip() if namespace.exists() else None,
        source="in-cluster service account",
    )


def discover_endpoint(kubeconfig: str | None = None, context: str | None = None) -> Endpoint:
    """``--kubeconfig``, then ``$KUBECONFIG``, then in-cluster, then ``~/.kube/config``."""
    paths = kubeconfig_paths(kubeconfig)
    if paths:
        return endpoint_from_kubeconfig(paths, context)
    in_cluster = endpoint_in_cluster()
    if in_cluster is not None:
        if context:
            raise KubeconfigError("--context needs a kubeconfig; this is the in-cluster account")
        return in_cluster
    default = Path.home() / ".kube" / "config"
    if default.exists():
        return endpoint_from_kubeconfig(default, context)
    raise KubeconfigError(
        "no kubeconfig found ($KUBECONFIG, ~/.kube/config) and not running in a cluster"
    )
