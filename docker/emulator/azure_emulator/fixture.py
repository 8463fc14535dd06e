"""Load and validate the YAML fixture: identities, vaults, workspaces, faults, throttle.

The raw fixture (plain dicts, as in the YAML) is what the admin API merges fragments into;
`build` turns it into the immutable model the endpoints read. Every validation error names
the offending path, e.g. `vaults.contoso-kv.secrets.openai-key.versions[1].id`.
"""

from __future__ import annotations

import copy
import datetime as dt
import hashlib
import re
import secrets as random_ids
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml

from azure_emulator.clouds import CLOUDS, Cloud
from azure_emulator.faults import parse_fault, parse_throttle_rule
from azure_emulator.model import (
    ROLE_CONNECTION_READER,
    ROLE_SECRETS_USER,
    Connection,
    FederatedCredential,
    Fixture,
    Identity,
    Secret,
    SecretVersion,
    Vault,
    Workspace,
)

DEFAULT_FIXTURE = Path(__file__).resolve().parent.parent / "fixture.yaml"

# A version created without an explicit time gets FIRST_CREATED + its index in days, so the
# order in the file is the creation order and the last listed version is the latest.
FIRST_CREATED = 1704067200  # 2024-01-01T00:00:00Z
VERSION_ID = re.compile(r"^[0-9a-f]{32}$")
# Key Vault object names: 1-127 alphanumerics and dashes.
SECRET_NAME = re.compile(r"^[0-9A-Za-z-]{1,127}$")
VAULT_NAME = re.compile(r"^[A-Za-z][0-9A-Za-z-]{1,22}[0-9A-Za-z]$")
# Azure ML workspace and connection names (azure-rest-api-specs).
AML_NAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_-]{2,32}$")
GUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
# What the admin API's new secret version may carry (created is the time it is added).
NEW_VERSION_KEYS = {"id", "value", "enabled", "exp", "nbf", "contentType", "tags"}
# The connection fields `_connection` reads, which the admin API may replace.
CONNECTION_KEYS = {
    "authType",
    "category",
    "target",
    "credentials",
    "metadata",
    "expiryTime",
    "isSharedToAll",
    "created",
}
# Credential field names per authType, from the REST models (azure-rest-api-specs, Microsoft.MachineLearningServices
# stable/2024-04-01/workspaceRP.json: WorkspaceConnectionPersonalAccessToken, ...ManagedIdentity, ...UsernamePassword,
# ...SharedAccessSignature, ...AccountKey, ...ServicePrincipal, ...AccessKey, ...ApiKey, CustomKeys, ...OAuth2).
# None and AAD (NoneAuthType-/AADAuthTypeWorkspaceConnectionProperties) have no `credentials` property at all.
CREDENTIAL_FIELDS: dict[str, frozenset[str] | None] = {
    "PAT": frozenset({"pat"}),
    "ManagedIdentity": frozenset({"clientId", "resourceId"}),
    "UsernamePassword": frozenset({"username", "password", "securityToken"}),
    "None": None,
    "SAS": frozenset({"sas"}),
    "AccountKey": frozenset({"key"}),
    "ServicePrincipal": frozenset({"clientId", "clientSecret", "tenantId"}),
    "AccessKey": frozenset({"accessKeyId", "secretAccessKey"}),
    "ApiKey": frozenset({"key"}),
    "CustomKeys": frozenset({"keys"}),
    "OAuth2": frozenset(
        {"authUrl", "clientId", "clientSecret", "developerToken", "password", "refreshToken", "tenantId", "username"}
    ),
    "AAD": None,
}
AUTH_TYPES = set(CREDENTIAL_FIELDS)
# The audience Entra recommends for federated identity credentials (and AKS workload identity uses).
DEFAULT_FEDERATED_AUDIENCE = "api://AzureADTokenExchange"


class FixtureError(ValueError):
    """The fixture is invalid; the message names the path of the bad entry."""


def read_raw(path: str | Path) -> dict[str, Any]:
    """The fixture file as plain data; FixtureError if it is not a YAML mapping."""
    try:
        raw = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise FixtureError(f"cannot read fixture {path}: {exc}") from None
    if not isinstance(raw, dict):
        raise FixtureError(f"fixture {path}: the top level must be a mapping")
    return raw


def merge(base: dict[str, Any], fragment: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of base with fragment merged in: mappings merge recursively, anything else replaces."""
    merged = copy.deepcopy(base)
    for key, value in fragment.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def with_version(
    raw: dict[str, Any], vault: str, secret: str, spec: Mapping[str, Any], now: int
) -> tuple[dict[str, Any], str]:
    """A copy of raw where secret (created if missing) has a new version, its latest; and that version's id.

    As Key Vault's Set Secret: the new version is created `now`, or at the secret's latest `created`
    if the fixture dates a version later (the newest-created is the latest; a tie goes to the one
    listed last, the new one). A shorthand secret becomes a versions list whose first entry keeps
    the version id derived from its name, so reads by that id still work. `build` validates the rest.
    """
    where = f"vaults.{vault}.secrets.{secret}"
    if not isinstance(spec, Mapping):
        raise FixtureError(f"{where}: a new version is a JSON object with at least 'value'")
    _no_unknown_keys(spec, NEW_VERSION_KEYS, f"{where} (new version)")
    version_id = spec.get("id")
    if version_id is None:
        version_id = random_ids.token_hex(16)
    elif not isinstance(version_id, str) or not VERSION_ID.fullmatch(version_id):
        raise FixtureError(f"{where}.id: must be 32 lowercase hex digits, got {version_id!r}")
    edited = copy.deepcopy(raw)
    vault_spec = _raw_vault(edited, vault)
    secrets = vault_spec["secrets"] = vault_spec.get("secrets") or {}
    key = _raw_key(secrets, secret) or secret
    existing = secrets.get(key)
    created = now
    if existing is None:
        versions: list[Any] = []
    else:
        created = max(now, _secret(vault, key, existing, f"vaults.{vault}.secrets.{key}").latest.created)
        if "versions" in existing:
            versions = existing["versions"]
        else:
            versions = [{**existing, "id": existing.get("id") or default_version_id(vault, key, 0)}]
    versions.append({**copy.deepcopy(dict(spec)), "id": version_id, "created": created})
    secrets[key] = {"versions": versions}
    return edited, version_id


def without_secret(raw: dict[str, Any], vault: str, secret: str) -> dict[str, Any]:
    """A copy of raw without secret (all its versions); FixtureError if there is no such secret."""
    edited = copy.deepcopy(raw)
    secrets = _raw_vault(edited, vault).get("secrets") or {}
    key = _raw_key(secrets, secret)
    if key is None:
        raise FixtureError(f"vaults.{vault}.secrets: no secret named {secret!r}")
    del secrets[key]
    return edited


def with_connection_fields(
    raw: dict[str, Any], workspace: str, connection: str, fields: Mapping[str, Any]
) -> dict[str, Any]:
    """A copy of raw where the connection's fields are replaced one by one (credentials as a whole)."""
    if not isinstance(fields, Mapping) or not fields:
        raise FixtureError("a connection update is a non-empty JSON object of connection fields")
    edited = copy.deepcopy(raw)
    spec = _raw_entry(edited, "workspaces", workspace, "workspace")
    where = f"workspaces.{workspace}.connections"
    connections = spec.get("connections") or {}
    key = _raw_key(connections, connection)
    if key is None:
        raise FixtureError(f"{where}: no connection named {connection!r}")
    _no_unknown_keys(fields, CONNECTION_KEYS, f"{where}.{key}")
    connections[key] = {**connections[key], **copy.deepcopy(dict(fields))}
    return edited


def _raw_vault(raw: dict[str, Any], vault: str) -> dict[str, Any]:
    return _raw_entry(raw, "vaults", vault, "vault")


def _raw_entry(raw: dict[str, Any], section: str, name: str, what: str) -> dict[str, Any]:
    """raw[section][name] (names exact, as `load` merges them); FixtureError if there is none."""
    entries = raw.get(section) or {}
    key = next((key for key in entries if str(key) == name), None)
    if key is None:
        raise FixtureError(f"no {what} named {name!r} in the fixture")
    return entries[key]


def _raw_key(items: Mapping[str, Any], name: str) -> str | None:
    """The key naming name, exactly or else ignoring case (secret and connection names are case-insensitive)."""
    if name in items:
        return name
    lowered = name.lower()
    return next((key for key in items if str(key).lower() == lowered), None)


def default_version_id(vault: str, secret: str, index: int) -> str:
    """The id of a version the fixture lists without one: derived from the vault, secret and position."""
    return hashlib.sha256(f"{vault}/{secret}/{index}".encode()).hexdigest()[:32]


def load(path: str | Path) -> tuple[dict[str, Any], Fixture]:
    raw = read_raw(path)
    return raw, build(raw)


def build(raw: Mapping[str, Any]) -> Fixture:
    """Validate raw fixture data and build the model; FixtureError on the first problem."""
    known = {
        "tenant_id",
        "token_lifetime_s",
        "msi_secret",
        "identities",
        "vaults",
        "workspaces",
        "faults",
        "throttle",
    }
    _no_unknown_keys(raw, known, "fixture")
    tenant_id = _require(raw, "tenant_id", str, "fixture")
    if not GUID.fullmatch(tenant_id):
        raise FixtureError(f"tenant_id: must be a GUID, got {tenant_id!r}")
    lifetime = raw.get("token_lifetime_s", 3600)
    if not isinstance(lifetime, int) or isinstance(lifetime, bool) or not 60 <= lifetime <= 86400:
        raise FixtureError(f"token_lifetime_s: must be an integer from 60 to 86400, got {lifetime!r}")
    msi_secret = _require(raw, "msi_secret", str, "fixture")

    vaults = {name: _vault(name, spec) for name, spec in _mapping(raw, "vaults")}
    workspaces = {name: _workspace(name, spec) for name, spec in _mapping(raw, "workspaces")}
    identities = [_identity(name, spec, vaults, workspaces) for name, spec in _mapping(raw, "identities")]
    by_client_id: dict[str, Identity] = {}
    for identity in identities:
        if identity.client_id in by_client_id:
            raise FixtureError(f"identities.{identity.name}.client_id: {identity.client_id} is used twice")
        by_client_id[identity.client_id] = identity
    defaults = [identity for identity in identities if identity.default]
    if len(defaults) > 1:
        raise FixtureError(f"identities: only one may be the default, got {[i.name for i in defaults]}")

    vaults_by_host: dict[str, Vault] = {}
    for vault in vaults.values():
        if vault.host in vaults_by_host:
            raise FixtureError(f"vaults.{vault.name}: host {vault.host} is used twice")
        vaults_by_host[vault.host] = vault

    faults = []
    for index, spec in enumerate(raw.get("faults") or []):
        try:
            faults.append(parse_fault(spec))
        except ValueError as exc:
            raise FixtureError(f"faults[{index}]: {exc}") from None
    throttle_spec = raw.get("throttle") or {}
    if not isinstance(throttle_spec, dict):
        raise FixtureError("throttle: must be a mapping")
    per_vault_spec = throttle_spec.get("vaults") or {}
    try:
        throttle = parse_throttle_rule({k: v for k, v in throttle_spec.items() if k != "vaults"})
    except ValueError as exc:
        raise FixtureError(f"throttle: {exc}") from None
    vault_throttles = {}
    for vault_name, spec in per_vault_spec.items():
        if vault_name not in vaults:
            raise FixtureError(f"throttle.vaults.{vault_name}: no such vault in the fixture")
        try:
            vault_throttles[vault_name] = parse_throttle_rule(spec)
        except ValueError as exc:
            raise FixtureError(f"throttle.vaults.{vault_name}: {exc}") from None

    return Fixture(
        tenant_id=tenant_id.lower(),
        token_lifetime_s=lifetime,
        msi_secret=msi_secret,
        identities=by_client_id,
        default_identity=defaults[0] if defaults else None,
        vaults=vaults,
        vaults_by_host=vaults_by_host,
        workspaces=workspaces,
        faults=faults,
        throttle=throttle,
        vault_throttles=vault_throttles,
    )


def secret_values(fixture: Mapping[str, Any] | str | Path) -> set[str]:
    """Every secret value, connection credential (including CustomKeys keys) and the MSI secret.

    Leak tests grep captured output for these. Accepts raw fixture data or a fixture path.
    """
    raw = fixture if isinstance(fixture, Mapping) else read_raw(fixture)
    values: set[str] = set()
    if raw.get("msi_secret"):
        values.add(str(raw["msi_secret"]))
    for vault in (raw.get("vaults") or {}).values():
        for secret in ((vault or {}).get("secrets") or {}).values():
            for version in secret.get("versions") or [secret]:
                if version.get("value") not in (None, ""):
                    values.add(str(version["value"]))
    for workspace in (raw.get("workspaces") or {}).values():
        for connection in ((workspace or {}).get("connections") or {}).values():
            values.update(_leaves(connection.get("credentials") or {}))
    return values


def _leaves(value: Any) -> Iterator[str]:
    if isinstance(value, Mapping):
        for item in value.values():
            yield from _leaves(item)
    elif value not in (None, ""):
        yield str(value)


def _vault(name: str, spec: Any) -> Vault:
    where = f"vaults.{name}"
    if not VAULT_NAME.fullmatch(name):
        raise FixtureError(f"{where}: a vault name is 3-24 letters, digits and dashes, starting with a letter")
    spec = _as_mapping(spec, where)
    _no_unknown_keys(spec, {"cloud", "secrets"}, where)
    cloud = _cloud(spec, where)
    secrets = {
        secret_name: _secret(name, secret_name, secret_spec, f"{where}.secrets.{secret_name}")
        for secret_name, secret_spec in _mapping(spec, "secrets", where)
    }
    return Vault(name=name, cloud=cloud, secrets=secrets)


def _secret(vault: str, name: str, spec: Any, where: str) -> Secret:
    if not SECRET_NAME.fullmatch(name):
        raise FixtureError(f"{where}: a secret name is 1-127 letters, digits and dashes")
    spec = _as_mapping(spec, where)
    if "versions" in spec:
        _no_unknown_keys(spec, {"versions"}, where)
        version_specs = spec["versions"]
        if not isinstance(version_specs, list) or not version_specs:
            raise FixtureError(f"{where}.versions: must be a non-empty list")
    else:
        version_specs = [spec]  # shorthand: the secret's only version, written inline
    versions: dict[str, SecretVersion] = {}
    for index, version_spec in enumerate(version_specs):
        here = f"{where}.versions[{index}]" if "versions" in spec else where
        version = _version(vault, name, index, version_spec, here)
        if version.version in versions:
            raise FixtureError(f"{here}.id: {version.version} is used twice")
        versions[version.version] = version
    # The latest is the newest-created version; on a tie, the one listed last.
    ordered = sorted(enumerate(versions.values()), key=lambda pair: (pair[1].created, pair[0]))
    return Secret(name=name, versions=versions, latest=ordered[-1][1])


def _version(vault: str, secret: str, index: int, spec: Any, where: str) -> SecretVersion:
    spec = _as_mapping(spec, where)
    allowed = {"id", "value", "enabled", "created", "updated", "exp", "nbf", "contentType", "tags"}
    _no_unknown_keys(spec, allowed, where)
    version = spec.get("id") or default_version_id(vault, secret, index)
    if not isinstance(version, str) or not VERSION_ID.fullmatch(version):
        raise FixtureError(f"{where}.id: must be 32 lowercase hex digits, got {version!r}")
    value = _require(spec, "value", str, where)
    enabled = spec.get("enabled", True)
    if not isinstance(enabled, bool):
        raise FixtureError(f"{where}.enabled: must be true or false")
    created = _time(spec.get("created"), f"{where}.created") or FIRST_CREATED + index * 86400
    updated = _time(spec.get("updated"), f"{where}.updated") or created
    tags = spec.get("tags")
    if tags is not None and not (isinstance(tags, dict) and all(isinstance(v, str) for v in tags.values())):
        raise FixtureError(f"{where}.tags: must be a mapping of strings")
    content_type = spec.get("contentType")
    if content_type is not None and not isinstance(content_type, str):
        raise FixtureError(f"{where}.contentType: must be a string")
    return SecretVersion(
        version=version,
        value=value,
        enabled=enabled,
        created=created,
        updated=updated,
        exp=_time(spec.get("exp"), f"{where}.exp"),
        nbf=_time(spec.get("nbf"), f"{where}.nbf"),
        content_type=content_type,
        tags=tags,
    )


def _workspace(name: str, spec: Any) -> Workspace:
    where = f"workspaces.{name}"
    if not AML_NAME.fullmatch(name):
        raise FixtureError(f"{where}: a workspace name must match {AML_NAME.pattern}")
    spec = _as_mapping(spec, where)
    _no_unknown_keys(spec, {"subscription", "resource_group", "cloud", "connections"}, where)
    subscription = _require(spec, "subscription", str, where)
    if not GUID.fullmatch(subscription):
        raise FixtureError(f"{where}.subscription: must be a GUID, got {subscription!r}")
    connections = {
        conn_name: _connection(conn_name, conn_spec, f"{where}.connections.{conn_name}")
        for conn_name, conn_spec in _mapping(spec, "connections", where)
    }
    return Workspace(
        name=name,
        subscription=subscription.lower(),
        resource_group=_require(spec, "resource_group", str, where),
        cloud=_cloud(spec, where),
        connections=connections,
    )


def _connection(name: str, spec: Any, where: str) -> Connection:
    if not AML_NAME.fullmatch(name):
        raise FixtureError(f"{where}: a connection name must match {AML_NAME.pattern}")
    spec = _as_mapping(spec, where)
    auth_type = _require(spec, "authType", str, where)
    if auth_type not in AUTH_TYPES:
        raise FixtureError(f"{where}.authType: must be one of {sorted(AUTH_TYPES)}, got {auth_type!r}")
    _require(spec, "category", str, where)
    credentials = _credentials(auth_type, spec.get("credentials"), f"{where}.credentials")
    metadata = spec.get("metadata") or {}
    if not isinstance(metadata, dict):
        raise FixtureError(f"{where}.metadata: must be a mapping")
    expiry = spec.get("expiryTime")
    created = _iso(_time(spec.get("created"), f"{where}.created") or FIRST_CREATED)
    properties: dict[str, Any] = {"authType": auth_type, "category": spec["category"]}
    if credentials is not None:  # None and AAD connections have no credentials property
        properties["credentials"] = credentials
    properties |= {
        "expiryTime": None if expiry is None else _iso(_time(expiry, f"{where}.expiryTime")),
        "target": spec.get("target"),
        "metadata": {key: str(value) for key, value in metadata.items()},
        "isSharedToAll": bool(spec.get("isSharedToAll", False)),
        "sharedUserList": [],
    }
    return Connection(name=name, properties=properties, created=created)


def _credentials(auth_type: str, credentials: Any, where: str) -> dict[str, Any] | None:
    """A connection's credentials, checked against its authType's REST model; None if it has none."""
    fields = CREDENTIAL_FIELDS[auth_type]
    if fields is None:
        if credentials not in (None, {}):
            raise FixtureError(f"{where}: authType {auth_type} has no credentials (none in its REST model)")
        return None
    credentials = credentials or {}
    if not isinstance(credentials, dict):
        raise FixtureError(f"{where}: must be a mapping")
    if auth_type == "CustomKeys":
        keys = credentials.get("keys")
        if not isinstance(keys, dict) or not all(isinstance(value, str) for value in keys.values()):
            raise FixtureError(f"{where}.keys: a CustomKeys connection needs a mapping of keys to strings")
    unknown = set(credentials) - fields
    if unknown:
        raise FixtureError(
            f"{where}: {sorted(unknown)} not in the {auth_type} credentials model; allowed: {sorted(fields)}"
        )
    if auth_type != "CustomKeys":
        for name, value in credentials.items():
            if not isinstance(value, str):
                raise FixtureError(f"{where}.{name}: must be a string")
    return credentials


def _identity(name: str, spec: Any, vaults: dict[str, Vault], workspaces: dict[str, Workspace]) -> Identity:
    where = f"identities.{name}"
    spec = _as_mapping(spec, where)
    _no_unknown_keys(spec, {"client_id", "default", "roles", "federated_credentials"}, where)
    client_id = _require(spec, "client_id", str, where)
    if not GUID.fullmatch(client_id):
        raise FixtureError(f"{where}.client_id: must be a GUID, got {client_id!r}")
    roles = _as_mapping(spec.get("roles") or {}, f"{where}.roles")
    _no_unknown_keys(roles, {ROLE_SECRETS_USER, ROLE_CONNECTION_READER}, f"{where}.roles")
    granted_vaults = _names(roles.get(ROLE_SECRETS_USER), vaults, f"{where}.roles.{ROLE_SECRETS_USER}")
    granted_workspaces = _names(
        roles.get(ROLE_CONNECTION_READER), workspaces, f"{where}.roles.{ROLE_CONNECTION_READER}"
    )
    default = spec.get("default", False)
    if not isinstance(default, bool):
        raise FixtureError(f"{where}.default: must be true or false")
    return Identity(
        name=name,
        client_id=client_id.lower(),
        default=default,
        vaults=frozenset(granted_vaults),
        workspaces=frozenset(granted_workspaces),
        federated_credentials=_federated_credentials(spec.get("federated_credentials"), where),
    )


def _federated_credentials(value: Any, where: str) -> tuple[FederatedCredential, ...]:
    """An identity's federated identity credentials: issuer, subject and audiences (Entra's fields)."""
    where = f"{where}.federated_credentials"
    if value is None:
        return ()
    if not isinstance(value, list):
        raise FixtureError(f"{where}: must be a list of {{issuer, subject, audiences}}")
    credentials = []
    for index, spec in enumerate(value):
        here = f"{where}[{index}]"
        spec = _as_mapping(spec, here)
        _no_unknown_keys(spec, {"issuer", "subject", "audiences"}, here)
        issuer = _require(spec, "issuer", str, here)
        if not issuer.startswith("https://"):
            raise FixtureError(f"{here}.issuer: an OIDC issuer is an https URL, got {issuer!r}")
        audiences = spec.get("audiences", [DEFAULT_FEDERATED_AUDIENCE])
        if not isinstance(audiences, list) or not audiences or not all(isinstance(a, str) and a for a in audiences):
            raise FixtureError(f"{here}.audiences: must be a non-empty list of strings")
        credentials.append(FederatedCredential(issuer, _require(spec, "subject", str, here), tuple(audiences)))
    return tuple(credentials)


def _names(value: Any, known: Mapping[str, Any], where: str) -> list[str]:
    names = value or []
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise FixtureError(f"{where}: must be a list of names")
    for name in names:
        if name not in known:
            raise FixtureError(f"{where}: {name!r} is not defined in the fixture")
    return names


def _cloud(spec: Mapping[str, Any], where: str) -> Cloud:
    name = spec.get("cloud", "public")
    if name not in CLOUDS:
        raise FixtureError(f"{where}.cloud: must be one of {sorted(CLOUDS)}, got {name!r}")
    return CLOUDS[name]


def _time(value: Any, where: str) -> int | None:
    """Epoch seconds from an integer, a YAML timestamp or an ISO-8601 string; None stays None."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise FixtureError(f"{where}: must be a time, got {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, dt.date) and not isinstance(value, dt.datetime):
        value = dt.datetime(value.year, value.month, value.day, tzinfo=dt.timezone.utc)
    if isinstance(value, str):
        try:
            value = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise FixtureError(f"{where}: not an ISO-8601 time: {value!r}") from None
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.timezone.utc)
        return int(value.timestamp())
    raise FixtureError(f"{where}: must be a time, got {value!r}")


def _iso(epoch: int) -> str:
    return dt.datetime.fromtimestamp(epoch, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _require(spec: Mapping[str, Any], key: str, kind: type, where: str) -> Any:
    value = spec.get(key)
    if not isinstance(value, kind) or value in ("", None):
        raise FixtureError(f"{where}.{key}: required, must be a non-empty {kind.__name__}")
    return value


def _as_mapping(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise FixtureError(f"{where}: must be a mapping")
    return value


def _mapping(spec: Mapping[str, Any], key: str, where: str = "") -> Iterator[tuple[str, Any]]:
    value = spec.get(key) or {}
    path = f"{where}.{key}" if where else key
    for name, item in _as_mapping(value, path).items():
        yield str(name), item


def _no_unknown_keys(spec: Mapping[str, Any], allowed: set[str], where: str) -> None:
    unknown = set(spec) - allowed
    if unknown:
        raise FixtureError(f"{where}: unknown keys {sorted(unknown)}; allowed: {sorted(allowed)}")
