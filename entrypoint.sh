#!/bin/sh
# Drop-in ENTRYPOINT for the secret sidecar.
#
#   ENTRYPOINT ["/usr/local/bin/entrypoint.sh"]
#   CMD ["azmlinfsrv", "--entry_script", "score.py"]
#
# When an environment value may hold a secret reference ("${{" anywhere, or
# "keyvault:" / "azureml://" anywhere, compared case-insensitively) it execs
#   sidecar exec -- "$@"
# which resolves the references and execs the command with the sidecar's PID.
# Otherwise it execs the command itself, without starting Python.
# The sidecar is found on PATH; SIDECAR_BIN names another one.
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
        'Set the image CMD, or pass a command: docker run IMAGE COMMAND [ARG...]' >&2
    exit 64
fi

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
    unset _sidecar_ref
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
exec "$SIDECAR_BIN" exec -- "$@"
