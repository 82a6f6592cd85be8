"""UI responsiveness while training: latency of a trivial UI event, idle and during a run.

    python bench/ui_latency.py [--calls 40]

Starts the real UI (launch.py) on a free loopback port, then times a cheap event (the train tab's command
preview, which only formats the form) through the UI's own API: first with nothing training, then while a LoRA
run trains the 25M-parameter GLM-4 in the UI's background thread. Reports p50/p95 in milliseconds.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))


def percentiles(samples: list[float]) -> dict:
    ordered = sorted(samples)
    return {
        "p50_ms": round(statistics.median(ordered) * 1000, 1),
        "p95_ms": round(ordered[int(0.95 * (len(ordered) - 1))] * 1000, 1),
    }


def timed_calls(client, form: list, calls: int) -> list[float]:
    samples = []
    for _ in range(calls):
        started = time.perf_counter()
        client.predict(*form, api_name="/command_preview")
        samples.append(time.perf_counter() - started)
    return samples


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=40)
    args = parser.parse_args()
    from gradio_client import Client
    from memory_cpu import build

    from tests.ui_server import running_ui

    model = Path(tempfile.mkdtemp(prefix="bench-25m-"))
    build(model)
    with running_ui(Path(tempfile.mkdtemp()) / "ws") as url:
        client = Client(url, verbose=False)
        parameters = client.view_api(return_format="dict", print_info=False)["named_endpoints"]["/start_training"][
            "parameters"
        ]
        overrides = {"Model": str(model), "Max steps": 100000, "Epochs": 0, "Dataset": "advertise_gen"}
        form = [overrides.get(p["label"], p["parameter_default"]) for p in parameters]
        idle = timed_calls(client, form, args.calls)
        print("started:", client.predict(*form, api_name="/start_training"), flush=True)
        while (client.predict("", api_name="/poll")[3].get("step") or 0) < 3:
            time.sleep(0.5)
        busy = timed_calls(client, form, args.calls)
        step = client.predict("", api_name="/poll")[3].get("step")
        client.predict(api_name="/abort_training")
        print("idle:", percentiles(idle), flush=True)
        print(f"while training (step {step}):", percentiles(busy), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
