"""What a newcomer sees: the train tab's default run on the demo model, timed from Start to finished, and whether
the chat then answers the identity questions as the data does.

    python bench/demo_default.py [--epochs 2 3 4] [--out bench/results/demo_default.json]

Each candidate is the form's defaults (webui/tabs/train.py DEMO_DEFAULTS) with only `num_train_epochs` changed,
in a fresh workspace; the demo model is built once first (its build is timed apart, as a first start's cost).
"Answers" counts the identity set's first questions whose greedy reply is exactly the dataset's answer.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=float, nargs="+", default=[2, 3, 4])
    parser.add_argument("--questions", type=int, default=5)
    parser.add_argument("--out", default="bench/results/demo_default.json")
    args = parser.parse_args()

    from core.chat.engine import GenerationSettings
    from core.data.dataset import load_conversations
    from core.models.loader import prepare_model
    from core.workbench import Workbench
    from webui.tabs.train_handlers import DEMO_DEFAULTS

    started = time.perf_counter()
    prepare_model("demo")
    build_seconds = time.perf_counter() - started
    conversations = load_conversations("identity").conversations[: args.questions]
    results = []
    for epochs in args.epochs:
        with tempfile.TemporaryDirectory() as workspace:
            wb = Workbench(workspace)
            config = DEMO_DEFAULTS.replace(num_train_epochs=epochs)
            started = time.perf_counter()
            run = wb.start_training(config)
            wb.wait_for_job(1800)
            seconds = time.perf_counter() - started
            snapshot = wb.snapshot(run)
            right = 0
            for conversation in conversations:
                question = conversation.messages[0]["content"]
                expected = conversation.messages[1]["content"]
                replies = list(
                    wb.chat_stream(
                        [{"role": "user", "content": question}], "demo", run, settings=GenerationSettings(greedy=True)
                    )
                )
                reply = replies[-1] if replies else ""
                right += reply.strip() == expected.strip()
            results.append(
                {
                    "epochs": epochs,
                    "steps": snapshot.status.get("step"),
                    "state": snapshot.state,
                    "seconds_start_to_finished": round(seconds, 1),
                    "final_loss": snapshot.status.get("final_loss"),
                    "answers_exact": f"{right}/{len(conversations)}",
                }
            )
            print(json.dumps(results[-1], ensure_ascii=False), flush=True)
    record = {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "cpus": os.cpu_count(),
        "load_average": os.getloadavg()[0],
        "demo_model_build_seconds": round(build_seconds, 1),
        "defaults": {
            "finetuning_type": DEMO_DEFAULTS.finetuning_type,
            "learning_rate": DEMO_DEFAULTS.learning_rate,
            "per_device_train_batch_size": DEMO_DEFAULTS.per_device_train_batch_size,
        },
        "runs": results,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(record, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
