"""`python -m webui [options]`: the same as `glm-workbench webui [options]`."""

from __future__ import annotations

import sys

from core.cli import main

if __name__ == "__main__":
    sys.exit(main(["webui", *sys.argv[1:]]))
