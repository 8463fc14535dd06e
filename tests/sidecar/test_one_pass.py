"""One run shows every problem: malformed references, wrong settings and failed fetches side by side.

A deployment takes minutes to fail; each problem held back for the next run costs another one.
"""

from __future__ import annotations

import json

from sidecar_helpers import kv, platform

RESTRICTED = "https://restricted-kv.vault.azure.net"


def _mixed() -> dict[str, str]:
    """A malformed, a missing, a forbidden and a good reference."""
    return {
        "MALFORMED": "${{keyvault:https://contoso-kv.vault.azure.net/secrets/x",
        "MISSING": kv("no-such-secret"),
        "FORBIDDEN": kv("other", vault=RESTRICTED),
        "GOOD": kv("db-password"),
    }


def _event(run, name: str) -> dict:
    found = [event for event in run.events if event.get("event") == name]
    assert len(found) == 1, f"expected one '{name}' event; stderr:\n{run.stderr}"
    return found[0]


def test_exec_reports_a_malformed_a_missing_and_a_forbidden_reference_in_one_run(run_sidecar, emulator):
    run = run_sidecar(_mixed())
    assert run.returncode == 65 and run.child is None, run.stderr  # 65 comes first; nothing starts
    statuses = {event["variable"]: event["status"] for event in run.failures()}
    assert statuses == {"MALFORMED": "malformed", "MISSING": "not_found", "FORBIDDEN": "forbidden"}
    assert [event["variable"] for event in run.events if event.get("event") == "resolved"] == ["GOOD"]
    summary = _event(run, "summary")
    assert (summary["variables"], summary["failed"]) == (4, 3)
    fetched = {entry["path"].split("/secrets/")[1].strip("/") for entry in emulator.admin.requests(kind="keyvault")}
    assert {"no-such-secret", "other", "db-password"} <= fetched


def test_check_shows_each_failed_variable_on_its_own_row(run_sidecar):
    run = run_sidecar(_mixed(), command="check", check_args=("--format", "json"))
    assert run.returncode == 65, run.stderr
    rows = {row["name"]: row["status"] for row in json.loads(run.stdout)}
    assert rows == {"FORBIDDEN": "forbidden", "GOOD": "ok", "MALFORMED": "malformed", "MISSING": "not_found"}

    table = run_sidecar(_mixed(), command="check")
    assert table.returncode == 65
    for name, status in rows.items():
        lines = [line.split() for line in table.stdout.splitlines() if line.startswith(name + " ")]
        assert len(lines) == 1 and status in lines[0], f"{name}: expected one row with {status}:\n{table.stdout}"


def test_a_reference_whose_setting_is_wrong_does_not_stop_the_others(run_sidecar):
    run = run_sidecar(
        {
            "CONNECTION": "azureml://connections/aoai-conn/target",  # no AZUREML_ARM_* settings
            "FOREIGN_HOST": platform("keyvault:https://vault.example.com/secrets/x"),
            "GOOD": kv("db-password"),
        },
        workspace=False,
    )
    assert run.returncode == 78, run.stderr
    statuses = {event["variable"]: event["status"] for event in run.failures()}
    assert statuses == {"CONNECTION": "configuration", "FOREIGN_HOST": "configuration"}
    assert "AZUREML_ARM_WORKSPACE_NAME" in run.failure_for("CONNECTION")["error"]
    assert [event["variable"] for event in run.events if event.get("event") == "resolved"] == ["GOOD"]


def test_a_wrong_setting_is_reported_with_every_malformed_reference(run_sidecar, emulator):
    run = run_sidecar({"SIDECAR_TIMEOUT": "soon", "BROKEN": "${{bad}}", "K": kv("db-password")})
    assert run.returncode == 65, run.stderr
    errors = [event["error"] for event in run.failures()]
    assert any("SIDECAR_TIMEOUT" in error for error in errors), run.stderr
    assert run.failure_for("BROKEN")["status"] == "malformed"
    assert emulator.admin.requests() == [], "nothing is fetched while a setting every fetch needs is wrong"
