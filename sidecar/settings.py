"""The sidecar's own settings, read once from the environment and validated.

Every `SIDECAR_*` variable is the sidecar's and is removed from CMD's environment.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from sidecar.clouds import ARM_HOSTS
from sidecar.connect_to import ConnectToRule, parse_connect_to
from sidecar.errors import ConfigurationError

PREFIX = "SIDECAR_"
# Long enough for IMDS's ~70 s upgrade window (410s) plus the fetches after it.
DEFAULT_TIMEOUT_S = 120.0
DEFAULT_MAX_CONCURRENCY = 32
DEFAULT_MAX_ATTEMPTS = 10
DEFAULT_ARM_ENDPOINT = "https://management.azure.com"
# /dev/shm is a tmpfs in Docker, containerd and Kubernetes containers alike.
DEFAULT_FILES_DIR = "/dev/shm/sidecar"
TRUE_WORDS = ("1", "true", "yes", "on")
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
    workspace: Workspace | None
    workspace_missing: tuple[str, ...]
    literal_variables: frozenset[str]
    ca_bundle: str | None
    files_dir: Path
    files_allow_disk: bool
    files_owner: tuple[int, int] | None


def _number(env: Mapping[str, str], name: str, default: float, *, integer: bool) -> float:
    text = env.get(name, "").strip()
    if not text:
        return default
    try:
        value = int(text) if integer else float(text)
    except ValueError:
        value = 0
    if value <= 0:
        kind = "a whole number" if integer else "a number of seconds"
        raise ConfigurationError(f"{name}={text!r} is not {kind} above 0.", fix=f"set {name} to e.g. {default:g}.")
    return value


def _choice(env: Mapping[str, str], name: str, choices: tuple[str, ...]) -> str:
    value = env.get(name, "").strip().lower() or choices[0]
    if value not in choices:
        raise ConfigurationError(
            f"{name}={value!r} is not one of {', '.join(choices)}.", fix=f"set {name}={choices[0]}."
        )
    return value


def _arm_endpoint(env: Mapping[str, str]) -> str:
    text = env.get("SIDECAR_ARM_ENDPOINT", "").strip() or DEFAULT_ARM_ENDPOINT
    parts = urlsplit(text)
    if parts.scheme != "https" or (parts.hostname or "") not in ARM_HOSTS or parts.path.strip("/") or parts.port:
        raise ConfigurationError(
            f"SIDECAR_ARM_ENDPOINT={text!r} is not an Azure Resource Manager endpoint of a known cloud.",
            fix="use one of " + ", ".join(f"https://{host}" for host in sorted(ARM_HOSTS)) + ".",
        )
    return f"https://{parts.hostname}"


def _owner(env: Mapping[str, str]) -> tuple[int, int] | None:
    text = env.get("SIDECAR_FILES_OWNER", "").strip()
    if not text:
        return None
    uid, _, gid = text.partition(":")
    if not uid.isdigit() or not (gid.isdigit() or gid == ""):
        raise ConfigurationError(
            f"SIDECAR_FILES_OWNER={text!r} is not UID[:GID].",
            fix="set it to the numeric user (and group) of the server.",
        )
    return int(uid), int(gid) if gid else os.getegid()


def _files_dir(env: Mapping[str, str]) -> Path:
    text = env.get("SIDECAR_FILES_DIR", "").strip() or DEFAULT_FILES_DIR
    if not text.startswith("/"):
        raise ConfigurationError(f"SIDECAR_FILES_DIR={text!r} is not an absolute path.", fix="give an absolute path.")
    return Path(text)


def log_settings(env: Mapping[str, str]) -> tuple[str, str]:
    """Log format and level alone, so that logging works even when other settings are wrong."""
    fmt = env.get("SIDECAR_LOG_FORMAT", "").strip().lower()
    level = env.get("SIDECAR_LOG_LEVEL", "").strip().lower()
    return (fmt if fmt in LOG_FORMATS else LOG_FORMATS[0], level if level in LOG_LEVELS else LOG_LEVELS[0])


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Read and validate every setting; raise ConfigurationError naming the variable and the fix."""
    env = os.environ if env is None else env
    client_id, source = None, "none (system-assigned)"
    for name in ("SIDECAR_CLIENT_ID", "DEFAULT_IDENTITY_CLIENT_ID"):
        if env.get(name, "").strip():
            client_id, source = env[name].strip(), name
            break
    workspace_vars = ("AZUREML_ARM_SUBSCRIPTION", "AZUREML_ARM_RESOURCEGROUP", "AZUREML_ARM_WORKSPACE_NAME")
    values = [env.get(name, "").strip() for name in workspace_vars]
    missing = tuple(name for name, value in zip(workspace_vars, values, strict=False) if not value)
    return Settings(
        client_id=client_id,
        client_id_source=source,
        timeout_s=_number(env, "SIDECAR_TIMEOUT", DEFAULT_TIMEOUT_S, integer=False),
        max_concurrency=int(_number(env, "SIDECAR_MAX_CONCURRENCY", DEFAULT_MAX_CONCURRENCY, integer=True)),
        max_attempts=int(_number(env, "SIDECAR_MAX_ATTEMPTS", DEFAULT_MAX_ATTEMPTS, integer=True)),
        log_format=_choice(env, "SIDECAR_LOG_FORMAT", LOG_FORMATS),
        log_level=_choice(env, "SIDECAR_LOG_LEVEL", LOG_LEVELS),
        connect_to=tuple(parse_connect_to(env.get("SIDECAR_CONNECT_TO", ""))),
        arm_endpoint=_arm_endpoint(env),
        workspace=None if missing else Workspace(*values),
        workspace_missing=missing,
        literal_variables=frozenset(name.strip() for name in env.get("SIDECAR_LITERAL", "").split(",") if name.strip()),
        ca_bundle=env.get("REQUESTS_CA_BUNDLE") or env.get("SSL_CERT_FILE") or None,
        files_dir=_files_dir(env),
        files_allow_disk=env.get("SIDECAR_FILES_ALLOW_DISK", "").strip().lower() in TRUE_WORDS,
        files_owner=_owner(env),
    )
