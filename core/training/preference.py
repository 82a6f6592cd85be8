"""Preference training (stage dpo, orpo or kto) through TRL, on top of a method (LoRA, LoRA+, QLoRA, freeze, full).

The stage changes the data and the Trainer, nothing else: the method prepares the model as it does for SFT, and
the run folder has the same shape (adapter/ or model/, metrics.jsonl, status.json, checkpoints/). Abort, Resume
and the checkpoints work through the same callbacks and `CheckpointingTrainer` (put first in each trainer's
bases). The samples come tokenized by our chat template (core/data/pairs.py), so TRL's own tokenization is
skipped: the model sees the prompts exactly as SFT and the chat do.

The reference model (DPO and KTO; ORPO needs none):
- a new LoRA-family adapter: the base model itself, by switching the adapter off (nothing is copied);
- an adapter trained further (`adapter_name_or_path`, the Train tab's "Continue training" of an SFT run): base +
  that adapter as it was when the run started. TRL copies the adapter into a frozen second adapter named "ref"
  (the size of one LoRA, never the base's weights); it is dropped before the result is saved;
- freeze / full: `model_name_or_path` (a parent run's model/ when continuing) loaded a second time, frozen, in the
  compute dtype.

Losses (`pref_beta` is beta in each):
- dpo: TRL's sigmoid (DPO) or ipo loss; with `pref_ftx` > 0, plus pref_ftx x the SFT loss (mean negative
  log-likelihood of the chosen answers' tokens), as LLaMA-Factory mixes it in.
- orpo: NLL of the chosen answer's tokens - beta x log sigmoid(log odds ratio), the log-probabilities averaged per
  answer token. TRL's ORPOTrainer counts the prompt's tokens into the NLL too; ours keeps SFT's loss mask.
- kto: TRL's KTO loss, with kto_chosen_weight / kto_rejected_weight for desirable / undesirable answers.

Logged beside the loss (metrics.jsonl): the reward margin, the rewards and log-probabilities of the chosen and
rejected answers, and how often the chosen one's reward is higher (RunFolderCallback's PREFERENCE_KEYS).
DPO and KTO sum an answer's token log-probabilities; ORPO averages them.
"""

from __future__ import annotations

import logging
import warnings

from core.config import RunConfig

log = logging.getLogger("glm_workbench")
REFERENCE_ADAPTER = "ref"  # the name TRL gives its frozen copy of a continued adapter


def trl_classes():
    """TRL's trainers, imported when a preference run starts (config reading never needs them)."""
    from trl import DPOConfig, DPOTrainer, KTOConfig, KTOTrainer
    from trl.import_utils import TRLExperimentalWarning

    with warnings.catch_warnings():  # ORPO lives in trl.experimental, which announces itself on import
        warnings.simplefilter("ignore", TRLExperimentalWarning)
        from trl.experimental.orpo import ORPOConfig, ORPOTrainer
    return {"dpo": (DPOTrainer, DPOConfig), "orpo": (ORPOTrainer, ORPOConfig), "kto": (KTOTrainer, KTOConfig)}


def stage_arguments(config: RunConfig) -> dict:
    """The TRL config's own settings for this stage (the TrainingArguments part is the runner's)."""
    common = dict(beta=config.pref_beta, max_length=config.cutoff_len, disable_dropout=True)
    if config.stage == "dpo":
        losses, weights = [config.pref_loss], [1.0]
        if config.pref_ftx > 0:
            losses.append("sft")
            weights.append(config.pref_ftx)
        return dict(common, loss_type=losses, loss_weights=weights, truncation_mode="keep_start")
    if config.stage == "kto":
        return dict(
            common,
            loss_type="kto",
            desirable_weight=config.kto_chosen_weight,
            undesirable_weight=config.kto_rejected_weight,
        )
    return common


def _trainer_class(stage: str) -> type:
    """Our trainer for `stage`: checkpoints staged (CheckpointingTrainer), no telemetry, no model card, and the
    samples taken as we tokenized them."""
    from core.training.checkpointing import CheckpointingTrainer

    trl_class = trl_classes()[stage][0]
    extra = {"dpo": _DpoParts, "orpo": _OrpoParts, "kto": _KtoParts}[stage]
    return type(f"Preference{trl_class.__name__}", (_Quiet, CheckpointingTrainer, extra, trl_class), {})


class _Quiet:
    """Nothing leaves the machine and nothing is written beside the checkpoints: TRL's trainers send a telemetry
    ping when they are built and write a model card into the output folder with every checkpoint."""

    def _send_telemetry(self) -> None:
        return None

    def create_model_card(self, *args, **kwargs) -> None:
        return None


class _DpoParts:
    def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
        if "prompt_ids" in dataset.column_names:  # tokenized by our template already (core/data/pairs.py)
            return dataset
        return super()._prepare_dataset(dataset, processing_class, args, dataset_name)


class _KtoParts:
    def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
        """Our samples are tokenized; only KTO's KL completions are added: each sample's completion is paired
        with its neighbour's prompt, within each batch, as TRL does."""
        if "prompt_ids" not in dataset.column_names:
            return super()._prepare_dataset(dataset, processing_class, args, dataset_name)
        if not self.calculate_KL:
            return dataset

        def rotate(batch):
            return {"KL_completion_ids": [batch["completion_ids"][-1]] + batch["completion_ids"][:-1]}

        return dataset.map(rotate, batched=True, batch_size=args.per_device_train_batch_size)


class _OrpoParts:
    """ORPO on our tokenized pairs, with the log-probabilities from TRL's fused LM head (no [tokens x vocab]
    logits), and the NLL term on the chosen answer's tokens only (SFT's loss mask)."""

    def __init__(self, *args, **kwargs):
        from accelerate.utils import is_peft_model
        from trl.trainer.utils import add_fused_lm_head

        super().__init__(*args, **kwargs)
        model = self.model.get_base_model() if is_peft_model(self.model) else self.model
        add_fused_lm_head(model, outputs=("log_probs", "mean_logits"))

    def tokenize_row(self, feature, model=None) -> dict:
        """The ids as our template made them; labels only on the answers (ORPO's own tokenization skipped)."""
        prompt = list(feature["prompt_ids"])
        row = {"prompt_input_ids": prompt, "prompt_attention_mask": [1] * len(prompt)}
        for side in ("chosen", "rejected"):
            answer = list(feature[f"{side}_ids"])
            row[f"{side}_input_ids"] = prompt + answer
            row[f"{side}_attention_mask"] = [1] * (len(prompt) + len(answer))
            row[f"{side}_labels"] = [-100] * len(prompt) + answer
        return row

    def concatenated_forward(self, model, batch):
        joined = self.concatenated_inputs(batch, padding_value=self.padding_value, device=self.accelerator.device)
        chosen_count = batch["chosen_labels"].shape[0]
        labels = joined["concatenated_labels"]
        outputs = model(
            input_ids=joined["concatenated_input_ids"],
            attention_mask=joined["concatenated_attention_mask"],
            labels=labels,
            fused_lm_head=True,
            use_cache=False,
        )
        positions = labels.shape[1] - 1
        per_token = outputs.log_probs[:, -positions:]  # 0 where no label counts
        counted = (labels[:, 1:] != -100).to(per_token.dtype)
        average = per_token.sum(-1) / counted.sum(-1).clamp(min=1)
        nll = -per_token[:chosen_count].sum() / counted[:chosen_count].sum().clamp(min=1)
        mean_logits = outputs.mean_logits[:, -positions:].detach()  # TRL's logits/* metrics only
        return (
            average[:chosen_count],
            average[chosen_count:],
            mean_logits[:chosen_count],
            mean_logits[chosen_count:],
            nll,
        )

    def _track_num_input_tokens(self, inputs) -> None:
        """Tokens seen (the tokens/s figure): ORPO's batches hold chosen and rejected rows under their own names."""
        if self.args.include_num_input_tokens_seen == "no":
            return
        import torch

        tokens = inputs["chosen_attention_mask"].sum() + inputs["rejected_attention_mask"].sum()
        tokens = torch.as_tensor(tokens, device=self.args.device, dtype=torch.int64)
        self.state.num_input_tokens_seen += self.accelerator.gather(tokens).sum().item()


def reference_model(config: RunConfig, method):
    """freeze / full: the starting model again, frozen, in the compute dtype. LoRA-family methods need none (the
    adapter switched off, or TRL's "ref" copy of a continued adapter), and ORPO has no reference."""
    if config.stage == "orpo" or not method.trains_base:
        return None
    from core.models.loader import load_model, pick_device, pick_dtype, prepare_model

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
    trainer_class = _trainer_class(config.stage)
    # A MoE model: the routers' balance loss joins the stage's loss as in SFT (the reference's passes run without
    # gradients, so they are not counted).
    balance = config.router_aux_loss_coef if routers(model) else 0.0
    if balance > 0:
        trainer_class = with_router_balance(trainer_class)
    extra = {}
    if config.stage != "orpo":
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
