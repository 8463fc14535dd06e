"""The emulator's run-time state: the fixture in force, faults, throttle, tokens, counters and log."""

from __future__ import annotations

import copy
import threading
import time
from collections import deque
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from azure_emulator import fixture as fixture_module
from azure_emulator.assertions import AssertionIssuer
from azure_emulator.faults import FaultTable, Throttle
from azure_emulator.model import ROLE_CONNECTION_READER, ROLE_SECRETS_USER, Fixture, Identity
from azure_emulator.roles import RoleAssignments
from azure_emulator.tokens import Claims, TokenIssuer

LOG_LIMIT = 200_000  # request-log entries kept; counters are never truncated


class Stats:
    """Counters and the request log. One lock: each request does one short update."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._clear()

    def clear(self) -> None:
        with self._lock:
            self._clear()

    def _clear(self) -> None:
        self._log: deque[dict[str, Any]] = deque(maxlen=LOG_LIMIT)
        self._counters: dict[str, dict[str, Any]] = {
            "by_kind": {},  # kind -> status -> n
            "token_requests": {},  # client id -> resource -> status -> n
            "keyvault_gets": {},  # vault -> secret -> status -> n
            "list_secrets": {},  # workspace -> connection -> status -> n
            "throttled": {},  # vault -> n
            "faulted": {},  # kind -> n
        }

    def record(self, entry: dict[str, Any]) -> None:
        # A reset or hang has no status; it is counted under the fault's name.
        status = str(entry["status"]) if entry["status"] is not None else entry["fault"]
        with self._lock:
            self._log.append(entry)
            counters = self._counters
            _bump(counters["by_kind"], entry["kind"], status)
            if entry["kind"] in ("imds", "msi", "entra") and entry.get("resource") is not None:
                _bump(counters["token_requests"], entry.get("client_id") or "", entry["resource"], status)
            if entry.get("secret") is not None:
                _bump(counters["keyvault_gets"], entry["vault"], entry["secret"], status)
            if entry.get("connection") is not None:
                _bump(counters["list_secrets"], entry["workspace"], entry["connection"], status)
            if entry.get("throttled"):
                _bump(counters["throttled"], entry["vault"])
            if entry.get("faulted"):
                _bump(counters["faulted"], entry["kind"])

    def requests(
        self, kind: str | None = None, host: str | None = None, path_contains: str | None = None
    ) -> list[dict[str, Any]]:
        with self._lock:
            entries = list(self._log)
        return [
            entry
            for entry in entries
            if (kind is None or entry["kind"] == kind)
            and (host is None or entry["host"] == host.lower())
            and (path_contains is None or path_contains in entry["path"])
        ]

    def counters(self) -> dict[str, Any]:
        with self._lock:
            return copy.deepcopy(self._counters)


def _bump(table: dict[str, Any], *keys: str) -> None:
    for key in keys[:-1]:
        table = table.setdefault(key, {})
    table[keys[-1]] = table.get(keys[-1], 0) + 1


class State:
    """Everything the endpoints share. `fixture` is swapped whole, so readers never see a half-update."""

    def __init__(self, raw: dict[str, Any], fixture_path: Path, ca_bundle: Path) -> None:
        self.fixture_path = fixture_path
        self.ca_bundle = ca_bundle
        self.issuer = TokenIssuer()
        self.assertions = AssertionIssuer()  # the service-account tokens Entra exchanges (workload identity)
        self.faults = FaultTable()
        self.throttle = Throttle()
        self.stats = Stats()
        self.roles = RoleAssignments()  # run-time role assignments and removals (admin API)
        self.stopping = threading.Event()  # set at shutdown: ends injected latencies and hangs
        self._lock = threading.Lock()
        self._original_raw = raw
        self._raw = raw
        self.fixture: Fixture = fixture_module.build(raw)
        self._apply_fault_config()

    def reset(self) -> None:
        """Back to the fixture as loaded (runtime additions, new versions, deletions, connection
        updates and role assignments undone); faults, throttle, counters and log too."""
        with self._lock:
            self._raw = self._original_raw
            self.fixture = fixture_module.build(self._raw)
            self._apply_fault_config()
            self.roles.clear()
            self.stats.clear()

    def load(self, fragment: Mapping[str, Any]) -> None:
        """Merge identities, vaults (with secrets) and workspaces (with connections) in fixture format."""
        allowed = {"identities", "vaults", "workspaces"}
        unknown = set(fragment) - allowed
        if unknown:
            raise fixture_module.FixtureError(f"load: unknown keys {sorted(unknown)}; allowed: {sorted(allowed)}")
        with self._lock:
            self._swap(fixture_module.merge(self._raw, fragment))

    def add_version(self, vault: str, secret: str, spec: Mapping[str, Any]) -> str:
        """Add a new version (the latest) of a secret, creating the secret if needed; its version id."""
        with self._lock:
            edited, version = fixture_module.with_version(self._raw, vault, secret, spec, int(time.time()))
            self._swap(edited)
        return version

    def delete_secret(self, vault: str, secret: str) -> None:
        """Remove a secret and all its versions."""
        with self._lock:
            self._swap(fixture_module.without_secret(self._raw, vault, secret))

    def update_connection(self, workspace: str, connection: str, fields: Mapping[str, Any]) -> None:
        """Replace a connection's fields one by one (fixture format; credentials as a whole)."""
        with self._lock:
            self._swap(fixture_module.with_connection_fields(self._raw, workspace, connection, fields))

    def assign_role(self, identity: str, role: str, scope: str, after_denials: int) -> dict[str, Any]:
        """Assign role on scope (a vault or workspace name) to identity (a client id or fixture name);
        it takes effect once after_denials requests by the identity to the scope have been denied."""
        if isinstance(after_denials, bool) or not isinstance(after_denials, int) or after_denials < 0:
            raise fixture_module.FixtureError(f"after_denials: must be an integer >= 0, got {after_denials!r}")
        found = self._role_target(identity, role, scope)
        self.roles.assign(found.client_id, role, scope, after_denials)
        return {
            "identity": found.name,
            "client_id": found.client_id,
            "role": role,
            "scope": scope,
            "after_denials": after_denials,
        }

    def remove_role(self, identity: str, role: str, scope: str) -> None:
        """Remove a role assignment (run-time or the fixture's); it takes effect at once."""
        found = self._role_target(identity, role, scope)
        if not self.roles.remove(found.client_id, role, scope, _granted(found, role, scope)):
            raise fixture_module.FixtureError(f"identity {found.name!r} has no role {role!r} on {scope!r} to remove")

    def has_role(self, client_id: str, role: str, scope: str) -> bool:
        """Whether the caller holds role on scope now; a pending assignment counts this request as a denial."""
        identity = self.fixture.identities.get(client_id.lower())
        granted = identity is not None and _granted(identity, role, scope)
        return self.roles.allows(client_id, role, scope, granted)

    def describe_roles(self) -> list[dict[str, Any]]:
        names = {identity.client_id: identity.name for identity in self.fixture.identities.values()}
        return [{"identity": names.get(entry["client_id"]), **entry} for entry in self.roles.describe()]

    def _role_target(self, identity: str, role: str, scope: str) -> Identity:
        """The fixture identity named (by client id or name), after checking role and scope."""
        fixture = self.fixture
        if not isinstance(identity, str) or not isinstance(role, str) or not isinstance(scope, str):
            raise fixture_module.FixtureError("identity, role and scope must be strings")
        found = fixture.identities.get(identity.lower()) or next(
            (item for item in fixture.identities.values() if item.name == identity), None
        )
        if found is None:
            raise fixture_module.FixtureError(f"no identity with client id or name {identity!r} in the fixture")
        scopes = {ROLE_SECRETS_USER: fixture.vaults, ROLE_CONNECTION_READER: fixture.workspaces}
        if role not in scopes:
            raise fixture_module.FixtureError(f"role: must be one of {sorted(scopes)}, got {role!r}")
        if scope not in scopes[role]:
            what = "vault" if role == ROLE_SECRETS_USER else "workspace"
            raise fixture_module.FixtureError(f"no {what} named {scope!r} in the fixture (the scope of {role!r})")
        return found

    def _swap(self, raw: dict[str, Any]) -> None:
        """Make raw the fixture in force; the caller holds the lock. All or nothing."""
        self.fixture = fixture_module.build(raw)  # raises before anything changes
        self._raw = raw

    def _apply_fault_config(self) -> None:
        self.faults.replace(self.fixture.faults)
        self.throttle.configure(self.fixture.throttle, self.fixture.vault_throttles)

    def identity(self, client_id: str | None) -> Identity | None:
        """The identity a token request names, or the default (system-assigned) one when it names none."""
        if client_id:
            return self.fixture.identities.get(client_id.lower())
        return self.fixture.default_identity

    def mint(self, identity_client_id: str, audience: str, expires_in: int | None = None) -> tuple[str, Claims]:
        fixture = self.fixture
        return self.issuer.mint(
            audience=audience,
            client_id=identity_client_id,
            tenant_id=fixture.tenant_id,
            expires_in=fixture.token_lifetime_s if expires_in is None else expires_in,
        )


def _granted(identity: Identity, role: str, scope: str) -> bool:
    """Whether the fixture's `roles` give identity role on scope."""
    return scope in (identity.vaults if role == ROLE_SECRETS_USER else identity.workspaces)
