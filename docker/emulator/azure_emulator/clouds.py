"""The three Azure clouds the emulator knows: vault suffixes, token resources, authorities, ARM hosts."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Cloud:
    name: str
    vault_suffix: str  # a vault's host is <name><vault_suffix>
    vault_resource: str  # the token resource Key Vault's challenge names
    vault_challenge_host: str  # Key Vault's challenge names authorization="https://<this>/<tenant>"
    login_host: str  # the ARM challenge's authorization_uri is https://<login_host>/
    arm_host: str
    arm_resources: tuple[str, ...]  # token audiences ARM accepts (compared without a trailing slash)

    def vault_authority(self, tenant_id: str) -> str:
        """The `authorization` parameter of Key Vault's 401 challenge."""
        return f"https://{self.vault_challenge_host}/{tenant_id}"


CLOUDS: dict[str, Cloud] = {
    "public": Cloud(
        name="public",
        vault_suffix=".vault.azure.net",
        vault_resource="https://vault.azure.net",
        # Real public-cloud vaults name login.windows.net (azure-sdk-for-go#723; the challenges
        # recorded in azure-sdk-for-js's Key Vault test recordings).
        vault_challenge_host="login.windows.net",
        login_host="login.microsoftonline.com",
        arm_host="management.azure.com",
        arm_resources=("https://management.azure.com", "https://management.core.windows.net"),
    ),
    "china": Cloud(
        name="china",
        vault_suffix=".vault.azure.cn",
        vault_resource="https://vault.azure.cn",
        vault_challenge_host="login.chinacloudapi.cn",  # what a China vault names is unknown (README)
        login_host="login.chinacloudapi.cn",
        arm_host="management.chinacloudapi.cn",
        arm_resources=("https://management.chinacloudapi.cn", "https://management.core.chinacloudapi.cn"),
    ),
    "usgov": Cloud(
        name="usgov",
        vault_suffix=".vault.usgovcloudapi.net",
        vault_resource="https://vault.usgovcloudapi.net",
        vault_challenge_host="login.microsoftonline.us",  # what a US Gov vault names is unknown (README)
        login_host="login.microsoftonline.us",
        arm_host="management.usgovcloudapi.net",
        arm_resources=("https://management.usgovcloudapi.net", "https://management.core.usgovcloudapi.net"),
    ),
}

# The Microsoft Entra authority hosts (AzureAuthorityHosts in azure-identity): their token endpoint (entra.py).
LOGIN_HOSTS = tuple(cloud.login_host for cloud in CLOUDS.values())

# Every host name the HTTPS listener serves; the server certificate covers exactly these.
TLS_NAMES = (
    [f"*{cloud.vault_suffix}" for cloud in CLOUDS.values()] + [c.arm_host for c in CLOUDS.values()] + list(LOGIN_HOSTS)
)


def connect_to_setting(address: str, port: int) -> str:
    """The SIDECAR_CONNECT_TO value that sends every emulated HTTPS host to address:port."""
    return ",".join(f"{name}:443:{address}:{port}" for name in TLS_NAMES)
