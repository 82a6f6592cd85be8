"""What the package carries, and where what is shared between workspaces lives.

The files the workbench needs at run time (the demo datasets, the demo tokenizer's corpus, the page's CSS) are
package data in `core/assets/` (the repository's top-level `assets/` is a link to it), read through
`importlib.resources`: a source checkout, an editable install and an installed wheel find them the same way,
from wherever the command is started.
"""

from __future__ import annotations

import atexit
import os
from contextlib import ExitStack
from functools import cache
from importlib.resources import as_file, files
from importlib.resources.abc import Traversable
from pathlib import Path

_extracted = ExitStack()  # files copied out of a zipped install (none for a plain install): removed at exit
atexit.register(_extracted.close)


def asset(*parts: str) -> Traversable:
    """A file or folder of the package data, e.g. `asset("datasets", "identity.json")`."""
    return files("core").joinpath("assets", *parts)


@cache
def asset_file(*parts: str) -> Path:
    """A package data file as a real path (for readers that want one); the file itself for a plain install."""
    return _extracted.enter_context(as_file(asset(*parts)))


def home_dir() -> Path:
    """What is shared between workspaces (the demo model, converted checkpoints): $GLM_WORKBENCH_HOME, else
    ~/.cache/glm-workbench."""
    return Path(os.environ.get("GLM_WORKBENCH_HOME") or Path.home() / ".cache" / "glm-workbench").expanduser()
