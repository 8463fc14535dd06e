"""A host process for `sidecar.load()`: configures its own logging (root, azure, urllib3 at DEBUG, one
handler on stderr), calls load() with the keyword arguments in argv[2] (JSON), and records into the file
argv[1] what the tests check: the environment after, the result, the failure, and whether the host's
logging, structlog configuration and signal handlers are what they were. Values reach only that file.
"""

import json
import logging
import os
import signal
import sys
import threading

import structlog

logging.basicConfig(level=logging.DEBUG, stream=sys.stderr, format="%(levelname)s %(name)s %(message)s")
for name in ("azure", "urllib3", "msal"):
    logging.getLogger(name).setLevel(logging.DEBUG)
root = logging.getLogger()
before = {
    "handlers": list(root.handlers),
    "level": root.level,
    "structlog": structlog.get_config(),
    "signals": {signum: signal.getsignal(signum) for signum in signal.valid_signals() if signum not in (9, 19)},
}
environ_before = dict(os.environ)

import sidecar  # noqa: E402

record = {}
calls = json.loads(sys.argv[2]) if len(sys.argv) > 2 else [{}]
if len(sys.argv) > 3:  # refresh: load once, say so in the file argv[3], record the first change (or none in 30 s)
    changes = []
    changed = threading.Event()
    result = sidecar.load(**calls[0], on_change=lambda names: (changes.append(names), changed.set()))
    with open(sys.argv[3], "w", encoding="utf-8") as ready:
        ready.write(repr(result.current))  # names only
    changed.wait(30)
    result.current.stop(30)
    record.update(
        changes=changes,
        current=dict(result.current),
        refreshing_after_stop=result.current.refreshing,
        current_repr=repr(result.current),
    )
    calls = []
for kwargs in calls:
    try:
        result = sidecar.load(**kwargs)
        record.setdefault("results", []).append({name: loaded.__dict__ for name, loaded in result.variables.items()})
    except sidecar.SidecarError as error:
        record["error"] = {
            "type": type(error).__name__,
            "exit_code": error.exit_code,
            "failures": [
                {"variable": f.variable, "status": f.status, "exit_code": f.exit_code, "fix": f.fix}
                for f in getattr(error, "failures", [])
            ],
            "text": str(error),
        }
        record["environ_unchanged"] = dict(os.environ) == environ_before
record["env"] = dict(os.environ)
record["host_logging_unchanged"] = list(root.handlers) == before["handlers"] and root.level == before["level"]
record["structlog_unchanged"] = structlog.get_config() == before["structlog"]
record["signals_unchanged"] = all(signal.getsignal(s) == h for s, h in before["signals"].items())
with open(sys.argv[1], "w", encoding="utf-8") as out:
    json.dump(record, out, default=str)
