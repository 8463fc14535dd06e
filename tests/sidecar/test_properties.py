"""Property-based tests: the reference parser, the option grammar, the env-file writer and the settings
loader, driven with generated hostile input (hypothesis).

Each asserts what must hold for every input: only the sidecar's own errors, only documented exit
codes, env files that round-trip exactly through `sh` and run nothing, and no sensitive part of an
input (a URL's user part, a default, a default's tail after a stray '&' or '#') in any output.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sidecar_helpers import RECORDER, WORKSPACE, assert_no_leak, documented_exit_codes, sourced_environment

from sidecar.delivery import SHELL_NAME, env_file_text
from sidecar.errors import SidecarError
from sidecar.references import parse_environment, split_options
from sidecar.settings import load_settings

# In a sensitive position of an input only; it must never reach any output.
MARK = "Zq7Mark"


EXIT_CODES = documented_exit_codes()

FRAGMENTS = [
    "keyvault:", "https://", "http://", "contoso-kv.vault.azure.net", "kv.vault.azure.cn", "evil.example", ":", "443",
    "abc", "99999", "+443", "0", "@", "/secrets/", "db-password", "/", "//", "?", "&", "#", "=", "%", "%0A", "%2F",
    "%ZZ", "optional", "default=", "file", "file=", "decode=base64", "format=pem", "${{", "}}", "$${{", "$$", "{{",
    "azureml://connections/", "aoai-conn", "/target", "/credentials/", "/metadata/", "key", "[", "]", "::1",
    "\n", "\r", "\t", " ", "\udcff", "\u2028", "é", "☃", "..", "~0", "~1", "0" * 32, "a" * 40,
]  # fmt: skip
hostile_text = st.lists(st.sampled_from(FRAGMENTS) | st.text(max_size=4), max_size=12).map("".join)
no_nul = hostile_text.map(lambda text: text.replace("\x00", ""))


@st.composite
def sensitive_reference(draw: st.DrawFn) -> str:
    """A deferred Key Vault reference whose user part, default and default tails carry MARK."""
    user = draw(st.sampled_from(["", f"app:{MARK}@", f"{MARK}@", f"a:b{MARK}:c@"]))
    port = draw(st.sampled_from(["", ":443", ":abc", ":99999", ":+443", ":"]))
    host = draw(st.sampled_from(["contoso-kv.vault.azure.net", "x.vault.azure.net", "[::1", "evil.example"]))
    path = draw(st.sampled_from(["/secrets/db-password", "/secrets/db-password/" + "0" * 32, "/secrets/", "/x"]))
    options = draw(st.lists(st.sampled_from(["optional", "decode=base64", "format=pem", "file", "file=f.txt"])))
    tail = draw(st.sampled_from(["", f"&{MARK}", f"#{MARK}", f"#/{MARK}", f"&={MARK}", f"%26{MARK}", f"&x{MARK}#y"]))
    if draw(st.booleans()):
        options.append(f"default={MARK}{draw(no_nul.filter(lambda t: '&' not in t and '#' not in t))}{tail}")
    query = ("?" + "&".join(options)) if options else ""
    return f"keyvault:https://{user}{host}{port}{path}{query}"


@st.composite
def environment(draw: st.DrawFn) -> dict[str, str]:
    raw_names = st.binary(min_size=1, max_size=12).map(os.fsdecode)  # any bytes, as os.environ decodes them
    names = (st.text(min_size=1, max_size=12) | raw_names).filter(lambda n: "=" not in n and "\x00" not in n)
    values = st.one_of(sensitive_reference(), no_nul, sensitive_reference().map(lambda r: "${{" + r + "}}"))
    return draw(st.dictionaries(names, values, min_size=1, max_size=4))


def _text_of(errors: list[SidecarError], variables: list) -> str:
    parts = [f"{error} {error.reference} {error.fix}" for error in errors]
    parts += [str(reference) for variable in variables for reference in variable.references]
    return "\n".join(parts)


@settings(max_examples=400, deadline=None)
@given(environment())
def test_parser_raises_only_its_own_errors_and_never_shows_a_sensitive_part(env):
    variables, errors = parse_environment(env)  # any other exception fails the test
    assert all(isinstance(error, SidecarError) and error.exit_code in EXIT_CODES for error in errors)
    assert MARK not in _text_of(errors, variables)


@settings(max_examples=400, deadline=None)
@given(no_nul, st.one_of(st.none(), no_nul))
def test_option_grammar_raises_only_its_own_errors(query, fragment):
    try:
        options = split_options(
            f"keyvault:https://contoso-kv.vault.azure.net/secrets/x?{query}"
            + (f"#{fragment}" if fragment is not None else "")
        )[1]
    except SidecarError as error:
        assert error.exit_code == 65
        return
    assert options.default is None or str(options).count("default=<") == 1


NUMBERS = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True).map(str),
    st.integers(min_value=-(10**30), max_value=10**30).map(str),
    st.sampled_from(
        ["inf", "-inf", "nan", "1e309", "9999999999", "0", "0.0", "1_000", "0x10", " 5 ", "\uff15", "\u00b9"]
    ),
    no_nul,
)
SETTINGS = {
    "SIDECAR_TIMEOUT": NUMBERS,
    "SIDECAR_MAX_CONCURRENCY": NUMBERS,
    "SIDECAR_MAX_ATTEMPTS": NUMBERS,
    "SIDECAR_FILES_OWNER": st.one_of(NUMBERS, st.tuples(NUMBERS, NUMBERS).map(":".join)),
    "SIDECAR_ARM_ENDPOINT": st.one_of(
        no_nul,
        st.sampled_from(
            [
                f"https://app:{MARK}@management.azure.com",
                f"https://{MARK}@management.azure.com/",
                "https://management.azure.com:0",
                "https://[::1",
                "https://management.azure.com/?q",
            ]
        ),
    ),
    "SIDECAR_CONNECT_TO": no_nul,
    "SIDECAR_FILES_DIR": no_nul,
    "SIDECAR_LOG_LEVEL": no_nul,
    "SIDECAR_CLIENT_ID": no_nul,
    "AZUREML_ARM_SUBSCRIPTION": no_nul,
    "AZUREML_ARM_RESOURCEGROUP": no_nul,
    "AZUREML_ARM_WORKSPACE_NAME": no_nul,
    "REQUESTS_CA_BUNDLE": no_nul,
}


@settings(max_examples=400, deadline=None)
@given(st.fixed_dictionaries({}, optional=SETTINGS))
def test_settings_loader_raises_only_configuration_errors_and_bounds_every_number(env):
    try:
        loaded = load_settings(env)
    except SidecarError as error:
        assert error.exit_code == 78 and MARK not in f"{error} {error.fix}"
        return
    assert math.isfinite(loaded.timeout_s) and 0 < loaded.timeout_s <= 3600
    assert 1 <= loaded.max_concurrency <= 256 and 1 <= loaded.max_attempts <= 100
    assert loaded.files_owner is None or all(0 <= part < 2**32 - 1 for part in loaded.files_owner)
    assert MARK not in loaded.arm_endpoint


# A shell's own variables are left out: assigning them changes the shell, not the quoting under test.
shell_names = st.from_regex(SHELL_NAME, fullmatch=True).map(lambda name: f"S_{name}")
# What an environment can hold: any bytes but NUL, decoded as os.environ does (surrogateescape).
env_values = st.binary(max_size=40).map(lambda raw: os.fsdecode(raw.replace(b"\0", b""))) | no_nul


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.dictionaries(shell_names, env_values, min_size=1, max_size=8))
def test_env_file_round_trips_exactly_through_sh_and_runs_nothing(tmp_path, variables):
    marker = tmp_path / f"ran-{uuid.uuid4().hex}"
    variables = {name: value.replace("MARKER", str(marker)) for name, value in variables.items()}
    variables["S_ATTACK"] = f"'$(touch {marker})'`touch {marker}`;touch {marker}\n touch {marker}"
    env_file = tmp_path / f"env-{uuid.uuid4().hex}"
    env_file.write_bytes(env_file_text(sorted(variables.items())))
    exported, stderr = sourced_environment(env_file, tmp_path)
    assert stderr == "", "sourcing the env file printed something"
    for name, value in variables.items():
        assert exported.get(name.encode()) == os.fsencode(value), f"{name} did not round-trip"
    assert not marker.exists(), "sourcing the env file ran a command"


@settings(max_examples=60, deadline=None)
@given(environment(), st.sampled_from(["check-json", "check-table", "exec", "render"]))
def test_end_to_end_any_environment_ends_in_a_documented_code_without_traceback_or_leak(
    emulator_process, fixture_secret_values, env, command
):
    full_env = {"PATH": os.environ["PATH"], "LANG": "C.UTF-8", **emulator_process.env("imds"), **WORKSPACE, **env}
    out = Path("/dev/shm") / f"sidecar-property-{uuid.uuid4().hex}"
    argv = [sys.executable, "-m", "sidecar", *{
        "check-json": ["check", "--format", "json"],
        "check-table": ["check"],
        "exec": ["exec", "--", sys.executable, str(RECORDER), os.devnull],
        "render": ["render", "--dir", str(out / "values"), "--env-file", str(out / "env")],
    }[command]]  # fmt: skip
    try:
        done = subprocess.run(argv, env=full_env, capture_output=True, timeout=120)
    finally:
        shutil.rmtree(out, ignore_errors=True)
    output = (done.stdout + done.stderr).decode("utf-8", "backslashreplace")
    assert done.returncode in EXIT_CODES - {70}, output[-3000:]
    assert "Traceback" not in output and MARK not in output
    assert_no_leak(output, fixture_secret_values)
    if command == "check-json":
        json.loads(done.stdout)  # the table is valid JSON whatever the names and values were


def test_the_readme_table_is_what_the_tests_check():
    assert {0, 64, 65, 66, 69, 70, 77, 78, 126, 127} == EXIT_CODES
