"""The chunked loss (core/training/fused_loss.py) equals the model's own, loss and gradients, for every way the
workbench trains: full fine-tuning, LoRA, prefix tuning, packing, gradient accumulation, distillation; and it
never makes a logits-sized tensor.

Gradients are compared per parameter against the largest entry of that parameter's gradient: an element-wise
relative test is meaningless where entries are near zero (e.g. embedding rows of tokens that barely occur), and a
bare absolute one would depend on the loss's scale. Chunking only changes the order of fp32 sums, so agreement
to 1e-4 of the gradient's size is far looser than the ~1e-6 actually seen, yet tight enough that any wrong term
(a missing chunk, a wrong normalisation, a dropped prefix) fails it.
"""

from __future__ import annotations

import copy
from types import SimpleNamespace

import pytest
import torch
from transformers import Glm4Config, Glm4ForCausalLM, GlmConfig, GlmForCausalLM

from core.training import fused_loss
from core.training.fused_loss import (
    causal_lm_loss,
    chunked_linear_cross_entropy,
    chunked_linear_distillation,
    distillation_loss,
    unsupported_reason,
    with_fused_loss,
)

VOCAB, HIDDEN = 1000, 64
CHUNK = 7  # smaller than any batch here and no divisor of it: several chunks, the last one short


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_model(seed: int = 0, hidden: int = HIDDEN, layers: int = 2, glm4: bool = True, tied: bool = False):
    """A random Glm4ForCausalLM (or GlmForCausalLM) with a 1000-token vocabulary."""
    torch.manual_seed(seed)
    config_class, model_class = (Glm4Config, Glm4ForCausalLM) if glm4 else (GlmConfig, GlmForCausalLM)
    config = config_class(
        vocab_size=VOCAB,
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        pad_token_id=0,
        eos_token_id=1,
        tie_word_embeddings=tied,
        initializer_range=0.1,
    )  # 0.02 gives near-uniform logits: weak gradients to compare
    return model_class(config)


def padded_batch(seed: int = 0, rows: int = 3, length: int = 24) -> dict:
    """Right-padded rows with the prompt and the padding masked out of the loss, as the SFT collator makes them."""
    generator = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(2, VOCAB, (rows, length), generator=generator)
    labels, attention_mask = input_ids.clone(), torch.ones_like(input_ids)
    for row in range(rows):
        prompt = 3 + 4 * row
        padding = length - (length - 2 * row)
        labels[row, :prompt] = -100
        if padding:
            input_ids[row, -padding:] = 0
            labels[row, -padding:] = -100
            attention_mask[row, -padding:] = 0
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


def loss_and_grads(model, compute) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    model.zero_grad(set_to_none=True)
    loss = compute()
    loss.backward()
    grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    return loss.detach(), grads


def assert_same(plain, fused, loss_tolerance: float = 1e-5, grad_tolerance: float = 1e-4) -> None:
    (plain_loss, plain_grads), (fused_loss_value, fused_grads) = plain, fused
    assert torch.isfinite(plain_loss)
    assert abs(fused_loss_value.item() - plain_loss.item()) <= loss_tolerance * abs(plain_loss.item()), (
        fused_loss_value,
        plain_loss,
    )
    assert fused_grads.keys() == plain_grads.keys()
    for name, expected in plain_grads.items():
        scale = expected.abs().max().item()
        assert scale > 0, f"{name}: zero gradient, nothing compared"
        error = (fused_grads[name] - expected).abs().max().item()
        assert error <= grad_tolerance * scale, f"{name}: max error {error:.3g} vs gradient size {scale:.3g}"


def compare(model, inputs: dict, **kwargs) -> None:
    plain = loss_and_grads(model, lambda: model(**inputs, **kwargs).loss)
    fused = loss_and_grads(
        model, lambda: causal_lm_loss(model, inputs, kwargs.get("num_items_in_batch"), chunk_size=CHUNK)
    )
    assert_same(plain, fused)
    return plain[1]


@pytest.mark.parametrize(
    "glm4, tied", [(True, False), (False, False), (True, True)], ids=["glm4", "glm", "glm4-tied-embeddings"]
)
def test_full_fine_tuning_matches_the_models_loss(glm4, tied):
    model = tiny_model(glm4=glm4, tied=tied)
    grads = compare(model, padded_batch())
    # the output layer trains here and its gradient is compared (tied: one tensor with the input embeddings)
    assert ("lm_head.weight" in grads) != tied and model.get_output_embeddings().weight.requires_grad


def test_bf16_autocast_matches_the_models_loss():
    """Under autocast lm_head's matmul runs in bf16 in both; the logits are upcast to fp32 for the loss in both.
    The lm_head gradient differs at bf16's precision (2^-8): the chunks' parts are summed in fp32 here, where the
    plain backward rounds one bf16 matmul."""
    model, inputs = tiny_model(), padded_batch()

    def autocast(compute):
        def run():
            with torch.autocast("cpu", dtype=torch.bfloat16):
                return compute()

        return run

    plain = loss_and_grads(model, autocast(lambda: model(**inputs).loss))
    fused = loss_and_grads(model, autocast(lambda: causal_lm_loss(model, inputs, chunk_size=CHUNK)))
    assert_same(plain, fused, loss_tolerance=1e-5, grad_tolerance=1e-2)


def test_lora_matches_with_the_output_layer_frozen():
    from peft import LoraConfig, get_peft_model

    # init_lora_weights=False: B starts random, so A gets a gradient too (with B = 0 it would be trivially 0).
    model = get_peft_model(tiny_model(), LoraConfig(r=4, target_modules="all-linear", init_lora_weights=False))
    grads = compare(model, padded_batch())
    assert grads and all("lora_" in name for name in grads)


def test_lora_with_gradient_checkpointing_matches():
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(tiny_model(), LoraConfig(r=4, target_modules="all-linear", init_lora_weights=False))
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.train()
    compare(model, padded_batch())


def test_prefix_tuning_matches():
    from peft import PrefixTuningConfig, get_peft_model

    model = get_peft_model(tiny_model(), PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=5))
    grads = compare(model, padded_batch())
    assert list(grads) == ["prompt_encoder.default.embedding.weight"]


def test_prefix_tuning_with_projection_matches():
    from peft import PrefixTuningConfig, get_peft_model

    model = get_peft_model(
        tiny_model(),
        PrefixTuningConfig(
            task_type="CAUSAL_LM", num_virtual_tokens=5, prefix_projection=True, encoder_hidden_size=HIDDEN
        ),
    )
    assert len(compare(model, padded_batch())) > 1


def test_packed_batch_matches():
    from core.training.runner import make_collator

    generator = torch.Generator().manual_seed(1)
    samples = []
    for length, prompt in ((9, 3), (15, 6), (11, 2)):
        ids = torch.randint(2, VOCAB, (length,), generator=generator).tolist()
        samples.append({"input_ids": ids, "labels": [-100] * prompt + ids[prompt:]})
    batch = make_collator(None, packing=True)(samples)
    assert batch["input_ids"].shape[0] == 1 and batch["position_ids"][0].tolist().count(0) == 3
    compare(tiny_model(), dict(batch))


def test_num_items_in_batch_normalises_as_the_model_does():
    inputs = padded_batch()
    counted = int((inputs["labels"][:, 1:] != -100).sum())
    # As under gradient accumulation: this micro-batch is part of a larger one, so the count exceeds its own.
    compare(tiny_model(), inputs, num_items_in_batch=torch.tensor(2 * counted + 3))


def test_function_matches_transformers_formula_with_bias_and_bf16():
    from transformers.loss.loss_utils import ForCausalLMLoss

    generator = torch.Generator().manual_seed(2)
    labels = torch.randint(0, VOCAB, (2, 10), generator=generator)
    labels[0, :4] = -100
    for dtype, tolerance in ((torch.float32, 1e-5), (torch.bfloat16, 2e-2)):
        hidden = torch.randn(2, 10, HIDDEN, generator=generator).to(dtype).requires_grad_()
        weight = (0.1 * torch.randn(VOCAB, HIDDEN, generator=generator)).to(dtype).requires_grad_()
        bias = torch.randn(VOCAB, generator=generator).to(dtype).requires_grad_()
        reference = ForCausalLMLoss(torch.nn.functional.linear(hidden, weight, bias), labels, VOCAB)
        reference_grads = torch.autograd.grad(reference, (hidden, weight, bias))
        chunked = chunked_linear_cross_entropy(hidden, weight, labels, bias, chunk_size=CHUNK)
        grads = torch.autograd.grad(chunked, (hidden, weight, bias))
        assert chunked.dtype == torch.float32  # computed in fp32 whatever the inputs' dtype, as transformers does
        assert abs(chunked.item() - reference.item()) <= tolerance * reference.item()
        for got, expected in zip(grads, reference_grads):
            assert got.dtype == expected.dtype
            assert (got.float() - expected.float()).abs().max() <= tolerance * expected.float().abs().max()
    per_position = chunked_linear_cross_entropy(hidden.float(), weight.float(), labels, bias.float(), reduction="none")
    assert per_position.shape == labels.shape and (per_position[:, -1] == 0).all() and (per_position[0, :3] == 0).all()
    total = chunked_linear_cross_entropy(hidden.float(), weight.float(), labels, bias.float(), reduction="sum")
    assert torch.allclose(per_position.sum(), total)


def distillation_pair():
    student = tiny_model(seed=0, layers=1)
    teacher = tiny_model(seed=1, hidden=96, layers=2).requires_grad_(False).eval()
    return student, teacher


@pytest.mark.parametrize("teacher_dtype", [torch.float32, torch.bfloat16])
def test_distillation_equals_the_distillation_trainers_loss(teacher_dtype):
    from core.training.distillation import DistillationTrainer

    student, teacher = distillation_pair()
    teacher.to(teacher_dtype)
    inputs, alpha, temperature = padded_batch(), 0.3, 2.0
    trainer = SimpleNamespace(teacher=teacher, alpha=alpha, temperature=temperature)  # all compute_loss reads
    plain = loss_and_grads(student, lambda: DistillationTrainer.compute_loss(trainer, student, inputs))
    fused = loss_and_grads(
        student,
        lambda: distillation_loss(student, teacher, inputs, alpha=alpha, temperature=temperature, chunk_size=CHUNK),
    )
    assert_same(plain, fused)


def test_distillation_kl_alone_and_with_num_items():
    """alpha = 1 leaves only T^2 * KL; with num_items_in_batch both terms are sums over that count."""
    generator = torch.Generator().manual_seed(3)
    labels = torch.randint(0, VOCAB, (2, 12), generator=generator)
    labels[1, :5] = -100
    hidden = torch.randn(2, 12, HIDDEN, generator=generator, requires_grad=True)
    weight = 0.1 * torch.randn(VOCAB, HIDDEN, generator=generator)
    teacher_hidden, teacher_weight = (
        torch.randn(2, 12, 32, generator=generator),
        torch.randn(VOCAB, 32, generator=generator),
    )
    keep = labels[:, 1:] != -100
    student = (hidden[:, :-1] @ weight.t())[keep] / 3.0
    teacher = (teacher_hidden[:, :-1] @ teacher_weight.t())[keep] / 3.0
    kl = torch.nn.functional.kl_div(student.log_softmax(-1), teacher.log_softmax(-1), log_target=True, reduction="sum")
    for num_items, expected in ((None, kl / keep.sum() * 9), (40, kl / 40 * 9)):
        got = chunked_linear_distillation(
            hidden,
            weight,
            teacher_hidden,
            teacher_weight,
            labels,
            alpha=1.0,
            temperature=3.0,
            chunk_size=CHUNK,
            num_items_in_batch=num_items,
        )
        assert torch.allclose(got, expected, rtol=1e-5)


class LargestTensor(torch.utils._python_dispatch.TorchDispatchMode):  # noqa: SLF001 - the public base class
    """Records the element count of the largest tensor any operation produces (forward and backward)."""

    def __init__(self):
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for leaf in torch.utils._pytree.tree_leaves(out):  # noqa: SLF001 - no public pytree in torch
            if isinstance(leaf, torch.Tensor):
                self.largest = max(self.largest, leaf.numel())
        return out


def largest_tensor(compute) -> int:
    with LargestTensor() as mode:
        compute().backward()
    return mode.largest


def test_no_tensor_as_large_as_the_logits():
    """The memory saving, measured without timing: the largest tensor made during forward + backward. The plain
    loss makes [tokens, vocab] logits (and their log-softmax and gradient); the chunked one nothing above the
    lm_head weight's size or the attention scores, both independent of the vocabulary times the token count."""
    model = tiny_model()
    inputs = padded_batch(rows=4, length=64)
    logits_size = 4 * 64 * VOCAB
    assert largest_tensor(lambda: model(**inputs).loss) >= logits_size
    fused = largest_tensor(lambda: causal_lm_loss(model, inputs, chunk_size=16))
    assert fused <= max(VOCAB * HIDDEN, 4 * 4 * 64 * 64, 16 * VOCAB) < logits_size / 3


def test_unsupported_output_layers_are_named():
    from peft import LoraConfig, get_peft_model

    assert unsupported_reason(tiny_model()) is None
    lora_on_head = get_peft_model(tiny_model(), LoraConfig(r=4, target_modules=["q_proj", "lm_head"]))
    assert "not a plain Linear" in unsupported_reason(lora_on_head)


def test_trainer_falls_back_to_the_models_loss_where_chunking_cannot_stand_in(tmp_path, monkeypatch):
    """LoRA on lm_head: the head's output is not hidden @ weight^T, so the trainer computes the full logits."""
    from peft import LoraConfig, get_peft_model

    from core.training.checkpointing import CheckpointingTrainer

    calls = []
    monkeypatch.setattr(fused_loss, "causal_lm_loss", lambda *a, **k: calls.append(1))
    model = get_peft_model(tiny_model(), LoraConfig(r=4, target_modules=["q_proj", "lm_head"]))
    logged = train(
        with_fused_loss(CheckpointingTrainer),
        model,
        equal_length_samples(2),
        tmp_path,
        batch=2,
        accumulation=1,
        steps=1,
    )
    assert not calls and len(logged) == 1 and logged[0] > 0


# ---- through the Trainer -------------------------------------------------------------------------------------


def equal_length_samples(count: int, length: int = 16, seed: int = 4) -> list[dict]:
    """Prompts of very different lengths: a per-micro-batch mean would then differ from the accumulated one."""
    generator = torch.Generator().manual_seed(seed)
    samples = []
    for index in range(count):
        ids = torch.randint(2, VOCAB, (length,), generator=generator)
        labels = ids.clone()
        labels[: 2 if index % 2 else 12] = -100
        samples.append({"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels})
    return samples


def train(trainer_class, model, samples, tmp_path, batch: int, accumulation: int, steps: int, evaluate=None, **extra):
    from transformers import TrainingArguments, default_data_collator

    args = TrainingArguments(
        output_dir=str(tmp_path),
        per_device_train_batch_size=batch,
        gradient_accumulation_steps=accumulation,
        max_steps=steps,
        learning_rate=0.1,
        optim="sgd",
        lr_scheduler_type="constant",
        max_grad_norm=0.0,  # no clipping: the
        logging_steps=1,
        save_strategy="no",
        report_to="none",  # gradient's scale shows
        use_cpu=True,
        disable_tqdm=True,
        seed=0,
        data_seed=0,
        dataloader_num_workers=0,
        remove_unused_columns=False,
    )
    trainer = trainer_class(model=model, args=args, train_dataset=samples, data_collator=default_data_collator, **extra)
    trainer.train()
    logged = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    if evaluate is not None:
        logged.append(trainer.evaluate(evaluate)["eval_loss"])
    return logged


def assert_same_parameters(a, b) -> None:
    for (name, x), y in zip(a.named_parameters(), b.parameters()):
        assert (x - y).abs().max() <= 1e-5 * y.abs().max(), name


def test_trainer_with_fused_loss_trains_as_the_plain_one(tmp_path, monkeypatch):
    """Gradient accumulation, SGD (so a wrongly scaled gradient would show), the lm_head training: the same
    logged losses, the same weights after two steps and the same evaluation loss; and the chunked loss really
    ran (for evaluation too)."""
    from core.training.checkpointing import CheckpointingTrainer

    calls = []
    real = fused_loss.causal_lm_loss
    monkeypatch.setattr(fused_loss, "causal_lm_loss", lambda *a, **k: calls.append(1) or real(*a, **k))
    plain_model, samples = tiny_model(), equal_length_samples(8)
    fused_model = copy.deepcopy(plain_model)
    plain = train(
        CheckpointingTrainer,
        plain_model,
        samples,
        tmp_path / "plain",
        batch=2,
        accumulation=2,
        steps=2,
        evaluate=samples[:3],
    )
    assert not calls
    fused = train(
        with_fused_loss(CheckpointingTrainer),
        fused_model,
        samples,
        tmp_path / "fused",
        batch=2,
        accumulation=2,
        steps=2,
        evaluate=samples[:3],
    )
    assert len(calls) == 4 + 1  # 2 steps x 2 micro-batches, then one evaluation batch
    assert fused == pytest.approx(plain, rel=1e-5)
    assert_same_parameters(fused_model, plain_model)


def test_fused_distillation_trainer_accumulates_exactly(tmp_path):
    """One step over two samples, as one batch of 2 or as 2 accumulated batches of 1: the same logged loss and
    the same update. The loss is normalised by the Trainer's num_items_in_batch, so micro-batches with different
    token counts weigh as they should. (The plain DistillationTrainer fails this: its per-batch mean is taken
    as already scaled for accumulation, so with 2 micro-batches it logs about twice the loss and its update
    is 2.3x as large here.)"""
    from core.training.distillation import DistillationTrainer

    student, teacher = distillation_pair()
    samples = equal_length_samples(2)
    trainer_class = with_fused_loss(DistillationTrainer)
    extra = dict(teacher=teacher, alpha=0.5, temperature=2.0)
    whole = copy.deepcopy(student)
    logged_whole = train(trainer_class, whole, samples, tmp_path / "whole", batch=2, accumulation=1, steps=1, **extra)
    accumulated = copy.deepcopy(student)
    logged_accumulated = train(
        trainer_class, accumulated, samples, tmp_path / "accumulated", batch=1, accumulation=2, steps=1, **extra
    )
    assert logged_accumulated == pytest.approx(logged_whole, rel=1e-5)
    assert_same_parameters(accumulated, whole)
    assert any((a - b).abs().max() > 1e-3 for a, b in zip(whole.parameters(), student.parameters()))
