"""The distillation loss: KL to the teacher's softened distribution on answer tokens, mixed with cross-entropy."""

from __future__ import annotations

import torch

from core.data.template import IGNORE_INDEX
from core.training.checkpointing import CheckpointingTrainer


class DistillationTrainer(CheckpointingTrainer):
    """loss = alpha * T^2 * KL(teacher_T || student_T) + (1 - alpha) * cross-entropy (see core/methods/distill.py)."""

    def __init__(self, *args, teacher=None, alpha: float = 0.5, temperature: float = 2.0, **kwargs):
        super().__init__(*args, **kwargs)
        self.teacher, self.alpha, self.temperature = teacher, alpha, temperature

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        """With num_items_in_batch (gradient accumulation) both terms are sums over the answer tokens divided by
        that count, as the model's own loss is: the Trainer then counts the loss as already scaled."""
        extra = {"num_items_in_batch": num_items_in_batch} if num_items_in_batch is not None else {}
        outputs = model(**inputs, **extra)
        cross_entropy = outputs.loss
        with torch.no_grad():
            teacher_logits = self.teacher(**{k: v for k, v in inputs.items() if k != "labels"}).logits
        labels = inputs["labels"][:, 1:]
        mask = labels != IGNORE_INDEX
        student = outputs.logits[:, :-1][mask] / self.temperature
        teacher = teacher_logits[:, :-1][mask].to(student.dtype) / self.temperature
        kl_sum = torch.nn.functional.kl_div(
            torch.log_softmax(student, -1), torch.log_softmax(teacher, -1), log_target=True, reduction="sum"
        )
        tokens = num_items_in_batch if num_items_in_batch is not None else max(int(mask.sum()), 1)
        kl = kl_sum / tokens * self.temperature**2
        loss = self.alpha * kl + (1 - self.alpha) * cross_entropy
        return (loss, outputs) if return_outputs else loss
