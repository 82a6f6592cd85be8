"""Distillation: a smaller student learns from a fine-tuned teacher.

- The teacher is `model_name_or_path` with `teacher_adapter` (a LoRA/QLoRA adapter, or a run folder holding
  one) applied and merged, or a full run's model folder as `model_name_or_path`.
- The student is `student_model`: "auto" builds a smaller native copy of the teacher's architecture (every
  other decoder layer, initialised from the teacher's, as DistilBERT does), or a local model folder.
- logits mode (teacher and student share a tokenizer): loss = alpha * T^2 * KL(teacher_T || student_T) on the
  answer tokens + (1 - alpha) * cross-entropy, with T = distill_temperature.
- sequence mode (different tokenizers): the teacher writes the answers (greedy), and the student is fine-tuned
  on them with plain cross-entropy.
The student trains fully and the run leaves it in model/.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from core.methods.base import Method, save_model_and_tokenizer
from core.training.checkpointing import CheckpointingTrainer

log = logging.getLogger("glm_workbench")


def prepare(model, config):
    for parameter in model.parameters():
        parameter.requires_grad_(True)
    return model


METHOD = Method(name="distill", output_dir="model", prepare=prepare, save=save_model_and_tokenizer)


def load_teacher(config, device: str):
    """The teacher in eval mode, its adapter merged in, and its tokenizer."""
    from core.models.loader import load_model, load_tokenizer, pick_dtype, resolve_model_path

    path = resolve_model_path(config.model_name_or_path, config.trust_remote_code)
    teacher = load_model(path, dtype=pick_dtype(config.precision, device), device=device)
    if config.teacher_adapter:
        from peft import PeftModel

        adapter = Path(config.teacher_adapter)
        adapter = adapter / "adapter" if (adapter / "adapter" / "adapter_config.json").is_file() else adapter
        teacher = PeftModel.from_pretrained(teacher, str(adapter)).merge_and_unload()
    teacher.requires_grad_(False)
    return teacher.eval(), load_tokenizer(path, config.trust_remote_code), path


def build_student(teacher, config, device: str):
    """A smaller student: `student_model` loaded, or "auto": the teacher's every other layer."""
    import copy

    from core.models.loader import load_model, load_tokenizer, resolve_model_path

    if config.student_model != "auto":
        path = resolve_model_path(config.student_model)
        return load_model(path, dtype=torch.float32, device=device), load_tokenizer(path)
    student_config = copy.deepcopy(teacher.config)
    keep = list(range(0, teacher.config.num_hidden_layers, 2))
    student_config.num_hidden_layers = len(keep)
    student = type(teacher)(student_config).to(device=device, dtype=torch.float32)
    state = teacher.state_dict()
    mapped = {}
    for name in student.state_dict():
        if ".layers." in name:
            prefix, rest = name.split(".layers.", 1)
            index, tail = rest.split(".", 1)
            name_in_teacher = f"{prefix}.layers.{keep[int(index)]}.{tail}"
        else:
            name_in_teacher = name
        mapped[name] = state[name_in_teacher].to(torch.float32)
    student.load_state_dict(mapped)
    log.info("student: %d of the teacher's %d layers (%s parameters)", len(keep), teacher.config.num_hidden_layers,
             f"{student.num_parameters():,}")
    return student, None


def shares_vocabulary(teacher_tokenizer, student_tokenizer) -> bool:
    return student_tokenizer is None or teacher_tokenizer.get_vocab() == student_tokenizer.get_vocab()


def teacher_answers(teacher, tokenizer, template: str, conversations, max_new_tokens: int = 256):
    """Sequence-level distillation data: each conversation's last answer rewritten by the teacher (greedy)."""
    from core.data.formats import Conversation
    from core.data.template import TemplateEncoder

    encoder = TemplateEncoder(tokenizer, template)
    rewritten = []
    for conversation in conversations:
        prompt = torch.tensor([encoder.encode_prompt(conversation.messages[:-1], conversation.system)],
                              device=teacher.device)
        with torch.inference_mode():
            output = teacher.generate(input_ids=prompt, attention_mask=torch.ones_like(prompt), do_sample=False,
                                      max_new_tokens=max_new_tokens, eos_token_id=encoder.stop_token_ids,
                                      pad_token_id=tokenizer.pad_token_id)
        answer = tokenizer.decode(output[0, prompt.shape[1]:], skip_special_tokens=True).strip()
        if answer:
            messages = conversation.messages[:-1] + [{"role": "assistant", "content": answer}]
            rewritten.append(Conversation(messages, conversation.system))
    return rewritten


class DistillationTrainer(CheckpointingTrainer):
    """Trainer whose loss mixes KL to the teacher's softened distribution with the usual cross-entropy."""

    def __init__(self, *args, teacher=None, alpha: float = 0.5, temperature: float = 2.0, **kwargs):
        super().__init__(*args, **kwargs)
        self.teacher, self.alpha, self.temperature = teacher, alpha, temperature

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        outputs = model(**inputs)
        cross_entropy = outputs.loss
        with torch.no_grad():
            teacher_logits = self.teacher(**{k: v for k, v in inputs.items() if k != "labels"}).logits
        labels = inputs["labels"][:, 1:]
        mask = labels != -100
        student = outputs.logits[:, :-1][mask] / self.temperature
        teacher = teacher_logits[:, :-1][mask].to(student.dtype) / self.temperature
        kl = torch.nn.functional.kl_div(torch.log_softmax(student, -1), torch.log_softmax(teacher, -1),
                                        log_target=True, reduction="batchmean") * self.temperature ** 2
        loss = self.alpha * kl + (1 - self.alpha) * cross_entropy
        return (loss, outputs) if return_outputs else loss
