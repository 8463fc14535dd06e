"""The admin API (plain-HTTP listener, `/admin/...`) and `AdminClient`, its Python client.

Tests and benchmarks use it to reset state, inject faults, tune the throttle, add fixture
data at run time (and, for rotation tests, add secret versions, delete secrets and update
connections), assign and remove roles (with a deterministic stand-in for propagation), mint
tokens, and read counters and the request log.
"""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from azure_emulator.faults import Fault, parse_fault, parse_throttle_rule
from azure_emulator.fixture import DEFAULT_FEDERATED_AUDIENCE, FixtureError
from azure_emulator.state import State
from azure_emulator.web import Request, Response, json_response

PREFIX = "/admin/"
# Routes with names in them (the path after PREFIX, without a trailing slash).
VERSIONS_ROUTE = re.compile(r"vaults/(?P<vault>[^/]+)/secrets/(?P<secret>[^/]+)/versions")
SECRET_ROUTE = re.compile(r"vaults/(?P<vault>[^/]+)/secrets/(?P<secret>[^/]+)")
CONNECTION_ROUTE = re.compile(r"workspaces/(?P<workspace>[^/]+)/connections/(?P<connection>[^/]+)")


def handle(state: State, request: Request) -> Response:
    route = (request.method, request.path[len(PREFIX) :].rstrip("/"))
    try:
        payload = json.loads(request.body) if request.body else None
        return _route(state, request, route, payload)
    except (ValueError, TypeError, KeyError) as exc:  # FixtureError and json errors are ValueErrors
        return json_response(400, {"error": str(exc)})


def _route(state: State, request: Request, route: tuple[str, str], payload: Any) -> Response:
    query = request.query
    if route == ("GET", "health"):
        return json_response(200, {"status": "ok"})
    if route == ("GET", "ca.pem"):
        return Response(200, state.ca_bundle.read_bytes(), {"Content-Type": "application/x-pem-file"})
    if route == ("POST", "reset"):
        state.reset()
        return json_response(200, {"status": "reset"})
    if route == ("GET", "requests"):
        entries = state.stats.requests(query.get("kind"), query.get("host"), query.get("path_contains"))
        return json_response(200, entries)
    if route == ("GET", "counters"):
        return json_response(200, state.stats.counters())
    if route == ("GET", "faults"):
        return json_response(200, state.faults.describe())
    if route == ("PUT", "faults"):
        if not isinstance(payload, list):
            raise ValueError("PUT /admin/faults takes a JSON list of faults")
        state.faults.replace([_fault(spec, index) for index, spec in enumerate(payload)])
        return json_response(200, state.faults.describe())
    if route == ("POST", "faults"):
        state.faults.add(_fault(payload, 0))
        return json_response(200, state.faults.describe())
    if route == ("DELETE", "faults"):
        state.faults.replace([])
        return json_response(200, [])
    if route == ("GET", "throttle"):
        return json_response(200, state.throttle.describe())
    if route == ("PUT", "throttle"):
        spec = dict(payload or {})
        vault = spec.pop("vault", None)
        if vault is not None and vault not in state.fixture.vaults:
            raise ValueError(f"no vault named {vault!r} in the fixture")
        state.throttle.set_rule(vault, parse_throttle_rule(spec))
        return json_response(200, state.throttle.describe())
    if route == ("POST", "load"):
        if not isinstance(payload, dict):
            raise FixtureError("POST /admin/load takes a JSON object in fixture format")
        state.load(payload)
        return json_response(200, {"status": "loaded"})
    if route == ("GET", "roles"):
        return json_response(200, state.describe_roles())
    if route == ("POST", "roles"):
        spec = _role_spec(payload, {"identity", "role", "scope", "after_denials"})
        assigned = state.assign_role(spec["identity"], spec["role"], spec["scope"], spec.get("after_denials", 0))
        return json_response(200, assigned)
    if route == ("DELETE", "roles"):
        spec = _role_spec(payload, {"identity", "role", "scope"})
        state.remove_role(spec["identity"], spec["role"], spec["scope"])
        return json_response(200, {"status": "removed"})
    if route == ("POST", "assertions"):
        return json_response(200, _mint_assertion(state, payload))
    if route == ("POST", "tokens"):
        token, claims = state.mint(payload["client_id"].lower(), payload["audience"], int(payload["expires_in"]))
        return json_response(200, {"access_token": token, "expires_on": claims.expires_on})
    return _named_route(state, route, payload) or json_response(
        404, {"error": f"no admin route {route[0]} {request.path}"}
    )


def _named_route(state: State, route: tuple[str, str], payload: Any) -> Response | None:
    """The routes that name a secret or a connection in their path; None for any other route."""
    method, path = route
    if method == "POST" and (match := VERSIONS_ROUTE.fullmatch(path)):
        if not isinstance(payload, dict):
            raise FixtureError("POST .../versions takes a JSON object with at least 'value'")
        version = state.add_version(_name(match["vault"]), _name(match["secret"]), payload)
        return json_response(200, {"id": version})
    if method == "DELETE" and (match := SECRET_ROUTE.fullmatch(path)):
        state.delete_secret(_name(match["vault"]), _name(match["secret"]))
        return json_response(200, {"status": "deleted"})
    if method == "PATCH" and (match := CONNECTION_ROUTE.fullmatch(path)):
        if not isinstance(payload, dict):
            raise FixtureError("PATCH .../connections/{connection} takes a JSON object of connection fields")
        state.update_connection(_name(match["workspace"]), _name(match["connection"]), payload)
        return json_response(200, {"status": "updated"})
    return None


def _mint_assertion(state: State, payload: Any) -> dict[str, Any]:
    """A service-account token as the cluster's OIDC issuer would sign it (the assertion of workload identity)."""
    if not isinstance(payload, dict) or not {"issuer", "subject", "expires_in"} <= set(payload):
        raise FixtureError("POST /admin/assertions takes {issuer, subject, expires_in, audience?, not_before?}")
    unknown = set(payload) - {"issuer", "subject", "expires_in", "audience", "not_before"}
    if unknown:
        raise FixtureError(f"/admin/assertions: unknown keys {sorted(unknown)}")
    assertion = state.assertions.mint(
        issuer=str(payload["issuer"]),
        subject=str(payload["subject"]),
        audience=str(payload.get("audience") or DEFAULT_FEDERATED_AUDIENCE),
        expires_in=int(payload["expires_in"]),
        not_before=None if payload.get("not_before") is None else int(payload["not_before"]),
    )
    return {"assertion": assertion, "expires_on": state.assertions.verify(assertion)["exp"]}


def _role_spec(payload: Any, allowed: set[str]) -> dict[str, Any]:
    """A role request's JSON object: identity, role and scope required, nothing unknown."""
    if not isinstance(payload, dict):
        raise FixtureError(f"/admin/roles takes a JSON object with {sorted(allowed)}")
    unknown = set(payload) - allowed
    if unknown:
        raise FixtureError(f"/admin/roles: unknown keys {sorted(unknown)}; allowed: {sorted(allowed)}")
    missing = {"identity", "role", "scope"} - set(payload)
    if missing:
        raise FixtureError(f"/admin/roles: missing {sorted(missing)}")
    return payload


def _name(segment: str) -> str:
    return urllib.parse.unquote(segment)


def _fault(spec: Any, index: int) -> Fault:
    try:
        return parse_fault(spec)
    except ValueError as exc:
        raise ValueError(f"fault [{index}]: {exc}") from None


class AdminError(RuntimeError):
    """The admin API answered with an error."""


class AdminClient:
    """A small client for the admin API (stdlib only, so it runs wherever the emulator does)."""

    def __init__(self, http_url: str, timeout: float = 30.0) -> None:
        self.http_url = http_url.rstrip("/")
        self.timeout = timeout

    def reset(self) -> None:
        """Back to the fixture as loaded; runtime data, faults, throttle, counters and log cleared."""
        self._call("POST", "reset")

    def requests(
        self, kind: str | None = None, host: str | None = None, path_contains: str | None = None
    ) -> list[dict[str, Any]]:
        """Request-log entries, oldest first, optionally filtered."""
        params = {"kind": kind, "host": host, "path_contains": path_contains}
        return self._call("GET", "requests", params={k: v for k, v in params.items() if v is not None})

    def counters(self) -> dict[str, Any]:
        return self._call("GET", "counters")

    def faults(self) -> list[dict[str, Any]]:
        return self._call("GET", "faults")

    def set_faults(self, faults: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return self._call("PUT", "faults", faults)

    def add_fault(self, fault: dict[str, Any]) -> list[dict[str, Any]]:
        return self._call("POST", "faults", fault)

    def clear_faults(self) -> None:
        self._call("DELETE", "faults")

    def throttle(self) -> dict[str, Any]:
        """The throttle in force: {"default": rule, "vaults": {name: rule}}."""
        return self._call("GET", "throttle")

    def set_throttle(
        self, vault: str | None, limit: int, window_s: float, retry_after: float | None = None
    ) -> dict[str, Any]:
        """Set one vault's token bucket, or with vault None the default for every vault."""
        spec = {"vault": vault, "limit": limit, "window_s": window_s, "retry_after": retry_after}
        return self._call("PUT", "throttle", spec)

    def load(self, fragment: dict[str, Any]) -> None:
        """Merge identities/vaults/workspaces (fixture format) into the running fixture."""
        self._call("POST", "load", fragment)

    def add_version(self, vault: str, name: str, value: str, **fields: Any) -> str:
        """Add a new version of a secret, which becomes its latest (as Key Vault's Set Secret); its id.

        Creates the secret if the vault has none of that name. fields (fixture format): `id` (32
        lowercase hex; default a random one), `contentType`, `enabled`, `exp`, `nbf`, `tags`.
        """
        body = {"value": value, **fields}
        return self._call("POST", f"vaults/{_quote(vault)}/secrets/{_quote(name)}/versions", body)["id"]

    def delete_secret(self, vault: str, name: str) -> None:
        """Remove a secret with all its versions; reads then get 404 SecretNotFound."""
        self._call("DELETE", f"vaults/{_quote(vault)}/secrets/{_quote(name)}")

    def update_connection(self, workspace: str, connection: str, fields: dict[str, Any]) -> None:
        """Replace a connection's fields (fixture format) one by one; `credentials` is replaced whole."""
        self._call("PATCH", f"workspaces/{_quote(workspace)}/connections/{_quote(connection)}", fields)

    def assign_role(self, identity: str, role: str, scope: str, after_denials: int = 0) -> dict[str, Any]:
        """Assign role ("Key Vault Secrets User" on a vault, "Azure Machine Learning Workspace Connection
        Secrets Reader" on a workspace; names as in the fixture) to identity (a client id or fixture name).

        It takes effect once after_denials requests by the identity to that scope have been denied (the
        emulator's stand-in for propagation); until then they get the 403 a missing role gets. Returns
        {"identity", "client_id", "role", "scope", "after_denials"}.
        """
        spec = {"identity": identity, "role": role, "scope": scope, "after_denials": after_denials}
        return self._call("POST", "roles", spec)

    def remove_role(self, identity: str, role: str, scope: str) -> None:
        """Remove a role assignment, run-time or the fixture's; requests are denied from the next one."""
        self._call("DELETE", "roles", {"identity": identity, "role": role, "scope": scope})

    def roles(self) -> list[dict[str, Any]]:
        """Run-time role changes: {"identity", "client_id", "role", "scope", "state", "pending_denials"},
        state "pending", "active" or "removed"."""
        return self._call("GET", "roles")

    def mint_token(self, client_id: str, audience: str, expires_in: int) -> str:
        """A token as the emulator would issue it; a negative expires_in gives an expired one."""
        spec = {"client_id": client_id, "audience": audience, "expires_in": expires_in}
        return self._call("POST", "tokens", spec)["access_token"]

    def mint_assertion(
        self,
        issuer: str,
        subject: str,
        expires_in: int,
        audience: str | None = None,
        not_before: int | None = None,
    ) -> dict[str, Any]:
        """A service-account token for workload identity: {"assertion", "expires_on"}. audience: default
        api://AzureADTokenExchange; a negative expires_in gives an expired one, a future not_before one not
        valid yet."""
        spec = {"issuer": issuer, "subject": subject, "expires_in": expires_in}
        spec |= {key: value for key, value in (("audience", audience), ("not_before", not_before)) if value is not None}
        return self._call("POST", "assertions", spec)

    def ca_pem(self) -> bytes:
        with urllib.request.urlopen(f"{self.http_url}/admin/ca.pem", timeout=self.timeout) as response:
            return response.read()

    def _call(self, method: str, route: str, body: Any = None, params: dict[str, str] | None = None) -> Any:
        url = f"{self.http_url}{PREFIX}{route}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(url, data=data, method=method)
        if method != "GET":  # POST, PUT, PATCH, DELETE: the admin API refuses them without it (admin_guard)
            request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return json.loads(response.read() or b"null")
        except urllib.error.HTTPError as exc:
            raise AdminError(f"{method} {url}: {exc.code} {exc.read().decode(errors='replace')}") from None


def _quote(name: str) -> str:
    return urllib.parse.quote(name, safe="")
