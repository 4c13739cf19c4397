"""Log lines of ``tritonfleet sync`` for ``kubectl logs``: one event per line.

The format is the installation's one choice (``adapters.logs``: logfmt text
``time=… level=info event="s3 download" files=3 …`` or one JSON object per line),
with the event's structured fields (the ``fields`` extra) as keys. Every line goes
through the sources' secret redaction last, so a credential that slips into an
error message from a library is still printed as ``***``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TextIO

from tritonfleet.adapters.logs import LogFormat, formatter
from tritonfleet.adapters.sources import redact

LOGGER = "tritonfleet"


@dataclass(frozen=True)
class LogSetup:
    handler: logging.Handler
    previous_level: int


def configure(
    stream: TextIO, level: int = logging.INFO, log_format: LogFormat = "text"
) -> LogSetup:
    """Send ``tritonfleet.*`` logs to ``stream`` until :func:`unconfigure`.

    Records still propagate (to nothing in the CLI; to pytest's capture when
    tests run the command in-process), and the logger's level is restored
    afterwards, so running a sync leaves other components' logging as it was.
    """
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter(log_format, redact))
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
