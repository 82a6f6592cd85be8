"""Training throughput: the workbench's LoRA pipeline against the usual recipe, one fresh process per run.

    python bench/throughput.py [--steps 30] [--cutoff 512] [--batch 4]

The baseline is written plainly with transformers' Trainer the way THUDM's official fine-tuning scripts do it:
every sample padded to cutoff_len, no packing, no length grouping. It uses the same model, data, template, loss
mask, LoRA settings, optimizer and steps as the workbench runs, so the only differences are the pipeline's.
Reported: samples/s, real (non-padding) tokens/s, peak RSS (fresh process each; the Python runtime included).
Models: the demo GLM-4 (4.7M parameters) and a 25M random GLM-4 (hidden 512, 8 layers).
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
sys.path.insert(0, str(Path(__file__).resolve().parent))

PIPELINES = ("baseline", "workbench", "workbench+packing")


def baseline(model_path: str, steps: int, cutoff: int, batch: int) -> dict:
    """THUDM-style: pad to max length, plain Trainer, no grouping, no packing."""
    import torch
    from transformers import DataCollatorForSeq2Seq, Trainer, TrainingArguments

    from core.config import RunConfig
    from core.data.dataset import tokenize_dataset
    from core.methods import get_method
    from core.models.loader import load_model, load_tokenizer

    tokenizer = load_tokenizer(model_path)
    tokenizer.padding_side = "right"
    data = tokenize_dataset("advertise_gen", tokenizer, "auto", cutoff)
    model = get_method("lora").prepare(load_model(model_path, dtype=torch.float32, device="cpu"), RunConfig())
    args = TrainingArguments(output_dir=tempfile.mkdtemp(), max_steps=steps, per_device_train_batch_size=batch,
                             learning_rate=2e-4, logging_steps=10, report_to="none", save_strategy="no",
                             use_cpu=True, disable_tqdm=True, remove_unused_columns=False, seed=42)
    collator = DataCollatorForSeq2Seq(tokenizer, padding="max_length", max_length=cutoff, label_pad_token_id=-100)
    trainer = Trainer(model=model, args=args, train_dataset=data.train, data_collator=collator)
    started = time.time()
    trainer.train()
    seconds = time.time() - started
    real_tokens = _real_tokens(data.train, steps * batch)
    return {"samples_per_second": steps * batch / seconds, "real_tokens_per_second": real_tokens / seconds,
            "seconds": seconds}


def workbench(model_path: str, steps: int, cutoff: int, batch: int, packing: bool) -> dict:
    from core.config import RunConfig
    from core.data.dataset import tokenize_dataset
    from core.models.loader import load_tokenizer
    from core.training.runner import TrainingSession

    config = RunConfig(model_name_or_path=model_path, dataset="advertise_gen", max_steps=steps, num_train_epochs=0,
                       per_device_train_batch_size=batch, cutoff_len=cutoff, learning_rate=2e-4, logging_steps=10,
                       packing=packing, lr_scheduler_type="linear")
    started = time.time()
    status = TrainingSession(config, tempfile.mkdtemp()).run()
    assert status["state"] == "finished", status
    seconds = status["elapsed"]
    data = tokenize_dataset("advertise_gen", load_tokenizer(model_path), "auto", cutoff)
    real_tokens = _real_tokens(data.train, steps * batch)
    return {"samples_per_second": steps * batch / seconds, "real_tokens_per_second": real_tokens / seconds,
            "seconds": seconds, "wall_with_loading": time.time() - started}


def _real_tokens(samples: list[dict], count: int) -> int:
    """Tokens of the first `count` samples seen (cycling); the data order differs, but the set is small and
    every pipeline passes over it several times, so the average is what matters."""
    lengths = [len(s["input_ids"]) for s in samples]
    return int(sum(lengths) / len(lengths) * count)


def child(model: str, pipeline: str, steps: int, cutoff: int, batch: int) -> None:
    from core.models.loader import configure_threads

    configure_threads()
    if pipeline == "baseline":
        result = baseline(model, steps, cutoff, batch)
    else:
        result = workbench(model, steps, cutoff, batch, packing=pipeline.endswith("packing"))
    result["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({k: round(v, 2) if isinstance(v, float) else v for k, v in result.items()}))


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--cutoff", type=int, default=512)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--child", nargs=2, metavar=("MODEL", "PIPELINE"))
    args = parser.parse_args()
    if args.child:
        child(*args.child, args.steps, args.cutoff, args.batch)
        return 0
    from core.models.demo import ensure_demo_model
    from memory_cpu import build

    medium = Path(tempfile.mkdtemp(prefix="bench-25m-"))
    build(medium)
    for name, model in (("demo 4.7M", str(ensure_demo_model())), ("GLM-4 25M", str(medium))):
        results = {}
        for pipeline in PIPELINES:
            out = subprocess.run([sys.executable, __file__, "--child", model, pipeline, "--steps", str(args.steps),
                                  "--cutoff", str(args.cutoff), "--batch", str(args.batch)], capture_output=True,
                                 text=True)
            results[pipeline] = json.loads(out.stdout.strip().splitlines()[-1]) if out.returncode == 0 else {
                "error": out.stderr[-500:]}
            print(name, pipeline, json.dumps(results[pipeline]), flush=True)
        base = results["baseline"].get("real_tokens_per_second")
        for pipeline in PIPELINES[1:]:
            ours = results[pipeline].get("real_tokens_per_second")
            if base and ours:
                print(f"{name} {pipeline}: {ours / base:.2f}x the baseline's real tokens/s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
