"""Reading TritonModel/ModelEnsemble documents the way ``kubectl apply -f`` does, and
writing them as ``tritonfleet import`` prints them.

Shared by ``tritonfleet render`` and ``tritonfleet sync``: files, directories
(their YAML/JSON files, sorted), ``-`` for stdin, multi-document YAML and
``kind: List`` are all accepted, so an ensemble and its members can be given
together however the user keeps them.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import yaml

MANIFEST_SUFFIXES = (".yaml", ".yml", ".json")


class ManifestError(ValueError):
    """A file could not be read or is not a set of YAML mappings."""


def expand_paths(paths: Sequence[str]) -> Iterator[str]:
    """Files as given; a directory stands for its manifest files, as with kubectl -f."""
    for name in paths:
        path = Path(name)
        if name != "-" and path.is_dir():
            yield from sorted(str(p) for p in path.iterdir() if p.suffix in MANIFEST_SUFFIXES)
        else:
            yield name


def read_documents(paths: Sequence[str]) -> list[dict[str, Any]]:
    """Every mapping document in ``paths``, Lists unpacked, empty documents dropped."""
    documents: list[dict[str, Any]] = []
    for name in expand_paths(paths):
        try:
            text = sys.stdin.read() if name == "-" else Path(name).read_text()
            loaded = list(yaml.safe_load_all(text))
        except (OSError, yaml.YAMLError) as error:
            raise ManifestError(f"cannot read {name}: {error}") from error
        for doc in loaded:
            if doc is None:
                continue
            if not isinstance(doc, dict):
                raise ManifestError(f"{name}: every YAML document must be a mapping")
            if doc.get("kind") == "List":
                documents.extend(item for item in doc.get("items") or [] if item)
            else:
                documents.append(doc)
    return documents


class _Dumper(yaml.SafeDumper):
    """YAML as people write manifests: short lists of numbers inline (``dims: [-1, 3]``),
    multi-line text (``extra``) as a literal block."""


def _represent_list(dumper: yaml.SafeDumper, items: list[Any]) -> yaml.Node:
    scalars = all(isinstance(i, bool | int | float) for i in items)
    return dumper.represent_sequence(
        "tag:yaml.org,2002:seq", items, flow_style=scalars and bool(items)
    )


def _represent_str(dumper: yaml.SafeDumper, text: str) -> yaml.Node:
    style = "|" if "\n" in text.rstrip("\n") or text.endswith("\n") else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", text, style=style)


_Dumper.add_representer(list, _represent_list)
_Dumper.add_representer(str, _represent_str)


def dump_documents(documents: Sequence[dict[str, Any]], header: str = "") -> str:
    """Multi-document YAML, with ``header`` as a comment on top."""
    comment = "".join(f"# {line}\n".replace("# \n", "#\n") for line in header.splitlines())
    body = yaml.dump_all(documents, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=100)
    return comment + body


def write_text(name: str, text: str) -> None:
    """Write ``text`` to the file ``name`` (whole, or not at all)."""
    path = Path(name)
    temporary = path.with_name(f".{path.name}.tmp")
    try:
        temporary.write_text(text)
        temporary.replace(path)
    except OSError as error:
        temporary.unlink(missing_ok=True)
        raise ManifestError(f"cannot write {name}: {error}") from error
