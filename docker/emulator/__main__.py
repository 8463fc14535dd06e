"""Entry point: `python docker/emulator [flags]` (see README.md)."""

import sys

from azure_emulator.cli import main

sys.exit(main())
