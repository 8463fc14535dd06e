"""Microsoft Entra's token endpoint (workload identity): raw requests for each answer, then the real
azure-identity WorkloadIdentityCredential and msal, unmodified, through a connect-to session over TLS."""

from __future__ import annotations

import time
from pathlib import Path

import msal
import pytest
from azure.core.pipeline.transport import RequestsTransport
from azure.identity import WorkloadIdentityCredential
from azure.keyvault.secrets import SecretClient
from emu_helpers import KV_RESOURCE, TENANT, VAULT

from sidecar.connect_to import parse_connect_to
from sidecar.session import new_session

WORKLOAD = "77777777-7777-4777-8777-777777777777"
ISSUER = (
    "https://eastus.oic.prod-aks.azure.com/72f988bf-86f1-41af-91ab-2d7cd011db47/00000000-0000-4000-8000-0000000000c1/"
)
SUBJECT = "system:serviceaccount:default:scoring"
TOKEN_URL = f"https://login.microsoftonline.com/{TENANT}/oauth2/v2.0/token"
JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


def assertion(emulator, **overrides) -> str:
    spec = {"issuer": ISSUER, "subject": SUBJECT, "expires_in": 3600, **overrides}
    return emulator.admin.mint_assertion(**spec)["assertion"]


def grant(client_assertion: str, client_id: str = WORKLOAD, scope: str = f"{KV_RESOURCE}/.default") -> dict:
    return {
        "grant_type": "client_credentials",
        "client_id": client_id,
        "scope": scope,
        "client_assertion_type": JWT_BEARER,
        "client_assertion": client_assertion,
    }


def test_a_matching_assertion_gets_a_token_for_the_scope_resource(emulator, https):
    answer = https.post(TOKEN_URL, data=grant(assertion(emulator)))
    assert answer.status_code == 200
    body = answer.json()
    # The client-credentials answer of the v2 endpoint: no expires_on, no resource, no refresh token.
    assert set(body) == {"token_type", "expires_in", "ext_expires_in", "access_token"}
    assert body["token_type"] == "Bearer" and body["expires_in"] == 3600
    [entry] = emulator.admin.requests(kind="entra")
    assert (entry["client_id"], entry["resource"], entry["status"]) == (WORKLOAD, KV_RESOURCE, 200)
    assert emulator.admin.counters()["token_requests"][WORKLOAD] == {KV_RESOURCE: {"200": 1}}
    # The token is the emulator's own: Key Vault accepts it, for the identity's roles.
    secret = https.get(
        f"{VAULT}/secrets/db-password",
        params={"api-version": "7.4"},
        headers={"Authorization": f"Bearer {body['access_token']}"},
    )
    assert secret.status_code == 200


@pytest.mark.parametrize(
    ("overrides", "client_id", "status", "error", "code"),
    [
        ({"subject": "system:serviceaccount:default:other"}, WORKLOAD, 401, "invalid_client", 700213),
        ({"issuer": "https://oidc.example.invalid/"}, WORKLOAD, 401, "invalid_client", 700211),
        ({"audience": "api://other"}, WORKLOAD, 401, "invalid_client", 700212),
        ({"expires_in": -60}, WORKLOAD, 401, "invalid_client", 700024),
        ({"not_before": int(time.time()) + 600}, WORKLOAD, 401, "invalid_client", 700024),
        ({}, "22222222-2222-4222-8222-222222222222", 401, "invalid_client", 70021),  # no federated credential
        ({}, "55555555-5555-4555-8555-555555555555", 400, "unauthorized_client", 700016),
    ],
)
def test_an_assertion_entra_would_refuse_gets_its_error(emulator, https, overrides, client_id, status, error, code):
    answer = https.post(TOKEN_URL, data=grant(assertion(emulator, **overrides), client_id=client_id))
    assert answer.status_code == status
    body = answer.json()
    assert set(body) == {
        "error",
        "error_description",
        "error_codes",
        "timestamp",
        "trace_id",
        "correlation_id",
        "error_uri",
    }
    assert (body["error"], body["error_codes"]) == (error, [code])
    assert body["error_description"].startswith(f"AADSTS{code}: ") and "Trace ID: " in body["error_description"]


def test_the_subject_error_names_the_presented_subject(emulator, https):
    body = https.post(TOKEN_URL, data=grant(assertion(emulator, subject="system:serviceaccount:ml:x"))).json()
    assert "presented assertion subject 'system:serviceaccount:ml:x'" in body["error_description"]


def test_an_assertion_not_signed_by_the_issuer_is_malformed(emulator, https):
    forged = assertion(emulator).rsplit(".", 1)[0] + ".AAAA"
    body = https.post(TOKEN_URL, data=grant(forged)).json()
    assert (body["error"], body["error_codes"]) == ("invalid_client", [50027])


@pytest.mark.parametrize(
    ("change", "error", "code"),
    [
        ({"scope": KV_RESOURCE}, "invalid_scope", 1002012),
        ({"client_assertion": ""}, "invalid_client", 7000218),
        ({"grant_type": "password"}, "unsupported_grant_type", 70003),
        ({"client_id": ""}, "invalid_request", 900144),
    ],
)
def test_a_malformed_grant_is_refused(emulator, https, change, error, code):
    answer = https.post(TOKEN_URL, data={**grant(assertion(emulator)), **change})
    assert answer.status_code in (400, 401)
    assert (answer.json()["error"], answer.json()["error_codes"]) == (error, [code])


def test_another_tenant_is_not_found(emulator, https):
    url = TOKEN_URL.replace(TENANT, "00000000-0000-4000-8000-000000000000")
    answer = https.post(url, data=grant(assertion(emulator)))
    assert answer.status_code == 400 and answer.json()["error_codes"] == [90002]


@pytest.mark.parametrize("host", ["login.microsoftonline.com", "login.chinacloudapi.cn", "login.microsoftonline.us"])
def test_every_cloud_authority_host_is_served_over_tls(emulator, https, host):
    answer = https.get(f"https://{host}/{TENANT}/v2.0/.well-known/openid-configuration")
    assert answer.status_code == 200
    assert answer.json()["token_endpoint"] == f"https://{host}/{TENANT}/oauth2/v2.0/token"


def test_a_fault_on_entra_answers_in_the_oauth_shape(emulator, https):
    emulator.admin.add_fault({"kind": "entra", "status": 503, "count": 1, "retry_after": 1})
    answer = https.post(TOKEN_URL, data=grant(assertion(emulator)))
    assert answer.status_code == 503 and answer.headers["Retry-After"] == "1"
    assert set(answer.json()) == {"error", "error_description"}
    assert https.post(TOKEN_URL, data=grant(assertion(emulator))).status_code == 200


def _session(emulator):
    session = new_session(parse_connect_to(emulator.connect_to))
    session.verify = emulator.ca_bundle
    session.trust_env = False
    return session


def test_azure_identity_workload_identity_credential_reads_a_secret(emulator, tmp_path: Path):
    token_file = tmp_path / "token"
    token_file.write_text(assertion(emulator))
    session = _session(emulator)
    credential = WorkloadIdentityCredential(
        tenant_id=TENANT,
        client_id=WORKLOAD,
        token_file_path=str(token_file),
        authority="login.microsoftonline.com",
        transport=RequestsTransport(session=session, session_owner=False, connection_verify=emulator.ca_bundle),
    )
    client = SecretClient(
        VAULT,
        credential,
        transport=RequestsTransport(session=session, session_owner=False, connection_verify=emulator.ca_bundle),
    )
    assert client.get_secret("db-password").value == "fake-db-password-7Qx"
    assert emulator.admin.counters()["token_requests"][WORKLOAD] == {KV_RESOURCE: {"200": 1}}


def test_msal_reads_the_discovery_document_and_gets_a_token(emulator):
    client_assertion = assertion(emulator)
    app = msal.ConfidentialClientApplication(
        WORKLOAD,
        client_credential={"client_assertion": lambda: client_assertion},
        authority=f"https://login.microsoftonline.com/{TENANT}",
        http_client=_session(emulator),
    )
    result = app.acquire_token_for_client(scopes=[f"{KV_RESOURCE}/.default"])
    assert "access_token" in result, result.get("error_description")
    paths = [entry["path"] for entry in emulator.admin.requests(kind="entra")]
    assert f"/{TENANT}/v2.0/.well-known/openid-configuration" in paths
    assert paths[-1] == f"/{TENANT}/oauth2/v2.0/token"
