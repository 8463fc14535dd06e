"""Azure ML workspace connections, through ARM List Secrets with requests.

One POST per connection, however many references use it; each reference then
picks its part (target, a credential, a metadata value, or the whole JSON).
A 200 answer is checked for the shape the picking relies on before it is kept.
"""

from __future__ import annotations

import json
from collections.abc import Hashable, Iterator
from urllib.parse import quote

import requests

from sidecar.clouds import cloud_for_arm_host
from sidecar.errors import MissingRoleError, NotFoundError, PermissionDeniedError, SidecarError, UnavailableError
from sidecar.identity import ManagedIdentity
from sidecar.logs import redactor
from sidecar.references import ConnectionReference
from sidecar.settings import Workspace
from sidecar.stores.base import (
    CONNECT_TIMEOUT_S,
    RETRYABLE_STATUSES,
    Fetched,
    Store,
    TransientError,
    json_object,
    retry_after_seconds,
)

API_VERSION = "2024-04-01"
SECRETS_READER_ROLE = "Azure Machine Learning Workspace Connection Secrets Reader"
# A List Secrets answer is a few levels deep; a deeper one is refused before anything walks it (here, json.dumps,
# JSON pointers), so that no walk can exhaust the stack.
MAX_JSON_DEPTH = 32


def _arm_error(response: requests.Response) -> tuple[str, str]:
    """(code, message) of an ARM or Azure ML error answer: `code[/innerError code]`, and the message, shortened."""
    try:
        body = response.json().get("error", {})
        inner = body.get("innerError") or {}
        inner_code = inner.get("code") if isinstance(inner, dict) else None
        code = str(body.get("code", "")) + (f"/{inner_code}" if inner_code else "")
    except (ValueError, AttributeError):
        return "", ""
    return code, " ".join(str(body.get("message", "")).split())[:300]


def _depth(value: object) -> int:
    """How deeply a parsed JSON value nests (a scalar is 0), found without recursion."""
    deepest = 0
    pending = [(value, 0)]
    while pending:
        item, depth = pending.pop()
        if isinstance(item, dict | list):
            children = item.values() if isinstance(item, dict) else item
            pending.extend((child, depth + 1) for child in children)
            deepest = max(deepest, depth + 1)
    return deepest


def _shape_problem(connection: dict) -> str:
    """What is wrong with the shape of a List Secrets answer's object, in the sidecar's words ('' if nothing)."""
    if _depth(connection) > MAX_JSON_DEPTH:
        return f"is JSON nested more than {MAX_JSON_DEPTH} levels deep"
    properties = connection.get("properties")
    if properties is None:
        return ""
    if not isinstance(properties, dict):
        return "has a 'properties' that is not a JSON object"
    for name in ("credentials", "metadata"):
        if properties.get(name) is not None and not isinstance(properties[name], dict):
            return f"has a 'properties.{name}' that is not a JSON object"
    return ""


def _leaves(value: object) -> Iterator[str]:
    if isinstance(value, dict):
        for item in value.values():
            yield from _leaves(item)
    elif isinstance(value, str):
        yield value


class ConnectionStore(Store):
    kind = "connection"

    def __init__(
        self,
        identity: ManagedIdentity,
        session: requests.Session,
        verify: str | bool,
        arm_endpoint: str,
        workspace: Workspace,
    ) -> None:
        self._identity = identity
        self._session = session
        self._verify = verify
        self._arm_endpoint = arm_endpoint
        self._scope = cloud_for_arm_host(arm_endpoint.removeprefix("https://")).arm_resource + ".default"
        self._workspace = workspace
        self._scope_path = (
            f"/subscriptions/{quote(workspace.subscription)}"
            f"/resourceGroups/{quote(workspace.resource_group)}"
            f"/providers/Microsoft.MachineLearningServices/workspaces/{quote(workspace.name)}"
        )
        self._workspace_url = arm_endpoint + self._scope_path

    def key(self, reference: ConnectionReference) -> str:  # type: ignore[override]
        return reference.connection

    def location(self, key: Hashable) -> str:
        return str(key)

    def audience(self, key: Hashable) -> str:
        return self._scope

    def describe(self, key: Hashable) -> str:
        return f"connection '{key}' in workspace '{self._workspace.name}'"

    def fetch(self, key: Hashable, timeout: float) -> Fetched:
        where = self.describe(key)
        token = self._identity.get_token(self._scope)
        try:
            response = self._session.post(
                f"{self._workspace_url}/connections/{quote(str(key))}/listsecrets",
                params={"api-version": API_VERSION},
                headers={"Authorization": f"Bearer {token.token}", "Accept": "application/json"},
                timeout=(min(CONNECT_TIMEOUT_S, timeout), timeout),
                verify=self._verify,
                allow_redirects=False,  # a token must never follow a redirect to another host
            )
        except requests.RequestException as exc:
            raise TransientError(UnavailableError(f"{where}: no answer from ARM ({type(exc).__name__}).")) from None
        if response.status_code == 200:
            connection, problem = json_object(response.json)
            if connection is not None:
                problem = _shape_problem(connection)
            if problem:
                raise UnavailableError(
                    f"{where}: ARM's List Secrets answer (HTTP 200) {problem}.",
                    fix="check that nothing between the sidecar and ARM (a proxy, a SIDECAR_CONNECT_TO rule) "
                    "answers in ARM's place.",
                )
            for value in _leaves((connection.get("properties") or {}).get("credentials")):
                redactor.add(value)
            return Fetched(connection)
        raise self._failure(response, where)

    def _failure(self, response: requests.Response, where: str) -> SidecarError | TransientError:
        code, message = _arm_error(response)
        said = f"HTTP {response.status_code} {code}" + (f": {message}" if message else "")
        identity = self._identity.description
        status = response.status_code
        if status == 404:
            return NotFoundError(
                f"{where}: not found ({said}).",
                fix="check the connection's name in the workspace; if the workspace itself is wrong, check "
                f"{self._settings_named()}.",
            )
        if status == 403:
            # ARM answers 403 AuthorizationFailed for any scope the identity has no role on, existing or
            # not: a mistyped workspace or resource group looks exactly like a missing role.
            return MissingRoleError(
                f"{where}: ARM refused {identity} the List Secrets action on workspace scope {self._scope_path} "
                f"(HTTP 403 {code or 'no error code'}). ARM answers so when the identity has no role on that "
                "workspace, and also when no workspace exists at that scope (a wrong subscription, resource group "
                "or workspace name).",
                fix=f"check that {self._settings_named()} name the workspace that holds the connection; if they do, "
                f"assign the role '{SECRETS_READER_ROLE}' on that workspace to {identity}.",
            )
        if status == 401:
            return PermissionDeniedError(
                f"{where}: ARM refused the token of {identity} ({said}).",
                fix="check that the identity belongs to the tenant of subscription "
                f"{self._workspace.subscription} and that SIDECAR_ARM_ENDPOINT is that cloud's.",
            )
        if status in RETRYABLE_STATUSES:
            return TransientError(
                UnavailableError(f"{where}: {said}."), retry_after_seconds(response.headers), status=status
            )
        return UnavailableError(f"{where}: unexpected answer {said}.", fix="see ARM's message above.")

    def _settings_named(self) -> str:
        workspace = self._workspace
        return (
            f"AZUREML_ARM_SUBSCRIPTION={workspace.subscription}, AZUREML_ARM_RESOURCEGROUP={workspace.resource_group} "
            f"and AZUREML_ARM_WORKSPACE_NAME={workspace.name}"
        )

    def extract(self, reference: ConnectionReference, fetched: Fetched) -> str:  # type: ignore[override]
        connection = fetched.value
        properties = connection.get("properties") or {}
        if reference.part == "connection":
            return json.dumps(connection, separators=(",", ":"))
        if reference.part == "target":
            value = properties.get("target")
            if value is None:
                raise NotFoundError(f"connection '{reference.connection}' has no target.")
            return str(value)
        if reference.part == "credentials":
            credentials = properties.get("credentials") or {}
            # A CustomKeys connection keeps its names under credentials.keys.
            fields = credentials.get("keys") if properties.get("authType") == "CustomKeys" else credentials
        else:
            fields = properties.get("metadata") or {}
        fields = fields if isinstance(fields, dict) else {}
        if reference.field not in fields:
            known = ", ".join(sorted(fields)) or "none"
            raise NotFoundError(
                f"connection '{reference.connection}' (authType {properties.get('authType', '?')}) has no "
                f"{reference.part} named '{reference.field}'; it has: {known}.",
                fix="use one of those names in the reference.",
            )
        value = fields[reference.field]
        return value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))
