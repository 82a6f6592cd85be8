"""Packing: samples concatenated in one row give each sample exactly the loss it has on its own."""

from __future__ import annotations

import torch

from core.config import RunConfig
from core.data.dataset import load_conversations
from core.data.template import TemplateEncoder
from core.models.loader import load_model
from core.training.runner import TrainingSession, make_collator


def per_token_losses(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of each predicted token (label positions shifted by one), -100 positions dropped."""
    shifted_logits, shifted_labels = logits[:-1], labels[1:]
    keep = shifted_labels != -100
    return torch.nn.functional.cross_entropy(shifted_logits[keep], shifted_labels[keep], reduction="none")


def test_packed_row_equals_samples_alone(demo_model_dir, demo_tokenizer):
    model = load_model(str(demo_model_dir))
    encoder = TemplateEncoder(demo_tokenizer, "glm4")
    conversations = load_conversations("multiturn").conversations[:3]
    samples = []
    for conversation in conversations:
        ids, labels = encoder.encode(conversation, 512)
        samples.append({"input_ids": ids, "labels": labels, "attention_mask": [1] * len(ids)})
    alone = []
    with torch.inference_mode():
        for sample in samples:
            logits = model(input_ids=torch.tensor([sample["input_ids"]])).logits[0]
            alone.append(per_token_losses(logits, torch.tensor(sample["labels"])))
        batch = make_collator(demo_tokenizer, packing=True)(samples)
        assert batch["input_ids"].shape[0] == 1 and "attention_mask" not in batch
        positions = batch["position_ids"][0].tolist()
        assert positions.count(0) == 3  # restarts for each sample
        packed_logits = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False).logits[
            0
        ]
    packed = per_token_losses(packed_logits, batch["labels"][0])
    assert torch.allclose(packed, torch.cat(alone), atol=1e-4)


def test_training_with_packing(tmp_path, demo_model_dir):
    status = TrainingSession(
        RunConfig(dataset="multiturn", packing=True, max_steps=12, num_train_epochs=0, learning_rate=2e-3),
        tmp_path / "run",
    ).run()
    assert status["state"] == "finished", status
