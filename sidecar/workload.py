"""Microsoft Entra Workload ID (Kubernetes): the settings the webhook injects, checked, the federated token
file, and what Entra's refusals mean.

azure-identity 1.27 selects workload identity when AZURE_AUTHORITY_HOST, AZURE_TENANT_ID and
AZURE_FEDERATED_TOKEN_FILE are all set (EnvironmentVariables.WORKLOAD_IDENTITY_VARS), with the client id
given to ManagedIdentityCredential or else AZURE_CLIENT_ID. Its WorkloadIdentityCredential is a
ClientAssertionCredential whose assertion is the token file's content; the sidecar builds that same
credential itself so that (1) the file is read at every token request, not kept for 600 s: kubelet
rewrites it at 80% of its life and a kept copy can be sent expired (AADSTS700024,
Azure/azure-workload-identity#693); (2) a missing or unreadable file is named as such; (3) its HTTP goes
through the sidecar's session.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from sidecar.clouds import AUTHORITY_HOSTS
from sidecar.connect_to import ConnectToRule
from sidecar.errors import ConfigurationError, SidecarError, UnavailableError
from sidecar.logs import redactor
from sidecar.references import shown
from sidecar.settings import GUID

AUTHORITY_HOST = "AZURE_AUTHORITY_HOST"
TENANT_ID = "AZURE_TENANT_ID"
TOKEN_FILE = "AZURE_FEDERATED_TOKEN_FILE"
CLIENT_ID = "AZURE_CLIENT_ID"
# azure-identity's selection variables (AZURE_CLIENT_ID is not one: it is only the default client id).
SELECTION = (AUTHORITY_HOST, TENANT_ID, TOKEN_FILE)
# A tenant id or a verified domain: azure-identity's characters (letters, digits, '-', '.'), DNS-sized.
_TENANT = re.compile(r"[A-Za-z0-9][A-Za-z0-9.-]{0,252}")
# A service-account token is a few KiB; a file far larger is not one (and is not read whole into memory).
MAX_TOKEN_FILE_BYTES = 64 * 1024
FEDERATED_CREDENTIAL_FIX = (
    "the identity's federated credential must match this pod's service-account token exactly: issuer = the "
    "cluster's OIDC issuer URL (AKS: az aks show --query oidcIssuerProfile.issuerUrl), subject = "
    "system:serviceaccount:<namespace>:<service account>, audience api://AzureADTokenExchange "
    "(az identity federated-credential create ...); the pod's service account carries the annotation "
    "azure.workload.identity/client-id: <that client id> and the pod the label azure.workload.identity/use: 'true'."
)


@dataclass(frozen=True)
class WorkloadIdentity:
    """The checked settings of a workload identity."""

    authority: str  # https://host[:port], no path
    tenant_id: str
    client_id: str
    client_id_source: str  # the variable it came from
    token_file: str


def partial_selection(env: Mapping[str, str]) -> list[str]:
    """The selection variables missing when some are set: azure-identity then silently uses IMDS (on AKS, the
    node's identity if IMDS is reachable), which a deployment meaning workload identity never wants."""
    missing = [name for name in SELECTION if not env.get(name)]
    return missing if env.get(TOKEN_FILE) and missing else []


def load(
    env: Mapping[str, str], client_id: str | None, client_id_source: str, rules: list[ConnectToRule]
) -> WorkloadIdentity:
    """The workload identity's settings; ConfigurationError naming the variable and the fix.

    `client_id`: SIDECAR_CLIENT_ID or DEFAULT_IDENTITY_CLIENT_ID (already checked), which win over
    AZURE_CLIENT_ID as an explicit client id wins in ManagedIdentityCredential.
    """
    if client_id is None:
        client_id, client_id_source = env.get(CLIENT_ID, "").strip(), CLIENT_ID
        if not client_id:
            raise ConfigurationError(
                f"workload identity is selected ({', '.join(SELECTION)} are set) but no client id is: "
                f"{CLIENT_ID} is not set.",
                fix=f"annotate the pod's service account with azure.workload.identity/client-id: <client id> (the "
                f"webhook then sets {CLIENT_ID}), or set SIDECAR_CLIENT_ID.",
            )
        if not GUID.fullmatch(client_id):
            raise ConfigurationError(
                f"{CLIENT_ID}={shown(client_id)!r} is not a client id (a GUID).",
                fix="set the service account's azure.workload.identity/client-id annotation to the client id of the "
                "managed identity or app registration (not its name or resource id).",
            )
    tenant = env.get(TENANT_ID, "").strip()
    if not _TENANT.fullmatch(tenant):
        raise ConfigurationError(
            f"{TENANT_ID}={shown(tenant)!r} is not a tenant id (a GUID) or a tenant's domain name.",
            fix=f"set {TENANT_ID} to the directory (tenant) id of the identity, or let the webhook set it.",
        )
    return WorkloadIdentity(
        authority=authority(env.get(AUTHORITY_HOST, ""), rules),
        tenant_id=tenant,
        client_id=client_id,
        client_id_source=client_id_source,
        token_file=env.get(TOKEN_FILE, ""),
    )


def authority(text: str, rules: list[ConnectToRule]) -> str:
    """`https://<authority host>` of a known cloud, or of a host SIDECAR_CONNECT_TO sends to loopback.

    The federated assertion and the tokens go to this host alone: anything else could collect them.
    Written as azure-identity reads it (a bare host means https; a trailing '/' is dropped).
    """
    value = text.strip()
    url = value if "://" in value else f"https://{value}"
    try:
        parts = urlsplit(url.rstrip("/"))
        port = parts.port or 443
    except ValueError:  # a bad port or [IPv6] host
        parts, port = urlsplit(""), 0
    host = (parts.hostname or "").lower()
    plain = parts.scheme == "https" and not (parts.path or parts.query or parts.fragment or parts.username)
    known = host in AUTHORITY_HOSTS and port == 443
    redirected = any(rule.matches(host, port) for rule in rules)
    if not (plain and host and (known or redirected)):
        raise ConfigurationError(
            f"{AUTHORITY_HOST}={shown(value)!r} is not the Microsoft Entra authority host of a known cloud: the "
            "service-account token and the identity's tokens go only to "
            + ", ".join(f"https://{known_host}" for known_host in sorted(AUTHORITY_HOSTS))
            + " (or, for local runs, a host SIDECAR_CONNECT_TO sends to a loopback address).",
            fix=f"set {AUTHORITY_HOST} to the authority of the identity's cloud, e.g. "
            "https://login.microsoftonline.com/ (what the workload identity webhook sets).",
        )
    return f"https://{host}" + ("" if port == 443 else f":{port}")


class TokenFile:
    """The federated token file, read afresh at every token request (kubelet replaces it as it renews)."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __call__(self) -> str:
        try:
            with open(self.path, "rb") as handle:
                data = handle.read(MAX_TOKEN_FILE_BYTES + 1)
        except OSError as exc:
            raise ConfigurationError(
                f"{TOKEN_FILE}={self.path!r} cannot be read: {exc.strerror or type(exc).__name__}.",
                fix="mount the projected service-account token where the variable says (the workload identity "
                "webhook does, for a pod labelled azure.workload.identity/use: 'true' whose service account has "
                "the azure.workload.identity/client-id annotation), readable by the container's user.",
            ) from None
        assertion = data.decode("utf-8", "replace").strip()
        if not assertion or len(data) > MAX_TOKEN_FILE_BYTES or assertion.count(".") != 2:
            raise ConfigurationError(
                f"{TOKEN_FILE}={self.path!r} does not hold a service-account token (a JWT): it is "
                + ("empty." if not assertion else "not one."),
                fix="point the variable at the projected service-account token file (the webhook mounts it at "
                "/var/run/secrets/azure/tokens/azure-identity-token).",
            )
        redactor.add(assertion)
        return assertion


AADSTS = re.compile(r"AADSTS(\d+)")


def refusal(status: int, said: str, workload: WorkloadIdentity, resource: str) -> SidecarError:
    """What Entra's 4xx answer to the token request means, with the fix; `said` is 'HTTP n error: description'."""
    match = AADSTS.search(said)
    code = int(match.group(1)) if match else 0
    where = f"Microsoft Entra ({workload.authority}, tenant {workload.tenant_id}) refused a token for {resource} "
    who = f"for the workload identity with client id {workload.client_id} (from {workload.client_id_source})"
    message = f"{where}{who}: {said}."
    if code in (70021, 700211, 700212, 700213) or 7002130 <= code <= 7002139:
        return ConfigurationError(message, fix=FEDERATED_CREDENTIAL_FIX)
    if code == 700024:
        return ConfigurationError(
            message,
            fix=f"the service-account token in {TOKEN_FILE} has expired or is not valid yet: kubelet renews the "
            "projected token at 80% of its life, so the file must be the projected volume itself (not a copy "
            "made at start), and the node's clock must be right.",
        )
    if code == 700016:
        return ConfigurationError(
            message,
            fix=f"no identity with that client id exists in tenant {workload.tenant_id}: check the service "
            f"account's azure.workload.identity/client-id annotation ({CLIENT_ID}), SIDECAR_CLIENT_ID and "
            f"{TENANT_ID}.",
        )
    if code == 90002:
        return ConfigurationError(message, fix=f"set {TENANT_ID} to the identity's tenant (directory) id.")
    return ConfigurationError(
        message,
        fix=f"check {CLIENT_ID}, {TENANT_ID} and the identity's federated credential; " + FEDERATED_CREDENTIAL_FIX,
    )


def unreachable_fix(workload: WorkloadIdentity | None) -> str:
    host = workload.authority if workload else f"the {AUTHORITY_HOST}"
    return (
        f"check that the pod can reach {host} on port 443 (egress rules, HTTPS_PROXY/NO_PROXY; for local runs "
        "SIDECAR_CONNECT_TO), or raise SIDECAR_TIMEOUT."
    )


def wrong_answer(where: str, status: int, problem: str) -> UnavailableError:
    return UnavailableError(
        f"{where} answered HTTP {status} to the token request, but not with a usable token: {problem}.",
        fix=f"check that nothing between the pod and {AUTHORITY_HOST} (a proxy, a SIDECAR_CONNECT_TO rule) answers "
        "in Microsoft Entra's place.",
    )
