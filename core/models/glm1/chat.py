"""ChatGLM-6B's conversation format and `chat()`, as THUDM's `ChatGLMForConditionalGeneration.chat` has them.

- prompt: the bare query on the first turn; with history, rounds counted from 0:
  "[Round 0]\\n问：{q}\\n答：{a}\\n[Round 1]\\n问：{query}\\n答："
- then [gMASK] <sop> at the END of the prompt (THUDM's tokenizer appends them), and the answer ends with <eop>.
- the decoded answer goes through THUDM's `process_response`: stripped, "[[训练时间]]" -> "2023年", and ASCII
  , ! : ; ? next to a Chinese character turned into their full-width forms.

`CHAT_TEMPLATE` renders the same ids through `apply_chat_template` (tested against THUDM's prompt ids): a
conversation ending with an assistant message renders as THUDM's fine-tuning input, prompt [gMASK] <sop> answer <eop>.
"""

from __future__ import annotations

import re

# Every literal holding a newline is a jinja expression: transformers renders with trim_blocks, and "-" trims.
CHAT_TEMPLATE = (
    "{%- set ns = namespace(users=0, round=0) -%}"
    "{%- for m in messages -%}{%- if m['role'] == 'user' -%}{%- set ns.users = ns.users + 1 -%}{%- endif -%}"
    "{%- endfor -%}"
    "{%- for m in messages -%}"
    "{%- if m['role'] == 'user' -%}"
    "{%- if ns.users == 1 -%}{{ m['content'] }}"
    "{%- else -%}{{ '[Round ' ~ ns.round ~ ']\\n问：' ~ m['content'] ~ '\\n答：' }}{%- endif -%}"
    "{%- set ns.round = ns.round + 1 -%}"
    "{%- if ns.round == ns.users -%}{{ '[gMASK]<sop>' }}{%- endif -%}"
    "{%- elif m['role'] == 'assistant' -%}"
    "{%- if ns.round == ns.users -%}{{ m['content'] ~ '<eop>' }}{%- else -%}{{ m['content'] ~ '\\n' }}{%- endif -%}"
    "{%- else -%}{{ raise_exception('ChatGLM-6B has no ' ~ m['role'] ~ ' role: only user and assistant') }}"
    "{%- endif -%}"
    "{%- endfor -%}"
)

_PUNCTUATION = [(",", "，"), ("!", "！"), (":", "："), (";", "；"), (r"\?", "？")]


def format_prompt(query: str, history: list[tuple[str, str]] | None = None) -> str:
    """THUDM's chat() prompt text (without [gMASK] <sop>, which its tokenizer appends)."""
    if not history:
        return query
    prompt = "".join(f"[Round {i}]\n问：{old}\n答：{response}\n" for i, (old, response) in enumerate(history))
    return prompt + f"[Round {len(history)}]\n问：{query}\n答："


def process_response(response: str) -> str:
    """THUDM's post-processing of a decoded answer."""
    response = response.strip().replace("[[训练时间]]", "2023年")
    for ascii_mark, full_width in _PUNCTUATION:
        response = re.sub(rf"([\u4e00-\u9fff]){ascii_mark}", rf"\g<1>{full_width}", response)
        response = re.sub(rf"{ascii_mark}([\u4e00-\u9fff])", rf"{full_width}\g<1>", response)
    return response


def messages(query: str, history: list[tuple[str, str]] | None = None) -> list[dict[str, str]]:
    turns = []
    for old_query, response in history or []:
        turns += [{"role": "user", "content": old_query}, {"role": "assistant", "content": response}]
    return turns + [{"role": "user", "content": query}]


def prompt_ids(tokenizer, query: str, history: list[tuple[str, str]] | None = None) -> list[int]:
    """The ids THUDM's chat() feeds the model: the prompt text's, then [gMASK] <sop>."""
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
