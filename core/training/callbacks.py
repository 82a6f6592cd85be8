"""Trainer callbacks: write progress and metrics into the run folder, and stop when asked."""

from __future__ import annotations

import logging
import math
import resource
import threading
import time
from pathlib import Path

from transformers import TrainerCallback
from transformers.trainer_callback import ProgressCallback

from core.runs import STOP_FILE, append_metrics, update_status
from core.stages import STAGES

log = logging.getLogger("glm_workbench")
LOGGED_KEYS = ("loss", "eval_loss", "learning_rate", "grad_norm", "router_aux_loss")
# The preference stages' figures (the trainers' names -> ours in metrics.jsonl, each stage's `metrics`,
# core/stages/base.py says what they mean); on evaluation both carry an "eval_" prefix.
PREFERENCE_KEYS = {theirs: ours for stage in STAGES.values() for theirs, ours in stage.metrics}


def peak_memory_mb() -> float:
    """Peak GPU memory if training on a GPU, else the process's peak resident memory."""
    import torch

    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


class RunFolderCallback(TrainerCallback):
    """Appends one JSON line per log to metrics.jsonl and keeps status.json's progress current."""

    def __init__(self, run_dir: Path):
        self.run_dir = run_dir
        self.start = time.time()
        self.start_step = 0  # a resumed run starts at its checkpoint's step
        self.earlier_elapsed = 0.0  # time spent before the resume
        self._last_tokens = 0
        self._last_time = self.start

    def _progress(self, state) -> dict:
        spent = time.time() - self.start
        done = max(state.global_step, 0)
        steps_now = done - self.start_step
        eta = spent / steps_now * (state.max_steps - done) if steps_now > 0 else None
        return {
            "step": done,
            "max_steps": state.max_steps,
            "epoch": state.epoch,
            "elapsed": self.earlier_elapsed + spent,
            "eta": eta,
        }

    def on_train_begin(self, args, state, control, **kwargs):
        from core.runs import read_status

        self.start = self._last_time = time.time()
        self.start_step = state.global_step
        self.earlier_elapsed = float(read_status(self.run_dir).get("elapsed") or 0) if state.global_step else 0.0
        self._last_tokens = state.num_input_tokens_seen or 0
        update_status(self.run_dir, state="running", **self._progress(state))

    def on_step_end(self, args, state, control, **kwargs):
        update_status(self.run_dir, **self._progress(state))

    def on_log(self, args, state, control, logs=None, **kwargs):
        logs = logs or {}
        values = {key: logs[key] for key in LOGGED_KEYS if key in logs}
        if not values:
            return  # the end-of-training summary; the runner records it in status.json
        for prefix in ("", "eval_"):
            values.update(
                {
                    prefix + ours: logs[prefix + theirs]
                    for theirs, ours in PREFERENCE_KEYS.items()
                    if prefix + theirs in logs
                }
            )
        now = time.time()
        tokens = state.num_input_tokens_seen or 0
        if "eval_loss" in values:
            values["perplexity"] = math.exp(min(values["eval_loss"], 50))
        record = {
            "step": state.global_step,
            "epoch": round(state.epoch or 0, 4),
            **values,
            "tokens_per_second": (tokens - self._last_tokens) / max(now - self._last_time, 1e-9)
            if "loss" in values
            else None,
            "memory_mb": round(peak_memory_mb(), 1),
            "time": now,
            **self._progress(state),
        }
        if "loss" in values:
            self._last_tokens, self._last_time = tokens, now
        append_metrics(self.run_dir, record)
        shown = " ".join(f"{k}={v:.4g}" for k, v in values.items() if isinstance(v, (int, float)))
        log.info("step %d/%d %s", state.global_step, state.max_steps, shown)


class StopCallback(TrainerCallback):
    """Stops training at the next step boundary once `stop_event` is set (the Abort button) or the run folder
    holds a STOP file (how a multi-process run is asked to stop). In a multi-process run all ranks agree on
    the decision (an all-reduce), so none is left waiting in a collective."""

    def __init__(self, stop_event: threading.Event, run_dir: Path | None = None):
        self.stop_event = stop_event
        self.stop_file = run_dir / STOP_FILE if run_dir is not None else None
        self.stopped = False  # whether this run ended because it was asked to

    def _requested(self) -> bool:
        requested = self.stop_event.is_set() or bool(self.stop_file and self.stop_file.exists())
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            import torch

            flag = torch.tensor([int(requested)])
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
            requested = bool(flag.item())
        return requested

    def _check(self, control):
        if self._requested():
            self.stopped = True
            control.should_training_stop = True
            control.should_epoch_stop = True
            control.should_save = True  # a checkpoint to resume from
        return control

    def on_step_end(self, args, state, control, **kwargs):
        return self._check(control)

    def on_substep_end(self, args, state, control, **kwargs):
        return self._check(control)


class LossProgressBar(ProgressCallback):
    """The terminal's tqdm bar, showing the latest loss instead of printing every log dict."""

    def on_log(self, args, state, control, logs=None, **kwargs):
        if self.training_bar is not None and logs and "loss" in logs:
            self.training_bar.set_postfix(loss=f"{logs['loss']:.4f}")
