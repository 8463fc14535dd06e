"""SIDECAR_PLATFORM_FORM=pass: where the platform has resolved ${{...}} itself, its results pass unchanged.

On a managed online endpoint the platform replaces each ${{...}} with its secret before the container starts;
that secret may itself contain ${{ or start like a reference, and must never be parsed again.
"""

from __future__ import annotations

import pytest
from sidecar_helpers import kv, platform

# What the platform may have put in a variable: a secret that contains ${{ (a template, a password).
RESOLVED = "fake-pw-${{ not for the sidecar }}-tail"


def test_pass_leaves_every_platform_form_value_unchanged_and_resolves_the_deferred_form(run_sidecar, emulator):
    env = {
        "RESOLVED": RESOLVED,
        "ESCAPED": "a $${{ b",
        "UNRESOLVED": platform(kv("openai-key")),
        "DEFERRED": kv("db-password"),
        "SIDECAR_PLATFORM_FORM": "pass",
    }
    run = run_sidecar(env, extra_secret_values=[RESOLVED])
    assert run.returncode == 0, run.stderr
    child = run.child_env
    assert (child["RESOLVED"], child["ESCAPED"], child["UNRESOLVED"]) == (RESOLVED, "a $${{ b", env["UNRESOLVED"])
    assert child["DEFERRED"] == "fake-db-password-7Qx"
    assert emulator.admin.requests(kind="keyvault", path_contains="/secrets/openai-key") == []


def test_by_default_the_same_value_fails_and_the_fix_names_the_setting(run_sidecar, emulator):
    run = run_sidecar({"RESOLVED": RESOLVED}, extra_secret_values=[RESOLVED])
    failure = run.failure_for("RESOLVED")
    assert run.returncode == 65 and "SIDECAR_PLATFORM_FORM=pass" in failure["fix"], run.stderr


def test_pass_never_quotes_a_value_that_only_looks_like_a_deferred_reference(run_sidecar, emulator):
    looks_like = "keyvault:fake-resolved-secret-shaped-like-a-reference"
    run = run_sidecar({"RESOLVED": looks_like, "SIDECAR_PLATFORM_FORM": "pass"}, extra_secret_values=[looks_like])
    failure = run.failure_for("RESOLVED")
    assert run.returncode == 65 and "SIDECAR_LITERAL" in failure["fix"], run.stderr
    assert failure.get("reference") is None
    assert emulator.admin.requests() == []

    listed = run_sidecar(
        {"RESOLVED": looks_like, "SIDECAR_PLATFORM_FORM": "pass", "SIDECAR_LITERAL": "RESOLVED"},
        extra_secret_values=[looks_like],
    )
    assert listed.returncode == 0 and listed.child_env["RESOLVED"] == looks_like, listed.stderr


@pytest.mark.parametrize("value", ["yes", "platform"])
def test_a_bad_platform_form_is_78(run_sidecar, value):
    run = run_sidecar({"K": kv("db-password"), "SIDECAR_PLATFORM_FORM": value})
    assert run.returncode == 78 and "SIDECAR_PLATFORM_FORM" in run.stderr, run.stderr
