"""Fault injection and the per-vault throttle, observed over real HTTP/TLS."""

from __future__ import annotations

import time

import pytest
import requests
from azure_emulator.admin import AdminError
from emu_helpers import KV_API, KV_RESOURCE, VAULT, bearer, raw_tls_exchange

IMDS_PATH = "/metadata/identity/oauth2/token"


def imds_get(emulator, timeout=10.0):
    return requests.get(
        emulator.imds_authority + IMDS_PATH,
        params={"api-version": "2018-02-01", "resource": KV_RESOURCE},
        headers={"Metadata": "true"},
        timeout=timeout,
    )


@pytest.mark.parametrize("status", [404, 410, 429, 500, 503])
def test_status_for_n_requests_then_success_with_retry_headers(emulator, status):
    emulator.admin.add_fault(
        {
            "kind": "imds",
            "status": status,
            "count": 2,
            "retry_after": 3,
            "retry_after_ms": 2500,
            "x_ms_retry_after_ms": 2400,
        }
    )
    for _ in range(2):
        response = imds_get(emulator)
        assert response.status_code == status
        assert response.headers["Retry-After"] == "3"
        assert response.headers["retry-after-ms"] == "2500"
        assert response.headers["x-ms-retry-after-ms"] == "2400"
    assert imds_get(emulator).status_code == 200
    assert emulator.admin.faults()[0]["remaining"] == 0
    assert emulator.admin.counters()["faulted"] == {"imds": 2}


def test_keyvault_fault_matches_host_and_path(emulator, https, token):
    kv_token = token(KV_RESOURCE)
    emulator.admin.add_fault(
        {"kind": "keyvault", "host": "contoso-kv.vault.azure.net", "path": "^/secrets/db-password", "status": 500}
    )
    other = https.get(f"{VAULT}/secrets/json-config", params=KV_API, headers=bearer(kv_token), timeout=10)
    assert other.status_code == 200
    hit = https.get(f"{VAULT}/secrets/db-password", params=KV_API, headers=bearer(kv_token), timeout=10)
    assert hit.status_code == 500
    assert hit.json()["error"]["code"] == "InternalServerError"
    again = https.get(f"{VAULT}/secrets/db-password", params=KV_API, headers=bearer(kv_token), timeout=10)
    assert again.status_code == 200


def test_any_kind_matches_every_endpoint(emulator):
    emulator.admin.add_fault({"kind": "any", "status": 503, "count": 1})
    response = requests.get(emulator.msi_endpoint, params={"api-version": "2017-09-01"}, timeout=10)
    assert response.status_code == 503


def test_connection_reset_on_plain_http(emulator):
    emulator.admin.add_fault({"kind": "imds", "reset": True, "count": 1})
    with pytest.raises(requests.ConnectionError, match="reset by peer"):
        imds_get(emulator)
    assert imds_get(emulator).status_code == 200
    assert emulator.admin.counters()["by_kind"]["imds"] == {"reset": 1, "200": 1}


def test_connection_reset_over_tls_is_a_real_rst(emulator, https, token):
    emulator.admin.add_fault({"kind": "keyvault", "reset": True, "count": 1})
    host = "contoso-kv.vault.azure.net"
    with pytest.raises(ConnectionResetError):
        raw_tls_exchange(
            emulator.https_port, emulator.ca_bundle, host, f"GET /secrets/x HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()
        )
    kv_token = token(KV_RESOURCE)
    response = https.get(f"{VAULT}/secrets/db-password", params=KV_API, headers=bearer(kv_token), timeout=10)
    assert response.status_code == 200


def test_hang_ends_with_the_clients_timeout_and_blocks_nobody(emulator):
    emulator.admin.add_fault({"kind": "imds", "hang_s": 60, "count": 1})
    with pytest.raises(requests.ReadTimeout):
        imds_get(emulator, timeout=0.5)
    # The hung request still holds its thread; others are served meanwhile.
    assert imds_get(emulator).status_code == 200
    hung = [entry for entry in emulator.admin.requests(kind="imds") if entry["fault"] == "hang"]
    assert len(hung) == 1


def test_latency_is_at_least_the_configured_amount(emulator):
    emulator.admin.add_fault({"kind": "imds", "latency_ms": 300})
    started = time.monotonic()
    assert imds_get(emulator).status_code == 200
    assert time.monotonic() - started >= 0.3


def test_set_and_clear_faults(emulator):
    emulator.admin.set_faults([{"kind": "arm", "status": 429}, {"kind": "msi", "latency_ms": 5}])
    faults = emulator.admin.faults()
    assert [f["kind"] for f in faults] == ["arm", "msi"]
    assert faults[0]["count"] == 1 and faults[1]["count"] is None
    emulator.admin.clear_faults()
    assert emulator.admin.faults() == []


def test_invalid_fault_is_rejected(emulator):
    with pytest.raises(AdminError, match="choose one of"):
        emulator.admin.add_fault({"kind": "imds", "status": 500, "reset": True})


def test_throttle_answers_429_with_retry_after(emulator, https, token):
    kv_token = token(KV_RESOURCE)
    emulator.admin.set_throttle("contoso-kv", limit=3, window_s=600, retry_after=2)
    statuses = [
        https.get(f"{VAULT}/secrets/db-password", params=KV_API, headers=bearer(kv_token), timeout=10) for _ in range(5)
    ]
    assert [r.status_code for r in statuses] == [200, 200, 200, 429, 429]
    assert statuses[-1].headers["Retry-After"] == "2"
    assert statuses[-1].json()["error"]["code"] == "Throttled"
    other_vault = https.get(
        "https://contoso-kv-cn.vault.azure.cn/secrets/cn-secret", params=KV_API, headers=bearer(kv_token), timeout=10
    )
    assert other_vault.status_code == 401  # another vault has its own bucket (and wants its own token)
    assert emulator.admin.counters()["throttled"] == {"contoso-kv": 2}


def test_429s_do_not_count_toward_the_limit(emulator, https, token):
    # 2 GETs per second. Hammering without pause gets 429s, but since they take no token the
    # bucket still refills and a GET succeeds again; were 429s counted, it never would.
    kv_token = token(KV_RESOURCE)
    emulator.admin.set_throttle("contoso-kv", limit=2, window_s=1.0)
    seen = []
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        status = https.get(f"{VAULT}/secrets/db-password", params=KV_API, headers=bearer(kv_token), timeout=10)
        seen.append(status.status_code)
        if len(seen) > 2 and seen[-1] == 200 and 429 in seen:
            break
    assert seen[:2] == [200, 200]
    assert 429 in seen, "the throttle never answered 429"
    assert seen[-1] == 200, f"no GET succeeded while 429s kept coming: {len(seen)} requests"


def test_default_throttle_is_key_vaults_real_limit(emulator):
    assert emulator.admin.throttle() == {
        "default": {"limit": 4000, "window_s": 10.0, "retry_after": None},
        "vaults": {},
    }
