"""The Azure clouds the sidecar will talk to, and nothing else.

A token is only ever requested for these audiences and only ever sent to these
hosts: a vault URL, ARM endpoint or authority host outside this table is refused
before any network call.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Cloud:
    name: str
    vault_suffix: str  # a vault host is <vault> + this suffix
    vault_resource: str  # the audience Key Vault's challenge names; lower-case (azure-sdk-for-python#25450)
    arm_host: str
    arm_resource: str


CLOUDS = (
    Cloud(
        "public",
        ".vault.azure.net",
        "https://vault.azure.net",
        "management.azure.com",
        "https://management.azure.com/",
    ),
    Cloud(
        "china",
        ".vault.azure.cn",
        "https://vault.azure.cn",
        "management.chinacloudapi.cn",
        "https://management.chinacloudapi.cn/",
    ),
    Cloud(
        "usgov",
        ".vault.usgovcloudapi.net",
        "https://vault.usgovcloudapi.net",
        "management.usgovcloudapi.net",
        "https://management.usgovcloudapi.net/",
    ),
)

ARM_HOSTS = frozenset(cloud.arm_host for cloud in CLOUDS)
# Microsoft Entra's authority hosts of these clouds (azure-identity's AzureAuthorityHosts): the only hosts a
# workload identity's service-account token and token requests go to (sidecar.workload).
AUTHORITY_HOSTS = frozenset({"login.microsoftonline.com", "login.chinacloudapi.cn", "login.microsoftonline.us"})
VAULT_SUFFIXES = tuple(cloud.vault_suffix for cloud in CLOUDS)


def cloud_for_vault_host(host: str) -> Cloud | None:
    host = host.lower()
    return next((cloud for cloud in CLOUDS if host.endswith(cloud.vault_suffix)), None)


def cloud_for_arm_host(host: str) -> Cloud:
    return next(cloud for cloud in CLOUDS if cloud.arm_host == host)
