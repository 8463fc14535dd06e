"""One error taxonomy, mapped to exit codes in one place.

Exit codes follow sysexits(3) so that scripts and orchestrators can tell a typo
from a missing role from an outage. No message built here may contain a secret
value: messages name variables, references, stores and fixes only.
"""

from __future__ import annotations

import errno
import traceback
from collections.abc import Iterable
from pathlib import Path


class SidecarError(Exception):
    """A failure the sidecar reports to the user and turns into an exit code."""

    exit_code = 70  # EX_SOFTWARE: an error no subclass describes is a bug
    status = "error"

    def __init__(
        self,
        message: str,
        *,
        variable: str | None = None,
        reference: str | None = None,
        fix: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.variable = variable
        self.reference = reference
        self.fix = fix

    def for_variable(self, variable: str, reference: str | None = None) -> SidecarError:
        """A copy that names the variable (and reference) it failed for: one fetch can fail several."""
        return type(self)(self.message, variable=variable, reference=reference or self.reference, fix=self.fix)

    def __str__(self) -> str:
        text = self.message
        if self.reference:
            text = f"{self.reference}: {text}"
        if self.variable:
            text = f"{self.variable}: {text}"
        return f"{text} Fix: {self.fix}" if self.fix else text


class InternalError(SidecarError):
    """An exception the sidecar did not expect: a bug. Reported by type and place only."""

    exit_code = 70
    status = "internal"
    error_type = "-"  # the exception's type
    at = "-"  # file:line where it was raised

    @classmethod
    def from_exception(cls, error: BaseException) -> InternalError:
        """Say where, never what: an exception's text may quote a value."""
        frame = traceback.extract_tb(error.__traceback__)[-1] if error.__traceback__ else None
        internal = cls(
            f"{type(error).__name__}" + (f" at {Path(frame.filename).name}:{frame.lineno}" if frame else ""),
            fix="please report this with the line above; no value was written or passed on.",
        )
        internal.error_type = type(error).__name__
        internal.at = f"{Path(frame.filename).name}:{frame.lineno}" if frame else "-"
        return internal


class UsageError(SidecarError):
    exit_code = 64
    status = "usage"


class MalformedReferenceError(SidecarError):
    """A reference that cannot be parsed, or a value that cannot live in an environment variable."""

    exit_code = 65
    status = "malformed"


class NotFoundError(SidecarError):
    """The store answered that the secret, version, connection, workspace or credential does not exist."""

    exit_code = 66
    status = "not_found"


class UnavailableError(SidecarError):
    """The store could not be reached or kept failing: network, retries exhausted, deadline."""

    exit_code = 69
    status = "unavailable"


class PermissionDeniedError(SidecarError):
    exit_code = 77
    status = "forbidden"


class MissingRoleError(PermissionDeniedError):
    """A 403 that a role assignment fixes: the role is missing, not yet propagated, or on another scope.

    The one refusal SIDECAR_ROLE_WAIT retries (sidecar.resolve): a new role assignment takes minutes to apply.
    """


class ConfigurationError(SidecarError):
    """The sidecar's own settings are wrong or missing."""

    exit_code = 78
    status = "configuration"


class CommandNotExecutableError(SidecarError):
    exit_code = 126
    status = "not_executable"


class CommandNotFoundError(SidecarError):
    exit_code = 127
    status = "command_not_found"


def command_error(error: OSError, command: str) -> SidecarError:
    """Why CMD could not be started (execve, posix_spawn), as the shell's 126/127, or 65 for E2BIG."""
    if error.errno == errno.E2BIG:
        return MalformedReferenceError(
            "the environment and arguments together are too large to start CMD (E2BIG).",
            fix="deliver the largest values as files: add '?file' to their references (deferred form).",
        )
    error_class = CommandNotFoundError if isinstance(error, FileNotFoundError) else CommandNotExecutableError
    return error_class(f"could not start '{command}': {error.strerror}.", fix="check CMD.")


# With several failures, the exit code is the first of these present: the most
# actionable cause first (a typo beats a missing role beats an outage).
EXIT_CODE_PRECEDENCE = (65, 78, 77, 66, 69)


def exit_code_for(errors: Iterable[SidecarError]) -> int:
    """The one exit code that stands for a set of failures (0 when there are none)."""
    codes = {error.exit_code for error in errors}
    if not codes:
        return 0
    for code in EXIT_CODE_PRECEDENCE:
        if code in codes:
            return code
    return min(codes)
