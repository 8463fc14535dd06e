#!/bin/sh
# Drop-in ENTRYPOINT for the secret sidecar.
#
#   ENTRYPOINT ["/usr/local/bin/entrypoint.sh"]
#   CMD ["azmlinfsrv", "--entry_script", "score.py"]
#
# When an environment value may hold a secret reference ("${{" anywhere, or
# "keyvault:" / "azureml://" anywhere, compared case-insensitively) it execs
#   sidecar exec -- "$@"        (SIDECAR_MODE unset, empty or "exec")
# which resolves the references and execs the command with the sidecar's PID, or
#   sidecar supervise -- "$@"   (SIDECAR_MODE=supervise)
# which resolves the same way, then stays as PID 1 with the command as its child:
# it refreshes the references every SIDECAR_REFRESH_INTERVAL seconds, restarts
# the command or sends it SIDECAR_RELOAD_SIGNAL on a change, passes signals on
# to its process group and exits with its exit code (128+N for signal N).
# Otherwise (no reference at all, in either mode) it execs the command itself,
# without starting Python: there is nothing to resolve or keep current.
# The sidecar is found on PATH; SIDECAR_BIN names another one.
# Any other SIDECAR_MODE (matched case-insensitively) is refused with 78, the
# sidecar's configuration exit code, before the fast path: a typo never
# silently turns supervision off.
#
# The scan reads the process's own initial environment from /proc with shell
# builtins only: it sees every entry, including names that are not shell
# identifiers (which "export -p" would not list, yet some shells pass on).
# A value that only looks like a reference takes the slow path, which is still
# correct; if /proc cannot be read, the slow path is taken too.

if [ "$#" -eq 0 ]; then
    # shellcheck disable=SC2016 # literal ${{ in the text
    printf '%s\n' \
        'usage: entrypoint.sh COMMAND [ARG...]' \
        'Resolves secret references (${{keyvault:...}}, ${{azureml://connections/...}},' \
        'keyvault:..., azureml://...) in the environment with the sidecar, then execs' \
        'COMMAND; with no reference in the environment, execs COMMAND directly.' \
        'SIDECAR_MODE=supervise: the sidecar stays, runs COMMAND as its child and keeps' \
        'its secrets current (SIDECAR_REFRESH_INTERVAL, SIDECAR_RELOAD_SIGNAL).' \
        'Set the image CMD, or pass a command: docker run IMAGE COMMAND [ARG...]' >&2
    exit 64
fi

case ${SIDECAR_MODE:-} in
    '' | [Ee][Xx][Ee][Cc])
        _sidecar_mode='exec'
        ;;
    [Ss][Uu][Pp][Ee][Rr][Vv][Ii][Ss][Ee])
        _sidecar_mode='supervise'
        ;;
    *)
        printf "entrypoint.sh: SIDECAR_MODE='%s' is not a mode; accepted values: exec (the default:" "$SIDECAR_MODE" >&2
        printf ' resolve, then exec the command) or supervise (resolve, run the command as a child and' >&2
        printf ' keep its secrets current); unset it or set one of them\n' >&2
        exit 78
        ;;
esac

_sidecar_ref=
if [ -r "/proc/$$/environ" ]; then
    # The entries are NUL-separated: read drops the NULs, so one "line" may hold
    # several entries (and a multi-line value spans several lines). Substring
    # tests on that are a superset of the per-value tests: no false negatives.
    while IFS= read -r _sidecar_line || [ -n "$_sidecar_line" ]; do
        # shellcheck disable=SC2016 # a literal ${{
        case $_sidecar_line in
            *'${{'* | *[Kk][Ee][Yy][Vv][Aa][Uu][Ll][Tt]:* | *[Aa][Zz][Uu][Rr][Ee][Mm][Ll]://*)
                _sidecar_ref=1
                break
                ;;
        esac
    done <"/proc/$$/environ"
    unset _sidecar_line
else
    _sidecar_ref=1
fi

if [ -z "$_sidecar_ref" ]; then
    unset _sidecar_ref _sidecar_mode
    exec "$@"
fi
unset _sidecar_ref

if [ -z "${SIDECAR_BIN:-}" ]; then
    if ! SIDECAR_BIN=$(command -v sidecar); then
        echo "entrypoint.sh: the environment holds secret references but 'sidecar' is not on PATH;" \
            "install the sidecar in the image (see the README, Containers section) or set SIDECAR_BIN to its path" >&2
        exit 127
    fi
fi
exec "$SIDECAR_BIN" "$_sidecar_mode" -- "$@"
