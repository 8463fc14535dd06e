"""Fixture validation and secret_values, without a process."""

from __future__ import annotations

import copy

import pytest
from azure_emulator.fixture import DEFAULT_FIXTURE, FixtureError, build, merge, read_raw, secret_values


@pytest.fixture
def raw():
    return copy.deepcopy(read_raw(DEFAULT_FIXTURE))


def test_default_fixture_builds(raw):
    fixture = build(raw)
    assert fixture.default_identity.name == "system"
    assert fixture.vaults["contoso-kv"].secrets["openai-key"].latest.value == "fake-openai-key-v3"
    assert fixture.vaults_by_host["contoso-kv-gov.vault.usgovcloudapi.net"].cloud.name == "usgov"
    assert fixture.throttle.limit == 4000 and fixture.throttle.window_s == 10


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda r: r.pop("tenant_id"), r"fixture\.tenant_id: required"),
        (lambda r: r["vaults"]["contoso-kv"].update(cloud="mars"), r"vaults\.contoso-kv\.cloud: must be one of"),
        (
            lambda r: r["vaults"]["contoso-kv"]["secrets"]["openai-key"]["versions"][0].update(id="ABC"),
            r"openai-key\.versions\[0\]\.id: must be 32 lowercase hex",
        ),
        (lambda r: r["identities"]["user"].update(default=True), "only one may be the default"),
        (
            lambda r: r["identities"]["user"]["roles"]["Key Vault Secrets User"].append("nope-kv"),
            r"identities\.user\.roles\.Key Vault Secrets User: 'nope-kv' is not defined",
        ),
        (
            lambda r: r["workspaces"]["ws-main"]["connections"]["custom-conn"]["credentials"].pop("keys"),
            "CustomKeys connection needs a mapping of keys",
        ),
        (
            lambda r: r["workspaces"]["ws-main"]["connections"]["aad-conn"].update(credentials={"key": "fake-x"}),
            r"aad-conn\.credentials: authType AAD has no credentials",
        ),
        (
            lambda r: r["workspaces"]["ws-main"]["connections"]["none-conn"].update(credentials={"pat": "fake-x"}),
            r"none-conn\.credentials: authType None has no credentials",
        ),
        (
            lambda r: r["workspaces"]["ws-main"]["connections"]["sp-conn"]["credentials"].update(secret="fake-x"),
            r"sp-conn\.credentials: \['secret'\] not in the ServicePrincipal credentials model",
        ),
        (
            lambda r: r["workspaces"]["ws-main"]["connections"]["userpass-conn"]["credentials"].update(token="x"),
            r"\['token'\] not in the UsernamePassword credentials model; allowed: \['password', 'securityToken'",
        ),
        (
            lambda r: r["workspaces"]["ws-main"]["connections"]["sas-conn"]["credentials"].update(sas=1),
            r"sas-conn\.credentials\.sas: must be a string",
        ),
        (lambda r: r["faults"].append({"kind": "imds"}), r"faults\[0\]: a fault needs"),
        (lambda r: r.update(throttle={"limit": 0}), "throttle: limit must be a positive integer"),
        (lambda r: r.update(surprise=1), r"unknown keys \['surprise'\]"),
    ],
)
def test_validation_names_the_bad_entry(raw, change, message):
    change(raw)
    with pytest.raises(FixtureError, match=message):
        build(raw)


def test_secret_values_covers_secrets_credentials_keys_and_msi_secret():
    values = secret_values(DEFAULT_FIXTURE)
    expected = {
        "fake-openai-key-v1",
        "fake-openai-key-v3",
        "fake-db-password-7Qx",
        "fake-disabled-value",
        "fake\x00nul",
        "fake-line-1\nfake-line-2",
        "fake-restricted-value",
        "fake-gov-value",
        "fake-aoai-key-123",
        "fake-custom-api-key",
        "fake-custom-other",
        "fake-userpass-pw",
        "fake-locked-key",
        "fake-msi-secret-for-emulator",
        "fake-sp-client-secret",
        "fake-sas-token",
        "fake-pat-token",
        "fake-account-key",
        "fake-secret-access-key",
    }
    assert expected <= values
    assert "https://contoso-aoai.openai.azure.com/" not in values  # targets are not secret


def test_latest_is_the_newest_created_not_the_last_listed(raw):
    raw["vaults"]["contoso-kv"]["secrets"]["rotated"] = {
        "versions": [
            {"id": "b" * 32, "value": "fake-new", "created": "2025-06-01T00:00:00Z"},
            {"id": "a" * 32, "value": "fake-old", "created": "2025-01-01T00:00:00Z"},
        ]
    }
    assert build(raw).vaults["contoso-kv"].secrets["rotated"].latest.value == "fake-new"


def test_merge_adds_to_mappings_and_replaces_lists(raw):
    merged = merge(raw, {"identities": {"user": {"roles": {"Key Vault Secrets User": ["restricted-kv"]}}}})
    user = build(merged).identities["22222222-2222-4222-8222-222222222222"]
    assert user.vaults == {"restricted-kv"}
    assert user.workspaces == {"ws-main"}  # the other role is untouched
    assert raw["identities"]["user"]["roles"]["Key Vault Secrets User"] == ["contoso-kv"]  # no aliasing


def test_new_auth_type_connections_have_the_rest_model_shape(raw):
    connections = build(raw).workspaces["ws-main"].connections
    expected = {
        "sp-conn": ("ServicePrincipal", {"clientId", "clientSecret", "tenantId"}),
        "sas-conn": ("SAS", {"sas"}),
        "pat-conn": ("PAT", {"pat"}),
        "accountkey-conn": ("AccountKey", {"key"}),
        "accesskey-conn": ("AccessKey", {"accessKeyId", "secretAccessKey"}),
        "mi-conn": ("ManagedIdentity", {"clientId", "resourceId"}),
    }
    for name, (auth_type, fields) in expected.items():
        properties = connections[name].properties
        assert properties["authType"] == auth_type
        assert set(properties["credentials"]) == fields
        assert all(value.startswith("fake-") for value in properties["credentials"].values())
    for name, auth_type in (("aad-conn", "AAD"), ("none-conn", "None")):
        assert connections[name].properties["authType"] == auth_type
        assert "credentials" not in connections[name].properties
    assert set(connections["userpass-conn"].properties["credentials"]) == {"username", "password"}


def test_an_empty_credentials_mapping_is_allowed_for_none_and_aad(raw):
    raw["workspaces"]["ws-main"]["connections"]["aad-conn"]["credentials"] = {}
    raw["workspaces"]["ws-main"]["connections"]["none-conn"]["credentials"] = None
    connections = build(raw).workspaces["ws-main"].connections
    assert "credentials" not in connections["aad-conn"].properties
    assert "credentials" not in connections["none-conn"].properties
