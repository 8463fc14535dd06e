"""`sidecar.load()`: the pipeline inside a running Python process, for a `score.py` whose server the
deployment starts itself (a curated or custom Azure ML environment, where the entrypoint cannot change).

The same line as `sidecar exec`, ending in the caller's mapping instead of an execve: parse, plan, fetch
with the identity, build the values, write any files, and only then set the variables. A guest in
someone else's process: no logging configuration, no signal handler, nothing written on a failure.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable, Mapping, MutableMapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sidecar import logs
from sidecar.errors import InternalError, SidecarError, exit_code_for
from sidecar.settings import load_settings, refresh_interval, unknown_settings

if TYPE_CHECKING:
    from sidecar.background import Current

log = logs.get_logger("sidecar")

# One load at a time per process; and what each load set, so that a second call does not parse a value it
# put there (a resolved secret may itself contain `${{`, as a platform-resolved one may).
_lock = threading.Lock()
_set_by_load: dict[tuple[int, str], str] = {}  # (id of the mapping, variable) -> the value load() set


class LoadError(SidecarError):
    """`load()` failed: `failures` are the per-variable errors (each with its fix), `exit_code` the code
    `sidecar exec` would have exited with for the same failures. Nothing in the mapping was changed."""

    status = "failed"

    def __init__(self, failures: Iterable[SidecarError]) -> None:
        self.failures = list(failures)
        names = sorted({failure.variable or "(settings)" for failure in self.failures})
        super().__init__(
            f"{len(names)} variable(s) could not be resolved ({', '.join(names)}): "
            + " | ".join(str(failure) for failure in self.failures)
        )
        self.exit_code = exit_code_for(self.failures)


@dataclass(frozen=True)
class Loaded:
    """One variable load() set: where its value came from. Never the value."""

    name: str
    references: tuple[str, ...]
    stores: tuple[str, ...]
    versions: tuple[str, ...]
    destination: str  # env | file:PATH | unset (an optional reference that was missing)


@dataclass(frozen=True)
class LoadResult:
    variables: Mapping[str, Loaded]
    fetches: int
    ms: float
    current: Current | None = None  # with refresh: the values, kept current (see `load`)


def _settings_env(environ: Mapping[str, str], overrides: Mapping[str, object | None]) -> dict[str, str]:
    env = dict(environ)
    for name, value in overrides.items():
        if value is None:
            continue
        if isinstance(value, str | os.PathLike):
            text = os.fspath(value)
        elif isinstance(value, bool):
            text = "true" if value else "false"
        elif isinstance(value, int | float):
            text = f"{value:g}" if isinstance(value, float) else str(value)
        else:
            text = ",".join(value)  # type: ignore[arg-type]  (literal: names)
        env[name] = str(text)
    return env


def load(
    environ: MutableMapping[str, str] | None = None,
    *,
    timeout: float | None = None,
    client_id: str | None = None,
    files_dir: str | os.PathLike[str] | None = None,
    literal: Iterable[str] | None = None,
    platform_form: str | None = None,
    role_wait: float | None = None,
    refresh: bool | float = False,
    on_change: Callable[[list[str]], None] | None = None,
) -> LoadResult:
    """Resolve every secret reference in `environ` (default: os.environ) in place, as `sidecar exec` does.

    Both forms (`${{keyvault:...}}`/`${{azureml://connections/...}}` anywhere in a value, and the deferred
    form with its options), the same identity (MSI_ENDPOINT/MSI_SECRET or IMDS; SIDECAR_CLIENT_ID, else
    DEFAULT_IDENTITY_CLIENT_ID), deduplication, concurrency, retries and one deadline; `?file` references
    are written to SIDECAR_FILES_DIR. Every failure is collected in one pass.

    Settings come from SIDECAR_* in `environ`, as for the command line; a keyword given here wins over its
    variable: `timeout` (SIDECAR_TIMEOUT, seconds), `client_id` (SIDECAR_CLIENT_ID), `files_dir`
    (SIDECAR_FILES_DIR), `literal` (SIDECAR_LITERAL: names never parsed), `platform_form`
    (SIDECAR_PLATFORM_FORM: "resolve" or "pass") and `role_wait` (SIDECAR_ROLE_WAIT, seconds). SIDECAR_*
    variables stay in `environ`.

    Returns a LoadResult: for each variable set, its references, stores, versions and destination; never a
    value. Raises LoadError (a sidecar.SidecarError) with `.exit_code` (the command line's code for the same
    failures) and `.failures` (each naming its variable, the reference, the store's answer and the fix);
    then nothing in `environ` has changed and no file was written.

    `refresh`: keep the values current in the background, every SIDECAR_REFRESH_INTERVAL seconds (True) or
    every `refresh` seconds (at least 1), as `sidecar supervise` does: only references that can change are
    read again, `?file` files are rewritten atomically, and the result's `current` mapping (variable ->
    value, or the file's path) is swapped for a new one; os.environ keeps the values of the first load, since
    no thread may write it while others read it. `on_change(names)` is then called from that thread with the
    changed variables' names. `result.current.stop()` ends it. A failed round keeps the current values, logs
    the failure with its fix, and the rounds back off (2x, then 4x the interval).

    Calling it again is harmless: a variable whose value is the one an earlier load() set is left alone, so a
    resolved value is never parsed as a reference. Calls are serialised; it installs no signal handler and
    changes no logging configuration: its events go to the standard `logging` module under the `sidecar`
    logger, as one JSON object per record, with every fetched value and token redacted.
    """
    target = os.environ if environ is None else environ
    overrides = {
        "SIDECAR_TIMEOUT": timeout,
        "SIDECAR_CLIENT_ID": client_id,
        "SIDECAR_FILES_DIR": files_dir,
        "SIDECAR_LITERAL": literal,
        "SIDECAR_PLATFORM_FORM": platform_form,
        "SIDECAR_ROLE_WAIT": role_wait,
    }
    if refresh is not False and refresh is not True:
        overrides["SIDECAR_REFRESH_INTERVAL"] = refresh
    with _lock:
        return _load(target, _settings_env(target, overrides), refresh=refresh is not False, on_change=on_change)


def _load(
    target: MutableMapping[str, str],
    env: dict[str, str],
    *,
    refresh: bool,
    on_change: Callable[[list[str]], None] | None,
) -> LoadResult:
    from sidecar.delivery import Delivery
    from sidecar.pipeline import log_report, resolve_environment

    already = sorted(name for name, value in env.items() if _set_by_load.get((id(target), name)) == value)
    if already:
        literal = env.get("SIDECAR_LITERAL", "")
        env["SIDECAR_LITERAL"] = ",".join(filter(None, [literal, *already]))
    try:
        settings = load_settings(env)
        interval_s = refresh_interval(env) if refresh else None
        for name in unknown_settings(env):
            log.warning("unknown setting", setting=name, fix="check its spelling against `sidecar --help`.")
        delivery = Delivery(settings.files_dir, settings.files_allow_disk, settings.files_owner)
        report = resolve_environment(env, settings, delivery)
        log_report(report)
        if report.errors:
            raise LoadError(report.errors)
        delivery.write(report.resolutions)
    except LoadError:
        raise
    except SidecarError as error:
        raise LoadError([error]) from None
    except Exception as error:  # a bug: by type and place only, as the command line says (its text may quote a value)
        raise LoadError([InternalError.from_exception(error)]) from None
    loaded = {}
    for resolution in report.resolutions:
        variable = resolution.variable
        if resolution.unset:
            target.pop(variable.name, None)
        else:
            assert resolution.value is not None, "a resolution without errors has a value or is unset"
            target[variable.name] = resolution.value
            _set_by_load[(id(target), variable.name)] = resolution.value
        loaded[variable.name] = Loaded(
            name=variable.name,
            references=tuple(str(reference) for reference in variable.references),
            stores=tuple(sorted({reference.store for reference in variable.references})),
            versions=tuple(resolution.versions),
            destination=resolution.destination,
        )
    current = None
    if interval_s is not None:
        from sidecar import background

        current = background.Current(background.values(report.resolutions))
        background.Rounds(
            current, report.resolutions, report.carried, env, settings, delivery, interval_s, on_change
        ).start()
    return LoadResult(variables=loaded, fetches=report.fetches, ms=report.ms, current=current)
