"""One log format for every tritonfleet process: the operator, the gateway and the
sync and cleanup Jobs write the same lines, so one log pipeline parses them all.

Two formats, chosen once per installation (chart value ``logFormat``, the
``--log-format`` flag of each command):

* ``json`` - one object per line: ``timestamp`` (RFC 3339, UTC), ``severity``
  (``debug``, ``info``, ``warn``, ``error``, ``fatal``: kopf's words), ``logger``,
  ``message``, ``object`` (``{"namespace", "name"}`` of the Kubernetes object a line
  is about, when there is one), the line's structured fields, and ``exception``;
* ``text`` - logfmt (``time=… level=info logger=… event="…" key=value``; the level as
  Python names it: debug, info, warning, error, critical),
  which greps without a pipeline and reads fine by eye.

A ``redact`` function (the gateway's known API keys, the sync's credentials) is
applied to every finished line, tracebacks included: a second line of defence behind
never logging secrets in the first place.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Callable, Mapping
from typing import Any, Literal, TextIO

LogFormat = Literal["json", "text"]
LOG_FORMATS: tuple[LogFormat, ...] = ("json", "text")

Redact = Callable[[str], str]


def _same(text: str) -> str:
    return text


def severity(levelno: int) -> str:
    if levelno <= logging.DEBUG:
        return "debug"
    if levelno <= logging.INFO:
        return "info"
    if levelno <= logging.WARNING:
        return "warn"
    if levelno <= logging.ERROR:
        return "error"
    return "fatal"


def _timestamp(record: logging.LogRecord) -> str:
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
    return f"{stamp}.{int(record.msecs):03d}Z"


def _object(record: logging.LogRecord) -> dict[str, str] | None:
    """The Kubernetes object of a line: kopf's ``k8s_ref``, or ours (``obj`` extra)."""
    ref = getattr(record, "k8s_ref", None) or getattr(record, "obj", None)
    if not isinstance(ref, Mapping):
        return None
    return {k: str(ref[k]) for k in ("kind", "namespace", "name") if ref.get(k)}


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    fields = getattr(record, "fields", None)
    return {k: v for k, v in fields.items() if v is not None} if isinstance(fields, dict) else {}


class JsonFormatter(logging.Formatter):
    def __init__(self, redact: Redact | None = None) -> None:
        super().__init__()
        self.redact = redact or _same

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "timestamp": _timestamp(record),
            "severity": severity(record.levelno),
            "logger": record.name,
            "message": record.getMessage(),
        }
        obj = _object(record)
        if obj:
            line["object"] = obj
        for key, value in _fields(record).items():
            line.setdefault(key, value)
        if record.exc_info and record.exc_info[1] is not None:
            line["exception"] = self.formatException(record.exc_info)
        return self.redact(json.dumps(line, ensure_ascii=False, default=str))


def _logfmt_value(value: Any) -> str:
    text = value if isinstance(value, str) else str(value)
    if text == "" or any(c in text for c in ' ="\\\n\t'):
        return json.dumps(text, ensure_ascii=False)
    return text


class TextFormatter(logging.Formatter):
    """logfmt: ``time=… level=… logger=… event="…" key=value …``."""

    def __init__(self, redact: Redact | None = None) -> None:
        super().__init__()
        self.redact = redact or _same

    def format(self, record: logging.LogRecord) -> str:
        parts = [
            f"time={_timestamp(record)}",
            f"level={record.levelname.lower()}",
            f"logger={record.name}",
        ]
        obj = _object(record)
        if obj:
            where = "/".join(v for k, v in obj.items() if k != "kind")
            parts.append(f"object={_logfmt_value(where)}")
        parts.append(f"event={_logfmt_value(record.getMessage())}")
        parts.extend(f"{key}={_logfmt_value(val)}" for key, val in _fields(record).items())
        if record.exc_info and record.exc_info[1] is not None:
            parts.append(f"exception={_logfmt_value(self.formatException(record.exc_info))}")
        return self.redact(" ".join(parts))


def formatter(log_format: LogFormat, redact: Redact | None = None) -> logging.Formatter:
    return JsonFormatter(redact) if log_format == "json" else TextFormatter(redact)


def setup_process_logging(
    log_format: LogFormat,
    level: int | str = logging.INFO,
    *,
    redact: Redact | None = None,
    stream: TextIO | None = None,
) -> logging.Handler:
    """Send every log record of the process to ``stream`` (stderr) in ``log_format``."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(formatter(log_format, redact))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper() if isinstance(level, str) else level)
    return handler
