"""The main job, locally: the emulator, then `sidecar exec` wrapping the sample scoring server.

    make demo                         one round: check, start, POST /score, stop
    .venv/bin/python docker/demo/run.py --serve   keep serving on 127.0.0.1:5001 until Ctrl-C

The references in demo.env are the ones a deployment file carries; SIDECAR_CONNECT_TO and
the emulator's CA (set from the emulator's ready line) make them reach the emulator unchanged.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "emulator"))

from azure_emulator.launcher import EmulatorProcess  # noqa: E402

READY_TIMEOUT_S = 60


def read_env_file(path: Path) -> dict[str, str]:
    env = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, _, value = line.partition("=")
            env[name.strip()] = value
    return env


def wait_listening(process: subprocess.Popen[str]) -> int:
    """The port from the server's first stdout line; fail if the sidecar exits instead."""
    lines: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    try:
        line = lines.get(timeout=READY_TIMEOUT_S)
    except queue.Empty:
        raise SystemExit(f"the scoring server did not start within {READY_TIMEOUT_S} s") from None
    if line is None:
        raise SystemExit(f"the sidecar exited with {process.wait()} before the server started (see its log above)")
    return json.loads(line)["port"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--serve", action="store_true", help="keep serving on 127.0.0.1:5001 until Ctrl-C")
    args = parser.parse_args()
    with EmulatorProcess() as emulator:
        env = {
            "PATH": os.environ.get("PATH", os.defpath),
            "LANG": "C.UTF-8",
            **emulator.env("imds"),
            **read_env_file(HERE / "demo.env"),
            "SIDECAR_LOG_FORMAT": "console",
        }
        print("== sidecar check: what would be injected (never the values)", flush=True)
        subprocess.run([sys.executable, "-m", "sidecar", "check"], env=env, check=False)
        print("\n== sidecar exec -- scoring_server.py", flush=True)
        port = "5001" if args.serve else "0"
        server = subprocess.Popen(
            [sys.executable, "-m", "sidecar", "exec", "--", sys.executable, str(HERE / "scoring_server.py"), port],
            env=env,
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            bound = wait_listening(server)
            request = urllib.request.Request(f"http://127.0.0.1:{bound}/score", data=b"{}", method="POST")
            with urllib.request.urlopen(request, timeout=10) as response:
                answer = json.loads(response.read())
            print(f"\n== POST /score\n{json.dumps(answer, indent=2)}")
            print(f"scoring server PID {answer['pid']} == sidecar PID {server.pid}: {answer['pid'] == server.pid}")
            if args.serve:
                print(f"\nServing: curl -X POST http://127.0.0.1:{bound}/score -d '{{}}'   (Ctrl-C to stop)")
                server.wait()
        except KeyboardInterrupt:
            pass
        finally:
            if server.poll() is None:
                server.send_signal(signal.SIGTERM)
                server.wait(timeout=10)
        print(f"scoring server exited with {server.returncode}")
        return 0 if not answer["missing"] else 1


if __name__ == "__main__":
    sys.exit(main())
