"""Checkpoints that are either complete or absent.

transformers' Trainer writes `checkpoint-N/` in place, file by file: a process killed mid-save (SIGKILL, a
full disk) leaves a folder that looks like the newest checkpoint but cannot be loaded. This Trainer writes each
checkpoint into a fresh `checkpoints/.partial-*/` folder and renames it into place only when every file is
written, so `get_last_checkpoint` only ever sees complete ones. A save that fails (a full disk) removes its
staging folder at once; one cut short by a kill is removed when the run resumes.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from transformers import Trainer
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

STAGING_PREFIX = ".partial"


def remove_partial_checkpoints(root: Path) -> None:
    """Staging folders of saves that never finished (the process was killed): never loadable, only in the way."""
    if root.is_dir():
        for staging in root.glob(f"{STAGING_PREFIX}*"):
            shutil.rmtree(staging, ignore_errors=True)


def is_final(checkpoint: str | Path) -> bool:
    """Whether a checkpoint was taken at the run's last step (its trainer_state says so)."""
    import json

    try:
        state = json.loads((Path(checkpoint) / "trainer_state.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return 0 < state.get("max_steps", 0) <= state.get("global_step", 0)


class CheckpointingTrainer(Trainer):
    _staging_root: str | None = None

    def restore_final(self, checkpoint: str) -> None:
        """Load a checkpoint of the last step instead of training: every step is done, only the run's own
        output (adapter or model) is missing. Resuming through train() would run one step past the end."""
        from transformers.trainer_callback import TrainerState

        self._load_from_checkpoint(checkpoint)
        self.state = TrainerState.load_from_json(str(Path(checkpoint) / "trainer_state.json"))

    def create_accelerator_and_postprocess(self) -> None:
        """FSDP on CPU processes (gloo). PyTorch's FSDP2 shards on a CPU mesh over gloo, but accelerate's state only
        turns an FSDP plugin into DistributedType.FSDP on GPU-like devices (MULTI_GPU, NPU, XPU, ...): on
        MULTI_CPU it drops the plugin without a word and the run would be plain DDP. Here the plugin transformers
        built from `fsdp_config` is put back, so accelerate's own FSDP2 path (fully_shard per decoder layer,
        full state dicts on save) runs on CPU too. On GPUs this changes nothing."""
        super().create_accelerator_and_postprocess()
        if self.args.fsdp_plugin_args is None or self.is_fsdp_enabled:
            return
        from accelerate.state import PartialState
        from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin

        state = self.accelerator.state
        if state.distributed_type == DistributedType.MULTI_CPU:
            state.fsdp_plugin = FullyShardedDataParallelPlugin(**self.args.fsdp_plugin_args)
            state.distributed_type = DistributedType.FSDP
            PartialState._shared_state["distributed_type"] = DistributedType.FSDP  # noqa: SLF001 - as accelerate does
            self.is_fsdp_enabled = True

    def _get_output_dir(self, trial) -> str:
        return self._staging_root or super()._get_output_dir(trial)

    def _save_checkpoint(self, model, trial) -> None:
        final_root = Path(super()._get_output_dir(trial))
        final_root.mkdir(parents=True, exist_ok=True)
        staging_root = Path(tempfile.mkdtemp(prefix=f"{STAGING_PREFIX}-", dir=final_root))
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
            if target.exists():  # the same step saved again after a resume: this run's own, older copy
                shutil.rmtree(target)
            os.replace(staging_root / name, target)
            self._rotate(final_root)
        shutil.rmtree(staging_root, ignore_errors=True)

    def _rotate(self, root: Path) -> None:
        """Keep the newest save_total_limit checkpoints."""
        limit = self.args.save_total_limit
        if not limit:
            return
        checkpoints = sorted(
            (p for p in root.glob(f"{PREFIX_CHECKPOINT_DIR}-*") if p.is_dir()),
            key=lambda p: int(p.name.rsplit("-", 1)[-1]),
        )
        for old in checkpoints[:-limit]:
            shutil.rmtree(old, ignore_errors=True)
