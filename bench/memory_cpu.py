"""Estimated vs measured peak memory on the CPU, one fresh process per method.

    python bench/memory_cpu.py [--cutoff 512] [--batch 4]

A random GLM-4 of about 25M parameters (hidden 512, 8 layers) trains each method for 10 steps on
conversations long enough to fill cutoff_len (the estimate is for full-length batches; dynamic padding makes
short data use less). Measured = peak resident memory of the training process minus its resident memory just
before the model was loaded (the Python runtime and libraries are not the run's). The estimate is
core/estimate.py with on_gpu=False (fp32 everywhere, no CUDA context).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

ARCHITECTURE = dict(
    hidden_size=512,
    intermediate_size=1408,
    num_hidden_layers=8,
    num_attention_heads=8,
    num_key_value_heads=2,
    head_dim=64,
)
METHODS = ("lora", "qlora", "freeze", "full", "ptuning_v2")


def build(folder: Path) -> None:
    import torch
    from transformers import Glm4Config, Glm4ForCausalLM

    from core.models.demo import STOP_TOKENS, build_tokenizer

    tokenizer = build_tokenizer()
    torch.manual_seed(0)
    model = Glm4ForCausalLM(
        Glm4Config(
            vocab_size=len(tokenizer),
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=[tokenizer.convert_tokens_to_ids(t) for t in STOP_TOKENS],
            **ARCHITECTURE,
        )
    )
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)


def child(model: str, method: str, cutoff: int, batch: int) -> None:
    """Runs in its own process: so ru_maxrss is this method's alone."""
    import psutil

    from core.config import RunConfig
    from core.estimate import estimate_for_run
    from core.models.loader import configure_threads
    from core.training.runner import TrainingSession

    configure_threads()
    config = RunConfig(
        model_name_or_path=model,
        dataset=str(Path(model) / "long.jsonl"),
        finetuning_type=method,
        max_steps=10,
        cutoff_len=cutoff,
        per_device_train_batch_size=batch,
        learning_rate=1e-4,
    )
    before = psutil.Process().memory_info().rss
    status = TrainingSession(config, tempfile.mkdtemp(prefix=f"mem-{method}-")).run()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    estimate = estimate_for_run(config, on_gpu=False)
    print(
        json.dumps(
            {
                "method": method,
                "state": status["state"],
                "measured_mib": round((peak - before) / 2**20),
                "estimate_mib": round(estimate.total / 2**20),
                "ratio": round(estimate.total / (peak - before), 2),
            }
        )
    )


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cutoff", type=int, default=512)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--child", nargs=2, metavar=("MODEL", "METHOD"))
    args = parser.parse_args()
    if args.child:
        child(*args.child, args.cutoff, args.batch)
        return 0
    from gpu_methods import write_dataset

    folder = Path(tempfile.mkdtemp(prefix="mem-model-"))
    build(folder)
    write_dataset(folder / "long.jsonl", samples=64, chars=args.cutoff * 2)
    for method in METHODS:
        result = subprocess.run(
            [
                sys.executable,
                __file__,
                "--child",
                str(folder),
                method,
                "--cutoff",
                str(args.cutoff),
                "--batch",
                str(args.batch),
            ],
            capture_output=True,
            text=True,
        )
        print(result.stdout.strip().splitlines()[-1] if result.returncode == 0 else result.stderr[-800:], flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
