"""The bytes of the request path: JSON bodies and SSE frames.

Every body the proxy sends - to Triton, to the hosted provider, to the client -
is encoded here, by one encoder built once (``json.dumps`` with non-default
arguments builds a new encoder on every call, which the hot path cannot afford).
"""

from __future__ import annotations

import json
from typing import Any

_encode = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode

SSE_HEADERS = {
    "Content-Type": "text/event-stream; charset=utf-8",
    "Cache-Control": "no-cache",
    "X-Accel-Buffering": "no",  # no proxy buffering in front of us
}

SSE_DONE = b"data: [DONE]\n\n"


def json_bytes(obj: Any) -> bytes:
    return _encode(obj).encode()


def sse_frame(obj: Any) -> bytes:
    """One ``data:`` event of an OpenAI stream."""
    return b"data: " + _encode(obj).encode() + b"\n\n"
