"""GLM-V training speed on the CPU: the workbench against LLaMA-Factory 0.9.5's `glm4v` template on the tiny
`demo-vision` model (a `Glm4vForConditionalGeneration`), the same image rows and steps. One fresh process per run.

    python bench/vision_speed.py [--steps 30] [--cutoff 1024] [--batch 4] [--repeat 3] [--lf-python PYTHON]
                                 [--out bench/results/vision_speed.json]

Both pipelines run LoRA (rank 8, alpha 16, no dropout, `lora_target: all`; lr 2e-4, linear schedule, no warmup,
fp32, seed 42) with the vision tower and the projector frozen (`freeze_vision_tower` / `freeze_multi_modal_projector`
true: both sides' defaults) on the 48 rows of the `colours` demo set (alpaca rows, an `images` column, `<image>`
placeholders), the same steps, batch and cutoff (large enough that nothing is cut):
- `lf`: LLaMA-Factory 0.9.5 in its own venv (`--lf-python`), its `run_exp` entry point, template `glm4v`; it reads
  the rows and the images itself (`media_dir` = the workbench's dataset folder, so the same files).
- `workbench`: the same model and rows through `TrainingSession` (the template comes from the checkpoint: glm4v).
Reported: samples/s (steps x batch / training seconds), real tokens/s, peak RSS (the process, Python included),
the trainable parameters, and tokens per sample over the whole set, image tokens included (each side counts its
own encoded rows), so a reader can see both sides train the same thing. Expected: the same trainable parameters
(122,880) and image tokens (11.44 a row, 9-12); LLaMA-Factory's rows are 6 tokens longer, because its glm4v
template (a ReasoningTemplate) puts an empty `<think>\n\n</think>\n\n` before every answer and trains on it, where
the workbench renders the checkpoint's own chat template. Each side keeps its defaults otherwise (LLaMA-Factory's
include gradient checkpointing).

LLaMA-Factory's glm4v plugin needs the model's processor (`AutoProcessor`: tokenizer, image processor and video
processor). transformers' `Glm4vVideoProcessor` requires torchvision, and no torchvision build for torch 2.13 on
the CPU is installable here (the 0.28.0 wheel at hand is a CUDA build: its `_C.so` needs libtorch_cuda.so, and
importing it fails with "torchvision::nms does not exist"). Without it LLaMA-Factory logs "Failed to load
processor" and its plugin refuses every image row ("Processor was not found, please check and update your model
file."). The script then says so and records the error for the `lf` pipeline; with a CPU torchvision 0.28 in
LLaMA-Factory's venv the same command measures both sides. `--lf-processor-parts` measures it here all the same:
its loader is handed the processor built from the checkpoint's tokenizer and image processor (see
processor_from_parts; LLaMA-Factory's source unchanged), and the record says so.
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

from moe_speed import median_run, torchaudio_stand_in  # bench/ is the script's folder: on sys.path

ROOT = Path(__file__).resolve().parents[1]
PIPELINES = ("lf", "workbench")
DATASETS = ROOT / "core" / "assets" / "datasets"
IMAGE_TOKEN = "<|image|>"
SETTINGS = dict(lora_rank=8, lora_alpha=16, lora_dropout=0.0, learning_rate=2e-4, lr_scheduler_type="linear", seed=42)


def token_counts(lengths: list[int], image_tokens: list[int]) -> dict:
    """Tokens per sample (mean, min, max) and the image tokens among them."""
    return {
        "samples": len(lengths),
        "tokens_per_sample": sum(lengths) / len(lengths),
        "tokens_min": min(lengths),
        "tokens_max": max(lengths),
        "image_tokens_per_sample": sum(image_tokens) / len(image_tokens),
        "image_tokens_min": min(image_tokens),
        "image_tokens_max": max(image_tokens),
    }


def lf_processor_problem(model: str) -> str:
    """Why transformers cannot build the processor LLaMA-Factory's mm plugin needs ("" when it can)."""
    from transformers import AutoProcessor

    try:
        AutoProcessor.from_pretrained(model)
    except Exception as exc:  # noqa: BLE001 - LLaMA-Factory catches the same and goes on without a processor
        return f"{type(exc).__name__}: {' '.join(str(exc).split())}"
    return ""


def processor_from_parts() -> None:
    """`--lf-processor-parts`: LLaMA-Factory's loader gets the processor built from the checkpoint's own tokenizer
    and image processor (PIL path), the video slot holding the image processor (image rows never call it), in
    place of `AutoProcessor`, which needs torchvision. LLaMA-Factory's source is unchanged; only what its loader
    receives is. A measurement made so is labelled `lf-parts`, never `lf`."""
    import llamafactory.model.loader as loader
    from transformers import AutoTokenizer
    from transformers.models.glm4v.image_processing_pil_glm4v import Glm4vImageProcessorPil

    class PartsProcessor:  # "Processor" in the name: LLaMA-Factory drops a processor whose class lacks it
        def save_pretrained(self, *args, **kwargs) -> None:
            pass

        @classmethod
        def from_pretrained(cls, path, **kwargs):
            parts = cls()
            parts.image_processor = Glm4vImageProcessorPil.from_pretrained(path)  # Auto* wants torchvision here
            parts.video_processor = parts.image_processor
            parts.tokenizer = AutoTokenizer.from_pretrained(path)
            parts.image_token, parts.video_token = IMAGE_TOKEN, "<|video|>"
            return parts

    loader.AutoProcessor = PartsProcessor


def lf_child(model: str, steps: int, cutoff: int, batch: int) -> dict:
    """LLaMA-Factory's own entry point (run_exp), in its venv; nothing of the workbench imported."""
    import torch
    from llamafactory.train.tuner import run_exp
    from transformers import AutoTokenizer, TrainerCallback

    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "2")))
    if os.environ.get("BENCH_LF_PROCESSOR_PARTS"):
        processor_from_parts()
    image_id = AutoTokenizer.from_pretrained(model).convert_tokens_to_ids(IMAGE_TOKEN)
    data_dir = Path(tempfile.mkdtemp(prefix="lf-data-"))
    rows = (DATASETS / "colours.json").read_text(encoding="utf-8")
    (data_dir / "colours.json").write_text(rows, encoding="utf-8")
    columns = {"prompt": "instruction", "query": "input", "response": "output", "images": "images"}
    (data_dir / "dataset_info.json").write_text(
        json.dumps({"colours": {"file_name": "colours.json", "formatting": "alpaca", "columns": columns}})
    )
    seen: dict = {}

    class Watch(TrainerCallback):
        def on_train_begin(self, args, state, control, model=None, train_dataloader=None, **kwargs):
            seen["trainable"] = sum(p.numel() for p in model.parameters() if p.requires_grad)
            ids = [row["input_ids"] for row in train_dataloader.dataset]  # the rows as its plugin encoded them
            seen["counts"] = token_counts([len(i) for i in ids], [i.count(image_id) for i in ids])
            seen["start"] = time.time()

        def on_train_end(self, args, state, control, **kwargs):
            seen["seconds"] = time.time() - seen["start"]
            seen["tokens"] = state.num_input_tokens_seen

    out = tempfile.mkdtemp(prefix="lf-out-")
    try:
        run_exp(
            dict(
                model_name_or_path=model,
                stage="sft",
                do_train=True,
                finetuning_type="lora",
                lora_target="all",
                freeze_vision_tower=True,
                freeze_multi_modal_projector=True,
                dataset="colours",
                dataset_dir=str(data_dir),
                media_dir=str(DATASETS),  # the rows' `colours/…png` paths resolve to the workbench's own files
                template="glm4v",
                cutoff_len=cutoff,
                max_steps=steps,
                per_device_train_batch_size=batch,
                gradient_accumulation_steps=1,
                warmup_steps=0,
                logging_steps=10,
                save_strategy="no",
                output_dir=out,
                overwrite_output_dir=True,
                report_to="none",
                preprocessing_num_workers=1,
                dataloader_num_workers=0,
                include_num_input_tokens_seen="non_padding",
                disable_tqdm=True,
                **SETTINGS,
            ),
            callbacks=[Watch()],
        )
    except Exception as exc:
        cause = lf_processor_problem(model)
        raise RuntimeError(f"{type(exc).__name__}: {exc}" + (f" (processor: {cause})" if cause else "")) from exc
    return {
        "samples_per_second": steps * batch / seen["seconds"],
        "real_tokens_per_second": seen["tokens"] / seen["seconds"],
        "seconds": seen["seconds"],
        "trainable": seen["trainable"],
        **seen["counts"],
    }


def workbench_child(model: str, steps: int, cutoff: int, batch: int) -> dict:
    from core.config import RunConfig
    from core.data.vision_dataset import tokenize_vision_dataset
    from core.models import vision
    from core.models.loader import configure_threads, load_tokenizer
    from core.training.runner import TrainingSession

    configure_threads()
    config = RunConfig(
        model_name_or_path=model,
        dataset="colours",
        finetuning_type="lora",
        lora_target="all",
        freeze_vision_tower=True,
        freeze_multi_modal_projector=True,
        max_steps=steps,
        num_train_epochs=0,
        per_device_train_batch_size=batch,
        cutoff_len=cutoff,
        logging_steps=10,
        precision="fp32",
        **SETTINGS,
    )
    session = TrainingSession(config, Path(tempfile.mkdtemp()) / "run")
    status = session.run()
    assert status["state"] == "finished", status
    seconds = status["elapsed"]
    tokenizer = load_tokenizer(model)
    data = tokenize_vision_dataset("colours", tokenizer, vision.image_processor_for(model, config), cutoff)
    tokens = data.train.tokens
    counts = token_counts([len(t["input_ids"]) for t in tokens], [sum(t["mm_token_type_ids"]) for t in tokens])
    return {
        "samples_per_second": steps * batch / seconds,
        "real_tokens_per_second": counts["tokens_per_sample"] * steps * batch / seconds,
        "seconds": seconds,
        "trainable": status["trainable_params"],
        "truncated": data.truncated,
        **counts,
    }


def run_child(pipeline: str, model: str, args, stand_in: str) -> dict:
    python = args.lf_python if pipeline == "lf" else sys.executable
    command = [python, __file__, "--child", model, pipeline]
    command += ["--steps", str(args.steps), "--cutoff", str(args.cutoff), "--batch", str(args.batch)]
    env = {**os.environ, "PYTHONPATH": stand_in if pipeline == "lf" else str(ROOT)}
    if pipeline == "lf" and args.lf_processor_parts:
        env["BENCH_LF_PROCESSOR_PARTS"] = "1"
    out = subprocess.run(command, capture_output=True, text=True, env=env, cwd=tempfile.gettempdir())
    if out.returncode == 0:
        return json.loads(out.stdout.strip().splitlines()[-1])
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    reason = next((line for line in reversed(lines) if line.startswith(("RuntimeError", "AssertionError"))), "")
    return {"error": reason or "\n".join(lines[-5:])}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--cutoff", type=int, default=1024)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--lf-python", default="/work/lf-venv/bin/python")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "vision_speed.json"))
    parser.add_argument("--child", nargs=2, metavar=("MODEL", "PIPELINE"))
    parser.add_argument(
        "--lf-processor-parts",
        action="store_true",
        help="hand LLaMA-Factory the processor built from its parts (no torchvision needed); results say lf-parts",
    )
    args = parser.parse_args()
    sizes = (args.steps, args.cutoff, args.batch)
    if args.child:
        model, pipeline = args.child
        result = lf_child(model, *sizes) if pipeline == "lf" else workbench_child(model, *sizes)
        result["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(json.dumps({k: round(v, 2) if isinstance(v, float) else v for k, v in result.items()}))
        return 0
    sys.path.insert(0, str(ROOT))
    from core.models.loader import prepare_model

    model = str(prepare_model("demo-vision"))
    stand_in = torchaudio_stand_in()
    runs: dict[str, list[dict]] = {p: [] for p in PIPELINES}
    load = os.getloadavg()[0]
    for _ in range(args.repeat):  # interleaved: a busy spell of the shared machine hits both pipelines
        for pipeline in PIPELINES:
            if pipeline == "lf" and runs["lf"] and "error" in runs["lf"][-1]:
                continue  # it failed once; it fails the same way again
            found = run_child(pipeline, model, args, stand_in)
            print(pipeline, json.dumps(found, ensure_ascii=False), flush=True)
            runs[pipeline].append(found)
    end_load = os.getloadavg()[0]
    print(f"load average (1 min) at the start: {load:.2f}, at the end: {end_load:.2f}")
    results = {p: median_run(found) for p, found in runs.items()}
    for pipeline, result in results.items():
        print("median", pipeline, json.dumps(result, ensure_ascii=False), flush=True)
    lf, ours = results["lf"], results["workbench"]
    ratio = None
    if "error" in lf:
        print(f"LLaMA-Factory could not train the glm4v template on this machine: {lf['error']}")
    elif "samples_per_second" in ours:
        ratio = ours["samples_per_second"] / lf["samples_per_second"]
        memory = ours["peak_rss_mib"] / lf["peak_rss_mib"]
        print(f"workbench / LLaMA-Factory samples/s: {ratio:.2f}x, peak RSS: {memory:.2f}x")
        for key in ("trainable", "image_tokens_per_sample", "tokens_per_sample"):
            if lf.get(key) != ours.get(key):
                print(f"{key} differs: {lf.get(key)} for LLaMA-Factory, {ours.get(key)} for the workbench")
    record = {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "lf_processor": "from its parts (--lf-processor-parts)" if args.lf_processor_parts else "AutoProcessor",
        "cpus": os.cpu_count(),
        "load_average": [round(load, 2), round(end_load, 2)],
        "settings": {"steps": args.steps, "batch": args.batch, "cutoff": args.cutoff, "repeat": args.repeat},
        "runs": runs,
        "median": results,
        "ratio_samples_per_second": ratio,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(record, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
