"""``python -m bbox_lfm.serve [MODEL] [--flags]``: the same as ``bbox-lfm serve``."""

import sys

from . import cli_main

raise SystemExit(cli_main(sys.argv[1:]))
