"""The request and response values passed between the HTTP server and the endpoint modules."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Request:
    method: str
    host: str  # lower-case, without the port
    path: str  # without the query
    query: Mapping[str, str]  # the first value of each parameter
    headers: Mapping[str, str]  # case-insensitive (an http.client.HTTPMessage)
    body: bytes

    def bearer_token(self) -> str | None:
        scheme, _, token = (self.headers.get("Authorization") or "").partition(" ")
        return token.strip() if scheme.lower() == "bearer" and token.strip() else None


@dataclass
class Response:
    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)
    # What the request log and counters record about the request (never a token or a value).
    facts: dict[str, Any] = field(default_factory=dict)


def json_response(status: int, payload: Any, headers: Mapping[str, str] | None = None, **facts: Any) -> Response:
    body = json.dumps(payload, separators=(",", ":")).encode()
    return Response(
        status=status,
        body=body,
        headers={"Content-Type": "application/json; charset=utf-8", **(headers or {})},
        facts=facts,
    )


def azure_error(
    status: int, code: str, message: str, headers: Mapping[str, str] | None = None, **facts: Any
) -> Response:
    """The `{"error": {"code", "message"}}` shape Key Vault and ARM both use."""
    return json_response(status, {"error": {"code": code, "message": message}}, headers, **facts)


def oauth_error(status: int, error: str, description: str, **facts: Any) -> Response:
    """The `{"error", "error_description"}` shape of the managed-identity endpoints."""
    return json_response(status, {"error": error, "error_description": description}, **facts)
