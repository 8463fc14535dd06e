"""The real azure-identity and azure-keyvault-secrets clients, unmodified, against the emulator.

Each check runs client_probe.py in a child process with the environment a client needs
(EmulatorProcess.env), because the credentials read os.environ when they are constructed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from emu_helpers import ARM, SYSTEM, USER, VAULT, WS_MAIN

PROBE = Path(__file__).with_name("client_probe.py")
REPO = Path(__file__).resolve().parents[2]
OPENAI = ["secret", VAULT, "openai-key", None]
OPENAI_V1 = ["secret", VAULT, "openai-key", "00000000000000000000000000000a01"]
CHINA = ["secret", "https://contoso-kv-cn.vault.azure.cn", "cn-secret", None]
USGOV = ["secret", "https://contoso-kv-gov.vault.usgovcloudapi.net", "gov-secret", None]
CONNECTION = ["arm", f"{ARM}{WS_MAIN}/connections/custom-conn/listsecrets"]


def probe(emulator, flavour, operations, client_id=None):
    env = {**os.environ, **emulator.env(flavour), "PROBE_CLIENT_ID": client_id or ""}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    for variable in ("MSI_ENDPOINT", "MSI_SECRET", "IDENTITY_ENDPOINT", "IDENTITY_HEADER", "AZURE_CLIENT_ID"):
        if variable not in emulator.env(flavour):
            env.pop(variable, None)
    done = subprocess.run(
        [sys.executable, str(PROBE), json.dumps(operations)], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("flavour", ["imds", "azureml"])
def test_system_assigned_identity_reads_all_clouds_latest_and_pinned(emulator, flavour):
    results = probe(emulator, flavour, [OPENAI, OPENAI_V1, CHINA, USGOV, CONNECTION])
    assert results[0]["value"] == "fake-openai-key-v3"
    assert results[0]["version"] == "00000000000000000000000000000a03"
    assert results[1]["value"] == "fake-openai-key-v1"
    assert results[2]["value"] == "fake-cn-value"
    assert results[3]["value"] == "fake-gov-value"
    assert results[4]["status"] == 200
    assert results[4]["body"]["properties"]["credentials"]["keys"]["API_KEY"] == "fake-custom-api-key"

    counters = emulator.admin.counters()
    # One token per resource: the credential caches it; one challenge per vault host.
    assert set(counters["token_requests"][SYSTEM]) == {
        "https://vault.azure.net",
        "https://vault.azure.cn",
        "https://vault.usgovcloudapi.net",
        "https://management.azure.com",
    }
    assert counters["keyvault_gets"]["contoso-kv"]["openai-key"]["200"] == 2
    assert counters["by_kind"]["imds" if flavour == "imds" else "msi"] == {"200": 4}


@pytest.mark.parametrize("flavour", ["imds", "azureml"])
def test_user_assigned_identity(emulator, flavour):
    results = probe(emulator, flavour, [OPENAI], client_id=USER)
    assert results[0]["value"] == "fake-openai-key-v3"
    assert emulator.admin.counters()["token_requests"] == {USER: {"https://vault.azure.net": {"200": 1}}}


def test_secret_client_rides_out_a_503_with_retry_after(emulator):
    emulator.admin.add_fault({"kind": "keyvault", "path": "^/secrets/db-password", "status": 503, "retry_after": 0})
    results = probe(emulator, "imds", [["secret", VAULT, "db-password", None]])
    assert results[0]["value"] == "fake-db-password-7Qx"
    assert emulator.admin.counters()["faulted"] == {"keyvault": 1}
