"""Reading TritonModel/ModelEnsemble documents the way ``kubectl apply -f`` does.

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
