"""ChatGLM-6B's `chat()`, as THUDM's `ChatGLMForConditionalGeneration.chat` has it, on the native model.

The conversation format is the `chatglm` template of core/data/template.py, the one definition the trainer, the
chat engine and the tokenizer's Jinja (`chat_template_jinja("chatglm")`, saved by the converter) all use:
- prompt: the bare query on the first turn; with history, rounds counted from 0:
  "[Round 0]\\n问：{q}\\n答：{a}\\n[Round 1]\\n问：{query}\\n答："
- then [gMASK] <sop> at the END of the prompt (THUDM's tokenizer appends them), and the answer ends with <eop>.
- the decoded answer goes through THUDM's `process_response` (`thudm_v1_response`).
"""

from __future__ import annotations

from core.data.template import TEMPLATES, chat_template_jinja, thudm_v1_response

TEMPLATE = TEMPLATES["chatglm"]
CHAT_TEMPLATE = chat_template_jinja(TEMPLATE.name)
process_response = thudm_v1_response


def messages(query: str, history: list[tuple[str, str]] | None = None) -> list[dict[str, str]]:
    turns = []
    for old_query, response in history or []:
        turns += [{"role": "user", "content": old_query}, {"role": "assistant", "content": response}]
    return turns + [{"role": "user", "content": query}]


def format_prompt(query: str, history: list[tuple[str, str]] | None = None) -> str:
    """THUDM's chat() prompt text (without [gMASK] <sop>, which its tokenizer appends)."""
    return TEMPLATE.rounds.text(messages(query, history))


def prompt_ids(tokenizer, query: str, history: list[tuple[str, str]] | None = None) -> list[int]:
    """The ids THUDM's chat() feeds the model, through the tokenizer's chat template: the prompt text's, then
    [gMASK] <sop>."""
    ids = tokenizer.apply_chat_template(messages(query, history), tokenize=True, add_generation_prompt=True)
    return list(ids["input_ids"] if hasattr(ids, "keys") else ids)


def chat(
    model,
    tokenizer,
    query: str,
    history: list[tuple[str, str]] | None = None,
    *,
    max_new_tokens: int = 256,
    do_sample: bool = False,
    **generate_kwargs,
) -> tuple[str, list[tuple[str, str]]]:
    """One turn as THUDM's `model.chat(tokenizer, query, history)`: the answer and the history with it."""
    import torch

    ids = torch.tensor([prompt_ids(tokenizer, query, history)], device=model.device)
    with torch.no_grad():
        output = model.generate(
            input_ids=ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=max_new_tokens,
            do_sample=do_sample,
            **generate_kwargs,
        )
    response = process_response(tokenizer.decode(output[0, ids.shape[1] :].tolist(), skip_special_tokens=True))
    return response, list(history or []) + [(query, response)]
