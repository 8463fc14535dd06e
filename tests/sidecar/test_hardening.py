"""Hardening: names that become paths or shell lines, file delivery that never follows a link,
inputs that must end in a documented exit code. Each test reproduces a finding of the review.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from sidecar_helpers import KV, fs_type, kv, platform, sourced_environment

OUTSIDER_UID = 4242  # a user that is neither the sidecar's (root here) nor the server's
WAIT_S = 30.0


# Finding 1: render --env-file and names that are not shell names


@pytest.mark.parametrize("name", ["MY-KEY", "a;touch /tmp/sidecar-pwned;b", "my.key", "1ST", "KEY\nX"])
def test_env_file_refuses_a_name_a_shell_cannot_source(run_sidecar, emulator, shm_dir, name):
    env_file = shm_dir / "env"
    run = run_sidecar(
        {name: kv("db-password"), "GOOD": kv("openai-key")}, command="render", check_args=("--env-file", str(env_file))
    )
    assert run.returncode == 65, run.stderr
    failure = run.failure_for(name)
    assert "not a shell name" in failure["error"] and "rename the variable" in failure["fix"]
    assert not env_file.exists(), "no env file is written when a name cannot be sourced"
    assert not Path("/tmp/sidecar-pwned").exists()
    fetched = emulator.admin.requests(kind="keyvault", path_contains="/secrets/openai-key")
    assert fetched, "one pass: the other references are fetched, so that their problems show in the same run"


def test_env_file_with_hostile_values_round_trips_through_sh_and_runs_nothing(run_sidecar, emulator, shm_dir, tmp_path):
    marker = tmp_path / "ran"
    hostile = {
        "QUOTES": 'it\'s "quoted" `x` $(touch ' + str(marker) + ")",
        "NEWLINES": "line1\nline2\n\nexport PWNED=1\n",
        "DOLLAR": "$HOME ${PATH} $((1+1)) \\ \\' ;&|<>",
        "UNICODE": "héllo ☃ \u2028",
    }
    emulator.admin.load(
        {"vaults": {"contoso-kv": {"secrets": {f"h-{k.lower()}": {"value": v} for k, v in hostile.items()}}}}
    )
    env = {k: kv(f"h-{k.lower()}") for k in hostile}
    env["LATIN"] = "\udcff\udcfe literal bytes " + platform(f"keyvault:{KV}/secrets/db-password")  # finding 8
    env_file = shm_dir / "env"
    run = run_sidecar(
        env, command="render", check_args=("--env-file", str(env_file)), extra_secret_values=hostile.values()
    )
    assert run.returncode == 0, run.stderr
    exported, stderr = sourced_environment(env_file, tmp_path)
    for name, value in hostile.items():
        assert exported[name.encode()] == value.encode(), f"{name} did not round-trip"
    assert exported[b"LATIN"] == b"\xff\xfe literal bytes fake-db-password-7Qx"
    assert b"PWNED" not in exported and not marker.exists() and stderr == ""


# Finding 2: the default file name (the variable's name) is checked like file=NAME


def test_a_variable_name_is_never_a_path_outside_the_files_dir(run_sidecar, emulator, shm_dir):
    shm_dir.mkdir()
    files_dir = shm_dir / "files"
    outside = shm_dir / "outside"
    outside.write_text("keep me")
    name = "../outside"
    for options in ("?file", "?optional&file"):
        reference = kv("db-password" if options == "?file" else "no-such-secret", options=options)
        run = run_sidecar({name: reference, "SIDECAR_FILES_DIR": str(files_dir)})
        assert run.returncode == 65, run.stderr
        assert "file=NAME" in run.failure_for(name)["fix"]
        assert outside.read_text() == "keep me", "a secret outside SIDECAR_FILES_DIR was written or deleted"
    run = run_sidecar({name: kv("db-password")}, command="render", check_args=("--dir", str(files_dir)))
    assert run.returncode == 65 and "not a file name" in run.failure_for(name)["error"]
    assert outside.read_text() == "keep me"


def test_two_values_for_one_file_are_refused(run_sidecar, shm_dir):
    env = {"A": kv("db-password", options="?file=same"), "B": kv("openai-key", options="?file=same")}
    run = run_sidecar({**env, "SIDECAR_FILES_DIR": str(shm_dir)})
    assert run.returncode == 65 and {f["variable"] for f in run.failures()} == {"A", "B"}
    run = run_sidecar(
        {"env": kv("db-password")},
        command="render",
        check_args=("--dir", str(shm_dir), "--env-file", str(shm_dir / "env")),
    )
    assert run.returncode == 78 and "--env-file" in run.failure_for("env")["error"]


# Finding 3: SIDECAR_FILES_DIR is never followed through a link, and must be the sidecar's own


def test_a_planted_link_is_not_followed_nor_its_target_chowned(run_sidecar, shm_dir, tmp_path):
    target = tmp_path / "victim"
    target.mkdir()
    shm_dir.symlink_to(target)
    os.lchown(shm_dir, OUTSIDER_UID, OUTSIDER_UID)  # planted by another user
    env = {
        "K": kv("db-password", options="?file"),
        "SIDECAR_FILES_DIR": str(shm_dir),
        "SIDECAR_FILES_OWNER": "4321:4321",
    }
    for command in ("exec", "check"):
        run = run_sidecar(env, command=command)
        assert run.returncode == 78, run.stderr
        assert "symbolic link" in run.failure_for("K")["error"]
    assert list(target.iterdir()) == [] and target.stat().st_uid == os.geteuid(), "the link's target was touched"


def test_a_link_in_a_parent_of_the_files_dir_is_refused(run_sidecar, shm_dir):
    (shm_dir / "real").mkdir(parents=True)
    (shm_dir / "link").symlink_to(shm_dir / "real")
    run = run_sidecar({"K": kv("db-password", options="?file"), "SIDECAR_FILES_DIR": str(shm_dir / "link" / "files")})
    assert run.returncode == 78 and "symbolic link" in run.stderr
    assert list((shm_dir / "real").iterdir()) == []


@pytest.mark.parametrize(
    ("owner", "mode", "says"),
    [
        (OUTSIDER_UID, 0o700, f"owned by uid {OUTSIDER_UID}"),
        (0, 0o777, "writable by other users"),
        (0, 0o770, "writable by other users"),
    ],
)
def test_a_files_dir_another_user_owns_or_may_write_is_refused(run_sidecar, shm_dir, owner, mode, says):
    shm_dir.mkdir()
    os.chown(shm_dir, owner, owner)
    shm_dir.chmod(mode)
    env = {"K": kv("db-password", options="?file"), "SIDECAR_FILES_DIR": str(shm_dir)}
    for command in ("exec", "check"):
        run = run_sidecar(env, command=command)
        assert run.returncode == 78 and says in run.stderr, run.stderr
    assert list(shm_dir.iterdir()) == []
    run = run_sidecar({"K": kv("db-password")}, command="render", check_args=("--dir", str(shm_dir)))
    assert run.returncode == 78 and says in run.stderr


def test_swapping_the_files_dir_for_a_link_during_a_fetch_keeps_the_secret_in_memory(
    run_sidecar, emulator, shm_dir, tmp_path
):
    disk = tmp_path / "disk"
    disk.mkdir()
    moved = shm_dir.with_name(shm_dir.name + "-moved")
    # The first Key Vault request hangs (then the sidecar retries), which leaves time to swap the directory.
    emulator.admin.add_fault({"kind": "keyvault", "hang_s": 3, "count": 1})
    env = {"K": kv("db-password", options="?file"), "SIDECAR_FILES_DIR": str(shm_dir)}
    try:
        with ThreadPoolExecutor(1) as pool:
            running = pool.submit(run_sidecar, env)
            deadline = time.monotonic() + WAIT_S
            while not emulator.admin.requests(kind="keyvault"):
                assert time.monotonic() < deadline, "the sidecar sent no Key Vault request"
                assert not running.done(), "the sidecar ended before its first Key Vault request"
                time.sleep(0.05)
            shm_dir.rename(moved)
            shm_dir.symlink_to(disk)
            run = running.result(timeout=WAIT_S * 2)
        assert run.returncode == 0, run.stderr
        assert list(disk.iterdir()) == [], "the secret was written to disk through the swapped-in link"
        assert (moved / "K").read_text() == "fake-db-password-7Qx" and fs_type(moved) == "tmpfs"
    finally:
        if moved.exists():
            for entry in moved.iterdir():
                entry.unlink()
            moved.rmdir()


# Finding 5: ports


@pytest.mark.parametrize("port", ["abc", "99999", "+443", "0", "", "-1"])
def test_a_bad_port_is_65_and_check_still_reports_every_other_variable(run_sidecar, port):
    env = {
        "A_BAD": f"keyvault:https://contoso-kv.vault.azure.net:{port}/secrets/db-password",
        "B_BAD": "${{" + f"keyvault:https://contoso-kv.vault.azure.net:{port}/secrets/x" + "}}",
        "C_BAD": kv("x", options="?bogus"),
    }
    run = run_sidecar(env, command="check", check_args=("--format", "json"))
    assert run.returncode == 65, run.stderr
    rows = {row["name"]: row for row in json.loads(run.stdout)}
    assert set(rows) == set(env) and all(row["status"] == "malformed" for row in rows.values())
    assert "Traceback" not in run.stderr


@pytest.mark.parametrize(
    "endpoint",
    [
        "https://management.azure.com:abc",
        "https://management.azure.com:99999",
        "https://management.azure.com:0",
        "https://user:pw@management.azure.com",
        "https://management.azure.com/?api-version=1",
        "https://management.azure.com/#frag",
        "https://[::1/",
    ],
)
def test_a_bad_arm_endpoint_is_78(run_sidecar, endpoint):
    run = run_sidecar({"C": "azureml://connections/aoai-conn/target", "SIDECAR_ARM_ENDPOINT": endpoint})
    assert run.returncode == 78 and "SIDECAR_ARM_ENDPOINT" in run.stderr and "Traceback" not in run.stderr
    assert "pw@" not in run.stderr


# Finding 6: every numeric setting is bounded


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("SIDECAR_TIMEOUT", "inf"),
        ("SIDECAR_TIMEOUT", "1e309"),
        ("SIDECAR_TIMEOUT", "9999999999"),
        ("SIDECAR_TIMEOUT", "nan"),
        ("SIDECAR_TIMEOUT", "-5"),
        ("SIDECAR_MAX_CONCURRENCY", "100000000"),
        ("SIDECAR_MAX_CONCURRENCY", "1.5"),
        ("SIDECAR_MAX_ATTEMPTS", "99999999999999999999"),
        ("SIDECAR_FILES_OWNER", "99999999999"),
        ("SIDECAR_FILES_OWNER", "\u00b9"),
    ],
)
def test_an_unbounded_number_is_78(run_sidecar, name, value):
    run = run_sidecar({"K": kv("db-password"), name: value})
    assert run.returncode == 78, run.stderr
    assert name in run.stderr and "Traceback" not in run.stderr


# Finding 7: JSON nested thousands deep


def test_deeply_nested_json_with_a_pointer_is_65(run_sidecar, emulator):
    deep = "[" * 100_000 + "]" * 100_000
    emulator.admin.load({"vaults": {"contoso-kv": {"secrets": {"deep": {"value": deep}}}}})
    run = run_sidecar({"D": kv("deep", options="#/0")})
    assert run.returncode == 65, run.stderr[-2000:]
    assert "nested too deeply" in run.failure_for("D")["error"] and "Traceback" not in run.stderr


# Finding 8 (render with invalid UTF-8 in literal text) is covered by the round-trip test above and:


def test_render_dir_keeps_the_bytes_of_literal_text(run_sidecar, shm_dir):
    value = "\udcff" + platform(f"keyvault:{KV}/secrets/db-password")
    run = run_sidecar({"LATIN": value}, command="render", check_args=("--dir", str(shm_dir)))
    assert run.returncode == 0, run.stderr
    assert (shm_dir / "LATIN").read_bytes() == b"\xfffake-db-password-7Qx"


# Finding 10: a value too large for exec


def test_a_value_too_large_for_exec_is_65_and_check_predicts_it(run_sidecar, emulator, shm_dir):
    large = "L" * 200_000
    emulator.admin.load({"vaults": {"contoso-kv": {"secrets": {"large": {"value": large}}}}})
    for command in ("exec", "check"):
        run = run_sidecar({"BIG": kv("large")}, command=command, extra_secret_values=[large])
        assert run.returncode == 65, run.stderr
        assert "?file" in run.failure_for("BIG")["fix"]
    run = run_sidecar(
        {"BIG": kv("large", options="?file"), "SIDECAR_FILES_DIR": str(shm_dir)}, extra_secret_values=[large]
    )
    assert run.returncode == 0 and (shm_dir / "BIG").read_text() == large


# Finding 11: a default, its tail after a stray '&' or '#', or a password never shows

SENSITIVE = ["Pa55Default", "S3cretTail", "S3cret/Tail"]


@pytest.mark.parametrize(
    "value",
    [
        kv("db-password", options="?default=Pa55Default&S3cretTail"),
        kv("db-password", options="?default=Pa55Default#S3cretTail"),
        kv("db-password", options="?default=Pa55Default#/S3cretTail"),
        kv("no-such-secret", options="?default=Pa55Default&file=S3cret/Tail"),
        "keyvault:https://app:S3cretTail@contoso-kv.vault.azure.net/secrets/db-password",
        "${{keyvault:https://app:S3cretTail@contoso-kv.vault.azure.net/secrets/db-password}}",
        "${{keyvault:https://contoso-kv.vault.azure.net/secrets/db-password?default=Pa55Default}}",
    ],
    # Named, not shown: the ids are test output too.
    ids=["tail-amp", "tail-hash", "tail-pointer", "tail-file", "password", "password-platform", "default-platform"],
)
@pytest.mark.parametrize("command", ["exec", "check"])
def test_defaults_their_tails_and_passwords_never_appear(run_sidecar, value, command):
    run = run_sidecar({"K": value}, command=command, extra_secret_values=SENSITIVE)
    assert run.returncode == 65, run.stderr
    assert "Traceback" not in run.stderr


# Finding 12: SIDECAR_CONNECT_TO takes loopback IP literals only


@pytest.mark.parametrize("address", ["localhost", "LOCALHOST", "ip6-localhost", "127.0.0.1.nip.io"])
def test_connect_to_refuses_names(run_sidecar, address):
    run = run_sidecar({"K": kv("db-password"), "SIDECAR_CONNECT_TO": f"*.vault.azure.net:443:{address}:8443"})
    assert run.returncode == 78 and "loopback IP" in run.stderr


# Finding 13: smaller validation gaps


def test_file_names_are_matched_whole_and_may_be_255_bytes(run_sidecar, shm_dir):
    run = run_sidecar({"K": kv("db-password", options="?file=abc%0A"), "SIDECAR_FILES_DIR": str(shm_dir)})
    assert run.returncode == 65 and not (shm_dir / "abc\n").exists()
    long_name = "n" * 255
    run = run_sidecar({"K": kv("db-password", options=f"?file={long_name}"), "SIDECAR_FILES_DIR": str(shm_dir)})
    assert run.returncode == 0, run.stderr
    assert (shm_dir / long_name).read_text() == "fake-db-password-7Qx"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("AZUREML_ARM_RESOURCEGROUP", "x/../../providers/Microsoft.Evil"),
        ("AZUREML_ARM_RESOURCEGROUP", "rg."),
        ("AZUREML_ARM_RESOURCEGROUP", "rg-ml\nx"),
        ("AZUREML_ARM_WORKSPACE_NAME", "ws/../other"),
        ("AZUREML_ARM_WORKSPACE_NAME", "ws-main?x=1"),
        ("AZUREML_ARM_SUBSCRIPTION", "00000000-0000-4000-8000-0000000000a1/resourceGroups/x"),
    ],
)
def test_workspace_settings_are_checked_before_they_reach_the_arm_path(run_sidecar, emulator, name, value):
    run = run_sidecar({"C": "azureml://connections/aoai-conn/target", name: value})
    assert run.returncode == 78 and name in run.failure_for("C")["error"], run.stderr
    assert emulator.admin.requests(kind="arm") == [], "no ARM request may be sent"
    assert run_sidecar({"K": kv("db-password"), name: value}).returncode == 0, "only connections need the workspace"


def test_format_pem_on_plain_text_does_not_blame_a_decode_option(run_sidecar, shm_dir):
    run = run_sidecar({"K": kv("db-password", options="?format=pem&file"), "SIDECAR_FILES_DIR": str(shm_dir)})
    failure = run.failure_for("K")
    assert run.returncode == 65 and "format=pem" in failure["error"] and "decode=base64" not in failure["fix"]


def test_client_id_must_be_a_guid(run_sidecar, emulator):
    run = run_sidecar({"K": kv("db-password"), "SIDECAR_CLIENT_ID": "x&resource=https://evil.example"})
    assert run.returncode == 78 and "SIDECAR_CLIENT_ID" in run.stderr
    assert emulator.admin.requests(kind="imds") == [], "a client id that is not a GUID never reaches a query string"


def test_an_unreadable_ca_bundle_is_78_only_when_something_is_fetched(run_sidecar, tmp_path):
    missing = str(tmp_path / "no-such-ca.pem")
    run = run_sidecar({"K": kv("db-password"), "REQUESTS_CA_BUNDLE": missing, "SSL_CERT_FILE": missing})
    assert run.returncode == 78 and "REQUESTS_CA_BUNDLE" in run.stderr
    assert run_sidecar({"REQUESTS_CA_BUNDLE": missing}).returncode == 0


def test_an_internal_error_is_70_with_its_place_and_no_traceback():
    """The net under every other path: an unexpected exception is named by type and place, never by its text."""
    bug = (
        "import sidecar.cli\n"
        "def load_settings():\n"
        "    raise ValueError('Sup3rS3cretDefault')\n"
        "sidecar.cli.load_settings = load_settings\n"
        "sidecar.cli.main(['check'])\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", bug], env={"PATH": os.environ["PATH"]}, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 70, done.stderr
    event = json.loads(done.stderr.strip().splitlines()[-1])
    assert (event["event"], event["error"], event["at"]) == ("internal error", "ValueError", "<string>:3")
    assert "Sup3rS3cretDefault" not in done.stderr and "Traceback" not in done.stderr


def test_files_dir_is_created_0700_and_reused(run_sidecar, shm_dir):
    files_dir = shm_dir / "a" / "b"
    run = run_sidecar({"K": kv("db-password", options="?file"), "SIDECAR_FILES_DIR": str(files_dir)})
    assert run.returncode == 0, run.stderr
    assert stat.S_IMODE(files_dir.stat().st_mode) == 0o700
    assert run_sidecar({"K": kv("db-password", options="?file"), "SIDECAR_FILES_DIR": str(files_dir)}).returncode == 0


def test_the_kubernetes_layout_renders_into_a_subdirectory_of_a_0777_volume(run_sidecar, shm_dir, tmp_path):
    """docker/kubernetes/secrets-init.yaml: kubelet makes an emptyDir 0777, so the sidecar renders below it."""
    shm_dir.mkdir()
    shm_dir.chmod(0o777)
    run = run_sidecar({"K": kv("db-password")}, command="render", check_args=("--dir", str(shm_dir)))
    assert run.returncode == 78 and "subdirectory" in run.failure_for("K")["fix"]
    values = shm_dir / "values"
    env = {"K": kv("db-password"), "TLS": kv("db-password", options="?file=tls.txt")}
    run = run_sidecar(env, command="render", check_args=("--dir", str(values), "--env-file", str(values / ".env")))
    assert run.returncode == 0, run.stderr
    assert stat.S_IMODE(values.stat().st_mode) == 0o700
    assert sorted(entry.name for entry in values.iterdir()) == [".env", "K", "tls.txt"]
    exported, _ = sourced_environment(values / ".env", tmp_path)
    assert exported[b"K"] == b"fake-db-password-7Qx" and exported[b"TLS"] == str(values / "tls.txt").encode()
