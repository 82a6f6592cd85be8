"""Checkpoints that are either complete or absent.

transformers' Trainer writes `checkpoint-N/` in place, file by file: a process killed mid-save (SIGKILL, a
full disk) leaves a folder that looks like the newest checkpoint but cannot be loaded. This Trainer writes each
checkpoint into `checkpoints/.partial/` and renames it into place only when every file is written, so
`get_last_checkpoint` only ever sees complete ones.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from transformers import Trainer
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

STAGING = ".partial"


class CheckpointingTrainer(Trainer):
    _staging_root: str | None = None

    def _get_output_dir(self, trial) -> str:
        return self._staging_root or super()._get_output_dir(trial)

    def _save_checkpoint(self, model, trial) -> None:
        final_root = Path(super()._get_output_dir(trial))
        staging_root = final_root / STAGING
        shutil.rmtree(staging_root, ignore_errors=True)
        self._staging_root = str(staging_root)
        try:
            super()._save_checkpoint(model, trial)
        except BaseException:
            shutil.rmtree(staging_root, ignore_errors=True)  # a half-written copy only takes space (disk full)
            raise
        finally:
            self._staging_root = None
        name = f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
        if self.args.should_save:
            target = final_root / name
            if target.exists():
                shutil.rmtree(target)
            os.replace(staging_root / name, target)
            shutil.rmtree(staging_root, ignore_errors=True)
            self._rotate(final_root)

    def _rotate(self, root: Path) -> None:
        """Keep the newest save_total_limit checkpoints."""
        limit = self.args.save_total_limit
        if not limit:
            return
        checkpoints = sorted((p for p in root.glob(f"{PREFIX_CHECKPOINT_DIR}-*") if p.is_dir()),
                             key=lambda p: int(p.name.rsplit("-", 1)[-1]))
        for old in checkpoints[:-limit]:
            shutil.rmtree(old, ignore_errors=True)
