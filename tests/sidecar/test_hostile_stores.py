"""Identity endpoints and stores that answer garbage: the run fails at once, says what was wrong, leaks nothing.

Each test starts small fake servers (fake_servers.py) that misbehave in a way the emulator cannot, runs
the real `sidecar check` against them over real sockets (TLS for Key Vault and ARM), and checks the
captured output for every token and value the fakes served.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Hashable

import pytest
from fake_servers import (
    ARM_HOST,
    FAIL_FAST_TIMEOUT_S,
    VAULT_HOST,
    FakeCA,
    FakeServer,
    Received,
    Reply,
    imds_issuing,
    make_fake_ca,
    run_check,
    serving,
    vault_answering,
)
from sidecar_helpers import WORKSPACE, SidecarRun

from sidecar.errors import UnavailableError
from sidecar.logs import Redactor
from sidecar.plan import Plan
from sidecar.references import Reference
from sidecar.resolve import Deadline, Pacer, fetch_all, fetch_with_retries
from sidecar.stores.base import Fetched, Store

# Distinctive, so that finding one in the output means it leaked.
TOKEN = "fake-imds-token-Qm7Zr2Xw9Lk4"
VAULT_VALUE = "fake-vault-value-Hx3Tn8Vb"
CONNECTION_KEY = "fake-connection-key-Pd5Ws1Jy"
MSI_SECRET = "fake-msi-secret-Ur6Ka0Ne"
SERVED = (TOKEN, VAULT_VALUE, CONNECTION_KEY, MSI_SECRET)

VAULT_URL = f"https://{VAULT_HOST}"
SECRET_ID = f"{VAULT_URL}/secrets/db-password/0123456789abcdef0123456789abcdef"
KV_REFERENCE = f"keyvault:{VAULT_URL}/secrets/db-password"
CONNECTION_REFERENCE = "azureml://connections/aoai-conn/credentials/key"
DEEP = 100_000  # levels of JSON nesting: deeper than any parser's or walker's recursion limit


@pytest.fixture(scope="module")
def fake_ca(tmp_path_factory) -> FakeCA:
    return make_fake_ca(str(tmp_path_factory.mktemp("fake-ca")))


def tls_env(ca: FakeCA, **servers: FakeServer) -> dict[str, str]:
    """SIDECAR_CONNECT_TO for the fake Key Vault / ARM hosts given (vault=, arm=), and trust in the fake CA."""
    hosts = {"vault": VAULT_HOST, "arm": ARM_HOST}
    rules = ",".join(f"{hosts[name]}:443:127.0.0.1:{server.port}" for name, server in servers.items())
    return {"SIDECAR_CONNECT_TO": rules, "REQUESTS_CA_BUNDLE": ca.ca_file, "SSL_CERT_FILE": ca.ca_file}


def identity_env(flavour: str, identity: FakeServer) -> dict[str, str]:
    address = f"http://127.0.0.1:{identity.port}"
    if flavour == "imds":
        return {"AZURE_POD_IDENTITY_AUTHORITY_HOST": address}
    return {"MSI_ENDPOINT": f"{address}/msi/token", "MSI_SECRET": MSI_SECRET}


def only_failure(run: SidecarRun, code: int) -> dict:
    """The one failure the run reported, after checking the exit code and that no traceback was printed."""
    assert run.returncode == code, f"expected exit {code}, got {run.returncode}; stderr:\n{run.stderr}"
    assert "Traceback" not in run.stdout + run.stderr, f"a traceback was printed:\n{run.stderr}"
    failures = run.failures()
    assert len(failures) == 1, f"expected one failure; stderr:\n{run.stderr}"
    assert failures[0]["exit_code"] == code
    assert failures[0]["fix"], "a failure must say how to fix it"
    return failures[0]


# --- Identity endpoints whose answer carries a token it cannot use ---------------------------------------------


@pytest.mark.parametrize("level", ["info", "debug"])
@pytest.mark.parametrize("flavour", ["imds", "azureml"])
@pytest.mark.parametrize(
    ("answer", "problem"),
    [
        (Reply(200, {"access_token": TOKEN, "token_type": "Bearer"}), "expires"),
        (Reply(200, str({"access_token": TOKEN}).encode(), {"Content-Type": "application/json"}), "not JSON"),
        (Reply(200, TOKEN), "not JSON"),
        (Reply(200, f"access_token={TOKEN}"), "not JSON"),
        (Reply(200, [TOKEN]), "not a JSON object"),
        (Reply(200, ("[" * DEEP + f'"{TOKEN}"' + "]" * DEEP).encode(), {"Content-Type": "application/json"}), "nested"),
    ],
    ids=["no-expiry", "python-repr", "bare-token", "form-encoded", "json-list", "deeply-nested"],
)
def test_an_identity_answer_without_a_usable_token_is_69_and_never_logs_it(fake_ca, level, flavour, answer, problem):
    with (
        serving(lambda _: answer) as identity,
        serving(vault_answering(lambda _: Reply(500)), tls=fake_ca) as vault,
    ):
        run = run_check(
            {
                "K": KV_REFERENCE,
                "SIDECAR_LOG_LEVEL": level,
                **identity_env(flavour, identity),
                **tls_env(fake_ca, vault=vault),
            },
            SERVED,
        )
    failure = only_failure(run, 69)
    endpoint = f"http://127.0.0.1:{identity.port}"
    assert "identity endpoint" in failure["error"] and endpoint in failure["error"], failure["error"]
    assert problem in failure["error"], failure["error"]
    assert not any("authorization" in request.headers for request in vault.received), "no token can have been sent"


@pytest.mark.parametrize("level", ["info", "debug"])
def test_an_identity_error_answer_quoting_a_token_never_logs_it(fake_ca, level):
    with (
        serving(lambda _: Reply(500, f"upstream error {TOKEN}")) as identity,
        serving(vault_answering(lambda _: Reply(500)), tls=fake_ca) as vault,
    ):
        run = run_check(
            {
                "K": KV_REFERENCE,
                "SIDECAR_LOG_LEVEL": level,
                "SIDECAR_MAX_ATTEMPTS": "2",
                **identity_env("imds", identity),
                **tls_env(fake_ca, vault=vault),
            },
            SERVED,
        )
    failure = only_failure(run, 69)
    assert "HTTP 500" in failure["error"], failure["error"]


# A JWT as Entra and the managed-identity endpoints issue them (header.payload.signature, base64url).
JWT = "eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9.eyJhdWQiOiJmYWtlLWp3dCJ9.ZmFrZS1zaWduYXR1cmUtZm9yLWEtdGVzdA"


@pytest.mark.parametrize("level", ["info", "debug"])
def test_an_oauth_error_description_quoting_a_bare_jwt_never_logs_it(fake_ca, level):
    """The endpoint's error_description is quoted as its answer; a token inside it is not, whatever its field."""
    answer = json.dumps({"error": "invalid_request", "error_description": f"token {JWT} was not accepted"})
    with (
        serving(lambda _: Reply(400, answer)) as identity,
        serving(vault_answering(lambda _: Reply(500)), tls=fake_ca) as vault,
    ):
        run = run_check(
            {
                "K": KV_REFERENCE,
                "SIDECAR_LOG_LEVEL": level,
                **identity_env("imds", identity),
                **tls_env(fake_ca, vault=vault),
            },
            [*SERVED, JWT, JWT.split(".")[1], JWT.split(".")[2]],
        )
    failure = only_failure(run, 78)
    assert "invalid_request" in failure["error"] and "was not accepted" in failure["error"], failure["error"]


@pytest.mark.parametrize(
    "text",
    [
        "{'access_token': 'SECRETVALUE1', 'token_type': 'Bearer'}",
        '{"access_token":"SECRETVALUE1"}',
        '{\\"access_token\\": \\"SECRETVALUE1\\"}',
        "access_token=SECRETVALUE1&expires_in=3600",
        "refresh_token: SECRETVALUE1",
        "{'id_token': 'SECRETVALUE1'}",
        "client_secret=SECRETVALUE1",
        "client_assertion=SECRETVALUE1",
        '"assertion": "SECRETVALUE1"',
        "{'token': 'SECRETVALUE1'}",
        "Authorization: Bearer SECRETVALUE1",
        "the token eyJhbGciOiJub25lIn0.SECRETVALUE1.c2ln was not accepted",
    ],
    ids=[
        "python-repr",
        "json",
        "json-in-a-string",
        "form",
        "refresh-token",
        "id-token",
        "client-secret",
        "client-assertion",
        "assertion",
        "token",
        "bearer",
        "bare-jwt",
    ],
)
def test_token_patterns_catch_every_quoting(text):
    survived = "SECRETVALUE1" in Redactor().scrub(text)
    assert not survived, "the token survived scrubbing"  # not shown: the assertion message is output too


def test_token_patterns_leave_ordinary_words_alone():
    text = "token_requests=2 secret 'db-password' (latest) tokens: 1"
    assert Redactor().scrub(text) == text


# --- Key Vault answers of the wrong shape ------------------------------------------------------------------


def run_against_vault(
    ca: FakeCA, answer: Reply, *, resource: str = "https://vault.azure.net"
) -> tuple[SidecarRun, list[Received]]:
    """Run against a fake vault that challenges for `resource`, then gives `answer`; also what the vault received."""
    with (
        serving(imds_issuing(TOKEN)) as identity,
        serving(vault_answering(lambda _: answer, resource=resource), tls=ca) as vault,
    ):
        run = run_check({"K": KV_REFERENCE, **identity_env("imds", identity), **tls_env(ca, vault=vault)}, SERVED)
    return run, vault.received


@pytest.mark.parametrize(
    ("answer", "problem"),
    [
        (Reply(200, [{"value": VAULT_VALUE, "id": SECRET_ID}]), "not a secret"),
        (Reply(200, {"value": VAULT_VALUE, "id": SECRET_ID, "attributes": "enabled"}), "not a secret"),
        (Reply(200, {"value": VAULT_VALUE, "id": SECRET_ID, "attributes": {"exp": "soon"}}), "exp"),
        (Reply(200, {"value": VAULT_VALUE, "id": SECRET_ID, "attributes": {"nbf": [1]}}), "nbf"),
        (Reply(200, {"value": VAULT_VALUE, "id": "not a secret id"}), "not a secret"),
        (Reply(200, f"value={VAULT_VALUE}".encode(), {"Content-Type": "application/json"}), "decoded as JSON"),
        (Reply(200, ("[" * DEEP + "]" * DEEP).encode(), {"Content-Type": "application/json"}), "nested"),
    ],
    ids=["list", "attributes-string", "exp-string", "nbf-list", "id-not-a-url", "not-json", "deeply-nested"],
)
def test_a_key_vault_answer_of_the_wrong_shape_is_69_at_once(fake_ca, answer, problem):
    run, _ = run_against_vault(fake_ca, answer)
    failure = only_failure(run, 69)
    assert VAULT_URL in failure["error"] and "db-password" in failure["error"], failure["error"]
    assert problem in failure["error"], failure["error"]
    # The token was sent with the second request: the message must not claim otherwise.
    assert "no token was sent" not in failure["error"], failure["error"]


def test_a_key_vault_answer_cut_short_is_retried_then_69(fake_ca):
    cut_short = Reply(200, {"value": VAULT_VALUE, "id": SECRET_ID}, truncated=True)
    with (
        serving(imds_issuing(TOKEN)) as identity,
        serving(vault_answering(lambda _: cut_short), tls=fake_ca) as vault,
    ):
        run = run_check(
            {
                "K": KV_REFERENCE,
                "SIDECAR_MAX_ATTEMPTS": "2",
                **identity_env("imds", identity),
                **tls_env(fake_ca, vault=vault),
            },
            SERVED,
        )
    failure = only_failure(run, 69)
    assert "IncompleteReadError" in failure["error"] and "2 attempt(s)" in failure["error"], failure["error"]
    authorized = [request for request in vault.received if "authorization" in request.headers]
    assert len(authorized) == 2, f"expected 2 attempts with the token, the vault received {len(authorized)}"


def test_a_challenge_for_another_resource_is_78_and_the_vault_never_gets_a_token(fake_ca):
    run, received = run_against_vault(fake_ca, Reply(200, {"value": VAULT_VALUE}), resource="https://vault.azure.cn")
    failure = only_failure(run, 78)
    assert "no token was sent" in failure["error"], failure["error"]
    assert "vault.azure.cn" in failure["error"], failure["error"]
    assert received, "the vault was never asked"
    assert not any("authorization" in request.headers for request in received), (
        "a token was sent to a vault whose challenge names another resource"
    )


# --- Workspace connection answers of the wrong shape -------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ({"properties": "abc"}, "properties"),
        ([], "not a JSON object"),
        ({"properties": {"authType": "ApiKey", "credentials": ["key", CONNECTION_KEY]}}, "credentials"),
        ({"properties": {"authType": "ApiKey", "credentials": {"key": CONNECTION_KEY}, "metadata": "x"}}, "metadata"),
        ('{"properties": {"credentials": ' + '{"a": ' * DEEP + '"x"' + "}" * DEEP + "}}", "nested"),
        ('{"properties": {"credentials": ' + '{"a": ' * 200 + '"x"' + "}" * 200 + "}}", "nested"),
        (f"key={CONNECTION_KEY}", "not JSON"),
    ],
    ids=[
        "properties-string",
        "top-level-list",
        "credentials-list",
        "metadata-string",
        "deeply-nested",
        "nested-200",
        "not-json",
    ],
)
def test_a_connection_answer_of_the_wrong_shape_is_69_at_once(fake_ca, body, problem):
    def arm(request: Received) -> Reply:
        assert request.method == "POST"
        return (
            Reply(200, body.encode(), {"Content-Type": "application/json"})
            if isinstance(body, str)
            else Reply(200, body)
        )

    with serving(imds_issuing(TOKEN)) as identity, serving(arm, tls=fake_ca) as arm_server:
        run = run_check(
            {
                "K": CONNECTION_REFERENCE,
                **WORKSPACE,
                **identity_env("imds", identity),
                **tls_env(fake_ca, arm=arm_server),
            },
            SERVED,
        )
    error = only_failure(run, 69)["error"]
    assert "aoai-conn" in error and WORKSPACE["AZUREML_ARM_WORKSPACE_NAME"] in error, error
    assert problem in error, error


# --- The net under every store: a worker never loses an exception ------------------------------------------


class ExplodingStore(Store):
    """A store whose fetch fails in a way no store anticipated, with the value in the exception's text."""

    kind = "exploding"

    def key(self, reference: Reference) -> Hashable:
        return str(reference)

    def location(self, key: Hashable) -> str:
        return "https://exploding.example"

    def audience(self, key: Hashable) -> str:
        return "https://exploding.example/.default"

    def fetch(self, key: Hashable, timeout: float) -> Fetched:
        raise KeyError(f"the body was {VAULT_VALUE}")


class IdleIdentity:
    def get_token(self, *scopes: str, **_: object) -> None:
        return None

    def has_token(self, scope: str) -> bool:
        return True


def test_an_unexpected_store_exception_becomes_69_naming_the_store_and_the_type_only():
    escaped = None
    try:
        outcome = fetch_with_retries(ExplodingStore(), "k", Deadline(60), 3, Pacer(4))
    except Exception as exc:  # reported by type only: its text holds the value
        escaped = type(exc).__name__
    assert escaped is None, f"fetch_with_retries let a {escaped} escape"
    assert isinstance(outcome.error, UnavailableError), outcome.error
    assert "https://exploding.example" in outcome.error.message
    assert "KeyError" in outcome.error.message
    quoted = VAULT_VALUE in str(outcome.error)
    assert not quoted, "the exception's text may quote the answer: never pass it on"
    assert outcome.attempts == 1, "an unexpected failure is not retried"


def test_fetch_all_reports_an_unexpected_store_exception_without_waiting_for_the_deadline():
    store = ExplodingStore()
    plan = Plan([], {store.kind: store}, {store.kind: {store.location("k"): ["k"]}})
    finished: dict = {}
    worker = threading.Thread(
        target=lambda: finished.update(
            fetch_all(plan, IdleIdentity(), Deadline(60), max_concurrency=4, max_attempts=3)  # type: ignore[arg-type]
        ),
        daemon=True,
    )
    worker.start()
    worker.join(FAIL_FAST_TIMEOUT_S)
    assert not worker.is_alive(), "fetch_all waited for the deadline instead of reporting the failed fetch"
    error = finished[(store.kind, "k")].error
    assert isinstance(error, UnavailableError) and "KeyError" in error.message, error
