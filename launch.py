"""The repository's entry for the web UI: `python launch.py [options]` is `glm-workbench webui [options]`.

Options: --host (default 127.0.0.1), --port (7860), --workspace (./workspace), --lang zh|en (where / leads; both
/zh/ and /en/ are served), --auth USER:PASSWORD, --share; `python launch.py --help` says more."""

from __future__ import annotations

import sys

from core.cli import main

if __name__ == "__main__":
    sys.exit(main(["webui", *sys.argv[1:]]))
