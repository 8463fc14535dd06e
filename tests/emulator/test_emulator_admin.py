"""Counters, the request log, reset, run-time load and minted tokens through the admin API."""

from __future__ import annotations

import json

import pytest
from azure_emulator.admin import AdminError
from emu_helpers import ARM, ARM_API, ARM_RESOURCE, KV_API, KV_RESOURCE, SYSTEM, USER, VAULT, WS_MAIN, bearer


def test_counters_and_request_log(emulator, https, token):
    kv_token = token(KV_RESOURCE)
    token(KV_RESOURCE, USER)
    https.get(f"{VAULT}/secrets/db-password", params=KV_API, timeout=10)  # the challenge
    https.get(f"{VAULT}/secrets/db-password", params=KV_API, headers=bearer(kv_token), timeout=10)
    https.post(
        f"{ARM}{WS_MAIN}/connections/aoai-conn/listsecrets",
        params=ARM_API,
        headers=bearer(token(ARM_RESOURCE)),
        timeout=10,
    )

    counters = emulator.admin.counters()
    assert counters["token_requests"] == {
        SYSTEM: {KV_RESOURCE: {"200": 1}, ARM_RESOURCE: {"200": 1}},
        USER: {KV_RESOURCE: {"200": 1}},
    }
    assert counters["keyvault_gets"] == {"contoso-kv": {"db-password": {"401": 1, "200": 1}}}
    assert counters["list_secrets"] == {"ws-main": {"aoai-conn": {"200": 1}}}
    assert counters["by_kind"] == {"imds": {"200": 3}, "keyvault": {"401": 1, "200": 1}, "arm": {"200": 1}}

    log = emulator.admin.requests(kind="keyvault")
    assert [entry["status"] for entry in log] == [401, 200]
    assert log[1]["client_id"] == SYSTEM
    assert log[1]["audience"] == KV_RESOURCE
    assert log[1]["host"] == "contoso-kv.vault.azure.net"
    assert log[1]["path"] == "/secrets/db-password"
    assert log[1]["method"] == "GET"
    assert log[1]["throttled"] is False and log[1]["faulted"] is False
    assert isinstance(log[1]["time"], float)
    assert len(emulator.admin.requests(path_contains="listsecrets")) == 1
    assert len(emulator.admin.requests(host="management.azure.com")) == 1
    assert kv_token not in json.dumps(emulator.admin.requests())


def test_admin_requests_are_not_logged(emulator):
    emulator.admin.counters()
    assert emulator.admin.requests() == []


def test_reset_restores_the_fixture_as_loaded(emulator, https, token):
    emulator.admin.load({"vaults": {"contoso-kv": {"secrets": {"added": {"value": "fake-added"}}}}})
    emulator.admin.add_fault({"kind": "arm", "status": 500})
    emulator.admin.set_throttle(None, limit=1, window_s=100)
    token(KV_RESOURCE)
    emulator.admin.reset()
    assert emulator.admin.faults() == []
    assert emulator.admin.requests() == []
    assert emulator.admin.counters()["token_requests"] == {}
    response = https.get(f"{VAULT}/secrets/added", params=KV_API, headers=bearer(token(KV_RESOURCE)), timeout=10)
    assert response.status_code == 404
    ok = https.get(f"{VAULT}/secrets/db-password", params=KV_API, headers=bearer(token(KV_RESOURCE)), timeout=10)
    assert ok.status_code == 200  # the default throttle (4000/10 s) is back


def test_load_adds_many_secrets_identities_and_connections(emulator, https, token):
    new_id = "44444444-4444-4444-8444-444444444444"
    emulator.admin.load(
        {
            "identities": {"loaded": {"client_id": new_id, "roles": {"Key Vault Secrets User": ["bulk-kv"]}}},
            "vaults": {
                "bulk-kv": {"secrets": {f"s-{i}": {"value": f"fake-bulk-{i}"} for i in range(1000)}},
            },
            "workspaces": {
                "ws-main": {
                    "connections": {
                        "new-conn": {"authType": "ApiKey", "category": "ApiKey", "credentials": {"key": "fake-new"}}
                    }
                }
            },
        }
    )
    bulk_token = token(KV_RESOURCE, new_id)
    response = https.get(
        "https://bulk-kv.vault.azure.net/secrets/s-999", params=KV_API, headers=bearer(bulk_token), timeout=10
    )
    assert response.json()["value"] == "fake-bulk-999"
    listed = https.post(
        f"{ARM}{WS_MAIN}/connections/new-conn/listsecrets",
        params=ARM_API,
        headers=bearer(token(ARM_RESOURCE)),
        timeout=10,
    )
    assert listed.json()["properties"]["credentials"] == {"key": "fake-new"}
    # The fixture's own data is still there.
    existing = https.get(f"{VAULT}/secrets/db-password", params=KV_API, headers=bearer(token(KV_RESOURCE)), timeout=10)
    assert existing.status_code == 200


def test_invalid_load_is_rejected_and_changes_nothing(emulator, https, token):
    with pytest.raises(AdminError, match=r"vaults\.contoso-kv\.secrets\.bad\.versions\[0\]\.id"):
        emulator.admin.load(
            {"vaults": {"contoso-kv": {"secrets": {"bad": {"versions": [{"id": "XYZ", "value": "fake"}]}}}}}
        )
    with pytest.raises(AdminError, match="unknown keys"):
        emulator.admin.load({"tenant_id": "00000000-0000-4000-8000-000000000000"})
    response = https.get(f"{VAULT}/secrets/db-password", params=KV_API, headers=bearer(token(KV_RESOURCE)), timeout=10)
    assert response.status_code == 200


def test_ca_is_served(emulator):
    with open(emulator.ca_bundle, "rb") as handle:
        assert emulator.admin.ca_pem() == handle.read()
