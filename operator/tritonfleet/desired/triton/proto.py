"""Triton's ``ModelConfig`` protobuf, reached through this one module.

Every pure module that builds, parses or compares a ``config.pbtxt`` takes the
message classes from here (``from tritonfleet.desired.triton.proto import mc``), so
where the generated code comes from is decided in one place.

The module is generated when the package is built (``hatch_build.py``) from the
compiled ``model_config.proto`` that ships in the ``tritonclient`` wheel, a build
requirement only: at run time it needs ``google.protobuf`` and nothing of
tritonclient, gRPC or numpy.
"""

from __future__ import annotations

from typing import Any

try:
    from tritonfleet.desired.triton import _model_config_pb2
except ImportError as error:  # pragma: no cover - a broken install, not a code path
    raise ImportError(
        "tritonfleet.desired.triton._model_config_pb2 is missing: it is generated when the "
        "package is built or installed (hatch_build.py); reinstall it, e.g. `make venv` "
        "or `pip install -e .`"
    ) from error

mc: Any = _model_config_pb2

__all__ = ["mc"]
