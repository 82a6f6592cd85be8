"""Evaluate a finished run on a dataset: loss and perplexity, then generation scored with ChatGLM's metrics.

Writes RUN/eval/metrics.json and RUN/eval/predictions.jsonl (`prompt`, `label`, `prediction` per line).
The last assistant turn of each conversation is the label; everything before it is the prompt.

A model that thinks or calls tools (the GLM-4.5 generation) is scored on its answer without the reasoning (BLEU-4
and ROUGE compare the answers' text, over the rows whose label has text); its reasoning is kept beside the
prediction (`reasoning`), calls are written `name {arguments}` after the answer, and a dataset whose labels call
tools also reports `tool-name-match` (the share of those rows, x100, where the predicted calls name exactly the
label's tools) and `tool-arguments-match` (names and arguments exactly equal).
"""

from __future__ import annotations

import json
import math
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from core.chat.engine import StopOnEvent
from core.chat.turns import ChatReply, call_text, read_reply, reply_markup
from core.data.dataset import load_conversations
from core.data.glm45 import GLM45, split_reasoning
from core.data.multimodal import collate, first_messages
from core.data.template import IGNORE_INDEX, TemplateEncoder
from core.evaluation.metrics import average, score
from core.evaluation.trained import load_trained
from core.files import write_json_atomic, write_text_atomic

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


def generate_answer(
    trained,
    encoder: TemplateEncoder,
    messages,
    system: str,
    settings: EvalSettings,
    stop_criteria,
    tools=None,
    image_folder: Path | None = None,
):
    """A model's answer to a conversation ending with the user's (or a tool's) turn, decoded (evaluation and the
    arena). A model that thinks answers in its markup, always with `<think>…</think>` when it reasoned (GLM-4.7's
    prompt holds the opening tag: it is put back), calls as `<tool_call>` markup (core/chat/turns.reply_markup)."""
    import torch

    model = trained.model
    if trained.vision is not None:  # a GLM-V model: `messages` is the Conversation up to the answer, images and all
        inputs = {k: v.to(model.device) for k, v in trained.vision.encode_prompt(messages, image_folder).items()}
    else:
        inputs = trained.forward_kwargs(
            torch.tensor([encoder.encode_prompt(messages, system, tools)], device=model.device)
        )
    prompt_ids = inputs["input_ids"]
    sampling = (
        {"do_sample": False}
        if settings.greedy
        else {"do_sample": True, "temperature": settings.temperature, "top_p": settings.top_p}
    )
    with torch.inference_mode():
        output = model.generate(
            **inputs,
            max_new_tokens=settings.max_new_tokens,
            eos_token_id=encoder.stop_token_ids,
            pad_token_id=trained.tokenizer.pad_token_id,
            stopping_criteria=stop_criteria,
            **sampling,
        )
    # As the model's own chat code returns it (ChatGLM-6B: THUDM's process_response), which is what chat shows.
    text = encoder.template.clean_answer(
        trained.tokenizer.decode(output[0, prompt_ids.shape[1] :], skip_special_tokens=True)
    ).strip()
    form = encoder.template.thinking
    return reply_markup(read_reply(text, form, done=True), form) if form is not None else text


def label_reply(message: dict) -> ChatReply:
    """A dataset's answer (reasoning, text, calls) in the same parts as a parsed prediction."""
    reasoning, content = split_reasoning(message)
    return ChatReply(content, reasoning.strip(), list(message.get("tool_calls") or []), done=True)


def tool_matches(predicted: list[dict], expected: list[dict]) -> tuple[bool, bool]:
    """(the same tool names in order, and the same names with the same arguments)."""
    names = [c["name"] for c in predicted] == [c["name"] for c in expected]
    arguments = names and [c.get("arguments") or {} for c in predicted] == [c.get("arguments") or {} for c in expected]
    return names, arguments


def shown_text(reply: ChatReply) -> str:
    """A reply's answer with its calls, as the predictions table shows it."""
    return "\n".join([reply.content, *(f"{c['name']} {call_text(c, indent=None)}" for c in reply.tool_calls)]).strip()


def sample_loss_of(trained, encoder: TemplateEncoder, conversation, cutoff_len: int, image_folder: Path):
    """(answer tokens scored, their mean loss) for one conversation, its images included on a GLM-V model."""
    import torch

    model = trained.model
    if trained.vision is not None:
        sample = trained.vision.encode(conversation, image_folder)
        inputs = {k: v.to(model.device) for k, v in collate([sample], trained.tokenizer.pad_token_id).items()}
        labels = sample["labels"]
    else:
        ids, labels = encoder.encode(conversation, cutoff_len)
        inputs = {  # a P-tuning prefix comes as a cache beside the ids (forward_kwargs)
            **trained.forward_kwargs(torch.tensor([ids], device=model.device)),
            "labels": torch.tensor([labels], device=model.device),
        }
    counted = sum(label != IGNORE_INDEX for label in labels[1:])  # the model predicts token t from t-1
    if not counted:
        return 0, 0.0
    with torch.inference_mode():
        return counted, model(**inputs).loss.item()


def evaluate_run(
    run_dir: str | Path,
    dataset: str,
    fmt: str = "auto",
    settings: EvalSettings | None = None,
    stop_event: threading.Event | None = None,
) -> EvalResult:
    from transformers import StoppingCriteriaList

    settings = settings or EvalSettings()
    run_dir = Path(run_dir)
    trained = load_trained(run_dir)
    encoder = TemplateEncoder(trained.tokenizer, trained.config.template)
    loaded = load_conversations(dataset, fmt, trained.config.columns)
    conversations, image_folder = loaded.conversations, Path(loaded.path).parent
    if settings.max_samples:
        conversations = conversations[: settings.max_samples]
    started = time.time()
    total_loss, total_tokens, scores, predictions = 0.0, 0, [], []
    names_matched, arguments_matched, with_calls = 0, 0, 0
    stop_criteria = StoppingCriteriaList([StopOnEvent(stop_event)] if stop_event is not None else [])
    stopped, evaluated = False, 0
    for conversation in conversations:
        if stop_event is not None and stop_event.is_set():
            stopped = True
            break
        counted, sample_loss = sample_loss_of(trained, encoder, conversation, settings.cutoff_len, image_folder)
        # The last answer, and (in a tool-calling dataset) each earlier answer that calls tools, are predicted.
        points = [
            i for i, m in enumerate(conversation.messages[:-1]) if m["role"] == "assistant" and m.get("tool_calls")
        ]
        rows, aborted = [], False
        for end in [*points, len(conversation.messages) - 1]:
            prompt_messages, expected = conversation.messages[:end], label_reply(conversation.messages[end])
            asked = first_messages(conversation, end) if trained.vision is not None else prompt_messages
            answer = generate_answer(
                trained,
                encoder,
                asked,
                conversation.system,
                settings,
                stop_criteria,
                conversation.tools,
                image_folder,
            )
            if stop_event is not None and stop_event.is_set():
                aborted = True  # this sample's answer was cut short by Abort: it is not counted
                break
            rows.append((prompt_messages, expected, answer))
        if aborted:
            stopped = True
            break
        total_loss += sample_loss * counted
        total_tokens += counted
        evaluated += 1
        for prompt_messages, expected, answer in rows:
            predicted = read_reply(answer, GLM45, done=True) if encoder.template.thinking else ChatReply(answer)
            if expected.content or not expected.tool_calls:  # a label that only calls tools has no text to score
                scores.append(score(predicted.content, expected.content))
            if expected.tool_calls:
                names, arguments = tool_matches(predicted.tool_calls, expected.tool_calls)
                with_calls, names_matched = with_calls + 1, names_matched + names
                arguments_matched += arguments
            question = next((m["content"] for m in reversed(prompt_messages) if m["role"] == "user"), "")
            row = {"prompt": question, "label": shown_text(expected), "prediction": shown_text(predicted)}
            if predicted.reasoning or expected.reasoning:
                row["reasoning"] = predicted.reasoning
            predictions.append(row)
    eval_loss = total_loss / total_tokens if total_tokens else float("nan")
    metrics = {
        "eval_loss": round(eval_loss, 6),
        "perplexity": round(math.exp(min(eval_loss, 50)), 4),
        **{name: round(value, 4) for name, value in average(scores).items()},
        **(
            {
                "tool-name-match": round(100 * names_matched / with_calls, 4),
                "tool-arguments-match": round(100 * arguments_matched / with_calls, 4),
            }
            if with_calls
            else {}
        ),
        "samples": evaluated,  # conversations (a tool-calling one may give several predictions)
        "dataset": str(dataset),
        "seconds": round(time.time() - started, 1),
        "planned": len(conversations),
        "stopped_early": stopped,
    }
    if not metrics["stopped_early"]:  # an aborted evaluation is shown, but never replaces a complete one on disk
        folder = run_dir / EVAL_DIR
        folder.mkdir(exist_ok=True)
        write_json_atomic(folder / "metrics.json", metrics)
        write_text_atomic(
            folder / "predictions.jsonl", "".join(json.dumps(p, ensure_ascii=False) + "\n" for p in predictions)
        )
    return EvalResult(metrics, predictions)
