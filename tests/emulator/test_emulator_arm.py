"""Protocol pins for the emulated ARM workspace-connection List Secrets."""

from __future__ import annotations

import pytest
from emu_helpers import ARM, ARM_API, ARM_RESOURCE, KV_RESOURCE, NOROLES, SYSTEM, USER, WS_MAIN, bearer

LIST = ARM + WS_MAIN + "/connections/{}/listsecrets"


@pytest.fixture
def arm_token(token):
    return token(ARM_RESOURCE)


def test_list_secrets_has_the_real_response_shape(https, arm_token):
    response = https.post(LIST.format("aoai-conn"), params=ARM_API, headers=bearer(arm_token), timeout=10)
    assert response.status_code == 200
    body = response.json()
    assert body["id"] == WS_MAIN + "/connections/aoai-conn"
    assert body["name"] == "aoai-conn"
    assert body["type"] == "Microsoft.MachineLearningServices/workspaces/connections"
    properties = body["properties"]
    assert properties["authType"] == "ApiKey"
    assert properties["category"] == "AzureOpenAI"
    assert properties["credentials"] == {"key": "fake-aoai-key-123"}
    assert properties["target"] == "https://contoso-aoai.openai.azure.com/"
    assert properties["metadata"] == {"ApiType": "azure", "ApiVersion": "2024-02-01"}
    assert "expiryTime" in properties
    assert {"createdAt", "createdBy", "lastModifiedAt"} <= set(body["systemData"])


def test_custom_keys_connection(https, arm_token):
    body = https.post(LIST.format("custom-conn"), params=ARM_API, headers=bearer(arm_token), timeout=10).json()
    assert body["properties"]["credentials"] == {
        "keys": {"API_KEY": "fake-custom-api-key", "OTHER_KEY": "fake-custom-other"}
    }


@pytest.mark.parametrize("audience", ["https://management.azure.com", "https://management.core.windows.net/"])
def test_other_arm_audiences_are_accepted(https, token, audience):
    response = https.post(LIST.format("aoai-conn"), params=ARM_API, headers=bearer(token(audience)), timeout=10)
    assert response.status_code == 200


def test_no_token_is_401_with_challenge(https):
    response = https.post(LIST.format("aoai-conn"), params=ARM_API, timeout=10)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "AuthenticationFailed"
    assert response.headers["WWW-Authenticate"].startswith("Bearer ")


def test_wrong_audience_expired_and_tampered_tokens_are_401(emulator, https, token):
    cases = {
        "InvalidAuthenticationTokenAudience": token(KV_RESOURCE),
        "ExpiredAuthenticationToken": emulator.admin.mint_token(SYSTEM, ARM_RESOURCE, -60),
        "InvalidAuthenticationToken": token(ARM_RESOURCE)[:-3] + "xyz",
    }
    for code, bad in cases.items():
        response = https.post(LIST.format("aoai-conn"), params=ARM_API, headers=bearer(bad), timeout=10)
        assert response.status_code == 401, code
        assert response.json()["error"]["code"] == code


def test_missing_api_version_is_400(https, arm_token):
    response = https.post(LIST.format("aoai-conn"), headers=bearer(arm_token), timeout=10)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "MissingApiVersionParameter"


def authorization_failed(client_id: str, scope: str) -> dict:
    """The whole body ARM sends for a scope the caller holds no role on (or that does not exist)."""
    action = "Microsoft.MachineLearningServices/workspaces/connections/listsecrets/action"
    return {
        "error": {
            "code": "AuthorizationFailed",
            "message": f"The client '{client_id}' with object id '{client_id}' does not have authorization to "
            f"perform action '{action}' over scope '{scope}' or the scope is invalid. If access was recently "
            "granted, please refresh your credentials.",
        }
    }


def test_identity_without_the_role_is_403_authorization_failed(https, token):
    cases = [(NOROLES, WS_MAIN), (USER, WS_MAIN.replace("ws-main", "ws-locked"))]
    for client_id, workspace in cases:
        url = f"{ARM}{workspace}/connections/aoai-conn/listsecrets"
        response = https.post(url, params=ARM_API, headers=bearer(token(ARM_RESOURCE, client_id)), timeout=10)
        assert response.status_code == 403
        assert response.json() == authorization_failed(client_id, f"{workspace}/connections/aoai-conn")


@pytest.mark.parametrize(
    "scope",
    [
        WS_MAIN.replace("0000000000a1", "0000000000ff"),  # unknown subscription
        WS_MAIN.replace("rg-ml", "rg-nope"),  # unknown resource group
        WS_MAIN.replace("ws-main", "ws-nope"),  # unknown workspace
        WS_MAIN.replace("ws-main", "WS-Nope").replace("rg-ml", "RG-Nope"),  # named as the request names it
    ],
)
def test_unknown_subscription_resource_group_or_workspace_is_the_same_403(https, arm_token, scope):
    # ARM does not say whether a scope exists to a caller without a role on it.
    url = f"{ARM}{scope}/connections/aoai-conn/listsecrets"
    response = https.post(url, params=ARM_API, headers=bearer(arm_token), timeout=10)
    assert response.status_code == 403
    assert response.json() == authorization_failed(SYSTEM, f"{scope}/connections/aoai-conn")


def test_unknown_connection_in_a_readable_workspace_is_the_ml_service_404(emulator, https, arm_token):
    response = https.post(LIST.format("no-such-conn"), params=ARM_API, headers=bearer(arm_token), timeout=10)
    assert response.status_code == 404
    body = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "message", "innerError"}
    assert body["error"]["code"] == "UserError"
    assert body["error"]["innerError"] == {"code": "NotFoundError"}
    assert "no-such-conn" in body["error"]["message"]
    assert emulator.admin.counters()["list_secrets"] == {"ws-main": {"no-such-conn": {"404": 1}}}


NEW_CONNECTIONS = {
    "sp-conn": (
        "ServicePrincipal",
        {"clientId": "fake-sp-client-id", "clientSecret": "fake-sp-client-secret", "tenantId": "fake-sp-tenant-id"},
    ),
    "sas-conn": ("SAS", {"sas": "fake-sas-token"}),
    "pat-conn": ("PAT", {"pat": "fake-pat-token"}),
    "accountkey-conn": ("AccountKey", {"key": "fake-account-key"}),
    "accesskey-conn": (
        "AccessKey",
        {"accessKeyId": "fake-access-key-id", "secretAccessKey": "fake-secret-access-key"},
    ),
    "mi-conn": ("ManagedIdentity", {"clientId": "fake-mi-client-id", "resourceId": "fake-mi-resource-id"}),
    "aad-conn": ("AAD", None),
    "none-conn": ("None", None),
}


@pytest.mark.parametrize("name", sorted(NEW_CONNECTIONS))
def test_newer_auth_types_have_their_rest_model_credentials(https, arm_token, name):
    auth_type, credentials = NEW_CONNECTIONS[name]
    response = https.post(LIST.format(name), params=ARM_API, headers=bearer(arm_token), timeout=10)
    assert response.status_code == 200
    properties = response.json()["properties"]
    assert properties["authType"] == auth_type
    assert isinstance(properties["category"], str) and properties["target"]
    if credentials is None:
        assert "credentials" not in properties  # None and AAD: no credentials property in the REST model
    else:
        assert properties["credentials"] == credentials
        assert all(value.startswith("fake-") for value in credentials.values())
