"""Microsoft Entra ID's token endpoint, for workload identity: the client-credentials grant with a
federated client assertion (a Kubernetes service-account token), plus the discovery documents msal reads.

Served over TLS under the authority hosts of the three clouds (`login.microsoftonline.com`,
`login.chinacloudapi.cn`, `login.microsoftonline.us`). Entra checks an assertion against the
identity's federated identity credentials (issuer, subject, audience, all exact) after verifying its
signature with the issuer's keys; here the emulator is also the issuer: `AssertionIssuer` mints the
service-account tokens (admin API), and only those verify. Error bodies have the shape and, where a
public capture exists, the wording of Entra's (README, "Microsoft Entra token endpoint").
"""

from __future__ import annotations

import datetime as dt
import re
import time
import uuid
from typing import Any
from urllib.parse import parse_qs, urlsplit

from azure_emulator.model import Identity
from azure_emulator.state import State
from azure_emulator.web import Request, Response, json_response

JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
TOKEN_PATH = re.compile(r"/(?P<tenant>[^/]+)/oauth2/v2\.0/token")
OPENID_PATH = re.compile(r"/(?P<tenant>[^/]+)/v2\.0/\.well-known/openid-configuration")
INSTANCE_DISCOVERY_PATH = "/common/discovery/instance"
FEDERATION_DOCS = "https://learn.microsoft.com/entra/workload-id/workload-identity-federation"
NO_MATCH = (
    "Please check your federated identity credential Subject, Audience and Issuer against the presented assertion."
)


def _when(epoch: float) -> str:
    return dt.datetime.fromtimestamp(epoch, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.0000000Z")


def entra_error(status: int, error: str, code: int, text: str, host: str, **facts: Any) -> Response:
    """Entra's error body: OAuth `error`, `error_description` ("AADSTS<code>: ... Trace ID ... Timestamp ..."),
    `error_codes`, `timestamp`, `trace_id`, `correlation_id`, `error_uri`."""
    trace, correlation = str(uuid.uuid4()), str(uuid.uuid4())
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ")
    return json_response(
        status,
        {
            "error": error,
            "error_description": f"AADSTS{code}: {text} Trace ID: {trace} Correlation ID: {correlation} "
            f"Timestamp: {stamp}",
            "error_codes": [code],
            "timestamp": stamp,
            "trace_id": trace,
            "correlation_id": correlation,
            "error_uri": f"https://{host}/error?code={code}",
        },
        **facts,
    )


def handle(state: State, request: Request) -> Response:
    if match := TOKEN_PATH.fullmatch(request.path):
        return _token(state, request, match["tenant"])
    if match := OPENID_PATH.fullmatch(request.path):
        return _openid_configuration(state, request, match["tenant"])
    if request.path == INSTANCE_DISCOVERY_PATH:
        return _instance_discovery(request)
    return json_response(
        404, {"error": "not_found", "error_description": f"The emulator's Entra serves no {request.path}."}
    )


def _tenant_error(state: State, request: Request, tenant: str, **facts: Any) -> Response | None:
    if tenant.lower() == state.fixture.tenant_id:
        return None
    return entra_error(
        400,
        "invalid_request",
        90002,
        f"Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID and are signing into "
        "the correct cloud.",
        request.host,
        **facts,
    )


def _token(state: State, request: Request, tenant: str) -> Response:
    form = {key: values[0] for key, values in parse_qs(request.body.decode("utf-8", "replace")).items()}
    client_id = (form.get("client_id") or "").lower() or None
    scope = form.get("scope") or ""
    resource = scope.removesuffix("/.default") or None
    facts: dict[str, Any] = {"client_id": client_id, "resource": resource}
    host = request.host

    def error(status: int, oauth: str, code: int, text: str) -> Response:
        return entra_error(status, oauth, code, text, host, **facts)

    if request.method != "POST":
        return error(400, "invalid_request", 900561, "The endpoint only accepts POST requests.")
    refused = _tenant_error(state, request, tenant, **facts)
    if refused is not None:
        return refused
    if form.get("grant_type") != "client_credentials":
        return error(400, "unsupported_grant_type", 70003, "The app requested an unsupported grant type.")
    for name in ("client_id", "scope"):
        if not form.get(name):
            return error(
                400, "invalid_request", 900144, f"The request body must contain the following parameter: '{name}'."
            )
    if not scope.endswith("/.default") or " " in scope:
        return error(
            400,
            "invalid_scope",
            1002012,
            f"The provided value for scope {scope} is not valid. Client credential flows must have a scope value "
            "with /.default suffixed to the resource identifier (application ID URI).",
        )
    assertion = form.get("client_assertion")
    if form.get("client_assertion_type") != JWT_BEARER or not assertion:
        return error(
            401,
            "invalid_client",
            7000218,
            "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.",
        )
    assert client_id is not None
    identity = state.fixture.identities.get(client_id)
    if identity is None:
        return error(
            400,
            "unauthorized_client",
            700016,
            f"Application with identifier '{client_id}' was not found in the directory '{tenant}'. This can happen "
            "if the application has not been installed by the administrator of the tenant or consented to by any "
            "user in the tenant. You may have sent your authentication request to the wrong tenant.",
        )
    claims = state.assertions.verify(assertion)
    if claims is None:
        return error(401, "invalid_client", 50027, "JWT token is invalid or malformed.")
    facts["assertion_expires_on"] = claims.get("exp")  # not a secret: lets a test see which assertion was sent
    refused = _assertion_error(identity, claims, tenant)
    if refused is not None:
        return error(401, "invalid_client", *refused)
    token, issued = state.mint(identity.client_id, resource or "")
    lifetime = issued.expires_on - issued.issued_at
    return json_response(
        200,
        {"token_type": "Bearer", "expires_in": lifetime, "ext_expires_in": lifetime, "access_token": token},
        client_id=identity.client_id,
        resource=resource,
        audience=resource,
        assertion_expires_on=claims.get("exp"),
    )


def _assertion_error(identity: Identity, claims: dict[str, Any], tenant: str) -> tuple[int, str] | None:
    """(AADSTS code, text) for an assertion Entra would not accept for this identity; None if it would."""
    now = time.time()
    expires, not_before = claims.get("exp"), claims.get("nbf", claims.get("iat"))
    if not isinstance(expires, int) or not isinstance(not_before, int) or not not_before <= now < expires:
        return (
            700024,
            f"Client assertion is not within its valid time range. Current time: {_when(now)}, assertion valid "
            f"from {_when(not_before if isinstance(not_before, int) else 0)}, expiry time of assertion "
            f"{_when(expires if isinstance(expires, int) else 0)}. Review the documentation at "
            "https://docs.microsoft.com/azure/active-directory/develop/active-directory-certificate-credentials .",
        )
    if not identity.federated_credentials:
        return 70021, f"No matching federated identity record found for presented assertion. {FEDERATION_DOCS}"
    issuer, subject = claims.get("iss"), claims.get("sub")
    audiences = claims.get("aud")
    audiences = [audiences] if isinstance(audiences, str) else audiences if isinstance(audiences, list) else []
    candidates = [item for item in identity.federated_credentials if item.issuer == issuer]
    if not candidates:
        return (
            700211,
            f"No matching federated identity record found for presented assertion issuer '{issuer}'. {NO_MATCH} "
            f"{FEDERATION_DOCS}",
        )
    candidates = [item for item in candidates if item.subject == subject]
    if not candidates:
        return (
            700213,
            f"No matching federated identity record found for presented assertion subject '{subject}'. "
            f"{NO_MATCH} {FEDERATION_DOCS}",
        )
    if not any(audience in item.audiences for item in candidates for audience in audiences):
        return (
            700212,
            f"No matching federated identity record found for presented assertion audience "
            f"'{', '.join(map(str, audiences))}'. {NO_MATCH} {FEDERATION_DOCS}",
        )
    return None


def _openid_configuration(state: State, request: Request, tenant: str) -> Response:
    """The tenant's OpenID Connect discovery document, as msal reads it (fields of a captured one)."""
    refused = _tenant_error(state, request, tenant)
    if refused is not None:
        return refused
    base = f"https://{request.host}/{state.fixture.tenant_id}"
    return json_response(
        200,
        {
            "token_endpoint": f"{base}/oauth2/v2.0/token",
            "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt", "client_secret_basic"],
            "jwks_uri": f"{base}/discovery/v2.0/keys",
            "response_modes_supported": ["query", "fragment", "form_post"],
            "subject_types_supported": ["pairwise"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
            "scopes_supported": ["openid", "profile", "email", "offline_access"],
            "issuer": f"{base}/v2.0",
            "request_uri_parameter_supported": False,
            "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
            "device_authorization_endpoint": f"{base}/oauth2/v2.0/devicecode",
            "end_session_endpoint": f"{base}/oauth2/v2.0/logout",
            "tenant_region_scope": None,
        },
    )


def _instance_discovery(request: Request) -> Response:
    """msal's instance discovery (for an authority it does not know): valid, its only alias is itself."""
    host = request.host
    # authorization_endpoint=https://<host>/<tenant>/oauth2/v2.0/authorize: the tenant is its first segment.
    tenant = urlsplit(request.query.get("authorization_endpoint", "")).path.strip("/").split("/")[0] or "common"
    return json_response(
        200,
        {
            "tenant_discovery_endpoint": f"https://{host}/{tenant}/v2.0/.well-known/openid-configuration",
            "api-version": "1.1",
            "metadata": [{"preferred_network": host, "preferred_cache": host, "aliases": [host]}],
        },
    )
