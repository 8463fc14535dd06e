"""Build each variable's new value from the fetched secrets, and CMD's environment.

CMD gets the original environment with references replaced by values, minus
the sidecar's own SIDECAR_* settings; every other variable is passed on as it
came (os.environ round-trips bytes through surrogateescape).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone

from sidecar.errors import MalformedReferenceError, SidecarError
from sidecar.plan import FetchId, Plan
from sidecar.references import Variable
from sidecar.resolve import Outcome
from sidecar.settings import PREFIX
from sidecar.stores.base import Fetched


@dataclass
class Resolution:
    """One variable's result: its new value or its errors, and what it took."""

    variable: Variable
    value: str | None = None
    errors: list[SidecarError] = field(default_factory=list)
    versions: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    ms: float = 0.0
    attempts: int = 0

    @property
    def ok(self) -> bool:
        return not self.errors


def _env_safe(value: str, reference: str) -> None:
    if "\x00" in value:
        raise MalformedReferenceError(
            "the value contains a NUL byte, which an environment variable cannot hold.",
            reference=reference,
            fix="store the value without NUL bytes (for example base64-encoded).",
        )
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise MalformedReferenceError(
            "the value is not valid Unicode text and cannot be put in an environment variable.",
            reference=reference,
            fix="store the value as UTF-8 text (for example base64-encoded).",
        ) from None


def _validity_warnings(reference: str, fetched: Fetched) -> list[str]:
    now = datetime.now(timezone.utc)
    warnings = []
    if fetched.expires_on and fetched.expires_on <= now:
        warnings.append(f"{reference} expired at {fetched.expires_on.isoformat()}")
    if fetched.not_before and fetched.not_before > now:
        warnings.append(f"{reference} is not valid before {fetched.not_before.isoformat()}")
    return warnings


def resolve_variables(plan: Plan, outcomes: Mapping[FetchId, Outcome]) -> list[Resolution]:
    resolutions = []
    for variable in plan.variables:
        resolution = Resolution(variable)
        pieces: list[str] = []
        for part in variable.parts:
            if isinstance(part, str):
                pieces.append(part)
                continue
            outcome = outcomes[plan.fetch_id(part)]
            resolution.ms = max(resolution.ms, outcome.ms)
            resolution.attempts += outcome.attempts
            try:
                if outcome.error is not None:
                    raise outcome.error
                assert outcome.fetched is not None
                value = plan.stores[part.store].extract(part, outcome.fetched)
                _env_safe(value, str(part))
            except SidecarError as error:
                resolution.errors.append(error.for_variable(variable.name, str(part)))
                continue
            if outcome.fetched.version:
                resolution.versions.append(outcome.fetched.version)
            resolution.warnings += _validity_warnings(str(part), outcome.fetched)
            pieces.append(value)
        if resolution.ok:
            resolution.value = "".join(pieces)
        resolutions.append(resolution)
    return resolutions


def child_environment(env: Mapping[str, str], resolutions: list[Resolution]) -> dict[str, str]:
    child = {name: value for name, value in env.items() if not name.startswith(PREFIX)}
    for resolution in resolutions:
        assert resolution.value is not None, "CMD only starts when every variable resolved"
        child[resolution.variable.name] = resolution.value
    return child
