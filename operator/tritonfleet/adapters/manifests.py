"""Reading TritonModel/ModelEnsemble documents the way ``kubectl apply -f`` does, and
writing them as ``tritonfleet import`` prints them.

Shared by ``tritonfleet render`` and ``tritonfleet sync``: files, directories
(their YAML/JSON files, sorted), ``-`` for stdin, multi-document YAML and
``kind: List`` are all accepted, so an ensemble and its members can be given
together however the user keeps them.

Input is untrusted: a key given twice in one mapping is refused (YAML says keys
are unique; PyYAML would keep the last one silently, and the API server refuses
such a manifest too), so are aliases that expand to more than
:data:`MAX_EXPANDED_NODES` nodes (a "billion laughs" document is tiny until
something walks it), and whatever the parser cannot take (an integer of
thousands of digits, nesting thousands deep) is a :class:`ManifestError` naming
the file, never a traceback.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import yaml

from tritonfleet.api.problems import clip

MANIFEST_SUFFIXES = (".yaml", ".yml", ".json")
MAX_EXPANDED_NODES = 1_000_000  # nodes of one document with every alias expanded


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


def _expanded_size(node: yaml.Node, memo: dict[int, int]) -> int:
    """Nodes under ``node`` counting each alias as a copy of what it names."""
    known = memo.get(id(node))
    if known is not None:
        return known
    size = 1
    if isinstance(node, yaml.SequenceNode):
        size += sum(_expanded_size(child, memo) for child in node.value)
    elif isinstance(node, yaml.MappingNode):
        size += sum(_expanded_size(k, memo) + _expanded_size(v, memo) for k, v in node.value)
    memo[id(node)] = size
    return size


class _UniqueKeyLoader(yaml.SafeLoader):
    """The safe loader, refusing a mapping that gives a key twice and documents
    whose aliases expand beyond :data:`MAX_EXPANDED_NODES`."""

    def compose_document(self) -> yaml.Node | None:
        node: yaml.Node | None = super().compose_document()
        if node is not None and _expanded_size(node, {}) > MAX_EXPANDED_NODES:
            raise yaml.composer.ComposerError(
                None,
                None,
                f"the document's aliases expand to more than {MAX_EXPANDED_NODES} nodes",
                node.start_mark,
            )
        return node

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, yaml.Mark] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # `<<: *anchor` merges, and may override, on purpose
            key = self.construct_object(key_node, deep=True)
            try:
                first = seen.get(key)
            except TypeError:
                continue  # an unhashable key: construct_mapping says so below
            if first is not None:
                raise yaml.constructor.ConstructorError(
                    "while constructing a mapping",
                    node.start_mark,
                    f"found the key {clip(repr(key), 80)} twice (first at line {first.line + 1})",
                    key_node.start_mark,
                )
            seen[key] = key_node.start_mark
        return super().construct_mapping(node, deep=deep)


def _load_all(text: str) -> list[Any]:
    return list(yaml.load_all(text, Loader=_UniqueKeyLoader))


def read_documents(paths: Sequence[str]) -> list[dict[str, Any]]:
    """Every mapping document in ``paths``, Lists unpacked, empty documents dropped."""
    documents: list[dict[str, Any]] = []
    for name in expand_paths(paths):
        try:
            text = sys.stdin.read() if name == "-" else Path(name).read_text()
            loaded = _load_all(text)
        except (OSError, yaml.YAMLError) as error:
            raise ManifestError(clip(f"cannot read {name}: {error}", 2000)) from error
        except RecursionError:
            raise ManifestError(f"cannot read {name}: it is nested too deeply") from None
        except ValueError as error:
            if "integer string conversion" in str(error):
                error = ValueError("it holds an integer of more than 4300 digits")
            raise ManifestError(clip(f"cannot read {name}: {error}")) from None
        for doc in loaded:
            if doc is None:
                continue
            if not isinstance(doc, dict):
                raise ManifestError(f"{name}: every YAML document must be a mapping")
            if doc.get("kind") == "List":
                items = doc.get("items") or []
                if not isinstance(items, list) or not all(isinstance(i, dict) for i in items if i):
                    raise ManifestError(f"{name}: the items of a List must be mappings")
                documents.extend(item for item in items if item)
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
