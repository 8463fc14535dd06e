"""Logging: configured once, one JSON (or console) line per event on stderr.

Every line, ours and the SDKs' (azure-core, msal, urllib3 go through the same
stdlib handler), passes one redaction processor last, so a value that is
registered as sensitive (every fetched value, every token, MSI_SECRET) cannot
reach stderr even at debug level or inside a traceback. The code never logs
values in the first place; this is the net under that rule.
"""

from __future__ import annotations

import logging
import re
import sys
import threading
from collections.abc import MutableMapping
from typing import Any

import structlog

REDACTED = "[REDACTED]"
# Tokens in headers or token-endpoint bodies, whoever logs them.
_TOKEN_PATTERNS = (
    re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._~+/=-]{8,}"),
    re.compile(r'(?i)("?(?:access_token|refresh_token|secret)"?\s*[:=]\s*"?)[^"\s,}]{4,}'),
)
# Shorter values are not scrubbed by substring: they would blank out ordinary words.
MIN_REDACTED_LENGTH = 4
THIRD_PARTY_LOGGERS = ("azure", "msal", "urllib3", "requests")


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


def _event_first(logger: Any, method: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """Put time, level and event first, so a line reads left to right."""
    head = {key: event_dict.pop(key) for key in ("timestamp", "level", "event") if key in event_dict}
    return {**head, **event_dict}


def configure(log_format: str = "json", level: str = "info") -> None:
    """Send structlog and stdlib logging to stderr through one chain ending in the redactor."""
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
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(numeric_level)
    # The SDKs log every request at INFO; keep them to warnings unless debugging.
    for name in THIRD_PARTY_LOGGERS:
        logging.getLogger(name).setLevel(logging.DEBUG if numeric_level <= logging.DEBUG else logging.WARNING)
    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *shared,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
