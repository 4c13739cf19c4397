"""Taking tritonfleet out of a cluster without stranding a namespace.

Every TritonModel and ModelEnsemble carries the operator's finalizer
(``tritonfleet.io/cleanup``): deleting one waits until the operator has unloaded it
and removed its files. Once the operator is gone nothing releases that finalizer,
so a namespace deleted with models in it stays ``Terminating`` for ever.

* :func:`before_uninstall` is what the chart's pre-delete hook runs
  (``tritonfleet pre-uninstall``, ``cli.uninstall``): while the operator still runs,
  either refuse the uninstall, naming the models, or delete them all and wait until the
  operator has released each one.
* :func:`release_finalizers` is the way out when that did not happen (the operator
  was removed first, or crashed for good): it removes the finalizer from objects
  that are being deleted, so their namespace can go; their files stay on the
  repository volume.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from tritonfleet.adapters.kube import ApiError, KubeClient
from tritonfleet.desired.kube.objects import FINALIZER

KINDS = ("ModelEnsemble", "TritonModel")  # ensembles first: members outlive them
Mode = Literal["refuse", "delete"]


@dataclass(frozen=True)
class Found:
    kind: str
    namespace: str
    name: str
    deleting: bool
    finalizers: tuple[str, ...]
    resource_version: str

    def __str__(self) -> str:
        return f"{self.kind} {self.namespace}/{self.name}"


async def find_models(client: KubeClient, namespaces: Sequence[str] = ()) -> list[Found]:
    """Every TritonModel and ModelEnsemble in ``namespaces`` (all namespaces if empty)."""
    found: list[Found] = []
    for kind in KINDS:
        for namespace in namespaces or (None,):
            for obj in await client.list(kind, namespace):
                meta = obj.get("metadata") or {}
                found.append(
                    Found(
                        kind,
                        str(meta.get("namespace")),
                        str(meta.get("name")),
                        bool(meta.get("deletionTimestamp")),
                        tuple(meta.get("finalizers") or ()),
                        str(meta.get("resourceVersion") or ""),
                    )
                )
    return found


def _listing(models: Sequence[Found], limit: int = 20) -> str:
    lines = [f"  {m}" for m in models[:limit]]
    if len(models) > limit:
        lines.append(f"  ... and {len(models) - limit} more")
    return "\n".join(lines)


async def before_uninstall(
    client: KubeClient,
    mode: Mode,
    *,
    namespaces: Sequence[str] = (),
    timeout_s: float = 600.0,
    poll_s: float = 2.0,
) -> tuple[bool, str]:
    """(may the uninstall go on, what to tell the user)."""
    models = await find_models(client, namespaces)
    if not models:
        return True, "no TritonModel or ModelEnsemble left: the operator can go"
    # Models already being deleted are on their way out: the operator, still running,
    # releases them; only the others decide between refusing and deleting.
    live = [m for m in models if not m.deleting]
    if mode == "refuse" and live:
        return False, (
            f"{len(live)} TritonModel/ModelEnsemble object(s) still exist, and each keeps "
            f"the finalizer {FINALIZER} that only the running operator releases:\n"
            f"{_listing(live)}\n"
            "Delete them first (`kubectl delete tritonmodels,modelensembles --all -A`, their "
            "files are removed from the repository), then uninstall again; or uninstall with "
            "--set uninstall.whenModelsExist=delete to have this hook do it."
        )
    for model in live:
        try:
            await client.delete(model.kind, model.namespace, model.name)
        except ApiError as error:
            return False, f"could not delete {model}: {error.message}"
    deadline = time.monotonic() + timeout_s
    while True:
        left = await find_models(client, namespaces)
        if not left:
            return True, f"{len(models)} model(s) deleted and cleaned up by the operator"
        if time.monotonic() > deadline:
            return False, (
                f"{len(left)} model(s) still being deleted after {timeout_s:.0f}s:\n"
                f"{_listing(left)}\n"
                "Is the operator running? `kubectl describe` on one shows what it waits for. "
                "If the operator is gone for good, `tritonfleet release-finalizers` lets them "
                "go (their files stay on the repository volume)."
            )
        await asyncio.sleep(poll_s)


async def release_finalizers(
    client: KubeClient, namespaces: Sequence[str] = (), *, dry_run: bool = False
) -> list[Found]:
    """Remove the operator's finalizer from models already being deleted (stranded)."""
    released = []
    for model in await find_models(client, namespaces):
        if not model.deleting or FINALIZER not in model.finalizers:
            continue
        if not dry_run:
            keep = [f for f in model.finalizers if f != FINALIZER]
            patch = {"metadata": {"finalizers": keep, "resourceVersion": model.resource_version}}
            try:
                await client.patch(model.kind, model.namespace, model.name, patch)
            except ApiError as error:
                if not error.not_found:
                    raise
        released.append(model)
    return released
