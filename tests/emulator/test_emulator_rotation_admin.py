"""Admin routes for rotation tests: new secret versions, deleted secrets, updated connections.

Real HTTP against the emulator process: changes through `AdminClient`, reads through Key Vault and
ARM over verified TLS with IMDS tokens.
"""

from __future__ import annotations

import json
import re
import time
from typing import Any
from urllib.parse import urlsplit

import pytest
from azure_emulator.admin import AdminError
from emu_helpers import ARM, ARM_API, ARM_RESOURCE, KV_API, KV_RESOURCE, VAULT, WS_MAIN, admin_call, bearer

HEX32 = re.compile(r"[0-9a-f]{32}")
OPENAI_VERSIONS = {
    "00000000000000000000000000000a01": "fake-openai-key-v1",
    "00000000000000000000000000000a02": "fake-openai-key-v2",
    "00000000000000000000000000000a03": "fake-openai-key-v3",
}
NEW_ID = "0123456789abcdef0123456789abcdef"


@pytest.fixture
def kv_get(https, token):
    """kv_get(name, version=None, vault=VAULT): the Key Vault response for Get Secret."""
    kv_token = token(KV_RESOURCE)

    def get(name: str, version: str | None = None, vault: str = VAULT):
        path = f"/secrets/{name}" + (f"/{version}" if version else "")
        return https.get(vault + path, params=KV_API, headers=bearer(kv_token), timeout=10)

    return get


@pytest.fixture
def list_secrets(https, token):
    """list_secrets(connection): the properties List Secrets returns for a ws-main connection."""
    arm_token = token(ARM_RESOURCE)

    def post(connection: str) -> dict[str, Any]:
        response = https.post(
            f"{ARM}{WS_MAIN}/connections/{connection}/listsecrets",
            params=ARM_API,
            headers=bearer(arm_token),
            timeout=10,
        )
        assert response.status_code == 200, response.text
        return response.json()["properties"]

    return post


def version_of(response) -> str:
    return response.json()["id"].rsplit("/", 1)[1]


def test_new_version_of_a_shorthand_secret(emulator, kv_get):
    before = kv_get("db-password")
    assert before.status_code == 200
    old_id = version_of(before)

    new_id = emulator.admin.add_version("contoso-kv", "db-password", "fake-db-password-rotated")

    latest = kv_get("db-password")
    assert latest.status_code == 200
    assert latest.json()["value"] == "fake-db-password-rotated"
    assert latest.json()["id"] == f"{VAULT}/secrets/db-password/{new_id}"
    assert latest.json()["attributes"]["created"] >= before.json()["attributes"]["created"]
    old = kv_get("db-password", old_id)  # the shorthand's derived id still names the old version
    assert old.status_code == 200
    assert old.json()["value"] == "fake-db-password-7Qx"
    assert old.json()["id"] == before.json()["id"]
    assert kv_get("db-password", new_id).json()["value"] == "fake-db-password-rotated"


def test_new_version_of_a_versions_list_secret(emulator, kv_get):
    returned = emulator.admin.add_version(
        "contoso-kv", "openai-key", "fake-openai-key-v4", id=NEW_ID, contentType="text/plain", tags={"rotation": "4"}
    )
    assert returned == NEW_ID

    latest = kv_get("openai-key").json()
    assert latest["value"] == "fake-openai-key-v4"
    assert latest["id"] == f"{VAULT}/secrets/openai-key/{NEW_ID}"
    assert latest["contentType"] == "text/plain"
    assert latest["tags"] == {"rotation": "4"}
    assert abs(latest["attributes"]["created"] - time.time()) < 60  # created now, as Set Secret
    for version, value in OPENAI_VERSIONS.items():
        assert kv_get("openai-key", version).json()["value"] == value


def test_generated_ids_are_fresh_and_the_last_added_is_the_latest(emulator, kv_get):
    first = emulator.admin.add_version("contoso-kv", "openai-key", "fake-rotated-1")
    second = emulator.admin.add_version("contoso-kv", "openai-key", "fake-rotated-2")
    assert HEX32.fullmatch(first) and HEX32.fullmatch(second)
    assert first != second and not {first, second} & set(OPENAI_VERSIONS)
    assert kv_get("openai-key").json()["value"] == "fake-rotated-2"  # same second: the one added last
    assert kv_get("openai-key", first).json()["value"] == "fake-rotated-1"


def test_add_version_creates_a_missing_secret_and_matches_names_ignoring_case(emulator, kv_get):
    assert kv_get("brand-new").status_code == 404
    version = emulator.admin.add_version("contoso-kv", "brand-new", "fake-brand-new")
    response = kv_get("brand-new")
    assert response.status_code == 200
    assert version_of(response) == version

    emulator.admin.add_version("contoso-kv", "DB-PASSWORD", "fake-upper")  # Key Vault names ignore case
    assert kv_get("db-password").json()["value"] == "fake-upper"


def test_new_version_is_the_latest_even_if_the_fixture_dates_one_later(emulator, kv_get):
    emulator.admin.load(
        {"vaults": {"contoso-kv": {"secrets": {"dated": {"value": "fake-dated", "created": "2099-01-01T00:00:00Z"}}}}}
    )
    version = emulator.admin.add_version("contoso-kv", "dated", "fake-after")
    latest = kv_get("dated").json()
    assert latest["id"].endswith("/" + version)
    assert latest["value"] == "fake-after"
    assert latest["attributes"]["created"] == 4070908800  # not before the fixture's latest


def test_a_disabled_new_version_is_the_latest_too(emulator, kv_get):
    emulator.admin.add_version("contoso-kv", "db-password", "fake-disabled-rotation", enabled=False)
    response = kv_get("db-password")
    assert response.status_code == 403
    assert response.json()["error"]["innererror"]["code"] == "SecretDisabled"


def test_deleted_secret_answers_as_an_unknown_name(emulator, kv_get):
    emulator.admin.delete_secret("contoso-kv", "openai-key")
    never = kv_get("never-existed")
    for response, name in [
        (kv_get("openai-key"), "openai-key"),
        (kv_get("openai-key", "00000000000000000000000000000a01"), "openai-key/00000000000000000000000000000a01"),
    ]:
        assert response.status_code == never.status_code == 404
        assert response.json()["error"]["code"] == "SecretNotFound"
        assert response.json() == json.loads(json.dumps(never.json()).replace("never-existed", name))
    assert kv_get("db-password").status_code == 200  # other secrets untouched

    emulator.admin.delete_secret("contoso-kv", "DB-Password")  # names ignore case
    assert kv_get("db-password").json()["error"]["code"] == "SecretNotFound"


def test_a_deleted_secret_can_be_set_again(emulator, kv_get):
    emulator.admin.delete_secret("contoso-kv", "db-password")
    version = emulator.admin.add_version("contoso-kv", "db-password", "fake-again")
    response = kv_get("db-password")
    assert response.json()["value"] == "fake-again"
    assert version_of(response) == version


def test_update_connection_replaces_credentials_as_a_whole(emulator, list_secrets):
    before = list_secrets("custom-conn")
    emulator.admin.update_connection("ws-main", "custom-conn", {"credentials": {"keys": {"API_KEY": "fake-new"}}})
    after = list_secrets("custom-conn")
    assert after["credentials"] == {"keys": {"API_KEY": "fake-new"}}  # OTHER_KEY is gone
    assert {k: v for k, v in after.items() if k != "credentials"} == {
        k: v for k, v in before.items() if k != "credentials"
    }


def test_update_connection_other_fields(emulator, list_secrets):
    emulator.admin.update_connection(
        "ws-main", "AOAI-CONN", {"target": "https://rotated.openai.azure.com/", "metadata": {"ApiType": "azure"}}
    )
    properties = list_secrets("aoai-conn")
    assert properties["target"] == "https://rotated.openai.azure.com/"
    assert properties["metadata"] == {"ApiType": "azure"}
    assert properties["credentials"] == {"key": "fake-aoai-key-123"}


def test_reset_undoes_versions_deletions_and_connection_updates(emulator, kv_get, list_secrets):
    new_id = emulator.admin.add_version("contoso-kv", "openai-key", "fake-openai-key-v4")
    emulator.admin.add_version("contoso-kv", "brand-new", "fake-brand-new")
    emulator.admin.delete_secret("contoso-kv", "db-password")
    emulator.admin.update_connection("ws-main", "custom-conn", {"credentials": {"keys": {"API_KEY": "fake-new"}}})

    emulator.admin.reset()

    assert kv_get("openai-key").json()["value"] == "fake-openai-key-v3"
    assert kv_get("openai-key", new_id).status_code == 404
    assert kv_get("brand-new").status_code == 404
    assert kv_get("db-password").json()["value"] == "fake-db-password-7Qx"
    assert list_secrets("custom-conn")["credentials"] == {
        "keys": {"API_KEY": "fake-custom-api-key", "OTHER_KEY": "fake-custom-other"}
    }


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda admin: admin.add_version("no-such-kv", "s", "fake"), "no vault named 'no-such-kv'"),
        (lambda admin: admin.add_version("contoso-kv", "s", "fake", id="XYZ"), r"\.id: must be 32 lowercase hex"),
        (lambda admin: admin.add_version("contoso-kv", "s", "fake", id=NEW_ID.upper()), "32 lowercase hex"),
        (lambda admin: admin.add_version("contoso-kv", "s", "fake", id=NEW_ID[:31]), "32 lowercase hex"),
        (
            lambda admin: admin.add_version("contoso-kv", "openai-key", "fake", id="00000000000000000000000000000a02"),
            "used twice",
        ),
        (lambda admin: admin.add_version("contoso-kv", "openai-key", ""), r"\.value: required"),
        (lambda admin: admin.add_version("contoso-kv", "bad_name!", "fake"), "a secret name is"),
        (lambda admin: admin.add_version("contoso-kv", "s", "fake", created=0), "unknown keys"),
        (lambda admin: admin.add_version("contoso-kv", "s", "fake", tags={"n": 1}), "tags: must be a mapping"),
        (lambda admin: admin.delete_secret("no-such-kv", "db-password"), "no vault named"),
        (lambda admin: admin.delete_secret("contoso-kv", "no-such-secret"), "no secret named 'no-such-secret'"),
        (lambda admin: admin.update_connection("no-such-ws", "aoai-conn", {"target": "x"}), "no workspace named"),
        (lambda admin: admin.update_connection("ws-main", "no-such-conn", {"target": "x"}), "no connection named"),
        (lambda admin: admin.update_connection("ws-main", "aoai-conn", {"targt": "x"}), "unknown keys"),
        (lambda admin: admin.update_connection("ws-main", "aoai-conn", {}), "non-empty JSON object"),
        (lambda admin: admin.update_connection("ws-main", "aoai-conn", {"credentials": "x"}), "must be a mapping"),
        (
            lambda admin: admin.update_connection("ws-main", "custom-conn", {"credentials": {"key": "fake"}}),
            r"credentials\.keys: a CustomKeys connection needs",
        ),
        (lambda admin: admin.update_connection("ws-main", "aoai-conn", {"authType": "Nope"}), "authType: must be"),
    ],
)
def test_errors_are_400_and_change_nothing(emulator, kv_get, list_secrets, call, message):
    with pytest.raises(AdminError, match=r": 400 ") as raised:
        call(emulator.admin)
    assert re.search(message, str(raised.value)), str(raised.value)
    assert kv_get("openai-key").json()["value"] == "fake-openai-key-v3"
    assert kv_get("s").status_code == 404
    assert list_secrets("aoai-conn")["target"] == "https://contoso-aoai.openai.azure.com/"
    assert list_secrets("custom-conn")["credentials"]["keys"]["OTHER_KEY"] == "fake-custom-other"


def test_missing_value_and_non_object_bodies_are_400(emulator, kv_get):
    route = "vaults/contoso-kv/secrets/s/versions"
    for body in [{"id": NEW_ID}, ["fake"], None]:
        status, payload = admin_call(emulator, "POST", route, body, Content_Type="application/json")
        assert status == 400, body
        assert "error" in payload
    status, _ = admin_call(
        emulator, "PATCH", "workspaces/ws-main/connections/aoai-conn", ["x"], Content_Type="application/json"
    )
    assert status == 400
    assert kv_get("s").status_code == 404


NEW_ROUTES = [
    ("POST", "vaults/contoso-kv/secrets/db-password/versions", {"value": "fake-csrf"}),
    ("DELETE", "vaults/contoso-kv/secrets/db-password", None),
    ("PATCH", "workspaces/ws-main/connections/custom-conn", {"credentials": {"keys": {"API_KEY": "fake-csrf"}}}),
]


@pytest.mark.parametrize(("method", "route", "body"), NEW_ROUTES)
@pytest.mark.parametrize("content_type", [None, "text/plain", "application/x-www-form-urlencoded"])
def test_guard_refuses_non_json_content_types_on_the_new_routes(
    emulator, kv_get, list_secrets, method, route, body, content_type
):
    headers = {} if content_type is None else {"Content_Type": content_type}
    status, payload = admin_call(emulator, method, route, body, **headers)
    assert status == 415
    assert "application/json" in payload["error"]
    assert kv_get("db-password").json()["value"] == "fake-db-password-7Qx"
    assert "OTHER_KEY" in list_secrets("custom-conn")["credentials"]["keys"]


@pytest.mark.parametrize(("method", "route", "body"), NEW_ROUTES)
def test_guard_refuses_web_pages_and_foreign_hosts_on_the_new_routes(emulator, kv_get, method, route, body):
    json_type = {"Content_Type": "application/json"}
    status, _ = admin_call(emulator, method, route, body, Origin="http://evil.example", **json_type)
    assert status == 403
    port = urlsplit(emulator.http_url).port
    status, _ = admin_call(emulator, method, route, body, Host=f"evil.example:{port}", **json_type)
    assert status == 403
    assert kv_get("db-password").json()["value"] == "fake-db-password-7Qx"
    status, _ = admin_call(emulator, method, route, body, **json_type)  # the same request, allowed
    assert status == 200


def test_wrong_methods_on_the_new_paths_are_404(emulator):
    for method, route in [
        ("GET", "vaults/contoso-kv/secrets/db-password/versions"),
        ("PUT", "vaults/contoso-kv/secrets/db-password"),
        ("POST", "workspaces/ws-main/connections/custom-conn"),
    ]:
        status, payload = admin_call(emulator, method, route, {}, Content_Type="application/json")
        assert status == 404, (method, route)
        assert "no admin route" in payload["error"]
