"""Tell, from what the API server already tells us, whether a child needs an apply.

The reconciler must not write when nothing changed, and must repair a child
someone edited by hand. Two cheap signals cover both, with no dry run:

* our own change: the child's ``tritonfleet.io/spec-hash`` annotation differs
  from the hash of the object we would apply now;
* someone else's change: server-side apply records which manager owns each
  field (``metadata.managedFields``). When another client (``kubectl edit``,
  ``kubectl patch``, a script) changes or removes a field we applied, the API
  server moves that field out of our ``tritonfleet`` entry. So a child is
  intact exactly when every field we apply is still owned by us.

Fields others *add* (an extra annotation, a sidecar) are theirs under
server-side apply and are left alone: treating them as drift would make the
operator re-apply forever without removing them. Pure: no I/O.
"""

from __future__ import annotations

import functools
import json
import re
import sys
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

# Lists the API server merges by key (x-kubernetes-list-map-keys) in the objects
# we build; every other list is atomic (owned as a whole).
_LIST_KEYS: dict[str, tuple[str, ...]] = {
    "containers": ("name",),
    "initContainers": ("name",),
    "volumes": ("name",),
    "imagePullSecrets": ("name",),
    "env": ("name",),
    "volumeMounts": ("mountPath",),
    "ownerReferences": ("uid",),
}
# `ports` is keyed differently in a container and in a Service.
_PORT_KEYS_CONTAINER = ("containerPort", "protocol")
_PORT_KEYS_SERVICE = ("port", "protocol")

Path = tuple[str, ...]

# Thousands of children share the same field paths: keep one copy of each.
_PATHS: dict[Path, Path] = {}

# An owner reference is keyed by its owner's uid, the one part of a child's field paths
# that is unique to the object. It is written as this placeholder on both sides (what
# we apply, what we own), so that children of the same shape share one set of paths
# (memory, and one drift computation for all of them). A reference that went missing
# is still caught; one whose uid changed under the same owner cannot be (the owner
# would have to be re-created, and then its children are found missing anyway).
OWNER_REFERENCE_ITEM = 'k:{"uid":"*"}'
_OWNER_REFERENCE_KEY = re.compile(r'k:\{\\"uid\\":\\"[^"\\]*\\"\}')


def _intern(path: Path) -> Path:
    return _PATHS.setdefault(path, path)


def _item_key(item: Mapping[str, Any], keys: Sequence[str]) -> str:
    """The ``k:{...}`` segment of fieldsV1 for one keyed list item."""
    return "k:" + json.dumps({k: item[k] for k in keys if k in item}, separators=(",", ":"))


def _list_keys(name: str, parent: Path) -> tuple[str, ...] | None:
    if name == "ports":
        in_container = "k:" in (parent[-1] if parent else "")
        return _PORT_KEYS_CONTAINER if in_container else _PORT_KEYS_SERVICE
    return _LIST_KEYS.get(name)


def _walk(value: Any, path: Path) -> Iterator[Path]:
    if isinstance(value, Mapping):
        if not value:
            yield path
        for key, sub in value.items():
            yield from _walk_field(str(key), sub, path)
    else:
        yield path


def _walk_field(name: str, value: Any, parent: Path) -> Iterator[Path]:
    here = (*parent, f"f:{name}")
    if isinstance(value, list):
        keys = _list_keys(name, parent)
        if keys is None or not value or not all(isinstance(i, Mapping) for i in value):
            yield here  # atomic list: owned as one field
            return
        for item in value:
            key = OWNER_REFERENCE_ITEM if name == "ownerReferences" else _item_key(item, keys)
            yield from _walk(item, (*here, key))
        return
    yield from _walk(value, here)


def applied_paths(obj: Mapping[str, Any]) -> frozenset[Path]:
    """Every field path an apply of ``obj`` sets, in fieldsV1 vocabulary.

    ``apiVersion``/``kind`` and identity fields are not owned fields, so they are left out.
    """
    out: set[Path] = set()
    for key, value in obj.items():
        if key in ("apiVersion", "kind", "status"):
            continue
        if key == "metadata":
            for meta_key in ("labels", "annotations", "ownerReferences", "finalizers"):
                if meta_key in value:
                    out.update(_walk_field(meta_key, value[meta_key], ("f:metadata",)))
            continue
        out.update(_walk_field(key, value, ()))
    paths = frozenset(out)
    shared = _APPLIED_BY_SHAPE.get(paths)
    if shared is not None:
        _APPLIED_BY_SHAPE.move_to_end(paths)
        return shared
    _APPLIED_BY_SHAPE[paths] = paths
    while len(_APPLIED_BY_SHAPE) > _APPLIED_MEMO_MAX:
        _APPLIED_BY_SHAPE.popitem(last=False)
    return paths


# A fleet's children come in a few shapes: children of one shape keep one set of
# applied paths between them (a thousand models held a thousand equal copies of each,
# about 30 MB), which also makes ``_missing``'s memo hit across the fleet.
_APPLIED_BY_SHAPE: OrderedDict[frozenset[Path], frozenset[Path]] = OrderedDict()
_APPLIED_MEMO_MAX = 4096


def _normalise_segment(segment: str) -> str:
    """Keyed segments as the API server writes them, with keys sorted (stable compare)."""
    if segment.startswith("k:"):
        try:
            parsed = json.loads(segment[2:])
        except ValueError:
            return segment
        return "k:" + json.dumps(parsed, sort_keys=True, separators=(",", ":"))
    return segment


def fields_v1_paths(tree: Mapping[str, Any], prefix: Path = ()) -> Iterator[Path]:
    """Leaf paths of a managedFields ``fieldsV1`` tree (``"."`` markers dropped)."""
    for key, sub in tree.items():
        if key == ".":
            continue
        if prefix and prefix[-1] == "f:ownerReferences" and key.startswith("k:"):
            here = (*prefix, OWNER_REFERENCE_ITEM)
        else:
            here = (*prefix, sys.intern(_normalise_segment(key)))
        if isinstance(sub, Mapping) and any(k != "." for k in sub):
            yield from fields_v1_paths(sub, here)
        else:
            yield here


# Every watch event of a child is summarised, and a fleet's children come in a few
# shapes: equal managedFields trees (owner uids aside) give one shared set, computed
# once. (A memo, so the function stays pure; least recently used out when full.)
_OWNED_BY_TREE: OrderedDict[str, frozenset[Path]] = OrderedDict()
_OWNED_MEMO_MAX = 4096


def owned_paths(managed_fields: Iterable[Mapping[str, Any]], manager: str) -> frozenset[Path]:
    """Leaf paths ``manager`` owns on the main resource (not status/scale subresources)."""
    trees = [
        entry.get("fieldsV1") or {}
        for entry in managed_fields or ()
        if entry.get("manager") == manager and not entry.get("subresource")
    ]
    key = _OWNER_REFERENCE_KEY.sub(OWNER_REFERENCE_ITEM, json.dumps(trees, separators=(",", ":")))
    owned = _OWNED_BY_TREE.get(key)
    if owned is not None:
        _OWNED_BY_TREE.move_to_end(key)
        return owned
    out: set[Path] = set()
    for tree in trees:
        out.update(_intern(p) for p in fields_v1_paths(tree))
    owned = _OWNED_BY_TREE[key] = frozenset(out)
    while len(_OWNED_BY_TREE) > _OWNED_MEMO_MAX:
        _OWNED_BY_TREE.popitem(last=False)
    return owned


def missing_paths(desired: frozenset[Path], owned: frozenset[Path]) -> list[Path]:
    """Desired fields no longer owned by us: changed or removed by someone else.

    A field counts as owned when it or one of its parents is an owned leaf: the
    API server records atomic maps and lists (a Deployment's ``selector``,
    ``args``) as one field.
    """
    return list(_missing(desired, owned))


# Both sets are shared by every child of the same shape (the applied objects are built
# once per spec, the owned sets once per managedFields shape): one computation each.
@functools.lru_cache(maxsize=4096)
def _missing(desired: frozenset[Path], owned: frozenset[Path]) -> tuple[Path, ...]:
    prefixes: set[Path] = set()
    for path in owned:
        for end in range(1, len(path)):
            prefixes.add(path[:end])
    missing = []
    for path in desired:
        normalised = tuple(_normalise_segment(s) for s in path)
        if normalised in owned or any(normalised[:end] in owned for end in range(1, len(path))):
            continue
        # A desired map we leave empty ({}) may be recorded deeper by the server.
        if normalised in prefixes:
            continue
        missing.append(path)
    return tuple(sorted(missing))


def describe_path(path: Path) -> str:
    """``spec.template.spec.containers[name=triton].image`` from a fieldsV1 path."""
    out = ""
    for segment in path:
        if segment.startswith("f:"):
            out += ("." if out else "") + segment[2:]
        elif segment.startswith("k:"):
            try:
                parsed = json.loads(segment[2:])
                out += "[" + ",".join(f"{k}={v}" for k, v in parsed.items()) + "]"
            except ValueError:
                out += f"[{segment[2:]}]"
    return out
