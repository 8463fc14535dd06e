"""Run every benchmark against the local emulator and write bench/RESULTS.md and the plot.

    .venv/bin/python bench/run.py                  # full run (about 7 minutes on 2 cores)
    .venv/bin/python bench/run.py --smoke          # every section, few runs, small N (about a minute)
    .venv/bin/python bench/run.py --only rotation  # one section; the report keeps the others' last figures

Benchmarks, not tests: nothing here asserts on time. Each section prints its table as it goes.
Secret values never appear in the output: runs are checked for the bench values' prefix and only
the count of such appearances (0) is reported.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import rotation
from common import (
    BENCH,
    BENCH_VAULT,
    ENTRYPOINT,
    FLEET_VAULT,
    MARKER,
    PYTHON,
    ROOT,
    SIDECAR,
    Spawned,
    base_env,
    conn_ref,
    fmt,
    kv_ref,
    leaked,
    marker_cost_ms,
    median,
    peak_rss_kb,
    say,
    set_latency,
    setup_emulator,
    spawn_timed,
    start_emulator,
    table,
)

FLOOR = [PYTHON, str(BENCH / "floor.py")]
BASELINE = [PYTHON, str(BENCH / "baseline.py")]
SIDECAR_EXEC = [SIDECAR, "exec", "--"]


@dataclass
class Config:
    smoke: bool
    store_ms: int
    token_ms: int
    fast_runs: int
    runs: int
    big_runs: int
    ns: list[int]
    fleets: list[dict]
    out: Path
    fleet_baseline: bool = True
    results: dict = field(default_factory=dict)


def config(args: argparse.Namespace) -> Config:
    common = {"store_ms": args.store_latency_ms, "token_ms": args.token_latency_ms, "out": args.out}
    if args.smoke:
        return Config(
            smoke=True,
            fast_runs=20,
            runs=2,
            big_runs=1,
            ns=[1, 10, 100],
            fleets=[{"replicas": 3, "secrets": 40, "limit": 40, "window_s": 0.1, "retry_after": None}],
            **common,
        )
    return Config(
        smoke=False,
        fast_runs=200,
        runs=5,
        big_runs=3,
        ns=[1, 10, 100, 1000],
        fleets=FLEETS,
        **common,
    )


# Key Vault's 4,000 GETs per 10 s, scaled down in time at the same rate (400/s). Key Vault's 429s
# carry no guaranteed Retry-After: the first two have none. The emulator's Retry-After is whole
# seconds (at least 1), so the scenarios with one use a 1 s window, where it means one window.
FLEETS = [
    {"replicas": 10, "secrets": 150, "limit": 40, "window_s": 0.1, "retry_after": None},
    {"replicas": 20, "secrets": 100, "limit": 40, "window_s": 0.1, "retry_after": None},
    {"replicas": 10, "secrets": 200, "limit": 400, "window_s": 1.0, "retry_after": 1},
]


# 1. The no-reference fast path ------------------------------------------------------------------


def bench_fast_path(cfg: Config, emu, marker_ms: float) -> str:
    if not os.access(ENTRYPOINT, os.X_OK):
        cfg.results["fast_path"] = None
        return "entrypoint.sh is missing or not executable: section skipped.\n"
    rows, raw = [], {}
    for extra in (0, 50):
        env = base_env(emu, extra=extra)
        variants = {"CMD": MARKER, "entrypoint.sh CMD": [ENTRYPOINT, *MARKER]}
        samples: dict[str, list[float]] = {name: [] for name in variants}
        for _ in range(cfg.fast_runs):  # interleaved, so drift hits both alike
            for name, argv in variants.items():
                samples[name].append(spawn_timed(argv, env).ms)
        sidecar_runs = [spawn_timed(SIDECAR_EXEC + MARKER, env).ms for _ in range(max(3, cfg.runs))]
        direct, wrapped = median(samples["CMD"]), median(samples["entrypoint.sh CMD"])
        sidecar = median(sidecar_runs)
        raw[extra] = {"direct": direct, "entrypoint": wrapped, "sidecar_exec": sidecar}
        rows.append(
            [
                len(env),
                fmt(direct),
                fmt(wrapped),
                f"{wrapped / direct:.2f}x",
                f"**{wrapped - direct:+.2f}**",
                fmt(sidecar),
            ]
        )
    cfg.results["fast_path"] = raw
    header = [
        "variables in env",
        "CMD alone (ms)",
        "entrypoint.sh CMD (ms)",
        "ratio",
        "difference (ms)",
        "`sidecar exec -- CMD`, for scale (ms)",
    ]
    note = (
        f"Spawn to CMD's first clock read, median of {cfg.fast_runs} interleaved runs each; the marker's own cost "
        f"({marker_ms:.2f} ms) is *not* subtracted here, so the ratio compares whole process starts. "
        "No reference in the environment."
    )
    return note + "\n\n" + table(header, rows) + "\n"


# 2. Time to exec vs N ---------------------------------------------------------------------------


def scenarios(cfg: Config) -> list[tuple[str, int, dict[str, str]]]:
    out = []
    for n in cfg.ns:
        out.append(("kv", n, {f"SECRET_{i}": kv_ref(BENCH_VAULT, i) for i in range(n)}))
    for n in [n for n in cfg.ns if n >= 10]:
        conns = n // 10
        refs = {f"SECRET_{i}": kv_ref(BENCH_VAULT, i) for i in range(n - conns)}
        refs.update({f"CONN_{i}": conn_ref(i) for i in range(conns)})
        out.append(("mix", n, refs))
    return out


def bench_vs_n(cfg: Config, emu, marker_ms: float) -> str:
    rows, raw = [], []
    for kind, n, refs in scenarios(cfg):
        env = base_env(emu, refs)
        runs = cfg.big_runs if n >= 1000 else cfg.runs
        result = {"kind": kind, "n": n}
        variants = {"floor": FLOOR, "baseline": BASELINE, "sidecar": SIDECAR_EXEC}
        if cfg.smoke and n >= 100:
            variants.pop("baseline")
        for name, argv in variants.items():
            before = emu.admin.counters()["throttled"]
            samples = [spawn_timed(argv + MARKER, env) for _ in range(runs)]
            failed = [run for run in samples if run.returncode != 0]
            if failed:
                say(f"  {name} N={n}: {len(failed)} failed, exit {failed[0].returncode}")
            result[name] = {
                "ms": median([run.ms - marker_ms for run in samples]),
                "all_ms": [round(run.ms - marker_ms, 1) for run in samples],
                "failed": len(failed),
                "leaks": sum(leaked(run.stderr) for run in samples),
                "throttled": sum(emu.admin.counters()["throttled"].values()) - sum(before.values()),
            }
        raw.append(result)
        floor, sidecar = result["floor"]["ms"], result["sidecar"]["ms"]
        baseline = result.get("baseline", {}).get("ms", float("nan"))
        label = f"{n} KV" if kind == "kv" else f"{n - n // 10} KV + {n // 10} conn"
        rows.append(
            [
                label,
                fmt(floor),
                fmt(baseline),
                fmt(sidecar),
                f"{sidecar / floor:.2f}x",
                "-" if baseline != baseline else f"{baseline / sidecar:.1f}x",
                sum(result[v]["failed"] for v in variants),
                sum(result[v]["leaks"] for v in variants),
            ]
        )
        say(f"  {label}: floor {fmt(floor)}  baseline {fmt(baseline)}  sidecar {fmt(sidecar)} ms")
    cfg.results["vs_n"] = raw
    header = [
        "references",
        "floor (ms)",
        "baseline (ms)",
        "sidecar (ms)",
        "sidecar / floor",
        "baseline / sidecar",
        "failed runs",
        "values in output",
    ]
    note = (
        f"Time to exec: spawn to CMD's first instruction, marker cost ({marker_ms:.2f} ms) subtracted; median of "
        f"{cfg.runs} runs ({cfg.big_runs} at N = 1000). Emulator latency: {cfg.store_ms} ms per Key Vault / ARM "
        f"request, {cfg.token_ms} ms per token request. IMDS flavour, default sidecar settings."
    )
    return note + "\n\n" + table(header, rows) + "\n"


def plot(cfg: Config) -> str:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "(matplotlib is not installed: no plot; `pip install -r bench/requirements.txt`)\n"
    rows = [row for row in cfg.results["vs_n"] if row["kind"] == "kv"]
    figure, axes = plt.subplots(figsize=(7, 4.5), dpi=110)
    for name, style in (("floor", "o-"), ("baseline", "s-"), ("sidecar", "^-")):
        points = [(row["n"], row[name]["ms"]) for row in rows if name in row]
        if points:
            axes.plot(*zip(*points, strict=True), style, label=name)
    axes.set_xscale("log")
    axes.set_yscale("log")
    axes.set_xlabel("Key Vault references (N)")
    axes.set_ylabel("time to exec, median (ms)")
    axes.set_title(f"Time to exec vs N ({cfg.store_ms} ms per Key Vault request, {cfg.token_ms} ms per token)")
    axes.grid(True, which="both", alpha=0.3)
    axes.legend()
    figure.tight_layout()
    name = "time_to_exec_smoke.png" if cfg.smoke else "time_to_exec.png"
    figure.savefig(cfg.out.parent / name)
    return f"![time to exec vs N]({name})\n"


# 3. Imports and memory --------------------------------------------------------------------------

WATCHED = ["azure.keyvault", "azure.identity", "azure.core", "msal", "requests", "tenacity", "structlog"]


def bench_imports(cfg: Config, emu) -> str:
    cases = {
        "no reference": {},
        "10 Key Vault": {f"SECRET_{i}": kv_ref(BENCH_VAULT, i) for i in range(10)},
        "10 connection": {f"CONN_{i}": conn_ref(i) for i in range(10)},
        "9 KV + 1 connection": {
            **{f"SECRET_{i}": kv_ref(BENCH_VAULT, i) for i in range(9)},
            "CONN_0": conn_ref(0),
        },
    }
    rows, raw = [], {}
    for label, refs in cases.items():
        env = base_env(emu, refs)
        traced = spawn_timed(SIDECAR_EXEC + MARKER, {**env, "PYTHONPROFILEIMPORTTIME": "1"})
        modules, total_us = set(), 0
        for line in traced.stderr.splitlines():
            if line.startswith("import time:") and line.count("|") == 2:
                _, cumulative, raw_name = line.split("|")
                if not cumulative.strip().isdigit():
                    continue
                modules.add(raw_name.strip())
                if not raw_name.startswith("  "):  # nested imports are indented by two more spaces
                    total_us += int(cumulative)
        present = {watch: any(m == watch or m.startswith(watch + ".") for m in modules) for watch in WATCHED}
        raw[label] = {"modules": len(modules), "import_ms": total_us / 1000, "present": present}
        raw[label]["rss_kb"] = max(peak_rss_kb(SIDECAR_EXEC + MARKER, env) for _ in range(3))
        rows.append(
            [
                label,
                len(modules),
                fmt(total_us / 1000),
                " ".join(watch for watch, on in present.items() if on) or "-",
                f"{raw[label]['rss_kb'] / 1024:.1f}",
            ]
        )
    floor_rss = max(peak_rss_kb(FLOOR + MARKER, base_env(emu, cases["10 Key Vault"])) for _ in range(3))
    baseline_rss = max(peak_rss_kb(BASELINE + MARKER, base_env(emu, cases["10 Key Vault"])) for _ in range(3))
    raw["baseline_rss_kb"] = baseline_rss
    raw["floor_rss_kb"] = floor_rss
    cfg.results["imports"] = raw
    header = ["references", "modules imported", "import time (ms)", "heavy packages imported", "peak RSS (MiB)"]
    note = (
        "`PYTHONPROFILEIMPORTTIME=1 sidecar exec -- CMD`: every module the sidecar process imported before the "
        "exec, and the sum of the top-level cumulative import times (the tracing itself adds a little). "
        "Peak RSS is wait4's ru_maxrss over the sidecar's life (before the exec), measured through a small "
        "`python -S` forker (bench/common.py says why). With 10 Key Vault references, the floor's: "
        f"{floor_rss / 1024:.1f} MiB; the baseline's: {baseline_rss / 1024:.1f} MiB."
    )
    return note + "\n\n" + table(header, rows) + "\n"


# 4. Fleet start ---------------------------------------------------------------------------------


def bench_fleet(cfg: Config, emu) -> str:
    rows, raw = [], []
    for spec in cfg.fleets:
        for name, argv in (("sidecar", SIDECAR_EXEC), ("baseline", BASELINE)):
            if name == "baseline" and (cfg.smoke or not cfg.fleet_baseline or spec is not FLEETS[0]):
                continue
            result = run_fleet(emu, spec, argv)
            result["client"] = name
            raw.append(result)
            minimum = result["minimum_s"]
            vault_bound = result["total_s"] - result["first_request_s"]
            rows.append(
                [
                    name,
                    f"{spec['replicas']} x {spec['secrets']}",
                    f"{spec['limit']} / {spec['window_s']:g} s",
                    "none" if spec["retry_after"] is None else f"{spec['retry_after']} s",
                    f"{minimum:.2f}",
                    f"{result['total_s']:.2f} (**{result['total_s'] / minimum:.2f}x**)",
                    f"{result['first_request_s']:.2f}",
                    f"{vault_bound:.2f} (**{vault_bound / minimum:.2f}x**)",
                    f"**{result['failed']}**",
                    result["requests"],
                    result["throttled"],
                    f"**{result['requests'] / (spec['replicas'] * spec['secrets']):.2f}x**",
                    result["leaks"],
                ]
            )
            say(
                f"  fleet {name} {spec}: {result['total_s']:.2f} s (min {minimum:.2f}), failed {result['failed']}, "
                f"requests {result['requests']} (429: {result['throttled']})"
            )
    cfg.results["fleet"] = raw
    header = [
        "client",
        "R x S",
        "vault limit",
        "Retry-After",
        "theoretical min (s)",
        "first spawn to last exec (s)",
        "first spawn to first vault request (s)",
        "first vault request to last exec (s)",
        "failed replicas",
        "vault requests",
        "of which 429",
        "requests / (R x S)",
        "values in output",
    ]
    note = (
        "R replicas (separate processes, spawned back to back) each resolve the same S Key Vault references against "
        "one emulated vault whose token bucket is scaled down from Key Vault's 4,000 GETs per 10 s (same rate). "
        "Theoretical minimum = R x S / limit x window (it ignores process start and the bucket's initial burst). "
        "Vault requests count every Key Vault request (challenges and 429s included). The middle time column is "
        "R Python processes starting at once on this machine's CPUs (a real fleet has a machine per replica); the "
        f"column after it is the vault-bound part. Emulator latency {cfg.store_ms} ms per request as above."
    )
    return note + "\n\n" + table(header, rows) + "\n"


def run_fleet(emu, spec: dict, argv: list[str]) -> dict:
    emu.admin.set_throttle(FLEET_VAULT, spec["limit"], spec["window_s"], retry_after=spec["retry_after"])
    before = len(emu.admin.requests(kind="keyvault", host=f"{FLEET_VAULT}.vault.azure.net"))
    time.sleep(spec["window_s"] * 2)  # let the bucket refill from any earlier scenario
    env = base_env(emu, {f"SECRET_{i}": kv_ref(FLEET_VAULT, i) for i in range(spec["secrets"])})
    replicas = [Spawned(argv + MARKER, env) for _ in range(spec["replicas"])]
    runs = [replica.finish(timeout=300) for replica in replicas]
    started = replicas[0].started
    ends = [replica.started + run.ms * 1e6 for replica, run in zip(replicas, runs, strict=True) if run.ms == run.ms]
    log = emu.admin.requests(kind="keyvault", host=f"{FLEET_VAULT}.vault.azure.net")[before:]
    spawned_s = (replicas[-1].started - started) / 1e9
    emu.admin.set_throttle(FLEET_VAULT, 4000, 10.0)
    failed = sum(1 for run in runs if run.returncode != 0)
    return {
        **spec,
        "minimum_s": spec["replicas"] * spec["secrets"] / spec["limit"] * spec["window_s"],
        "total_s": (max(ends) - started) / 1e9 if len(ends) == len(runs) else float("nan"),
        "failed": failed,
        "exit_codes": sorted({run.returncode for run in runs}),
        "requests": len(log),
        "throttled": sum(1 for entry in log if entry["status"] == 429),
        "ok": sum(1 for entry in log if entry["status"] == 200),
        "vault_s": (log[-1]["time"] - log[0]["time"]) if log else float("nan"),
        "spawned_s": spawned_s,  # the last replica was spawned this long after the first
        "first_request_s": (log[0]["time"] * 1e9 - started) / 1e9 if log else float("nan"),
        "last_exec_after_last_request_s": (max(ends) - log[-1]["time"] * 1e9) / 1e9 if log and ends else float("nan"),
        "leaks": sum(leaked(run.stderr) for run in runs),
    }


# Targets --------------------------------------------------------------------------------------------


def targets(cfg: Config) -> str:
    """The issue's targets, checked against this run's numbers (reported, never asserted)."""
    rows = []

    def add(target: str, measured: str, met: bool | None) -> None:
        rows.append([target, measured, "n/a" if met is None else ("**met**" if met else "**missed**")])

    fast = cfg.results.get("fast_path")
    if fast:
        worst = max(row["entrypoint"] - row["direct"] for row in fast.values())
        add("fast path: `entrypoint.sh CMD` within 5 ms of CMD", f"+{worst:.2f} ms (worst env size)", worst <= 5)
    by_n = {(row["kind"], row["n"]): row for row in cfg.results.get("vs_n", [])}
    row = by_n.get(("kv", 100))
    if row:
        ratio = row["sidecar"]["ms"] / row["floor"]["ms"]
        add("N = 100: within 1.5x the floor", f"{ratio:.2f}x", ratio <= 1.5)
        if "baseline" in row:
            speedup = row["baseline"]["ms"] / row["sidecar"]["ms"]
            add("N = 100: at least 5x faster than the baseline", f"{speedup:.1f}x", speedup >= 5)
    row = by_n.get(("kv", 1000))
    if row:
        if "baseline" in row:
            speedup = row["baseline"]["ms"] / row["sidecar"]["ms"]
            add("N = 1000: at least 20x faster than the baseline", f"{speedup:.1f}x", speedup >= 20)
        failed, throttled = row["sidecar"]["failed"], row["sidecar"]["throttled"]
        add(
            "N = 1000: no errors, vault limit not exceeded",
            f"{failed} failed runs, {throttled} 429s",
            failed == 0 and throttled == 0,
        )
    for fleet in cfg.results.get("fleet", []):
        if fleet["client"] != "sidecar":
            continue
        label = f"fleet {fleet['replicas']} x {fleet['secrets']}, Retry-After {fleet['retry_after'] or 'none'}"
        ratio = fleet["total_s"] / fleet["minimum_s"]
        vault_ratio = (fleet["total_s"] - fleet["first_request_s"]) / fleet["minimum_s"]
        per_secret = fleet["requests"] / (fleet["replicas"] * fleet["secrets"])
        add(f"{label}: zero failed replicas", str(fleet["failed"]), fleet["failed"] == 0)
        add(
            f"{label}: within 1.3x the theoretical minimum",
            f"{ratio:.2f}x from the first spawn; {vault_ratio:.2f}x from the first vault request",
            ratio <= 1.3,
        )
        add(f"{label}: requests (429s included) at most 1.5x R x S", f"{per_secret:.2f}x", per_secret <= 1.5)
    rotation_targets(cfg.results.get("rotation") or {}, add)
    if not rows:
        return ""
    return table(["target", "measured", "this run"], rows) + "\n"


def rotation_targets(results: dict, add) -> None:
    resident = results.get("resident") or {}
    for n, size in (resident.get("sizes") or {}).items():
        rss = size["rss_kb"] / 1024
        add(
            f"supervise, {n} references: at most 30 MiB RSS between rounds",
            f"{rss:.1f} MiB (exec's peak: {size['exec_peak_kb'] / 1024:.1f} MiB)",
            rss <= 30,
        )
        add(
            f"supervise, {n} references: no CPU between rounds",
            f"{size['cpu_ticks']} ticks, "
            + ("" if size["sched_ms"] is None else f"{size['sched_ms']:.3f} ms, ")
            + f"{size['voluntary_switches']} wake-ups in {size['window_s']:.0f} s",
            size["cpu_ticks"] == 0,
        )
    latency = results.get("latency") or {}
    for path in ("restart", "signal"):
        if path in latency:
            p = latency[path]
            add(
                f"rotation latency ({path} path) within interval x 1.1 + the round",
                f"{p['within_bound']} of {len(p['samples'])} rotations; max {p['latency_s']['max']:.2f} s "
                f"(interval {latency['interval_s']:g} s)",
                p["within_bound"] == len(p["samples"]),
            )
    single = results.get("requests") or {}
    if "total" in single:
        expected = sum(single["expected_per_round"].values())
        per_round = [r["total"] for r in single["per_round"]]
        add(
            "one supervisor: requests per round = the distinct fetches that can change",
            f"{min(per_round)}-{max(per_round)} per round, {expected} expected; "
            f"{single['total']['keyvault_401']} challenges, {single['total']['tokens']} token requests after the first",
            set(per_round) == {expected} and single["total"]["keyvault_401"] == 0,
        )
    fleet = results.get("fleet") or {}
    if "requests_per_round_per_secret" in fleet:
        ratio = fleet["requests_per_round_per_secret"]
        add(
            f"fleet {fleet['replicas']} x {fleet['secrets']}: requests per round per replica <= 1.1 S",
            f"{ratio:.3f} S ({fleet['rounds_total']['keyvault_429']} 429s in rounds)",
            ratio <= 1.1,
        )
    downtime = results.get("downtime") or {}
    if "reload" in downtime:
        add(
            "azmlinfsrv under load, reload path (HUP): 0 failed requests",
            f"{downtime['reload']['failed']} failed of {downtime['reload']['requests']}; restart path: "
            f"{downtime['restart']['failed']} failed",
            downtime["reload"]["failed"] == 0,
        )


# RESULTS.md -------------------------------------------------------------------------------------


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = ""
    try:
        kib = int(Path("/proc/meminfo").read_text().split()[1])
        memory = f", {kib / 1024 / 1024:.0f} GiB RAM"
    except (OSError, ValueError, IndexError):
        pass
    return (
        f"{platform.system()} {platform.release()}, {os.cpu_count()} CPUs ({cpu}){memory}; "
        f"Python {platform.python_version()}; `/bin/sh` = {os.path.realpath('/bin/sh')}"
    )


def git_revision() -> str:
    try:
        out = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
        dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "sidecar"], capture_output=True)
        return out.stdout.strip() + (" (sidecar/ modified)" if dirty.stdout.strip() else "")
    except OSError:
        return "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="every section, few runs, small N (CI)")
    parser.add_argument("--out", type=Path, default=None, help="the Markdown report (default: bench/RESULTS.md)")
    parser.add_argument("--store-latency-ms", type=int, default=20, help="per Key Vault and ARM request (20)")
    parser.add_argument("--token-latency-ms", type=int, default=5, help="per token request (5)")
    parser.add_argument(
        "--only", action="append", choices=tuple(TITLES), help="run only these sections (the report keeps the others)"
    )
    parser.add_argument("--fleet", type=int, action="append", help="only these fleet scenarios (0-based)")
    parser.add_argument("--no-fleet-baseline", action="store_true", help="skip the baseline fleet (2x faster)")
    args = parser.parse_args()
    # The smoke run (CI) writes outside the tracked tree.
    args.out = args.out or (ROOT / ".cache" / "bench" / "RESULTS-smoke.md" if args.smoke else BENCH / "RESULTS.md")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    cfg = config(args)
    if args.fleet:
        cfg.fleets = [cfg.fleets[i] for i in args.fleet]
    cfg.fleet_baseline = not args.no_fleet_baseline
    sections = args.only or list(TITLES)
    started = time.monotonic()
    max_n = max(cfg.ns)
    fleet_secrets = max(spec["secrets"] for spec in cfg.fleets)
    say(f"bench: {'smoke' if cfg.smoke else 'full'} run; starting the emulator")
    rotation_plan = rotation.SMOKE if cfg.smoke else rotation.FULL
    fleet_secrets = max(fleet_secrets, rotation_plan.fleet_replicas * rotation_plan.fleet_secrets)
    emu = start_emulator(max_n, max(max_n // 10, 1), fleet_secrets)
    parts: dict[str, str] = {}
    try:
        set_latency(emu, cfg.store_ms, cfg.token_ms)
        marker_ms = marker_cost_ms(50)
        say(f"marker (date +%s%N) spawn-to-clock cost: {marker_ms:.2f} ms")
        if "fast" in sections:
            say("1. no-reference fast path")
            parts["fast"] = bench_fast_path(cfg, emu, marker_ms)
            say(parts["fast"])
        if "n" in sections:
            say("2. time to exec vs N")
            parts["n"] = bench_vs_n(cfg, emu, marker_ms)
            parts["n"] += "\n" + plot(cfg)
            say(parts["n"])
        if "imports" in sections:
            say("3. imports and memory")
            parts["imports"] = bench_imports(cfg, emu)
            say(parts["imports"])
        if "fleet" in sections:
            say("4. fleet start")
            setup_emulator(emu, max_n, max(max_n // 10, 1), fleet_secrets)  # a short request log for the counts
            set_latency(emu, cfg.store_ms, cfg.token_ms)
            parts["fleet"] = bench_fleet(cfg, emu)
            say(parts["fleet"])
        if "rotation" in sections:
            say("5. rotation (sidecar supervise)")
            setup_emulator(emu, max_n, max(max_n // 10, 1), fleet_secrets)  # a short request log again
            set_latency(emu, cfg.store_ms, cfg.token_ms)
            parts["rotation"], cfg.results["rotation"] = rotation.bench_rotation(cfg.smoke, emu)
    finally:
        emu.stop()
    elapsed = time.monotonic() - started
    write_report(cfg, parts, elapsed, sections)
    say(f"bench: done in {elapsed:.0f} s; wrote {cfg.out}")


GENERATED_START = "<!-- generated by bench/run.py: start -->"
GENERATED_END = "<!-- generated by bench/run.py: end -->"
TITLES = {
    "fast": "1. No-reference fast path",
    "n": "2. Time to exec vs N",
    "imports": "3. Imports and memory",
    "fleet": "4. Fleet start",
    "rotation": "5. Rotation (`sidecar supervise`)",
}
RESULT_KEYS = {"fast": "fast_path", "n": "vs_n", "imports": "imports", "fleet": "fleet", "rotation": "rotation"}
PROVENANCE = "_Measured by: "


def previous_report(out: Path) -> tuple[dict[str, str], str, dict]:
    """The last report's generated sections (by key), its run line, and its JSON: kept for sections not run now."""
    text = out.read_text() if out.exists() else ""
    sections: dict[str, str] = {}
    run_line = ""
    if GENERATED_START in text and GENERATED_END in text:
        block = text.split(GENERATED_START, 1)[1].split(GENERATED_END, 1)[0]
        run_line = next((line for line in block.splitlines() if line.startswith("Measured ")), "")
        for key, title in TITLES.items():
            heading = f"### {title}\n"
            if heading in block:
                body = block.split(heading, 1)[1]
                end = body.find("\n### ")
                sections[key] = (body[: end + 1] if end >= 0 else body).strip("\n") + "\n"
    try:
        results = json.loads(out.with_suffix(".json").read_text())
    except (OSError, ValueError):
        results = {}
    return sections, run_line, results


def write_report(cfg: Config, parts: dict[str, str], elapsed: float, sections: list[str]) -> None:
    """Write the measured part between markers, keeping any hand-written analysis around it.

    A run of some sections only (--only) keeps the other sections' text and JSON from the last report;
    every section starts with the run that measured it.
    """
    command = ".venv/bin/python bench/run.py" + (" --smoke" if cfg.smoke else "")
    command += "".join(f" --only {key}" for key in sections) if set(sections) != set(TITLES) else ""
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    run_line = (
        f"Measured {stamp}, revision {git_revision()}, `{command}` ({'smoke' if cfg.smoke else 'full'} run, "
        f"{elapsed:.0f} s)."
    )
    kept, kept_run_line, kept_results = previous_report(cfg.out)
    for key in TITLES:
        if key not in parts and key in kept and RESULT_KEYS[key] in kept_results:
            cfg.results.setdefault(RESULT_KEYS[key], kept_results[RESULT_KEYS[key]])
    body = [GENERATED_START, run_line, "", f"Machine: {machine()}.", ""]
    checked = targets(cfg)
    if checked:
        if set(parts) != set(TITLES):
            body += ["### Targets, as measured by the runs named in each section", "", checked]
        else:
            body += ["### Targets, as measured in this run", "", checked]
    for key, title in TITLES.items():
        if key in parts:
            body += [f"### {title}", "", f"{PROVENANCE}{run_line[len('Measured ') :].rstrip('.')}._", "", parts[key]]
        elif key in kept:
            text = kept[key]
            if not text.startswith(PROVENANCE):  # a section from a report written before these lines existed
                text = f"{PROVENANCE}{kept_run_line[len('Measured ') :].rstrip('.')}._\n\n" + text
            body += [f"### {title}", "", text]
    body.append(GENERATED_END)
    generated = "\n".join(body) + "\n"
    previous = cfg.out.read_text() if cfg.out.exists() else ""
    if GENERATED_START in previous and GENERATED_END in previous:
        head = previous.split(GENERATED_START)[0]
        tail = previous.split(GENERATED_END, 1)[1]
        text = head + generated + ("\n" + tail.lstrip("\n") if tail.strip() else "")
    else:
        text = "# Benchmark results\n\n" + generated
    cfg.out.write_text(text)
    (cfg.out.with_suffix(".json")).write_text(json.dumps(cfg.results, indent=1, default=str) + "\n")


if __name__ == "__main__":
    main()
