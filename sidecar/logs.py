"""Logging: configured once, one JSON (or console) line per event on stderr.

The sidecar's loggers (`get_logger`) carry their own processor chain, so they never depend on, nor
change, a global structlog configuration. The command line calls `configure`, which owns the process's
logging; `sidecar.load()` does not, and its events reach the host's own handlers as records of the
`sidecar` logger, each already redacted (`_to_stdlib`).

Every line, ours and the SDKs' (azure-core, msal, urllib3 go through the same
stdlib handler), passes one redaction processor last, so a value that is
registered as sensitive (every fetched value, every token, MSI_SECRET) cannot
reach stderr even at debug level or inside a traceback. The code never logs
values in the first place; this is the net under that rule.

Records of other libraries are first stripped of anything that can carry a
response body (see `strip_foreign_content`): a body can hold a token before the
redactor has heard of it, e.g. an identity endpoint's answer that the SDK could
not use.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import threading
from collections.abc import MutableMapping
from typing import Any

import structlog

REDACTED = "[REDACTED]"
CONTENT_REMOVED = "[content removed]"
# Names of fields that carry a token or a credential (OAuth's access_token, refresh_token, id_token, client_secret,
# client_assertion; ARM's clientSecret), matched as suffixes of a field name.
_TOKEN_FIELDS = "token|secret|password|assertion"
# Tokens in headers or token-endpoint bodies, whoever logs them, however quoted: "access_token": "x" (JSON),
# 'access_token': 'x' (a Python repr), \"access_token\": \"x\" (JSON in a string), access_token=x (a form).
# And a bare JWT (header.payload.signature, the header base64url of '{"'), as Entra and the identity endpoints
# issue tokens, wherever it stands: e.g. quoted in an endpoint's error_description.
_TOKEN_PATTERNS = (
    re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._~+/=-]{8,}"),
    re.compile(r"()\beyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*"),
    re.compile(rf"(?i)((?:{_TOKEN_FIELDS})\b\\?[\"']?\s*[:=]\s*\\?[\"']?)[^\"'\s,;&}}\\]{{4,}}"),
)
# Shorter values are not scrubbed by substring: they would blank out ordinary words.
MIN_REDACTED_LENGTH = 4
THIRD_PARTY_LOGGERS = ("azure", "msal", "urllib3", "requests")
OWN_LOGGER = "sidecar"
# Where the installed SDKs put a response (or request) body into a log message's text, cut from there on:
# azure-core's NetworkTraceLoggingPolicy "Response content:" / "Request body:" (pipeline/policies/_universal.py);
# msal's "IMDS emits unexpected payload: %s" (managed_identity.py), "Unable to decode jwt payload: %s",
# "Cloud Shell IMDS error: %s" (cloudshell.py), "... request receives: %s" (wstrust_request.py), "Malformed MEX
# document: %s" (mex.py), "Got auth response: %s" (oauth2cli/authcode.py), "Token response is not in json format:
# %s" (oauth2cli/oauth2.py), "_signout_silently() returns error: %s" (application.py).
_CONTENT_MARKER = re.compile(r"(?i)\b(?:content|body|payload|error|receives|document|response|format)\s*:")


class Redactor:
    """The set of sensitive strings, and the structlog processor that scrubs them from every event.

    Values are indexed by their first MIN_REDACTED_LENGTH characters, so scrubbing a string costs
    one dict lookup per position in it rather than one substring search per registered value:
    with 1,000 fetched values, checking each of them against every field of every log line was
    a tenth of the sidecar's CPU time (py-spy).
    """

    def __init__(self) -> None:
        self._values: set[str] = set()
        self._by_prefix: dict[str, list[str]] = {}  # prefix -> values with it, longest first
        self._lock = threading.Lock()

    def add(self, value: str | None) -> None:
        if value and len(value) >= MIN_REDACTED_LENGTH:
            with self._lock:
                if value not in self._values:
                    self._values.add(value)
                    bucket = self._by_prefix.setdefault(value[:MIN_REDACTED_LENGTH], [])
                    bucket.append(value)
                    bucket.sort(key=len, reverse=True)

    def scrub(self, text: str) -> str:
        for pattern in _TOKEN_PATTERNS:
            text = pattern.sub(lambda m: m.group(1) + REDACTED, text)
        by_prefix = self._by_prefix
        if not by_prefix:
            return text
        found: set[str] = set()
        with self._lock:
            for start in range(len(text) - MIN_REDACTED_LENGTH + 1):
                bucket = by_prefix.get(text[start : start + MIN_REDACTED_LENGTH])
                if bucket:
                    found.update(value for value in bucket if text.startswith(value, start))
        # Longest first, so that a value containing another is replaced whole.
        for value in sorted(found, key=len, reverse=True):
            text = text.replace(value, REDACTED)
        return text

    def _scrub_any(self, item: Any) -> Any:
        if isinstance(item, str):
            return self.scrub(item)
        if isinstance(item, dict):
            return {key: self._scrub_any(value) for key, value in item.items()}
        if isinstance(item, list | tuple):
            return [self._scrub_any(value) for value in item]
        if isinstance(item, int | float | bool) or item is None:
            return item
        return self.scrub(str(item))

    def __call__(self, logger: Any, method: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
        return {key: self._scrub_any(value) for key, value in event_dict.items()}


redactor = Redactor()


def _exception_types(exc: BaseException) -> str:
    """An exception and its causes, by type only: their text can quote a response body."""
    names: list[str] = []
    current: BaseException | None = exc
    while current is not None and len(names) < 8:
        names.append(type(current).__name__)
        current = current.__cause__ or (None if current.__suppress_context__ else current.__context__)
    return " from ".join(names)


def strip_foreign_content(record: logging.LogRecord) -> None:
    """Rewrite another library's record so that it cannot carry a response body.

    Exceptions are shown by type only, as arguments and as exc_info alike: azure-core's
    HttpResponseError appends the raw body to its text ("Content: ...", core/exceptions.py), and
    azure-identity puts what msal made of the body (a Python repr of the token answer) into its
    errors' text, which it then logs at warning level ("ManagedIdentityCredential.get_token failed:
    %s", identity/_internal/decorators.py). Text after a body marker (_CONTENT_MARKER) is cut.
    """
    args = record.args if isinstance(record.args, tuple) else ()
    if args:
        record.args = tuple(_exception_types(arg) if isinstance(arg, BaseException) else arg for arg in args)
    try:
        message = record.getMessage()
    except Exception:  # a malformed call in the library: its template alone still says what happened
        message = str(record.msg)
    marker = _CONTENT_MARKER.search(message)
    if marker:
        message = f"{message[: marker.end()]} {CONTENT_REMOVED}"
    exc = record.exc_info[1] if record.exc_info else None
    if exc is not None and not any(arg is exc for arg in args):
        message += f" ({_exception_types(exc)})"
    record.msg, record.args = message, ()
    record.exc_info, record.exc_text = None, None


class _ForeignRecordFilter(logging.Filter):
    """Strips the records of every logger that is not the sidecar's own (see strip_foreign_content)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name != OWN_LOGGER and not record.name.startswith(OWN_LOGGER + "."):
            strip_foreign_content(record)
        return True


def _event_first(logger: Any, method: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """Put time, level and event first, so a line reads left to right."""
    head = {key: event_dict.pop(key) for key in ("timestamp", "level", "event") if key in event_dict}
    return {**head, **event_dict}


_configured = False  # set by `configure`: the command line owns this process's logging


def _to_stdlib(logger: Any, method: str, event_dict: MutableMapping[str, Any]) -> Any:
    """Hand an event to stdlib logging.

    After `configure` (the command line), to its handler's formatter, which redacts and renders it. Without
    it (`sidecar.load()` in someone else's process), as one JSON object redacted here, so that whatever
    handlers the host has show it like any other record and none of them can see a value.
    """
    if _configured:
        return structlog.stdlib.ProcessorFormatter.wrap_for_formatter(logger, method, event_dict)
    fields = {key: value for key, value in event_dict.items() if key not in ("level", "logger", "timestamp")}
    return json.dumps(redactor(logger, method, fields), default=str)


def get_logger(name: str) -> Any:
    """The sidecar's logger `name`: a stdlib logger with structlog's API and the sidecar's own processor chain,
    independent of any global structlog configuration (a host's, when the sidecar runs as a library)."""
    return structlog.wrap_logger(
        logging.getLogger(name),
        processors=[
            structlog.stdlib.filter_by_level,
            structlog.stdlib.add_log_level,
            structlog.stdlib.add_logger_name,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            _to_stdlib,
        ],
        wrapper_class=structlog.stdlib.BoundLogger,
    )


def configure(log_format: str = "json", level: str = "info") -> None:
    """Send structlog and stdlib logging to stderr through one chain ending in the redactor."""
    global _configured
    _configured = True
    numeric_level = getattr(logging, level.upper(), logging.INFO)
    shared: list[Any] = [
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: Any = (
        structlog.processors.JSONRenderer(sort_keys=False)
        if log_format == "json"
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                redactor,
                _event_first,
                renderer,
            ],
        )
    )
    handler.addFilter(_ForeignRecordFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(numeric_level)
    # The SDKs log every request at INFO; keep them to warnings unless debugging.
    for name in THIRD_PARTY_LOGGERS:
        logging.getLogger(name).setLevel(logging.DEBUG if numeric_level <= logging.DEBUG else logging.WARNING)
