"""Command line: `sidecar exec -- CMD [ARG...]` and `sidecar check`.

Errors become exit codes here and only here (see sidecar.errors).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from sidecar import __version__, logs
from sidecar.errors import (
    CommandNotExecutableError,
    CommandNotFoundError,
    ConfigurationError,
    InternalError,
    MissingRoleError,
    SidecarError,
    UsageError,
    command_error,
    exit_code_for,
)
from sidecar.settings import Settings, load_settings, log_settings, parsing_settings, unknown_settings

if TYPE_CHECKING:
    from sidecar.delivery import Delivery
    from sidecar.pipeline import Report

log = logs.get_logger("sidecar")

REFERENCE_HELP = """\
references (in any environment value):
  ${{keyvault:https://<vault>.vault.azure.net/secrets/<name>[/<version>]}}
  ${{azureml://connections/<conn>}}                    the List Secrets JSON
  ${{azureml://connections/<conn>/target}}
  ${{azureml://connections/<conn>/credentials/<name>}} (CustomKeys: keys.<name>)
  ${{azureml://connections/<conn>/metadata/<name>}}
  Platform form: may sit inside other text, several per value; $${{ is a literal ${{
  (both are the sidecar's own: on a managed online endpoint, where the platform resolves
  this form itself, use the deferred form for them).
  Deferred form: the same URI as the whole value, without ${{ }}, e.g.
  keyvault:https://kv.vault.azure.net/secrets/api-key. List a variable in
  SIDECAR_LITERAL to pass its value on unchanged.

options (deferred form only): <reference>[?option&option...][#/json/pointer]
  optional        a missing secret/version/connection/name removes the variable (with a warning)
  default=VALUE   ...or gives VALUE (percent-encoded; implies optional)
  #/a/b           RFC 6901 JSON pointer into a JSON value
  decode=base64   base64-decode the value
  format=pem      a PKCS#12 (PFX) certificate as PEM: certificate, chain, private key
  file[=NAME]     write the value to SIDECAR_FILES_DIR/NAME (default: the variable's name;
                  1-255 of A-Z a-z 0-9 . _ -, not starting with '.'), mode 0400, atomically,
                  never through a link; the variable holds the path
  e.g. TLS_CERT=keyvault:https://kv.vault.azure.net/secrets/web-cert?format=pem&file=tls.pem

settings:
  SIDECAR_CLIENT_ID / DEFAULT_IDENTITY_CLIENT_ID  managed identity client id (else system-assigned)
  MSI_ENDPOINT + MSI_SECRET                     Azure ML identity endpoint (else IMDS;
                                                AZURE_POD_IDENTITY_AUTHORITY_HOST overrides its address)
  AZURE_AUTHORITY_HOST + AZURE_TENANT_ID + AZURE_FEDERATED_TOKEN_FILE (+ AZURE_CLIENT_ID)
                                                Kubernetes workload identity: the service-account token is
                                                exchanged at Microsoft Entra (known clouds' authority hosts
                                                only); SIDECAR_CLIENT_ID / DEFAULT_IDENTITY_CLIENT_ID win
                                                over AZURE_CLIENT_ID
  AZUREML_ARM_SUBSCRIPTION, AZUREML_ARM_RESOURCEGROUP, AZUREML_ARM_WORKSPACE_NAME
                                                workspace of connection references
  SIDECAR_ARM_ENDPOINT     ARM host (default https://management.azure.com)
  SIDECAR_TIMEOUT          one deadline for the whole resolution, seconds (default 120, at most 3600)
  SIDECAR_MAX_CONCURRENCY  parallel fetches (default 32, at most 256)
  SIDECAR_MAX_ATTEMPTS     attempts per request, transient failures only (default 10, at most 100)
  SIDECAR_CONNECT_TO       HOST:PORT:ADDRESS:PORT2[,...], loopback IP ADDRESS only (local runs, tests)
  SIDECAR_LITERAL          variables whose values are never parsed (comma-separated names)
  SIDECAR_PLATFORM_FORM    resolve (default): the sidecar resolves ${{...}};  pass: the platform already
                           did (a managed online endpoint's secret injection), so ${{ is never parsed and
                           only the deferred form is resolved
  SIDECAR_ROLE_WAIT        seconds to keep retrying a 403 from Key Vault or ARM while a new role assignment
                           propagates (default 0: fail at once); within SIDECAR_TIMEOUT, so raise both
  SIDECAR_FILES_DIR        directory for file delivery (default /dev/shm/sidecar; a tmpfs, no link in its
                           path, the sidecar's own, not writable by others; created 0700 if missing)
  SIDECAR_FILES_ALLOW_DISK true: accept a SIDECAR_FILES_DIR that is not in memory
  SIDECAR_FILES_OWNER      UID[:GID] owning delivered files (default: the sidecar's user; needs root)
  SIDECAR_LOG_FORMAT       json (default) | console;  SIDECAR_LOG_LEVEL  info (default) | debug | warning | error
  REQUESTS_CA_BUNDLE / SSL_CERT_FILE  extra TLS trust (e.g. the local emulator's CA)

settings of supervise and render --watch:
  SIDECAR_REFRESH_INTERVAL seconds between refresh rounds (default 300, 1 to 86400); the first round
                           comes 0.5-1.5 intervals after the start, later ones every interval +-10%,
                           up to 4x after failed rounds
  SIDECAR_ON_CHANGE        auto (default): changed files rewritten, then SIDECAR_RELOAD_SIGNAL to CMD if set,
                           else a restart; a changed environment value restarts CMD
                           restart: restart CMD on any change;  signal: files + reload signal only, never
                           a restart;  none: rewrite files only
  SIDECAR_RELOAD_SIGNAL    HUP | USR1 | USR2: what CMD re-reads its files on (e.g. HUP for gunicorn, azmlinfsrv);
                           sent to CMD alone. The same signal sent to the sidecar asks for a round now.
  SIDECAR_STOP_SIGNAL      what stops CMD for a restart (default TERM), sent to its process group
  SIDECAR_STOP_TIMEOUT     seconds to wait for CMD to stop before SIGKILL (default 30)

exit codes:
  0 ok; 64 usage; 65 malformed reference or a value an environment variable cannot hold;
  66 not found; 69 unavailable (network, retries exhausted, deadline, an answer of the wrong
  shape); 70 internal error (a bug); 77 permission denied; 78 configuration (including a workload
  identity's token file or authority host, or a federated credential Entra refuses); 126 CMD not
  executable; 127 CMD not found. With several failures: the first present of 65, 78, 77, 66, 69.
  supervise: once CMD runs, CMD's code, or 128+N when signal N killed it. A signal that ends
  the sidecar before CMD runs (or ends render --watch): 128+N.
"""


class _ArgumentParser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(UsageError.exit_code, f"{self.prog}: error: {message}\n")


def _parser() -> argparse.ArgumentParser:
    parser = _ArgumentParser(
        prog="sidecar",
        description="Resolve Azure ML secret references in the environment with the endpoint's managed "
        "identity, then exec the scoring server.",
        epilog=REFERENCE_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"sidecar {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_ArgumentParser)
    run = commands.add_parser(
        "exec",
        help="resolve every reference, then replace this process with CMD",
        description="Resolve every reference in the environment, then replace this process with CMD "
        "(execve: CMD keeps this PID, so signals reach it directly; no Python is left). CMD is looked up "
        "before any secret is fetched (not found: 127, not executable: 126). If any reference fails, "
        "CMD does not start and every failure is logged with its fix. SIDECAR_* settings are removed "
        "from CMD's environment.",
        epilog=REFERENCE_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    run.add_argument("cmd", nargs=argparse.REMAINDER, metavar="-- CMD [ARG...]", help="the command to run")
    supervise = commands.add_parser(
        "supervise",
        help="resolve as exec does, run CMD as a child, keep its secrets current (rotation)",
        description="Resolve exactly as exec does (same failures, same exit codes: CMD never starts if anything "
        "fails), then start CMD as a child and stay as its parent, as PID 1 would: TERM, INT, HUP, QUIT, USR1, "
        "USR2 and WINCH are passed to CMD's process group (the reload signal excepted), every zombie is reaped "
        "(a child subreaper when not PID 1), and the sidecar exits with CMD's exit code, or 128+N when signal N "
        "killed it. Every SIDECAR_REFRESH_INTERVAL the references that can change (a Key Vault secret without "
        "a version, a connection) are read again; on a change, files are rewritten atomically and CMD gets the "
        "reload signal or is restarted (SIDECAR_ON_CHANGE). A failed refresh keeps the current values and CMD.",
        epilog=REFERENCE_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    supervise.add_argument("cmd", nargs=argparse.REMAINDER, metavar="-- CMD [ARG...]", help="the command to run")
    check = commands.add_parser(
        "check",
        help="resolve exactly as exec would and print a row per variable; never a value",
        description="Resolve exactly as exec would and print one row per variable: name, store, reference, "
        "resolved version, value length, status, latency, attempts. Never prints a value. Exits with the "
        "code exec would have failed with, or 0.",
        epilog=REFERENCE_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    check.add_argument("--format", choices=("table", "json"), default="table", help="output format (default: table)")
    render = commands.add_parser(
        "render",
        help="init-container mode: resolve, write the values to files and/or an env file, exit 0",
        description="Init-container mode. Resolve exactly as exec would (same failures, same exit codes), then "
        "write the results for the next container to read, and exit 0: with --dir, one file per variable "
        "(DIR/NAME, mode 0400, written atomically; file-delivered references land there too); with --env-file, "
        "NAME='value' lines a POSIX shell can source (set -a; . FILE; set +a). A name that is not a shell name "
        "(--env-file) or a file name (--dir) is refused (65) and its value not fetched. Both directories must "
        "be on a tmpfs (e.g. an emptyDir with medium: Memory) unless SIDECAR_FILES_ALLOW_DISK=true, without a "
        "link in their path, and not writable by other users: a Kubernetes emptyDir is 0777, so render into a "
        "subdirectory, which the sidecar creates (mode 0700).",
        epilog=REFERENCE_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    render.add_argument("--dir", type=Path, help="directory for one file per variable")
    render.add_argument("--env-file", type=Path, help="file for NAME='value' lines")
    render.add_argument(
        "--watch",
        action="store_true",
        help="keep running and rewrite the files when a value changes (a Kubernetes sidecar container; the "
        "settings of supervise apply); exits 128+N on TERM, INT, HUP or QUIT; SIDECAR_RELOAD_SIGNAL asks for a "
        "round now",
    )
    return parser


def _find_command(command: str, path: str | None) -> str:
    """CMD's path, found the way execvp would, before any secret is fetched."""
    if "/" in command:
        if not os.path.exists(command):
            raise CommandNotFoundError(f"command '{command}' does not exist.", fix="check the path of CMD.")
        if os.path.isdir(command) or not os.access(command, os.X_OK):
            raise CommandNotExecutableError(
                f"command '{command}' is not an executable file.", fix="make it executable (chmod +x)."
            )
        return command
    found = shutil.which(command, path=path)
    if found:
        return found
    # Like a shell: a match that is there but not executable is 126, not 127.
    for directory in (path or os.defpath).split(os.pathsep):
        candidate = os.path.join(directory or ".", command)
        if os.path.isfile(candidate):
            raise CommandNotExecutableError(
                f"command '{command}' was found at {candidate} but is not executable.",
                fix="make it executable (chmod +x).",
            )
    raise CommandNotFoundError(f"command '{command}' was not found on PATH.", fix="install it or give its full path.")


def _command(argv: list[str], command: str) -> tuple[list[str], str]:
    """CMD's arguments and path, found before anything is fetched."""
    if argv and argv[0] == "--":
        argv = argv[1:]
    if not argv:
        raise UsageError(f"{command} needs a command: sidecar {command} -- CMD [ARG...]")
    return argv, _find_command(argv[0], os.environ.get("PATH"))


def _exit(code: int) -> NoReturn:
    """Leave without waiting for fetch threads a deadline left behind."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _on_signal(signum: int, _frame: object) -> None:
    # As PID 1 a signal without a handler is ignored; before the exec, stop promptly instead.
    # A raw write: the logging machinery takes locks a signal handler must not wait for.
    line = {"level": "warning", "event": "signal", "signal": signal.Signals(signum).name, "exit_code": 128 + signum}
    os.write(2, json.dumps(line).encode() + b"\n")
    os._exit(128 + signum)


def _fail(errors: Sequence[SidecarError]) -> NoReturn:
    code = exit_code_for(errors)
    log.error("not starting", exit_code=code, failures=len(errors))
    _exit(code)


def _printable(text: str) -> str:
    """A cell as one line of text: a newline in a name cannot forge a row, a stray byte cannot fail the print."""
    return "".join(char if char.isprintable() else char.encode("unicode_escape").decode("ascii") for char in text)


def _print_check(report: Report, fmt: str, role_wait_s: float) -> None:
    rows = []
    failed = {}
    for error in report.errors:
        failed.setdefault(error.variable, error)
    for resolution in report.resolutions:
        variable = resolution.variable
        error = failed.pop(variable.name, None)
        rows.append(
            {
                "name": variable.name,
                "store": ",".join(sorted({reference.store for reference in variable.references})) or "-",
                "reference": " ".join(str(reference) for reference in variable.references) or "(escapes only)",
                "version": ",".join(resolution.versions) or "-",
                "length": resolution.length,
                "destination": resolution.destination if not error else "-",
                "status": error.status if error else "ok",
                "ms": round(resolution.ms, 1),
                "attempts": resolution.attempts,
            }
        )
    for name, error in failed.items():  # variables that failed before any fetch
        rows.append(
            {
                "name": name,
                "store": "-",
                "reference": error.reference or "-",
                "version": "-",
                "length": None,
                "destination": "-",
                "status": error.status,
                "ms": 0.0,
                "attempts": 0,
            }
        )
    rows.sort(key=lambda row: row["name"])
    if fmt == "json":
        print(json.dumps(rows, indent=2))
        return
    columns = ("name", "store", "reference", "version", "length", "destination", "status", "ms", "attempts")
    table = [[col.upper() for col in columns]] + [
        ["-" if row[col] is None else _printable(str(row[col])) for col in columns] for row in rows
    ]
    widths = [max(len(line[i]) for line in table) for i in range(len(columns))]
    for line in table:
        print("  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=False)).rstrip())
    if any(isinstance(error, MissingRoleError) for error in report.errors):
        if role_wait_s:
            print(
                f"\nforbidden: still refused after SIDECAR_ROLE_WAIT={role_wait_s:g}: the role is missing, or on "
                "another scope than the one named (each failure's fix is in the log)."
            )
        else:
            print(
                "\nforbidden: a role assigned in the last minutes may still be propagating; SIDECAR_ROLE_WAIT=600 "
                "(with SIDECAR_TIMEOUT above it) makes exec wait for it (each failure's fix is in the log)."
            )


def main(argv: Sequence[str] | None = None) -> NoReturn:
    args = _parser().parse_args(argv)
    logs.configure(*log_settings(os.environ))
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, _on_signal)
    try:
        settings = _settings()  # the log settings it validates are the ones configured above
        log.info("start", command=args.command, version=__version__, pid=os.getpid())
        for name in unknown_settings(os.environ):
            log.warning(
                "unknown setting", setting=name, fix="check its spelling against `sidecar --help`; it is ignored."
            )
        if args.command == "exec":
            _exec(args.cmd, settings)
        if args.command == "supervise":
            _supervise(args.cmd, settings)
        if args.command == "render":
            _render(args.dir, args.env_file, settings, watch=args.watch)
        _check(settings, args.format)
    except SidecarError as error:
        log.error("failed", status=error.status, exit_code=error.exit_code, error=error.message, fix=error.fix)
        _exit(error.exit_code)
    except Exception as error:  # a bug: say where, never what (an exception's text may quote a value)
        internal = InternalError.from_exception(error)
        log.error(
            "internal error", exit_code=internal.exit_code, error=internal.error_type, at=internal.at, fix=internal.fix
        )
        _exit(internal.exit_code)


def _settings() -> Settings:
    """The settings; when one is wrong, exit with it and every malformed reference (found without a fetch)."""
    try:
        return load_settings()
    except ConfigurationError as error:
        from sidecar.pipeline import Report, log_report
        from sidecar.references import parse_environment

        literal, platform_form = parsing_settings(os.environ)
        _, malformed = parse_environment(os.environ, literal=literal, platform_form=platform_form)
        errors = [error, *malformed]
        log_report(Report(errors=errors))
        _fail(errors)


def _delivery(settings: Settings, **render: Any) -> Delivery:
    from sidecar.delivery import Delivery

    return Delivery(settings.files_dir, settings.files_allow_disk, settings.files_owner, **render)


def _check(settings: Settings, fmt: str) -> NoReturn:
    from sidecar.pipeline import log_report, resolve_environment

    report = resolve_environment(os.environ, settings, _delivery(settings, create=False))
    log_report(report)
    _print_check(report, fmt, settings.role_wait_s)
    _exit(exit_code_for(report.errors))


def _exec(argv: list[str], settings: Settings) -> NoReturn:
    from sidecar.pipeline import log_report, resolve_environment

    argv, path = _command(argv, "exec")
    delivery = _delivery(settings)
    report = resolve_environment(os.environ, settings, delivery)
    log_report(report)
    if report.errors:
        _fail(report.errors)
    from sidecar.environment import child_environment

    delivery.write(report.resolutions)
    env = child_environment(os.environ, report.resolutions)
    log.info("exec", command=argv[0], path=path, pid=os.getpid())
    sys.stdout.flush()
    sys.stderr.flush()
    from sidecar.supervisor import RESTORED_IN_CHILD

    for signum in RESTORED_IN_CHILD:  # Python ignores them; CMD gets the defaults, as from a shell
        signal.signal(signum, signal.SIG_DFL)
    try:
        os.execve(path, argv, env)
    except OSError as exc:
        raise command_error(exc, argv[0]) from None


def _supervise(argv: list[str], settings: Settings) -> NoReturn:
    from sidecar.refresh import Command, Refresher
    from sidecar.settings import load_refresh_settings

    argv, path = _command(argv, "supervise")
    refresher = Refresher(os.environ, settings, load_refresh_settings(), _delivery(settings), Command(path, argv))
    _exit(refresher.run())


def _render(directory: Path | None, env_file: Path | None, settings: Settings, *, watch: bool) -> NoReturn:
    from sidecar.pipeline import log_report, resolve_environment

    if directory is None and env_file is None:
        raise UsageError("render needs --dir DIR and/or --env-file FILE.")
    if env_file is not None and env_file.name in ("", ".", ".."):
        raise UsageError(f"--env-file {env_file} does not name a file.")
    if directory is not None:
        settings = replace(settings, files_dir=directory.absolute())
    delivery = _delivery(
        settings, every_variable_as_file=directory is not None, env_file=env_file.absolute() if env_file else None
    )
    if watch:
        from sidecar.refresh import Refresher
        from sidecar.settings import load_refresh_settings

        _exit(Refresher(os.environ, settings, load_refresh_settings(), delivery, None).run())
    report = resolve_environment(os.environ, settings, delivery)
    log_report(report)
    if report.errors:
        _fail(report.errors)
    delivery.write(report.resolutions)
    log.info("rendered", variables=len(report.resolutions))
    _exit(0)
