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


def test_identity_without_the_role_is_403_authorization_failed(https, token):
    cases = [(NOROLES, LIST.format("aoai-conn")), (USER, LIST.format("aoai-conn").replace("ws-main", "ws-locked"))]
    for client_id, url in cases:
        response = https.post(url, params=ARM_API, headers=bearer(token(ARM_RESOURCE, client_id)), timeout=10)
        assert response.status_code == 403
        error = response.json()["error"]
        assert error["code"] == "AuthorizationFailed"
        assert "Azure Machine Learning Workspace Connection Secrets Reader" in error["message"]
        assert "Microsoft.MachineLearningServices/workspaces/connections/listsecrets/action" in error["message"]
        assert client_id in error["message"]
        assert "/connections/" in error["message"]  # the scope


def test_unknown_connection_and_workspace_are_404(https, arm_token):
    urls = {
        "ResourceNotFound": [LIST.format("no-such-conn"), LIST.format("aoai-conn").replace("ws-main", "ws-nope")],
        "ResourceGroupNotFound": [LIST.format("aoai-conn").replace("rg-ml", "rg-nope")],
        "SubscriptionNotFound": [LIST.format("aoai-conn").replace("0000000000a1", "0000000000ff")],
    }
    for code, cases in urls.items():
        for url in cases:
            response = https.post(url, params=ARM_API, headers=bearer(arm_token), timeout=10)
            assert response.status_code == 404, url
            assert response.json()["error"]["code"] == code
