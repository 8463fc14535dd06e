"""SIDECAR_ROLE_WAIT: a 403 from Key Vault or ARM retried while a new role assignment propagates.

The emulator models propagation by denials: a role assigned with `after_denials=N` applies after N refused
requests (its README, "Role assignments and propagation").
"""

from __future__ import annotations

import pytest
from sidecar_helpers import NOROLES_ID, kv
from supervise_helpers import probe, supervised

VAULT_ROLE = "Key Vault Secrets User"
WORKSPACE_ROLE = "Azure Machine Learning Workspace Connection Secrets Reader"
RESTRICTED = kv("other", vault="https://restricted-kv.vault.azure.net")
WAITING = "waiting for a role assignment to propagate"


def _statuses(emulator, kind: str, path: str) -> list[int]:
    return [entry["status"] for entry in emulator.admin.requests(kind=kind, path_contains=path)]


def _waits(run) -> list[str]:
    return sorted(event["variable"] for event in run.events if event.get("event") == WAITING)


def test_a_key_vault_role_is_waited_for_then_the_command_starts(run_sidecar, emulator):
    emulator.admin.assign_role(NOROLES_ID, VAULT_ROLE, "contoso-kv", after_denials=3)
    run = run_sidecar(
        {"A": kv("db-password"), "B": kv("db-password"), "SIDECAR_CLIENT_ID": NOROLES_ID, "SIDECAR_ROLE_WAIT": "60"}
    )
    assert run.returncode == 0, run.stderr
    assert run.child_env["A"] == run.child_env["B"] == "fake-db-password-7Qx"
    statuses = [status for status in _statuses(emulator, "keyvault", "/secrets/db-password") if status != 401]
    assert statuses == [403, 403, 403, 200]
    assert _waits(run) == ["A", "B"], "one event per variable, however often its fetch was refused"


def test_a_workspace_role_is_waited_for_too(run_sidecar, emulator):
    emulator.admin.assign_role(NOROLES_ID, WORKSPACE_ROLE, "ws-main", after_denials=2)
    run = run_sidecar(
        {
            "TARGET": "azureml://connections/aoai-conn/target",
            "SIDECAR_CLIENT_ID": NOROLES_ID,
            "SIDECAR_ROLE_WAIT": "60",
        }
    )
    assert run.returncode == 0, run.stderr
    assert _statuses(emulator, "arm", "/connections/aoai-conn/") == [403, 403, 200]
    assert _waits(run) == ["TARGET"]


def test_a_403_that_outlasts_the_role_wait_is_77(run_sidecar, emulator):
    run = run_sidecar({"K": RESTRICTED, "SIDECAR_ROLE_WAIT": "2"})
    failure = run.failure_for("K")
    assert run.returncode == 77 and failure["status"] == "forbidden", run.stderr
    assert "Still refused after waiting" in failure["error"] and "SIDECAR_ROLE_WAIT=2" in failure["error"]
    assert _statuses(emulator, "keyvault", "/secrets/other").count(403) > 1, "the 403 was retried"
    assert _waits(run) == ["K"]


def test_the_role_wait_is_bounded_by_the_deadline_and_still_reports_the_403(run_sidecar, emulator):
    run = run_sidecar({"K": RESTRICTED, "SIDECAR_ROLE_WAIT": "600", "SIDECAR_TIMEOUT": "3"})
    failure = run.failure_for("K")
    assert run.returncode == 77, run.stderr  # the refusal, not the deadline's 69
    assert "SIDECAR_TIMEOUT=3" in failure["error"] and "ended it first" in failure["error"]


def test_without_a_role_wait_a_403_fails_at_once_and_check_says_a_wait_may_help(run_sidecar, emulator):
    run = run_sidecar({"K": RESTRICTED}, command="check")
    assert run.returncode == 77, run.stderr
    assert _statuses(emulator, "keyvault", "/secrets/other").count(403) == 1
    assert "SIDECAR_ROLE_WAIT=600" in run.failure_for("K")["fix"]
    assert "SIDECAR_ROLE_WAIT=600" in run.stdout and "propagating" in run.stdout
    assert _waits(run) == []


def test_a_disabled_secret_is_not_waited_for(run_sidecar, emulator):
    """Its 403 is the secret's state, which no role assignment changes."""
    run = run_sidecar({"K": kv("disabled-secret"), "SIDECAR_ROLE_WAIT": "30"})
    assert run.returncode == 77, run.stderr
    assert _statuses(emulator, "keyvault", "/secrets/disabled-secret").count(403) == 1
    assert "SIDECAR_ROLE_WAIT" not in run.failure_for("K")["fix"] and _waits(run) == []


@pytest.mark.parametrize("value", ["-1", "soon", "3601", "1e3"])
def test_a_bad_role_wait_is_78(run_sidecar, emulator, value):
    run = run_sidecar({"K": kv("db-password"), "SIDECAR_ROLE_WAIT": value})
    assert run.returncode == 78 and "SIDECAR_ROLE_WAIT" in run.stderr, run.stderr
    assert emulator.admin.requests() == []


def test_supervise_waits_for_the_role_before_it_starts_the_child(emulator, tmp_path, fixture_secret_values):
    """Its first resolution is exec's, role wait included."""
    emulator.admin.assign_role(NOROLES_ID, VAULT_ROLE, "contoso-kv", after_denials=2)
    env = {"DB_PASSWORD": kv("db-password"), "SIDECAR_CLIENT_ID": NOROLES_ID, "SIDECAR_ROLE_WAIT": "60"}
    command = probe(tmp_path, "--names", "DB_PASSWORD")
    with supervised(emulator, tmp_path, fixture_secret_values, env, cmd=command) as run:
        assert run.wait_child("start")[0]["env"] == {"DB_PASSWORD": "fake-db-password-7Qx"}
        assert run.events(WAITING, variable="DB_PASSWORD")
        statuses = [status for status in _statuses(emulator, "keyvault", "/secrets/db-password") if status != 401]
        assert statuses[:3] == [403, 403, 200]
