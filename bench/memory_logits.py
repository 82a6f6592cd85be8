"""Peak memory of the loss with GLM's real vocabulary: the plain loss (full logits) against the chunked one
(core/training/fused_loss.py), one fresh process each.

    python bench/memory_logits.py [--steps 4] [--threads 2] [--chunk-size N] [--cutoff 1024] [--batch 2]

A random GLM-4 with the 151,552-token vocabulary but a tiny body (hidden 128, 2 layers, 2 heads, 1 KV head,
head_dim 64), LoRA on all linear layers, trains a few steps through the project's CheckpointingTrainer on
random samples that fill the cutoff (the first eighth of each a prompt, masked out of the loss). With so small
a body nearly all memory is the output side: the logits [batch x cutoff x vocab] in fp32, their log-softmax and
their gradient. Each configuration prints one JSON line: peak RSS (ru_maxrss of its own process), RSS just
before the model was built (the Python runtime and libraries), the losses logged at every step, and seconds
per step (on a shared CPU only a rough figure).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

VOCAB = 151_552
ARCHITECTURE = dict(
    vocab_size=VOCAB,
    hidden_size=128,
    intermediate_size=256,
    num_hidden_layers=2,
    num_attention_heads=2,
    num_key_value_heads=1,
    head_dim=64,
)
CONFIGS = ("plain", "chunked")


def samples(count: int, cutoff: int, seed: int = 0) -> list[dict]:
    import torch

    generator = torch.Generator().manual_seed(seed)
    rows = []
    for _ in range(count):
        ids = torch.randint(0, 151_329, (cutoff,), generator=generator)  # below GLM's special tokens
        labels = ids.clone()
        labels[: cutoff // 8] = -100
        rows.append({"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels})
    return rows


def child(name: str, steps: int, cutoff: int, batch: int, threads: int, chunk_size: int | None) -> dict:
    """Runs in its own process, so ru_maxrss is this configuration's alone."""
    import psutil
    import torch

    torch.set_num_threads(threads)
    from peft import LoraConfig, get_peft_model
    from transformers import Glm4Config, Glm4ForCausalLM, TrainingArguments, default_data_collator

    from core.training.checkpointing import CheckpointingTrainer
    from core.training.fused_loss import default_chunk_size, with_fused_loss

    before = psutil.Process().memory_info().rss
    torch.manual_seed(0)
    model = Glm4ForCausalLM(Glm4Config(**ARCHITECTURE))
    model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, target_modules="all-linear", task_type="CAUSAL_LM"))
    trainer_class = CheckpointingTrainer
    if name == "chunked":
        trainer_class = with_fused_loss(CheckpointingTrainer)
        trainer_class.fused_chunk_size = chunk_size
    args = TrainingArguments(
        output_dir=tempfile.mkdtemp(prefix=f"logits-{name}-"),
        per_device_train_batch_size=batch,
        max_steps=steps,
        learning_rate=1e-3,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        disable_tqdm=True,
        seed=0,
        data_seed=0,
        dataloader_num_workers=0,
        remove_unused_columns=False,
    )
    trainer = trainer_class(
        model=model, args=args, train_dataset=samples(steps * batch, cutoff), data_collator=default_data_collator
    )
    start = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB
    losses = [round(entry["loss"], 5) for entry in trainer.state.log_history if "loss" in entry]
    return {
        "config": name,
        "chunk_size": (chunk_size or default_chunk_size(VOCAB)) if name == "chunked" else None,
        "peak_rss_gb": round(peak / 1e9, 2),
        "rss_before_model_gb": round(before / 1e9, 2),
        "final_loss": losses[-1],
        "losses": losses,
        "seconds_per_step": round(seconds / steps, 1),
        "tokens": f"{batch} x {cutoff}",
        "threads": threads,
    }


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--cutoff", type=int, default=1024)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--chunk-size", type=int, default=None, help="tokens per chunk (default: ~128 MiB logits)")
    parser.add_argument("--configs", default=",".join(CONFIGS))
    parser.add_argument("--child", choices=CONFIGS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.steps, args.cutoff, args.batch, args.threads, args.chunk_size)))
        return 0
    for name in args.configs.split(","):
        command = [
            sys.executable,
            __file__,
            "--child",
            name,
            "--steps",
            str(args.steps),
            "--cutoff",
            str(args.cutoff),
            "--batch",
            str(args.batch),
            "--threads",
            str(args.threads),
        ]
        if args.chunk_size:
            command += ["--chunk-size", str(args.chunk_size)]
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        lines = [line for line in result.stdout.splitlines() if line.startswith('{"config"')]
        if result.returncode or not lines:
            print(json.dumps({"config": name, "failed": result.returncode, "stderr": result.stderr[-2000:]}))
            continue
        print(lines[-1], flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
