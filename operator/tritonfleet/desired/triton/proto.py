"""Triton's ``ModelConfig`` protobuf, reached through this one module.

Every pure module that builds, parses or compares a ``config.pbtxt`` takes the
message classes from here (``from tritonfleet.desired.triton.proto import mc``), so
where the generated code comes from is decided in one place, and a test
(``tests/unit/test_layout.py``) fails if any other module names ``tritonclient``.

The generated module ships inside the ``tritonclient`` wheel, under
``tritonclient/grpc/``. Importing it the ordinary way would run
``tritonclient.grpc``'s ``__init__``, which loads the gRPC runtime and numpy (tens
of MB) that nothing here uses; so the file is loaded on its own, by path, as a
private module. It needs only ``google.protobuf``.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

_MODULE_NAME = "tritonfleet.desired.triton._model_config_pb2"


def _load_model_config_pb2() -> ModuleType:
    loaded = sys.modules.get(_MODULE_NAME)
    if loaded is not None:
        return loaded
    package = importlib.util.find_spec("tritonclient")  # finds, does not import
    locations = list(package.submodule_search_locations or ()) if package else []
    for location in locations:
        path = Path(location) / "grpc" / "model_config_pb2.py"
        spec = importlib.util.spec_from_file_location(_MODULE_NAME, path)
        if spec is None or spec.loader is None or not path.is_file():
            continue
        module = importlib.util.module_from_spec(spec)
        sys.modules[_MODULE_NAME] = module
        spec.loader.exec_module(module)
        return module
    raise ImportError(
        "Triton's model_config_pb2 was not found: install the `tritonclient` package "
        "(it ships the generated module under tritonclient/grpc/)"
    )


mc: Any = _load_model_config_pb2()

__all__ = ["mc"]
