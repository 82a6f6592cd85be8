"""One training run, start to finish, in the calling thread: config -> data -> model -> Trainer -> run folder.

The background job (core.training.job), the multi-process worker and the CLI all run a `TrainingSession`;
everything a UI needs to show is written into the run folder as it happens.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

from core.config import RunConfig
from core.data.dataset import TokenizedData, tokenize_dataset
from core.data.formats import conversation_row
from core.data.pairs import tokenize_preferences
from core.data.readers import resolve_dataset
from core.data.template import IGNORE_INDEX, resolve_template
from core.data.vision_dataset import tokenize_vision_dataset
from core.errors import ConfigError, WorkbenchError, config_error
from core.files import is_disk_full, staged_dir, write_text_atomic
from core.i18n import Message, message
from core.methods import get_method
from core.methods.base import count_parameters, save_model_and_tokenizer
from core.models import vision
from core.models.loader import (
    load_model,
    load_tokenizer,
    locate_model,
    pick_device,
    pick_dtype,
    prepare_model,
)
from core.ownership import RunLock, launched_by_owner
from core.runs import (
    CHECKPOINTS_DIR,
    HELD_OUT_FILE,
    LOG_FILE,
    SKIPPED_ROWS_FILE,
    STOP_FILE,
    is_main_process,
    keep_metrics_until,
    read_metrics,
    reclaim_run,
    update_status,
)
from core.stages import get_stage, is_preference
from core.training.callbacks import LossProgressBar, RunFolderCallback, StopCallback
from core.training.checkpointing import (
    CheckpointingTrainer,
    intact_checkpoint,
    is_final,
    remove_partial_checkpoints,
)
from core.training.distributed import fsdp_arguments
from core.training.lifecycle import claim_for_resume, claim_prepared, create_run
from core.training.preference import drop_reference, preference_trainer, trainer_arguments
from core.training.preflight import check_model_fits_config, check_settings

log = logging.getLogger("glm_workbench")
SKIPPED_SHOWN = 3  # row problems named in the status line and the terminal; all of them go to skipped_rows.txt


class RunLogHandler(logging.FileHandler):
    """log.txt. A write that fails (a full disk) is dropped quietly instead of printing a traceback: the next
    status or metrics write meets the same full disk and ends the run with a plain message."""

    def handleError(self, record: logging.LogRecord) -> None:  # noqa: N802 - logging's name
        pass


def _log_to_file(run_dir: Path) -> logging.Handler:
    if not is_main_process():
        return logging.NullHandler()
    handler = RunLogHandler(run_dir / LOG_FILE, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S"))
    for name in ("glm_workbench", "transformers"):
        logging.getLogger(name).addHandler(handler)
    logging.getLogger("glm_workbench").setLevel(logging.INFO)
    return handler


def _training_arguments(
    config: RunConfig, run_dir: Path, has_eval: bool, show_progress: bool, arguments_class=None, **extra
):
    """The Trainer's arguments from the config; a preference stage passes its TRL config class and settings."""
    from transformers import TrainingArguments

    device = pick_device()
    dtype = pick_dtype(config.precision, device)
    import torch

    return (arguments_class or TrainingArguments)(
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
        # TensorBoard is wired by the session itself (into the run folder); the others are transformers'.
        report_to=[name for name in config.trackers if name != "tensorboard"] or "none",
        disable_tqdm=not show_progress,
        remove_unused_columns=False,
        dataloader_num_workers=0,
        include_num_input_tokens_seen="non_padding",
        ddp_backend="gloo" if device == "cpu" and int(os.environ.get("WORLD_SIZE", "1")) > 1 else None,
        activation_checkpointing=config.gradient_checkpointing,
        activation_checkpointing_kwargs={"use_reentrant": False} if config.gradient_checkpointing else None,
        ddp_find_unused_parameters=False,
        use_cache=False,  # no KV cache while training: also what lets packed rows get their block-diagonal mask
        torch_compile=config.torch_compile,
        use_liger_kernel=config.use_liger_kernel,
        **extra,
    )


class TrainingSession:
    """One run's lifecycle. After `run()`, `model` and `tokenizer` hold the trained model (tests compare it
    with what a fresh process loads back from the run folder).

    The caller normally owns the run folder already (`lock`, from core.training.lifecycle); called without one
    (a test, a worker started by hand), the session creates or claims the run itself and owns it while it runs.
    `notify` receives plain sentences for a person watching (the CLI prints them)."""

    def __init__(
        self,
        config: RunConfig,
        run_dir: str | Path,
        stop_event: threading.Event | None = None,
        show_progress: bool = False,
        resume: bool = False,
        callbacks: list | None = None,
        lock: RunLock | None = None,
        notify: Callable[[Message], None] | None = None,
    ):
        self.config = config
        self.run_dir = Path(run_dir)
        self.stop_event = stop_event or threading.Event()
        self.show_progress = show_progress
        self.resume = resume
        self.extra_callbacks = list(callbacks or [])
        self.lock = lock
        self.notify = notify or (lambda note: None)
        self.model = None
        self.teacher = None  # distillation only: the model the student learns from
        self.image_processor = None  # a GLM-V model's: its rows carry images
        self.tokenizer = None

    def run(self) -> dict:
        """Train, writing everything into the run folder. Returns the final status; never raises for training
        errors: they end as state 'failed' with a plain message."""
        owned_here = self._own_run()
        handler = _log_to_file(self.run_dir)
        try:
            return self._train()
        except Exception as exc:  # noqa: BLE001 - every failure must end as a readable status, not a dead thread
            log.exception("training failed")
            return self._fail(explain_error(exc, self.run_dir), settings=isinstance(exc, ConfigError))
        finally:
            for name in ("glm_workbench", "transformers"):
                logging.getLogger(name).removeHandler(handler)
            handler.close()
            if owned_here:
                self.lock.release()

    def _own_run(self) -> bool:
        """Take the run folder unless the caller (or this worker's launcher) owns it; True if taken here."""
        if self.lock is not None or not is_main_process() or launched_by_owner(self.run_dir):
            return False
        from core.runs import CONFIG_FILE, STATUS_FILE

        if self.resume:
            self.lock = claim_for_resume(self.run_dir).lock
        elif (self.run_dir / CONFIG_FILE).is_file() and not (self.run_dir / STATUS_FILE).is_file():
            self.lock = claim_prepared(self.run_dir).lock  # prepared by hand for workers started by hand
        else:
            self.lock = create_run(self.run_dir.parent, self.config.replace(output_dir=str(self.run_dir))).lock
        return True

    def _fail(self, problem: Message, settings: bool = False) -> dict:
        """`settings`: the run's own settings are the cause, so Resume (which reads them again) is not offered."""
        fields = dict(
            state="failed",
            error=str(problem),
            error_message=problem.to_json(),
            finished=time.time(),
            cause="settings" if settings else None,
        )
        try:
            return update_status(self.run_dir, last_resort=True, **fields)
        except OSError:
            # Not even the status fits on the disk. Once this process lets go of the run, readers show it as
            # interrupted, and Resume continues it from the last complete checkpoint.
            return fields

    def _checkpoint_to_resume(self) -> str | None:
        """On resume: the newest intact checkpoint (complete, every file whole); metrics logged after it are
        dropped (they will be logged again) and the resume is recorded, so the chart shows one continuous run.
        Without any intact checkpoint the run trains again from step 0."""
        if not self.resume:
            return None
        if is_main_process():
            reclaim_run(self.run_dir, owned=True)  # saves the previous owner never finished, said in log.txt
            remove_partial_checkpoints(self.run_dir / CHECKPOINTS_DIR)  # and any checkpoint staging left
        # A damaged newest checkpoint (a truncated file, an invalid trainer_state.json) is skipped, saying so.
        checkpoint = intact_checkpoint(self.run_dir, self.run_dir.name, self.notify, main=is_main_process())
        step = int(checkpoint.name.split("-")[-1]) if checkpoint is not None else 0
        keep_metrics_until(self.run_dir, step)
        if checkpoint is None:
            log.info("resuming %s: no checkpoint was saved, so training starts again from step 0", self.run_dir.name)
            self.notify(message("run.resume_from_start", run=self.run_dir.name))
            return None
        log.info("resuming %s from %s", self.run_dir.name, checkpoint.name)
        return str(checkpoint)

    def _load(self, method):
        """Tokenizer, data and the method-prepared model."""
        if method.load_training is not None:
            tokenizer, data, model = method.load_training(self)
            self._report_skipped(data)
            return tokenizer, data, model
        config, run_dir = self.config, self.run_dir
        model_path = prepare_model(config.model_name_or_path, config.trust_remote_code)
        location = locate_model(model_path)
        check_model_fits_config(location, config)  # a run started without check_inputs too
        log.info("loading model %s", model_path)
        tokenizer = load_tokenizer(model_path, config.trust_remote_code)
        tokenizer.padding_side = "right"  # positions must start at 0 for every training sample
        if location.vision_type:  # a GLM-V model: its own chat template and image processor encode the rows
            template = location.vision_type
            self.image_processor = vision.image_processor_for(model_path, config)
        else:
            template = resolve_template(config.template, tokenizer, config.enable_thinking)
        data = self._tokenize(config.dataset, tokenizer, template, config.val_size, config.max_samples)
        log.info(
            "data: format %s, template %s, %d train / %d eval samples, %d truncated at cutoff_len=%d",
            data.format,
            template,
            len(data.train),
            len(data.eval),
            data.truncated,
            config.cutoff_len,
        )
        if config.eval_dataset:
            data.eval = self._tokenize(config.eval_dataset, tokenizer, template).train
            log.info("validation: %d samples from %s", len(data.eval), config.eval_dataset)
        elif data.held_out:
            self._keep_held_out(data)
        self._report_skipped(data)
        device = pick_device()
        # Weights that train are kept in fp32 (mixed precision autocasts); frozen bases load in the GPU's dtype.
        dtype = pick_dtype("fp32" if method.trains_base else config.precision, device)
        from core.training.speed import attention_implementation

        model = load_model(
            model_path,
            dtype=dtype,
            device=device,
            trust_remote_code=config.trust_remote_code,
            attn_implementation=attention_implementation(config, device),
            **method.model_kwargs(config),
        )
        model = method.prepare(model, config)
        if location.vision_type and method.trains_base:
            vision.set_vision_trainable(model, config)
        trainable, total = count_parameters(model)
        log.info(
            "method %s: %s of %s parameters train (%.2f%%)",
            method.name,
            f"{trainable:,}",
            f"{total:,}",
            100 * trainable / max(total, 1),
        )
        update_status(
            run_dir,
            template=template,
            trainable_params=trainable,
            total_params=total,
            train_samples=len(data.train),
            eval_samples=len(data.eval),
            data_format=data.format,
            stage=config.stage,
        )
        return tokenizer, data, model

    def _tokenize(
        self, dataset: str, tokenizer, template: str, val_size: float = 0.0, max_samples: int = 0
    ) -> TokenizedData:
        """SFT samples (ids + labels), or the preference stage's (core/data/pairs.py); a GLM-V model's with images."""
        config = self.config
        if self.image_processor is not None:
            return tokenize_vision_dataset(
                dataset,
                tokenizer,
                self.image_processor,
                config.cutoff_len,
                config.dataset_format,
                val_size,
                max_samples,
                config.seed,
                config.columns,
                {"enable_thinking": config.enable_thinking},
            )
        if is_preference(config.stage):
            return tokenize_preferences(
                dataset,
                tokenizer,
                template,
                config.cutoff_len,
                get_stage(config.stage),
                config.dataset_format,
                val_size,
                max_samples,
                config.seed,
                config.columns,
            )
        return tokenize_dataset(
            dataset,
            tokenizer,
            template,
            config.cutoff_len,
            config.dataset_format,
            val_size,
            max_samples,
            config.seed,
            config.columns,
        )

    def _speed_settings(self, model) -> RunConfig:
        """The batch split `auto_batch_size` picks (recorded in status.json), and one log line naming the speed
        and memory features this run uses."""
        from core.training.speed import active_features, resolve_auto_batch

        device = pick_device()
        if self.config.auto_batch_size:
            self.config, choice = resolve_auto_batch(self.config, model, device)
            log.info(
                "auto batch size: micro-batch %d x accumulation %d (estimate %.2f GiB of %.2f GiB free%s)",
                choice.micro_batch,
                choice.accumulation,
                choice.estimate_bytes / 2**30,
                choice.budget_bytes / 2**30,
                ", probed" if choice.probed else "",
            )
            update_status(
                self.run_dir,
                per_device_train_batch_size=choice.micro_batch,
                gradient_accumulation_steps=choice.accumulation,
            )
        log.info("speed: %s", ", ".join(active_features(self.config, device)))
        return self.config

    def _keep_held_out(self, data: TokenizedData) -> None:
        """The rows val_size held out, as a dataset in the run folder (held_out.jsonl): Evaluate and the Arena
        start on them, prompts the run never trained on."""
        if not is_main_process():
            return
        folder = resolve_dataset(self.config.dataset).parent
        rows = [json.dumps(conversation_row(c, folder), ensure_ascii=False) + "\n" for c in data.held_out]
        write_text_atomic(self.run_dir / HELD_OUT_FILE, "".join(rows))
        log.info("validation: %d held-out rows kept in %s", len(rows), HELD_OUT_FILE)

    def _report_skipped(self, data: TokenizedData) -> None:
        """Rows the data left out: all of them in skipped_rows.txt, the count and the first few in status.json
        (the page's progress line) and, through `notify`, on the terminal."""
        problems = data.problems
        if not problems:
            update_status(self.run_dir, data_problems=0, skipped_rows=None)
            return
        for problem in problems[:20]:
            log.warning("skipped %s", problem)
        if is_main_process():
            from core.files import write_text_atomic

            write_text_atomic(self.run_dir / SKIPPED_ROWS_FILE, "".join(f"{p}\n" for p in problems))
        usable = data.rows if data.rows is not None else len(data.train) + len(data.eval)
        total = len(problems) + usable
        note = message(
            "data.rows_skipped",
            skipped=len(problems),
            total=total,
            first=[p.as_message() for p in problems[:SKIPPED_SHOWN]],
            file=str(self.run_dir / SKIPPED_ROWS_FILE),
        )
        update_status(self.run_dir, data_problems=len(problems), skipped_rows=note.to_json())
        self.notify(note)

    def _trainer(self, method, tokenizer, data, model, callbacks):
        if is_preference(self.config.stage):  # TRL's trainers compute their own losses (never the fused loss)
            arguments_class, stage_settings = trainer_arguments(self.config)
            args = _training_arguments(
                self.config, self.run_dir, bool(data.eval), self.show_progress, arguments_class, **stage_settings
            )
            return preference_trainer(self, method, tokenizer, data, model, callbacks, args)
        trainer_class, extra = CheckpointingTrainer, {}
        if method.trainer is not None:
            trainer_class, extra = method.trainer(self) or (trainer_class, extra)
        if self.config.fused_loss:
            from core.training.fused_loss import with_fused_loss

            trainer_class = with_fused_loss(trainer_class)
        if self.config.offload_activations:
            from core.training.speed import with_activation_offload

            trainer_class = with_activation_offload(trainer_class)
        from core.training.router_balance import routers, with_router_balance

        balance = self.config.router_aux_loss_coef if routers(model) else 0.0
        if balance > 0:  # a MoE model: its routers' balance loss joins the training loss (router_balance.py)
            trainer_class = with_router_balance(trainer_class)

        args = _training_arguments(
            self.config, self.run_dir, len(data.eval) > 0, self.show_progress, **fsdp_arguments(self.config, model)
        )
        if method.optimizer is not None:
            extra["optimizers"] = (method.optimizer(model, args, self.config), None)
        trainer = trainer_class(
            **extra,
            model=model,
            args=args,
            train_dataset=data.train,
            eval_dataset=data.eval if len(data.eval) else None,
            data_collator=self._collator(tokenizer),
            processing_class=tokenizer,
            callbacks=callbacks,
        )
        if balance > 0:
            trainer.router_aux_loss_coef = balance
        return trainer

    def _collator(self, tokenizer):
        if self.image_processor is not None:  # image rows: their pixels and grids travel beside the ids
            from core.data.multimodal import collate

            return functools.partial(collate, pad_token_id=tokenizer.pad_token_id)
        return make_collator(tokenizer, self.config.packing)

    def _train(self) -> dict:
        from transformers import EarlyStoppingCallback, set_seed
        from transformers.trainer_callback import PrinterCallback, ProgressCallback

        config, run_dir = self.config.validate(), self.run_dir
        check_settings(config)  # also for a session started without check_inputs (a worker, a prepared folder)
        checkpoint = self._checkpoint_to_resume()
        if is_main_process():
            (run_dir / STOP_FILE).unlink(missing_ok=True)  # an old abort request must not stop this start
        update_status(run_dir, state="running", started=time.time(), error=None, error_message=None, cause=None)
        set_seed(config.seed)
        method = get_method(config.finetuning_type)
        tokenizer, data, model = self._load(method)
        config = self._speed_settings(model)
        stopper = StopCallback(self.stop_event, run_dir)
        callbacks = [RunFolderCallback(run_dir), *self.extra_callbacks, stopper]
        callbacks += tracking_callbacks(config, run_dir)
        if config.early_stopping_patience:
            callbacks.append(EarlyStoppingCallback(config.early_stopping_patience, config.early_stopping_threshold))
        trainer = self._trainer(method, tokenizer, data, model, callbacks)
        # Metrics go to metrics.jsonl; the terminal gets a progress bar with the loss, not a dict per step.
        trainer.remove_callback(PrinterCallback)
        trainer.remove_callback(ProgressCallback)
        if self.show_progress:
            trainer.add_callback(LossProgressBar())
        if getattr(trainer, "is_fsdp_enabled", False):
            log.info(
                "FSDP2 over %d processes: each of %s is sharded across them",
                trainer.args.world_size,
                ", ".join(trainer.args.fsdp_config["transformer_layer_cls_to_wrap"]),
            )
        if checkpoint is not None and is_final(checkpoint):
            log.info("every step was trained before %s stopped: saving its result", run_dir.name)
            trainer.restore_final(checkpoint)
        else:
            trainer.train(resume_from_checkpoint=checkpoint)
        aborted = stopper.stopped
        if is_preference(config.stage):
            drop_reference(trainer.model)
        save = method.save or save_model_and_tokenizer
        if getattr(trainer, "is_fsdp_enabled", False):
            # Every rank holds a shard: gather the whole state dict (a collective, so on every rank; rank 0 gets
            # it), and save it through the model's own save_pretrained: the same folder one process writes.
            state_dict = trainer.accelerator.get_state_dict(trainer.model)

            def save(model, tokenizer, folder):
                save_model_and_tokenizer(model, tokenizer, folder, state_dict=state_dict)

        if is_main_process():
            # The run's own output: replacing an earlier one (an abort, then Resume) is ours to do.
            with staged_dir(run_dir / method.output_dir, replace="owned") as folder:
                save(trainer.model, tokenizer, folder)
                if self.image_processor is not None:  # with the pixel budget the run trained on
                    self.image_processor.save_pretrained(folder)
        self.model, self.tokenizer = trainer.model, tokenizer
        if is_main_process():  # the run is complete: what a killed earlier attempt left is only in the way
            reclaim_run(run_dir, owned=True)
        losses = [m["loss"] for m in read_metrics(run_dir) if m.get("loss") is not None]
        final = dict(
            state="aborted" if aborted else "finished",
            finished=time.time(),
            final_loss=losses[-1] if losses else None,
            output=method.output_dir,
            step=trainer.state.global_step,
        )
        log.info("run %s: %s after %d steps", run_dir.name, final["state"], trainer.state.global_step)
        return update_status(run_dir, **final)


def tracking_callbacks(config: RunConfig, run_dir: Path) -> list:
    """TensorBoard writes into RUN/tensorboard (transformers' own callback would pick the working directory).
    A tracker that is not installed is named, with what to install, before the run trains a step."""
    import importlib.util

    packages = {"tensorboard": "tensorboard", "swanlab": "swanlab", "wandb": "wandb", "mlflow": "mlflow"}
    for name in config.trackers:
        if importlib.util.find_spec(packages[name]) is None:
            raise config_error("report_to", "config.tracker_missing", tracker=name, package=packages[name])
    if "tensorboard" not in config.trackers or not is_main_process():
        return []
    from torch.utils.tensorboard import SummaryWriter
    from transformers.integrations import TensorBoardCallback

    return [TensorBoardCallback(tb_writer=SummaryWriter(log_dir=str(run_dir / "tensorboard")))]


def make_collator(tokenizer, packing: bool):
    """Dynamic padding to the batch's longest sample; or, with packing, transformers' padding-free flattening:
    the batch's samples concatenated in one row, position ids restarting at 0 for each, and a -100 label at
    each boundary. From those position ids transformers builds a block-diagonal causal mask, so no sample
    attends to another."""
    from transformers import DataCollatorForSeq2Seq, DataCollatorWithFlattening

    if packing:
        flatten = DataCollatorWithFlattening(return_position_ids=True, separator_id=IGNORE_INDEX)
        return lambda samples: flatten([{"input_ids": s["input_ids"], "labels": s["labels"]} for s in samples])
    return DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=IGNORE_INDEX)


def explain_error(exc: BaseException, where: str | Path | None = None) -> Message:
    """A plain-words message for a failed run: out of memory and a full disk come with what to change; our own
    errors say themselves; anything else is an unexpected error whose traceback is in log.txt."""
    text = str(exc).strip() or type(exc).__name__
    first_line = text.splitlines()[0]
    lowered = text.lower()
    if (
        isinstance(exc, MemoryError)
        or type(exc).__name__ == "OutOfMemoryError"
        or "out of memory" in lowered
        or "can't allocate memory" in lowered
    ):
        return message("run.out_of_memory", detail=first_line)
    if is_disk_full(exc, where):
        filename = getattr(exc, "filename", None)
        if filename:
            return message("run.disk_full_while_writing", file=str(filename), detail=first_line)
        return message("run.disk_full", detail=first_line)
    if isinstance(exc, ConfigError):  # Resume would read the same settings: say to fix them in a new run
        return message("run.settings_failed", problems=exc.message)
    if isinstance(exc, WorkbenchError):
        return exc.message
    return message("run.unexpected_error", kind=type(exc).__name__, detail=first_line[:300])
