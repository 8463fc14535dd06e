"""Build each variable's new value from the fetched secrets, and CMD's environment.

Per reference: pick the part (store), apply the options (JSON pointer, decoding,
PEM), fall back to the default of an optional reference that is missing, then
decide where the value goes: into the variable, or into a file whose path the
variable holds. CMD gets the original environment with references replaced,
minus the sidecar's own SIDECAR_* settings; every other variable is passed on
as it came (os.environ round-trips bytes through surrogateescape).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

from sidecar.errors import MalformedReferenceError, NotFoundError, SidecarError
from sidecar.logs import redactor
from sidecar.plan import FetchId, Plan
from sidecar.references import Reference, Variable
from sidecar.settings import PREFIX
from sidecar.stores.base import Fetched
from sidecar.transform import apply_options

if TYPE_CHECKING:  # resolve pulls in tenacity: only a run with references needs it
    from sidecar.resolve import Outcome

FILE_DELIVERY_FIX = "deliver it as a file: add '?file' to the reference (deferred form)."
# Linux's limit on one NAME=value string passed to execve (MAX_ARG_STRLEN: 32 pages); past it, E2BIG.
MAX_ENV_STRING_BYTES = 32 * os.sysconf("SC_PAGE_SIZE")


@dataclass
class Resolution:
    """One variable's result: its new value (or absence, or errors), where it goes, and what it took."""

    variable: Variable
    value: str | None = None  # what the variable will hold: the value, or the file's path
    file_path: Path | None = None
    file_data: bytes | None = None
    unset: bool = False  # an optional reference that was missing and has no default
    errors: list[SidecarError] = field(default_factory=list)
    versions: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    ms: float = 0.0
    attempts: int = 0

    @property
    def ok(self) -> bool:
        return not self.errors

    @property
    def length(self) -> int | None:
        if self.file_data is not None:
            return len(self.file_data)
        return None if self.value is None else len(self.value)

    @property
    def destination(self) -> str:
        if self.unset:
            return "unset"
        return f"file:{self.file_path}" if self.file_path else "env"


def _env_text(data: str | bytes) -> str:
    """The value as environment text, or 65 with the way out."""
    if isinstance(data, bytes):
        try:
            data = data.decode("utf-8")
        except UnicodeDecodeError:
            raise MalformedReferenceError(
                "the value is binary (not UTF-8 text) and cannot be put in an environment variable.",
                fix=FILE_DELIVERY_FIX,
            ) from None
    if "\x00" in data:
        raise MalformedReferenceError(
            "the value contains a NUL byte, which an environment variable cannot hold.", fix=FILE_DELIVERY_FIX
        )
    try:
        data.encode("utf-8")
    except UnicodeEncodeError:
        raise MalformedReferenceError(
            "the value is not valid Unicode text and cannot be put in an environment variable.", fix=FILE_DELIVERY_FIX
        ) from None
    return data


def _check_exec_size(name: str, value: str) -> None:
    size = len(os.fsencode(name)) + 1 + len(os.fsencode(value)) + 1
    if size > MAX_ENV_STRING_BYTES:
        raise MalformedReferenceError(
            f"the value is {size} bytes as NAME=value, over the {MAX_ENV_STRING_BYTES} bytes Linux lets one "
            "environment variable have when a program is started.",
            fix=FILE_DELIVERY_FIX,
        )


def _validity_warnings(reference: str, fetched: Fetched) -> list[str]:
    now = datetime.now(timezone.utc)
    warnings = []
    if fetched.expires_on and fetched.expires_on <= now:
        warnings.append(f"{reference} expired at {fetched.expires_on.isoformat()}; Key Vault returned it all the same")
    if fetched.not_before and fetched.not_before > now:
        warnings.append(
            f"{reference} is not valid before {fetched.not_before.isoformat()}; Key Vault returned it all the same"
        )
    return warnings


def _reference_data(plan: Plan, reference: Reference, outcome: Outcome, resolution: Resolution) -> str | bytes | None:
    """The reference's value after its options; None for an optional one that is missing without default."""
    try:
        if outcome.error is not None:
            raise outcome.error
        assert outcome.fetched is not None
        value = plan.stores[reference.store].extract(reference, outcome.fetched)
        data = apply_options(reference.options, value, outcome.fetched)
    except NotFoundError as error:
        if not reference.options.optional:
            raise
        fallback = "no default: the variable is removed" if reference.options.default is None else "using its default"
        resolution.warnings.append(f"{reference} is optional and missing ({error.message}); {fallback}")
        return reference.options.default
    if outcome.fetched.version:
        resolution.versions.append(outcome.fetched.version)
    resolution.warnings += _validity_warnings(str(reference), outcome.fetched)
    return data


def resolve_variables(
    plan: Plan, outcomes: Mapping[FetchId, Outcome], files_dir: Path, *, exec_limit: bool = True
) -> list[Resolution]:
    """Each variable's new value; with `exec_limit`, a value too large to exec CMD with is a failure."""
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
                data = _reference_data(plan, part, outcome, resolution)
                if part.options.file:
                    resolution.file_path = files_dir / (part.options.file_name or variable.name)
                if data is None:
                    resolution.unset = True  # and an earlier run's file, if any, is removed
                elif part.options.file:
                    resolution.file_data = data if isinstance(data, bytes) else data.encode("utf-8")
                    redactor.add(resolution.file_data.decode("utf-8", "replace"))
                    pieces.append(str(resolution.file_path))
                else:
                    text = _env_text(data)
                    redactor.add(text)
                    pieces.append(text)
            except SidecarError as error:
                resolution.errors.append(error.for_variable(variable.name, str(part)))
        if resolution.ok and not resolution.unset:
            value = "".join(pieces)
            try:
                if exec_limit:
                    _check_exec_size(variable.name, value)
                resolution.value = value
            except SidecarError as error:
                resolution.errors.append(error.for_variable(variable.name))
        resolutions.append(resolution)
    return resolutions


def child_environment(env: Mapping[str, str], resolutions: list[Resolution]) -> dict[str, str]:
    child = {name: value for name, value in env.items() if not name.startswith(PREFIX)}
    for resolution in resolutions:
        if resolution.unset:
            child.pop(resolution.variable.name, None)
            continue
        assert resolution.value is not None, "CMD only starts when every variable resolved"
        child[resolution.variable.name] = resolution.value
    return child
