"""Chat speed: time to first token, tokens/s, and adapter hot-swap time (the base is never reloaded).

    python bench/chat_speed.py

For the demo GLM-4 (4.7M) and a 25M random GLM-4: two LoRA adapters are trained briefly, then the chat engine
answers the same prompt 5 times per adapter, alternating. Reported: median time to first token, median decode
tokens/s (greedy, up to 64 new tokens; the rate counts the tokens actually written), the first load of an
adapter, and a switch between two loaded adapters (the time `ChatEngine` spends selecting it before generating).
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))


def measure(model_path: str) -> dict:
    from core.chat.engine import ChatEngine, GenerationSettings
    from core.config import RunConfig
    from core.training.runner import TrainingSession

    adapters = {}
    for name, dataset in (("a", "identity"), ("b", "advertise_gen")):
        run = Path(tempfile.mkdtemp()) / name
        TrainingSession(
            RunConfig(model_name_or_path=model_path, dataset=dataset, max_steps=10, num_train_epochs=0), run
        ).run()
        adapters[name] = str(run / "adapter")
    engine = ChatEngine()
    engine.load_model(model_path)
    messages = [{"role": "user", "content": "介绍一下 GLM Workbench 的功能。"}]
    settings = GenerationSettings(greedy=True, max_new_tokens=64)
    first_load, switches, first_tokens, rates = [], [], [], []
    for round_number in range(6):
        for name in ("a", "b"):
            started = time.perf_counter()
            engine._select((name, adapters[name]))  # noqa: SLF001 - timing the selection itself
            (first_load if round_number == 0 else switches).append(time.perf_counter() - started)
            started = time.perf_counter()
            first, pieces = None, 0
            for reply in engine.stream(messages, adapter=(name, adapters[name]), settings=settings):
                first = first or time.perf_counter()
                pieces = reply
            end = time.perf_counter()
            generated = len(engine.tokenizer.encode(pieces, add_special_tokens=False))
            if round_number:
                first_tokens.append(first - started)
                rates.append(max(generated - 1, 1) / max(end - first, 1e-9))
    return {
        "ttft_ms": round(statistics.median(first_tokens) * 1000, 1),
        "decode_tokens_per_s": round(statistics.median(rates), 1),
        "first_adapter_load_ms": round(statistics.median(first_load) * 1000, 1),
        "adapter_switch_ms": round(statistics.median(switches) * 1000, 2),
    }


def main() -> int:
    from memory_cpu import build

    from core.models.demo import ensure_demo_model
    from core.models.loader import configure_threads

    configure_threads()
    medium = Path(tempfile.mkdtemp(prefix="bench-25m-"))
    build(medium)
    for name, model in (("demo 4.7M", str(ensure_demo_model())), ("GLM-4 25M", str(medium))):
        print(name, measure(model), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
