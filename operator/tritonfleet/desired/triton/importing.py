"""``tritonfleet import``: existing ``config.pbtxt`` files → TritonModel and ModelEnsemble
documents, so a hand-written model repository becomes objects without transcribing it.

Pure: the adapter (``adapters/model_repository.py``) reads the files and hands over
:class:`ConfigFile` values; this module parses them as Triton's ``ModelConfig``, maps every
field onto the typed API (``wire.read``), puts the few fields the API does not type into
``extra``, and proves the result: each document is rendered back and must give the same
``ModelConfig`` as the file (the name aside, which comes from the directory as in Triton).
A config Triton would refuse, or one the API cannot carry, is reported instead of imported.

Templated configs (TensorRT-LLM's ``${name}`` placeholders, filled by its
``fill_template.py``) are filled from the values given; placeholders inside quoted strings may
stay unfilled (TensorRT-LLM's backends read a ``${...}`` parameter as unset) and are kept as
written, with a note. Any other unfilled placeholder stops the import of that config with the
list of values it needs.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from google.protobuf import text_format

from tritonfleet.api.base import MODEL_NAME_RE
from tritonfleet.api.model import ServingSpec
from tritonfleet.api.problems import Problem
from tritonfleet.desired.triton import wire
from tritonfleet.desired.triton.config import describe_parse_error
from tritonfleet.desired.triton.proto import mc
from tritonfleet.desired.triton.render import render_documents
from tritonfleet.desired.triton.revision import REVISION_PARAMETER

API_VERSION = "tritonfleet.io/v1alpha1"
SERVING_GPUS_DEFAULT = ServingSpec().gpus
PLACEHOLDER = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
# The ModelEnsemble fields that are ModelConfig fields under the same names.
_ENSEMBLE_CONFIG_FIELDS = ("max_batch_size", "input", "output", "version_policy", "parameters")


@dataclass(frozen=True)
class ConfigFile:
    """One model as found on disk: its directory name (Triton's model name) and config."""

    directory: str
    text: str
    origin: str  # where it was read from, for messages


@dataclass
class ImportResult:
    documents: list[dict[str, Any]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # "origin: what stops the import"
    notes: list[str] = field(default_factory=list)  # "origin: what the user should know"


SourceFor = Callable[[str], dict[str, Any]]
"""The ``spec.source`` of the model in a directory of the given name."""


# --- templates --------------------------------------------------------------------------


def fill_placeholders(text: str, values: Mapping[str, str]) -> str:
    """``${name}`` replaced by ``values[name]`` where given, as TensorRT-LLM's
    fill_template.py does (text substitution, before parsing)."""
    return PLACEHOLDER.sub(lambda m: values.get(m.group(1), m.group(0)), text)


def _blank(text: str, *, strings: bool) -> str:
    """``text`` with comments (and, if ``strings``, quoted strings) blanked out, lexing it as
    protobuf text format does."""
    out = []
    quote = ""
    i = 0
    while i < len(text):
        char = text[i]
        if quote:
            if char == "\\" and i + 1 < len(text):
                out.append("  " if strings else text[i : i + 2])
                i += 2
                continue
            if char == quote:
                quote = ""
            out.append(" " if strings and char != "\n" else char)
        elif char in "\"'":
            quote = char
            out.append(" " if strings else char)
        elif char == "#":
            end = text.find("\n", i)
            end = len(text) if end < 0 else end
            out.append(" " * (end - i))
            i = end
            continue
        else:
            out.append(char)
        i += 1
    return "".join(out)


def placeholders(text: str) -> tuple[list[str], list[str]]:
    """Unfilled placeholder names outside comments: (outside quoted strings, inside them)."""
    bare = set(PLACEHOLDER.findall(_blank(text, strings=True)))
    quoted = set(PLACEHOLDER.findall(_blank(text, strings=False))) - bare
    return sorted(bare), sorted(quoted)


# --- names and sources ------------------------------------------------------------------


def object_name(triton_name: str) -> str:
    """A Kubernetes object name for a Triton model name (lower case, ``_`` → ``-``)."""
    name = re.sub(r"[^a-z0-9.-]+", "-", triton_name.lower())
    name = re.sub(r"\.\.+", ".", name)
    return re.sub(r"^[^a-z0-9]+|[^a-z0-9]+$", "", name)[:253] or "model"


# --- one config ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _Parsed:
    file: ConfigFile
    config: Any  # mc.ModelConfig, name set to the directory's
    triton_name: str
    name: str  # metadata.name

    @property
    def is_ensemble(self) -> bool:
        return bool(
            self.config.platform == "ensemble" or self.config.HasField("ensemble_scheduling")
        )


def _parse(file: ConfigFile, values: Mapping[str, str], result: ImportResult) -> _Parsed | None:
    text = fill_placeholders(file.text, values)
    bare, quoted = placeholders(text)
    try:
        config = text_format.Parse(text, mc.ModelConfig())
    except text_format.ParseError as error:
        if bare:
            flags = " ".join(f"--set {n}=VALUE" for n in bare)
            result.errors.append(
                f"{file.origin}: a template with placeholders that need values before Triton "
                f"can read it: {', '.join(bare)} (give {flags})"
            )
        else:
            result.errors.append(f"{file.origin}: {describe_parse_error(text, error)}")
        return None
    if quoted:
        result.notes.append(
            f"{file.origin}: kept as written (no value given): "
            + ", ".join(f"${{{n}}}" for n in quoted)
        )
    if config.HasField("ensemble_scheduling") != (config.platform == "ensemble"):
        result.errors.append(
            f"{file.origin}: ensemble_scheduling and platform 'ensemble' go together; Triton "
            "refuses one without the other (ValidateModelConfig)"
        )
        return None
    triton_name = config.name or file.directory
    if config.name and file.directory and config.name != file.directory:
        result.errors.append(
            f"{file.origin}: the config names the model {config.name!r} but its directory is "
            f"{file.directory!r}; Triton refuses that (directory name must equal model name)"
        )
        return None
    if not MODEL_NAME_RE.match(triton_name):
        result.errors.append(f"{file.origin}: {triton_name!r} is not a valid Triton model name")
        return None
    config.name = triton_name
    if REVISION_PARAMETER in config.parameters:
        del config.parameters[REVISION_PARAMETER]  # stamped by tritonfleet sync, not the user's
    return _Parsed(file, config, triton_name, object_name(triton_name))


def _metadata(parsed: _Parsed, namespace: str | None) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": parsed.name}
    if namespace:
        metadata["namespace"] = namespace
    return metadata


def _extra_text(config: Any) -> str | None:
    text = str(text_format.MessageToString(config))
    return text or None


def _model_document(
    parsed: _Parsed, source: dict[str, Any], namespace: str | None
) -> dict[str, Any]:
    config = parsed.config
    spec_config = wire.read(config)
    # Fields without a typed field (newer than Triton 2.51) travel as extra.
    leftover = mc.ModelConfig()
    leftover.CopyFrom(config)
    for proto_field in config.DESCRIPTOR.fields:
        if proto_field.name not in wire.SHAPES[wire.MODEL_CONFIG].untyped - {"name"}:
            leftover.ClearField(proto_field.name)
    extra = _extra_text(leftover)
    if extra:
        spec_config["extra"] = extra
    spec: dict[str, Any] = {}
    if parsed.name != parsed.triton_name:
        spec["modelName"] = parsed.triton_name
    spec.update({"source": source, "config": spec_config})
    # The pod must have every GPU an instance group names (they are numbered from 0 there).
    listed = [gpu for group in config.instance_group for gpu in group.gpus]
    if listed and max(listed) + 1 > SERVING_GPUS_DEFAULT:
        spec["serving"] = {"gpus": max(listed) + 1}
    return {
        "apiVersion": API_VERSION,
        "kind": "TritonModel",
        "metadata": _metadata(parsed, namespace),
        "spec": spec,
    }


def _ensemble_document(
    parsed: _Parsed,
    members: Mapping[str, str],
    ensembles: set[str],
    namespace: str | None,
    result: ImportResult,
) -> dict[str, Any] | None:
    config = parsed.config
    scheduling = config.ensemble_scheduling
    if any(step.model_namespace for step in scheduling.step):
        result.errors.append(
            f"{parsed.file.origin}: steps with model_namespace cannot be imported: the members "
            "of a ModelEnsemble are TritonModels of its own namespace"
        )
        return None
    typed = mc.ModelConfig()
    for name in _ENSEMBLE_CONFIG_FIELDS:
        proto_field = config.DESCRIPTOR.fields_by_name[name]
        if proto_field.is_repeated:
            getattr(typed, name).MergeFrom(getattr(config, name))
        elif proto_field.message_type is not None and config.HasField(name):
            getattr(typed, name).CopyFrom(getattr(config, name))
        elif proto_field.message_type is None:
            setattr(typed, name, getattr(config, name))
    spec: dict[str, Any] = {}
    if parsed.name != parsed.triton_name:
        spec["modelName"] = parsed.triton_name
    spec.update(wire.read(typed))
    # Triton refuses ensemble tensors without a data type or dims; say so as the API does.
    for key, tensors in (("inputs", config.input), ("outputs", config.output)):
        for item, tensor in zip(spec.get(key, []), tensors, strict=True):
            item.setdefault("dataType", mc.DataType.Name(tensor.data_type))
            item.setdefault("dims", [])
    steps = []
    for step in scheduling.step:
        if step.model_name in ensembles:
            result.errors.append(
                f"{parsed.file.origin}: step model {step.model_name!r} is itself an ensemble; "
                "the steps of a ModelEnsemble are TritonModels (put its steps in this one)"
            )
            return None
        member = members.get(step.model_name)
        if member is None:
            member = object_name(step.model_name)
            result.notes.append(
                f"{parsed.file.origin}: step model {step.model_name!r} is not among the imported "
                f"models; the step names TritonModel {member!r}"
            )
        steps.append(
            {
                "model": member,
                "modelVersion": step.model_version,
                "inputMap": dict(sorted(step.input_map.items())),
                "outputMap": dict(sorted(step.output_map.items())),
            }
        )
    spec["steps"] = steps
    leftover = mc.ModelConfig()
    leftover.CopyFrom(config)
    for name in ("name", "platform", *_ENSEMBLE_CONFIG_FIELDS):
        leftover.ClearField(name)
    del leftover.ensemble_scheduling.step[:]
    if leftover.ensemble_scheduling.ByteSize() == 0:
        leftover.ClearField("ensemble_scheduling")
    extra = _extra_text(leftover)
    if extra:
        spec["extra"] = extra
    return {
        "apiVersion": API_VERSION,
        "kind": "ModelEnsemble",
        "metadata": _metadata(parsed, namespace),
        "spec": spec,
    }


# --- the whole import ---------------------------------------------------------------------


def _hint(message: str) -> str:
    """A problem with a ``${name}`` in it comes from an unfilled template placeholder."""
    found = PLACEHOLDER.findall(message)
    if not found:
        return message
    flags = ", ".join(f"--set {n}=VALUE" for n in dict.fromkeys(found))
    return f"{message} (a template placeholder: give {flags})"


def _expected(item: _Parsed, members: Mapping[str, str]) -> Any:
    """The config the document must render to: the original, except that a step whose member
    was not imported names the TritonModel the import chose for it."""
    if not item.is_ensemble:
        return item.config
    expected = mc.ModelConfig()
    expected.CopyFrom(item.config)
    for step in expected.ensemble_scheduling.step:
        if step.model_name not in members:
            step.model_name = object_name(step.model_name)
    return expected


def _not_imported_member(problem: Problem, missing: set[str]) -> bool:
    return problem.path.startswith("spec.steps[") and any(
        f"TritonModel {m!r} not found" in problem.message for m in missing
    )


def _check(
    documents: list[dict[str, Any]],
    parsed: Sequence[_Parsed],
    members: Mapping[str, str],
    result: ImportResult,
) -> list[dict[str, Any]]:
    """Keep the documents that are valid and render back to their original config."""
    kept = []
    by_name = {p.name: p for p in parsed}
    missing = {object_name(n) for p in parsed for n in _step_models(p) if n not in members}
    for document, outcome in zip(documents, render_documents(documents), strict=True):
        item = by_name[document["metadata"]["name"]]
        problems = [p for p in outcome.problems if not _not_imported_member(p, missing)]
        if problems:
            result.errors += [f"{item.file.origin}: {_hint(str(p))}" for p in problems]
            continue
        again = text_format.Parse(outcome.pbtxt, mc.ModelConfig())
        expected = _expected(item, members)
        if again != expected:
            changed = sorted(
                f.name
                for f in mc.ModelConfig.DESCRIPTOR.fields
                if _field_value(again, f) != _field_value(expected, f)
            )
            result.errors.append(
                f"{item.file.origin}: importing would change what Triton gets (in "
                f"{', '.join(changed)}); this is a tritonfleet bug, please report it"
            )
            continue
        kept.append(document)
    return kept


def _step_models(item: _Parsed) -> list[str]:
    return [step.model_name for step in item.config.ensemble_scheduling.step]


def _field_value(config: Any, proto_field: Any) -> Any:
    value = getattr(config, proto_field.name)
    if proto_field.message_type is not None and not proto_field.is_repeated:
        return (
            value.SerializeToString(deterministic=True)
            if config.HasField(proto_field.name)
            else None
        )
    if proto_field.is_repeated and proto_field.message_type is not None:
        if proto_field.message_type.GetOptions().map_entry:
            return sorted((k, str(v)) for k, v in value.items())
        return [v.SerializeToString(deterministic=True) for v in value]
    return list(value) if proto_field.is_repeated else value


def import_configs(
    files: Sequence[ConfigFile],
    source_for: SourceFor,
    *,
    namespace: str | None = None,
    values: Mapping[str, str] | None = None,
) -> ImportResult:
    """TritonModel documents for the models, then ModelEnsemble documents for the ensembles,
    in directory order; every config that cannot be imported is listed in ``errors``."""
    result = ImportResult()
    parsed: dict[str, _Parsed] = {}
    for file in files:
        item = _parse(file, values or {}, result)
        if item is None:
            continue
        clash = next((p for p in parsed.values() if p.name == item.name), None)
        if clash is not None:
            result.errors.append(
                f"{file.origin}: model {item.triton_name!r} would be TritonModel {item.name!r}, "
                f"like {clash.triton_name!r} from {clash.file.origin}; import them separately"
            )
            continue
        parsed[item.triton_name] = item
    members = {p.triton_name: p.name for p in parsed.values() if not p.is_ensemble}
    ensemble_names = {p.triton_name for p in parsed.values() if p.is_ensemble}
    models, ensembles = [], []
    for item in parsed.values():
        if item.is_ensemble:
            document = _ensemble_document(item, members, ensemble_names, namespace, result)
            if document is not None:
                ensembles.append(document)
            continue
        try:
            source = source_for(item.file.directory or item.triton_name)
        except ValueError as error:
            result.errors.append(f"{item.file.origin}: {error}")
            continue
        models.append(_model_document(item, source, namespace))
    result.documents = _check([*models, *ensembles], list(parsed.values()), members, result)
    return result


# --- where the imported models' files are -------------------------------------------------

_S3_PREFIX = re.compile(r"^s3://[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9](/.*)?$")
_PVC_PREFIX = re.compile(
    r"^pvc://([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*)(/.*)?$"
)


def source_for_prefix(
    prefix: str,
    *,
    s3_endpoint: str | None = None,
    s3_region: str | None = None,
    s3_credentials_secret: str | None = None,
) -> SourceFor:
    """``spec.source`` for each model directory under ``prefix``:
    ``s3://bucket/repo`` → ``s3://bucket/repo/<model>``; ``pvc://claim/path`` → claim
    ``claim``, path ``/path/<model>``. Raises ValueError for any other prefix."""
    prefix = prefix.rstrip("/")
    if _S3_PREFIX.match(prefix):

        def s3(directory: str) -> dict[str, Any]:
            source: dict[str, Any] = {"uri": f"{prefix}/{directory}"}
            for key, value in (
                ("endpoint", s3_endpoint),
                ("region", s3_region),
                ("credentialsSecret", s3_credentials_secret),
            ):
                if value:
                    source[key] = value
            return {"s3": source}

        return s3
    if s3_endpoint or s3_region or s3_credentials_secret:
        raise ValueError("the --s3-* options need an s3:// source prefix")
    match = _PVC_PREFIX.match(prefix)
    if match:
        claim, base = match.group(1), (match.group(5) or "").rstrip("/")

        def pvc(directory: str) -> dict[str, Any]:
            return {"pvc": {"claimName": claim, "path": f"{base}/{directory}"}}

        return pvc
    raise ValueError(
        f"{prefix!r} is not a source prefix: use s3://BUCKET/PATH or pvc://CLAIM/PATH "
        "(each model's files are in <prefix>/<model directory>)"
    )
