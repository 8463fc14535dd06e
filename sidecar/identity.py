"""The endpoint's managed identity: azure-identity's ManagedIdentityCredential,
with one token per audience per run; on Kubernetes, workload identity (`sidecar.workload`),
whose token requests go to Microsoft Entra through the sidecar's session.

Token requests are retried by the credential's own azure-core RetryPolicy, set
here (IMDS's 404/410 included), because msal caches a throttled or failed
answer for its Retry-After (5 s by default) and a retry layer above it would
only read that cache. It is the only retry layer for tokens; see
`sidecar.resolve` for the one layer for fetches.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass

import requests
from azure.core.credentials import AccessToken
from azure.core.pipeline.transport import RequestsTransport
from azure.identity import ClientAssertionCredential, ManagedIdentityCredential

from sidecar import logs, workload
from sidecar.errors import ConfigurationError, SidecarError, UnavailableError
from sidecar.logs import redactor
from sidecar.settings import Settings
from sidecar.stores.base import json_object

log = logs.get_logger("sidecar.identity")

RETRY_STATUS_CODES = [404, 408, 410, 429, 500, 502, 503, 504]
# Entra's token endpoint: not IMDS's 404 and 410, which there mean a wrong URL, not an update in progress.
ENTRA_RETRY_STATUS_CODES = [408, 429, 500, 502, 503, 504]
TOKEN_RETRY_BACKOFF_S = 0.5
TOKEN_RETRY_BACKOFF_MAX_S = 16
CONNECT_TIMEOUT_S = 5
UNREACHABLE_FIX = (
    "check that the identity endpoint is reachable from the container (for local runs: "
    "AZURE_POD_IDENTITY_AUTHORITY_HOST or MSI_ENDPOINT/MSI_SECRET), or raise SIDECAR_TIMEOUT."
)


def identity_flavour(env: Mapping[str, str]) -> tuple[str, str]:
    """Which endpoint ManagedIdentityCredential will use (its own order), and its address."""
    if env.get("IDENTITY_ENDPOINT"):
        if env.get("IDENTITY_HEADER"):
            flavour = "service_fabric" if env.get("IDENTITY_SERVER_THUMBPRINT") else "app_service"
        else:
            flavour = "azure_arc" if env.get("IMDS_ENDPOINT") else "imds"
        if flavour != "imds":
            return flavour, env["IDENTITY_ENDPOINT"]
    if env.get("MSI_ENDPOINT"):
        return ("azureml" if env.get("MSI_SECRET") else "cloud_shell"), env["MSI_ENDPOINT"]
    # azure-identity 1.27's WORKLOAD_IDENTITY_VARS: AZURE_CLIENT_ID is not one of them (only the default client id).
    if all(env.get(name) for name in workload.SELECTION):
        return "workload_identity", env[workload.AUTHORITY_HOST]
    return "imds", env.get("AZURE_POD_IDENTITY_AUTHORITY_HOST", "http://169.254.169.254").rstrip("/")


WRONG_ANSWER_FIX = (
    "check that the identity endpoint setting the platform provides (MSI_ENDPOINT, IDENTITY_ENDPOINT) or "
    "AZURE_POD_IDENTITY_AUTHORITY_HOST points at the identity endpoint itself, not at a proxy or another service."
)
MAX_ERROR_TEXT = 300
# A token carried over from an earlier round is used only while it has this long left, so that a fetch
# never goes out with a token that expires on the way (azure-identity refreshes 5 minutes early too).
CARRIED_TOKEN_MARGIN_S = 300


@dataclass
class _Answer:
    """What the identity endpoint last said on this thread, in words of the sidecar's; never the body or the token."""

    status: int | None = None
    error: str = ""  # an error answer's OAuth error and description
    problem: str = ""  # what is wrong with a success answer the SDK may not be able to use
    attempts: int = 0


def _oauth_error(text: str) -> str:
    """'error: error_description' of an OAuth error answer; nothing else of the body."""
    body, _ = json_object(lambda: json.loads(text))
    if body is None:
        return ""
    fields = (body.get("error"), body.get("error_description"))
    return ": ".join(" ".join(field.split())[:MAX_ERROR_TEXT] for field in fields if isinstance(field, str) and field)


def _token_answer_problem(text: str) -> str:
    """Why a success answer holds no usable token ('' if it looks usable); says what is missing, never quotes it."""
    body, problem = json_object(lambda: json.loads(text))
    if body is None:
        return f"the answer {problem}"
    if not isinstance(body.get("access_token"), str) or not body["access_token"]:
        return "the answer has no access_token"
    if not (body.get("expires_in") or body.get("expires_on")):
        return "the answer has neither expires_in nor expires_on"
    return ""


class ManagedIdentity:
    """A TokenCredential for the SDKs that asks the identity endpoint once per audience."""

    def __init__(
        self,
        settings: Settings,
        env: Mapping[str, str],
        session: requests.Session,
        tokens: Mapping[str, tuple[str, int]] | None = None,
    ) -> None:
        """`tokens`: scope -> (token, expires_on) from an earlier round of a long-running sidecar.
        `session`: the run's HTTP session (connect-to, proxies), which Microsoft Entra is reached through."""
        self.flavour, self.endpoint = identity_flavour(env)
        self.client_id = settings.client_id
        self.client_id_source = settings.client_id_source
        # A round of a long-running sidecar starts with the tokens of the last: it says again at debug only.
        announce = log.debug if tokens else log.warning
        missing = workload.partial_selection(env)
        if missing:
            announce(
                "workload identity not selected",
                missing=missing,
                flavour=self.flavour,
                fix=f"{workload.TOKEN_FILE} is set but {', '.join(missing)} is not, so azure-identity (and the "
                "sidecar) uses another identity; the workload identity webhook sets all of them.",
            )
        redactor.add(env.get("MSI_SECRET"))
        redactor.add(env.get("IDENTITY_HEADER"))
        self._answers = threading.local()
        self._lock = threading.Lock()
        self._audience_locks: dict[str, threading.Lock] = {}
        self._tokens = {
            scope: AccessToken(token, expires_on)
            for scope, (token, expires_on) in (tokens or {}).items()
            if expires_on > time.time() + CARRIED_TOKEN_MARGIN_S
        }
        for token in self._tokens.values():
            redactor.add(token.token)
        self._failures: dict[str, SidecarError] = {}
        self.requests = 0
        retries = settings.max_attempts - 1
        options = {
            "raw_response_hook": self._record_answer,
            "retry_total": retries,
            "retry_status": retries,
            "retry_connect": retries,
            "retry_read": retries,
            "retry_backoff_factor": TOKEN_RETRY_BACKOFF_S,
            "retry_backoff_max": TOKEN_RETRY_BACKOFF_MAX_S,
            "timeout": settings.timeout_s,
        }
        self.workload: workload.WorkloadIdentity | None = None
        self._setup_error: SidecarError | None = None  # raised by every token request: one error per variable
        self._credential: ManagedIdentityCredential | ClientAssertionCredential | None = None
        if self.flavour != "workload_identity":
            self._credential = ManagedIdentityCredential(
                client_id=self.client_id,
                retry_on_status_codes=RETRY_STATUS_CODES,
                connection_timeout=CONNECT_TIMEOUT_S,
                read_timeout=settings.timeout_s,
                **options,
            )
            return
        try:
            self.workload = workload.load(env, self.client_id, self.client_id_source, list(settings.connect_to))
        except ConfigurationError as error:
            self._setup_error = error
            return
        self.client_id, self.client_id_source = self.workload.client_id, self.workload.client_id_source
        self.endpoint = self.workload.authority
        # Entra is reached like the stores: SIDECAR_CONNECT_TO, the CA bundle, proxies, the timeouts.
        transport = RequestsTransport(
            session=session,
            session_owner=False,
            connection_verify=settings.ca_bundle if isinstance(settings.ca_bundle, str) else True,
            connection_timeout=CONNECT_TIMEOUT_S,
            read_timeout=settings.timeout_s,
        )
        # WorkloadIdentityCredential is this credential with a token-file reader that keeps what it read for
        # 600 s; workload.TokenFile reads the file at every request instead (see sidecar.workload).
        self._credential = ClientAssertionCredential(
            self.workload.tenant_id,
            self.workload.client_id,
            workload.TokenFile(self.workload.token_file),
            authority=self.workload.authority,
            transport=transport,
            retry_on_status_codes=ENTRA_RETRY_STATUS_CODES,
            **options,
        )

    def _record_answer(self, response) -> None:  # type: ignore[no-untyped-def]
        answer: _Answer = self._answers.answer
        answer.attempts += 1
        http = response.http_response
        answer.status = http.status_code
        if http.status_code >= 400:
            answer.error = _oauth_error(http.text())
        elif 200 <= http.status_code < 300:
            answer.problem = _token_answer_problem(http.text())

    def get_token(self, *scopes: str, **_: object) -> AccessToken:
        """The run's token for this audience; the first caller fetches it, the others wait for it."""
        scope = scopes[0]
        with self._lock:
            lock = self._audience_locks.setdefault(scope, threading.Lock())
        with lock:
            if scope in self._failures:
                raise self._failures[scope]
            token = self._tokens.get(scope)
            if token is None or token.expires_on <= time.time() + 5:
                try:
                    token = self._request(scope)
                except SidecarError as error:
                    self._failures[scope] = error
                    raise
                self._tokens[scope] = token
            return token

    @property
    def description(self) -> str:
        """How messages name the identity: by client id where there is one."""
        if self.workload:
            return f"the workload identity with client id {self.client_id} (from {self.client_id_source})"
        if self.client_id:
            return f"the identity with client id {self.client_id} (from {self.client_id_source})"
        return "the endpoint's system-assigned identity"

    @property
    def tokens(self) -> dict[str, tuple[str, int]]:
        """The tokens held, as plain tuples (the next round's `tokens`: no SDK type to unpickle)."""
        return {scope: (token.token, token.expires_on) for scope, token in self._tokens.items()}

    def has_token(self, scope: str) -> bool:
        return scope in self._tokens

    def deadline_error(self, scope: str, seconds: float) -> UnavailableError:
        """What to report when the deadline passed while this audience's token was still awaited."""
        return UnavailableError(
            f"no token for {scope.removesuffix('/.default')} from the {self.flavour} identity endpoint "
            f"{self.endpoint} within the deadline of {seconds:g} s.",
            fix=workload.unreachable_fix(self.workload) if self.flavour == "workload_identity" else UNREACHABLE_FIX,
        )

    def _request(self, scope: str) -> AccessToken:
        resource = scope.removesuffix("/.default")
        self._answers.answer = answer = _Answer()
        if self._setup_error is not None:
            raise self._setup_error
        assert self._credential is not None
        with self._lock:
            self.requests += 1
        try:
            token = self._credential.get_token(scope)
        except SidecarError:  # the token file could not be read (workload.TokenFile)
            raise
        # Any failure here is the identity endpoint's: besides AzureError and ValueError, msal fails with
        # AttributeError, TypeError... on answers it does not expect (a JSON list).
        except Exception as exc:
            raise self._failure(resource, answer, exc) from None
        redactor.add(token.token)
        return token

    def _failure(self, resource: str, answer: _Answer, exc: Exception) -> SidecarError:
        """The error for a failed token request: the endpoint's status and OAuth error, or the exception's type.

        Never the exception's text: azure-core and azure-identity put the answer's body in it.
        """
        said = (
            f"HTTP {answer.status}" + (f" {answer.error}" if answer.error else "")
            if answer.status
            else type(exc).__name__
        )
        where = f"the {self.flavour} identity endpoint {self.endpoint}"
        if self.workload is not None:
            return self._workload_failure(resource, answer, said, exc)
        if answer.status and 200 <= answer.status < 300:
            problem = answer.problem or f"the SDK could not use it ({type(exc).__name__})"
            return UnavailableError(
                f"{where} answered HTTP {answer.status} to the token request for {resource} for {self.description}, "
                f"but not with a usable token: {problem}.",
                fix=WRONG_ANSWER_FIX,
            )
        if answer.status == 400:
            return ConfigurationError(
                f"{where} refused a token for {resource} for {self.description}: {said}.",
                fix="assign that user-assigned identity to the endpoint, or set SIDECAR_CLIENT_ID / "
                "DEFAULT_IDENTITY_CLIENT_ID to the client id of an identity it has "
                "(leave both unset for the system-assigned identity).",
            )
        if answer.status in (401, 403):
            return ConfigurationError(
                f"{where} rejected the token request for {resource}: {said}.",
                fix="keep the MSI_ENDPOINT / MSI_SECRET (or IDENTITY_*) values the platform sets; "
                "do not override them.",
            )
        return UnavailableError(
            f"could not get a token for {resource} from {where} for {self.description} "
            f"after {max(answer.attempts, 1)} attempt(s): {said}.",
            fix=UNREACHABLE_FIX,
        )

    def _workload_failure(self, resource: str, answer: _Answer, said: str, exc: Exception) -> SidecarError:
        """Entra's answer to a workload identity's token request, as an error with its fix."""
        assert self.workload is not None
        where = f"Microsoft Entra ({self.workload.authority})"
        if answer.status and 200 <= answer.status < 300:
            return workload.wrong_answer(
                where, answer.status, answer.problem or f"the SDK could not use it ({type(exc).__name__})"
            )
        if answer.status and 400 <= answer.status < 500 and answer.status not in (408, 429):
            return workload.refusal(answer.status, said, self.workload, resource)
        return UnavailableError(
            f"could not get a token for {resource} from {where} for {self.description} "
            f"after {max(answer.attempts, 1)} attempt(s): {said}.",
            fix=workload.unreachable_fix(self.workload),
        )
