"""`sidecar supervise` and `render --watch` against the emulator: real processes, real signals, real rotation.

Rounds run every 1 s (the smallest interval accepted) so that each test waits a few seconds; every
wait is bounded (supervise_helpers.WAIT_S) and names what it waited for.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from sidecar_helpers import kv
from supervise_helpers import probe, supervise_argv, supervised

SECRET = kv("db-password")
PINNED = kv("openai-key", "00000000000000000000000000000a01")
NEW_VALUE = "fake-rotated-db-password"


def starts(run) -> list[dict]:
    return run.child_events("start")


def test_a_rotated_secret_in_the_environment_restarts_the_child_once_with_the_new_value(
    emulator, tmp_path, fixture_secret_values
):
    env = {"DB_PASSWORD": SECRET, "OPENAI_KEY": PINNED}
    with supervised(
        emulator, tmp_path, fixture_secret_values, env, cmd=probe(tmp_path, "--names", "DB_PASSWORD,OPENAI_KEY")
    ) as run:
        run.add_secrets(NEW_VALUE)
        first = run.wait_child("start")[0]
        assert first["env"] == {"DB_PASSWORD": "fake-db-password-7Qx", "OPENAI_KEY": "fake-openai-key-v1"}
        run.wait_rounds(1)
        version = emulator.admin.add_version("contoso-kv", "db-password", NEW_VALUE)
        second = run.wait_child("start", 2)[1]
        assert second["env"] == {"DB_PASSWORD": NEW_VALUE, "OPENAI_KEY": "fake-openai-key-v1"}
        assert second["pid"] != first["pid"]
        assert [event["pid"] for event in run.child_events("term")] == [first["pid"]]  # stopped with TERM
        changed = run.wait_event("changed")
        assert [(event["variable"], event["versions"]) for event in changed] == [("DB_PASSWORD", [version])]
        run.wait_rounds(2)  # later rounds see no change: no second restart
        assert len(starts(run)) == 2
        assert len(run.events("restarting")) == 1


def test_nothing_changed_means_no_action_and_pinned_versions_are_never_read_again(
    emulator, tmp_path, fixture_secret_values
):
    env = {"DB_PASSWORD": SECRET, "OPENAI_KEY": PINNED, "ALSO_DB": SECRET}
    with supervised(emulator, tmp_path, fixture_secret_values, env, cmd=probe(tmp_path)) as run:
        run.wait_child("start")
        [schedule] = run.wait_event("refresh")
        assert 0.5 <= schedule["first_in_s"] <= 1.5  # the splay: somewhere in the first interval and a half
        run.wait_rounds(3)
        rounds = len(run.events("refreshed"))
        gets = emulator.admin.counters()["keyvault_gets"]["contoso-kv"]
        assert gets["openai-key"] == {"200": 1}  # the pinned version: the first resolution only
        # The unpinned secret, once per round (two variables, one fetch), with no challenge after the first:
        assert gets["db-password"]["200"] in (rounds + 1, rounds + 2)  # a round may be under way
        assert gets["db-password"].get("401", 0) == 1
        assert all(event["changed"] == 0 and event["fetches"] == 1 for event in run.events("refreshed"))
        assert all(event["token_requests"] == 0 for event in run.events("refreshed"))  # the token is carried
        assert len(starts(run)) == 1
        assert not run.events("changed") and not run.events("restarting") and not run.child_events("reload")


def test_a_rotated_file_is_rewritten_and_the_same_child_gets_the_reload_signal(
    emulator, tmp_path, fixture_secret_values, shm_dir
):
    secret_file = shm_dir / "DB_PASSWORD"
    env = {
        "DB_PASSWORD": SECRET + "?file",
        "SIDECAR_FILES_DIR": str(shm_dir),
        "SIDECAR_RELOAD_SIGNAL": "HUP",
    }
    with supervised(
        emulator, tmp_path, fixture_secret_values, env, cmd=probe(tmp_path, "--file", str(secret_file))
    ) as run:
        run.add_secrets(NEW_VALUE)
        first = run.wait_child("start")[0]
        assert first["files"] == {str(secret_file): "fake-db-password-7Qx"}
        emulator.admin.add_version("contoso-kv", "db-password", NEW_VALUE)
        reload = run.wait_child("reload")[0]
        assert reload["pid"] == first["pid"]
        assert reload["files"] == {str(secret_file): NEW_VALUE}
        assert oct(secret_file.stat().st_mode & 0o777) == "0o400"
        assert run.events("reload", signal="SIGHUP", pid=first["pid"])
        run.wait_rounds(2)
        assert len(starts(run)) == 1 and len(run.child_events("reload")) == 1
        assert not run.events("restarting")
        # Nothing but the file: no temporary file left beside it.
        assert sorted(path.name for path in shm_dir.iterdir()) == ["DB_PASSWORD"]


def test_a_file_without_a_reload_signal_restarts_the_child(emulator, tmp_path, fixture_secret_values, shm_dir):
    secret_file = shm_dir / "DB_PASSWORD"
    env = {"DB_PASSWORD": SECRET + "?file", "SIDECAR_FILES_DIR": str(shm_dir)}
    with supervised(
        emulator, tmp_path, fixture_secret_values, env, cmd=probe(tmp_path, "--file", str(secret_file))
    ) as run:
        run.add_secrets(NEW_VALUE)
        run.wait_child("start")
        emulator.admin.add_version("contoso-kv", "db-password", NEW_VALUE)
        second = run.wait_child("start", 2)[1]
        assert second["files"] == {str(secret_file): NEW_VALUE}
        assert not run.child_events("reload")


def test_on_change_none_rewrites_files_and_leaves_the_child_alone(emulator, tmp_path, fixture_secret_values, shm_dir):
    secret_file = shm_dir / "DB_PASSWORD"
    env = {
        "DB_PASSWORD": SECRET + "?file",
        "PLAIN": SECRET,
        "SIDECAR_FILES_DIR": str(shm_dir),
        "SIDECAR_ON_CHANGE": "none",
    }
    with supervised(emulator, tmp_path, fixture_secret_values, env, cmd=probe(tmp_path)) as run:
        run.add_secrets(NEW_VALUE)
        run.wait_child("start")
        emulator.admin.add_version("contoso-kv", "db-password", NEW_VALUE)
        run.wait_event("changed", 2)
        run.wait_for(lambda: secret_file.read_text() == NEW_VALUE, "the file to hold the new value")
        [warning] = run.wait_event("not applied")
        assert warning["variables"] == ["PLAIN"] and "?file" in warning["fix"]
        run.wait_rounds(1)
        assert len(starts(run)) == 1 and not run.child_events("reload") and not run.child_events("term")


def test_one_change_to_several_variables_is_one_restart(emulator, tmp_path, fixture_secret_values):
    conn = "azureml://connections/custom-conn/credentials"
    env = {"KEY_A": f"{conn}/API_KEY", "KEY_B": f"{conn}/OTHER_KEY"}
    new = {"API_KEY": "fake-rotated-a", "OTHER_KEY": "fake-rotated-b"}
    with supervised(
        emulator, tmp_path, fixture_secret_values, env, cmd=probe(tmp_path, "--names", "KEY_A,KEY_B")
    ) as run:
        run.add_secrets(*new.values())
        run.wait_child("start")
        emulator.admin.update_connection("ws-main", "custom-conn", {"credentials": {"keys": new}})
        second = run.wait_child("start", 2)[1]
        assert second["env"] == {"KEY_A": "fake-rotated-a", "KEY_B": "fake-rotated-b"}
        assert {event["variable"] for event in run.events("changed")} == {"KEY_A", "KEY_B"}
        run.wait_rounds(1)
        assert len(starts(run)) == 2 and len(run.events("restarting")) == 1


@pytest.mark.parametrize(
    ("break_store", "status", "fix_words"),
    [
        pytest.param(
            lambda admin: admin.set_faults([{"kind": "keyvault", "status": 503, "count": None}]),
            "unavailable",
            "store's health",
            id="outage",
        ),
        pytest.param(
            lambda admin: admin.load({"identities": {"system": {"roles": {"Key Vault Secrets User": []}}}}),
            "forbidden",
            "Key Vault Secrets User",
            id="role-removed",
        ),
        pytest.param(
            lambda admin: admin.delete_secret("contoso-kv", "db-password"), "not_found", "", id="secret-deleted"
        ),
    ],
)
def test_a_failing_refresh_keeps_the_child_and_its_values_then_recovers(
    emulator, tmp_path, fixture_secret_values, break_store, status, fix_words
):
    env = {"DB_PASSWORD": SECRET, "SIDECAR_MAX_ATTEMPTS": "1"}
    with supervised(
        emulator, tmp_path, fixture_secret_values, env, cmd=probe(tmp_path, "--names", "DB_PASSWORD")
    ) as run:
        run.add_secrets(NEW_VALUE)
        first = run.wait_child("start")[0]
        break_store(emulator.admin)
        [failure] = run.wait_event("refresh failed", variable="DB_PASSWORD")
        assert failure["status"] == status and fix_words in failure["fix"]
        assert failure["reference"] == SECRET and failure["action"] == "keeping the current value"
        run.wait_rounds(1)
        assert run.process.poll() is None and len(starts(run)) == 1 and not run.child_events("term")
        assert run.events("refreshed")[-1]["failed"] == 1
        # Failed rounds back off: the next one is scheduled 2x (then 4x) the interval away, +-10%.
        assert run.events("refreshed")[-1]["next_in_s"] >= 1.8
        emulator.admin.clear_faults()
        emulator.admin.reset()  # role back, secret back
        emulator.admin.add_version("contoso-kv", "db-password", NEW_VALUE)
        second = run.wait_child("start", 2)[1]
        assert second["env"] == {"DB_PASSWORD": NEW_VALUE}
        assert first["pid"] != second["pid"]


def test_a_round_that_dies_is_a_failed_round_and_the_child_keeps_running(emulator, tmp_path, fixture_secret_values):
    with supervised(emulator, tmp_path, fixture_secret_values, {"DB_PASSWORD": SECRET}, cmd=probe(tmp_path)) as run:
        [start] = run.wait_child("start")
        emulator.admin.add_fault({"kind": "keyvault", "hang_s": 30, "count": None})  # rounds hang in their fetch

        def kill_a_round() -> list[dict]:
            for entry in Path("/proc").iterdir():
                with contextlib.suppress(OSError, ValueError):
                    status = (entry / "status").read_text()
                    if f"\nPPid:\t{run.pid}\n" in status and int(entry.name) != start["pid"]:
                        os.kill(int(entry.name), signal.SIGKILL)  # the round (as the OOM killer would)
            return run.events("refresh failed", variable=None)

        [failed] = run.wait_for(kill_a_round, "a round-level 'refresh failed' after killing the round")
        assert "ended without a report" in failed["error"] and failed["action"].startswith("keeping every")
        emulator.admin.clear_faults()
        run.wait_event("refreshed")  # the next round works again
        assert run.process.poll() is None and len(starts(run)) == 1 and not run.child_events("term")


@pytest.mark.parametrize(
    ("options", "expected"),
    [pytest.param("?optional", None, id="optional"), pytest.param("?default=fallback", "fallback", id="default")],
)
def test_a_deleted_optional_secret_follows_its_optional_semantics(
    emulator, tmp_path, fixture_secret_values, options, expected
):
    env = {"DB_PASSWORD": SECRET + options}
    with supervised(
        emulator, tmp_path, fixture_secret_values, env, cmd=probe(tmp_path, "--names", "DB_PASSWORD")
    ) as run:
        run.wait_child("start")
        emulator.admin.delete_secret("contoso-kv", "db-password")
        second = run.wait_child("start", 2)[1]
        assert second["env"] == {"DB_PASSWORD": expected}


def test_the_reload_signal_sent_to_the_sidecar_asks_for_a_round_now(emulator, tmp_path, fixture_secret_values, shm_dir):
    secret_file = shm_dir / "DB_PASSWORD"
    env = {"DB_PASSWORD": SECRET + "?file", "SIDECAR_FILES_DIR": str(shm_dir), "SIDECAR_RELOAD_SIGNAL": "USR1"}
    # An interval of an hour: only the signal can bring the change in within the wait.
    with supervised(
        emulator, tmp_path, fixture_secret_values, env, cmd=probe(tmp_path, "--file", str(secret_file)), interval="3600"
    ) as run:
        run.add_secrets(NEW_VALUE)
        run.wait_child("start")
        run.wait_event("refresh")
        emulator.admin.add_version("contoso-kv", "db-password", NEW_VALUE)
        run.signal(signal.SIGUSR1)
        run.wait_event("refresh requested", signal="SIGUSR1")
        run.wait_event("changed")
        run.wait_for(lambda: secret_file.read_text() == NEW_VALUE, "the file to hold the new value")
        # The child got the reload signal once (not the sidecar's own USR1 passed on as well).
        run.wait_child("signal")
        assert [event["signal"] for event in run.child_events("signal")] == ["SIGUSR1"]


# PID 1 duties


@pytest.mark.parametrize(
    ("probe_args", "expected"),
    [
        pytest.param(("--exit", "7"), 7, id="exit-7"),
        pytest.param(("--kill-self", "SIGKILL"), 137, id="killed-by-9"),
        pytest.param(("--kill-self", "SIGSEGV"), 139, id="killed-by-11"),
    ],
)
def test_the_sidecar_exits_with_the_child_s_code_or_128_plus_its_signal(
    emulator, tmp_path, fixture_secret_values, probe_args, expected
):
    env = {"DB_PASSWORD": SECRET}
    with supervised(emulator, tmp_path, fixture_secret_values, env, cmd=probe(tmp_path, *probe_args)) as run:
        assert run.wait_exit() == expected
        assert run.events("child exited", exit_code=expected)


def test_term_is_passed_to_the_child_and_the_sidecar_exits_with_the_child_s_code(
    emulator, tmp_path, fixture_secret_values
):
    with supervised(
        emulator, tmp_path, fixture_secret_values, {"DB_PASSWORD": SECRET}, cmd=probe(tmp_path, "--on-term", "5")
    ) as run:
        run.wait_child("start")
        run.signal(signal.SIGTERM)
        assert run.wait_exit() == 5
        assert len(run.child_events("term")) == 1


def test_signals_reach_the_child_s_process_group(emulator, tmp_path, fixture_secret_values):
    with supervised(
        emulator, tmp_path, fixture_secret_values, {"DB_PASSWORD": SECRET}, cmd=probe(tmp_path, "--grandchild")
    ) as run:
        [start] = run.wait_child("start")
        grandchild_events = run.events_path.with_name("child.events.grandchild")
        run.wait_child("start", path=grandchild_events)
        assert start["pgid"] == start["pid"] != run.pid  # the child leads a group of its own
        sent = ["SIGUSR1", "SIGUSR2", "SIGWINCH", "SIGQUIT", "SIGINT"]
        for name in sent:
            run.signal(signal.Signals[name])
        run.signal(signal.SIGHUP)
        run.wait_child("signal", len(sent))
        run.wait_child("signal", len(sent), path=grandchild_events)
        run.wait_child("reload")  # HUP is not the reload signal here: passed on like the others
        assert sorted(event["signal"] for event in run.child_events("signal")) == sorted(sent)
        assert sorted(event["signal"] for event in run.child_events("signal", grandchild_events)) == sorted(sent)
        assert run.process.poll() is None  # none of them ends the probe, so none ends the sidecar


def test_an_orphaned_grandchild_is_reaped(emulator, tmp_path, fixture_secret_values):
    env = {"DB_PASSWORD": SECRET, "SIDECAR_LOG_LEVEL": "debug"}
    with supervised(emulator, tmp_path, fixture_secret_values, env, cmd=probe(tmp_path, "--orphan")) as run:
        [start] = run.wait_child("start")
        orphan = start["orphan"]
        run.wait_event("reaped", pid=orphan)  # adopted by the sidecar (a subreaper), and reaped when it ended

        def zombies() -> list[int]:
            found = []
            for entry in Path("/proc").iterdir():
                if entry.name.isdigit():
                    try:
                        status = (entry / "status").read_text()
                    except OSError:
                        continue
                    if f"\nPPid:\t{run.pid}\n" in status and "\nState:\tZ" in status:
                        found.append(int(entry.name))
            return found

        assert zombies() == []


def test_a_termination_signal_during_a_restart_cancels_it(emulator, tmp_path, fixture_secret_values):
    # The child takes 2 s to stop: the TERM for the sidecar arrives while it waits.
    cmd = probe(tmp_path, "--term-delay", "2", "--on-term", "4")
    with supervised(emulator, tmp_path, fixture_secret_values, {"DB_PASSWORD": SECRET}, cmd=cmd) as run:
        run.add_secrets(NEW_VALUE)
        run.wait_child("start")
        emulator.admin.add_version("contoso-kv", "db-password", NEW_VALUE)
        run.wait_child("term")  # the restart's stop signal arrived
        run.signal(signal.SIGTERM)
        assert run.wait_exit() == 4  # the old child's code
        assert len(starts(run)) == 1 and len(run.events("started")) == 1  # no new child


def test_a_child_that_does_not_stop_in_time_is_killed_and_replaced(emulator, tmp_path, fixture_secret_values):
    cmd = probe(tmp_path, "--term-delay", "60", "--names", "DB_PASSWORD")
    env = {"DB_PASSWORD": SECRET, "SIDECAR_STOP_TIMEOUT": "1", "SIDECAR_STOP_SIGNAL": "INT"}
    with supervised(emulator, tmp_path, fixture_secret_values, env, cmd=cmd) as run:
        run.add_secrets(NEW_VALUE)
        first = run.wait_child("start")[0]
        emulator.admin.add_version("contoso-kv", "db-password", NEW_VALUE)
        second = run.wait_child("start", 2)[1]
        assert second["env"] == {"DB_PASSWORD": NEW_VALUE}
        # The stop signal was INT (recorded, ignored), then SIGKILL after SIDECAR_STOP_TIMEOUT.
        assert [event["signal"] for event in run.child_events("signal")] == ["SIGINT"]
        assert run.events("stop timeout", pid=first["pid"])
        assert run.events("stopped for restart", pid=first["pid"], exit_code=137)


def test_a_failing_first_resolution_never_starts_the_command(emulator, tmp_path, fixture_secret_values):
    env = {"MISSING": kv("no-such-secret"), "DB_PASSWORD": SECRET}
    with supervised(emulator, tmp_path, fixture_secret_values, env, cmd=probe(tmp_path)) as run:
        assert run.wait_exit() == 66
        assert not run.events_path.exists()
        assert run.events("failed", variable="MISSING") and run.events("not starting", exit_code=66)


def test_a_malformed_reference_fails_as_exec_does_after_one_pass(emulator, tmp_path, fixture_secret_values):
    env = {"BAD": "keyvault:https://contoso-kv.vault.azure.net/notsecrets/x", "DB_PASSWORD": SECRET}
    with supervised(emulator, tmp_path, fixture_secret_values, env, cmd=probe(tmp_path)) as run:
        assert run.wait_exit() == 65
        assert not run.events_path.exists(), "CMD never starts"
        assert run.events("failed", variable="BAD") and run.events("resolved", variable="DB_PASSWORD")


def test_term_during_the_first_resolution_exits_128_plus_15(emulator, tmp_path, fixture_secret_values):
    emulator.admin.add_fault({"kind": "keyvault", "hang_s": 30})
    with supervised(emulator, tmp_path, fixture_secret_values, {"DB_PASSWORD": SECRET}, cmd=probe(tmp_path)) as run:
        run.wait_event("connect_to")  # the first fetch is on its way to the hanging vault
        run.signal(signal.SIGTERM)
        assert run.wait_exit() == 143
        assert not run.events_path.exists()


def test_the_child_gets_default_signal_dispositions(emulator, tmp_path, fixture_secret_values):
    """Python ignores SIGPIPE; CMD must not inherit that (supervise spawns it, exec replaces itself)."""
    for command in ("supervise", "exec"):
        argv = supervise_argv(command, ["grep", "SigIgn", "/proc/self/status"])
        env = {"PATH": os.environ["PATH"], **emulator.env("imds"), "DB_PASSWORD": SECRET}
        done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        ignored = int(done.stdout.split()[1], 16)
        assert not ignored & (1 << (signal.SIGPIPE - 1)), command
        assert not ignored & (1 << (signal.SIGXFSZ - 1)), command


@pytest.mark.parametrize(
    ("setting", "value"),
    [
        ("SIDECAR_REFRESH_INTERVAL", "0.5"),
        ("SIDECAR_REFRESH_INTERVAL", "1e3"),
        ("SIDECAR_ON_CHANGE", "reload"),
        ("SIDECAR_RELOAD_SIGNAL", "TERM"),
        ("SIDECAR_STOP_SIGNAL", "STOP"),
        ("SIDECAR_STOP_TIMEOUT", "-1"),
    ],
)
def test_bad_refresh_settings_give_78_before_anything_is_fetched(
    emulator, tmp_path, fixture_secret_values, setting, value
):
    env = {"DB_PASSWORD": SECRET, setting: value}
    with supervised(emulator, tmp_path, fixture_secret_values, env, cmd=probe(tmp_path)) as run:
        assert run.wait_exit() == 78
        assert setting in run.events("failed")[0]["error"]
        assert emulator.admin.requests() == []


def test_on_change_signal_needs_a_reload_signal(emulator, tmp_path, fixture_secret_values):
    env = {"DB_PASSWORD": SECRET, "SIDECAR_ON_CHANGE": "signal"}
    with supervised(emulator, tmp_path, fixture_secret_values, env, cmd=probe(tmp_path)) as run:
        assert run.wait_exit() == 78
        assert "SIDECAR_RELOAD_SIGNAL" in run.events("failed")[0]["error"]


# render --watch


def test_render_watch_rewrites_the_files_on_a_change_and_exits_128_plus_n(
    emulator, tmp_path, fixture_secret_values, shm_dir
):
    values = shm_dir / "values"
    env = {"DB_PASSWORD": SECRET, "OPENAI_KEY": PINNED}
    args = ("--watch", "--dir", str(values), "--env-file", str(values / ".env"))
    with supervised(emulator, tmp_path, fixture_secret_values, env, command="render", args=args) as run:
        run.add_secrets(NEW_VALUE)
        run.wait_event("rendered")
        assert (values / "DB_PASSWORD").read_text() == "fake-db-password-7Qx"
        pinned_before = (values / "OPENAI_KEY").stat().st_ino
        emulator.admin.add_version("contoso-kv", "db-password", NEW_VALUE)
        run.wait_for(lambda: (values / "DB_PASSWORD").read_text() == NEW_VALUE, "the new value in its file")
        run.wait_for(lambda: f"DB_PASSWORD={NEW_VALUE}" in (values / ".env").read_text(), "the env file rewritten")
        assert (values / "OPENAI_KEY").stat().st_ino == pinned_before  # an unchanged file is not rewritten
        run.signal(signal.SIGTERM)
        assert run.wait_exit() == 143


def test_render_watch_exits_130_on_int(emulator, tmp_path, fixture_secret_values, shm_dir):
    args = ("--watch", "--dir", str(shm_dir))
    with supervised(
        emulator, tmp_path, fixture_secret_values, {"DB_PASSWORD": SECRET}, command="render", args=args
    ) as run:
        run.wait_event("rendered")
        run.signal(signal.SIGINT)
        assert run.wait_exit() == 130


def test_render_watch_takes_the_reload_signal_as_a_request_for_a_round(
    emulator, tmp_path, fixture_secret_values, shm_dir
):
    env = {"DB_PASSWORD": SECRET, "SIDECAR_RELOAD_SIGNAL": "HUP", "SIDECAR_MISSPELT_INTERVAL": "5"}
    args = ("--watch", "--dir", str(shm_dir))
    with supervised(
        emulator, tmp_path, fixture_secret_values, env, command="render", args=args, interval="3600"
    ) as run:
        run.add_secrets(NEW_VALUE)
        run.wait_event("rendered")
        assert run.events("unknown setting", setting="SIDECAR_MISSPELT_INTERVAL")
        emulator.admin.add_version("contoso-kv", "db-password", NEW_VALUE)
        run.signal(signal.SIGHUP)  # the reload signal: a round now, not the end
        run.wait_for(lambda: (shm_dir / "DB_PASSWORD").read_text() == NEW_VALUE, "the new value in its file")
        run.signal(signal.SIGQUIT)
        assert run.wait_exit() == 131


def test_the_resident_process_imports_no_sdk(emulator, tmp_path, fixture_secret_values):
    """Rounds run in forked processes: the one that stays holds no Azure SDK (its memory, bench/RESULTS.md)."""
    with supervised(emulator, tmp_path, fixture_secret_values, {"DB_PASSWORD": SECRET}, cmd=probe(tmp_path)) as run:
        run.wait_child("start")
        run.wait_rounds(1)
        maps = Path(f"/proc/{run.pid}/maps").read_text()
        assert "_cffi_backend" not in maps and "cryptography" not in maps  # msal's crypto is never loaded here
        assert len(list(Path(f"/proc/{run.pid}/task").iterdir())) == 1  # one thread: no polling thread


def test_help_documents_supervise_and_watch():
    done = subprocess.run([sys.executable, "-m", "sidecar", "supervise", "--help"], capture_output=True, text=True)
    assert done.returncode == 0
    for setting in ("SIDECAR_REFRESH_INTERVAL", "SIDECAR_ON_CHANGE", "SIDECAR_RELOAD_SIGNAL", "SIDECAR_STOP_SIGNAL"):
        assert setting in done.stdout
