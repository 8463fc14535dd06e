"""Pure functions: the reference grammar, the exit-code precedence, SIDECAR_CONNECT_TO parsing."""

from __future__ import annotations

import pytest

from sidecar.connect_to import parse_connect_to
from sidecar.errors import (
    ConfigurationError,
    MalformedReferenceError,
    NotFoundError,
    PermissionDeniedError,
    UnavailableError,
    exit_code_for,
)
from sidecar.references import ConnectionReference, KeyVaultReference, parse_environment, parse_variable


def test_platform_value_splits_into_text_and_references():
    variable = parse_variable(
        "DSN",
        "postgres://${{azureml://connections/db-conn/credentials/username}}:"
        "${{keyvault:https://Contoso-KV.vault.azure.net/secrets/pw/00000000000000000000000000000A01}}@h/$${{x}}",
    )
    assert variable.form == "platform"
    text, user, colon, password, tail = variable.parts
    assert (text, colon, tail) == ("postgres://", ":", "@h/${{x}}")
    assert user == ConnectionReference("db-conn", "credentials", "username")
    assert isinstance(password, KeyVaultReference)
    assert password.vault_url == "https://contoso-kv.vault.azure.net"
    assert password.version == "00000000000000000000000000000a01"


def test_deferred_value_is_one_reference():
    variable = parse_variable("K", "azureml://connections/aoai-conn")
    assert variable.form == "deferred"
    assert variable.parts == (ConnectionReference("aoai-conn", "connection"),)
    assert str(variable.parts[0]) == "azureml://connections/aoai-conn"


@pytest.mark.parametrize("value", ["plain", "", "azureml://datastores/x", "$ {{", "{{keyvault:x}}", "keyvault"])
def test_values_without_references_are_left_alone(value):
    assert parse_variable("V", value) is None


def test_host_outside_the_known_clouds_is_a_configuration_error():
    with pytest.raises(ConfigurationError):
        parse_variable("V", "keyvault:https://kv.vault.azure.net.evil.com/secrets/x")


def test_errors_name_the_variable_and_never_echo_a_non_reference_value():
    variables, errors = parse_environment({"SECRETISH": "p@ss${{word-not-a-ref}}", "SIDECAR_X": "${{ignored"})
    assert variables == []
    assert [error.variable for error in errors] == ["SECRETISH"]
    assert "word-not-a-ref" not in str(errors[0])
    assert isinstance(errors[0], MalformedReferenceError)


def test_literal_variables_are_not_parsed():
    variables, errors = parse_environment({"A": "${{broken", "B": "keyvault:nope"}, literal={"A", "B"})
    assert (variables, errors) == ([], [])


@pytest.mark.parametrize(
    ("errors", "code"),
    [
        ([UnavailableError("x"), NotFoundError("x"), PermissionDeniedError("x"), ConfigurationError("x")], 78),
        ([UnavailableError("x"), MalformedReferenceError("x"), ConfigurationError("x")], 65),
        ([UnavailableError("x"), PermissionDeniedError("x"), NotFoundError("x")], 77),
        ([UnavailableError("x"), NotFoundError("x")], 66),
        ([UnavailableError("x")], 69),
        ([], 0),
    ],
)
def test_exit_code_precedence(errors, code):
    assert exit_code_for(errors) == code


def test_connect_to_rules():
    rules = parse_connect_to("*.vault.azure.net:443:127.0.0.1:8443, management.azure.com::[::1]:9443,")
    assert rules[0].matches("contoso-kv.vault.azure.net", 443)
    assert not rules[0].matches("vault.azure.net", 443)
    assert not rules[0].matches("contoso-kv.vault.azure.net", 8443)
    assert rules[1].matches("management.azure.com", 1234) and rules[1].address == "::1"
    for bad in ("a:1:192.168.1.1:2", "a:1:127.0.0.1", "a:x:127.0.0.1:2", "a:1:localhost:99999"):
        with pytest.raises(ConfigurationError):
            parse_connect_to(bad)


def _resolution(name: str, value: str | None, **fields: object):
    from pathlib import Path

    from sidecar.environment import Resolution

    variable = parse_variable(name, "keyvault:https://contoso-kv.vault.azure.net/secrets/s")
    file_data = fields.pop("file_data", None)
    return Resolution(
        variable, value=value, file_data=file_data, file_path=Path("/f") if file_data is not None else None, **fields
    )


def test_compare_finds_each_kind_of_change_and_keeps_failed_variables_out():
    from sidecar.refresh import compare

    current = {
        "SAME": _resolution("SAME", "a"),
        "ENV": _resolution("ENV", "old"),
        "FILE": _resolution("FILE", "/f", file_data=b"old"),
        "GONE": _resolution("GONE", "x"),
        "FAILS": _resolution("FAILS", "keep"),
    }
    change, failures = compare(current, [_resolution("SAME", "a")])
    assert (change.resolutions, change.environment, change.files, failures) == ({}, False, False, [])

    change, _ = compare(current, [_resolution("FILE", "/f", file_data=b"new")])
    assert (list(change.resolutions), change.environment, change.files) == (["FILE"], False, True)

    change, _ = compare(current, [_resolution("ENV", "new"), _resolution("GONE", None, unset=True)])
    assert (list(change.resolutions), change.environment, change.files) == (["ENV", "GONE"], True, False)

    error = NotFoundError("gone.", variable="FAILS")
    change, failures = compare(current, [_resolution("FAILS", None, errors=[error])])
    assert (change.resolutions, failures) == ({}, [error])


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, (300.0, "auto", None, "SIGTERM", 30.0)),
        (
            {
                "SIDECAR_REFRESH_INTERVAL": "1",
                "SIDECAR_ON_CHANGE": "Signal",
                "SIDECAR_RELOAD_SIGNAL": "sighup",
                "SIDECAR_STOP_SIGNAL": "QUIT",
                "SIDECAR_STOP_TIMEOUT": "2.5",
            },
            (1.0, "signal", "SIGHUP", "SIGQUIT", 2.5),
        ),
    ],
)
def test_refresh_settings(env, expected):
    from sidecar.settings import load_refresh_settings

    refresh = load_refresh_settings(env)
    reload_signal = refresh.reload_signal.name if refresh.reload_signal else None
    assert (refresh.interval_s, refresh.on_change, reload_signal, refresh.stop_signal.name, refresh.stop_timeout_s) == (
        expected
    )
