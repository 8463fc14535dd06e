"""Every connection auth type the emulator knows resolves through credentials/<name>, target and the whole
connection (field names: the REST models, see docker/emulator/README.md "Fixture")."""

from __future__ import annotations

import json

import pytest
from azure_emulator.fixture import DEFAULT_FIXTURE, read_raw

CONNECTIONS = read_raw(DEFAULT_FIXTURE)["workspaces"]["ws-main"]["connections"]
WITH_CREDENTIALS = [
    (name, field)
    for name in ("sp-conn", "sas-conn", "pat-conn", "accountkey-conn", "accesskey-conn", "mi-conn", "userpass-conn")
    for field in CONNECTIONS[name]["credentials"]
]


def test_the_fixture_has_every_auth_type():
    auth_types = {connection["authType"] for connection in CONNECTIONS.values()}
    expected = {"ServicePrincipal", "UsernamePassword", "SAS", "PAT", "AccountKey", "AccessKey"}
    assert expected | {"ManagedIdentity", "AAD", "None", "ApiKey", "CustomKeys"} <= auth_types


@pytest.mark.parametrize(("connection", "field"), WITH_CREDENTIALS)
def test_each_credential_of_each_auth_type_resolves(run_sidecar, connection, field):
    run = run_sidecar({"VALUE": f"azureml://connections/{connection}/credentials/{field}"})
    assert run.returncode == 0, run.stderr
    assert run.child_env["VALUE"] == CONNECTIONS[connection]["credentials"][field]


@pytest.mark.parametrize("connection", ["aad-conn", "none-conn"])
def test_a_connection_without_credentials_gives_its_target_and_names_what_it_lacks(run_sidecar, connection):
    run = run_sidecar(
        {
            "TARGET": f"azureml://connections/{connection}/target",
            "WHOLE": f"azureml://connections/{connection}",
        }
    )
    assert run.returncode == 0, run.stderr
    assert run.child_env["TARGET"] == CONNECTIONS[connection]["target"]
    whole = json.loads(run.child_env["WHOLE"])
    assert whole["properties"]["authType"] == CONNECTIONS[connection]["authType"]
    assert "credentials" not in whole["properties"]

    missing = run_sidecar({"KEY": f"azureml://connections/{connection}/credentials/key"})
    failure = missing.failure_for("KEY")
    assert missing.returncode == 66 and "it has: none" in failure["error"], missing.stderr
