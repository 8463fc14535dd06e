"""The fixture as the endpoints read it: immutable identities, vaults, secrets, workspaces."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from azure_emulator.clouds import Cloud
from azure_emulator.faults import Fault, ThrottleRule

ROLE_SECRETS_USER = "Key Vault Secrets User"
ROLE_CONNECTION_READER = "Azure Machine Learning Workspace Connection Secrets Reader"


@dataclass(frozen=True)
class SecretVersion:
    version: str
    value: str
    enabled: bool
    created: int
    updated: int
    exp: int | None
    nbf: int | None
    content_type: str | None
    tags: dict[str, str] | None


@dataclass(frozen=True)
class Secret:
    name: str
    versions: dict[str, SecretVersion]
    latest: SecretVersion


@dataclass(frozen=True)
class Vault:
    name: str
    cloud: Cloud
    secrets: dict[str, Secret]

    @property
    def host(self) -> str:
        return self.name.lower() + self.cloud.vault_suffix


@dataclass(frozen=True)
class Connection:
    name: str
    properties: dict[str, Any]  # authType, category, credentials, target, metadata, expiryTime, ...
    created: str


@dataclass(frozen=True)
class Workspace:
    name: str
    subscription: str
    resource_group: str
    cloud: Cloud
    connections: dict[str, Connection]

    @property
    def arm_id(self) -> str:
        return (
            f"/subscriptions/{self.subscription}/resourceGroups/{self.resource_group}"
            f"/providers/Microsoft.MachineLearningServices/workspaces/{self.name}"
        )


@dataclass(frozen=True)
class FederatedCredential:
    """A federated identity credential: Entra accepts an assertion whose iss, sub and aud match it exactly."""

    issuer: str
    subject: str
    audiences: tuple[str, ...]


@dataclass(frozen=True)
class Identity:
    name: str
    client_id: str  # lower-case
    default: bool
    vaults: frozenset[str]  # "Key Vault Secrets User" on these vaults
    workspaces: frozenset[str]  # "... Workspace Connection Secrets Reader" on these workspaces
    # Workload identity: the service-account tokens Entra exchanges for this identity's tokens (entra.py).
    federated_credentials: tuple[FederatedCredential, ...] = ()


@dataclass(frozen=True)
class Fixture:
    tenant_id: str
    token_lifetime_s: int
    msi_secret: str
    identities: dict[str, Identity]  # by lower-case client id
    default_identity: Identity | None
    vaults: dict[str, Vault]  # by vault name
    vaults_by_host: dict[str, Vault]
    workspaces: dict[str, Workspace]  # by workspace name
    faults: list[Fault]
    throttle: ThrottleRule
    vault_throttles: dict[str, ThrottleRule]  # per-vault overrides of `throttle`
