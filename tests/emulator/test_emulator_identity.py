"""Protocol pins for the emulated IMDS and Azure ML identity endpoints (plain requests)."""

from __future__ import annotations

import time

import requests
from emu_helpers import KV_RESOURCE, SYSTEM, USER

IMDS_PATH = "/metadata/identity/oauth2/token"


def imds(emulator, params=None, headers=None):
    query = {"api-version": "2018-02-01", "resource": KV_RESOURCE, **(params or {})}
    return requests.get(
        emulator.imds_authority + IMDS_PATH,
        params={k: v for k, v in query.items() if v is not None},
        headers={"Metadata": "true"} if headers is None else headers,
        timeout=10,
    )


def aml(emulator, params=None, secret="default"):
    query = {"api-version": "2017-09-01", "resource": KV_RESOURCE, **(params or {})}
    headers = {} if secret is None else {"secret": emulator.msi_secret if secret == "default" else secret}
    return requests.get(
        emulator.msi_endpoint,
        params={k: v for k, v in query.items() if v is not None},
        headers=headers,
        timeout=10,
    )


def test_imds_issues_string_fields_for_the_default_identity(emulator):
    response = imds(emulator)
    assert response.status_code == 200
    body = response.json()
    assert body["client_id"] == SYSTEM
    assert body["resource"] == KV_RESOURCE
    assert body["token_type"] == "Bearer"
    for field in ("expires_in", "expires_on", "not_before"):
        assert isinstance(body[field], str) and body[field].isdigit()
    assert int(body["expires_in"]) == 3600
    assert abs(int(body["expires_on"]) - (time.time() + 3600)) < 60


def test_imds_selects_a_user_assigned_identity_by_client_id(emulator):
    assert imds(emulator, {"client_id": USER}).json()["client_id"] == USER


def test_imds_accepts_a_resource_with_a_trailing_slash(emulator):
    assert imds(emulator, {"resource": KV_RESOURCE + "/"}).json()["resource"] == KV_RESOURCE + "/"


def test_imds_requires_the_metadata_header(emulator):
    response = imds(emulator, headers={})
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"
    assert "metadata header" in response.json()["error_description"]


def test_imds_requires_api_version_and_resource(emulator):
    assert imds(emulator, {"api-version": None}).status_code == 400
    missing_resource = imds(emulator, {"resource": None})
    assert missing_resource.status_code == 400
    assert missing_resource.json()["error"] == "invalid_request"


def test_imds_rejects_a_scope_in_place_of_a_resource(emulator):
    response = imds(emulator, {"resource": KV_RESOURCE + "/.default"})
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_resource"


def test_imds_unknown_client_id_is_400_invalid_request(emulator):
    response = imds(emulator, {"client_id": "99999999-9999-4999-8999-999999999999"})
    assert response.status_code == 400
    assert response.json() == {"error": "invalid_request", "error_description": "Identity not found"}


def test_azure_ml_endpoint_answers_exactly_the_recorded_fields(emulator):
    # azure-sdk-assets, TestManagedIdentityCredential_AzureMLLive.json: these five fields, both times integers.
    response = aml(emulator)
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"access_token", "expires_in", "expires_on", "resource", "token_type"}
    assert isinstance(body["expires_on"], int) and isinstance(body["expires_in"], int)
    assert 3590 <= body["expires_in"] <= 3600
    assert abs(body["expires_on"] - (time.time() + body["expires_in"])) < 5
    assert body["resource"] == KV_RESOURCE
    assert body["token_type"] == "Bearer"
    assert emulator.admin.requests(kind="msi")[-1]["client_id"] == SYSTEM


def test_azure_ml_endpoint_selects_identity_with_clientid(emulator):
    response = aml(emulator, {"clientid": USER})
    assert response.status_code == 200
    assert "client_id" not in response.json()
    assert emulator.admin.requests(kind="msi")[-1]["client_id"] == USER
    assert emulator.admin.counters()["token_requests"] == {USER: {KV_RESOURCE: {"200": 1}}}
    unknown = aml(emulator, {"clientid": "99999999-9999-4999-8999-999999999999"})
    assert unknown.status_code == 400
    assert unknown.json()["error"] == "invalid_request"


def test_azure_ml_endpoint_checks_the_secret_header(emulator):
    for secret in (None, "wrong-secret"):
        response = aml(emulator, secret=secret)
        assert response.status_code == 401
        assert response.json()["error"] == "unauthorized_client"


def test_azure_ml_endpoint_accepts_a_missing_api_version(emulator):
    # Microsoft's online-endpoint sample (azureml-examples, score_managedidentity.py) sends none.
    for params in ({"api-version": None}, {"api-version": ""}, {"api-version": "2017-09-01"}):
        response = aml(emulator, params)
        assert response.status_code == 200, params
        assert response.json()["access_token"]


def test_azure_ml_endpoint_refuses_other_api_versions(emulator):
    # What Azure answers is unknown; the emulator refuses so a client relying on another version shows up.
    for version in ("2018-02-01", "2019-08-01"):
        response = aml(emulator, {"api-version": version})
        assert response.status_code == 400
        assert response.json()["error"] == "invalid_request"
