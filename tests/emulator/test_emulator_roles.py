"""Role assignments at run time (admin API): propagation counted in denials, removal, reset.

Real HTTP against the emulator process: roles changed through `AdminClient`, reads through Key Vault
and ARM over verified TLS with IMDS tokens.
"""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest
from azure_emulator.admin import AdminError
from emu_helpers import (
    ARM,
    ARM_API,
    ARM_RESOURCE,
    KV_API,
    KV_RESOURCE,
    NOROLES,
    SYSTEM,
    USER,
    VAULT,
    WS_MAIN,
    admin_call,
    bearer,
)

KV_ROLE = "Key Vault Secrets User"
ARM_ROLE = "Azure Machine Learning Workspace Connection Secrets Reader"
WS_LOCKED = WS_MAIN.replace("ws-main", "ws-locked")


@pytest.fixture
def kv_get(https, token):
    """kv_get(client_id, vault=VAULT, name="db-password"): the Key Vault response for Get Secret."""

    def get(client_id: str, vault: str = VAULT, name: str = "db-password"):
        headers = bearer(token(KV_RESOURCE, client_id))
        return https.get(f"{vault}/secrets/{name}", params=KV_API, headers=headers, timeout=10)

    return get


@pytest.fixture
def list_secrets(https, token):
    """list_secrets(client_id, workspace=WS_MAIN, connection="aoai-conn"): the List Secrets response."""

    def post(client_id: str, workspace: str = WS_MAIN, connection: str = "aoai-conn"):
        url = f"{ARM}{workspace}/connections/{connection}/listsecrets"
        return https.post(url, params=ARM_API, headers=bearer(token(ARM_RESOURCE, client_id)), timeout=10)

    return post


def test_a_key_vault_assignment_takes_effect_after_n_denials(emulator, kv_get):
    before = kv_get(NOROLES)
    assert before.status_code == 403

    assigned = emulator.admin.assign_role("noroles", KV_ROLE, "contoso-kv", after_denials=2)
    assert assigned == {
        "identity": "noroles",
        "client_id": NOROLES,
        "role": KV_ROLE,
        "scope": "contoso-kv",
        "after_denials": 2,
    }
    for remaining in (2, 1):
        assert [r["pending_denials"] for r in emulator.admin.roles()] == [remaining]
        pending = kv_get(NOROLES)
        assert pending.status_code == 403
        assert pending.json() == before.json()  # exactly the answer without the role (ForbiddenByRbac)
    assert emulator.admin.roles()[0]["state"] == "active"
    for _ in range(2):
        granted = kv_get(NOROLES)
        assert granted.status_code == 200
        assert granted.json()["value"] == "fake-db-password-7Qx"


def test_an_arm_assignment_takes_effect_after_n_denials(emulator, list_secrets):
    before = list_secrets(USER, WS_LOCKED, "locked-conn")
    assert before.status_code == 403

    emulator.admin.assign_role(USER.upper(), ARM_ROLE, "ws-locked", after_denials=1)  # a client id, any case
    pending = list_secrets(USER, WS_LOCKED, "locked-conn")
    assert pending.status_code == 403
    assert pending.json() == before.json()  # AuthorizationFailed, as without the role
    granted = list_secrets(USER, WS_LOCKED, "locked-conn")
    assert granted.status_code == 200
    assert granted.json()["properties"]["credentials"] == {"key": "fake-locked-key"}


def test_after_denials_zero_takes_effect_at_once(emulator, kv_get, list_secrets):
    emulator.admin.assign_role("noroles", KV_ROLE, "restricted-kv")
    emulator.admin.assign_role("noroles", ARM_ROLE, "ws-main")
    assert kv_get(NOROLES, "https://restricted-kv.vault.azure.net", "other").json()["value"] == "fake-restricted-value"
    assert list_secrets(NOROLES).status_code == 200
    assert kv_get(NOROLES).status_code == 403  # only the scope assigned


def test_only_denials_by_that_identity_on_that_scope_count(emulator, https, kv_get, list_secrets):
    emulator.admin.assign_role("noroles", KV_ROLE, "contoso-kv", after_denials=1)
    assert kv_get(NOROLES, "https://restricted-kv.vault.azure.net", "other").status_code == 403  # another vault
    assert list_secrets(NOROLES).status_code == 403  # another service
    assert kv_get(USER, "https://restricted-kv.vault.azure.net", "other").status_code == 403  # another identity
    expired = emulator.admin.mint_token(NOROLES, KV_RESOURCE, -60)
    unauthenticated = https.get(f"{VAULT}/secrets/db-password", params=KV_API, headers=bearer(expired), timeout=10)
    assert unauthenticated.status_code == 401  # never reached the role check
    assert https.get(f"{VAULT}/secrets/db-password", params=KV_API, timeout=10).status_code == 401  # the challenge
    assert emulator.admin.roles()[0]["pending_denials"] == 1

    assert kv_get(NOROLES).status_code == 403  # the one denial
    assert kv_get(NOROLES).status_code == 200


def test_removing_a_fixture_role_denies_from_the_next_request(emulator, kv_get, list_secrets):
    assert kv_get(SYSTEM).status_code == 200
    emulator.admin.remove_role("system", KV_ROLE, "contoso-kv")
    emulator.admin.remove_role(SYSTEM, ARM_ROLE, "ws-main")

    denied = kv_get(SYSTEM)
    assert denied.status_code == 403
    assert denied.json()["error"]["innererror"]["code"] == "ForbiddenByRbac"
    assert list_secrets(SYSTEM).json()["error"]["code"] == "AuthorizationFailed"
    assert kv_get(SYSTEM, "https://contoso-kv-cn.vault.azure.cn", "cn-secret").status_code == 401  # wrong audience
    assert kv_get(USER).status_code == 200  # other identities keep theirs
    assert {(r["identity"], r["scope"], r["state"]) for r in emulator.admin.roles()} == {
        ("system", "contoso-kv", "removed"),
        ("system", "ws-main", "removed"),
    }

    emulator.admin.assign_role("system", KV_ROLE, "contoso-kv", after_denials=1)  # granted again, propagating
    assert kv_get(SYSTEM).status_code == 403
    assert kv_get(SYSTEM).status_code == 200


def test_removing_a_run_time_assignment(emulator, kv_get):
    emulator.admin.assign_role("noroles", KV_ROLE, "contoso-kv")
    assert kv_get(NOROLES).status_code == 200
    emulator.admin.remove_role("noroles", KV_ROLE, "contoso-kv")
    assert kv_get(NOROLES).status_code == 403
    with pytest.raises(AdminError, match=r": 400 .*has no role"):
        emulator.admin.remove_role("noroles", KV_ROLE, "contoso-kv")  # nothing left to remove


def test_reset_clears_assignments_and_removals(emulator, kv_get):
    emulator.admin.assign_role("noroles", KV_ROLE, "contoso-kv")
    emulator.admin.remove_role("user", KV_ROLE, "contoso-kv")
    assert kv_get(NOROLES).status_code == 200
    assert kv_get(USER).status_code == 403

    emulator.admin.reset()

    assert emulator.admin.roles() == []
    assert kv_get(NOROLES).status_code == 403
    assert kv_get(USER).status_code == 200


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda a: a.assign_role("nobody", KV_ROLE, "contoso-kv"), "no identity with client id or name 'nobody'"),
        (lambda a: a.assign_role("noroles", "Owner", "contoso-kv"), "role: must be one of"),
        (lambda a: a.assign_role("noroles", KV_ROLE, "ws-main"), "no vault named 'ws-main'"),
        (lambda a: a.assign_role("noroles", ARM_ROLE, "contoso-kv"), "no workspace named 'contoso-kv'"),
        (lambda a: a.assign_role("noroles", KV_ROLE, "Contoso-KV"), "no vault named"),  # names exact
        (lambda a: a.assign_role("noroles", KV_ROLE, "contoso-kv", after_denials=-1), "after_denials: must be"),
        (lambda a: a.assign_role("noroles", KV_ROLE, "contoso-kv", after_denials=True), "after_denials: must be"),
        (lambda a: a.assign_role("noroles", KV_ROLE, "contoso-kv", after_denials="2"), "after_denials: must be"),
        (lambda a: a.remove_role("noroles", KV_ROLE, "contoso-kv"), "has no role"),
        (lambda a: a.remove_role("system", ARM_ROLE, "ws-locked"), "has no role"),
    ],
)
def test_errors_are_400_and_change_nothing(emulator, kv_get, call, message):
    with pytest.raises(AdminError, match=r": 400 ") as raised:
        call(emulator.admin)
    assert message in str(raised.value), str(raised.value)
    assert emulator.admin.roles() == []
    assert kv_get(NOROLES).status_code == 403
    assert kv_get(SYSTEM).status_code == 200


def test_malformed_bodies_are_400(emulator):
    json_type = {"Content_Type": "application/json"}
    for method, body in [
        ("POST", ["noroles"]),
        ("POST", {"identity": "noroles", "role": KV_ROLE}),
        ("POST", {"identity": "noroles", "role": KV_ROLE, "scope": "contoso-kv", "after": 1}),
        ("DELETE", {"identity": "noroles", "role": KV_ROLE, "scope": "contoso-kv", "after_denials": 1}),
        ("DELETE", None),
    ]:
        status, payload = admin_call(emulator, method, "roles", body, **json_type)
        assert status == 400, (method, body)
        assert "error" in payload
    assert emulator.admin.roles() == []


@pytest.mark.parametrize(
    ("method", "body"),
    [
        ("POST", {"identity": "noroles", "role": KV_ROLE, "scope": "contoso-kv"}),
        ("DELETE", {"identity": "system", "role": KV_ROLE, "scope": "contoso-kv"}),
    ],
)
def test_guard_protects_the_role_routes(emulator, kv_get, method, body):
    for content_type in (None, "text/plain"):
        headers = {} if content_type is None else {"Content_Type": content_type}
        status, _ = admin_call(emulator, method, "roles", body, **headers)
        assert status == 415
    json_type = {"Content_Type": "application/json"}
    assert admin_call(emulator, method, "roles", body, Origin="http://evil.example", **json_type)[0] == 403
    port = urlsplit(emulator.http_url).port
    assert admin_call(emulator, method, "roles", body, Host=f"evil.example:{port}", **json_type)[0] == 403
    assert emulator.admin.roles() == []
    assert kv_get(NOROLES).status_code == 403 and kv_get(SYSTEM).status_code == 200
    assert admin_call(emulator, method, "roles", body, **json_type)[0] == 200  # the same request, allowed
