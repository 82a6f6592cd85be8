"""Pairs for TRL's reference-free trainers (ORPO, CPO/SimPO): our tokenized pairs, the log-probabilities from TRL's
fused LM head (no [tokens x vocab] logits), averaged per answer token, and the NLL term on the chosen answer's
tokens only (SFT's loss mask; TRL's own tokenization would count the prompt's tokens too).

ORPOTrainer and CPOTrainer share this shape (tokenize_row, concatenated_inputs, a five-part concatenated_forward),
so one mixin serves both. Not a stage itself: the registry skips a module without STAGE.
"""

from __future__ import annotations


class FusedPairsParts:
    def __init__(self, *args, **kwargs):
        from accelerate.utils import is_peft_model
        from trl.trainer.utils import add_fused_lm_head

        super().__init__(*args, **kwargs)
        model = self.model.get_base_model() if is_peft_model(self.model) else self.model
        add_fused_lm_head(model, outputs=("log_probs", "mean_logits"))

    def tokenize_row(self, feature, model=None) -> dict:
        """The ids as our template made them; labels only on the answers (TRL's own tokenization skipped)."""
        prompt = list(feature["prompt_ids"])
        row = {"prompt_input_ids": prompt, "prompt_attention_mask": [1] * len(prompt)}
        for side in ("chosen", "rejected"):
            answer = list(feature[f"{side}_ids"])
            row[f"{side}_input_ids"] = prompt + answer
            row[f"{side}_attention_mask"] = [1] * (len(prompt) + len(answer))
            row[f"{side}_labels"] = [-100] * len(prompt) + answer
        return row

    def concatenated_forward(self, model, batch):
        padding = getattr(self, "padding_value", None)  # ORPO's setting; CPO pads with the tokenizer's pad id
        padding = self.pad_token_id if padding is None else padding
        joined = self.concatenated_inputs(batch, padding_value=padding, device=self.accelerator.device)
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
        """Tokens seen (the tokens/s figure): these batches hold chosen and rejected rows under their own names."""
        if self.args.include_num_input_tokens_seen == "no":
            return
        import torch

        tokens = inputs["chosen_attention_mask"].sum() + inputs["rejected_attention_mask"].sum()
        tokens = torch.as_tensor(tokens, device=self.args.device, dtype=torch.int64)
        self.state.num_input_tokens_seen += self.accelerator.gather(tokens).sum().item()
