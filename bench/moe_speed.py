"""MoE training speed on the CPU: the workbench against LLaMA-Factory 0.9.5 on a tiny GLM-4.5-shaped model, and the
MoE against a dense model of the same active size. One fresh process per run.

    python bench/moe_speed.py [--steps 30] [--cutoff 1024] [--batch 4] [--repeat 3] [--lf-python PYTHON]

Pipelines, each LoRA (rank 8, alpha 16, no dropout, every linear layer of the decoder plus the routed experts;
lr 2e-4, linear schedule, fp32, seed 42) on the same 24 rows (the `tool_calls` demo set: tools, tool calls,
tool results, reasoning), the same steps, batch and cutoff:
- `lf`: LLaMA-Factory 0.9.5 (its own venv, `--lf-python`), template `glm4_moe`, the rows converted to its sharegpt
  format (function_call / observation roles, a tools column, the reasoning as `<think>` in the content);
  `lora_target: all` (LLaMA-Factory leaves the fused experts alone and skips the router itself).
- `workbench`: the same model and rows through `TrainingSession` (template auto -> glm4_moe).
- `workbench-linear`: the same, LoRA on the Linear layers only (what LLaMA-Factory's `all` adapts here).
- `workbench-dense`: a dense `Glm4ForCausalLM` of the MoE's active size (same tokenizer, attention, layers;
  MLP width 384 = a shared expert and 2 of 8 routed experts of width 128).
Reported: samples/s (steps x batch / training seconds), real tokens/s, peak RSS (the process, Python included),
the experts implementation transformers ran, and the trainable parameters.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PIPELINES = ("lf", "workbench", "workbench-linear", "workbench-dense")
# What LLaMA-Factory's `lora_target: all` adapts on this model (its Linear layers; not the fused experts)
LINEAR_TARGETS = "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj"


def lf_rows(rows: list[dict]) -> list[dict]:
    """The openai rows in LLaMA-Factory's sharegpt form (its documented function-calling layout)."""
    out = []
    for row in rows:
        turns = []
        for message in row["messages"]:
            thought = message.get("reasoning_content")
            think = f"<think>\n{thought}\n</think>\n\n" if thought else ""
            if message["role"] == "user":
                turns.append({"from": "human", "value": message["content"]})
            elif message["role"] == "tool":
                turns.append({"from": "observation", "value": message["content"]})
            elif message.get("tool_calls"):
                calls = [
                    {"name": c["function"]["name"], "arguments": json.loads(c["function"]["arguments"])}
                    for c in message["tool_calls"]
                ]
                turns.append({"from": "function_call", "value": think + json.dumps(calls, ensure_ascii=False)})
            else:
                turns.append({"from": "gpt", "value": think + (message["content"] or "")})
        tools = [tool["function"] for tool in row.get("tools", [])]
        out.append({"conversations": turns, "tools": json.dumps(tools, ensure_ascii=False)})
    return out


def experts_implementation(model) -> str:
    """Which experts forward transformers runs (eager, grouped_mm, batched_mm); 5.6 has no public getter."""
    chosen = model.config._experts_implementation  # noqa: SLF001
    return str(chosen.get("", chosen) if isinstance(chosen, dict) else chosen)


def lf_child(model: str, steps: int, cutoff: int, batch: int) -> dict:
    """LLaMA-Factory's own entry point (run_exp), in its venv; nothing of the workbench imported."""
    import torch
    from llamafactory.train.tuner import run_exp
    from transformers import TrainerCallback

    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "2")))
    data_dir = Path(tempfile.mkdtemp(prefix="lf-data-"))
    rows = json.loads((ROOT / "assets" / "datasets" / "tool_calls.json").read_text(encoding="utf-8"))
    (data_dir / "tool_calls.json").write_text(json.dumps(lf_rows(rows), ensure_ascii=False), encoding="utf-8")
    (data_dir / "dataset_info.json").write_text(
        json.dumps(
            {
                "tool_calls": {
                    "file_name": "tool_calls.json",
                    "formatting": "sharegpt",
                    "columns": {"messages": "conversations", "tools": "tools"},
                }
            }
        )
    )
    seen: dict = {}

    class Watch(TrainerCallback):
        def on_train_begin(self, args, state, control, model=None, **kwargs):
            seen["experts"] = experts_implementation(model.get_base_model())
            seen["trainable"] = sum(p.numel() for p in model.parameters() if p.requires_grad)
            seen["start"] = time.time()

        def on_train_end(self, args, state, control, **kwargs):
            seen["seconds"] = time.time() - seen["start"]
            seen["tokens"] = state.num_input_tokens_seen

    out = tempfile.mkdtemp(prefix="lf-out-")
    run_exp(
        dict(
            model_name_or_path=model,
            stage="sft",
            do_train=True,
            finetuning_type="lora",
            lora_target="all",
            lora_rank=8,
            lora_alpha=16,
            lora_dropout=0.0,
            dataset="tool_calls",
            dataset_dir=str(data_dir),
            template="glm4_moe",
            cutoff_len=cutoff,
            max_steps=steps,
            per_device_train_batch_size=batch,
            gradient_accumulation_steps=1,
            learning_rate=2e-4,
            lr_scheduler_type="linear",
            warmup_steps=0,
            logging_steps=10,
            save_strategy="no",
            output_dir=out,
            overwrite_output_dir=True,
            report_to="none",
            seed=42,
            preprocessing_num_workers=1,
            dataloader_num_workers=0,
            include_num_input_tokens_seen="non_padding",
            disable_tqdm=True,
        ),
        callbacks=[Watch()],
    )
    return {
        "samples_per_second": steps * batch / seen["seconds"],
        "real_tokens_per_second": seen["tokens"] / seen["seconds"],
        "seconds": seen["seconds"],
        "experts": seen["experts"],
        "trainable": seen["trainable"],
    }


def torchaudio_stand_in() -> str:
    """A folder with an empty `torchaudio` package, put first on the LLaMA-Factory child's path: LLaMA-Factory 0.9.5
    imports torchaudio at import time (data/mm_plugin.py), no torchaudio wheel for torch 2.13 is published, and its
    text SFT never calls it. Both pipelines then run the same torch."""
    folder = Path(tempfile.mkdtemp(prefix="lf-stand-in-"))
    (folder / "torchaudio").mkdir()
    (folder / "torchaudio" / "__init__.py").write_text(
        '"""Stand-in: LLaMA-Factory imports it, text SFT never uses it."""\n'
    )
    return str(folder)


def dense_twin(moe_dir: str) -> str:
    """A dense GLM-4 of the MoE demo's active size, with its tokenizer (so the rows tokenize the same)."""
    import torch
    from transformers import AutoTokenizer, Glm4Config, Glm4ForCausalLM

    from core.models.demo import ARCHITECTURE, STOP_TOKENS

    folder = Path(tempfile.mkdtemp(prefix="bench-dense-twin-"))
    tokenizer = AutoTokenizer.from_pretrained(moe_dir)
    stop = [tokenizer.convert_tokens_to_ids(token) for token in STOP_TOKENS]
    config = Glm4Config(
        vocab_size=len(tokenizer),
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=stop,
        tie_word_embeddings=False,
        **{**ARCHITECTURE, "intermediate_size": 384},
    )
    torch.manual_seed(0)
    Glm4ForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


def workbench_child(model: str, steps: int, cutoff: int, batch: int, target: str = "all") -> dict:
    from core.config import RunConfig
    from core.data.dataset import tokenize_dataset
    from core.models.loader import configure_threads, load_tokenizer
    from core.training.runner import TrainingSession

    configure_threads()
    config = RunConfig(
        model_name_or_path=model,
        dataset="tool_calls",
        max_steps=steps,
        num_train_epochs=0,
        per_device_train_batch_size=batch,
        cutoff_len=cutoff,
        learning_rate=2e-4,
        logging_steps=10,
        lr_scheduler_type="linear",
        lora_rank=8,
        lora_alpha=16,
        lora_dropout=0.0,
        lora_target=target,
    )
    session = TrainingSession(config, Path(tempfile.mkdtemp()) / "run")
    status = session.run()
    assert status["state"] == "finished", status
    seconds = status["elapsed"]
    samples = tokenize_dataset("tool_calls", load_tokenizer(model), "auto", cutoff).train
    tokens = sum(len(s["input_ids"]) for s in samples) / len(samples) * steps * batch
    base = session.model.get_base_model()
    return {
        "samples_per_second": steps * batch / seconds,
        "real_tokens_per_second": tokens / seconds,
        "seconds": seconds,
        "experts": experts_implementation(base),
        "trainable": status["trainable_params"],
    }


def median_run(found: list[dict]) -> dict:
    """The run at the median samples/s, with how many ran and the range (a failed pipeline: its last error)."""
    good = sorted((r for r in found if "samples_per_second" in r), key=lambda r: r["samples_per_second"])
    if not good:
        return found[-1]
    speeds = [r["samples_per_second"] for r in good]
    return {**good[len(good) // 2], "runs": len(good), "min_samples_per_second": speeds[0], "max": speeds[-1]}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--cutoff", type=int, default=1024)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--lf-python", default="/work/lf-venv/bin/python")
    parser.add_argument("--child", nargs=2, metavar=("MODEL", "PIPELINE"))
    args = parser.parse_args()
    sizes = (args.steps, args.cutoff, args.batch)
    if args.child:
        model, pipeline = args.child
        if pipeline == "lf":
            result = lf_child(model, *sizes)
        else:
            result = workbench_child(model, *sizes, LINEAR_TARGETS if pipeline == "workbench-linear" else "all")
        result["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(json.dumps({k: round(v, 2) if isinstance(v, float) else v for k, v in result.items()}))
        return 0
    sys.path.insert(0, str(ROOT))
    from core.models.demo import MOE_DEMO_NAME, ensure_demo_model

    moe = str(ensure_demo_model(name=MOE_DEMO_NAME))
    models = {"lf": moe, "workbench": moe, "workbench-linear": moe, "workbench-dense": dense_twin(moe)}
    stand_in = torchaudio_stand_in()
    runs: dict[str, list[dict]] = {p: [] for p in PIPELINES}
    load = os.getloadavg()[0]
    for _ in range(args.repeat):  # interleaved: a busy spell of the shared machine hits every pipeline
        for pipeline in PIPELINES:
            python = args.lf_python if pipeline == "lf" else sys.executable
            command = [python, __file__, "--child", models[pipeline], pipeline]
            command += ["--steps", str(args.steps), "--cutoff", str(args.cutoff), "--batch", str(args.batch)]
            env = {**os.environ, "PYTHONPATH": stand_in if pipeline == "lf" else str(ROOT)}
            out = subprocess.run(command, capture_output=True, text=True, env=env, cwd=tempfile.gettempdir())
            found = (
                json.loads(out.stdout.strip().splitlines()[-1]) if out.returncode == 0 else {"error": out.stderr[-800:]}
            )
            print(pipeline, json.dumps(found), flush=True)
            runs[pipeline].append(found)
    print(f"load average (1 min) at the start: {load:.2f}, at the end: {os.getloadavg()[0]:.2f}")
    results = {p: median_run(found) for p, found in runs.items()}
    for pipeline, result in results.items():
        print("median", pipeline, json.dumps(result), flush=True)
    lf, ours = results["lf"].get("samples_per_second"), results["workbench"].get("samples_per_second")
    if lf and ours:
        print(f"workbench / LLaMA-Factory samples/s: {ours / lf:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
