"""Protocol pins for the emulated Key Vault (plain requests over verified TLS)."""

from __future__ import annotations

import pytest
from emu_helpers import KV_API, KV_RESOURCE, NOROLES, SYSTEM, TENANT, USER, VAULT, bearer


@pytest.fixture
def kv_token(token):
    return token(KV_RESOURCE)


def test_no_token_gets_the_challenge_real_vaults_send(https):
    # Real public-cloud vaults name login.windows.net (azure-sdk-for-go#723, azure-sdk-for-js recordings).
    response = https.get(f"{VAULT}/secrets/db-password", params=KV_API, timeout=10)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == (
        f'Bearer authorization="https://login.windows.net/{TENANT}", resource="https://vault.azure.net"'
    )
    assert response.json()["error"]["code"] == "Unauthorized"


def test_every_401_carries_the_same_challenge(emulator, https, token):
    expected = f'Bearer authorization="https://login.windows.net/{TENANT}", resource="https://vault.azure.net"'
    for bad in (token("https://management.azure.com/"), emulator.admin.mint_token(SYSTEM, KV_RESOURCE, -60)):
        response = https.get(f"{VAULT}/secrets/db-password", params=KV_API, headers=bearer(bad), timeout=10)
        assert response.status_code == 401
        assert response.headers["WWW-Authenticate"] == expected


@pytest.mark.parametrize(
    ("vault", "authority", "resource"),
    [
        ("https://contoso-kv-cn.vault.azure.cn", "https://login.chinacloudapi.cn", "https://vault.azure.cn"),
        (
            "https://contoso-kv-gov.vault.usgovcloudapi.net",
            "https://login.microsoftonline.us",
            "https://vault.usgovcloudapi.net",
        ),
    ],
)
def test_sovereign_cloud_challenges(https, vault, authority, resource):
    # What China and US Gov vaults name is unknown (no public capture); these hosts are the emulator's.
    response = https.get(f"{vault}/secrets/x", params=KV_API, timeout=10)
    assert response.headers["WWW-Authenticate"] == f'Bearer authorization="{authority}/{TENANT}", resource="{resource}"'


def test_latest_version_is_the_newest_created(https, kv_token):
    for path in ("/secrets/openai-key", "/secrets/openai-key/"):
        response = https.get(VAULT + path, params=KV_API, headers=bearer(kv_token), timeout=10)
        assert response.status_code == 200
        body = response.json()
        assert body["value"] == "fake-openai-key-v3"
        assert body["id"] == f"{VAULT}/secrets/openai-key/00000000000000000000000000000a03"
        assert body["attributes"]["enabled"] is True
        assert body["attributes"]["recoveryLevel"] == "Recoverable+Purgeable"
        assert isinstance(body["attributes"]["created"], int)


def test_pinned_version(https, kv_token):
    url = f"{VAULT}/secrets/openai-key/00000000000000000000000000000a01"
    body = https.get(url, params=KV_API, headers=bearer(kv_token), timeout=10).json()
    assert body["value"] == "fake-openai-key-v1"
    assert body["id"] == url


def test_content_type_and_awkward_values_round_trip(https, kv_token):
    def get(name):
        return https.get(f"{VAULT}/secrets/{name}", params=KV_API, headers=bearer(kv_token), timeout=10).json()

    assert get("json-config")["contentType"] == "application/json"
    assert get("nul-secret")["value"] == "fake\x00nul"
    assert get("multiline")["value"] == "fake-line-1\nfake-line-2"


def test_expired_and_not_yet_valid_secrets_are_still_returned(https, kv_token):
    # Key Vault treats exp/nbf as information for Get Secret (Azure/AzureKeyVault#19).
    expired = https.get(f"{VAULT}/secrets/expired-secret", params=KV_API, headers=bearer(kv_token), timeout=10)
    assert expired.status_code == 200
    assert expired.json()["value"] == "fake-expired-value"
    assert expired.json()["attributes"]["exp"] == 1577836800
    future = https.get(f"{VAULT}/secrets/future-secret", params=KV_API, headers=bearer(kv_token), timeout=10)
    assert future.status_code == 200
    assert future.json()["attributes"]["nbf"] == 4070908800


def test_missing_api_version_is_400_bad_parameter(https, kv_token):
    response = https.get(f"{VAULT}/secrets/db-password", headers=bearer(kv_token), timeout=10)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "BadParameter"


def test_wrong_audience_is_401_akv10022_with_challenge(https, token):
    arm_token = token("https://management.azure.com/")
    response = https.get(f"{VAULT}/secrets/db-password", params=KV_API, headers=bearer(arm_token), timeout=10)
    assert response.status_code == 401
    assert response.json()["error"]["message"].startswith("AKV10022: Invalid audience.")
    assert "WWW-Authenticate" in response.headers


def test_token_for_another_cloud_is_rejected(https, token):
    cn_token = token("https://vault.azure.cn")
    response = https.get(f"{VAULT}/secrets/db-password", params=KV_API, headers=bearer(cn_token), timeout=10)
    assert response.status_code == 401


def test_audience_with_trailing_slash_is_accepted(https, token):
    slash_token = token(KV_RESOURCE + "/")
    response = https.get(f"{VAULT}/secrets/db-password", params=KV_API, headers=bearer(slash_token), timeout=10)
    assert response.status_code == 200


def test_expired_token_is_401_token_expired(emulator, https):
    expired = emulator.admin.mint_token(SYSTEM, KV_RESOURCE, -60)
    response = https.get(f"{VAULT}/secrets/db-password", params=KV_API, headers=bearer(expired), timeout=10)
    assert response.status_code == 401
    assert "[TokenExpired]" in response.json()["error"]["message"]
    assert "WWW-Authenticate" in response.headers


def test_tampered_token_is_401(https, kv_token):
    prefix, body, signature = kv_token.split(".")
    tampered = f"{prefix}.{body[:-2]}{'A' if body[-2] != 'A' else 'B'}{body[-1]}.{signature}"
    response = https.get(f"{VAULT}/secrets/db-password", params=KV_API, headers=bearer(tampered), timeout=10)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "Unauthorized"


def test_identity_without_the_role_is_403_forbidden_by_rbac(https, token):
    for client_id, url in (
        (NOROLES, f"{VAULT}/secrets/db-password"),
        (USER, "https://restricted-kv.vault.azure.net/secrets/other"),
    ):
        response = https.get(url, params=KV_API, headers=bearer(token(KV_RESOURCE, client_id)), timeout=10)
        assert response.status_code == 403
        error = response.json()["error"]
        assert error["code"] == "Forbidden"
        assert error["innererror"]["code"] == "ForbiddenByRbac"
        assert "Caller is not authorized" in error["message"]
        assert "Assignment: (not found)" in error["message"]
        assert "Microsoft.KeyVault/vaults/secrets/getSecret/action" in error["message"]
        assert f"appid={client_id}" in error["message"]


def test_disabled_secret_is_403_secret_disabled(https, kv_token):
    response = https.get(f"{VAULT}/secrets/disabled-secret", params=KV_API, headers=bearer(kv_token), timeout=10)
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "Forbidden"
    assert response.json()["error"]["innererror"]["code"] == "SecretDisabled"


def test_unknown_secret_and_version_are_404_secret_not_found(https, kv_token):
    for path in ("/secrets/no-such-secret", "/secrets/openai-key/ffffffffffffffffffffffffffffffff"):
        response = https.get(VAULT + path, params=KV_API, headers=bearer(kv_token), timeout=10)
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "SecretNotFound"


def test_unknown_vault_is_404_naming_the_fixture(https, kv_token):
    response = https.get(
        "https://no-such-kv.vault.azure.net/secrets/x", params=KV_API, headers=bearer(kv_token), timeout=10
    )
    assert response.status_code == 404
    assert "fixture has no vault" in response.json()["error"]["message"]


def test_secret_names_are_case_insensitive(https, kv_token):
    response = https.get(f"{VAULT}/secrets/DB-Password", params=KV_API, headers=bearer(kv_token), timeout=10)
    assert response.json()["value"] == "fake-db-password-7Qx"
