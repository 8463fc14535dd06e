"""The Azure ML managed-identity endpoint: `GET $MSI_ENDPOINT?api-version=2017-09-01&resource=...`.

It authenticates the caller with the `secret` header ($MSI_SECRET), selects a user-assigned
identity with `clientid` (not `client_id`), and answers `expires_on` as an integer.
"""

from __future__ import annotations

import hmac

from azure_emulator.imds import issue
from azure_emulator.state import State
from azure_emulator.web import Request, Response, json_response, oauth_error

PATH = "/msi/token"
API_VERSION = "2017-09-01"


def handle(state: State, request: Request) -> Response:
    query = request.query
    client_id = query.get("clientid")
    facts = {"client_id": client_id, "resource": query.get("resource")}
    secret = request.headers.get("secret") or ""
    if not hmac.compare_digest(secret.encode(), state.fixture.msi_secret.encode()):
        return oauth_error(
            401, "unauthorized_client", "The 'secret' header is missing or does not match MSI_SECRET.", **facts
        )
    if query.get("api-version") != API_VERSION:
        return oauth_error(
            400,
            "invalid_request",
            f"api-version must be {API_VERSION}, got {query.get('api-version')!r}",
            **facts,
        )
    issued = issue(state, client_id, query.get("resource"))
    if isinstance(issued, Response):
        return issued
    token, claims = issued
    return json_response(
        200,
        {
            "access_token": token,
            "expires_on": claims.expires_on,
            "resource": claims.audience,
            "token_type": "Bearer",
            "client_id": claims.client_id,
        },
        client_id=claims.client_id,
        resource=claims.audience,
        audience=claims.audience,
    )
