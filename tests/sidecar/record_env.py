"""Stand-in for CMD: records its PID and environment into the file named by argv[1], prints nothing.

The file stays in the test's tmp_path; values never reach captured output. `raw` keeps each
value's exact bytes (hex), to show variables pass through byte for byte.
"""

import json
import os
import sys

with open(sys.argv[1], "w", encoding="utf-8") as out:
    json.dump(
        {
            "pid": os.getpid(),
            "argv": sys.argv[2:],
            "env": dict(os.environ),
            "raw": {key.decode("latin-1"): value.hex() for key, value in os.environb.items()},
        },
        out,
    )
