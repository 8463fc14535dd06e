"""Per-reference options, file delivery and `sidecar render`, end to end against the emulator."""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import NameOID
from sidecar_helpers import RECORDER, fs_type, kv

B64_TEXT = "fake-b64-plain-text"
BINARY = b"\x00\x01fake-binary-\xff\xfe"


def make_pfx() -> tuple[bytes, x509.Certificate, x509.Certificate, bytes]:
    """A CA-signed leaf certificate with its chain and key, as Key Vault stores a certificate's secret."""
    now = dt.datetime.now(dt.timezone.utc)

    def certificate(subject: str, issuer: str, key, signing_key, ca: bool) -> x509.Certificate:
        return (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
            .sign(signing_key, hashes.SHA256())
        )

    ca_key, leaf_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = certificate("fake test CA", "fake test CA", ca_key, ca_key, True)
    leaf = certificate("web.example.invalid", "fake test CA", leaf_key, ca_key, False)
    pfx = pkcs12.serialize_key_and_certificates(b"web", leaf_key, leaf, [ca], serialization.NoEncryption())
    key_pem = leaf_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return pfx, leaf, ca, key_pem


@pytest.fixture
def extra_secrets(emulator):
    pfx, leaf, ca, key_pem = make_pfx()
    emulator.admin.load(
        {
            "vaults": {
                "contoso-kv": {
                    "secrets": {
                        "b64-text": {"value": base64.b64encode(B64_TEXT.encode()).decode()},
                        "b64-binary": {"value": base64.b64encode(BINARY).decode()},
                        "web-cert": {"value": base64.b64encode(pfx).decode(), "contentType": "application/x-pkcs12"},
                    }
                }
            }
        }
    )
    values = [B64_TEXT, base64.b64encode(BINARY).decode(), base64.b64encode(pfx).decode(), key_pem.decode()]
    return {"leaf": leaf, "ca": ca, "key_pem": key_pem, "values": values}


def test_optional_missing_secret_removes_the_variable_with_a_warning(run_sidecar):
    run = run_sidecar({"MAYBE": kv("no-such-secret", options="?optional")})
    assert run.returncode == 0, run.stderr
    assert "MAYBE" not in run.child_env
    warning = next(event for event in run.events if event["event"] == "warning")
    assert warning["variable"] == "MAYBE" and "optional and missing" in warning["warning"]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (kv("no-such-secret", options="?default=fallback"), "fallback"),
        (kv("openai-key/ffffffffffffffffffffffffffffffff", options="?default=old"), "old"),
        (kv("no-such-secret", options="?default=a%26b%3Dc%23d%25"), "a&b=c#d%"),
        (kv("no-such-secret", options="?optional&default="), ""),
        ("azureml://connections/aoai-conn/credentials/password?default=none", "none"),
        ("azureml://connections/aoai-conn/metadata/Region?default=westeurope", "westeurope"),
        ("azureml://connections/no-such-conn/target?default=https://x.invalid/", "https://x.invalid/"),
        (kv("json-config", options="?default=d#/missing"), "d"),
        (kv("db-password", options="?default=unused"), "fake-db-password-7Qx"),
    ],
    ids=["secret", "version", "percent-encoded", "empty", "credential", "metadata", "connection", "pointer", "present"],
)
def test_default_for_every_kind_of_missing(run_sidecar, value, expected):
    run = run_sidecar({"V": value})
    assert run.returncode == 0, run.stderr
    assert run.child_env["V"] == expected


@pytest.mark.parametrize(
    ("env", "code"),
    [
        ({"V": kv("other", options="?default=x", vault="https://restricted-kv.vault.azure.net")}, 77),
        ({"V": kv("disabled-secret", options="?optional")}, 77),
        ({"V": "azureml://connections/locked-conn/target?optional", "AZUREML_ARM_WORKSPACE_NAME": "ws-locked"}, 77),
        ({"V": kv("db-password", options="?optional"), "SIDECAR_MAX_ATTEMPTS": "2"}, 69),
    ],
    ids=["rbac", "disabled", "arm-rbac", "unavailable"],
)
def test_optional_does_not_hide_a_broken_deployment(run_sidecar, emulator, env, code):
    emulator.admin.add_fault({"kind": "keyvault", "path": "/secrets/db-password", "status": 503, "count": None})
    run = run_sidecar(env)
    assert run.returncode == code, run.stderr
    assert run.child is None


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (kv("json-config", options="#/password"), "fake-json-password"),
        (kv("json-config", options="#/port"), "5432"),
        ("azureml://connections/aoai-conn#/properties/credentials/key", "fake-aoai-key-123"),
        ("azureml://connections/aoai-conn#/properties/metadata", '{"ApiType":"azure","ApiVersion":"2024-02-01"}'),
    ],
    ids=["string", "number", "connection-json", "object"],
)
def test_json_pointer_selects_a_field(run_sidecar, value, expected):
    run = run_sidecar({"V": value})
    assert run.returncode == 0, run.stderr
    assert run.child_env["V"] == expected


def test_pointer_errors_name_the_pointer_never_the_value(run_sidecar):
    run = run_sidecar({"MISS": kv("json-config", options="#/pass~1word"), "NOTJSON": kv("db-password", options="#/x")})
    assert run.returncode == 65, run.stderr
    missing = run.failure_for("MISS")
    assert missing["exit_code"] == 66 and "/pass~1word" in missing["error"]
    assert "app" not in missing["error"] and "5432" not in missing["error"], "the document must not be quoted"
    assert run.failure_for("NOTJSON")["exit_code"] == 65


def test_decode_base64_to_text(run_sidecar, extra_secrets):
    run = run_sidecar({"V": kv("b64-text", options="?decode=base64")}, extra_secret_values=extra_secrets["values"])
    assert run.returncode == 0, run.stderr
    assert run.child_env["V"] == B64_TEXT


def test_binary_value_in_an_environment_variable_is_65_and_says_use_a_file(run_sidecar, extra_secrets):
    run = run_sidecar({"BIN": kv("b64-binary", options="?decode=base64")}, extra_secret_values=extra_secrets["values"])
    failure = run.failure_for("BIN")
    assert run.returncode == 65 and failure["exit_code"] == 65
    assert "?file" in failure["fix"]


def test_file_delivery_writes_0400_file_owned_by_the_server_user_and_sets_the_path(run_sidecar, extra_secrets, shm_dir):
    run = run_sidecar(
        {"BIN": kv("b64-binary", options="?decode=base64&file"), "SIDECAR_FILES_DIR": str(shm_dir)},
        extra_secret_values=extra_secrets["values"],
    )
    assert run.returncode == 0, run.stderr
    path = Path(run.child_env["BIN"])
    assert path == shm_dir / "BIN"
    assert path.read_bytes() == BINARY
    info = path.stat()
    assert stat.S_IMODE(info.st_mode) == 0o400
    assert (info.st_uid, info.st_gid) == (os.geteuid(), os.getegid())
    assert [entry.name for entry in shm_dir.iterdir()] == ["BIN"], "no temporary file may be left behind"


def test_pfx_certificate_to_pem_chain_and_key(run_sidecar, extra_secrets, shm_dir):
    run = run_sidecar(
        {"TLS": kv("web-cert", options="?format=pem&file=tls.pem"), "SIDECAR_FILES_DIR": str(shm_dir)},
        extra_secret_values=extra_secrets["values"],
    )
    assert run.returncode == 0, run.stderr
    pem = Path(run.child_env["TLS"]).read_bytes()
    assert Path(run.child_env["TLS"]).name == "tls.pem"
    certificates = x509.load_pem_x509_certificates(pem)
    assert [cert.subject for cert in certificates] == [extra_secrets["leaf"].subject, extra_secrets["ca"].subject]
    key = serialization.load_pem_private_key(pem[pem.index(b"-----BEGIN PRIVATE KEY-----") :], password=None)
    assert key.public_key() == extra_secrets["leaf"].public_key()


def test_format_pem_on_a_value_that_is_no_certificate_is_65(run_sidecar, shm_dir):
    run = run_sidecar({"TLS": kv("db-password", options="?format=pem&file"), "SIDECAR_FILES_DIR": str(shm_dir)})
    assert run.returncode == 65, run.stderr
    assert not shm_dir.exists() or not any(shm_dir.iterdir()), "nothing is written when a start fails"


def test_files_are_replaced_atomically_on_the_next_run(run_sidecar, emulator, shm_dir):
    env = {"K": kv("db-password", options="?file"), "SIDECAR_FILES_DIR": str(shm_dir)}
    assert run_sidecar(env).returncode == 0
    path = shm_dir / "K"
    first_inode = path.stat().st_ino
    emulator.admin.load({"vaults": {"contoso-kv": {"secrets": {"db-password": {"value": "fake-rotated-pw"}}}}})
    run = run_sidecar(env, extra_secret_values=["fake-rotated-pw"])
    assert run.returncode == 0, run.stderr
    assert path.read_bytes() == b"fake-rotated-pw", "the old content must be replaced, not appended to"
    assert path.stat().st_ino != first_inode, "a new file is renamed over the old one"
    assert sorted(entry.name for entry in shm_dir.iterdir()) == ["K"]


def test_an_optional_file_whose_secret_is_gone_is_removed(run_sidecar, shm_dir):
    stale = shm_dir / "GONE"
    shm_dir.mkdir()
    stale.write_text("fake-stale-from-last-run")
    run = run_sidecar({"GONE": kv("no-such-secret", options="?optional&file"), "SIDECAR_FILES_DIR": str(shm_dir)})
    assert run.returncode == 0, run.stderr
    assert not stale.exists()
    assert "GONE" not in run.child_env


def test_a_files_dir_on_disk_is_refused_unless_allowed(run_sidecar, emulator, tmp_path):
    assert fs_type(tmp_path) != "tmpfs", "precondition: tmp_path is on disk"
    env = {"K": kv("db-password", options="?file"), "SIDECAR_FILES_DIR": str(tmp_path / "files")}
    run = run_sidecar(env)
    assert run.returncode == 78, run.stderr
    assert "SIDECAR_FILES_ALLOW_DISK" in run.failures()[0]["fix"]
    assert emulator.admin.requests() == [], "nothing is fetched for a start that cannot deliver"
    run = run_sidecar({**env, "SIDECAR_FILES_ALLOW_DISK": "true"})
    assert run.returncode == 0, run.stderr
    assert (tmp_path / "files" / "K").read_text() == "fake-db-password-7Qx"


def test_files_owner_setting_chowns_the_file(run_sidecar, shm_dir):
    if os.geteuid() != 0:
        run = run_sidecar(
            {
                "K": kv("db-password", options="?file"),
                "SIDECAR_FILES_DIR": str(shm_dir),
                "SIDECAR_FILES_OWNER": "4321:4321",
            }
        )
        assert run.returncode == 78, "only root can give files away"
        return
    run = run_sidecar(
        {"K": kv("db-password", options="?file"), "SIDECAR_FILES_DIR": str(shm_dir), "SIDECAR_FILES_OWNER": "4321:4321"}
    )
    assert run.returncode == 0, run.stderr
    info = (shm_dir / "K").stat()
    assert (info.st_uid, info.st_gid) == (4321, 4321)
    assert (shm_dir.stat().st_uid, stat.S_IMODE(shm_dir.stat().st_mode)) == (4321, 0o700)


@pytest.mark.parametrize(
    "value",
    [
        "${{" + kv("db-password", options="?optional") + "}}",
        kv("db-password", options="?bogus"),
        kv("db-password", options="?optional&optional"),
        kv("db-password", options="?optional=yes"),
        kv("db-password", options="?default"),
        kv("db-password", options="?decode=hex"),
        kv("db-password", options="?format=der"),
        kv("db-password", options="?file=../escape"),
        kv("db-password", options="#no-slash"),
    ],
    ids=[
        "platform-form",
        "unknown",
        "twice",
        "optional-value",
        "default-empty",
        "decode",
        "format",
        "file-name",
        "pointer",
    ],
)
def test_malformed_options_are_65(run_sidecar, emulator, value):
    run = run_sidecar({"V": value})
    assert run.returncode == 65, run.stderr
    assert run.failure_for("V")["exit_code"] == 65
    assert emulator.admin.requests() == []


def test_all_options_combined(run_sidecar, emulator, shm_dir):
    emulator.admin.load(
        {
            "vaults": {
                "contoso-kv": {
                    "secrets": {"bundle": {"value": json.dumps({"tls": {"b64": base64.b64encode(BINARY).decode()}})}}
                }
            }
        }
    )
    run = run_sidecar(
        {
            "B": kv("bundle", options="?optional&decode=base64&file=blob.bin#/tls/b64"),
            "C": kv("no-such", options="?default=Zm9v&decode=base64&file#/x"),
            "SIDECAR_FILES_DIR": str(shm_dir),
        },
        extra_secret_values=[base64.b64encode(BINARY).decode()],
    )
    assert run.returncode == 0, run.stderr
    assert Path(run.child_env["B"]).read_bytes() == BINARY
    assert Path(run.child_env["C"]).read_bytes() == b"Zm9v", "a default is used as given, without the transforms"


def test_check_shows_options_and_where_each_value_goes(run_sidecar, shm_dir):
    run = run_sidecar(
        {
            "F": kv("db-password", options="?file=pw"),
            "D": kv("no-such-secret", options="?default=secret-fallback"),
            "U": kv("no-such-secret", options="?optional"),
            "E": kv("json-config", options="#/user"),
            "SIDECAR_FILES_DIR": str(shm_dir),
        },
        command="check",
        check_args=("--format", "json"),
        extra_secret_values=["secret-fallback"],
    )
    assert run.returncode == 0, run.stderr
    rows = {row["name"]: row for row in json.loads(run.stdout)}
    assert rows["F"]["destination"] == f"file:{shm_dir}/pw" and rows["F"]["reference"].endswith("?file=pw")
    assert rows["D"]["reference"].endswith("?default=<15 chars>") and rows["D"]["destination"] == "env"
    assert rows["U"]["destination"] == "unset"
    assert rows["E"]["reference"].endswith("#/user") and rows["E"]["length"] == 3
    assert not shm_dir.exists(), "check writes no file"


def test_render_writes_files_and_an_env_file_that_a_second_process_reads(run_sidecar, shm_dir, tmp_path):
    env = {
        "OPENAI_KEY": "${{" + kv("openai-key") + "}}",
        "DSN": "postgres://app:${{" + kv("db-password") + "}}@db/x",
        "MULTI": kv("multiline"),
        "QUOTE": kv("no-such", options="?default=it%27s%20%22quoted%22%20%24HOME"),
        "CERT": kv("db-password", options="?file=pw.txt"),
        "GONE": kv("no-such", options="?optional"),
    }
    render_dir, env_file = shm_dir / "out", shm_dir / "env"
    run = run_sidecar(env, command="render", check_args=("--dir", str(render_dir), "--env-file", str(env_file)))
    assert run.returncode == 0, run.stderr
    assert sorted(entry.name for entry in render_dir.iterdir()) == ["DSN", "MULTI", "OPENAI_KEY", "QUOTE", "pw.txt"]
    assert (render_dir / "OPENAI_KEY").read_text() == "fake-openai-key-v3"
    assert (render_dir / "pw.txt").read_text() == "fake-db-password-7Qx"
    for entry in [*render_dir.iterdir(), env_file]:
        assert stat.S_IMODE(entry.stat().st_mode) == 0o400
    # The server container: source the env file, then run.
    record = tmp_path / "server.json"
    subprocess.run(
        ["sh", "-c", f'set -a; . "{env_file}"; set +a; exec "{sys.executable}" "{RECORDER}" "{record}"'],
        env={"PATH": os.environ["PATH"]},
        check=True,
    )
    seen = json.loads(record.read_text())["env"]
    assert seen["OPENAI_KEY"] == "fake-openai-key-v3"
    assert seen["DSN"] == "postgres://app:fake-db-password-7Qx@db/x"
    assert seen["MULTI"] == "fake-line-1\nfake-line-2"
    assert seen["QUOTE"] == 'it\'s "quoted" $HOME'
    assert Path(seen["CERT"]).read_text() == "fake-db-password-7Qx"
    assert "GONE" not in seen


def test_render_fails_like_exec_and_writes_nothing(run_sidecar, shm_dir):
    run = run_sidecar(
        {"OK": kv("db-password"), "MISSING": kv("no-such-secret")}, command="render", check_args=("--dir", str(shm_dir))
    )
    assert run.returncode == 66, run.stderr
    assert not shm_dir.exists() or not any(shm_dir.iterdir())


def test_render_needs_a_destination_and_refuses_disk(run_sidecar, tmp_path):
    assert run_sidecar({}, command="render").returncode == 64
    run = run_sidecar({"K": kv("db-password")}, command="render", check_args=("--dir", str(tmp_path / "out")))
    assert run.returncode == 78, run.stderr
