"""The straight line both commands share:
environment -> parse references -> plan the fetches -> fetch with the identity -> new values.

Only the SDKs a run needs are imported: an environment without Key Vault
references never imports azure-keyvault-secrets, one without any reference
imports no Azure code at all.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import structlog

from sidecar.delivery import check_directory, write_atomic
from sidecar.environment import Resolution
from sidecar.errors import ConfigurationError, SidecarError
from sidecar.references import ConnectionReference, KeyVaultReference, Variable, parse_environment
from sidecar.settings import Settings

log = structlog.get_logger("sidecar")


@dataclass
class Report:
    resolutions: list[Resolution] = field(default_factory=list)
    errors: list[SidecarError] = field(default_factory=list)  # every failure, each naming its variable
    fetches: int = 0
    token_requests: int = 0
    ms: float = 0.0


def _workspace_errors(variables: list[Variable], settings: Settings) -> list[SidecarError]:
    if not settings.workspace_missing:
        return []
    return [
        ConfigurationError(
            f"a workspace connection reference needs the workspace, but {', '.join(settings.workspace_missing)} "
            "is not set.",
            variable=variable.name,
            reference=str(reference),
            fix="set AZUREML_ARM_SUBSCRIPTION, AZUREML_ARM_RESOURCEGROUP and AZUREML_ARM_WORKSPACE_NAME "
            "to the workspace that holds the connection.",
        )
        for variable in variables
        for reference in variable.references
        if isinstance(reference, ConnectionReference)
    ]


def resolve_environment(env: Mapping[str, str], settings: Settings) -> Report:
    """Resolve every reference in `env`. Fails closed: any error leaves no value for that variable."""
    started = time.monotonic()
    variables, errors = parse_environment(env, literal=settings.literal_variables)
    errors += _workspace_errors(variables, settings)
    if any(reference.options.file for variable in variables for reference in variable.references):
        try:
            check_directory(settings.files_dir, allow_disk=settings.files_allow_disk, setting="SIDECAR_FILES_DIR")
        except SidecarError as error:
            errors.append(error)
    report = Report(errors=errors)
    if errors:
        return report  # nothing is fetched, and no token requested, while a reference is wrong
    if not any(variable.references for variable in variables):
        report.resolutions = [Resolution(variable, value="".join(variable.parts)) for variable in variables]  # type: ignore[arg-type]
        return report

    from sidecar.environment import resolve_variables
    from sidecar.identity import ManagedIdentity
    from sidecar.plan import make_plan
    from sidecar.resolve import Deadline, fetch_all
    from sidecar.session import new_session

    deadline = Deadline(settings.timeout_s)
    identity = ManagedIdentity(settings, env)
    log.info(
        "identity",
        flavour=identity.flavour,
        endpoint=identity.endpoint,
        client_id=identity.client_id,
        client_id_source=identity.client_id_source,
    )
    session = new_session(list(settings.connect_to), pool_maxsize=settings.max_concurrency)
    verify: str | bool = settings.ca_bundle or True
    kinds = {reference.store for variable in variables for reference in variable.references}
    stores = {}
    if KeyVaultReference.store in kinds:
        from sidecar.stores.keyvault import KeyVaultStore

        stores[KeyVaultStore.kind] = KeyVaultStore(identity, session, verify)
    if ConnectionReference.store in kinds:
        from sidecar.stores.connections import ConnectionStore

        assert settings.workspace is not None
        stores[ConnectionStore.kind] = ConnectionStore(
            identity, session, verify, settings.arm_endpoint, settings.workspace
        )
    plan = make_plan(variables, stores)
    outcomes = fetch_all(
        plan, identity, deadline, max_concurrency=settings.max_concurrency, max_attempts=settings.max_attempts
    )
    report.resolutions = resolve_variables(plan, outcomes, settings.files_dir)
    report.errors = [error for resolution in report.resolutions for error in resolution.errors]
    report.fetches = plan.fetch_count
    report.token_requests = identity.requests
    report.ms = (time.monotonic() - started) * 1000
    return report


def log_report(report: Report) -> None:
    """One event per variable, then a summary; never a value."""
    for resolution in report.resolutions:
        variable = resolution.variable
        for warning in resolution.warnings:
            log.warning("warning", variable=variable.name, warning=warning)
        if resolution.ok:
            log.info(
                "resolved",
                variable=variable.name,
                form=variable.form,
                references=[str(reference) for reference in variable.references],
                stores=sorted({reference.store for reference in variable.references}),
                versions=resolution.versions,
                length=resolution.length,
                destination=resolution.destination,
                ms=round(resolution.ms, 1),
                attempts=resolution.attempts,
            )
    for error in report.errors:
        log.error(
            "failed",
            variable=error.variable,
            reference=error.reference,
            status=error.status,
            exit_code=error.exit_code,
            error=error.message,
            fix=error.fix,
        )
    log.info(
        "summary",
        variables=len(report.resolutions) or len({error.variable for error in report.errors}),
        failed=len({error.variable for error in report.errors}),
        fetches=report.fetches,
        token_requests=report.token_requests,
        ms=round(report.ms, 1),
    )


def write_files(report: Report, owner: tuple[int, int] | None, render_dir: Path | None = None) -> None:
    """Write every file-delivered value, and with `render_dir` every other value too, one file per variable.

    Called only once everything resolved: a failed start writes nothing. The file of an optional
    reference that is now missing is removed, so no stale secret outlives its source.
    """
    for resolution in report.resolutions:
        path, data = resolution.file_path, resolution.file_data
        if path is None and render_dir is not None:
            path, data = render_dir / resolution.variable.name, (resolution.value or "").encode("utf-8")
        if path is None:
            continue
        try:
            if resolution.unset:
                path.unlink(missing_ok=True)
                continue
            assert data is not None
            write_atomic(path, data, owner)
        except OSError as exc:
            raise ConfigurationError(
                f"could not write {path}: {exc.strerror}.",
                variable=resolution.variable.name,
                fix="make the directory writable by the sidecar's user (SIDECAR_FILES_OWNER needs root).",
            ) from None
        log.info("file", variable=resolution.variable.name, path=str(path), length=len(data))
