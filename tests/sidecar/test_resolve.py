"""`sidecar exec` end to end: real subprocesses, the real SDKs, real HTTP and TLS against the emulator."""

from __future__ import annotations

import json
import sys

import pytest
from sidecar_helpers import SYSTEM_ID, USER_ID, kv, platform

OPENAI_V1 = "00000000000000000000000000000a01"
OPENAI_V3 = "00000000000000000000000000000a03"


def test_the_command_runs_in_the_sidecars_process_with_resolved_values(run_sidecar):
    run = run_sidecar({"OPENAI_KEY": platform(kv("openai-key")), "PLAIN": "unchanged"})
    assert run.returncode == 0, run.stderr
    assert run.child_env["OPENAI_KEY"] == "fake-openai-key-v3"
    assert run.child_env["PLAIN"] == "unchanged"
    assert run.child["pid"] == run.pid, "CMD must replace the sidecar (execve), not run as its child"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (platform(kv("openai-key")), "fake-openai-key-v3"),
        (platform(kv("openai-key", OPENAI_V1)), "fake-openai-key-v1"),
        (kv("openai-key"), "fake-openai-key-v3"),
        (kv("openai-key", OPENAI_V1), "fake-openai-key-v1"),
        (f"postgres://app:{platform(kv('db-password'))}@db/x", "postgres://app:fake-db-password-7Qx@db/x"),
        (
            f"{platform(kv('openai-key', OPENAI_V1))}|{platform(kv('db-password'))}|{platform(kv('openai-key'))}",
            "fake-openai-key-v1|fake-db-password-7Qx|fake-openai-key-v3",
        ),
        (
            "literal $${{ not a reference }} and " + platform(kv("db-password")),
            "literal ${{ not a reference }} and fake-db-password-7Qx",
        ),
        (
            "price: $${{keyvault:https://x.vault.azure.net/secrets/y}}",
            "price: ${{keyvault:https://x.vault.azure.net/secrets/y}}",
        ),
        (platform("azureml://connections/aoai-conn/credentials/key"), "fake-aoai-key-123"),
        ("azureml://connections/aoai-conn/credentials/key", "fake-aoai-key-123"),
        (platform("azureml://connections/aoai-conn/target"), "https://contoso-aoai.openai.azure.com/"),
        (platform("azureml://connections/aoai-conn/metadata/ApiVersion"), "2024-02-01"),
        (platform("azureml://connections/custom-conn/credentials/API_KEY"), "fake-custom-api-key"),
        ("azureml://connections/custom-conn/credentials/OTHER_KEY", "fake-custom-other"),
        (platform(kv("cn-secret", vault="https://contoso-kv-cn.vault.azure.cn")), "fake-cn-value"),
        (kv("gov-secret", vault="https://contoso-kv-gov.vault.usgovcloudapi.net"), "fake-gov-value"),
        (platform(kv("multiline")), "fake-line-1\nfake-line-2"),
    ],
    ids=[
        "platform-latest",
        "platform-pinned",
        "deferred-latest",
        "deferred-pinned",
        "embedded",
        "several-per-value",
        "escaped-and-reference",
        "escaped-only",
        "connection-credential",
        "connection-deferred",
        "connection-target",
        "connection-metadata",
        "customkeys",
        "customkeys-deferred",
        "china-cloud",
        "usgov-cloud",
        "multiline",
    ],
)
def test_reference_forms(run_sidecar, value, expected):
    run = run_sidecar({"TARGET": value})
    assert run.returncode == 0, run.stderr
    assert run.child_env["TARGET"] == expected


def test_whole_connection_injects_the_list_secrets_json(run_sidecar):
    run = run_sidecar({"CONN": platform("azureml://connections/aoai-conn")})
    assert run.returncode == 0, run.stderr
    connection = json.loads(run.child_env["CONN"])
    assert connection["name"] == "aoai-conn"
    assert connection["properties"]["credentials"]["key"] == "fake-aoai-key-123"
    assert connection["properties"]["target"] == "https://contoso-aoai.openai.azure.com/"


@pytest.mark.parametrize("flavour", ["imds", "azureml"])
@pytest.mark.parametrize(
    ("client_env", "expected_client"),
    [({}, None), ({"DEFAULT_IDENTITY_CLIENT_ID": SYSTEM_ID}, SYSTEM_ID), ({"SIDECAR_CLIENT_ID": USER_ID}, USER_ID)],
    ids=["system-no-client-id", "system-by-default-identity-client-id", "user-assigned"],
)
def test_identity_flavours_and_client_ids(run_sidecar, emulator, flavour, client_env, expected_client):
    run = run_sidecar({"K": kv("db-password"), **client_env}, flavour=flavour)
    assert run.returncode == 0, run.stderr
    assert run.child_env["K"] == "fake-db-password-7Qx"
    tokens = emulator.admin.requests(kind=flavour if flavour == "imds" else "msi")
    assert len(tokens) == 1
    assert tokens[0]["client_id"] == (expected_client or SYSTEM_ID)
    identity = next(event for event in run.events if event["event"] == "identity")
    assert identity["flavour"] == flavour
    assert identity["client_id"] == expected_client


def test_sidecar_client_id_wins_over_default_identity_client_id(run_sidecar, emulator):
    run = run_sidecar({"K": kv("db-password"), "DEFAULT_IDENTITY_CLIENT_ID": SYSTEM_ID, "SIDECAR_CLIENT_ID": USER_ID})
    assert run.returncode == 0, run.stderr
    assert {entry["client_id"] for entry in emulator.admin.requests(kind="imds")} == {USER_ID}


def test_identical_references_are_fetched_once_and_one_token_per_audience(run_sidecar, emulator):
    env = {
        "A": platform(kv("openai-key")),
        "B": kv("openai-key"),
        "C": f"x{platform(kv('openai-key'))}y{platform(kv('db-password'))}",
        "D": platform(kv("openai-key", OPENAI_V1)),
        "E": platform("azureml://connections/aoai-conn/credentials/key"),
        "F": platform("azureml://connections/aoai-conn/target"),
        "G": "azureml://connections/aoai-conn",
        "H": platform("azureml://connections/custom-conn/credentials/API_KEY"),
    }
    run = run_sidecar(env)
    assert run.returncode == 0, run.stderr
    gets = [entry for entry in emulator.admin.requests(kind="keyvault") if entry["status"] == 200]
    assert sorted(entry["path"].rstrip("/") for entry in gets) == sorted(
        ["/secrets/openai-key", "/secrets/db-password", f"/secrets/openai-key/{OPENAI_V1}"]
    )
    challenges = [entry for entry in emulator.admin.requests(kind="keyvault") if entry["status"] == 401]
    assert len(challenges) == 1, "the vault's challenge is learned once, before the fan-out"
    listsecrets = emulator.admin.requests(kind="arm")
    assert sorted(entry["path"].split("/connections/")[1].split("/")[0] for entry in listsecrets) == [
        "aoai-conn",
        "custom-conn",
    ]
    tokens = emulator.admin.requests(kind="imds")
    assert sorted(entry["resource"].rstrip("/") for entry in tokens) == [
        "https://management.azure.com",
        "https://vault.azure.net",
    ]
    summary = next(event for event in run.events if event["event"] == "summary")
    assert summary["fetches"] == 5 and summary["token_requests"] == 2


def test_sidecar_settings_are_removed_and_other_variables_pass_unchanged(run_sidecar):
    run = run_sidecar(
        {
            "K": kv("db-password"),
            "SIDECAR_TIMEOUT": "30",
            "SIDECAR_LOG_LEVEL": "info",
            "KEEP_SPACES": "  a  b  ",
            "KEEP_EMPTY": "",
            "KEEP_UNICODE": "héllo ✓",
            "KEEP_LOOKALIKE": "keyvault is a word; azureml://datastores/x is data",
        }
    )
    assert run.returncode == 0, run.stderr
    env = run.child_env
    assert not [name for name in env if name.startswith("SIDECAR_")]
    assert env["KEEP_SPACES"] == "  a  b  "
    assert env["KEEP_EMPTY"] == ""
    assert env["KEEP_UNICODE"] == "héllo ✓"
    assert env["KEEP_LOOKALIKE"] == "keyvault is a word; azureml://datastores/x is data"
    assert env["AZUREML_ARM_WORKSPACE_NAME"] == "ws-main"


def test_literal_setting_passes_a_reference_lookalike_unchanged(run_sidecar, emulator):
    lookalike = "keyvault:https://contoso-kv.vault.azure.net/secrets/openai-key"
    run = run_sidecar({"DOC_EXAMPLE": lookalike, "SIDECAR_LITERAL": "DOC_EXAMPLE"})
    assert run.returncode == 0, run.stderr
    assert run.child_env["DOC_EXAMPLE"] == lookalike
    assert emulator.admin.requests() == [], "a literal variable must cause no request at all"


def test_no_reference_makes_no_request(run_sidecar, emulator):
    run = run_sidecar({"PLAIN": "value"})
    assert run.returncode == 0, run.stderr
    assert emulator.admin.requests() == []


def test_transient_failures_are_retried_and_retry_after_honoured(run_sidecar, emulator):
    emulator.admin.add_fault(
        {"kind": "keyvault", "path": "/secrets/db-password", "status": 503, "count": 2, "retry_after_ms": 50}
    )
    run = run_sidecar({"K": kv("db-password")})
    assert run.returncode == 0, run.stderr
    assert run.child_env["K"] == "fake-db-password-7Qx"
    resolved = next(event for event in run.events if event["event"] == "resolved")
    assert resolved["attempts"] == 3


def test_arm_throttling_is_retried(run_sidecar, emulator):
    emulator.admin.add_fault({"kind": "arm", "status": 429, "count": 1, "retry_after": 0})
    run = run_sidecar({"K": "azureml://connections/aoai-conn/credentials/key"})
    assert run.returncode == 0, run.stderr
    assert len(emulator.admin.requests(kind="arm")) == 2


def test_identity_endpoint_upgrade_410_is_ridden_out(run_sidecar, emulator):
    emulator.admin.add_fault({"kind": "msi", "status": 410, "count": 2})
    run = run_sidecar({"K": kv("db-password")}, flavour="azureml")
    assert run.returncode == 0, run.stderr
    assert len(emulator.admin.requests(kind="msi")) == 3


def test_check_prints_rows_without_values(run_sidecar):
    run = run_sidecar(
        {
            "OPENAI_KEY": platform(kv("openai-key")),
            "PINNED": kv("openai-key", OPENAI_V1),
            "AOAI": "azureml://connections/aoai-conn/credentials/key",
        },
        command="check",
    )
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    header = ["NAME", "STORE", "REFERENCE", "VERSION", "LENGTH", "DESTINATION", "STATUS", "MS", "ATTEMPTS"]
    assert lines[0].split() == header
    rows = {line.split()[0]: line.split() for line in lines[1:]}
    assert rows["OPENAI_KEY"][1:7] == ["keyvault", kv("openai-key"), OPENAI_V3, "18", "env", "ok"]
    assert rows["PINNED"][3] == OPENAI_V1
    assert rows["AOAI"][1:7] == [
        "connection",
        "azureml://connections/aoai-conn/credentials/key",
        "-",
        "17",
        "env",
        "ok",
    ]


def test_check_json_and_exit_code_of_the_failure(run_sidecar):
    run = run_sidecar(
        {"OK": kv("db-password"), "MISSING": kv("no-such-secret")}, command="check", check_args=("--format", "json")
    )
    assert run.returncode == 66
    rows = {row["name"]: row for row in json.loads(run.stdout)}
    assert rows["OK"]["status"] == "ok" and rows["OK"]["length"] == len("fake-db-password-7Qx")
    assert rows["MISSING"]["status"] == "not_found" and rows["MISSING"]["length"] is None


def test_debug_logging_of_the_sdks_leaks_nothing(run_sidecar, emulator):
    run = run_sidecar(
        {
            "A": kv("openai-key"),
            "B": "azureml://connections/custom-conn",
            "SIDECAR_LOG_LEVEL": "debug",
        },
        flavour="azureml",
    )
    assert run.returncode == 0, run.stderr
    assert any(event.get("logger", "").startswith(("urllib3", "azure")) for event in run.events), (
        "debug level should show the SDKs' own logging (through the redactor)"
    )
    assert "Bearer emu" not in run.stderr
    for entry in emulator.admin.requests(kind="msi"):
        assert entry["status"] == 200


def test_other_variables_pass_byte_for_byte_even_when_not_utf8(run_sidecar):
    odd = b"\xff\xfe not utf-8 \x80"
    run = run_sidecar({"K": kv("db-password"), "ODD": odd})  # type: ignore[dict-item]
    assert run.returncode == 0, run.stderr
    assert bytes.fromhex(run.child["raw"]["ODD"]) == odd


def test_secrets_outside_their_validity_window_resolve_with_a_warning(run_sidecar):
    run = run_sidecar({"OLD": kv("expired-secret"), "NEW": kv("future-secret")})
    assert run.returncode == 0, run.stderr
    assert run.child_env["OLD"] == "fake-expired-value"
    warnings = {event["variable"]: event["warning"] for event in run.events if event["event"] == "warning"}
    assert "expired at 2020-01-01" in warnings["OLD"]
    assert "not valid before 2099-01-01" in warnings["NEW"]


def test_arguments_reach_the_command_unchanged(run_sidecar, tmp_path):
    record = tmp_path / "args.json"
    from sidecar_helpers import RECORDER, kv

    args = ["--flag", "${{keyvault:https://contoso-kv.vault.azure.net/secrets/db-password}}", "", "two words"]
    run = run_sidecar({"K": kv("db-password")}, cmd=[sys.executable, str(RECORDER), str(record), *args])
    assert run.returncode == 0, run.stderr
    assert json.loads(record.read_text())["argv"] == args, "arguments are not references: only the environment is"
