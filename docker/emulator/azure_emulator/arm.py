"""ARM: Azure ML workspace connection List Secrets.

`POST https://<arm host>/subscriptions/{sub}/resourceGroups/{rg}/providers/
Microsoft.MachineLearningServices/workspaces/{ws}/connections/{conn}/listsecrets?api-version=...`

Order of checks: token, api-version, RBAC on the workspace, connection. ARM answers a scope the
caller holds no role on with 403 AuthorizationFailed whether the scope exists or not, so an
unknown subscription, resource group or workspace gets the same 403 as a missing role. A missing
connection in a workspace the caller may read is answered by the Azure ML service itself (past
ARM), in its own error shape (UserError / innerError NotFoundError).
"""

from __future__ import annotations

import re
from typing import Any

from azure_emulator.clouds import CLOUDS, Cloud
from azure_emulator.model import ROLE_CONNECTION_READER, Connection, Workspace
from azure_emulator.state import State
from azure_emulator.tokens import ExpiredToken, InvalidToken, WrongTenant
from azure_emulator.web import Request, Response, azure_error, json_response

LIST_SECRETS_PATH = re.compile(
    r"^/subscriptions/(?P<sub>[^/]+)/resourceGroups/(?P<rg>[^/]+)/providers/"
    r"Microsoft\.MachineLearningServices/workspaces/(?P<ws>[^/]+)/connections/(?P<conn>[^/]+)/listsecrets$",
    re.IGNORECASE,  # ARM paths are case-insensitive
)
ACTION = "Microsoft.MachineLearningServices/workspaces/connections/listsecrets/action"
CLOUD_BY_ARM_HOST = {cloud.arm_host: cloud for cloud in CLOUDS.values()}


def handle(state: State, request: Request) -> Response:
    cloud = CLOUD_BY_ARM_HOST[request.host]
    match = LIST_SECRETS_PATH.match(request.path)
    if match is None or request.method != "POST":
        return azure_error(
            404 if match is None else 405,
            "NotFound",
            "The emulator serves only POST .../workspaces/{ws}/connections/{conn}/listsecrets on ARM.",
        )
    facts: dict[str, Any] = {"workspace": match["ws"], "connection": match["conn"]}
    token = request.bearer_token()
    if token is None:
        return azure_error(
            401,
            "AuthenticationFailed",
            "Authentication failed. The 'Authorization' header is missing.",
            _challenge(cloud, "The authentication failed because of missing 'Authorization' header."),
            **facts,
        )
    try:
        claims = state.issuer.check(token, state.fixture.tenant_id)
    except InvalidToken as exc:
        code, message = _token_error(state, exc)
        return azure_error(401, code, message, _challenge(cloud, message), **facts)
    facts.update(client_id=claims.client_id, audience=claims.audience)
    if claims.audience.rstrip("/") not in cloud.arm_resources:
        allowed = ",".join(f"'{aud}/','{aud}'" for aud in cloud.arm_resources)
        message = (
            f"The access token has been obtained for wrong audience or resource '{claims.audience}'. "
            f"It should exactly match with one of the allowed audiences {allowed}."
        )
        return azure_error(401, "InvalidAuthenticationTokenAudience", message, _challenge(cloud, message), **facts)
    if not request.query.get("api-version"):
        return azure_error(
            400,
            "MissingApiVersionParameter",
            "The api-version query parameter (?api-version=) is required for all requests.",
            **facts,
        )

    workspace = _workspace(state, cloud, match["sub"], match["rg"], match["ws"])
    if workspace is not None:
        facts["workspace"] = workspace.name
    if workspace is None or not state.has_role(claims.client_id, ROLE_CONNECTION_READER, workspace.name):
        # The scope exactly as the request named it (ARM's message echoes it).
        scope = (
            f"/subscriptions/{match['sub']}/resourceGroups/{match['rg']}/providers/"
            f"Microsoft.MachineLearningServices/workspaces/{match['ws']}/connections/{match['conn']}"
        )
        return azure_error(
            403,
            "AuthorizationFailed",
            f"The client '{claims.client_id}' with object id '{claims.client_id}' does not have authorization "
            f"to perform action '{ACTION}' over scope '{scope}' or the scope is invalid. "
            "If access was recently granted, please refresh your credentials.",
            **facts,
        )
    connection = _case_insensitive(workspace.connections, match["conn"])
    if connection is None:
        # The Azure ML service's error shape (seen for a datastore); the message wording is the emulator's.
        body = {
            "error": {
                "code": "UserError",
                "message": f"Connection {match['conn']} not found in workspace {workspace.name}.",
                "innerError": {"code": "NotFoundError"},
            }
        }
        return json_response(404, body, **facts)
    facts["connection"] = connection.name
    return json_response(200, _resource(workspace, connection), **facts)


def _workspace(state: State, cloud: Cloud, sub: str, rg: str, name: str) -> Workspace | None:
    """The fixture's workspace at this subscription, resource group and name (ignoring case), if any."""
    for workspace in state.fixture.workspaces.values():
        if (
            workspace.cloud is cloud
            and workspace.subscription == sub.lower()
            and workspace.resource_group.lower() == rg.lower()
            and workspace.name.lower() == name.lower()
        ):
            return workspace
    return None


def _token_error(state: State, exc: InvalidToken) -> tuple[str, str]:
    if isinstance(exc, ExpiredToken):
        return "ExpiredAuthenticationToken", "The access token expiry UTC time is earlier than current UTC time."
    if isinstance(exc, WrongTenant):
        return (
            "InvalidAuthenticationTokenTenant",
            f"The access token is from the wrong issuer 'https://sts.windows.net/{exc}/'. It must match the "
            f"tenant 'https://sts.windows.net/{state.fixture.tenant_id}/' associated with this subscription.",
        )
    return "InvalidAuthenticationToken", "The access token is invalid."


def _challenge(cloud: Cloud, description: str) -> dict[str, str]:
    return {
        "WWW-Authenticate": f'Bearer authorization_uri="https://{cloud.login_host}/", error="invalid_token", '
        f'error_description="{description}"'
    }


def _case_insensitive(items: dict[str, Any], name: str) -> Any:
    if name in items:
        return items[name]
    lowered = name.lower()
    return next((item for key, item in items.items() if key.lower() == lowered), None)


def _resource(workspace: Workspace, connection: Connection) -> dict[str, Any]:
    system_data = {
        "createdAt": connection.created,
        "createdBy": "emulator@example.invalid",
        "createdByType": "User",
        "lastModifiedAt": connection.created,
        "lastModifiedBy": "emulator@example.invalid",
        "lastModifiedByType": "User",
    }
    return {
        "id": f"{workspace.arm_id}/connections/{connection.name}",
        "name": connection.name,
        "type": "Microsoft.MachineLearningServices/workspaces/connections",
        "properties": connection.properties,
        "systemData": system_data,
    }
