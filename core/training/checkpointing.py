"""Checkpoints that are either complete or absent.

transformers' Trainer writes `checkpoint-N/` in place, file by file: a process killed mid-save (SIGKILL, a
full disk) leaves a folder that looks like the newest checkpoint but cannot be loaded. This Trainer writes each
checkpoint into a fresh `checkpoints/.partial-*/` folder and renames it into place only when every file is
written, so `get_last_checkpoint` only ever sees complete ones. A save that fails (a full disk) removes its
staging folder at once; one cut short by a kill is removed when the run resumes.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path

from transformers import Trainer
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from core.files import STAGING_TAG
from core.i18n import Message, message

log = logging.getLogger("glm_workbench")

STAGING_PREFIX = ".partial"  # + "-" + core.files.STAGING_TAG + random: see core/files.py's staging names
DAMAGED_PREFIX = "damaged-"  # a checkpoint found damaged on resume, moved out of the way (and out of rotation)


def remove_partial_checkpoints(root: Path) -> None:
    """Staging folders of saves that never finished (the process was killed): never loadable, only in the way."""
    if root.is_dir():
        for staging in root.glob(f"{STAGING_PREFIX}-{STAGING_TAG}*"):
            shutil.rmtree(staging, ignore_errors=True)


def damaged_file(checkpoint: Path) -> tuple[str, Message] | None:
    """(file name, what is wrong) for the first file of `checkpoint` that cannot be loaded, or None when every
    file is whole (core.files.damaged_file: headers and small JSON files only). trainer_state.json must be
    there: without it transformers cannot resume at all."""
    from core.files import damaged_file as damaged

    return damaged(checkpoint, required=("trainer_state.json",))


def intact_checkpoint(run_dir: Path, run_name: str, say=None, main: bool = True) -> Path | None:
    """The newest checkpoint whose files are whole. The main process moves each damaged newer one aside to
    `checkpoints/damaged-checkpoint-N` (out of the way of rotation, kept for a look), and logs and `say`s a
    sentence naming it, the damaged file and the checkpoint used instead; other ranks reach the same verdict
    from the same files without touching them."""
    from core.runs import CHECKPOINTS_DIR

    folder = Path(run_dir) / CHECKPOINTS_DIR
    found = sorted(
        (p for p in folder.glob(f"{PREFIX_CHECKPOINT_DIR}-*") if p.is_dir() and p.name.split("-")[-1].isdigit()),
        key=lambda p: int(p.name.split("-")[-1]),
        reverse=True,
    )
    for index, checkpoint in enumerate(found):
        damage = damaged_file(checkpoint)
        if damage is None:
            return checkpoint
        if not main:
            continue
        name, problem = damage
        aside = checkpoint.parent / f"{DAMAGED_PREFIX}{checkpoint.name}"
        if aside.exists():
            shutil.rmtree(aside, ignore_errors=True)  # an older copy this run moved aside before
        os.replace(checkpoint, aside)
        fallback = next((p for p in found[index + 1 :] if damaged_file(p) is None), None)
        note = message(
            "run.checkpoint_damaged",
            run=run_name,
            checkpoint=checkpoint.name,
            file=name,
            problem=problem,
            fallback=fallback.name if fallback is not None else message("run.checkpoint_none"),
            aside=str(Path(CHECKPOINTS_DIR) / aside.name),
        )
        log.warning("%s", note)
        if say is not None:
            say(note)
    return None


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
        staging_root = Path(tempfile.mkdtemp(prefix=f"{STAGING_PREFIX}-{STAGING_TAG}", dir=final_root))
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
