"""Render a set of YAML documents (TritonModels and ModelEnsembles, as a user
would ``kubectl apply`` them) into what Triton will be given; TritonServerPools
among them are validated (the CLI previews their placement).

This is what ``tritonfleet render`` prints: the ``helm template`` of the
project, a preview before apply. Ensembles are checked against the members in
the same set of documents. Pure: takes parsed documents, returns results.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from tritonfleet.api.ensemble import ModelEnsemble
from tritonfleet.api.model import ModelConfigSpec, TritonModel
from tritonfleet.api.pool import TritonServerPool
from tritonfleet.api.problems import Problem, clip, problems_from_validation_error
from tritonfleet.desired.triton.config import merge_extra, render_config
from tritonfleet.desired.triton.ensemble import render_ensemble_config
from tritonfleet.desired.triton.proto import mc
from tritonfleet.desired.triton.revision import ensemble_revision, model_revision

KINDS = ("ModelEnsemble", "TritonModel", "TritonServerPool")


@dataclass(frozen=True)
class Rendered:
    """One document's outcome: its config.pbtxt and revision, or its problems."""

    kind: str
    namespace: str
    name: str
    triton_name: str = ""
    pbtxt: str = ""
    revision: str = ""
    problems: tuple[Problem, ...] = field(default_factory=tuple)

    @property
    def resource(self) -> str:
        return clip(f"{self.kind} {self.namespace}/{self.name}", 300)

    @property
    def ok(self) -> bool:
        return not self.problems


def _identify(index: int, doc: Mapping[str, Any]) -> tuple[str, str, str]:
    meta = doc.get("metadata") if isinstance(doc.get("metadata"), dict) else {}
    assert isinstance(meta, dict)
    return (
        str(doc.get("kind", "?")),
        str(meta.get("namespace") or "default"),
        str(meta.get("name") or f"<document {index}>"),
    )


def placement_problems(model: TritonModel) -> list[Problem]:
    """Instance groups that cannot load in the model's own pods, which see GPUs 0 to
    ``serving.gpus - 1`` (Triton: ValidateInstanceGroup, "specifies invalid or unsupported
    gpu id", "has kind KIND_GPU but no GPUs are available")."""
    gpus = model.spec.serving.gpus
    problems = []
    for i, group in enumerate(model.spec.config.instance_groups):
        path = f"spec.config.instanceGroups[{i}]"
        missing = [g for g in group.gpus or () if g >= gpus]
        if missing:
            problems.append(
                Problem(
                    f"{path}.gpus",
                    f"GPU {', '.join(map(str, missing))} does not exist in the pod: "
                    f"spec.serving.gpus {gpus} gives it GPUs "
                    + (f"0 to {gpus - 1}" if gpus else "none"),
                )
            )
        elif group.kind == "KIND_GPU" and gpus == 0:
            problems.append(
                Problem(f"{path}.kind", "KIND_GPU needs GPUs, and spec.serving.gpus is 0")
            )
    return problems


def render_model(model: TritonModel) -> Rendered:
    pbtxt, problems = render_config(model.triton_name, model.spec.config)
    problems += placement_problems(model)
    return Rendered(
        kind="TritonModel",
        namespace=model.metadata.namespace or "default",
        name=model.metadata.name,
        triton_name=model.triton_name,
        pbtxt=pbtxt,
        revision=model_revision(model, pbtxt) if not problems else "",
        problems=tuple(problems),
    )


def render_ensemble(
    ensemble: ModelEnsemble,
    members: Mapping[str, TritonModel],
    member_revisions: Mapping[str, str],
    invalid_members: Collection[str] = (),
) -> Rendered:
    """The ensemble's config and revision; ``members`` are the valid TritonModels
    of its namespace, ``invalid_members`` those that failed their own checks."""
    pbtxt, problems = render_ensemble_config(ensemble, members, invalid_members)
    invalid = [n for n in ensemble.member_names if n in members and not member_revisions.get(n)]
    if invalid:
        problems.append(
            Problem("spec.steps", f"member(s) {', '.join(invalid)} are invalid; fix them first")
        )
    revisions = [member_revisions.get(name, "") for name in ensemble.member_names]
    return Rendered(
        kind="ModelEnsemble",
        namespace=ensemble.metadata.namespace or "default",
        name=ensemble.metadata.name,
        triton_name=ensemble.triton_name,
        pbtxt=pbtxt,
        revision=ensemble_revision(ensemble.triton_name, pbtxt, revisions) if not problems else "",
        problems=tuple(problems),
    )


def render_documents(docs: Iterable[Mapping[str, Any] | None]) -> list[Rendered]:
    """Render every TritonModel and ModelEnsemble in ``docs``, in document order."""
    results: list[Rendered | ModelEnsemble] = []
    models: dict[tuple[str, str], TritonModel] = {}
    revisions: dict[tuple[str, str], str] = {}
    invalid: set[tuple[str, str]] = set()
    for index, doc in enumerate(docs):
        if not doc:
            continue
        kind, namespace, name = _identify(index, doc)
        if kind not in KINDS:
            results.append(
                Rendered(kind, namespace, name, problems=(Problem("kind", _unknown_kind(kind)),))
            )
            continue
        if kind == "TritonServerPool":
            results.append(_validate_pool(doc, namespace, name))
            continue
        try:
            if kind == "TritonModel":
                model = TritonModel.from_object(doc)
            else:
                results.append(ModelEnsemble.from_object(doc))  # rendered once members are known
                continue
        except ValidationError as error:
            problems = problems_from_validation_error(error)
            if kind == "TritonModel":
                invalid.add((namespace, name))
            problems += _checks_anyway(kind, doc, problems)
            results.append(Rendered(kind, namespace, name, problems=tuple(problems)))
            continue
        rendered = render_model(model)
        models[(namespace, name)] = model
        revisions[(namespace, name)] = rendered.revision
        results.append(rendered)
    out = []
    for item in results:
        if isinstance(item, Rendered):
            out.append(item)
            continue
        namespace = item.metadata.namespace or "default"
        members = {n: m for (ns, n), m in models.items() if ns == namespace}
        member_revisions = {n: r for (ns, n), r in revisions.items() if ns == namespace}
        invalid_here = {n for ns, n in invalid if ns == namespace}
        out.append(render_ensemble(item, members, member_revisions, invalid_here))
    return out


def _validate_pool(doc: Mapping[str, Any], namespace: str, name: str) -> Rendered:
    """A pool has no config of its own: it is valid or not (its placement is the CLI's)."""
    try:
        TritonServerPool.from_object(doc)
    except ValidationError as error:
        problems = tuple(problems_from_validation_error(error))
        return Rendered("TritonServerPool", namespace, name, problems=problems)
    return Rendered("TritonServerPool", namespace, name)


def _checks_anyway(kind: str, doc: Mapping[str, Any], known: list[Problem]) -> list[Problem]:
    """The problems a document has beyond the ones pydantic found, so that every problem
    shows in one run: when only something outside ``spec.config`` is invalid (two sources,
    a bad replica range), the config's load-time checks; when more is invalid, at least
    whether ``extra`` parses."""
    spec = doc.get("spec")
    if not isinstance(spec, Mapping):
        return []
    raw = spec.get("config") if kind == "TritonModel" else spec
    extra_path = "spec.config.extra" if kind == "TritonModel" else "spec.extra"
    if not isinstance(raw, Mapping):
        return []
    if kind == "TritonModel" and not any(p.path.startswith("spec.config") for p in known):
        try:
            config = ModelConfigSpec.model_validate(raw, by_alias=True, by_name=False)
        except ValidationError:
            return []
        meta = doc.get("metadata") if isinstance(doc.get("metadata"), Mapping) else {}
        assert isinstance(meta, Mapping)
        name = spec.get("modelName") or meta.get("name") or "model"
        _, problems = render_config(str(name), config)
        return [p for p in problems if p.path != "spec.modelName"]
    extra = raw.get("extra")
    if isinstance(extra, str) and not any(p.path == extra_path for p in known):
        return merge_extra(mc.ModelConfig(), extra, extra_path)
    return []


def _unknown_kind(kind: str) -> str:
    return f"unsupported kind {kind!r}; expected one of {', '.join(sorted(KINDS))}"
