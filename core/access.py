"""Which folders a shared workbench may read and write (`--allowed-dirs`).

A workbench reachable by others (`--auth`, a `--host` other than this machine, `--share`) takes paths typed
into its page: a dataset, a model, an adapter, a merge target, an output folder. Without a limit, a logged-in
user could read any .json/.jsonl/.csv/.parquet the server process can read, or write a merge anywhere. Such a
workbench only uses paths inside its allowed folders: the workspace, the workbench home (the demo model,
conversions, the data cache), the model folders named at start (`GLM_WORKBENCH_MODEL_DIRS`), and the folders
given with `--allowed-dirs`. Names that are not paths (the demo datasets, `demo`, a hub id) are not limited.
A workbench on this machine only, without a login, is not limited unless `--allowed-dirs` is given.
"""

from __future__ import annotations

import os
from pathlib import Path

from core.data.readers import DEMO_DATASETS
from core.errors import WorkbenchError
from core.models.demo import DEMOS
from core.resources import home_dir


class AccessError(WorkbenchError):
    """A path outside the folders this workbench may use."""


class AllowedDirs:
    """The folders paths must be inside; `roots=None`: no limit."""

    def __init__(self, roots: list[str | Path] | None):
        self.roots = None if roots is None else _unique([Path(r).expanduser().resolve() for r in roots])

    @property
    def limited(self) -> bool:
        return self.roots is not None

    def allows(self, path: str | Path) -> bool:
        if self.roots is None:
            return True
        resolved = Path(path).expanduser().resolve()
        return any(resolved == root or resolved.is_relative_to(root) for root in self.roots)

    def check(self, path: str | Path, key: str) -> None:
        """Refuse `path` (typed as `key`: dataset, model_name_or_path, ...) if it is outside every root."""
        if not self.allows(path):
            raise AccessError(
                "access.not_allowed", key=key, path=str(path), allowed=", ".join(str(r) for r in self.roots or [])
            )

    def check_dataset(self, value: str, key: str = "dataset") -> None:
        if value and value not in DEMO_DATASETS:
            self.check(value, key)

    def check_model(self, value: str, key: str = "model_name_or_path") -> None:
        """A model reference: the demo models (demo, demo-vision, ...) and hub ids (owner/name, not a folder here)
        pass; any path is checked."""
        value = (value or "").strip()
        if not value or value in DEMOS:
            return
        path = Path(value).expanduser()
        is_hub_id = value.count("/") == 1 and not value.startswith((".", "/", "~")) and not path.exists()
        if not is_hub_id:
            self.check(value, key)

    def check_config(self, config) -> None:
        """Every path a run's settings name."""
        self.check_dataset(config.dataset)
        self.check_dataset(config.eval_dataset, "eval_dataset")
        self.check_model(config.model_name_or_path)
        for key in ("adapter_name_or_path", "teacher_adapter", "student_model"):
            value = str(getattr(config, key, "") or "")
            if value and value != "auto":
                self.check_model(value, key)
        if config.output_dir:
            self.check(config.output_dir, "output_dir")


def default_roots(workspace: str | Path, extra: list[str | Path] = ()) -> list[Path]:
    """The folders a limited workbench may use: the workspace, the workbench home, GLM_WORKBENCH_MODEL_DIRS and
    `extra` (--allowed-dirs)."""
    model_dirs = [p for p in os.environ.get("GLM_WORKBENCH_MODEL_DIRS", "").split(os.pathsep) if p]
    return [Path(workspace), home_dir(), *map(Path, model_dirs), *map(Path, extra)]


def _unique(paths: list[Path]) -> list[Path]:
    seen: list[Path] = []
    for path in paths:
        if path not in seen:
            seen.append(path)
    return seen
