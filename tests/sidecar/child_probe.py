"""A stand-in server for the supervise tests: records what it sees and every signal it gets, as JSON lines.

usage: child_probe.py EVENTS [--names A,B] [--file PATH]... [--on-term CODE] [--term-delay S]
                             [--exit CODE] [--kill-self SIGNAL] [--orphan] [--grandchild]

Events (one JSON object per line, appended to EVENTS):
  {"event": "start", "pid", "pgid", "env": {name: value or null}, "files": {path: text or null}, ...}
  {"event": "reload", ...the same fields}      on SIGHUP: the files read again
  {"event": "signal", "signal": "SIGUSR1", "pid"}
  {"event": "term", "pid"}                     on SIGTERM; exits --on-term (default 3) after --term-delay
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time

RECORDED = (signal.SIGINT, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2, signal.SIGWINCH)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("events")
    parser.add_argument("--names", default="")
    parser.add_argument("--file", action="append", default=[])
    parser.add_argument("--on-term", type=int, default=3)
    parser.add_argument("--term-delay", type=float, default=0.0)
    parser.add_argument("--exit", type=int)
    parser.add_argument("--kill-self")
    parser.add_argument("--orphan", action="store_true", help="leave a grandchild that outlives its parent")
    parser.add_argument("--grandchild", action="store_true", help="start a probe in this process group")
    args = parser.parse_args()

    def record(event: str, **fields: object) -> None:
        line = {"event": event, "pid": os.getpid(), "time": time.time(), **fields}
        with open(args.events, "a") as out:
            out.write(json.dumps(line) + "\n")

    def seen() -> dict[str, object]:
        files = {}
        for path in args.file:
            try:
                with open(path) as file:
                    files[path] = file.read()
            except OSError:
                files[path] = None
        names = [name for name in args.names.split(",") if name]
        return {"env": {name: os.environ.get(name) for name in names}, "files": files}

    def on_term(_signum: int, _frame: object) -> None:
        record("term")
        time.sleep(args.term_delay)  # a server finishing its requests
        sys.exit(args.on_term)

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGHUP, lambda *_: record("reload", **seen()))
    for signum in RECORDED:
        signal.signal(signum, lambda signum, _: record("signal", signal=signal.Signals(signum).name))
    extra: dict[str, object] = {"pgid": os.getpgrp()}
    if args.orphan:
        extra["orphan"] = _leave_orphan()
    if args.grandchild:
        grandchild = subprocess.Popen([sys.executable, __file__, args.events + ".grandchild"])
        extra["grandchild"] = grandchild.pid
    record("start", **seen(), **extra)
    if args.exit is not None:
        sys.exit(args.exit)
    if args.kill_self:
        os.kill(os.getpid(), signal.Signals[args.kill_self])
    while True:
        signal.pause()


def _leave_orphan() -> int:
    """Fork twice and let the middle process exit: the grandchild is re-parented to the subreaper."""
    read, write = os.pipe()
    middle = os.fork()
    if middle == 0:
        grandchild = os.fork()
        if grandchild == 0:
            time.sleep(0.3)
            os._exit(0)
        os.write(write, str(grandchild).encode())
        os._exit(0)
    os.close(write)
    os.waitpid(middle, 0)
    return int(os.read(read, 32))


if __name__ == "__main__":
    main()
