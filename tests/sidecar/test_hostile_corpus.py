"""A corpus of hostile environments (every hardening finding, and the shapes of the SSRF tests) run
through `exec`, `check` and `render`: each must end in a documented exit code, with no traceback and
no value, token, default or password in stdout or stderr.
"""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path

import pytest
from sidecar_helpers import KV, documented_exit_codes, kv, platform

SENSITIVE = ["Pa55Default", "S3cretTail", "S3cret/Tail", "UserPa55"]
DEEP_JSON = "[" * 100_000 + "]" * 100_000
LARGE = "L" * 200_000
CONNECTION = "azureml://connections/aoai-conn/target"
OUTSIDE = Path("/tmp/sidecar-corpus")  # what the path and shell-name cases would create if they escaped
EXIT_CODES = documented_exit_codes()

CORPUS: dict[str, dict[str, str]] = {
    # 1: names an env file cannot hold
    "shell-names": {"MY-KEY": kv("db-password"), "a;touch /tmp/sidecar-corpus;b": kv("openai-key"), "x.y": kv("x-y")},
    # 2: names that would be paths
    "path-names": {"../../../tmp/sidecar-corpus": kv("db-password", options="?file")},
    "path-names-optional": {"../sidecar-corpus": kv("no-such-secret", options="?optional&file")},
    # 3: files directories that are links, not directories, or relative
    "files-dir-link": {"K": kv("db-password", options="?file"), "SIDECAR_FILES_DIR": "/proc/self/cwd/files"},
    "files-dir-not-a-dir": {"K": kv("db-password", options="?file"), "SIDECAR_FILES_DIR": "/dev/null/files"},
    "files-dir-relative": {"K": kv("db-password", options="?file"), "SIDECAR_FILES_DIR": "files"},
    # 5: ports
    **{
        f"port-{port or 'empty'}": {"K": f"keyvault:https://contoso-kv.vault.azure.net:{port}/secrets/db-password"}
        for port in ("abc", "99999", "+443", "0", "", "-1", "4430")
    },
    "port-arm": {"C": CONNECTION, "SIDECAR_ARM_ENDPOINT": "https://management.azure.com:abc"},
    "ipv6-bracket": {"K": "keyvault:https://[::1/secrets/x", "P": platform("keyvault:https://[::1]:443/secrets/x")},
    # 6: numbers
    **{f"timeout-{value}": {"K": kv("db-password"), "SIDECAR_TIMEOUT": value} for value in ("inf", "1e309", "nan")},
    "timeout-huge": {"K": kv("db-password"), "SIDECAR_TIMEOUT": "9999999999"},
    "concurrency-huge": {"K": kv("db-password"), "SIDECAR_MAX_CONCURRENCY": "99999999999999999999"},
    "attempts-float": {"K": kv("db-password"), "SIDECAR_MAX_ATTEMPTS": "1e3"},
    "owner-huge": {"K": kv("db-password", options="?file"), "SIDECAR_FILES_OWNER": "99999999999:1"},
    # 7: deep JSON
    "deep-json": {"D": kv("corpus-deep", options="#/0")},
    # 8: invalid UTF-8 around a reference, and in names
    "latin-literal": {"LATIN": "\udcff\udcfe" + platform(f"keyvault:{KV}/secrets/db-password")},
    "latin-name": {"N\udcff": kv("db-password"), "M\nN": kv("openai-key")},
    # 10: too large for exec
    "too-large": {"BIG": kv("corpus-large")},
    # 11: defaults, their tails, passwords
    "default-amp": {"K": kv("db-password", options="?default=Pa55Default&S3cretTail")},
    "default-hash": {"K": kv("db-password", options="?default=Pa55Default#S3cretTail")},
    "default-pointer": {"K": kv("db-password", options="?default=Pa55Default#/S3cretTail")},
    "default-file": {"K": kv("no-such-secret", options="?default=Pa55Default&file=S3cret/Tail")},
    "password": {"K": "keyvault:https://app:UserPa55@contoso-kv.vault.azure.net/secrets/db-password"},
    "password-platform": {"K": platform("keyvault:https://app:UserPa55@contoso-kv.vault.azure.net/secrets/x")},
    "default-platform": {"K": platform(f"keyvault:{KV}/secrets/db-password?default=Pa55Default")},
    # 12: connect-to by name
    "connect-to-localhost": {"K": kv("db-password"), "SIDECAR_CONNECT_TO": "*.vault.azure.net:443:localhost:1"},
    # 13: smaller gaps
    "file-newline": {"K": kv("db-password", options="?file=abc%0A")},
    "file-255": {"K": kv("db-password", options="?file=" + "n" * 255)},
    "file-256": {"K": kv("db-password", options="?file=" + "n" * 256)},
    "workspace-path": {"C": CONNECTION, "AZUREML_ARM_RESOURCEGROUP": "x/../../providers/Microsoft.Evil"},
    "workspace-query": {"C": CONNECTION, "AZUREML_ARM_WORKSPACE_NAME": "ws-main?api-version=1"},
    "arm-user": {"C": CONNECTION, "SIDECAR_ARM_ENDPOINT": "https://app:UserPa55@management.azure.com"},
    "arm-query": {"C": CONNECTION, "SIDECAR_ARM_ENDPOINT": "https://management.azure.com/?x=1#y"},
    "arm-port-0": {"C": CONNECTION, "SIDECAR_ARM_ENDPOINT": "https://management.azure.com:0"},
    "pem-plain": {"K": kv("db-password", options="?format=pem&file")},
    "client-id": {"K": kv("db-password"), "SIDECAR_CLIENT_ID": "x&resource=https://evil.example"},
    "ca-missing": {"K": kv("db-password"), "REQUESTS_CA_BUNDLE": "/nonexistent/ca.pem"},
    # The SSRF tests' shapes: hosts outside the known clouds, plain HTTP, look-alike suffixes, other ARM hosts
    "ssrf-host": {"K": platform("keyvault:https://evil.example.com/secrets/token-thief")},
    "ssrf-suffix": {"K": kv("x", vault="https://kv.vault.azure.net.evil.com")},
    "ssrf-http": {"K": "keyvault:http://contoso-kv.vault.azure.net/secrets/db-password"},
    "ssrf-imds": {"K": "keyvault:https://169.254.169.254/secrets/x"},
    "ssrf-arm": {"C": CONNECTION, "SIDECAR_ARM_ENDPOINT": "https://management.example.com"},
    "ssrf-connect-to": {"K": kv("db-password"), "SIDECAR_CONNECT_TO": "*.vault.azure.net:443:10.0.0.5:443"},
    "ssrf-connection": {"C": "azureml://connections/../../../providers/x/credentials/key"},
}


@pytest.fixture
def corpus_secrets(emulator):
    emulator.admin.load(
        {"vaults": {"contoso-kv": {"secrets": {"corpus-deep": {"value": DEEP_JSON}, "corpus-large": {"value": LARGE}}}}}
    )


@pytest.mark.parametrize("command", ["exec", "check", "render"])
@pytest.mark.parametrize("case", sorted(CORPUS))
def test_hostile_environment(run_sidecar, corpus_secrets, case, command):
    out = Path("/dev/shm") / f"sidecar-corpus-{uuid.uuid4().hex}"
    OUTSIDE.unlink(missing_ok=True)
    env = {**CORPUS[case], "PYTHONIOENCODING": "utf-8:strict"}  # a locale whose stdout refuses stray bytes
    args = ("--dir", str(out / "values"), "--env-file", str(out / "env")) if command == "render" else ()
    try:
        run = run_sidecar(env, command=command, check_args=args, extra_secret_values=[*SENSITIVE, LARGE, DEEP_JSON])
        escaped = OUTSIDE.exists()
    finally:
        shutil.rmtree(out, ignore_errors=True)
        OUTSIDE.unlink(missing_ok=True)
    assert run.returncode in EXIT_CODES - {70}, run.stderr[-3000:]
    assert "Traceback" not in run.stdout + run.stderr
    assert not escaped, f"{OUTSIDE} was written: a name escaped its directory or ran as a command"
