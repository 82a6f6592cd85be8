"""Preference training (a stage of core/stages/ whose samples are pairs) through TRL, on top of a method (LoRA, LoRA+,
QLoRA, freeze, full).

The stage changes the data and the Trainer, nothing else: the method prepares the model as it does for SFT, and
the run folder has the same shape (adapter/ or model/, metrics.jsonl, status.json, checkpoints/). Abort, Resume
and the checkpoints work through the same callbacks and `CheckpointingTrainer` (put first in each trainer's
bases). The samples come tokenized by our chat template (core/data/pairs.py), so TRL's own tokenization is
skipped (each stage's `parts`): the model sees the prompts exactly as SFT and the chat do.

The reference model (a stage with `reference`, DPO and KTO; ORPO and SimPO need none):
- a new LoRA-family adapter: the base model itself, by switching the adapter off (nothing is copied);
- an adapter trained further (`adapter_name_or_path`, the Train tab's "Continue training" of an SFT run): base +
  that adapter as it was when the run started. TRL copies the adapter into a frozen second adapter named "ref"
  (the size of one LoRA, never the base's weights); it is dropped before the result is saved;
- freeze / full: `model_name_or_path` (a parent run's model/ when continuing) loaded a second time, frozen, in the
  compute dtype.

Each stage's module says its loss and its TRL settings (`arguments`, `pref_beta` is beta in each). Logged beside
the loss (metrics.jsonl): the figures each stage names in `metrics` (RunFolderCallback's PREFERENCE_KEYS).
"""

from __future__ import annotations

import logging

from core.config import RunConfig
from core.models.loader import load_model, pick_device, pick_dtype, prepare_model
from core.stages import get_stage
from core.stages.base import Stage

log = logging.getLogger("glm_workbench")
REFERENCE_ADAPTER = "ref"  # the name TRL gives its frozen copy of a continued adapter


def trainer_arguments(config: RunConfig) -> tuple[type, dict]:
    """The stage's TRL config class and its own settings in it (the TrainingArguments part is the runner's)."""
    stage = get_stage(config.stage)
    return stage.trainer()[1], stage.arguments(config)


def _trainer_class(stage: Stage) -> type:
    """Our trainer for `stage`: checkpoints staged (CheckpointingTrainer), no telemetry, no model card, and the
    samples taken as we tokenized them (the stage's parts)."""
    from core.training.checkpointing import CheckpointingTrainer

    trl_class = stage.trainer()[0]
    parts = (stage.parts,) if stage.parts is not None else ()
    return type(f"Preference{trl_class.__name__}", (_Quiet, CheckpointingTrainer, *parts, trl_class), {})


class _Quiet:
    """Nothing leaves the machine and nothing is written beside the checkpoints: TRL's trainers send a telemetry
    ping when they are built and write a model card into the output folder with every checkpoint."""

    def _send_telemetry(self) -> None:
        return None

    def create_model_card(self, *args, **kwargs) -> None:
        return None


def reference_model(config: RunConfig, method):
    """freeze / full: the starting model again, frozen, in the compute dtype. LoRA-family methods need none (the
    adapter switched off, or TRL's "ref" copy of a continued adapter), and a stage without `reference` none."""
    if not get_stage(config.stage).reference or not method.trains_base:
        return None

    device = pick_device()
    path = prepare_model(config.model_name_or_path, config.trust_remote_code)
    reference = load_model(
        path, dtype=pick_dtype(config.precision, device), device=device, trust_remote_code=config.trust_remote_code
    )
    reference.requires_grad_(False)
    log.info("reference model: %s, frozen", path)
    return reference.eval()


def preference_trainer(session, method, tokenizer, data, model, callbacks, args):
    """The stage's Trainer over `data` (core/data/pairs.py samples), with `args` its TRL config."""
    from accelerate.utils import is_peft_model
    from datasets import Dataset
    from datasets.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars

    from core.training.router_balance import routers, with_router_balance

    config = session.config
    stage = get_stage(config.stage)
    trainer_class = _trainer_class(stage)
    # A MoE model: the routers' balance loss joins the stage's loss as in SFT (the reference's passes run without
    # gradients, so they are not counted).
    balance = config.router_aux_loss_coef if routers(model) else 0.0
    if balance > 0:
        trainer_class = with_router_balance(trainer_class)
    extra = {}
    if stage.reference:
        extra["ref_model"] = reference_model(config, method)
    if method.optimizer is not None:  # LoRA+: built before TRL adds its frozen "ref" adapter, so never holds it
        extra["optimizers"] = (method.optimizer(model, args, config), None)
    quiet = are_progress_bars_disabled()
    disable_progress_bars()  # the datasets' map bars: the terminal shows the training's own bar only
    try:
        trainer = trainer_class(
            model=model,
            args=args,
            train_dataset=Dataset.from_list(data.train),
            eval_dataset=Dataset.from_list(data.eval) if data.eval else None,
            processing_class=tokenizer,
            callbacks=callbacks,
            **extra,
        )
    finally:
        if not quiet:
            enable_progress_bars()
    if balance > 0:
        trainer.router_aux_loss_coef = balance
    if is_peft_model(model) and REFERENCE_ADAPTER in model.peft_config:
        if config.adapter_name_or_path:
            log.info("reference: the base with the adapter this run starts from (%s)", config.adapter_name_or_path)
        else:
            # A new adapter starts as the identity: the reference is the base, the adapter switched off.
            model.delete_adapter(REFERENCE_ADAPTER)
            log.info("reference: the base model (the new adapter switched off)")
    return trainer


def drop_reference(model) -> None:
    """Remove TRL's frozen "ref" adapter so that only the trained adapter is saved (adapter/ holds one adapter,
    as after SFT)."""
    from accelerate.utils import is_peft_model

    if is_peft_model(model) and REFERENCE_ADAPTER in model.peft_config:
        model.delete_adapter(REFERENCE_ADAPTER)
