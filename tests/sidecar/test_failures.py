"""Every failure: its exit code, a message naming the variable, the reference and the fix, and no CMD."""

from __future__ import annotations

import socket
import stat
import sys

import pytest
from sidecar_helpers import NOROLES_ID, README, USER_ID, WORKSPACE, kv, platform


def assert_failed(run, code: int, variable: str) -> dict:
    assert run.returncode == code, f"expected exit {code}, got {run.returncode}; stderr:\n{run.stderr}"
    assert run.child is None, "CMD must not start when a reference fails"
    failure = run.failure_for(variable)
    assert failure["exit_code"] == code
    assert failure["fix"], f"the failure of {variable} must say how to fix it"
    return failure


@pytest.mark.parametrize(
    "value",
    [
        platform("keyvault:https://contoso-kv.vault.azure.net/secret/x"),
        platform("keyvault:http://contoso-kv.vault.azure.net/secrets/x"),
        platform("keyvault:https://contoso-kv.vault.azure.net/secrets/x/not-a-version"),
        platform("keyvault:https://contoso-kv.vault.azure.net/secrets/bad_name"),
        platform("keyvault:https://contoso-kv.vault.azure.net/secrets/x?version=1"),
        "${{keyvault:https://contoso-kv.vault.azure.net/secrets/x",
        "prefix ${{ not-a-reference }} suffix",
        "${{azureml://datastores/blob/paths/x}}",
        "azureml://connections/ab",
        "azureml://connections/aoai-conn/credentials",
        "azureml://connections/aoai-conn/password/x",
        "keyvault:contoso-kv/secrets/x",
    ],
)
def test_malformed_reference_is_65_before_any_request(run_sidecar, emulator, value):
    run = run_sidecar({"BROKEN": value})
    failure = assert_failed(run, 65, "BROKEN")
    assert failure["status"] == "malformed"
    assert emulator.admin.requests() == [], "nothing may be requested while a reference is malformed"


def test_nul_byte_in_a_value_is_65(run_sidecar):
    run = run_sidecar({"BINARY": kv("nul-secret")})
    failure = assert_failed(run, 65, "BINARY")
    assert "NUL" in failure["error"]


@pytest.mark.parametrize(
    ("value", "words"),
    [
        (kv("no-such-secret"), ["no-such-secret", "not found", "SecretNotFound"]),
        (kv("openai-key", "ffffffffffffffffffffffffffffffff"), ["ffffffffffffffffffffffffffffffff", "not found"]),
        ("azureml://connections/no-such-conn/credentials/key", ["no-such-conn", "not found"]),
        ("azureml://connections/aoai-conn/credentials/password", ["password", "it has: key"]),
        ("azureml://connections/custom-conn/credentials/MISSING", ["MISSING", "API_KEY, OTHER_KEY"]),
        ("azureml://connections/aoai-conn/metadata/Nope", ["Nope", "ApiType"]),
    ],
    ids=["secret", "version", "connection", "credential", "customkeys-name", "metadata"],
)
def test_not_found_is_66(run_sidecar, value, words):
    run = run_sidecar({"MISSING": value})
    failure = assert_failed(run, 66, "MISSING")
    assert failure["reference"] == value
    for word in words:
        assert word in failure["error"], f"{word!r} missing from: {failure['error']}"


@pytest.mark.parametrize(
    ("setting", "value"),
    [
        ("AZUREML_ARM_WORKSPACE_NAME", "ws-nowhere"),
        ("AZUREML_ARM_RESOURCEGROUP", "rg-typo"),
        ("AZUREML_ARM_SUBSCRIPTION", "00000000-0000-4000-8000-0000000000ff"),
    ],
)
def test_a_mistyped_workspace_is_77_and_names_the_settings_and_the_scope(run_sidecar, setting, value):
    """ARM answers 403 AuthorizationFailed for a scope with no role, existing or not: both causes are named."""
    run = run_sidecar({"K": "azureml://connections/aoai-conn/target", setting: value})
    failure = assert_failed(run, 77, "K")
    assert "AuthorizationFailed" in failure["error"] and "no workspace exists at that scope" in failure["error"]
    scope = {**WORKSPACE, setting: value}
    assert (
        f"/subscriptions/{scope['AZUREML_ARM_SUBSCRIPTION']}/resourceGroups/{scope['AZUREML_ARM_RESOURCEGROUP']}"
        f"/providers/Microsoft.MachineLearningServices/workspaces/{scope['AZUREML_ARM_WORKSPACE_NAME']}"
    ) in failure["error"]
    assert f"{setting}={value}" in failure["fix"] and "Connection Secrets Reader" in failure["fix"]


def test_key_vault_permission_denied_is_77_and_names_role_identity_and_vault(run_sidecar):
    run = run_sidecar({"K": kv("other", vault="https://restricted-kv.vault.azure.net"), "SIDECAR_CLIENT_ID": USER_ID})
    failure = assert_failed(run, 77, "K")
    for word in ("Key Vault Secrets User", USER_ID, "restricted-kv", "ForbiddenByRbac"):
        assert word in failure["error"] + failure["fix"], word


def test_disabled_secret_is_77(run_sidecar):
    run = run_sidecar({"K": kv("disabled-secret")})
    failure = assert_failed(run, 77, "K")
    assert "disabled" in failure["error"]


def test_connection_permission_denied_is_77_and_names_the_role(run_sidecar):
    run = run_sidecar(
        {"K": "azureml://connections/locked-conn/credentials/key", "AZUREML_ARM_WORKSPACE_NAME": "ws-locked"}
    )
    failure = assert_failed(run, 77, "K")
    assert "Azure Machine Learning Workspace Connection Secrets Reader" in failure["fix"]


def test_identity_with_no_roles_fails_every_variable_with_77(run_sidecar):
    run = run_sidecar(
        {"A": kv("openai-key"), "B": "azureml://connections/aoai-conn/target", "SIDECAR_CLIENT_ID": NOROLES_ID},
        flavour="azureml",
    )
    assert_failed(run, 77, "A")
    assert_failed(run, 77, "B")


def test_unavailable_store_is_69_after_bounded_attempts(run_sidecar, emulator):
    emulator.admin.add_fault({"kind": "keyvault", "path": "/secrets/db-password", "status": 503, "count": None})
    run = run_sidecar({"K": kv("db-password"), "SIDECAR_MAX_ATTEMPTS": "3"})
    failure = assert_failed(run, 69, "K")
    assert "3 attempt(s)" in failure["error"]
    gets = emulator.admin.requests(kind="keyvault", path_contains="/secrets/db-password")
    assert len([entry for entry in gets if entry["status"] == 503]) == 3


def test_connection_resets_are_retried_then_69(run_sidecar, emulator):
    emulator.admin.add_fault({"kind": "arm", "reset": True, "count": None})
    run = run_sidecar({"K": "azureml://connections/aoai-conn/target", "SIDECAR_MAX_ATTEMPTS": "2"})
    assert_failed(run, 69, "K")
    assert len(emulator.admin.requests(kind="arm")) == 2


def test_a_hanging_store_ends_at_the_deadline_with_69(run_sidecar, emulator):
    emulator.admin.add_fault({"kind": "keyvault", "path": "/secrets/db-password", "hang_s": 60, "count": None})
    run = run_sidecar({"K": kv("db-password"), "SIDECAR_TIMEOUT": "3"})
    assert_failed(run, 69, "K")


def test_unreachable_identity_endpoint_is_69(run_sidecar):
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    run = run_sidecar(
        {
            "K": kv("db-password"),
            "AZURE_POD_IDENTITY_AUTHORITY_HOST": f"http://127.0.0.1:{port}",
            "SIDECAR_TIMEOUT": "4",
        }
    )
    failure = assert_failed(run, 69, "K")
    assert "identity endpoint" in failure["error"]


@pytest.mark.parametrize("flavour", ["imds", "azureml"])
def test_unknown_client_id_is_78(run_sidecar, flavour):
    run = run_sidecar(
        {"K": kv("db-password"), "SIDECAR_CLIENT_ID": "44444444-4444-4444-8444-444444444444"}, flavour=flavour
    )
    failure = assert_failed(run, 78, "K")
    assert "44444444-4444-4444-8444-444444444444" in failure["error"]


def test_wrong_msi_secret_is_78(run_sidecar):
    run = run_sidecar({"K": kv("db-password"), "MSI_SECRET": "not-the-secret"}, flavour="azureml")
    failure = assert_failed(run, 78, "K")
    assert "MSI_SECRET" in failure["fix"]


def test_connection_reference_without_workspace_settings_is_78(run_sidecar, emulator):
    run = run_sidecar({"K": "azureml://connections/aoai-conn/target"}, workspace=False)
    failure = assert_failed(run, 78, "K")
    assert "AZUREML_ARM_WORKSPACE_NAME" in failure["error"]
    assert emulator.admin.requests() == []


@pytest.mark.parametrize(
    ("setting", "value"),
    [
        ("SIDECAR_CONNECT_TO", "*.vault.azure.net:443:10.0.0.5:443"),
        ("SIDECAR_CONNECT_TO", "nonsense"),
        ("SIDECAR_TIMEOUT", "soon"),
        ("SIDECAR_MAX_CONCURRENCY", "0"),
        ("SIDECAR_ARM_ENDPOINT", "https://management.example.com"),
        ("SIDECAR_LOG_FORMAT", "xml"),
    ],
)
def test_bad_setting_is_78_and_names_it(run_sidecar, emulator, setting, value):
    run = run_sidecar({"K": kv("db-password"), setting: value})
    assert run.returncode == 78, run.stderr
    assert run.child is None
    assert any(setting in (event.get("error") or "") for event in run.failures()), run.stderr
    assert emulator.admin.requests() == []


def test_a_non_key_vault_host_gets_no_connection_and_no_token(run_sidecar, emulator):
    with socket.socket() as trap:
        trap.bind(("127.0.0.1", 0))
        trap.listen()
        trap.setblocking(False)
        port = trap.getsockname()[1]
        run = run_sidecar(
            {
                "K": platform("keyvault:https://evil.example.com/secrets/token-thief"),
                "SIDECAR_CONNECT_TO": f"evil.example.com:443:127.0.0.1:{port},{emulator.connect_to}",
            }
        )
        failure = assert_failed(run, 78, "K")
        assert "evil.example.com" in failure["error"]
        with pytest.raises(BlockingIOError):
            trap.accept()
    assert emulator.admin.requests() == [], "no token may be requested for a refused host"


def test_command_not_found_is_127_before_any_fetch(run_sidecar, emulator):
    run = run_sidecar({"K": kv("db-password")}, cmd=["no-such-command-anywhere"])
    assert run.returncode == 127, run.stderr
    assert emulator.admin.requests() == []


def test_command_not_executable_is_126_before_any_fetch(run_sidecar, emulator, tmp_path):
    script = tmp_path / "not-executable.sh"
    script.write_text("#!/bin/sh\necho hi\n")
    script.chmod(stat.S_IRUSR | stat.S_IWUSR)
    run = run_sidecar({"K": kv("db-password")}, cmd=[str(script)])
    assert run.returncode == 126, run.stderr  # even root cannot execve a file with no x bit
    assert emulator.admin.requests() == []


def test_no_command_is_64(run_sidecar):
    run = run_sidecar({}, cmd=[])
    assert run.returncode == 64, run.stderr


def test_a_malformed_reference_wins_the_exit_code_and_the_others_are_still_fetched(run_sidecar, emulator):
    run = run_sidecar({"A": kv("disabled-secret"), "B": kv("no-such-secret"), "C": "${{bad}}", "D": "${{also bad"})
    assert run.returncode == 65, run.stderr
    statuses = {event["variable"]: event["status"] for event in run.failures()}
    assert statuses == {"A": "forbidden", "B": "not_found", "C": "malformed", "D": "malformed"}
    assert len(emulator.admin.requests(kind="keyvault", path_contains="/secrets/")) >= 2


def test_every_fetch_failure_is_reported_and_77_comes_before_66(run_sidecar):
    run = run_sidecar(
        {
            "A": kv("no-such-secret"),
            "B": kv("other", vault="https://restricted-kv.vault.azure.net"),
            "OK": kv("db-password"),
        }
    )
    assert run.returncode == 77, run.stderr
    assert {event["variable"] for event in run.failures()} == {"A", "B"}


def test_unavailable_and_not_found_together_exit_66_and_report_both(run_sidecar, emulator):
    emulator.admin.add_fault({"kind": "keyvault", "path": "/secrets/db-password", "status": 500, "count": None})
    run = run_sidecar({"DOWN": kv("db-password"), "GONE": kv("no-such-secret"), "SIDECAR_MAX_ATTEMPTS": "2"})
    assert run.returncode == 66
    assert run.failure_for("DOWN")["exit_code"] == 69
    assert run.failure_for("GONE")["exit_code"] == 66


def test_python_dash_m_is_the_same_entry_point():
    import subprocess

    result = subprocess.run([sys.executable, "-m", "sidecar", "--help"], capture_output=True, text=True, check=False)
    assert result.returncode == 0
    for word in ("exec", "check", "SIDECAR_TIMEOUT", "exit codes", "$${{"):
        assert word in result.stdout


def test_every_setting_is_documented_in_the_help_and_the_readme():
    import subprocess

    from sidecar.settings import KNOWN_SETTINGS

    help_text = subprocess.run([sys.executable, "-m", "sidecar", "--help"], capture_output=True, text=True).stdout
    readme = README.read_text()
    assert [name for name in sorted(KNOWN_SETTINGS) if f"`{name}`" not in readme] == []
    entrypoint_only = {"SIDECAR_MODE", "SIDECAR_BIN"}
    assert [name for name in sorted(KNOWN_SETTINGS - entrypoint_only) if name not in help_text] == []


def test_sigterm_before_the_exec_stops_the_sidecar_with_143(emulator, fixture_secret_values):
    import os
    import subprocess
    import time

    from sidecar_helpers import WORKSPACE, assert_no_leak

    emulator.admin.add_fault({"kind": "keyvault", "path": "/secrets/db-password", "hang_s": 60, "count": None})
    env = {"PATH": os.environ["PATH"], **emulator.env("imds"), **WORKSPACE, "K": kv("db-password")}
    process = subprocess.Popen(
        [sys.executable, "-m", "sidecar", "exec", "--", "true"], env=env, stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 30
    while not emulator.admin.requests(kind="keyvault", path_contains="db-password"):
        assert time.monotonic() < deadline, "the sidecar never reached the vault"
        assert process.poll() is None, "the sidecar ended before it was signalled"
        time.sleep(0.05)  # polling the emulator's log, bounded by the deadline above
    process.terminate()
    try:
        _, stderr = process.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        raise AssertionError("SIGTERM did not stop the sidecar within 10 s") from None
    assert process.returncode == 143, stderr
    assert '"signal": "SIGTERM"' in stderr
    assert_no_leak(stderr, fixture_secret_values)
