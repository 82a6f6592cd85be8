"""GPU check: every method for ~20 steps on a random GLM-4-9B-shaped model (bf16) at cutoff 1024.

    python bench/gpu_methods.py [--steps 20] [--cutoff 1024] [--batch 2] [--out results.json]

Builds `GlmForCausalLM` with glm-4-9b-chat-hf's shape (40 layers, hidden 4096, 32 heads, 2 kv heads, ffn 13696,
vocab 151552) and random weights directly on the GPU, saves it once, then runs each method through the
workbench's own TrainingSession and reports real tokens/s, MFU and peak GPU memory next to the estimator's
figure (core/estimate.py). Methods whose estimate exceeds the card are reported as skipped, not attempted.
Outputs are not saved (that would only time the disk). Finishes in about 6 minutes on an H100.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

GLM4_9B = dict(
    vocab_size=151552,
    hidden_size=4096,
    intermediate_size=13696,
    num_hidden_layers=40,
    num_attention_heads=32,
    num_key_value_heads=2,
    head_dim=128,
    max_position_embeddings=8192,
)
PEAK_BF16_FLOPS = 989e12  # H100 SXM and H200 dense bf16, the vendor's figure
METHODS = ("lora", "qlora", "freeze", "ptuning_v2", "full")


def build_model(folder: Path, layers: int) -> None:
    import torch
    from transformers import GlmConfig, GlmForCausalLM

    from core.models.demo import STOP_TOKENS, build_tokenizer

    tokenizer = build_tokenizer()
    stop_ids = [tokenizer.convert_tokens_to_ids(token) for token in STOP_TOKENS]
    config = GlmConfig(
        **{**GLM4_9B, "num_hidden_layers": layers}, pad_token_id=tokenizer.pad_token_id, eos_token_id=stop_ids
    )
    with torch.device("cuda"):
        model = GlmForCausalLM._from_config(config, dtype=torch.bfloat16)  # noqa: SLF001 - the public way to build with a dtype
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    del model
    torch.cuda.empty_cache()


def write_dataset(path: Path, samples: int, chars: int = 2500) -> None:
    """Conversations from our own corpus text, a question and an answer of `chars` characters each: 2500
    fills cutoff 1024 with the answer starting inside it."""
    corpus = (Path(__file__).resolve().parents[1] / "assets" / "demo_model" / "corpus.txt").read_text(encoding="utf-8")
    with open(path, "w", encoding="utf-8") as handle:
        for index in range(samples):
            start = (index * 997) % (len(corpus) - 2 * chars)
            handle.write(
                json.dumps(
                    {
                        "messages": [
                            {"role": "user", "content": corpus[start : start + chars]},
                            {"role": "assistant", "content": corpus[start + chars : start + 2 * chars]},
                        ]
                    },
                    ensure_ascii=False,
                )
                + "\n"
            )


def flops_per_token(total: int, trainable: int, layers: int, cutoff: int, attn_width: int) -> float:
    """Model FLOPs per token: forward 2N, backward 2N (activation grads) + 2T (weight grads of what trains),
    plus causal attention (QK^T and AV: 2*L*s*width forward, twice that backward). Recomputation from
    gradient checkpointing is not counted (the usual MFU convention)."""
    attention = 2 * layers * cutoff * attn_width
    return 2 * total + attention + 2 * total + 2 * trainable + 2 * attention


def run_method(name: str, model_dir: Path, data: Path, args, shape) -> dict:
    import torch

    import core.methods as registry
    from core.config import RunConfig
    from core.estimate import estimate_memory
    from core.runs import read_metrics
    from core.training.runner import TrainingSession

    config = RunConfig(
        model_name_or_path=str(model_dir),
        dataset=str(data),
        finetuning_type=name,
        cutoff_len=args.cutoff,
        per_device_train_batch_size=args.batch,
        max_steps=args.steps,
        learning_rate=1e-4,
        logging_steps=1,
        gradient_checkpointing=args.gradient_checkpointing,
        lora_rank=8,
        pre_seq_len=64,
        freeze_trainable_layers=2,
    )
    estimate = estimate_memory(shape, config, on_gpu=True)
    card = torch.cuda.get_device_properties(0).total_memory
    result = {
        "method": name,
        "estimate_gib": round(estimate.total / 2**30, 2),
        "estimate_parts_gib": estimate.parts_gib(),
    }
    if estimate.total > 0.97 * card:
        return {**result, "skipped": f"estimated {estimate.total / 2**30:.0f} GiB > card {card / 2**30:.0f} GiB"}
    # Measure training, not the disk: this process never saves the outputs.
    registry.METHODS[name] = dataclasses.replace(registry.METHODS[name], save=lambda *unused: None)
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    run_dir = Path(tempfile.mkdtemp(prefix=f"gpu-{name}-"))
    started = time.time()
    status = TrainingSession(config, run_dir).run()
    wall = time.time() - started
    if status.get("state") != "finished":
        return {**result, "error": status.get("error", status.get("state"))}
    steady = [m for m in read_metrics(run_dir) if m.get("loss") is not None][3:]  # skip warm-up steps
    tokens_per_second = sum(m["tokens_per_second"] for m in steady) / max(len(steady), 1)
    trainable, total = status["trainable_params"], status["total_params"]
    mfu = (
        tokens_per_second
        * flops_per_token(total, trainable, shape.layers, args.cutoff, shape.heads * shape.head_dim)
        / PEAK_BF16_FLOPS
    )
    peak = torch.cuda.max_memory_allocated()
    shutil.rmtree(run_dir, ignore_errors=True)
    return {
        **result,
        "tokens_per_second": round(tokens_per_second),
        "mfu": round(mfu, 3),
        "peak_gib": round(peak / 2**30, 2),
        "estimate_over_measured": round(estimate.total / peak, 2),
        "trainable_params": trainable,
        "total_params": total,
        "final_loss": status.get("final_loss"),
        "wall_seconds": round(wall, 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--cutoff", type=int, default=1024)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--layers", type=int, default=40, help="fewer for a quick smoke test")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--gradient-checkpointing", action="store_true")
    parser.add_argument("--out", default="gpu_methods.json")
    args = parser.parse_args()

    import torch
    from transformers import GlmConfig

    from core.estimate import ModelShape
    from core.models.loader import configure_threads

    configure_threads()
    work = Path(tempfile.mkdtemp(prefix="gpu-bench-"))
    started = time.time()
    build_model(work / "model", args.layers)
    write_dataset(work / "data.jsonl", samples=max(64, args.steps * args.batch * 2))
    shape = ModelShape.from_config(GlmConfig(**{**GLM4_9B, "num_hidden_layers": args.layers}))
    report = {
        "device": torch.cuda.get_device_name(0),
        "torch": torch.__version__,
        "steps": args.steps,
        "cutoff_len": args.cutoff,
        "batch": args.batch,
        "layers": args.layers,
        "gradient_checkpointing": args.gradient_checkpointing,
        "parameters": shape.total_params,
        "build_seconds": round(time.time() - started, 1),
        "methods": [],
    }
    print(json.dumps({k: v for k, v in report.items() if k != "methods"}), flush=True)
    for name in args.methods.split(","):
        result = run_method(name, work / "model", work / "data.jsonl", args, shape)
        report["methods"].append(result)
        print(json.dumps(result), flush=True)
        Path(args.out).write_text(json.dumps(report, indent=2))
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
