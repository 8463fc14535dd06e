"""Key Vault Get Secret, `GET https://<vault host>/secrets/<name>[/<version>]?api-version=...`.

Order of checks: throttle, challenge (no token), api-version, token, RBAC, secret, enabled.
RBAC is the fixture's roles plus run-time assignments and removals (`State.has_role`, roles.py).
`exp` and `nbf` are returned but not enforced: Key Vault itself still returns the value of an
expired or not-yet-valid secret (Azure/AzureKeyVault#19); only `enabled: false` blocks a read.
"""

from __future__ import annotations

import re
from typing import Any

from azure_emulator.model import ROLE_SECRETS_USER, Secret, SecretVersion, Vault
from azure_emulator.state import State
from azure_emulator.tokens import ExpiredToken, InvalidToken, WrongTenant
from azure_emulator.web import Request, Response, azure_error, json_response

SECRET_PATH = re.compile(r"^/secrets/(?P<name>[^/]+)(?:/(?P<version>[^/]*))?$")
NOT_FOUND_HELP = (
    "If you recently deleted this secret you may be able to recover it using the correct recovery "
    "command. For help resolving this issue, please see https://go.microsoft.com/fwlink/?linkid=2125182"
)


def challenge(state: State, vault: Vault) -> dict[str, str]:
    authority = vault.cloud.vault_authority(state.fixture.tenant_id)
    return {"WWW-Authenticate": f'Bearer authorization="{authority}", resource="{vault.cloud.vault_resource}"'}


def handle(state: State, request: Request) -> Response:
    vault = state.fixture.vaults_by_host.get(request.host)
    if vault is None:
        return azure_error(
            404,
            "VaultNotFound",
            f"The emulator's fixture has no vault with host {request.host}; "
            "a real client would fail to resolve this name.",
        )
    match = SECRET_PATH.match(request.path)
    if request.method != "GET" or match is None:
        return azure_error(
            400 if match is None else 405,
            "BadParameter",
            "The emulator serves only GET /secrets/{name} and GET /secrets/{name}/{version}.",
            vault=vault.name,
        )
    name, version = match["name"], (match["version"] or "").lower() or None
    facts: dict[str, Any] = {"vault": vault.name, "secret": name}

    admitted, rule = state.throttle.admit(vault.name)
    if not admitted:
        return azure_error(
            429,
            "Throttled",
            "Request was not processed because too many requests were received. Reason: VaultRequestTypeLimitReached",
            rule.retry_after_header(),
            throttled=True,
            **facts,
        )
    token = request.bearer_token()
    if token is None:
        return azure_error(
            401,
            "Unauthorized",
            "AKV10000: Request is missing a Bearer or PoP token.",
            challenge(state, vault),
            **facts,
        )
    if not request.query.get("api-version"):
        return azure_error(
            400, "BadParameter", "The request URI contains an invalid or missing api-version parameter.", **facts
        )

    try:
        claims = state.issuer.check(token, state.fixture.tenant_id)
    except InvalidToken as exc:
        return azure_error(401, "Unauthorized", _token_error(state, exc), challenge(state, vault), **facts)
    facts.update(client_id=claims.client_id, audience=claims.audience)
    expected = vault.cloud.vault_resource
    if claims.audience.rstrip("/") != expected:
        return azure_error(
            401,
            "Unauthorized",
            f"AKV10022: Invalid audience. Expected {expected}, found: {claims.audience}.",
            challenge(state, vault),
            **facts,
        )

    if not state.has_role(claims.client_id, ROLE_SECRETS_USER, vault.name):
        return _forbidden_by_rbac(state, vault, name, claims.client_id, facts)

    secret = vault.secrets.get(name) or _case_insensitive(vault, name)
    found = None if secret is None else (secret.latest if version is None else secret.versions.get(version))
    if secret is None or found is None:
        what = name if version is None else f"{name}/{version}"
        return azure_error(
            404,
            "SecretNotFound",
            f"A secret with (name/id) {what} was not found in this key vault. {NOT_FOUND_HELP}",
            **facts,
        )
    if not found.enabled:
        return json_response(
            403,
            {
                "error": {
                    "code": "Forbidden",
                    "message": "Operation get is not allowed on a disabled secret.",
                    "innererror": {"code": "SecretDisabled"},
                }
            },
            **facts,
        )
    return json_response(200, _bundle(vault, secret.name, found), **facts)


def _token_error(state: State, exc: InvalidToken) -> str:
    if isinstance(exc, ExpiredToken):
        return "[TokenExpired] Error validating token: 'S2S12086'."
    if isinstance(exc, WrongTenant):
        tenant = state.fixture.tenant_id
        return (
            f"AKV10032: Invalid issuer. Expected one of https://sts.windows.net/{tenant}/, "
            f"https://login.microsoftonline.com/{tenant}/v2.0, found: https://sts.windows.net/{exc}/."
        )
    return "AKV10000: Request is missing a Bearer or PoP token. (The token is malformed or its signature is invalid.)"


def _forbidden_by_rbac(state: State, vault: Vault, secret: str, client_id: str, facts: dict[str, Any]) -> Response:
    message = (
        "Caller is not authorized to perform action on resource.\r\n"
        "If role assignments, deny assignments or role definitions were changed recently, "
        "please observe propagation time.\r\n"
        f"Caller: appid={client_id};iss=https://sts.windows.net/{state.fixture.tenant_id}/\r\n"
        "Action: 'Microsoft.KeyVault/vaults/secrets/getSecret/action'\r\n"
        f"Resource: '/providers/microsoft.keyvault/vaults/{vault.name.lower()}/secrets/{secret.lower()}'\r\n"
        f"Assignment: (not found)\r\n"
        "DenyAssignmentId: null\r\n"
        "DecisionReason: null \r\n"
        f"Vault: {vault.name};location=emulator\r\n"
    )
    return json_response(
        403,
        {"error": {"code": "Forbidden", "message": message, "innererror": {"code": "ForbiddenByRbac"}}},
        **facts,
    )


def _case_insensitive(vault: Vault, name: str) -> Secret | None:
    # Key Vault object names are case-insensitive; the exact-case lookup above is the fast path.
    lowered = name.lower()
    return next((secret for key, secret in vault.secrets.items() if key.lower() == lowered), None)


def _bundle(vault: Vault, name: str, version: SecretVersion) -> dict[str, Any]:
    attributes: dict[str, Any] = {"enabled": version.enabled}
    if version.nbf is not None:
        attributes["nbf"] = version.nbf
    if version.exp is not None:
        attributes["exp"] = version.exp
    attributes.update(
        created=version.created, updated=version.updated, recoveryLevel="Recoverable+Purgeable", recoverableDays=90
    )
    bundle: dict[str, Any] = {
        "value": version.value,
        "id": f"https://{vault.host}/secrets/{name}/{version.version}",
        "attributes": attributes,
    }
    if version.content_type is not None:
        bundle["contentType"] = version.content_type
    if version.tags is not None:
        bundle["tags"] = version.tags
    return bundle
