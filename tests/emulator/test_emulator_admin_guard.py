"""The admin API answers local tools only: no DNS rebinding, no cross-site requests from a web page.

Raw http.client requests, so each test controls exactly the Host, Origin and Content-Type sent.
"""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest
import requests
from azure_emulator.launcher import EmulatorError, EmulatorProcess
from emu_helpers import KV_RESOURCE, SYSTEM, admin_call

JSON = "application/json"
FAULT = {"kind": "arm", "status": 500}
TOKEN_REQUEST = {"client_id": SYSTEM, "audience": KV_RESOURCE, "expires_in": 3600}


def port(emulator: EmulatorProcess) -> int:
    return urlsplit(emulator.http_url).port


@pytest.mark.parametrize(
    "host",
    ["127.0.0.1:{port}", "127.0.0.1", "127.1.2.3:{port}", "localhost:{port}", "LocalHost", "[::1]:{port}"],
)
def test_loopback_hosts_are_served(emulator, host):
    status, payload = admin_call(emulator, "GET", "health", Host=host.format(port=port(emulator)))
    assert (status, payload) == (200, {"status": "ok"})


@pytest.mark.parametrize(
    "host",
    [
        "evil.example:{port}",  # DNS rebinding: the attacker's name, resolved to 127.0.0.1
        "localhost.evil.example:{port}",
        "127.0.0.1.nip.io:{port}",
        "0.0.0.0:{port}",  # browsers reach the local host through 0.0.0.0 too
        "10.1.2.3:{port}",
        "emulator:{port}",  # not allowed unless given with --admin-host
        "",
    ],
)
def test_other_hosts_are_refused_even_for_reads(emulator, host):
    for route in ("counters", "requests", "health"):
        status, payload = admin_call(emulator, "GET", route, Host=host.format(port=port(emulator)))
        assert status == 403
        assert "Host" in payload["error"] and "--admin-host" in payload["error"]


def test_a_rebound_host_can_neither_mint_a_token_nor_change_state(emulator):
    host = f"evil.example:{port(emulator)}"
    status, payload = admin_call(emulator, "POST", "tokens", TOKEN_REQUEST, Host=host, Content_Type=JSON)
    assert status == 403 and "access_token" not in payload
    status, _ = admin_call(emulator, "POST", "faults", FAULT, Host=host, Content_Type=JSON)
    assert status == 403
    assert emulator.admin.faults() == []


@pytest.mark.parametrize(
    "content_type",
    [
        None,
        "text/plain",  # what a cross-site fetch or form may send without a CORS preflight
        "text/plain;charset=UTF-8",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "application/jsonp",
        "text/plain; application/json",
    ],
)
def test_state_changes_need_a_json_content_type(emulator, content_type):
    headers = {} if content_type is None else {"Content_Type": content_type}
    for method, route, body in [
        ("POST", "faults", FAULT),
        ("PUT", "faults", [FAULT]),
        ("POST", "tokens", TOKEN_REQUEST),
    ]:
        status, payload = admin_call(emulator, method, route, body, **headers)
        assert status == 415, (method, route)
        assert "application/json" in payload["error"]
    assert emulator.admin.faults() == []


def test_bodiless_state_changes_need_a_json_content_type_too(emulator):
    emulator.admin.add_fault(FAULT)
    for method, route in [("POST", "reset"), ("DELETE", "faults")]:
        status, _ = admin_call(emulator, method, route, Content_Type="text/plain")
        assert status == 415
        status, _ = admin_call(emulator, method, route)
        assert status == 415
    assert len(emulator.admin.faults()) == 1
    status, _ = admin_call(emulator, "POST", "reset", Content_Type=JSON)
    assert status == 200
    assert emulator.admin.faults() == []


def test_json_content_type_with_parameters_is_accepted(emulator):
    status, payload = admin_call(emulator, "POST", "faults", FAULT, Content_Type="Application/JSON; charset=utf-8")
    assert status == 200 and len(payload) == 1


@pytest.mark.parametrize("origin", ["http://evil.example", "null", "http://127.0.0.1"])
def test_requests_from_web_pages_are_refused(emulator, origin):
    status, payload = admin_call(emulator, "POST", "faults", FAULT, Content_Type=JSON, Origin=origin)
    assert status == 403 and "Origin" in payload["error"]
    status, _ = admin_call(emulator, "GET", "counters", Origin=origin)
    assert status == 403
    assert emulator.admin.faults() == []


@pytest.mark.parametrize("site", ["cross-site", "same-site"])
def test_cross_site_browser_requests_are_refused(emulator, site):
    status, payload = admin_call(emulator, "GET", "counters", Sec_Fetch_Site=site)
    assert status == 403 and "Sec-Fetch-Site" in payload["error"]


def test_admin_host_flag_allows_more_names():
    with EmulatorProcess(extra_args=["--admin-host", "emulator", "--admin-host", "Admin.Example"]) as emulator:
        for host in ("emulator:{port}", "admin.example", "ADMIN.EXAMPLE:{port}", "localhost:{port}"):
            status, _ = admin_call(emulator, "GET", "health", Host=host.format(port=port(emulator)))
            assert status == 200, host
        status, _ = admin_call(emulator, "GET", "health", Host="evil.example")
        assert status == 403


@pytest.mark.parametrize("value", ["emulator:8080", "http://emulator", ""])
def test_admin_host_flag_takes_a_bare_name(value):
    with pytest.raises(EmulatorError, match="argument --admin-host"):
        EmulatorProcess(extra_args=["--admin-host", value]).start()


def test_admin_client_still_works(emulator):
    emulator.admin.add_fault(FAULT)
    emulator.admin.clear_faults()
    assert emulator.admin.mint_token(SYSTEM, KV_RESOURCE, 60)
    emulator.admin.reset()
    assert emulator.admin.faults() == []


def test_identity_endpoints_keep_answering_any_host(emulator):
    # Containers reach IMDS as http://emulator:8080 (docker/compose.yaml); Azure does not check the Host.
    response = requests.get(
        emulator.imds_authority + "/metadata/identity/oauth2/token",
        params={"api-version": "2018-02-01", "resource": KV_RESOURCE},
        headers={"Metadata": "true", "Host": "emulator:8080"},
        timeout=10,
    )
    assert response.status_code == 200, response.text
