"""The supervised child of the rotation bench: records when it sees which value, by its length only.

    python -S bench/rotation_child.py EVENTS [--env NAME] [--file PATH]

On start, and on SIGHUP, it appends one JSON line to EVENTS:
    {"event": "start" | "reload", "time": <epoch s>, "pid": ..., "seen": <the value's length>}
where the value is the environment variable NAME (--env) or the contents of PATH (--file).
Each rotation's value has a length of its own (bench/rotation.py), so the length tells which one
arrived; no value and no hash of one is ever written. SIGTERM ends it.
Started with `python -S` (no site): it imports only what it needs, so a restart costs about 15 ms.
"""

import json
import os
import signal
import sys
import time


def main() -> None:
    events, kind, name = sys.argv[1], sys.argv[2], sys.argv[3]

    def seen() -> int:
        if kind == "--env":
            data = os.environ.get(name, "").encode()
        else:
            try:
                with open(name, "rb") as file:
                    data = file.read()
            except OSError:
                data = b""
        return len(data)

    def record(event: str) -> None:
        line = {"event": event, "time": time.time(), "pid": os.getpid(), "seen": seen()}
        with open(events, "a") as out:
            out.write(json.dumps(line) + "\n")

    signal.signal(signal.SIGHUP, lambda *_: record("reload"))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    record("start")
    while True:
        signal.pause()


if __name__ == "__main__":
    main()
