"""Workload identity (Kubernetes) against the emulator's Entra token endpoint, over TLS through SIDECAR_CONNECT_TO:
only the variables the webhook injects, a service-account token file, the real sidecar and azure-identity.

Every run's output is checked for the fixture's values, every emulator token and the assertions written here.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
from azure_emulator.launcher import EmulatorProcess
from sidecar_helpers import USER_ID, kv
from supervise_helpers import supervised

WORKLOAD_ID = "77777777-7777-4777-8777-777777777777"
ISSUER = (
    "https://eastus.oic.prod-aks.azure.com/72f988bf-86f1-41af-91ab-2d7cd011db47/00000000-0000-4000-8000-0000000000c1/"
)
SUBJECT = "system:serviceaccount:default:scoring"
KV_RESOURCE = "https://vault.azure.net"
ARM_RESOURCE = "https://management.azure.com"
REFERENCES = {"DB_PASSWORD": kv("db-password"), "AOAI_KEY": "azureml://connections/aoai-conn/credentials/key"}


def write_token(emulator, path: Path, **overrides) -> dict:
    """A service-account token from the emulator (the cluster's OIDC issuer), written as kubelet would."""
    minted = emulator.admin.mint_assertion(**{"issuer": ISSUER, "subject": SUBJECT, "expires_in": 3600, **overrides})
    temporary = path.with_name(path.name + ".new")
    temporary.write_text(minted["assertion"])
    os.replace(temporary, path)  # atomic, as kubelet's atomic writer swaps the projected volume
    return minted


@pytest.fixture
def token_file(emulator, tmp_path) -> tuple[Path, list[str]]:
    """The token file and the assertions written to it (secrets for the leak check)."""
    path = tmp_path / "azure-identity-token"
    return path, [write_token(emulator, path)["assertion"]]


def workload_env(token: Path, **extra: str) -> dict[str, str]:
    # What the webhook injects besides AZURE_AUTHORITY_HOST and AZURE_TENANT_ID (emulator.env("workload")).
    return {"AZURE_CLIENT_ID": WORKLOAD_ID, "AZURE_FEDERATED_TOKEN_FILE": str(token), **REFERENCES, **extra}


def entra_requests(emulator) -> list[dict]:
    return emulator.admin.requests(kind="entra")


@pytest.mark.parametrize("command", ["exec", "check"])
def test_only_the_webhook_variables_resolve_key_vault_and_connections(run_sidecar, emulator, token_file, command):
    token, assertions = token_file
    run = run_sidecar(workload_env(token), flavour="workload", command=command, extra_secret_values=assertions)
    assert run.returncode == 0, run.stderr
    if command == "exec":
        assert run.child_env["DB_PASSWORD"] == "fake-db-password-7Qx"
        assert run.child_env["AOAI_KEY"] == "fake-aoai-key-123"
    [identity] = [event for event in run.events if event.get("event") == "identity"]
    assert identity["flavour"] == "workload_identity"
    assert (identity["client_id"], identity["client_id_source"]) == (WORKLOAD_ID, "AZURE_CLIENT_ID")
    assert identity["endpoint"] == "https://login.microsoftonline.com"
    # One token per audience, for AZURE_CLIENT_ID, from Entra alone (no IMDS, no Azure ML endpoint).
    counters = emulator.admin.counters()
    assert counters["token_requests"] == {WORKLOAD_ID: {KV_RESOURCE: {"200": 1}, ARM_RESOURCE: {"200": 1}}}
    assert set(counters["by_kind"]) == {"entra", "keyvault", "arm"}
    assert any(e.get("event") == "connect_to" and e["host"] == "login.microsoftonline.com" for e in run.events)


def test_sidecar_client_id_wins_over_azure_client_id(run_sidecar, emulator, token_file):
    token, assertions = token_file
    env = workload_env(token, AZURE_CLIENT_ID=USER_ID, SIDECAR_CLIENT_ID=WORKLOAD_ID)
    run = run_sidecar(env, flavour="workload", extra_secret_values=assertions)
    assert run.returncode == 0, run.stderr
    [identity] = [event for event in run.events if event.get("event") == "identity"]
    assert (identity["client_id"], identity["client_id_source"]) == (WORKLOAD_ID, "SIDECAR_CLIENT_ID")
    assert {entry["client_id"] for entry in entra_requests(emulator)} == {WORKLOAD_ID}


def test_without_azure_authority_host_it_is_not_workload_identity_and_says_so(run_sidecar, emulator, token_file):
    token, assertions = token_file
    env = {**workload_env(token), "AZURE_TENANT_ID": "72f988bf-86f1-41af-91ab-2d7cd011db47"}
    env.pop("AOAI_KEY")
    # flavour imds: the emulator's IMDS, which azure-identity falls back to, as it would on a node.
    run = run_sidecar(env, flavour="imds", extra_secret_values=assertions)
    [warning] = [event for event in run.events if event.get("event") == "workload identity not selected"]
    assert warning["missing"] == ["AZURE_AUTHORITY_HOST"] and warning["flavour"] == "imds"
    assert entra_requests(emulator) == []


def _failure(run, variable: str = "DB_PASSWORD") -> dict:
    return run.failure_for(variable)


@pytest.mark.parametrize(
    ("overrides", "code", "fix_words"),
    [
        ({"subject": "system:serviceaccount:default:other"}, "AADSTS700213", "federated credential"),
        ({"issuer": "https://oidc.example.invalid/"}, "AADSTS700211", "oidcIssuerProfile.issuerUrl"),
        ({"expires_in": -120}, "AADSTS700024", "kubelet renews"),
    ],
)
def test_an_assertion_entra_rejects_fails_with_78_and_the_fix(
    run_sidecar, emulator, tmp_path, overrides, code, fix_words
):
    token = tmp_path / "token"
    assertion = write_token(emulator, token, **overrides)["assertion"]
    run = run_sidecar(workload_env(token), flavour="workload", extra_secret_values=[assertion])
    assert run.returncode == 78
    failure = _failure(run)
    assert code in failure["error"] and WORKLOAD_ID in failure["error"] and "AZURE_CLIENT_ID" in failure["error"]
    assert fix_words in failure["fix"]
    assert "azure.workload.identity" in failure["fix"] or code == "AADSTS700024"
    # Refused: one request per audience, never retried.
    assert len(entra_requests(emulator)) == 2


def test_an_identity_entra_does_not_know_fails_with_78(run_sidecar, emulator, token_file):
    token, assertions = token_file
    unknown = "55555555-5555-4555-8555-555555555555"
    run = run_sidecar(workload_env(token, AZURE_CLIENT_ID=unknown), flavour="workload", extra_secret_values=assertions)
    assert run.returncode == 78
    assert "AADSTS700016" in _failure(run)["error"] and "azure.workload.identity/client-id" in _failure(run)["fix"]


@pytest.mark.parametrize(
    ("make_token", "words"),
    [
        (lambda path: path / "missing", "cannot be read: No such file or directory"),
        (lambda path: path, "cannot be read: Is a directory"),
        (lambda path: (path / "empty").write_text("") or path / "empty", "is empty"),
    ],
)
def test_a_missing_or_unreadable_token_file_fails_with_78_before_any_request(
    run_sidecar, emulator, tmp_path, make_token, words
):
    run = run_sidecar(workload_env(make_token(tmp_path)), flavour="workload")
    assert run.returncode == 78
    failure = _failure(run)
    assert failure["error"].startswith("AZURE_FEDERATED_TOKEN_FILE=") and words in failure["error"]
    assert "azure.workload.identity/use" in failure["fix"] or "/var/run/secrets/azure/tokens" in failure["fix"]
    assert entra_requests(emulator) == []


@pytest.mark.parametrize(
    "authority",
    [
        "https://login.example.com/",  # not a Microsoft authority: it would collect the assertion
        "http://login.microsoftonline.com/",  # not TLS
        "https://login.microsoftonline.com:8443/",  # another port
        "https://login.microsoftonline.com/other-tenant/",  # a path
        "https://127.0.0.1:9/",  # loopback, but no SIDECAR_CONNECT_TO rule sends it there
    ],
)
def test_an_authority_host_outside_the_known_clouds_is_refused_with_78(run_sidecar, emulator, token_file, authority):
    token, assertions = token_file
    env = workload_env(token, AZURE_AUTHORITY_HOST=authority)
    run = run_sidecar(env, flavour="workload", extra_secret_values=assertions)
    assert run.returncode == 78
    failure = _failure(run)
    assert failure["error"].startswith("AZURE_AUTHORITY_HOST=") and "login.microsoftonline.com" in failure["error"]
    # No token request anywhere; only Key Vault's unauthenticated challenge request went out.
    assert entra_requests(emulator) == []
    assert all(entry["status"] == 401 and entry["client_id"] is None for entry in emulator.admin.requests())


@pytest.mark.parametrize("authority", ["login.chinacloudapi.cn", "https://login.microsoftonline.us/"])
def test_the_other_clouds_authorities_are_accepted(run_sidecar, emulator, token_file, authority):
    token, assertions = token_file
    env = workload_env(token, AZURE_AUTHORITY_HOST=authority)
    env.pop("AOAI_KEY")
    run = run_sidecar(env, flavour="workload", extra_secret_values=assertions)
    assert run.returncode == 0, run.stderr
    host = authority.removeprefix("https://").rstrip("/")
    assert [entry["host"] for entry in entra_requests(emulator)] == [host]


def test_a_host_connect_to_sends_to_loopback_is_an_accepted_authority(run_sidecar, emulator, token_file):
    token, assertions = token_file
    # An authority the emulator serves, under a name of its own, routed to loopback by SIDECAR_CONNECT_TO.
    connect_to = f"{emulator.connect_to},login.microsoftonline.com:8443:127.0.0.1:{emulator.https_port}"
    env = workload_env(
        token, AZURE_AUTHORITY_HOST="https://login.microsoftonline.com:8443", SIDECAR_CONNECT_TO=connect_to
    )
    env.pop("AOAI_KEY")
    run = run_sidecar(env, flavour="workload", extra_secret_values=assertions)
    assert run.returncode == 0, run.stderr


def test_an_unreachable_authority_fails_with_69_after_the_retries(run_sidecar, emulator, token_file):
    token, assertions = token_file
    emulator.admin.add_fault({"kind": "entra", "status": 503, "count": 100})
    env = workload_env(token, SIDECAR_MAX_ATTEMPTS="2")
    env.pop("AOAI_KEY")
    run = run_sidecar(env, flavour="workload", extra_secret_values=assertions)
    assert run.returncode == 69
    failure = _failure(run)
    assert "HTTP 503" in failure["error"] and "2 attempt(s)" in failure["error"]
    assert "login.microsoftonline.com" in failure["fix"] and "SIDECAR_TIMEOUT" in failure["fix"]
    assert len(entra_requests(emulator)) == 2


def test_a_closed_authority_port_fails_with_69(run_sidecar, emulator, token_file):
    token, assertions = token_file
    env = workload_env(
        token,
        # The first matching rule wins: the login host goes to a port where nothing listens.
        SIDECAR_CONNECT_TO=f"login.microsoftonline.com:443:127.0.0.1:9,{emulator.connect_to}",
        SIDECAR_MAX_ATTEMPTS="1",
    )
    env.pop("AOAI_KEY")
    run = run_sidecar(env, flavour="workload", extra_secret_values=assertions)
    assert run.returncode == 69, run.stderr
    assert "could not get a token" in _failure(run)["error"]


def test_a_missing_role_names_the_workload_identity(run_sidecar, emulator, token_file):
    token, assertions = token_file
    env = workload_env(token, DB_PASSWORD=kv("other", vault="https://restricted-kv.vault.azure.net"))
    env.pop("AOAI_KEY")
    run = run_sidecar(env, flavour="workload", extra_secret_values=assertions)
    assert run.returncode == 77
    assert WORKLOAD_ID in _failure(run)["error"]


@pytest.fixture
def short_lived_tokens(tmp_path) -> EmulatorProcess:
    """An emulator whose access tokens live 60 s: less than the margin a carried token needs, so that every
    refresh round asks Entra again, and so reads the token file again."""
    fixture = tmp_path / "fixture.yaml"
    default = Path(__file__).resolve().parents[2] / "docker" / "emulator" / "fixture.yaml"
    fixture.write_text(default.read_text().replace("token_lifetime_s: 3600", "token_lifetime_s: 60"))
    with EmulatorProcess(fixture) as process:
        yield process


def test_a_rotated_token_file_is_read_again(short_lived_tokens, tmp_path, shm_dir, fixture_secret_values):
    emulator = short_lived_tokens
    token = tmp_path / "azure-identity-token"
    first = write_token(emulator, token, expires_in=3000)
    env = {**emulator.env("workload"), **workload_env(token)}
    env.pop("AOAI_KEY")
    values = shm_dir / "values"
    args = ("--watch", "--dir", str(values))
    secrets = [*fixture_secret_values, first["assertion"]]
    with supervised(emulator, tmp_path, secrets, env, command="render", args=args) as run:

        def sent(minted: dict) -> bool:
            return any(e["assertion_expires_on"] == minted["expires_on"] for e in entra_requests(emulator))

        run.wait_for(lambda: sent(first), "a token request with the first service-account token")
        second = write_token(emulator, token, expires_in=3500)  # kubelet's renewal
        run.add_secrets(second["assertion"])
        run.wait_for(lambda: sent(second), "a token request with the renewed service-account token")
        assert (values / "DB_PASSWORD").read_text() == "fake-db-password-7Qx"
        run.signal(signal.SIGTERM)
        assert run.wait_exit() == 143
    assert {entry["status"] for entry in entra_requests(emulator)} == {200}
