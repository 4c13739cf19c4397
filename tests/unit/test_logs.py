"""One log format for every component: what a log pipeline (json) or a person with grep
(text) gets from the operator, the gateway and the sync Jobs alike."""

from __future__ import annotations

import json
import logging
import sys

from tritonfleet.adapters.logs import formatter


def record(message: str, *args: object, **extra: object) -> logging.LogRecord:
    rec = logging.LogRecord("tritonfleet.sync", logging.WARNING, __file__, 1, message, args, None)
    rec.__dict__.update(extra)
    return rec


def test_json_lines_carry_the_object_the_fields_and_redaction() -> None:
    rec = record(
        "synced %s with key %s",
        "toy",
        "sk-secret",
        k8s_ref={"kind": "TritonModel", "namespace": "ml", "name": "toy", "uid": "u"},
        fields={"files": 3, "skipped": None},
    )
    line = json.loads(formatter("json", lambda t: t.replace("sk-secret", "***")).format(rec))
    assert line["severity"] == "warn"
    assert line["logger"] == "tritonfleet.sync"
    assert line["message"] == "synced toy with key ***"
    assert line["object"] == {"kind": "TritonModel", "namespace": "ml", "name": "toy"}
    assert line["files"] == 3 and "skipped" not in line
    assert line["timestamp"].endswith("Z")


def test_text_lines_are_logfmt() -> None:
    rec = record("published", obj={"namespace": "ml", "name": "toy"}, fields={"mbps": 12.5})
    line = formatter("text").format(rec)
    assert line.split(" ", 1)[1] == (
        "level=warning logger=tritonfleet.sync object=ml/toy event=published mbps=12.5"
    )
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        rec.exc_info = sys.exc_info()
    assert 'exception="Traceback' in formatter("text").format(rec)
