"""Evaluate a finished run on a dataset: loss and perplexity, then generation scored with ChatGLM's metrics.

Writes RUN/eval/metrics.json and RUN/eval/predictions.jsonl (`prompt`, `label`, `prediction` per line).
The last assistant turn of each conversation is the label; everything before it is the prompt.
"""

from __future__ import annotations

import json
import math
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from core.chat.engine import StopOnEvent
from core.data.dataset import load_conversations
from core.data.template import IGNORE_INDEX, TemplateEncoder
from core.evaluation.metrics import average, score
from core.files import write_json_atomic, write_text_atomic
from core.models.trained import load_trained

EVAL_DIR = "eval"


@dataclass
class EvalSettings:
    max_samples: int = 0  # 0: all
    max_new_tokens: int = 128
    greedy: bool = True
    temperature: float = 0.7
    top_p: float = 0.9
    cutoff_len: int = 1024


@dataclass
class EvalResult:
    metrics: dict[str, float]
    predictions: list[dict[str, str]] = field(default_factory=list)


def generate_answer(trained, encoder: TemplateEncoder, messages, system: str, settings: EvalSettings, stop_criteria):
    """A model's answer to a conversation ending with the user's turn, decoded (evaluation and the arena)."""
    import torch

    model = trained.model
    prompt_ids = torch.tensor([encoder.encode_prompt(messages, system)], device=model.device)
    sampling = (
        {"do_sample": False}
        if settings.greedy
        else {"do_sample": True, "temperature": settings.temperature, "top_p": settings.top_p}
    )
    with torch.inference_mode():
        output = model.generate(
            **trained.forward_kwargs(prompt_ids),
            max_new_tokens=settings.max_new_tokens,
            eos_token_id=encoder.stop_token_ids,
            pad_token_id=trained.tokenizer.pad_token_id,
            stopping_criteria=stop_criteria,
            **sampling,
        )
    # As the model's own chat code returns it (ChatGLM-6B: THUDM's process_response), which is what chat shows.
    return encoder.template.clean_answer(
        trained.tokenizer.decode(output[0, prompt_ids.shape[1] :], skip_special_tokens=True)
    ).strip()


def evaluate_run(
    run_dir: str | Path,
    dataset: str,
    fmt: str = "auto",
    settings: EvalSettings | None = None,
    stop_event: threading.Event | None = None,
) -> EvalResult:
    import torch
    from transformers import StoppingCriteriaList

    settings = settings or EvalSettings()
    run_dir = Path(run_dir)
    trained = load_trained(run_dir)
    model, tokenizer = trained.model, trained.tokenizer
    encoder = TemplateEncoder(tokenizer, trained.config.template)
    conversations = load_conversations(dataset, fmt, trained.config.columns).conversations
    if settings.max_samples:
        conversations = conversations[: settings.max_samples]
    started = time.time()
    total_loss, total_tokens, scores, predictions = 0.0, 0, [], []
    stop_criteria = StoppingCriteriaList([StopOnEvent(stop_event)] if stop_event is not None else [])
    for conversation in conversations:
        if stop_event is not None and stop_event.is_set():
            break
        ids, labels = encoder.encode(conversation, settings.cutoff_len)
        counted = sum(label != IGNORE_INDEX for label in labels[1:])  # the model predicts token t from t-1
        sample_loss = 0.0
        if counted:
            with torch.inference_mode():
                inputs = trained.forward_kwargs(torch.tensor([ids], device=model.device))
                sample_loss = model(**inputs, labels=torch.tensor([labels], device=model.device)).loss.item()
        prompt_messages, label = conversation.messages[:-1], conversation.messages[-1]["content"]
        prediction = generate_answer(trained, encoder, prompt_messages, conversation.system, settings, stop_criteria)
        if stop_event is not None and stop_event.is_set():
            break  # this sample's answer was cut short by Abort: it is not counted
        total_loss += sample_loss * counted
        total_tokens += counted
        scores.append(score(prediction, label))
        predictions.append({"prompt": prompt_messages[-1]["content"], "label": label, "prediction": prediction})
    eval_loss = total_loss / total_tokens if total_tokens else float("nan")
    metrics = {
        "eval_loss": round(eval_loss, 6),
        "perplexity": round(math.exp(min(eval_loss, 50)), 4),
        **{name: round(value, 4) for name, value in average(scores).items()},
        "samples": len(predictions),
        "dataset": str(dataset),
        "seconds": round(time.time() - started, 1),
        "planned": len(conversations),
        "stopped_early": len(predictions) < len(conversations),
    }
    if not metrics["stopped_early"]:  # an aborted evaluation is shown, but never replaces a complete one on disk
        folder = run_dir / EVAL_DIR
        folder.mkdir(exist_ok=True)
        write_json_atomic(folder / "metrics.json", metrics)
        write_text_atomic(
            folder / "predictions.jsonl", "".join(json.dumps(p, ensure_ascii=False) + "\n" for p in predictions)
        )
    return EvalResult(metrics, predictions)
