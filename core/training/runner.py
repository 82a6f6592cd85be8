"""One training run, start to finish, in the calling thread: config -> data -> model -> Trainer -> run folder.

The background job (core.training.job), the multi-process worker and the CLI all run a `TrainingSession`;
everything a UI needs to show is written into the run folder as it happens.
"""

from __future__ import annotations

import errno
import logging
import os
import threading
import time
from pathlib import Path

from core.config import RunConfig, save_yaml
from core.data.dataset import tokenize_dataset
from core.data.template import resolve_template
from core.methods import get_method
from core.methods.base import count_parameters
from core.models.loader import load_model, load_tokenizer, pick_device, pick_dtype, resolve_model_path
from core.runs import (CONFIG_FILE, LOG_FILE, STOP_FILE, atomic_dir, is_main_process, read_metrics, update_status,
                       write_metrics)
from core.training.callbacks import LossProgressBar, RunFolderCallback, StopCallback
from core.training.checkpointing import CheckpointingTrainer

log = logging.getLogger("glm_workbench")


def prepare_run_folder(config: RunConfig, run_dir: Path) -> None:
    """Write config.yaml and a 'queued' status before any heavy work, so the run is visible at once."""
    run_dir.mkdir(parents=True, exist_ok=True)
    save_yaml(config, run_dir / CONFIG_FILE)
    update_status(run_dir, state="queued", created=time.time(), method=config.finetuning_type,
                  model=config.model_name_or_path, dataset=config.dataset, step=0, max_steps=0)


def _log_to_file(run_dir: Path) -> logging.Handler:
    if not is_main_process():
        return logging.NullHandler()
    handler = logging.FileHandler(run_dir / LOG_FILE, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S"))
    for name in ("glm_workbench", "transformers"):
        logging.getLogger(name).addHandler(handler)
    logging.getLogger("glm_workbench").setLevel(logging.INFO)
    return handler


def _training_arguments(config: RunConfig, run_dir: Path, has_eval: bool, show_progress: bool):
    from transformers import TrainingArguments

    device = pick_device()
    dtype = pick_dtype(config.precision, device)
    import torch

    return TrainingArguments(
        output_dir=str(run_dir / "checkpoints"),
        per_device_train_batch_size=config.per_device_train_batch_size,
        per_device_eval_batch_size=config.per_device_train_batch_size,
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        learning_rate=config.learning_rate,
        num_train_epochs=config.num_train_epochs,
        max_steps=config.max_steps,
        lr_scheduler_type=config.lr_scheduler_type,
        warmup_steps=config.warmup_steps or config.warmup_ratio,
        weight_decay=config.weight_decay,
        max_grad_norm=config.max_grad_norm,
        logging_steps=config.logging_steps,
        logging_first_step=True,
        save_strategy="steps" if config.save_steps else "no",
        save_steps=config.save_steps or 500,
        save_total_limit=config.save_total_limit,
        eval_strategy=("steps" if config.eval_steps else "epoch") if has_eval else "no",
        eval_steps=config.eval_steps or None,
        metric_for_best_model="eval_loss" if has_eval else None,
        greater_is_better=False if has_eval else None,
        neftune_noise_alpha=config.neftune_noise_alpha or None,
        seed=config.seed,
        data_seed=config.seed,
        bf16=dtype == torch.bfloat16,
        fp16=dtype == torch.float16,
        use_cpu=device == "cpu",
        report_to="none",
        disable_tqdm=not show_progress,
        remove_unused_columns=False,
        dataloader_num_workers=0,
        include_num_input_tokens_seen="non_padding",
        ddp_backend="gloo" if device == "cpu" and int(os.environ.get("WORLD_SIZE", "1")) > 1 else None,
        activation_checkpointing=config.gradient_checkpointing,
        activation_checkpointing_kwargs={"use_reentrant": False} if config.gradient_checkpointing else None,
        ddp_find_unused_parameters=False,
        use_cache=False,  # no KV cache while training: also what lets packed rows get their block-diagonal mask
    )


class TrainingSession:
    """One run's lifecycle. After `run()`, `model` and `tokenizer` hold the trained model (tests compare it
    with what a fresh process loads back from the run folder)."""

    def __init__(self, config: RunConfig, run_dir: str | Path, stop_event: threading.Event | None = None,
                 show_progress: bool = False, resume: bool = False, callbacks: list | None = None):
        self.config = config
        self.run_dir = Path(run_dir)
        self.stop_event = stop_event or threading.Event()
        self.show_progress = show_progress
        self.resume = resume
        self.extra_callbacks = list(callbacks or [])
        self.model = None
        self.teacher = None  # distillation only: the model the student learns from
        self.tokenizer = None

    def run(self) -> dict:
        """Train, writing everything into the run folder. Returns the final status; never raises for training
        errors: they end as state 'failed' with a plain message."""
        if not (self.run_dir / CONFIG_FILE).is_file():
            prepare_run_folder(self.config, self.run_dir)
        handler = _log_to_file(self.run_dir)
        try:
            return self._train()
        except Exception as exc:  # noqa: BLE001 - every failure must end as a readable status, not a dead thread
            log.exception("training failed")
            return update_status(self.run_dir, state="failed", error=explain_error(exc), finished=time.time())
        finally:
            for name in ("glm_workbench", "transformers"):
                logging.getLogger(name).removeHandler(handler)
            handler.close()

    def _checkpoint_to_resume(self) -> str | None:
        """On resume: the newest complete checkpoint; metrics logged after it are dropped (they will be
        logged again), so the chart shows one continuous run."""
        if not self.resume:
            return None
        from transformers.trainer_utils import get_last_checkpoint

        folder = self.run_dir / "checkpoints"
        checkpoint = get_last_checkpoint(str(folder)) if folder.is_dir() else None
        if checkpoint is None:
            raise ValueError(f"{self.run_dir.name}: no checkpoint to resume from (abort saves one; or set save_steps)")
        step = int(Path(checkpoint).name.split("-")[-1])
        keep = [m for m in read_metrics(self.run_dir) if m.get("step", 0) <= step]
        write_metrics(self.run_dir, keep)
        log.info("resuming %s from %s", self.run_dir.name, Path(checkpoint).name)
        return checkpoint

    def _load_distillation(self):
        """Teacher, student and data for distillation (see core/methods/distill.py)."""
        from core.data.dataset import load_conversations, tokenize_conversations
        from core.methods import distill

        config, device = self.config, pick_device()
        teacher, teacher_tokenizer, _ = distill.load_teacher(config, device)
        student, student_tokenizer = distill.build_student(teacher, config, device)
        shared = distill.shares_vocabulary(teacher_tokenizer, student_tokenizer)
        mode = config.distill_mode if config.distill_mode != "auto" else ("logits" if shared else "sequence")
        if mode == "logits" and not shared:
            raise ValueError("distill_mode: logit distillation needs teacher and student to share a tokenizer; "
                             "use sequence (the teacher writes the answers)")
        tokenizer = student_tokenizer or teacher_tokenizer
        tokenizer.padding_side = "right"
        conversations = load_conversations(config.dataset, config.dataset_format, config.columns).conversations
        if config.max_samples:
            conversations = conversations[:config.max_samples]
        if mode == "sequence":
            conversations = distill.teacher_answers(teacher, teacher_tokenizer,
                                                    resolve_template(config.template, teacher_tokenizer), conversations)
            log.info("distill: the teacher wrote %d answers", len(conversations))
        template = resolve_template(config.template, tokenizer)
        data = tokenize_conversations(conversations, tokenizer, template, config.cutoff_len, config.val_size,
                                      config.seed, config.dataset)
        self.teacher = teacher if mode == "logits" else None
        trainable, total = count_parameters(student)
        log.info("distill (%s): student %s parameters, teacher %s", mode, f"{total:,}", f"{teacher.num_parameters():,}")
        update_status(self.run_dir, template=template, trainable_params=trainable, total_params=total,
                      train_samples=len(data.train), eval_samples=len(data.eval), distill_mode=mode)
        return tokenizer, data, student

    def _load(self, method):
        """Tokenizer, data and the method-prepared model."""
        config, run_dir = self.config, self.run_dir
        if method.name == "distill":
            return self._load_distillation()
        model_path = resolve_model_path(config.model_name_or_path, config.trust_remote_code)
        log.info("loading model %s", model_path)
        tokenizer = load_tokenizer(model_path, config.trust_remote_code)
        tokenizer.padding_side = "right"  # positions must start at 0 for every training sample
        template = resolve_template(config.template, tokenizer)
        data = tokenize_dataset(config.dataset, tokenizer, template, config.cutoff_len, config.dataset_format,
                                config.val_size, config.max_samples, config.seed, config.columns)
        log.info("data: format %s, template %s, %d train / %d eval samples, %d truncated at cutoff_len=%d",
                 data.format, template, len(data.train), len(data.eval), data.truncated, config.cutoff_len)
        for problem in data.problems[:20]:
            log.warning("skipped %s", problem)
        if config.eval_dataset:
            data.eval = tokenize_dataset(config.eval_dataset, tokenizer, template, config.cutoff_len,
                                         config.dataset_format, columns=config.columns).train
            log.info("validation: %d samples from %s", len(data.eval), config.eval_dataset)
        device = pick_device()
        # Weights that train are kept in fp32 (mixed precision autocasts); frozen bases load in the GPU's dtype.
        trains_base = method.output_dir == "model"
        dtype = pick_dtype("fp32" if trains_base else config.precision, device)
        model = load_model(model_path, dtype=dtype, device=device, trust_remote_code=config.trust_remote_code,
                           **method.model_kwargs(config))
        model = method.prepare(model, config)
        trainable, total = count_parameters(model)
        log.info("method %s: %s of %s parameters train (%.2f%%)", method.name, f"{trainable:,}", f"{total:,}",
                 100 * trainable / max(total, 1))
        update_status(run_dir, template=template, trainable_params=trainable, total_params=total,
                      train_samples=len(data.train),
                      eval_samples=len(data.eval), data_format=data.format, data_problems=len(data.problems))
        return tokenizer, data, model

    def _train(self) -> dict:
        from transformers import EarlyStoppingCallback, set_seed
        from transformers.trainer_callback import PrinterCallback, ProgressCallback

        config, run_dir = self.config.validate(), self.run_dir
        checkpoint = self._checkpoint_to_resume()
        if is_main_process():
            (run_dir / STOP_FILE).unlink(missing_ok=True)  # an old abort request must not stop this start
        update_status(run_dir, state="running", started=time.time(), error=None)
        set_seed(config.seed)
        method = get_method(config.finetuning_type)
        tokenizer, data, model = self._load(method)
        stopper = StopCallback(self.stop_event, run_dir)
        callbacks = [RunFolderCallback(run_dir), *self.extra_callbacks, stopper]
        if config.early_stopping_patience:
            callbacks.append(EarlyStoppingCallback(config.early_stopping_patience, config.early_stopping_threshold))
        trainer_class, extra = CheckpointingTrainer, {}
        if self.teacher is not None:
            from core.methods.distill import DistillationTrainer

            trainer_class = DistillationTrainer
            extra = dict(teacher=self.teacher, alpha=config.distill_alpha, temperature=config.distill_temperature)
        trainer = trainer_class(
            **extra,
            model=model,
            args=_training_arguments(config, run_dir, bool(data.eval), self.show_progress),
            train_dataset=data.train,
            eval_dataset=data.eval or None,
            data_collator=make_collator(tokenizer, config.packing),
            processing_class=tokenizer,
            callbacks=callbacks,
        )
        # Metrics go to metrics.jsonl; the terminal gets a progress bar with the loss, not a dict per step.
        trainer.remove_callback(PrinterCallback)
        trainer.remove_callback(ProgressCallback)
        if self.show_progress:
            trainer.add_callback(LossProgressBar())
        trainer.train(resume_from_checkpoint=checkpoint)
        aborted = stopper.stopped
        if is_main_process():
            with atomic_dir(run_dir / method.output_dir) as folder:
                method.save(trainer.model, tokenizer, folder)
        self.model, self.tokenizer = trainer.model, tokenizer
        losses = [m["loss"] for m in read_metrics(run_dir) if m.get("loss") is not None]
        final = dict(state="aborted" if aborted else "finished", finished=time.time(),
                     final_loss=losses[-1] if losses else None, output=method.output_dir,
                     step=trainer.state.global_step)
        log.info("run %s: %s after %d steps", run_dir.name, final["state"], trainer.state.global_step)
        return update_status(run_dir, **final)



def make_collator(tokenizer, packing: bool):
    """Dynamic padding to the batch's longest sample; or, with packing, transformers' padding-free flattening:
    the batch's samples concatenated in one row, position ids restarting at 0 for each, and a -100 label at
    each boundary. From those position ids transformers builds a block-diagonal causal mask, so no sample
    attends to another."""
    from transformers import DataCollatorForSeq2Seq, DataCollatorWithFlattening

    if packing:
        flatten = DataCollatorWithFlattening(return_position_ids=True, separator_id=-100)
        return lambda samples: flatten([{"input_ids": s["input_ids"], "labels": s["labels"]} for s in samples])
    return DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=-100)


def explain_error(exc: BaseException) -> str:
    """A plain-words message: out-of-memory and a full disk get concrete suggestions."""
    text = str(exc).strip() or type(exc).__name__
    first_line = text.splitlines()[0]
    lowered = text.lower()
    if isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError" or "out of memory" in lowered \
            or "can't allocate memory" in lowered:
        return ("Out of memory. Try: a smaller per_device_train_batch_size (raise gradient_accumulation_steps "
                "to keep the effective batch), a smaller cutoff_len, gradient checkpointing, LoRA or QLoRA "
                f"instead of full fine-tuning. Details: {first_line}")
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC or "no space left on device" in lowered \
            or "failed writing file" in lowered or "file write failed" in lowered:  # torch.save's own words
        where = f" while writing {exc.filename}" if isinstance(exc, OSError) and exc.filename else ""
        return (f"Disk full{where}. Free space on the disk that holds the workspace, or keep fewer checkpoints "
                "(save_total_limit) or save less often (save_steps); the last complete checkpoint is intact, so "
                f"Resume continues from it. Details: {first_line}")
    return text
