"""Training throughput: the workbench's LoRA pipeline against the usual recipe, one fresh process per run.

    python bench/throughput.py [--steps 30] [--cutoff 512] [--batch 4] [--repeat 3]
    python bench/throughput.py --cutoff 48        # samples longer than the cutoff: every row fills it
    python bench/throughput.py --profile          # where a workbench LoRA step's time goes (cProfile)
    python bench/throughput.py --methods          # every method through the workbench, same data and settings

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
METHODS = ("lora", "qlora", "freeze", "full", "ptuning_v2")


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
    args = TrainingArguments(
        output_dir=tempfile.mkdtemp(),
        max_steps=steps,
        per_device_train_batch_size=batch,
        learning_rate=2e-4,
        logging_steps=10,
        report_to="none",
        save_strategy="no",
        use_cpu=True,
        disable_tqdm=True,
        remove_unused_columns=False,
        seed=42,
    )
    collator = DataCollatorForSeq2Seq(tokenizer, padding="max_length", max_length=cutoff, label_pad_token_id=-100)
    trainer = Trainer(model=model, args=args, train_dataset=data.train, data_collator=collator)
    started = time.time()
    trainer.train()
    seconds = time.time() - started
    real_tokens = _real_tokens(data.train, steps * batch)
    return {
        "samples_per_second": steps * batch / seconds,
        "real_tokens_per_second": real_tokens / seconds,
        "seconds": seconds,
    }


def workbench(model_path: str, steps: int, cutoff: int, batch: int, packing: bool, method: str = "lora") -> dict:
    from core.config import RunConfig
    from core.data.dataset import tokenize_dataset
    from core.models.loader import load_tokenizer
    from core.training.runner import TrainingSession

    config = RunConfig(
        model_name_or_path=model_path,
        dataset="advertise_gen",
        max_steps=steps,
        num_train_epochs=0,
        per_device_train_batch_size=batch,
        cutoff_len=cutoff,
        learning_rate=2e-4,
        logging_steps=10,
        packing=packing,
        lr_scheduler_type="linear",
        finetuning_type=method,
    )
    started = time.time()
    status = TrainingSession(config, tempfile.mkdtemp()).run()
    assert status["state"] == "finished", status
    seconds = status["elapsed"]
    data = tokenize_dataset("advertise_gen", load_tokenizer(model_path), "auto", cutoff)
    real_tokens = _real_tokens(data.train, steps * batch)
    return {
        "samples_per_second": steps * batch / seconds,
        "real_tokens_per_second": real_tokens / seconds,
        "seconds": seconds,
        "wall_with_loading": time.time() - started,
    }


def _median_run(found: list[dict]) -> dict:
    """The run with the median real tokens/s (all its figures together), with the spread across runs."""
    good = sorted((r for r in found if "real_tokens_per_second" in r), key=lambda r: r["real_tokens_per_second"])
    if not good:
        return found[-1]
    speeds = [r["real_tokens_per_second"] for r in good]
    return {
        **good[len(good) // 2],
        "runs": len(good),
        "min_tokens_per_second": speeds[0],
        "max_tokens_per_second": speeds[-1],
    }


def _real_tokens(samples: list[dict], count: int) -> int:
    """Tokens of the first `count` samples seen (cycling); the data order differs, but the set is small and
    every pipeline passes over it several times, so the average is what matters."""
    lengths = [len(s["input_ids"]) for s in samples]
    return int(sum(lengths) / len(lengths) * count)


# What a training step is made of, by the function that does it: cumulative seconds under each (they nest, so the
# parts of "training step" are listed beneath it).
PROFILE_PARTS = (
    ("training step (forward + backward)", "training_step"),
    ("  forward", "compute_loss"),
    ("  backward", "backward", "torch/_tensor"),
    ("optimizer step", "step", "optim"),
    ("batch collation", "__call__", "data_collator"),
    ("workbench callbacks", "on_step_end", "callbacks"),
    ("metrics logging", "on_log", "callbacks"),
    ("tokenizing the dataset", "tokenize_dataset"),
    ("loading the model", "load_model"),
)


def profile(model: str, steps: int, cutoff: int, batch: int) -> None:
    """Run the workbench pipeline under cProfile and print where the time went."""
    import cProfile
    import pstats

    profiler = cProfile.Profile()
    profiler.enable()
    result = workbench(model, steps, cutoff, batch, packing=False)
    profiler.disable()
    stats = pstats.Stats(profiler).stats
    total = result["wall_with_loading"]
    print(f"wall {total:.2f} s for {steps} steps (training loop {result['seconds']:.2f} s)")
    for label, name, *module in PROFILE_PARTS:
        seconds = sum(
            entry[3]
            for (path, _, function), entry in stats.items()
            if function == name and (not module or module[0] in path)
        )
        print(f"{label:38s} {seconds:7.2f} s  {100 * seconds / total:5.1f} %")


def child(model: str, pipeline: str, steps: int, cutoff: int, batch: int) -> None:
    from core.models.loader import configure_threads

    configure_threads()
    if pipeline == "baseline":
        result = baseline(model, steps, cutoff, batch)
    elif pipeline.startswith("method:"):
        result = workbench(model, steps, cutoff, batch, packing=False, method=pipeline.removeprefix("method:"))
    else:
        result = workbench(model, steps, cutoff, batch, packing=pipeline.endswith("packing"))
    result["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({k: round(v, 2) if isinstance(v, float) else v for k, v in result.items()}))


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--cutoff", type=int, default=512)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--repeat", type=int, default=3, help="fresh runs per pipeline; the median is reported")
    parser.add_argument("--child", nargs=2, metavar=("MODEL", "PIPELINE"))
    parser.add_argument("--profile", action="store_true", help="profile the workbench pipeline on the 25M model")
    parser.add_argument("--methods", action="store_true", help="every method through the workbench pipeline")
    args = parser.parse_args()
    if args.child:
        child(*args.child, args.steps, args.cutoff, args.batch)
        return 0
    from memory_cpu import build

    from core.models.demo import ensure_demo_model

    medium = Path(tempfile.mkdtemp(prefix="bench-25m-"))
    build(medium)
    if args.profile:
        from core.models.loader import configure_threads

        configure_threads()
        profile(str(medium), args.steps, args.cutoff, args.batch)
        return 0
    pipelines = tuple(f"method:{m}" for m in METHODS) if args.methods else PIPELINES
    for name, model in (("demo 4.7M", str(ensure_demo_model())), ("GLM-4 25M", str(medium))):
        runs: dict[str, list[dict]] = {pipeline: [] for pipeline in pipelines}
        for _ in range(args.repeat):  # interleaved, so a slow spell of the shared machine hits every pipeline
            for pipeline in pipelines:
                out = subprocess.run(
                    [
                        sys.executable,
                        __file__,
                        "--child",
                        model,
                        pipeline,
                        "--steps",
                        str(args.steps),
                        "--cutoff",
                        str(args.cutoff),
                        "--batch",
                        str(args.batch),
                    ],
                    capture_output=True,
                    text=True,
                )
                runs[pipeline].append(
                    json.loads(out.stdout.strip().splitlines()[-1])
                    if out.returncode == 0
                    else {"error": out.stderr[-500:]}
                )
        results = {pipeline: _median_run(found) for pipeline, found in runs.items()}
        for pipeline in pipelines:
            print(name, pipeline, json.dumps(results[pipeline]), flush=True)
        if args.methods:
            continue
        base = results["baseline"].get("real_tokens_per_second")
        for pipeline in PIPELINES[1:]:
            ours = results[pipeline].get("real_tokens_per_second")
            if base and ours:
                print(f"{name} {pipeline}: {ours / base:.2f}x the baseline's real tokens/s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
