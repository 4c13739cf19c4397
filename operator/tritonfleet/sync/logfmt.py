"""Log lines for ``kubectl logs``: one event per line, ``key=value`` pairs.

``time=… level=info event="s3 download" files=3 total_bytes=…`` greps and
parses (logfmt) without a log pipeline, and reads fine by eye. Every line goes
through the adapters' secret redaction last, so a credential that slips into an
error message from a library is still printed as ``***``.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from typing import Any, TextIO

from tritonfleet.adapters.sources import redact

LOGGER = "tritonfleet"


def _value(value: Any) -> str:
    text = value if isinstance(value, str) else str(value)
    if text == "" or any(c in text for c in ' ="\\\n\t'):
        return json.dumps(text, ensure_ascii=False)
    return text


class LogfmtFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        parts = [
            f"time={stamp}.{int(record.msecs):03d}Z",
            f"level={record.levelname.lower()}",
            f"event={_value(record.getMessage())}",
        ]
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            parts.extend(f"{key}={_value(val)}" for key, val in fields.items() if val is not None)
        if record.exc_info and record.exc_info[1] is not None:
            parts.append(f"exception={_value(repr(record.exc_info[1]))}")
        return redact(" ".join(parts))


@dataclass(frozen=True)
class LogSetup:
    handler: logging.Handler
    previous_level: int


def configure(stream: TextIO, level: int = logging.INFO) -> LogSetup:
    """Send ``tritonfleet.*`` logs to ``stream`` until :func:`unconfigure`.

    Records still propagate (to nothing in the CLI; to pytest's capture when
    tests run the command in-process), and the logger's level is restored
    afterwards, so running a sync leaves other components' logging as it was.
    """
    handler = logging.StreamHandler(stream)
    handler.setFormatter(LogfmtFormatter())
    logger = logging.getLogger(LOGGER)
    setup = LogSetup(handler, logger.level)
    logger.addHandler(handler)
    logger.setLevel(level)
    return setup


def unconfigure(setup: LogSetup) -> None:
    logger = logging.getLogger(LOGGER)
    logger.removeHandler(setup.handler)
    logger.setLevel(setup.previous_level)
    setup.handler.flush()
