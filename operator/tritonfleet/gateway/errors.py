"""OpenAI-style error answers: ``{"error": {"message", "type", "param", "code"}}``.

Every error the gateway returns has this shape and an
``x-tritonfleet-backend`` header (``none`` when no backend answered), so an
OpenAI SDK raises its usual typed exception (BadRequestError, NotFoundError,
RateLimitError, InternalServerError...) with a readable message.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from aiohttp import web

from tritonfleet.desired.gateway.routes import Endpoint

BACKEND_HEADER = "x-tritonfleet-backend"
POD_HEADER = "x-tritonfleet-pod"
REVISION_HEADER = "x-tritonfleet-revision"  # the revision of the pod that answered
ESTIMATED_HEADER = "x-tritonfleet-usage-estimated"
REASON_HEADER = "x-tritonfleet-failover-reason"


def pod_headers(endpoint: Endpoint) -> dict[str, str]:
    """The headers naming the Triton pod that answered, and its revision (during a
    rollout two answer side by side)."""
    out = {POD_HEADER: endpoint.name}
    if endpoint.revision:
        out[REVISION_HEADER] = endpoint.revision
    return out


_TYPES = {
    400: "invalid_request_error",
    401: "invalid_request_error",
    404: "invalid_request_error",
    405: "invalid_request_error",
    408: "invalid_request_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
    431: "invalid_request_error",
    500: "server_error",
    502: "server_error",
    503: "service_unavailable_error",
    504: "server_error",
}


def error_payload(
    message: str, type_: str, code: str | None = None, param: str | None = None
) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def error_body(status: int, message: str, code: str | None = None) -> bytes:
    """The JSON body of an error answer (for callers that build the response themselves)."""
    return json.dumps(error_payload(message, _TYPES.get(status, "server_error"), code)).encode()


def error_response(
    status: int,
    message: str,
    *,
    code: str | None = None,
    param: str | None = None,
    type_: str | None = None,
    headers: Mapping[str, str] | None = None,
    backend: str = "none",
) -> web.Response:
    payload = error_payload(message, type_ or _TYPES.get(status, "server_error"), code, param)
    out = {BACKEND_HEADER: backend}
    if headers:
        out.update(headers)
    return web.Response(
        status=status,
        body=json.dumps(payload).encode(),
        content_type="application/json",
        headers=out,
    )


def sse_error_event(message: str, code: str = "stream_interrupted") -> bytes:
    """The event that ends a stream broken after its first byte: the error
    (which the OpenAI SDKs raise as APIError) and then ``[DONE]``."""
    payload = json.dumps(error_payload(message, "server_error", code))
    return b"data: " + payload.encode() + b"\n\ndata: [DONE]\n\n"
