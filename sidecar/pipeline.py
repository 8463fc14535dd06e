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

from sidecar import logs
from sidecar.delivery import Delivery
from sidecar.environment import Resolution
from sidecar.errors import SidecarError
from sidecar.plan import FetchId
from sidecar.references import ConnectionReference, KeyVaultReference, Variable, parse_environment
from sidecar.settings import Settings, Workspace
from sidecar.stores.base import Fetched

log = logs.get_logger("sidecar")


@dataclass
class Report:
    resolutions: list[Resolution] = field(default_factory=list)
    errors: list[SidecarError] = field(default_factory=list)  # every failure, each naming its variable
    fetches: int = 0
    token_requests: int = 0
    ms: float = 0.0
    carried: Carried | None = None  # for the next round of a long-running sidecar


def _setting_errors(variables: list[Variable], settings: Settings) -> list[SidecarError]:
    """A setting that references need and that is wrong: an error for each variable with such a reference."""
    errors = []
    for variable in variables:
        if isinstance(settings.ca_bundle, SidecarError) and variable.references:
            errors.append(settings.ca_bundle.for_variable(variable.name))
        if isinstance(settings.workspace, SidecarError):
            errors += [
                settings.workspace.for_variable(variable.name, str(reference))
                for reference in variable.references
                if isinstance(reference, ConnectionReference)
            ]
    return errors


@dataclass
class Carried:
    """What a long-running sidecar hands from one round to the next (see sidecar.refresh).

    The identity's tokens, so that a round asks for a token only when the last one runs out, as a
    single run asks once per audience; what pinned references (a Key Vault version) fetched, which
    can never change and so are never read again; and what each store learnt about its locations
    (a vault's challenge), so that a round sends exactly one request per reference that can change.
    """

    tokens: dict[str, tuple[str, int]] = field(default_factory=dict)
    pinned: dict[FetchId, Fetched] = field(default_factory=dict)
    stores: dict[str, bytes | None] = field(default_factory=dict)  # what each store learnt (Store.carry)
    rounds: int = 0


def prepare_variables(
    env: Mapping[str, str], settings: Settings, delivery: Delivery
) -> tuple[list[Variable], list[SidecarError]]:
    """Everything before a fetch: parse the references, check the settings they need, check every name
    that becomes a path or a shell line and open the directories values go to (`delivery.prepare`).
    Imports no SDK.

    Returns the variables to fetch, those without an error, and every error, each naming its variable:
    one malformed reference does not keep the others from being fetched, so one run reports every problem.
    """
    variables, errors = parse_environment(
        env, literal=settings.literal_variables, platform_form=settings.platform_form == "resolve"
    )
    errors += _setting_errors(variables, settings)
    errors += delivery.prepare(variables)
    failed = {error.variable for error in errors}
    return [variable for variable in variables if variable.name not in failed], errors


def resolve_environment(env: Mapping[str, str], settings: Settings, delivery: Delivery) -> Report:
    """Resolve every reference in `env`, and report every failure. Fails closed: any error leaves no value
    for that variable, and a caller starts nothing while the report has an error.
    """
    variables, errors = prepare_variables(env, settings, delivery)
    report = fetch_values(variables, env, settings, delivery)
    report.errors = errors + report.errors
    return report


def fetch_values(
    variables: list[Variable],
    env: Mapping[str, str],
    settings: Settings,
    delivery: Delivery,
    carried: Carried | None = None,
) -> Report:
    """Fetch what the references name and build each variable's new value.

    With `carried` (a round of a long-running sidecar), start from its tokens and pinned results and
    leave the report's `carried` for the next round.
    """
    started = time.monotonic()
    report = Report()
    if not any(variable.references for variable in variables):
        report.resolutions = [Resolution(variable, value="".join(variable.parts)) for variable in variables]  # type: ignore[arg-type]
        return report

    from sidecar.environment import resolve_variables
    from sidecar.identity import ManagedIdentity
    from sidecar.plan import make_plan
    from sidecar.resolve import Deadline, Outcome, fetch_all
    from sidecar.session import new_session

    carried = carried or Carried()
    deadline = Deadline(settings.timeout_s, role_wait=None if carried.rounds else settings.role_wait_s)
    session = new_session(list(settings.connect_to), pool_maxsize=settings.max_concurrency, announce=not carried.rounds)
    identity = ManagedIdentity(settings, env, session, tokens=carried.tokens)
    (log.debug if carried.rounds else log.info)(
        "identity",
        flavour=identity.flavour,
        endpoint=identity.endpoint,
        client_id=identity.client_id,
        client_id_source=identity.client_id_source,
    )
    assert not isinstance(settings.ca_bundle, SidecarError), "prepare_variables reports it"
    verify: str | bool = settings.ca_bundle or True
    kinds = {reference.store for variable in variables for reference in variable.references}
    stores = {}
    if KeyVaultReference.store in kinds:
        from sidecar.stores.keyvault import KeyVaultStore

        stores[KeyVaultStore.kind] = KeyVaultStore(identity, session, verify)
    if ConnectionReference.store in kinds:
        from sidecar.stores.connections import ConnectionStore

        assert isinstance(settings.workspace, Workspace)
        stores[ConnectionStore.kind] = ConnectionStore(
            identity, session, verify, settings.arm_endpoint, settings.workspace
        )
    for kind, store in stores.items():
        store.resume(carried.stores.get(kind))
    plan = make_plan(variables, stores, known=carried.pinned.keys())
    outcomes = fetch_all(
        plan, identity, deadline, max_concurrency=settings.max_concurrency, max_attempts=settings.max_attempts
    )
    outcomes.update({fetch_id: Outcome(fetched=fetched) for fetch_id, fetched in carried.pinned.items()})
    report.resolutions = resolve_variables(
        plan, outcomes, delivery.files_dir, exec_limit=delivery.values_reach_an_environment
    )
    report.errors = [error for resolution in report.resolutions for error in resolution.errors]
    report.fetches = plan.fetch_count
    report.token_requests = identity.requests
    report.ms = (time.monotonic() - started) * 1000
    pinned = {
        plan.fetch_id(reference)
        for variable in variables
        for reference in variable.references
        if not reference.can_change
    }
    report.carried = Carried(
        tokens=identity.tokens,
        pinned={
            fetch_id: outcome.fetched
            for fetch_id, outcome in outcomes.items()
            if outcome.fetched is not None and fetch_id in pinned
        },
        stores={kind: store.carry() for kind, store in stores.items()},
        rounds=carried.rounds + 1,
    )
    return report


def log_report(report: Report) -> None:
    """One event per variable, then a summary; never a value."""
    failed = {error.variable for error in report.errors}
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
        variables=len({resolution.variable.name for resolution in report.resolutions} | failed),
        failed=len(failed),
        fetches=report.fetches,
        token_requests=report.token_requests,
        ms=round(report.ms, 1),
    )
