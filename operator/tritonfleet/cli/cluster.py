"""Running a command's work against the cluster: the API client from ``--kubeconfig`` and
``--context`` (as kubectl finds them), one event loop, and the errors that mean the
cluster cannot be reached or refuses the credentials (exit 2, ``cli.codes``)."""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

from tritonfleet.adapters.kube import (
    ApiError,
    CredentialError,
    KubeClient,
    KubeconfigError,
    discover_endpoint,
)

T = TypeVar("T")

#: What `tritonfleet get`, `pre-uninstall` and `release-finalizers` report and exit 2 on.
CLUSTER_ERRORS = (KubeconfigError, CredentialError, ApiError, OSError)


def on_cluster(
    args: argparse.Namespace,
    work: Callable[[KubeClient], Awaitable[T]],
    field_manager: str = "tritonfleet-cli",
) -> T:
    """``work(client)`` with a client for the cluster the flags name, in a new event loop."""

    async def run() -> T:
        endpoint = discover_endpoint(args.kubeconfig, args.context)
        async with KubeClient(endpoint, field_manager=field_manager) as client:
            return await work(client)

    return asyncio.run(run())
