"""Distillation: a smaller student learns from a fine-tuned teacher.

- The teacher is `model_name_or_path` with `teacher_adapter` (a LoRA/QLoRA adapter, or a run folder holding
  one) applied and merged, or a full run's model folder as `model_name_or_path`.
- The student is `student_model`: "auto" builds a smaller native copy of the teacher's architecture (every
  other decoder layer, initialised from the teacher's, as DistilBERT does), or a local model folder.
- logits mode (teacher and student share a tokenizer): loss = alpha * T^2 * KL(teacher_T || student_T) on the
  answer tokens + (1 - alpha) * cross-entropy, with T = distill_temperature (core/training/distillation.py).
- sequence mode (different tokenizers): the teacher writes the answers (greedy), and the student is fine-tuned
  on them with plain cross-entropy.
The student trains fully and the run leaves it in model/.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from core.data.dataset import load_conversations, tokenize_conversations
from core.data.formats import Conversation
from core.data.template import TemplateEncoder, resolve_template
from core.errors import config_error
from core.methods.base import MODEL, Field, Method, count_parameters, train_every_parameter
from core.models.loader import load_model, load_tokenizer, pick_device, pick_dtype, prepare_model

log = logging.getLogger("glm_workbench")
DISTILL_MODES = ("auto", "logits", "sequence")


@dataclass
class DistillOptions:
    teacher_adapter: str = ""  # the teacher is model_name_or_path with this adapter (or run) merged in
    student_model: str = "auto"  # "auto" (the teacher's every other layer) or a local model folder
    distill_alpha: float = 0.5  # weight of the KL term against cross-entropy
    distill_temperature: float = 2.0
    distill_mode: str = "auto"  # auto: logits with a shared tokenizer, else sequence (teacher-written answers)


FIELDS = (
    Field("teacher_adapter", "text"),
    Field("student_model", "text"),
    Field("distill_alpha"),
    Field("distill_temperature"),
    Field("distill_mode", "choice", DISTILL_MODES),
)


def check(config, check) -> None:
    check(0 <= config.distill_alpha <= 1, "distill_alpha", "config.fraction_closed")
    check(config.distill_temperature > 0, "distill_temperature", "config.greater_than", limit=0)
    check(config.distill_mode in DISTILL_MODES, "distill_mode", "config.one_of", choices=", ".join(DISTILL_MODES))


def load_teacher(config, device: str):
    """The teacher in eval mode, its adapter merged in, and its tokenizer."""
    from core.runs import resolve_adapter

    path = prepare_model(config.model_name_or_path, config.trust_remote_code)
    teacher = load_model(path, dtype=pick_dtype(config.precision, device), device=device)
    if config.teacher_adapter:
        from peft import PeftModel

        adapter = resolve_adapter(config.teacher_adapter)  # an adapter folder, or a run folder's adapter/
        teacher = PeftModel.from_pretrained(teacher, str(adapter)).merge_and_unload()
    teacher.requires_grad_(False)
    return teacher.eval(), load_tokenizer(path, config.trust_remote_code)


def build_student(teacher, config, device: str):
    """A smaller student: `student_model` loaded, or "auto": the teacher's every other layer."""
    import copy

    import torch

    if config.student_model != "auto":
        path = prepare_model(config.student_model)
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
    log.info(
        "student: %d of the teacher's %d layers (%s parameters)",
        len(keep),
        teacher.config.num_hidden_layers,
        f"{student.num_parameters():,}",
    )
    return student, None


def shares_vocabulary(teacher_tokenizer, student_tokenizer) -> bool:
    return student_tokenizer is None or teacher_tokenizer.get_vocab() == student_tokenizer.get_vocab()


def teacher_answers(teacher, tokenizer, template: str, conversations, max_new_tokens: int = 256):
    """Sequence-level distillation data: each conversation's last answer rewritten by the teacher (greedy)."""
    import torch

    encoder = TemplateEncoder(tokenizer, template)
    rewritten = []
    for conversation in conversations:
        prompt = torch.tensor(
            [encoder.encode_prompt(conversation.messages[:-1], conversation.system)], device=teacher.device
        )
        with torch.inference_mode():
            output = teacher.generate(
                input_ids=prompt,
                attention_mask=torch.ones_like(prompt),
                do_sample=False,
                max_new_tokens=max_new_tokens,
                eos_token_id=encoder.stop_token_ids,
                pad_token_id=tokenizer.pad_token_id,
            )
        answer = tokenizer.decode(output[0, prompt.shape[1] :], skip_special_tokens=True).strip()
        if answer:
            messages = conversation.messages[:-1] + [{"role": "assistant", "content": answer}]
            rewritten.append(Conversation(messages, conversation.system))
    return rewritten


def load_training(session):
    """Teacher, student and data; the teacher stays on the session for the trainer (logits mode)."""
    from core.runs import update_status

    config, device = session.config, pick_device()
    teacher, teacher_tokenizer = load_teacher(config, device)
    student, student_tokenizer = build_student(teacher, config, device)
    shared = shares_vocabulary(teacher_tokenizer, student_tokenizer)
    mode = config.distill_mode if config.distill_mode != "auto" else ("logits" if shared else "sequence")
    if mode == "logits" and not shared:
        raise config_error("distill_mode", "config.distill_needs_shared_tokenizer")
    tokenizer = student_tokenizer or teacher_tokenizer
    tokenizer.padding_side = "right"
    loaded = load_conversations(config.dataset, config.dataset_format, config.columns)
    conversations = loaded.conversations[: config.max_samples] if config.max_samples else loaded.conversations
    if mode == "sequence":
        conversations = teacher_answers(
            teacher, teacher_tokenizer, resolve_template(config.template, teacher_tokenizer), conversations
        )
        log.info("distill: the teacher wrote %d answers", len(conversations))
    template = resolve_template(config.template, tokenizer)
    data = tokenize_conversations(
        conversations, tokenizer, template, config.cutoff_len, config.val_size, config.seed, config.dataset
    )
    data.format, data.problems = loaded.format, list(loaded.result.problems) + data.problems
    session.teacher = teacher if mode == "logits" else None
    trainable, total = count_parameters(student)
    log.info("distill (%s): student %s parameters, teacher %s", mode, f"{total:,}", f"{teacher.num_parameters():,}")
    update_status(
        session.run_dir,
        template=template,
        trainable_params=trainable,
        total_params=total,
        train_samples=len(data.train),
        eval_samples=len(data.eval),
        distill_mode=mode,
    )
    return tokenizer, data, student


def trainer(session):
    """With logits to learn from, the trainer mixes KL to the teacher into the loss; else plain SFT."""
    if session.teacher is None:
        return None
    from core.training.distillation import DistillationTrainer

    config = session.config
    return DistillationTrainer, dict(
        teacher=session.teacher, alpha=config.distill_alpha, temperature=config.distill_temperature
    )


def trainable_params(shape, config) -> int:
    """The "auto" student: every other layer of the teacher, trained fully."""
    return shape.total_params - (shape.layers // 2) * shape.layer_params


def student_and_teacher_weights(shape, config, compute_bytes: int, trainable: int) -> float:
    """The fp32 student that trains, plus the frozen teacher in the compute dtype."""
    return 4 * trainable + compute_bytes * shape.total_params


METHOD = Method(
    name="distill",
    preference=False,
    adapter_keys=("teacher_adapter",),
    output_dir=MODEL,
    prepare=train_every_parameter,
    trainable_params=trainable_params,
    options=DistillOptions,
    fields=FIELDS,
    check=check,
    load_training=load_training,
    trainer=trainer,
    weight_bytes=student_and_teacher_weights,
    learning_rates=(1e-3, 5e-5),
)
