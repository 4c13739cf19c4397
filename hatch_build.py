"""Build hook: generate Triton's ModelConfig protobuf module into the package.

tritonfleet renders ``config.pbtxt`` through Triton's own ``ModelConfig`` message
(``tritonfleet.desired.triton.proto``). The message's definition is
``model_config.proto`` of triton-inference-server/common (BSD-3-Clause, NVIDIA); its
compiled form, a serialized ``FileDescriptorProto``, ships in the ``tritonclient``
wheel. Depending on that wheel at run time would install numpy, ml-dtypes and
rapidjson (about 90 MB) for one module, so it is a *build* requirement only: this
hook reads the compiled descriptor out of ``tritonclient/grpc/model_config_pb2.py``
(parsed, never imported) and writes a small module of its own that registers it in
a private descriptor pool, needing nothing but ``protobuf`` at run time.

The generated file is not committed (``.gitignore``); an editable install
(``make venv``) writes it into the source tree, a wheel build into the wheel.
"""

from __future__ import annotations

import ast
import importlib.metadata
import importlib.util
from pathlib import Path
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface

TARGET = Path("operator/tritonfleet/desired/triton/_model_config_pb2.py")

TEMPLATE = '''\
"""Triton's ModelConfig protobuf messages (model_config.proto of
triton-inference-server/common, BSD-3-Clause, Copyright NVIDIA CORPORATION).

Generated when tritonfleet was built, by hatch_build.py, from the compiled
descriptor in tritonclient {version}. Not edited by hand, not committed.
"""
# ruff: noqa
# mypy: ignore-errors
from google.protobuf import descriptor_pool as _descriptor_pool
from google.protobuf.internal import builder as _builder

# A private pool: another copy of model_config.proto in the process (tritonclient's)
# cannot clash with this one.
_POOL = _descriptor_pool.DescriptorPool()
DESCRIPTOR = _POOL.AddSerializedFile({descriptor!r})
_builder.BuildMessageAndEnumDescriptors(DESCRIPTOR, globals())
_builder.BuildTopDescriptorsAndMessages(DESCRIPTOR, __name__, globals())
'''


def compiled_descriptor() -> tuple[bytes, str]:
    """(serialized model_config.proto, tritonclient version) from the installed wheel."""
    spec = importlib.util.find_spec("tritonclient")  # finds, does not import
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("tritonclient is a build requirement (see pyproject.toml)")
    for location in spec.submodule_search_locations:
        source = Path(location) / "grpc" / "model_config_pb2.py"
        if not source.is_file():
            continue
        for node in ast.walk(ast.parse(source.read_text())):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "AddSerializedFile"
                and node.args
                and isinstance(node.args[0], ast.Constant)
                and isinstance(node.args[0].value, bytes)
            ):
                return node.args[0].value, importlib.metadata.version("tritonclient")
    raise RuntimeError("no compiled model_config.proto found in the tritonclient package")


def generate(root: Path) -> Path:
    descriptor, version = compiled_descriptor()
    target = root / TARGET
    text = TEMPLATE.format(version=version, descriptor=descriptor)
    if not target.exists() or target.read_text() != text:
        target.write_text(text)
    return target


class ModelConfigHook(BuildHookInterface):  # type: ignore[type-arg]
    PLUGIN_NAME = "custom"

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        generate(Path(self.root))
        # Ignored by git, so hatch would leave it out: include it explicitly.
        build_data["artifacts"].append(str(TARGET))
