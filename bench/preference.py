"""Preference training throughput beside SFT's: the same pairs, the same model, LoRA, one fresh process per run.

    python bench/preference.py [--steps 30] [--batch 4] [--cutoff 512] [--repeat 3]

Data: AdvertiseGen's prompts, each with its own ad (chosen) against another product's ad (rejected), written as an
alpaca pairwise file. SFT trains on the chosen conversations of that file (what SFT does with a pairwise file), so
every stage sees the same prompts and answers. Reported per stage (the median of --repeat runs by tokens/s):

- samples/s: batch rows per second (SFT: conversations; DPO, ORPO: pairs; KTO: single answers);
- pairs/s: pairs' worth of answers per second (DPO, ORPO: samples/s; KTO: half of it; SFT: none);
- tokens/s: non-padding tokens the model trained on per second (a DPO or ORPO pair counts its prompt twice, as the
  model runs it twice); forward passes without gradients (DPO/KTO's reference, KTO's KL term) are not counted;
- peak RSS: the process's peak resident memory, the Python runtime included.
Seconds are the training loop's (status.json `elapsed`), without loading the model and data.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

STAGES = ("sft", "dpo", "orpo", "kto")


def write_pairs(folder: Path) -> str:
    from core.data.readers import read_rows, resolve_dataset

    rows = read_rows(resolve_dataset("advertise_gen"))
    others = list(range(1, len(rows))) + [0]
    random.Random(0).shuffle(others)
    pairs = [
        {"instruction": row["content"], "input": "", "chosen": row["summary"], "rejected": rows[other]["summary"]}
        for row, other in zip(rows, others)
        if rows[other]["summary"] != row["summary"]
    ]
    path = folder / "advertise_gen_pairs.json"
    path.write_text(json.dumps(pairs, ensure_ascii=False), encoding="utf-8")
    return str(path)


def child(stage: str, data: str, steps: int, batch: int, cutoff: int) -> dict:
    from transformers import TrainerCallback

    from core.config import RunConfig
    from core.models.loader import configure_threads
    from core.training.runner import TrainingSession

    class Tokens(TrainerCallback):
        seen = 0

        def on_train_end(self, args, state, control, **kwargs):
            Tokens.seen = state.num_input_tokens_seen

    configure_threads()
    config = RunConfig(
        dataset=data,
        stage=stage,
        max_steps=steps,
        num_train_epochs=0,
        per_device_train_batch_size=batch,
        cutoff_len=cutoff,
        learning_rate=1e-4,
        logging_steps=10,
        lr_scheduler_type="linear",
    )
    status = TrainingSession(config, Path(tempfile.mkdtemp()) / "run", callbacks=[Tokens()]).run()
    assert status["state"] == "finished", status
    seconds = status["elapsed"]
    samples = steps * batch / seconds
    return {
        "samples_per_second": samples,
        "pairs_per_second": {"sft": None, "kto": samples / 2}.get(stage, samples),
        "tokens_per_second": Tokens.seen / seconds,
        "seconds": seconds,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--cutoff", type=int, default=512)
    parser.add_argument("--repeat", type=int, default=3, help="fresh runs per stage; the median is reported")
    parser.add_argument("--child", nargs=2, metavar=("STAGE", "DATA"))
    args = parser.parse_args()
    if args.child:
        result = child(*args.child, args.steps, args.batch, args.cutoff)
        print(json.dumps({k: round(v, 2) if isinstance(v, float) else v for k, v in result.items()}))
        return 0
    from core.models.demo import ensure_demo_model

    ensure_demo_model()
    data = write_pairs(Path(tempfile.mkdtemp(prefix="bench-pairs-")))
    runs: dict[str, list[dict]] = {stage: [] for stage in STAGES}
    for _ in range(args.repeat):  # interleaved, so a slow spell of the shared machine hits every stage
        for stage in STAGES:
            command = [sys.executable, __file__, "--child", stage, data]
            command += ["--steps", str(args.steps), "--batch", str(args.batch), "--cutoff", str(args.cutoff)]
            out = subprocess.run(command, capture_output=True, text=True)
            if out.returncode:
                runs[stage].append({"error": out.stderr[-800:]})
            else:
                runs[stage].append(json.loads(out.stdout.strip().splitlines()[-1]))
    for stage in STAGES:
        good = sorted((r for r in runs[stage] if "tokens_per_second" in r), key=lambda r: r["tokens_per_second"])
        median = good[len(good) // 2] if good else runs[stage][-1]
        print(stage, json.dumps({**median, "runs": len(good)}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
