"""Section 5 of bench/run.py: rotation, what `sidecar supervise` costs between rounds and does during them.

Four parts, each against the same emulator as the other sections (same injected latency):

1. resident cost: the supervisor process alone, across an idle window between two rounds (/proc);
2. rotation latency: admin.add_version to the child seeing the new value, restart path and file+signal
   path side by side (two supervisors, the same rotations at the same instants);
3. requests per round: one supervisor (duplicates, pinned versions, a connection), then a fleet of
   supervisors on a throttled vault;
4. downtime: azmlinfsrv (docker/example/score_files.py, the tests' venv) under a steady load, restart
   vs reload (HUP).

Nothing here asserts on time. Every value rotated in starts with the bench values' prefix, and every
output (the sidecars' logs, the children's event files, the server's answers) is checked for it.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from common import (
    BENCH,
    BENCH_VAULT,
    FLEET_VAULT,
    MARKER,
    PYTHON,
    ROOT,
    SIDECAR,
    VALUE_PREFIX,
    base_env,
    kv_ref,
    leaked,
    peak_rss_kb,
    say,
    table,
)

# The tests' azmlinfsrv venv and load (one copy for both).
sys.path.insert(0, str(ROOT / "tests" / "sidecar"))
from azmlinfsrv_helpers import COMPLETE, Load, Outcome, VenvUnavailable, build_venv, free_port, score, venv_path

CHILD = [PYTHON, "-S", str(BENCH / "rotation_child.py")]
SLEEPER = ["sleep", "1000000"]
SCORE_FILES = ROOT / "docker" / "example" / "score_files.py"
CLK_TCK = os.sysconf("SC_CLK_TCK")
POLL_S = 0.02
WAIT_S = 60.0  # any one awaited event beyond the schedule it depends on


@dataclass
class Plan:
    """The sizes of one run: full (about 4 minutes) or smoke (every part, a few seconds each)."""

    idle_interval_s: float  # part 1: the interval whose idle window is measured
    resident_sizes: tuple[int, ...]  # ...for supervisors of these many references, side by side
    resident_rounds: int  # ...after this many rounds on demand
    idle_margin_s: float  # ...stopping this long before the next round is due
    latency_interval_s: float  # part 2
    rotations: int
    request_rounds: int  # part 3, one supervisor at the smallest interval (1 s)
    fleet_replicas: int
    fleet_secrets: int
    fleet_interval_s: float
    fleet_rounds: int  # rounds each replica completes before the fleet is stopped
    server_interval_s: float  # part 4
    server_rotations: int
    load_period_s: float = 0.025  # part 4: one POST /score every 25 ms (40/s), as the tests' load


FULL = Plan(
    idle_interval_s=30,
    resident_sizes=(10, 1000),
    resident_rounds=3,
    idle_margin_s=1.0,
    latency_interval_s=5,
    rotations=8,
    request_rounds=6,
    fleet_replicas=20,
    fleet_secrets=20,
    fleet_interval_s=8,
    fleet_rounds=3,
    server_interval_s=4,
    server_rotations=3,
)
SMOKE = Plan(
    idle_interval_s=4,
    resident_sizes=(10, 100),
    resident_rounds=1,
    idle_margin_s=0.5,
    latency_interval_s=2,
    rotations=2,
    request_rounds=3,
    fleet_replicas=5,
    fleet_secrets=10,
    fleet_interval_s=2,
    fleet_rounds=1,
    server_interval_s=2,
    server_rotations=1,
)


class BenchError(RuntimeError):
    """A part could not be measured (its message names what was awaited; never a value)."""


def secret_ref(vault: str, name: str, version: str | None = None, options: str = "") -> str:
    return f"keyvault:https://{vault}.vault.azure.net/secrets/{name}" + (f"/{version}" if version else "") + options


def rotated_value(tag: str, k: int, length: int = 40) -> str:
    """A new value for rotation k, `length` characters, starting with the bench prefix (checked for in outputs)."""
    head = f"{VALUE_PREFIX}{tag}-{k:03d}-{uuid.uuid4().hex[:8]}-"
    return (head + "z" * length)[:length]


def epoch(timestamp: str) -> float:
    return datetime.fromisoformat(timestamp).timestamp()


def sliding_max(times: list[float], window: float) -> int:
    """The largest number of `times` within any window of this length."""
    times, best, start = sorted(times), 0, 0
    for end, now in enumerate(times):
        while now - times[start] >= window:
            start += 1
        best = max(best, end - start + 1)
    return best


def quantiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {"median": float("nan"), "max": float("nan"), "min": float("nan")}
    return {"median": statistics.median(values), "max": max(values), "min": min(values)}


# A supervisor under the bench -------------------------------------------------------------------


class Supervised:
    """`sidecar supervise -- CMD` with its stdout and stderr in files (JSON logs), in a session of its own."""

    def __init__(self, name: str, work: Path, cmd: list[str], env: dict[str, str]) -> None:
        self.name = name
        self.stdout_path = work / f"{name}.stdout"
        self.stderr_path = work / f"{name}.stderr"
        with open(self.stdout_path, "wb") as stdout, open(self.stderr_path, "wb") as stderr:
            self.process = subprocess.Popen(
                [SIDECAR, "supervise", "--", *cmd],
                env=env,
                stdout=stdout,
                stderr=stderr,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self.pid = self.process.pid
        self.spawned = time.time()

    def events(self, name: str | None = None) -> list[dict[str, Any]]:
        found = []
        for line in self.stderr_path.read_text(errors="replace").splitlines():
            with contextlib.suppress(ValueError):
                event = json.loads(line)
                if isinstance(event, dict) and (name is None or event.get("event") == name):
                    found.append(event)
        return found

    def output(self) -> str:
        return self.stdout_path.read_text(errors="replace") + self.stderr_path.read_text(errors="replace")

    def wait_for(self, check: Callable[[], Any], what: str, timeout: float = WAIT_S) -> Any:
        end = time.monotonic() + timeout
        while True:
            result = check()
            if result:
                return result
            code = self.process.poll()
            if code is not None:
                raise BenchError(f"{self.name}: the sidecar exited {code} while the bench waited for {what}")
            if time.monotonic() > end:
                raise BenchError(f"{self.name}: waited {timeout:.0f} s for {what}")
            time.sleep(POLL_S)

    def wait_event(self, name: str, count: int = 1, timeout: float = WAIT_S) -> list[dict[str, Any]]:
        return self.wait_for(
            lambda: (found := self.events(name)) and len(found) >= count and found,
            f"{count} '{name}' event(s)",
            timeout,
        )

    def signal(self, signum: int) -> None:
        os.kill(self.pid, signum)

    def terminate(self) -> None:
        """TERM: the sidecar passes it to its child's process group and exits with the child's code."""
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signal.SIGTERM)

    def wait_stopped(self, timeout: float = 40.0) -> None:
        try:
            self.process.wait(timeout)  # an exited sidecar has waited for its child already
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            for event in self.events("started"):  # whatever is left of its children (each leads a group)
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(event["pid"], signal.SIGKILL)

    def stop(self) -> None:
        self.terminate()
        self.wait_stopped()


def child_events(path: Path, name: str | None = None) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    events = []
    for line in path.read_text().splitlines():
        with contextlib.suppress(ValueError):
            events.append(json.loads(line))
    return [event for event in events if name is None or event["event"] == name]


# 5.1 Resident cost between rounds ---------------------------------------------------------------


def proc_sample(pid: int) -> dict[str, Any]:
    """What /proc says of one process (not its children): memory, CPU ticks, context switches, where it waits."""
    sample: dict[str, Any] = {"time": time.monotonic()}
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) ": field 3 (state) is fields[0]
    sample.update(
        utime=int(fields[11]), stime=int(fields[12]), cutime=int(fields[13]), cstime=int(fields[14])
    )  # proc(5): fields 14-17
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile"):
            sample[key] = int(value.split()[0])
        elif key in ("Threads", "voluntary_ctxt_switches", "nonvoluntary_ctxt_switches"):
            sample[key] = int(value)
    try:
        rollup = {}
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
            key, _, value = line.partition(":")
            rollup[key] = int(value.split()[0])
        sample["Pss"] = rollup["Pss"]
        sample["Uss"] = rollup["Private_Clean"] + rollup["Private_Dirty"]
    except (OSError, KeyError, ValueError, IndexError):
        sample["Pss"] = sample["Uss"] = None
    try:
        sample["sched_ns"] = int(Path(f"/proc/{pid}/schedstat").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        sample["sched_ns"] = None
    try:
        sample["wchan"] = Path(f"/proc/{pid}/wchan").read_text().strip() or None
    except OSError:
        sample["wchan"] = None
    try:
        sample["children"] = [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        sample["children"] = None
    return sample


def resident(plan: Plan, emu, work: Path) -> dict[str, Any]:
    """Supervisors of each size side by side: a few rounds on demand, then one idle window they all share."""
    runs: dict[int, Supervised] = {}
    events: dict[int, Path] = {}
    exec_peak_kb: dict[int, int] = {}
    for n in plan.resident_sizes:
        env = base_env(emu, {f"SECRET_{i}": kv_ref(BENCH_VAULT, i) for i in range(n)})
        exec_peak_kb[n] = max(peak_rss_kb([SIDECAR, "exec", "--", *MARKER], env) for _ in range(3))
        events[n] = work / f"resident-{n}.events"
        runs[n] = Supervised(
            f"resident-{n}",
            work,
            [*CHILD, str(events[n]), "--env", "SECRET_0"],
            {**env, "SIDECAR_REFRESH_INTERVAL": f"{plan.idle_interval_s:g}", "SIDECAR_RELOAD_SIGNAL": "HUP"},
        )
    samples: dict[int, list[dict[str, Any]]] = {n: [] for n in runs}
    try:
        for n, run in runs.items():
            run.wait_event("refresh")  # the child runs; the first round is scheduled 0.5-1.5 intervals away
            run.wait_for(lambda n=n: child_events(events[n], "start"), "the child's start")
        before = {n: proc_sample(run.pid) for n, run in runs.items()}
        for k in range(1, plan.resident_rounds + 1):
            for run in runs.values():  # the reload signal sent to the sidecar: a round within a tenth of an interval
                run.signal(signal.SIGHUP)
            for run in runs.values():
                run.wait_event("refreshed", k)
        last_round = {n: run.events("refreshed")[-1] for n, run in runs.items()}
        # next_in_s is rounded to 0.1 s; the margin covers it
        end = min(epoch(e["timestamp"]) + e["next_in_s"] for e in last_round.values()) - plan.idle_margin_s
        time.sleep(0.2)
        while True:
            for n, run in runs.items():
                samples[n].append(proc_sample(run.pid))
            if (left := end - time.time()) <= 0:
                break
            time.sleep(min(left, 5.0))
        rounds_in_window = {n: len(run.events("refreshed")) - plan.resident_rounds for n, run in runs.items()}
        child_pid = {n: run.events("started")[0]["pid"] for n, run in runs.items()}
    finally:
        for run in runs.values():
            run.terminate()
        for run in runs.values():
            run.wait_stopped()
    sizes = {}
    for n, series in samples.items():
        first, last = series[0], series[-1]
        sched_ms = (last["sched_ns"] - first["sched_ns"]) / 1e6 if first["sched_ns"] is not None else None
        rounds_cpu = (first["cutime"] + first["cstime"]) - (before[n]["cutime"] + before[n]["cstime"])
        sizes[n] = {
            "window_s": last["time"] - first["time"],
            "samples": len(series),
            "rounds_in_window": rounds_in_window[n],
            "other_children_at_end": len([pid for pid in (last["children"] or []) if pid != child_pid[n]]),
            "rss_kb": max(s["VmRSS"] for s in series),
            "rss_anon_kb": max(s["RssAnon"] for s in series),
            "rss_file_kb": max(s["RssFile"] for s in series),
            "hwm_kb": last["VmHWM"],
            "pss_kb": max(s["Pss"] for s in series) if first["Pss"] is not None else None,
            "uss_kb": max(s["Uss"] for s in series) if first["Uss"] is not None else None,
            "rss_after_start_kb": before[n]["VmRSS"],  # after the first resolution, before any refresh round
            "threads": max(s["Threads"] for s in series),
            "cpu_ticks": (last["utime"] + last["stime"]) - (first["utime"] + first["stime"]),
            "sched_ms": sched_ms,
            "voluntary_switches": last["voluntary_ctxt_switches"] - first["voluntary_ctxt_switches"],
            "involuntary_switches": last["nonvoluntary_ctxt_switches"] - first["nonvoluntary_ctxt_switches"],
            "wchan": sorted({s["wchan"] for s in series if s["wchan"]}),
            # The rounds the bench asked for, reaped by the supervisor: their CPU lands in its cutime + cstime.
            "round_cpu_s": rounds_cpu / CLK_TCK / plan.resident_rounds,
            "round_ms": statistics.median(e["ms"] for e in runs[n].events("refreshed")[: plan.resident_rounds]),
            "exec_peak_kb": exec_peak_kb[n],
            "leaks": leaked(runs[n].output()) + leaked(events[n].read_text() if events[n].exists() else ""),
        }
    return {
        "interval_s": plan.idle_interval_s,
        "rounds_before_window": plan.resident_rounds,
        "clk_tck": CLK_TCK,
        "sizes": sizes,
    }


def resident_markdown(r: dict[str, Any]) -> str:
    mib = lambda kb: "-" if kb is None else f"{kb / 1024:.1f}"  # noqa: E731
    rows = []
    for n, z in r["sizes"].items():
        rows.append(
            [
                n,
                f"**{mib(z['rss_kb'])}**",
                mib(z["pss_kb"]),
                mib(z["uss_kb"]),
                f"{mib(z['rss_anon_kb'])} / {mib(z['rss_file_kb'])}",
                mib(z["rss_after_start_kb"]),
                mib(z["exec_peak_kb"]),
                f"**{z['rss_kb'] / z['exec_peak_kb']:.2f}x**",
                f"{z['window_s']:.1f}",
                f"**{z['cpu_ticks']}**",
                "-" if z["sched_ms"] is None else f"{z['sched_ms']:.3f}",
                f"{z['voluntary_switches']} / {z['involuntary_switches']}",
                z["threads"],
                f"{z['round_cpu_s']:.2f} / {z['round_ms']:,.0f}",
            ]
        )
    header = [
        "references",
        "supervisor RSS (MiB)",
        "PSS (MiB)",
        "USS (MiB)",
        "RssAnon / RssFile (MiB)",
        "RSS before any refresh round (MiB)",
        "`sidecar exec` peak RSS (MiB)",
        "supervisor RSS / exec peak",
        "idle window (s)",
        "CPU ticks in the window",
        "CPU time in the window (ms)",
        "context switches in the window (vol. / invol.)",
        "threads",
        "one round: CPU (s) / its `ms` (ms)",
    ]
    sizes = list(r["sizes"].values())
    wchan = sorted({w for z in sizes for w in z["wchan"]})
    note = (
        f"Supervisors of {' and '.join(str(n) for n in r['sizes'])} Key Vault references side by side, "
        f"SIDECAR_REFRESH_INTERVAL={r['interval_s']:g}; child: a Python process waiting in pause(). After the "
        f"children started, the bench sent the reload signal to the sidecars {r['rounds_before_window']} time(s) "
        "(each a round on demand, within a tenth of an interval), then sampled each supervisor's /proc every 5 s "
        "from just after the last round until shortly before the first next round was due "
        f"({sum(z['rounds_in_window'] for z in sizes)} round(s) and "
        f"{sum(z['other_children_at_end'] for z in sizes)} round process(es) seen in the window). RSS, RssAnon, "
        "RssFile: /proc/PID/status, the largest sample; PSS and USS (Private_Clean + Private_Dirty): smaps_rollup; "
        f"CPU ticks (1/{r['clk_tck']} s): utime + stime of /proc/PID/stat, the supervisor alone (the rounds it reaps "
        "count in its cutime + cstime, which gives the rounds' CPU in the last column); CPU time: schedstat's run "
        "time (ns); a round's `ms` is the sidecar's own, timed inside the forked process from the start of its work "
        "(SDK imports included) to its last fetch. `sidecar exec` of the same environment: wait4's ru_maxrss over "
        "its life (section 3's method). "
        f"Where the supervisors wait: {', '.join(wchan) or '-'}. Values in any output: "
        f"{sum(z['leaks'] for z in sizes)}."
    )
    return note + "\n\n" + table(header, rows) + "\n"


# 5.2 Rotation latency ---------------------------------------------------------------------------


def latency(plan: Plan, emu, work: Path, files_root: Path) -> dict[str, Any]:
    interval = plan.latency_interval_s
    names = {"restart": "rot-env", "signal": "rot-file"}
    current = {path: rotated_value(path, 0) for path in names}
    for path, name in names.items():
        emu.admin.add_version(BENCH_VAULT, name, current[path])
    files_dir = files_root / "latency"
    common = {**base_env(emu), "SIDECAR_REFRESH_INTERVAL": f"{interval:g}"}
    events = {path: work / f"latency-{path}.events" for path in names}
    runs = {
        # An environment value (SIDECAR_ON_CHANGE=auto, the default): a change restarts the child.
        "restart": Supervised(
            "latency-restart",
            work,
            [*CHILD, str(events["restart"]), "--env", "ROTATED"],
            {**common, "ROTATED": secret_ref(BENCH_VAULT, names["restart"])},
        ),
        # A file value and a reload signal: the file is rewritten, the same child gets HUP and re-reads it.
        "signal": Supervised(
            "latency-signal",
            work,
            [*CHILD, str(events["signal"]), "--file", str(files_dir / "ROTATED")],
            {
                **common,
                "ROTATED": secret_ref(BENCH_VAULT, names["signal"], options="?file"),
                "SIDECAR_FILES_DIR": str(files_dir),
                "SIDECAR_RELOAD_SIGNAL": "HUP",
            },
        ),
    }
    seen_event = {"restart": "start", "signal": "reload"}
    rows: dict[str, list[dict[str, float]]] = {path: [] for path in names}
    try:
        for path, run in runs.items():
            run.wait_for(lambda p=path: child_events(events[p], "start"), "the child's start")
            # After the first round: that one comes 0.5-1.5 intervals after the start (the splay, section 5.4).
            run.wait_event("refreshed", timeout=interval * 1.5 + WAIT_S)
        for k in range(1, plan.rotations + 1):
            time.sleep(random.uniform(0, interval))  # a random phase against the rounds' schedule
            rotated_at = {}
            for path, name in names.items():
                current[path] = rotated_value(path, k, 40 + k)
                rotated_at[path] = time.time()
                emu.admin.add_version(BENCH_VAULT, name, current[path])
            for path, run in runs.items():
                want = len(current[path])  # each rotation's value has a length of its own
                [seen] = run.wait_for(
                    lambda p=path, w=want: [e for e in child_events(events[p], seen_event[p]) if e["seen"] == w][:1],
                    f"rotation {k} to reach the child",
                    timeout=interval * 2.2 + WAIT_S,
                )
                since = rotated_at[path]
                detecting = run.wait_for(
                    lambda r=run, t=since: next(
                        (e for e in r.events("refreshed") if epoch(e["timestamp"]) >= t and e["changed"]), None
                    ),
                    f"the 'refreshed' line of the round that found rotation {k}",
                )
                ended_at = epoch(detecting["timestamp"])
                changed = [e for e in run.events("changed") if since <= epoch(e["timestamp"]) <= ended_at]
                changed_at = epoch(changed[0]["timestamp"]) if changed else float("nan")
                round_s = detecting["ms"] / 1000
                # A rotation that lands while a round is under way may be missed by it: the next round is then
                # due one interval (+10%) after that round's end, so the bound grows by what was left of it.
                missed = [
                    e for e in run.events("refreshed") if since <= epoch(e["timestamp"]) < ended_at and not e["changed"]
                ]
                in_flight = epoch(missed[0]["timestamp"]) - since if missed else 0.0
                rows[path].append(
                    {
                        "latency_s": seen["time"] - since,
                        "round_s": round_s,
                        "to_round_start_s": changed_at - round_s - since,
                        "action_s": seen["time"] - changed_at,
                        "bound_s": interval * 1.1 + round_s + in_flight,
                        "missed_a_round_under_way": bool(missed),
                    }
                )
    finally:
        for run in runs.values():
            run.terminate()
        for run in runs.values():
            run.wait_stopped()
    leaks = sum(leaked(run.output()) for run in runs.values())
    leaks += sum(leaked(path.read_text()) for path in events.values() if path.exists())
    result: dict[str, Any] = {
        "interval_s": interval,
        "rotations": plan.rotations,
        "leaks": leaks,
        # At most one restart per interval: a round 0.9 interval after the last restart waits for the rest.
        "restart_waits": len(runs["restart"].events("restart waits")),
    }
    for path, samples in rows.items():
        result[path] = {
            "samples": samples,
            "latency_s": quantiles([s["latency_s"] for s in samples]),
            "to_round_start_s": quantiles([s["to_round_start_s"] for s in samples]),
            "round_s": quantiles([s["round_s"] for s in samples]),
            "action_s": quantiles([s["action_s"] for s in samples]),
            "within_bound": sum(1 for s in samples if s["latency_s"] <= s["bound_s"]),
            "missed_a_round_under_way": sum(1 for s in samples if s["missed_a_round_under_way"]),
            "worst_over_bound_s": max((s["latency_s"] - s["bound_s"] for s in samples), default=float("nan")),
        }
    return result


def latency_markdown(r: dict[str, Any]) -> str:
    labels = {
        "restart": "restart: environment value, CMD restarted",
        "signal": "file + signal: `?file`, SIDECAR_RELOAD_SIGNAL=HUP",
    }
    rows = []
    for path, label in labels.items():
        p = r[path]
        rows.append(
            [
                label,
                f"{p['latency_s']['median']:.2f}",
                f"**{p['latency_s']['max']:.2f}**",
                f"{r['interval_s'] * 1.1:.2f} + {p['round_s']['max']:.2f}",
                f"{p['within_bound']} / {len(p['samples'])} ({p['missed_a_round_under_way']})",
                f"{p['to_round_start_s']['median']:.2f} / {p['to_round_start_s']['max']:.2f}",
                f"{p['round_s']['median'] * 1000:.0f}",
                f"{p['action_s']['median'] * 1000:.0f} / {p['action_s']['max'] * 1000:.0f}",
            ]
        )
    header = [
        "path",
        "latency median (s)",
        "latency max (s)",
        "bound: interval x 1.1 + round (s)",
        "within the bound (of which after a round under way)",
        "wait for the round, median / max (s)",
        "round (ms, median)",
        "round end to the child (ms, median / max)",
    ]
    note = (
        f"Two supervisors side by side, SIDECAR_REFRESH_INTERVAL={r['interval_s']:g}, one Key Vault secret each "
        f"(no version), {r['rotations']} rotations. Each rotation: a random pause of 0 to one interval (a random "
        "phase against the rounds), then `admin.add_version` on both secrets, each value with a new length; the "
        "latency runs from just before that call to the moment the child records the value: on its start "
        "(restart path: `bench/rotation_child.py` hashes the variable) or in its HUP handler (file path: it hashes "
        "the file), both on the same wall clock. Split with the sidecar's own lines: wait = from the call to the "
        "round's start (the `changed` line's time minus the round's `ms`), round = that `ms` (timed inside the "
        "forked process from the start of its work, SDK imports included, to its last fetch), then the action "
        "(restart: TERM, the child's exit, a new child's start; file: the "
        "atomic rewrite and HUP). The bound is the latest a round can come after a change (one interval + 10% "
        "jitter) plus the round that finds it; a rotation that lands in a round under way that does not see it "
        "waits for the next one, so its bound adds what was left of that round (counted in brackets). The first "
        "rotation comes after each supervisor's first round (the splay: 0.5-1.5 intervals after the start). "
        f"Restarts that waited (at most one restart per interval): {r['restart_waits']} of {r['rotations']}. "
        f"Values in any output: {r['leaks']}."
    )
    return note + "\n\n" + table(header, rows) + "\n"


# 5.3 Requests per round, one supervisor and a fleet ---------------------------------------------


def _count(entries: list[dict[str, Any]]) -> dict[str, int]:
    kv = [e for e in entries if e["kind"] == "keyvault"]
    return {
        "keyvault": len(kv),
        "keyvault_200": sum(1 for e in kv if e["status"] == 200),
        "keyvault_401": sum(1 for e in kv if e["status"] == 401),
        "keyvault_429": sum(1 for e in kv if e["status"] == 429),
        "arm": sum(1 for e in entries if e["kind"] == "arm"),
        "tokens": sum(1 for e in entries if e["kind"] in ("imds", "msi")),
        "total": len(entries),
    }


def requests_single(plan: Plan, emu, work: Path) -> dict[str, Any]:
    """One supervisor: 6 secrets without a version, 2 of them again in other variables and 2 more inside one
    value, 3 pinned versions, one connection read through two variables. Expected per round: 6 + 1."""
    pinned = {}
    for j in range(3):
        pinned[j] = emu.admin.add_version(BENCH_VAULT, f"pin-{j}", rotated_value("pin", j))
        emu.admin.add_version(BENCH_VAULT, f"pin-{j}", rotated_value("pin-latest", j))  # the latest is another one
    refs = {f"SECRET_{i}": kv_ref(BENCH_VAULT, i) for i in range(6)}
    refs |= {"COPY_0": kv_ref(BENCH_VAULT, 0), "COPY_1": kv_ref(BENCH_VAULT, 1)}
    refs["JOINED"] = f"a=${{{{{kv_ref(BENCH_VAULT, 2)}}}}};b=${{{{{kv_ref(BENCH_VAULT, 3)}}}}}"  # platform form
    refs |= {f"PINNED_{j}": secret_ref(BENCH_VAULT, f"pin-{j}", version) for j, version in pinned.items()}
    refs |= {
        "CONN_KEY": "azureml://connections/bench-conn-0/credentials/key",
        "CONN_TARGET": "azureml://connections/bench-conn-0/target",
    }
    expected = {"keyvault": 6, "arm": 1}
    before = len(emu.admin.requests())
    run = Supervised("requests", work, SLEEPER, {**base_env(emu, refs), "SIDECAR_REFRESH_INTERVAL": "1"})
    try:
        run.wait_event("refresh")
        started_at = epoch(run.events("started")[0]["timestamp"])
        refreshed = run.wait_event("refreshed", plan.request_rounds, timeout=plan.request_rounds * 1.2 + WAIT_S)
        log = emu.admin.requests()[before:]
    finally:
        run.stop()
    refreshed = refreshed[: plan.request_rounds]
    ends = [epoch(e["timestamp"]) for e in refreshed]
    first = [e for e in log if e["time"] <= started_at]
    rounds = []
    for start, end in zip([started_at, *ends[:-1]], ends, strict=True):
        rounds.append(_count([e for e in log if start < e["time"] <= end]))
    total = _count([e for e in log if started_at < e["time"] <= ends[-1]])
    return {
        "variables": len(refs),
        "expected_per_round": expected,
        "rounds": len(rounds),
        "first": _count(first),
        "per_round": rounds,
        "total": total,
        "sidecar_fetches": [e["fetches"] for e in refreshed],
        "sidecar_token_requests": sum(e["token_requests"] for e in refreshed),
        "leaks": leaked(run.output()),
    }


def single_markdown(r: dict[str, Any]) -> str:
    n = r["rounds"]
    expected = sum(r["expected_per_round"].values())
    t = r["total"]
    per = [round_["total"] for round_ in r["per_round"]]
    rows = [
        [
            "first resolution",
            r["first"]["total"],
            r["first"]["keyvault"],
            r["first"]["keyvault_401"],
            r["first"]["arm"],
            r["first"]["tokens"],
            "-",
        ],
        [
            f"each refresh round (mean of {n}; min-max {min(per)}-{max(per)})",
            f"**{t['total'] / n:.2f}**",
            f"{t['keyvault'] / n:.2f}",
            f"{t['keyvault_401'] / n:.2f}",
            f"{t['arm'] / n:.2f}",
            f"{t['tokens'] / n:.2f}",
            expected,
        ],
    ]
    header = [
        "",
        "requests",
        "Key Vault GETs",
        "of which 401 (challenge)",
        "ARM List Secrets",
        "token requests",
        "expected (distinct fetches that can change)",
    ]
    note = (
        f"One supervisor, SIDECAR_REFRESH_INTERVAL=1, {r['variables']} variables: 6 Key Vault secrets without a "
        "version, two of them again in two more variables and two more inside one platform-form value "
        "(`a=${{...}};b=${{...}}`), 3 secrets pinned to a version that is no longer the latest, and one connection "
        "read through two variables (`credentials/key`, `target`). What can change: 6 secrets + 1 connection = "
        f"{expected} fetches. Counted in the emulator's request log: the first resolution (up to the child's start), "
        f"then each of {n} rounds (between two `refreshed` lines). The sidecar's own count of fetches per round: "
        f"{sorted(set(r['sidecar_fetches']))}; token requests over all rounds: {r['sidecar_token_requests']}. "
        f"Values in any output: {r['leaks']}."
    )
    return note + "\n\n" + table(header, rows) + "\n"


def fleet_rounds(plan: Plan, emu, work: Path) -> dict[str, Any]:
    replicas, secrets, interval = plan.fleet_replicas, plan.fleet_secrets, plan.fleet_interval_s
    # Scaled as a real fleet meets Key Vault (4,000 GETs per 10 s): all replicas at once overflow the bucket
    # (2.5-4x here), while the refill rate is 10x what the fleet needs on average (R x S per interval).
    limit = max(2 * secrets, replicas * secrets // 4)
    window_s = round(interval * limit / (replicas * secrets) / 10, 3)
    host = f"{FLEET_VAULT}.vault.azure.net"
    emu.admin.set_throttle(FLEET_VAULT, limit, window_s, retry_after=None)
    time.sleep(window_s * 2)  # a full bucket
    before = len(emu.admin.requests(kind="keyvault", host=host))
    runs = []
    try:
        for r in range(replicas):
            refs = {f"SECRET_{i}": kv_ref(FLEET_VAULT, r * secrets + i) for i in range(secrets)}
            env = {**base_env(emu, refs), "SIDECAR_REFRESH_INTERVAL": f"{interval:g}"}
            runs.append(Supervised(f"fleet-{r:02d}", work, SLEEPER, env))
        deadline = interval * (1.5 + 1.1 * plan.fleet_rounds) + replicas + WAIT_S
        for run in runs:
            run.wait_event("refreshed", plan.fleet_rounds, timeout=deadline)
        rss_kb = [proc_sample(run.pid)["VmRSS"] for run in runs]  # each after its rounds, between two
    finally:
        for run in runs:
            run.terminate()
        for run in runs:
            run.wait_stopped()
        emu.admin.set_throttle(FLEET_VAULT, 4000, 10.0)
    log = emu.admin.requests(kind="keyvault", host=host)[before:]
    by_replica: dict[int, list[dict[str, Any]]] = {r: [] for r in range(replicas)}
    for entry in log:
        by_replica[int(entry["secret"].removeprefix("s-")) // secrets].append(entry)
    start_entries, round_entries, round_starts, first_offsets = [], [], [], []
    rounds = token_requests = 0
    for r, run in enumerate(runs):
        started_at = epoch(run.events("started")[0]["timestamp"])
        ends = [epoch(e["timestamp"]) for e in run.events("refreshed")]
        rounds += len(ends)
        token_requests += sum(e["token_requests"] for e in run.events("refreshed"))
        start_entries += [e for e in by_replica[r] if e["time"] <= started_at]
        for j, (start, end) in enumerate(zip([started_at, *ends[:-1]], ends, strict=True)):
            entries = [e for e in by_replica[r] if start < e["time"] <= end]
            round_entries += entries
            if entries:
                round_starts.append(entries[0]["time"])
                if j == 0:
                    first_offsets.append((entries[0]["time"] - started_at) / interval)
    spawned = [run.spawned for run in runs]
    starts = [epoch(run.events("started")[0]["timestamp"]) for run in runs]
    start_count, round_count = _count(start_entries), _count(round_entries)
    return {
        "replicas": replicas,
        "secrets": secrets,
        "interval_s": interval,
        "limit": limit,
        "window_s": window_s,
        "start": start_count,
        "start_s": max(starts) - min(spawned),
        "start_peak_per_window": sliding_max([e["time"] for e in start_entries], window_s),
        "rounds": rounds,
        "rounds_total": round_count,
        "requests_per_round_per_secret": round_count["total"] / (rounds * secrets),
        "token_requests_per_round": token_requests / rounds,
        "round_peak_per_window": sliding_max([e["time"] for e in round_entries], window_s),
        "round_starts_peak_per_window": sliding_max(round_starts, window_s),
        "first_round_offset_intervals": quantiles(first_offsets),
        "rss_kb": quantiles(rss_kb),
        "leaks": sum(leaked(run.output()) for run in runs),
    }


def fleet_markdown(r: dict[str, Any]) -> str:
    s, c = r["start"], r["rounds_total"]
    rows = [
        [
            "start (R spawned back to back)",
            r["replicas"],
            s["total"],
            s["keyvault_429"],
            s["keyvault_401"],
            f"{s['total'] / (r['replicas'] * r['secrets']):.2f}",
            f"{r['start_peak_per_window']} / {r['limit']}",
            "-",
        ],
        [
            f"refresh rounds (splayed, jittered; {r['interval_s']:g} s interval)",
            r["rounds"],
            c["total"],
            c["keyvault_429"],
            c["keyvault_401"],
            f"**{r['requests_per_round_per_secret']:.3f}**",
            f"{r['round_peak_per_window']} / {r['limit']}",
            f"{r['token_requests_per_round']:.2f}",
        ],
    ]
    header = [
        "phase",
        "replica rounds",
        "vault requests",
        "429",
        "401",
        "requests / (rounds x S)",
        f"most requests (any status) in one {r['window_s']:g} s window / bucket size",
        "token requests per round",
    ]
    f = r["first_round_offset_intervals"]
    note = (
        f"R = {r['replicas']} supervisors started back to back, each with S = {r['secrets']} Key Vault references "
        f"(replica r reads s-(r*S) to s-(r*S+S-1), so the vault's log tells the replicas apart), "
        f"SIDECAR_REFRESH_INTERVAL={r['interval_s']:g}, on one vault whose bucket holds {r['limit']} GETs per "
        f"{r['window_s']:g} s, no Retry-After: all replicas at once ({r['replicas'] * r['secrets']} GETs) would be "
        f"{r['replicas'] * r['secrets'] / r['limit']:.1f}x over it, while the bucket refills "
        f"{r['limit'] / r['window_s'] / (r['replicas'] * r['secrets'] / r['interval_s']):.0f}x faster than the "
        "fleet needs on average (as Key Vault's 4,000 per 10 s for a fleet that reads R x S every interval). "
        "Stopped once every replica had finished its rounds; requests of a round cut short by the stop are not "
        "counted. Rounds are delimited per replica by its "
        "own `started` and `refreshed` lines. The start took "
        f"{r['start_s']:.1f} s (first spawn to the last child started: R Python processes on this machine's CPUs). "
        f"Splay: each replica's first refresh round began {f['min']:.2f} to {f['max']:.2f} intervals "
        f"(median {f['median']:.2f}) after its start; at most {r['round_starts_peak_per_window']} of the "
        f"{r['rounds']} replica rounds began within any one {r['window_s']:g} s window (a sliding window; a full "
        "bucket admits its size plus its refill within one, so up to twice the size passes without a 429). "
        "Each supervisor's RSS at "
        f"the end (after its rounds): median {r['rss_kb']['median'] / 1024:.1f} MiB, max "
        f"{r['rss_kb']['max'] / 1024:.1f} MiB. Values in any output: {r['leaks']}."
    )
    return note + "\n\n" + table(header, rows) + "\n"


# 5.4 Downtime with azmlinfsrv under load -----------------------------------------------------------


def serve_under_load(plan: Plan, emu, work: Path, files_root: Path, venv: Path, path: str) -> dict[str, Any]:
    interval = plan.server_interval_s
    secret = f"srv-{path}"
    emu.admin.add_version(BENCH_VAULT, secret, rotated_value(secret, 0, 40))
    port = free_port()
    home = work / f"home-{path}"  # gunicorn 27 keeps a control socket under $HOME: one per server
    home.mkdir()
    env = base_env(
        emu,
        {
            "ROTATED": secret_ref(BENCH_VAULT, secret, options="?file"),
            "STATIC": kv_ref(BENCH_VAULT, 0) + "?file",
        },
    )
    env.update(
        {
            "PATH": f"{venv / 'bin'}{os.pathsep}{env['PATH']}",
            "HOME": str(home),
            "EXPECTED_FILES": "ROTATED,STATIC",
            "SIDECAR_FILES_DIR": str(files_root / f"server-{path}"),
            "SIDECAR_REFRESH_INTERVAL": f"{interval:g}",
            **({"SIDECAR_ON_CHANGE": "restart"} if path == "restart" else {"SIDECAR_RELOAD_SIGNAL": "HUP"}),
        }
    )
    cmd = [str(venv / "bin" / "azmlinfsrv"), "--entry_script", str(SCORE_FILES), "--port", str(port)]
    run = Supervised(f"azmlinfsrv-{path}", work, cmd, env)
    rotations = []
    outcomes: list[Outcome] = []
    try:
        run.wait_for(lambda: score(port, timeout=5.0).ok, f"POST /score on port {port} to answer 200")
        with Load(port, plan.load_period_s) as load:
            run.wait_for(lambda: len(load.successes()) >= 20, "20 answers before the first rotation")
            for k in range(1, plan.server_rotations + 1):
                time.sleep(random.uniform(0, interval))
                length = 40 + k  # the answers carry lengths only: each rotation's value has its own
                rotated_at = time.monotonic()
                emu.admin.add_version(BENCH_VAULT, secret, rotated_value(secret, k, length))

                def new(o: Outcome, n: int = length) -> bool:
                    return o.answer["lengths"].get("ROTATED") == n

                first = run.wait_for(
                    lambda n=new: load.successes(n), f"rotation {k} in /score", interval * 2.2 + WAIT_S
                )
                rotations.append(min(o.done for o in first) - rotated_at)
                run.wait_for(lambda n=new: len(load.successes(n)) >= 20, f"20 answers after rotation {k}")
        outcomes = load.outcomes()
    finally:
        run.stop()
    ok = [o for o in outcomes if o.ok]
    dones = sorted(o.done for o in ok)
    gaps = [b - a for a, b in itertools.pairwise(dones)]
    failures: dict[str, int] = {}
    for o in outcomes:
        if not o.ok:
            failures[o.describe()] = failures.get(o.describe(), 0) + 1
    text = "".join(json.dumps(o.answer) for o in ok)
    return {
        "path": path,
        "interval_s": interval,
        "rotations": len(rotations),
        "requests": len(outcomes),
        "failed": len(outcomes) - len(ok),
        "failures": failures,
        "longest_gap_s": max(gaps, default=float("nan")),
        "median_gap_s": statistics.median(gaps) if gaps else float("nan"),
        "latency_max_s": max((o.done - o.sent for o in outcomes), default=float("nan")),
        "latency_median_s": statistics.median(o.done - o.sent for o in outcomes) if outcomes else float("nan"),
        "rotation_to_clients_s": rotations,
        "masters": len({o.answer["master_pid"] for o in ok}),
        "workers": len({o.answer["worker_pid"] for o in ok}),
        "starts": len(run.events("started")),
        "reloads": len(run.events("reload")),
        "leaks": leaked(run.output()) + leaked(text),
    }


def downtime(plan: Plan, emu, work: Path, files_root: Path) -> dict[str, Any]:
    if not SCORE_FILES.is_file():
        return {"skipped": f"{SCORE_FILES.relative_to(ROOT)} is missing"}
    how = "reused" if (venv_path() / COMPLETE).is_file() else "built"
    try:
        venv = build_venv()
    except VenvUnavailable as error:
        return {"skipped": str(error)}
    result: dict[str, Any] = {"venv": str(venv.relative_to(ROOT)), "venv_how": how}
    for path in ("restart", "reload"):
        say(f"  downtime: {path} path")
        result[path] = serve_under_load(plan, emu, work, files_root, venv, path)
    return result


def downtime_markdown(r: dict[str, Any]) -> str:
    if "skipped" in r:
        return f"Not measured: {r['skipped']}.\n"
    labels = {
        "restart": "SIDECAR_ON_CHANGE=restart (TERM, wait, a new azmlinfsrv)",
        "reload": "SIDECAR_RELOAD_SIGNAL=HUP (gunicorn: new worker, old one stopped gracefully)",
    }
    rows = []
    for path, label in labels.items():
        p = r[path]
        to_clients = p["rotation_to_clients_s"]
        kinds = ", ".join(f"{kind}: {count}" for kind, count in p["failures"].items())
        rows.append(
            [
                label,
                p["requests"],
                f"**{p['failed']}**" + (f" ({kinds})" if kinds else ""),
                f"**{p['longest_gap_s'] * 1000:,.0f}**",
                f"{p['latency_median_s'] * 1000:.0f} / {p['latency_max_s'] * 1000:,.0f}",
                f"{statistics.median(to_clients):.2f} / {max(to_clients):.2f}" if to_clients else "-",
                f"{p['masters']} / {p['workers']}",
            ]
        )
    header = [
        "path",
        "requests",
        "failed",
        "longest gap between successful answers (ms)",
        "request latency median / max (ms)",
        "rotation to the first answer with it, median / max (s)",
        "server masters / workers seen",
    ]
    p = r["reload"]
    note = (
        "`sidecar supervise -- azmlinfsrv --entry_script docker/example/score_files.py` (the tests' recipe and "
        f"venv, `{r['venv']}`, {r['venv_how']}; azmlinfsrv's default of one gunicorn worker), two secrets as "
        f"files (`?file`), one rotated; SIDECAR_REFRESH_INTERVAL={p['interval_s']:g}. Load: POST /score every "
        f"25 ms, each on a new connection and its own thread (an open loop, as in "
        "tests/sidecar/azmlinfsrv_helpers.py), from 20 answers before the first rotation to 20 answers with the "
        f"last; {p['rotations']} rotation(s) per path, each after a random pause of 0 to one interval. Failed = no "
        "answer (refused, reset, timeout) or not 200. The gap is between consecutive successful answers' "
        "completion times (40 per second when nothing stalls, so 25 ms is the floor). /score answers lengths, "
        "so each rotated value has its own length and the answers tell which one the worker read. Values in any "
        f"output (the sidecar's and the server's, the answers): {r['restart']['leaks'] + r['reload']['leaks']}."
    )
    return note + "\n\n" + table(header, rows) + "\n"


# The section --------------------------------------------------------------------------------------


def bench_rotation(smoke: bool, emu) -> tuple[str, dict[str, Any]]:
    plan = SMOKE if smoke else FULL
    results: dict[str, Any] = {"plan": plan.__dict__}
    work = Path(tempfile.mkdtemp(prefix="sidecar-bench-rotation-"))
    files_root = Path("/dev/shm") / f"sidecar-bench-{uuid.uuid4().hex[:12]}"
    files_root.mkdir(mode=0o700)
    parts = [
        ("resident", "5.1 Resident cost between rounds", resident, resident_markdown),
        ("latency", "5.2 Rotation latency", latency, latency_markdown),
        ("requests", "5.3 Requests per round: one supervisor", requests_single, single_markdown),
        ("fleet", "5.4 Requests per round: a fleet on a throttled vault", fleet_rounds, fleet_markdown),
        ("downtime", "5.5 Downtime during rotation: azmlinfsrv under load", downtime, downtime_markdown),
    ]
    text = []
    try:
        for key, title, measure, render in parts:
            say(f"  {title}")
            started = time.monotonic()
            args = (plan, emu, work, files_root) if key in ("latency", "downtime") else (plan, emu, work)
            try:
                results[key] = measure(*args)
                body = render(results[key])
            except BenchError as error:
                results[key] = {"error": str(error)}
                body = f"Not measured: {error}.\n"
            except Exception as error:  # a bench bug: report it and go on with the other parts
                where = traceback.extract_tb(error.__traceback__)[-1]
                results[key] = {"error": f"{type(error).__name__} at {Path(where.filename).name}:{where.lineno}"}
                body = f"Not measured: {results[key]['error']} (a bench error).\n"
            results[key]["section_s"] = time.monotonic() - started
            say(body)
            text += [f"#### {title}", "", body]
    finally:
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(files_root, ignore_errors=True)
    return "\n".join(text), results
