"""Azure Instance Metadata Service token endpoint, `GET /metadata/identity/oauth2/token`.

azure-identity and msal reach it at $AZURE_POD_IDENTITY_AUTHORITY_HOST. Every field of the
answer is a string, as IMDS sends them. The Azure ML endpoint (msi.py) shares `issue`.
"""

from __future__ import annotations

from azure_emulator.state import State
from azure_emulator.tokens import Claims
from azure_emulator.web import Request, Response, json_response, oauth_error

PATH = "/metadata/identity/oauth2/token"


def issue(state: State, client_id: str | None, resource: str | None) -> Response | tuple[str, Claims]:
    """A token for the named (or default) identity and resource, or the error response."""
    facts = {"client_id": client_id, "resource": resource}
    if not resource:
        return oauth_error(400, "invalid_request", "Required audience parameter not specified", **facts)
    if resource.rstrip("/").endswith("/.default"):
        # Clients convert a scope to a resource before asking; a scope here is a client bug.
        return oauth_error(
            400,
            "invalid_resource",
            f"AADSTS500011: The resource principal named {resource} was not found in the tenant. "
            "Send a resource (e.g. https://vault.azure.net), not a scope ending in /.default.",
            **facts,
        )
    identity = state.identity(client_id)
    if identity is None:
        return oauth_error(400, "invalid_request", "Identity not found", **facts)
    return state.mint(identity.client_id, resource)


def handle(state: State, request: Request) -> Response:
    query = request.query
    client_id = query.get("client_id")
    facts = {"client_id": client_id, "resource": query.get("resource")}
    if (request.headers.get("Metadata") or "").lower() != "true":
        return oauth_error(400, "invalid_request", "Required metadata header not specified", **facts)
    if not query.get("api-version"):
        return oauth_error(400, "invalid_request", "Required api-version parameter not specified", **facts)
    if query.get("object_id") or query.get("msi_res_id") or query.get("mi_res_id"):
        # The fixture names identities by client id only.
        return oauth_error(400, "invalid_request", "Identity not found", **facts)
    issued = issue(state, client_id, query.get("resource"))
    if isinstance(issued, Response):
        return issued
    token, claims = issued
    lifetime = claims.expires_on - claims.issued_at
    return json_response(
        200,
        {
            "access_token": token,
            "client_id": claims.client_id,
            "expires_in": str(lifetime),
            "expires_on": str(claims.expires_on),
            "ext_expires_in": str(lifetime),
            "not_before": str(claims.issued_at),
            "resource": claims.audience,
            "token_type": "Bearer",
        },
        client_id=claims.client_id,
        resource=claims.audience,
        audience=claims.audience,
    )
