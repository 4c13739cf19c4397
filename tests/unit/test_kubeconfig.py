"""Kubeconfig as kubectl reads it: several files merged, paths relative to their file,
exec plugins and auth providers described with kubectl's own refusals."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from tritonfleet.adapters.kube_auth import jwt_expiry
from tritonfleet.adapters.kubeconfig import (
    KubeconfigError,
    discover_endpoint,
    endpoint_from_kubeconfig,
)

CA_PEM = b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"


def write(path: Path, **config: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump({"apiVersion": "v1", "kind": "Config", **config}))
    return path


def cluster(name: str, server: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "cluster": {"server": server, **extra}}


def user(name: str, **fields: Any) -> dict[str, Any]:
    return {"name": name, "user": fields}


def context(name: str, cluster: str, user: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "context": {"cluster": cluster, "user": user, **extra}}


def test_several_files_merge_as_kubectl_merges_them(tmp_path: Path) -> None:
    first = write(
        tmp_path / "a" / "config",
        clusters=[cluster("prod", "https://first:6443")],
        contexts=[context("prod", "prod", "alice", namespace="ml")],
        users=[user("alice", tokenFile="alice.token")],
    )
    second = write(
        tmp_path / "b" / "config",
        **{"current-context": "prod"},
        clusters=[cluster("prod", "https://ignored:6443"), cluster("dev", "https://dev:6443")],
        users=[user("alice", token="ignored"), user("bob", token="t")],
        contexts=[context("dev", "dev", "bob")],
    )
    endpoint = endpoint_from_kubeconfig([tmp_path / "missing", first, second])
    # current-context from the second file (the first sets none); the first name wins.
    assert endpoint.server == "https://first:6443"
    assert endpoint.default_namespace == "ml"
    # A relative path is relative to the file that holds it.
    assert endpoint.token_path == str(tmp_path / "a" / "alice.token")
    assert endpoint.token is None
    assert endpoint_from_kubeconfig([first, second], context="dev").server == "https://dev:6443"


def test_kubeconfig_variable_lists_every_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    one = write(tmp_path / "one", clusters=[cluster("c", "https://one")])
    two = write(
        tmp_path / "two",
        **{"current-context": "x"},
        contexts=[context("x", "c", "u")],
        users=[user("u", token="t")],
    )
    monkeypatch.setenv("KUBECONFIG", f"{one}:{two}")
    endpoint = discover_endpoint()
    assert (endpoint.server, endpoint.token) == ("https://one", "t")
    assert "context x" in endpoint.source


def test_data_fields_are_decoded_and_nothing_is_written(tmp_path: Path) -> None:
    config = write(
        tmp_path / "config",
        **{"current-context": "c"},
        clusters=[
            cluster(
                "c",
                "https://h:6443/",
                **{
                    "certificate-authority-data": base64.b64encode(CA_PEM).decode(),
                    "tls-server-name": "kubernetes",
                    "proxy-url": "http://proxy:3128",
                },
            )
        ],
        users=[user("u", **{"client-certificate-data": "LS0t", "client-key-data": "LS0t"})],
        contexts=[context("c", "c", "u")],
    )
    endpoint = endpoint_from_kubeconfig(config)
    assert endpoint.server == "https://h:6443"
    assert endpoint.ca_data == CA_PEM
    assert endpoint.certificate_data == b"---"
    assert (endpoint.tls_server_name, endpoint.proxy_url) == ("kubernetes", "http://proxy:3128")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config"]
    assert "LS0t" not in repr(endpoint)


def test_exec_plugin_is_described_with_its_environment(tmp_path: Path) -> None:
    config = write(
        tmp_path / "kube" / "config",
        **{"current-context": "eks"},
        clusters=[
            cluster(
                "eks",
                "https://eks",
                extensions=[
                    {"name": "client.authentication.k8s.io/exec", "extension": {"region": "x"}}
                ],
            )
        ],
        users=[
            user(
                "aws",
                exec={
                    "apiVersion": "client.authentication.k8s.io/v1beta1",
                    "command": "bin/aws-iam-authenticator",
                    "args": ["token", "-i", "fleet"],
                    "env": [{"name": "AWS_PROFILE", "value": "ml"}],
                    "installHint": "install aws-iam-authenticator",
                    "provideClusterInfo": True,
                },
            )
        ],
        contexts=[context("eks", "eks", "aws")],
    )
    endpoint = endpoint_from_kubeconfig(config)
    plugin = endpoint.exec_plugin
    assert plugin is not None
    # A relative command with a separator is relative to the kubeconfig, as in client-go.
    assert plugin.command == str(tmp_path / "kube" / "bin" / "aws-iam-authenticator")
    assert plugin.args == ("token", "-i", "fleet")
    assert plugin.env == (("AWS_PROFILE", "ml"),)
    assert plugin.cluster_config == {"region": "x"}
    assert endpoint.auth_kind == "exec plugin aws-iam-authenticator"


@pytest.mark.parametrize(
    ("user_fields", "message"),
    [
        ({"exec": {"apiVersion": "client.authentication.k8s.io/v1alpha1", "command": "x"}},
         "v1alpha1. is not supported"),
        ({"exec": {"apiVersion": "client.authentication.k8s.io/v1", "command": "x",
                   "interactiveMode": "Always"}}, "interactive terminal"),
        ({"auth-provider": {"name": "gcp"}}, "gke-gcloud-auth-plugin"),
        ({"auth-provider": {"name": "azure"}}, "kubelogin"),
        ({"auth-provider": {"name": "oidc", "config": {"client-id": "k"}}}, "neither id-token"),
    ],
)  # fmt: skip
def test_what_kubectl_refuses_is_refused_with_its_reason(
    tmp_path: Path, user_fields: dict[str, Any], message: str
) -> None:
    config = write(
        tmp_path / "config",
        **{"current-context": "c"},
        clusters=[cluster("c", "https://h")],
        users=[user("u", **user_fields)],
        contexts=[context("c", "c", "u")],
    )
    with pytest.raises(KubeconfigError, match=message):
        endpoint_from_kubeconfig(config)


def test_a_missing_name_says_which_files_were_read(tmp_path: Path) -> None:
    config = write(tmp_path / "config", **{"current-context": "gone"})
    with pytest.raises(KubeconfigError, match=r"no context named 'gone' in .*config"):
        endpoint_from_kubeconfig(config)
    with pytest.raises(KubeconfigError, match="does not exist"):
        discover_endpoint(str(tmp_path / "absent"))


def test_jwt_expiry_reads_the_claim_without_verifying() -> None:
    def part(obj: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).decode().rstrip("=")

    token = f"{part({'alg': 'RS256'})}.{part({'exp': 1700000000, 'sub': 'me'})}.sig"
    assert jwt_expiry(token) == 1700000000
    assert jwt_expiry("not-a-jwt") is None
