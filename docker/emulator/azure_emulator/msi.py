"""The Azure ML managed-identity endpoint: `GET $MSI_ENDPOINT?api-version=2017-09-01&resource=...`.

It authenticates the caller with the `secret` header ($MSI_SECRET) and selects a user-assigned
identity with `clientid` (not `client_id`). The answer has exactly the fields of a live recording
(azure-sdk-assets, TestManagedIdentityCredential_AzureMLLive.json): `access_token`, integer
`expires_in` and `expires_on`, `resource`, `token_type`. A missing api-version is accepted
(Microsoft's online-endpoint sample sends none); what Azure answers to any other value than
2017-09-01 is unknown, and the emulator refuses it (README).
"""

from __future__ import annotations

import hmac
import time

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
    api_version = query.get("api-version")
    if api_version and api_version != API_VERSION:  # absent or empty: accepted
        return oauth_error(
            400,
            "invalid_request",
            f"The emulator knows only api-version {API_VERSION} (or none), got {api_version!r}",
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
            "expires_in": max(0, claims.expires_on - int(time.time())),
            "expires_on": claims.expires_on,
            "resource": claims.audience,
            "token_type": "Bearer",
        },
        client_id=claims.client_id,
        resource=claims.audience,
        audience=claims.audience,
    )
