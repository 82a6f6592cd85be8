"""ChatGLM-6B's 2D positions and prefix-LM attention mask, computed from the token ids as THUDM's code does.

A v1 sequence is `prompt [gMASK] <sop> answer <eop>`; `<sop>` (the bos token) starts the generated part.
- positions (row 0): 0, 1, 2, ... over the prompt; from `<sop>` on, every token has the position of the mask token
  ([gMASK], else [MASK]) -- the answer "fills" the mask.
- block positions (row 1): 0 over the prompt, then 1, 2, 3, ... from `<sop>` on.
- attention: bidirectional over the prompt (every token before `<sop>` sees all of them), causal from `<sop>` on.

THUDM (get_position_ids, get_masks, and its tokenizer's _pad for left padding) computes these per sequence with
Python lists; so do we: the values must be identical and the cost is nothing next to the model's. Padding is read
from a transformers-style 2D mask (1 = token, 0 = padding): positions start at 0 on each row's first token, as THUDM's
tokenizer pads them, and padding keys are never attended.
"""

from __future__ import annotations

import torch


def _context_length(row: list[int], bos_token_id: int | None) -> int:
    """Where the generated part starts: the index of <sop>, or the whole row when there is none (all prompt)."""
    return row.index(bos_token_id) if bos_token_id is not None and bos_token_id in row else len(row)


def _mask_position(row: list[int], mask_token_id: int | None, gmask_token_id: int | None) -> int | None:
    for token in (gmask_token_id, mask_token_id):  # THUDM: gMASK if present, else MASK
        if token is not None and token in row:
            return row.index(token)
    return None


def _first_token(padding_mask: torch.Tensor | None, row: int) -> int:
    if padding_mask is None:
        return 0
    tokens = padding_mask[row].nonzero()
    return int(tokens[0]) if len(tokens) else padding_mask.shape[1]


def position_ids(input_ids: torch.Tensor, config, padding_mask: torch.Tensor | None = None) -> torch.Tensor:
    """[2, batch, seq]: positions (row 0) and block positions (row 1) for `input_ids` [batch, seq].

    Rows first, like transformers' other multi-row positions (Qwen2-VL's [3, batch, seq]), so that `generate`'s
    own bookkeeping (beam expansion along dim 1, slicing along the last dim) handles them; THUDM's are
    [batch, 2, seq]: `ours.transpose(0, 1)`.
    """
    batch, length = input_ids.shape
    out = torch.zeros(2, batch, length, dtype=torch.long)
    for i, full_row in enumerate(input_ids.tolist()):
        start = _first_token(padding_mask, i)
        row = full_row[start:]
        context = _context_length(row, config.bos_token_id)
        positions = list(range(len(row)))
        mask_position = _mask_position(row, config.mask_token_id, config.gmask_token_id)
        if mask_position is not None:
            positions[context:] = [mask_position] * (len(row) - context)
        blocks = [0] * context + list(range(1, len(row) - context + 1))
        out[0, i, start:] = torch.tensor(positions, dtype=torch.long)
        out[1, i, start:] = torch.tensor(blocks, dtype=torch.long)
    return out.to(input_ids.device)


def attention_mask(
    input_ids: torch.Tensor,
    config,
    past_length: int,
    padding_mask: torch.Tensor | None,
    query_length: int,
    device: torch.device,
) -> torch.Tensor:
    """Boolean [batch, 1, query, past + query] mask, True where a query may attend a key.

    Keys already in the cache (earlier tokens, or a P-tuning prefix) are visible to every new query. Among the new
    tokens, those before `<sop>` are visible to all (the prompt is bidirectional), the rest causally. A chunk
    without `<sop>` is all prompt when nothing precedes it (THUDM's tokenizer does the same) and all generated
    part when it continues a cache. Every query sees itself, so a padding row is never empty (SDPA would give NaN).
    """
    batch = input_ids.shape[0]
    contexts = []
    for i in range(batch):
        row = input_ids[i].tolist()
        start = _first_token(padding_mask[:, -query_length:] if padding_mask is not None else None, i)
        bos = config.bos_token_id
        if bos is not None and bos in row[start:]:
            contexts.append(row.index(bos, start))
        else:
            contexts.append(0 if past_length else query_length)
    context = torch.tensor(contexts, device=device).view(batch, 1, 1)
    query = torch.arange(query_length, device=device).view(1, query_length, 1)
    key = torch.arange(query_length, device=device).view(1, 1, query_length)
    new = (key <= query) | (key < context)
    past = torch.ones(batch, query_length, past_length, dtype=torch.bool, device=device)
    mask = torch.cat([past, new.expand(batch, -1, -1)], dim=-1)
    if padding_mask is not None:
        keys = padding_mask[:, -(past_length + query_length) :].to(device=device, dtype=torch.bool)
        if keys.shape[1] < past_length + query_length:  # a mask for the new tokens only: the past is all tokens
            keys = torch.cat([keys.new_ones(batch, past_length + query_length - keys.shape[1]), keys], dim=1)
        mask = mask & keys[:, None, :]
    diagonal = torch.arange(query_length, device=device)
    mask[:, diagonal, past_length + diagonal] = True
    return mask[:, None]
