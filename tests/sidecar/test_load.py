"""`sidecar.load()` in a real host process against the emulator (tests/sidecar/load_host.py is the host)."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sidecar_helpers import KV, NOROLES_ID, RUN_TIMEOUT_S, WORKSPACE, assert_no_leak, kv, platform

HOST = Path(__file__).with_name("load_host.py")


@pytest.fixture
def host(emulator, tmp_path, fixture_secret_values):
    counter = iter(range(1000))

    def run(env: dict[str, str], calls: list[dict] | None = None, secrets: tuple[str, ...] = ()) -> dict:
        record = tmp_path / f"host-{next(counter)}.json"
        full_env = {"PATH": os.environ["PATH"], "LANG": "C.UTF-8", **emulator.env("imds"), **WORKSPACE, **env}
        done = subprocess.run(
            [sys.executable, str(HOST), str(record), json.dumps(calls or [{}])],
            env=full_env,
            capture_output=True,
            text=True,
            timeout=RUN_TIMEOUT_S,
        )
        assert done.returncode == 0, f"the host failed; stderr:\n{done.stderr}"
        result = json.loads(record.read_text())
        result["log"] = done.stdout + done.stderr
        assert_no_leak(result["log"], [*fixture_secret_values, *secrets])
        if "error" in result:
            assert_no_leak(result["error"]["text"], [*fixture_secret_values, *secrets])
        return result

    return run


ENCODED = base64.b64encode(b"fake-decoded-value").decode()


def test_load_resolves_both_forms_and_options_in_place(host, emulator, shm_dir):
    emulator.admin.add_version("contoso-kv", "b64", ENCODED)
    result = host(
        {
            "KEY": platform(f"keyvault:{KV}/secrets/db-password"),
            "URL": "postgres://app:" + platform(f"keyvault:{KV}/secrets/db-password") + "@db/app",
            "PINNED": kv("openai-key", "00000000000000000000000000000a01"),
            "JSON_PASSWORD": kv("json-config", options="#/password"),
            "MAYBE": kv("no-such-secret", options="?optional"),
            "AS_FILE": kv("db-password", options="?file"),
            "CUSTOM": "azureml://connections/custom-conn/credentials/API_KEY",
            "FALLBACK": kv("no-such-secret", options="?default=fake%2Ddefault"),
            "DECODED": kv("b64", options="?decode=base64"),
            "ESCAPED": "costs $${{amount}}",
            "SIDECAR_FILES_DIR": str(shm_dir),
        },
        secrets=(ENCODED, "fake-decoded-value"),
    )
    assert "error" not in result, result.get("error")
    env = result["env"]
    assert env["KEY"] == "fake-db-password-7Qx" and env["URL"] == "postgres://app:fake-db-password-7Qx@db/app"
    assert env["PINNED"] == "fake-openai-key-v1" and env["JSON_PASSWORD"] == "fake-json-password"
    assert env["CUSTOM"] == "fake-custom-api-key" and "MAYBE" not in env
    assert (env["FALLBACK"], env["DECODED"], env["ESCAPED"]) == (
        "fake-default",
        "fake-decoded-value",
        "costs ${{amount}}",
    )
    assert Path(env["AS_FILE"]).read_text() == "fake-db-password-7Qx"
    loaded = result["results"][0]
    assert loaded["PINNED"]["versions"] == ["00000000000000000000000000000a01"]
    assert loaded["MAYBE"]["destination"] == "unset" and loaded["AS_FILE"]["destination"].startswith("file:")
    assert env["SIDECAR_FILES_DIR"] == str(shm_dir), "SIDECAR_* settings stay in the host's environment"


def test_every_failure_raises_with_the_cli_exit_code_and_changes_nothing(host):
    result = host(
        {
            "GOOD": kv("db-password"),
            "MISSING": kv("no-such-secret"),
            "FORBIDDEN": kv("other", vault="https://restricted-kv.vault.azure.net"),
            "MALFORMED": "${{keyvault:https://contoso-kv.vault.azure.net/secrets/x",
        }
    )
    error = result["error"]
    assert error["type"] == "LoadError" and error["exit_code"] == 65
    statuses = {failure["variable"]: failure["status"] for failure in error["failures"]}
    assert statuses == {"MISSING": "not_found", "FORBIDDEN": "forbidden", "MALFORMED": "malformed"}
    assert all(failure["fix"] for failure in error["failures"])
    assert result["environ_unchanged"] and result["env"]["GOOD"] == kv("db-password")


@pytest.mark.parametrize(
    ("env", "code"),
    [
        ({"K": kv("no-such-secret")}, 66),
        ({"K": kv("other", vault="https://restricted-kv.vault.azure.net")}, 77),
        ({"K": kv("db-password"), "SIDECAR_TIMEOUT": "soon"}, 78),
        ({"K": "azureml://connections/aoai-conn/target", "AZUREML_ARM_WORKSPACE_NAME": "ws-nowhere"}, 77),
    ],
)
def test_each_failure_has_the_exit_code_exec_would_have(host, env, code):
    result = host(env)
    assert result["error"]["exit_code"] == code and result["environ_unchanged"], result["error"]


def test_a_guest_changes_no_logging_no_structlog_and_no_signal_handler(host):
    result = host({"K": kv("db-password"), "SIDECAR_CLIENT_ID": NOROLES_ID}, calls=[{}])
    assert result["error"]["exit_code"] == 77
    assert result["host_logging_unchanged"] and result["structlog_unchanged"] and result["signals_unchanged"]
    assert "WARNING sidecar " in result["log"] or "ERROR sidecar " in result["log"], "events go through logging"


def test_nothing_leaks_with_every_logger_at_debug(host):
    """The host sets root, azure, urllib3 and msal to DEBUG; `host` checks the output for every fixture value."""
    result = host({"A": kv("db-password"), "B": "azureml://connections/aoai-conn/credentials/key"})
    assert result["env"]["A"] == "fake-db-password-7Qx"
    assert "DEBUG urllib3" in result["log"] or "DEBUG azure" in result["log"], "the SDKs did log at DEBUG"
    assert "INFO sidecar " in result["log"] and '"event": "resolved"' in result["log"]


def test_calling_load_twice_does_not_parse_what_the_first_call_set(host, emulator):
    rotated = "fake-rotated-${{ not a reference }}"
    emulator.admin.add_version("contoso-kv", "db-password", rotated)
    result = host({"K": kv("db-password")}, calls=[{}, {}], secrets=(rotated,))
    assert "error" not in result, result.get("error")
    assert result["env"]["K"] == rotated
    assert result["results"][1] == {}, "the second call found nothing left to resolve"


def test_keyword_settings_win_over_the_environment(host):
    result = host(
        {"K": kv("db-password"), "SIDECAR_PLATFORM_FORM": "resolve", "LOOKS": "fake-${{x"},
        calls=[{"platform_form": "pass", "timeout": 30, "literal": ["NOTHING"]}],
    )
    assert "error" not in result, result.get("error")
    assert result["env"]["LOOKS"] == "fake-${{x" and result["env"]["K"] == "fake-db-password-7Qx"


def test_refresh_keeps_the_returned_mapping_current_and_calls_back(emulator, tmp_path, fixture_secret_values, shm_dir):
    record, ready = tmp_path / "watch.json", tmp_path / "ready"
    env = {
        "PATH": os.environ["PATH"],
        **emulator.env("imds"),
        **WORKSPACE,
        "K": kv("db-password"),
        "F": kv("db-password", options="?file"),
        "PINNED": kv("openai-key", "00000000000000000000000000000a01"),
        "SIDECAR_FILES_DIR": str(shm_dir),
    }
    rotated = "fake-rotated-in-the-background"
    host = subprocess.Popen(
        [sys.executable, str(HOST), str(record), json.dumps([{"refresh": 1}]), str(ready)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + RUN_TIMEOUT_S
        while not ready.exists() and host.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)  # polling for the host's first load; the bound above fails the test
        assert ready.exists(), "the host did not finish its first load"
        emulator.admin.add_version("contoso-kv", "db-password", rotated)
        stdout, stderr = host.communicate(timeout=RUN_TIMEOUT_S)
    finally:
        host.kill()
    assert_no_leak(stdout + stderr, [*fixture_secret_values, rotated])
    assert host.returncode == 0, stderr
    result = json.loads(record.read_text())
    assert result["changes"] == [["F", "K"]], "one callback for the round's changes"
    assert result["current"]["K"] == rotated and Path(result["current"]["F"]).read_text() == rotated
    assert result["current"]["PINNED"] == "fake-openai-key-v1"
    assert result["env"]["K"] == "fake-db-password-7Qx", "os.environ keeps the first load's values"
    assert not result["refreshing_after_stop"] and rotated not in result["current_repr"]
    gets = emulator.admin.requests(kind="keyvault", path_contains="/secrets/openai-key")
    assert len([entry for entry in gets if entry["status"] == 200]) == 1, "a pinned version is read once"
