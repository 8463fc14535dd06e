"""The sidecar's own settings, read once from the environment and validated.

Every `SIDECAR_*` variable is the sidecar's and is removed from CMD's environment.
"""

from __future__ import annotations

import os
import re
import signal
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from sidecar.clouds import ARM_HOSTS
from sidecar.connect_to import ConnectToRule, parse_connect_to
from sidecar.errors import ConfigurationError
from sidecar.references import shown

PREFIX = "SIDECAR_"
# Long enough for IMDS's ~70 s upgrade window (410s) plus the fetches after it.
DEFAULT_TIMEOUT_S = 120.0
DEFAULT_MAX_CONCURRENCY = 32
DEFAULT_MAX_ATTEMPTS = 10
DEFAULT_ARM_ENDPOINT = "https://management.azure.com"
# /dev/shm is a tmpfs in Docker, containerd and Kubernetes containers alike.
DEFAULT_FILES_DIR = "/dev/shm/sidecar"
TRUE_WORDS = ("1", "true", "yes", "on")
# Upper bounds keep every number usable by the clock, the thread pool and the retry loop.
MAX_TIMEOUT_S = 3600.0
MAX_CONCURRENCY = 256
MAX_ATTEMPTS = 100
MAX_ID = 2**32 - 2  # the largest uid/gid Linux accepts ((uid_t)-1 means "unchanged")
_SECONDS = re.compile(r"[0-9]+(?:\.[0-9]+)?")
_WHOLE = re.compile(r"[0-9]+")
GUID = re.compile(r"[0-9a-fA-F]{8}-(?:[0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}")
# Azure's own patterns (azure-rest-api-specs: common-types ResourceGroupNameParameter, and
# Microsoft.MachineLearningServices WorkspaceNameParameter); they also keep the ARM path whole.
_RESOURCE_GROUP = re.compile(r"[-\w._()]{0,89}[-\w_()]")
_WORKSPACE_NAME = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_-]{2,32}")
# supervise and render --watch
DEFAULT_REFRESH_INTERVAL_S = 300.0
MIN_REFRESH_INTERVAL_S = 1.0  # for tests and local runs
MAX_REFRESH_INTERVAL_S = 86400.0
DEFAULT_STOP_TIMEOUT_S = 30.0
ON_CHANGE = ("auto", "restart", "signal", "none")  # the first is the default
STOP_SIGNALS = ("TERM", "INT", "QUIT", "HUP", "USR1", "USR2", "KILL")
# Signals a server may take as "reload": never one that stops a process by convention.
RELOAD_SIGNALS = ("HUP", "USR1", "USR2")
# resolve: the sidecar resolves ${{...}}; pass: the platform already did (a managed online endpoint)
PLATFORM_FORMS = ("resolve", "pass")
LOG_FORMATS = ("json", "console")
LOG_LEVELS = ("info", "debug", "warning", "error")  # the first is the default


@dataclass(frozen=True)
class Workspace:
    subscription: str
    resource_group: str
    name: str


@dataclass(frozen=True)
class Settings:
    client_id: str | None
    client_id_source: str
    timeout_s: float
    max_concurrency: int
    max_attempts: int
    log_format: str
    log_level: str
    connect_to: tuple[ConnectToRule, ...]
    arm_endpoint: str
    workspace: Workspace | ConfigurationError  # the error when missing or invalid: only connections need it
    literal_variables: frozenset[str]
    platform_form: str  # resolve | pass (see PLATFORM_FORMS)
    role_wait_s: float  # how long a 403 that a role assignment fixes is retried (0: not at all)
    ca_bundle: str | ConfigurationError | None  # None: the system's trust
    files_dir: Path
    files_allow_disk: bool
    files_owner: tuple[int, int] | None


def _number(
    env: Mapping[str, str],
    name: str,
    default: float,
    maximum: float,
    *,
    integer: bool,
    minimum: float = 0.0,
    zero: bool = False,
) -> float:
    """A plain decimal number in (0, maximum] (or [minimum, maximum], or with `zero` [0, maximum]): no sign,
    exponent, inf or nan."""
    text = env.get(name, "").strip()
    if not text:
        return default
    pattern, kind = (_WHOLE, "a whole number") if integer else (_SECONDS, "a number of seconds")
    value = float(text) if pattern.fullmatch(text) else -1.0
    if not (minimum <= value <= maximum and (value > 0 or (zero and value == 0))):
        lowest = f"at least {minimum:g}" if minimum or zero else "above 0"
        raise ConfigurationError(
            f"{name}={text!r} is not {kind} {lowest} and at most {maximum:g}.", fix=f"set {name} to e.g. {default:g}."
        )
    return value


def _choice(env: Mapping[str, str], name: str, choices: tuple[str, ...]) -> str:
    value = env.get(name, "").strip().lower() or choices[0]
    if value not in choices:
        raise ConfigurationError(
            f"{name}={value!r} is not one of {', '.join(choices)}.", fix=f"set {name}={choices[0]}."
        )
    return value


def _arm_endpoint(env: Mapping[str, str]) -> str:
    """`https://<ARM host of a known cloud>`, optionally with a trailing '/': nothing else may ride along."""
    text = env.get("SIDECAR_ARM_ENDPOINT", "").strip() or DEFAULT_ARM_ENDPOINT
    try:
        parts = urlsplit(text)
    except ValueError:  # a bad [IPv6] host
        parts = urlsplit("")
    if (
        parts.scheme != "https"
        or parts.netloc not in ARM_HOSTS
        or parts.path not in ("", "/")
        or "?" in text
        or "#" in text
    ):
        raise ConfigurationError(
            f"SIDECAR_ARM_ENDPOINT={shown(text)!r} is not an Azure Resource Manager endpoint of a known cloud.",
            fix="use one of " + ", ".join(f"https://{host}" for host in sorted(ARM_HOSTS)) + ".",
        )
    return f"https://{parts.netloc}"


def _owner(env: Mapping[str, str]) -> tuple[int, int] | None:
    text = env.get("SIDECAR_FILES_OWNER", "").strip()
    if not text:
        return None
    uid, _, gid = text.partition(":")
    gid = gid or str(os.getegid())
    if not (_WHOLE.fullmatch(uid) and _WHOLE.fullmatch(gid)) or max(int(uid), int(gid)) > MAX_ID:
        raise ConfigurationError(
            f"SIDECAR_FILES_OWNER={text!r} is not UID[:GID] (numbers from 0 to {MAX_ID}).",
            fix="set it to the numeric user (and group) of the server.",
        )
    return int(uid), int(gid)


def _files_dir(env: Mapping[str, str]) -> Path:
    text = env.get("SIDECAR_FILES_DIR", "").strip() or DEFAULT_FILES_DIR
    if not text.startswith("/"):
        raise ConfigurationError(f"SIDECAR_FILES_DIR={text!r} is not an absolute path.", fix="give an absolute path.")
    return Path(text)


def _client_id(env: Mapping[str, str]) -> tuple[str | None, str]:
    for name in ("SIDECAR_CLIENT_ID", "DEFAULT_IDENTITY_CLIENT_ID"):
        value = env.get(name, "").strip()
        if value:
            if not GUID.fullmatch(value):
                raise ConfigurationError(
                    f"{name}={value!r} is not a client id (a GUID such as 00000000-0000-0000-0000-000000000000).",
                    fix=f"set {name} to the client id of the managed identity (not its name or resource id).",
                )
            return value, name
    return None, "none (system-assigned)"


def _workspace(env: Mapping[str, str]) -> Workspace | ConfigurationError:
    """The workspace of connection references, each part checked against Azure's pattern; or what is wrong.

    Not raised here: only a run with a connection reference needs the workspace.
    """
    checks = (
        ("AZUREML_ARM_SUBSCRIPTION", GUID, "a subscription id (a GUID)"),
        (
            "AZUREML_ARM_RESOURCEGROUP",
            _RESOURCE_GROUP,
            "a resource group name (1-90 letters, digits, -_.(), not ending in '.')",
        ),
        ("AZUREML_ARM_WORKSPACE_NAME", _WORKSPACE_NAME, "a workspace name (3-33 letters, digits, _ or -)"),
    )
    values = [env.get(name, "").strip() for name, _, _ in checks]
    missing = [name for (name, _, _), value in zip(checks, values, strict=True) if not value]
    if missing:
        return ConfigurationError(
            f"a workspace connection reference needs the workspace, but {', '.join(missing)} is not set.",
            fix="set AZUREML_ARM_SUBSCRIPTION, AZUREML_ARM_RESOURCEGROUP and AZUREML_ARM_WORKSPACE_NAME "
            "to the workspace that holds the connection.",
        )
    for (name, pattern, kind), value in zip(checks, values, strict=True):
        if not pattern.fullmatch(value):
            return ConfigurationError(
                f"{name}={value!r} is not {kind}.", fix=f"set {name} to the workspace's value in the Azure portal."
            )
    return Workspace(*values)


def _ca_bundle(env: Mapping[str, str]) -> str | ConfigurationError | None:
    """Extra TLS trust, or what is wrong with it (raised only by a run that fetches)."""
    for name in ("REQUESTS_CA_BUNDLE", "SSL_CERT_FILE"):
        path = env.get(name)
        if path:
            if not os.access(path, os.R_OK):
                return ConfigurationError(
                    f"{name}={path!r} is not a readable file or directory of CA certificates.",
                    fix=f"point {name} at a PEM bundle, or unset it to trust the system's CAs.",
                )
            return path
    return None


@dataclass(frozen=True)
class RefreshSettings:
    """What `supervise` and `render --watch` add: how often to refresh, and what to do on a change."""

    interval_s: float
    on_change: str  # auto | restart | signal | none
    reload_signal: signal.Signals | None
    stop_signal: signal.Signals
    stop_timeout_s: float


def _signal(env: Mapping[str, str], name: str, allowed: tuple[str, ...]) -> signal.Signals | None:
    """A signal by name (HUP, SIGHUP, hup), one of `allowed`; None when unset."""
    text = env.get(name, "").strip()
    if not text:
        return None
    short = text.upper().removeprefix("SIG")
    if short not in allowed:
        raise ConfigurationError(
            f"{name}={text!r} is not one of the signals {', '.join(allowed)}.", fix=f"set {name} to e.g. {allowed[0]}."
        )
    return signal.Signals[f"SIG{short}"]


def refresh_interval(env: Mapping[str, str]) -> float:
    return _number(
        env,
        "SIDECAR_REFRESH_INTERVAL",
        DEFAULT_REFRESH_INTERVAL_S,
        MAX_REFRESH_INTERVAL_S,
        integer=False,
        minimum=MIN_REFRESH_INTERVAL_S,
    )


def load_refresh_settings(env: Mapping[str, str] | None = None) -> RefreshSettings:
    """The settings of the refresh loop (read only by the commands that refresh)."""
    env = os.environ if env is None else env
    on_change = _choice(env, "SIDECAR_ON_CHANGE", ON_CHANGE)
    reload_signal = _signal(env, "SIDECAR_RELOAD_SIGNAL", RELOAD_SIGNALS)
    if on_change == "signal" and reload_signal is None:
        raise ConfigurationError(
            "SIDECAR_ON_CHANGE=signal needs SIDECAR_RELOAD_SIGNAL, the signal that makes the server re-read its files.",
            fix="set SIDECAR_RELOAD_SIGNAL (e.g. HUP for gunicorn and azmlinfsrv), or SIDECAR_ON_CHANGE=restart.",
        )
    return RefreshSettings(
        interval_s=refresh_interval(env),
        on_change=on_change,
        reload_signal=reload_signal,
        stop_signal=_signal(env, "SIDECAR_STOP_SIGNAL", STOP_SIGNALS) or signal.SIGTERM,
        stop_timeout_s=_number(env, "SIDECAR_STOP_TIMEOUT", DEFAULT_STOP_TIMEOUT_S, MAX_TIMEOUT_S, integer=False),
    )


# Every SIDECAR_* name something reads (entrypoint.sh reads the last two): any other is a typo.
KNOWN_SETTINGS = frozenset(
    {
        "SIDECAR_CLIENT_ID",
        "SIDECAR_TIMEOUT",
        "SIDECAR_MAX_CONCURRENCY",
        "SIDECAR_MAX_ATTEMPTS",
        "SIDECAR_LOG_FORMAT",
        "SIDECAR_LOG_LEVEL",
        "SIDECAR_CONNECT_TO",
        "SIDECAR_ARM_ENDPOINT",
        "SIDECAR_LITERAL",
        "SIDECAR_PLATFORM_FORM",
        "SIDECAR_ROLE_WAIT",
        "SIDECAR_FILES_DIR",
        "SIDECAR_FILES_ALLOW_DISK",
        "SIDECAR_FILES_OWNER",
        "SIDECAR_REFRESH_INTERVAL",
        "SIDECAR_ON_CHANGE",
        "SIDECAR_RELOAD_SIGNAL",
        "SIDECAR_STOP_SIGNAL",
        "SIDECAR_STOP_TIMEOUT",
        "SIDECAR_MODE",
        "SIDECAR_BIN",
    }
)


def unknown_settings(env: Mapping[str, str]) -> list[str]:
    """SIDECAR_* names nothing reads: most likely misspelt settings, which would otherwise pass unnoticed."""
    return sorted(name for name in env if name.startswith(PREFIX) and name not in KNOWN_SETTINGS)


def log_settings(env: Mapping[str, str]) -> tuple[str, str]:
    """Log format and level alone, so that logging works even when other settings are wrong."""
    fmt = env.get("SIDECAR_LOG_FORMAT", "").strip().lower()
    level = env.get("SIDECAR_LOG_LEVEL", "").strip().lower()
    return (fmt if fmt in LOG_FORMATS else LOG_FORMATS[0], level if level in LOG_LEVELS else LOG_LEVELS[0])


def _literal_variables(env: Mapping[str, str]) -> frozenset[str]:
    return frozenset(name.strip() for name in env.get("SIDECAR_LITERAL", "").split(",") if name.strip())


def parsing_settings(env: Mapping[str, str]) -> tuple[frozenset[str], bool]:
    """What parsing the references needs (SIDECAR_LITERAL, whether SIDECAR_PLATFORM_FORM is resolve), read
    without failing: the malformed references are reported even when another setting is wrong."""
    return _literal_variables(env), env.get("SIDECAR_PLATFORM_FORM", "").strip().lower() != "pass"


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Read and validate every setting; raise ConfigurationError naming the variable and the fix."""
    env = os.environ if env is None else env
    client_id, source = _client_id(env)
    return Settings(
        client_id=client_id,
        client_id_source=source,
        timeout_s=_number(env, "SIDECAR_TIMEOUT", DEFAULT_TIMEOUT_S, MAX_TIMEOUT_S, integer=False),
        max_concurrency=int(
            _number(env, "SIDECAR_MAX_CONCURRENCY", DEFAULT_MAX_CONCURRENCY, MAX_CONCURRENCY, integer=True)
        ),
        max_attempts=int(_number(env, "SIDECAR_MAX_ATTEMPTS", DEFAULT_MAX_ATTEMPTS, MAX_ATTEMPTS, integer=True)),
        log_format=_choice(env, "SIDECAR_LOG_FORMAT", LOG_FORMATS),
        log_level=_choice(env, "SIDECAR_LOG_LEVEL", LOG_LEVELS),
        connect_to=tuple(parse_connect_to(env.get("SIDECAR_CONNECT_TO", ""))),
        arm_endpoint=_arm_endpoint(env),
        workspace=_workspace(env),
        literal_variables=_literal_variables(env),
        platform_form=_choice(env, "SIDECAR_PLATFORM_FORM", PLATFORM_FORMS),
        role_wait_s=_number(env, "SIDECAR_ROLE_WAIT", 0.0, MAX_TIMEOUT_S, integer=False, zero=True),
        ca_bundle=_ca_bundle(env),
        files_dir=_files_dir(env),
        files_allow_disk=env.get("SIDECAR_FILES_ALLOW_DISK", "").strip().lower() in TRUE_WORDS,
        files_owner=_owner(env),
    )
