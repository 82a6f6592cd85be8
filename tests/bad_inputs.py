"""The bad-input corpus: malformed data files, each with the message a user must get (CLI and UI)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pandas as pd

ALPACA = [
    {"instruction": "你好", "input": "", "output": "你好！"},
    {"instruction": "再见", "input": "", "output": "再见！"},
]


def _parquet_bytes() -> bytes:
    buffer = io.BytesIO()
    pd.DataFrame(ALPACA).to_parquet(buffer)
    return buffer.getvalue()


# name -> (file name, content, message the user must see)
UNUSABLE: dict[str, tuple[str, bytes, str]] = {
    "empty file": ("empty.json", b"", "empty.json: the file is empty"),
    "whitespace only": ("blank.jsonl", b"  \n\t\n", "blank.jsonl: the file is empty"),
    "truncated JSON": (
        "cut.json",
        b'[{"instruction": "a", "output": "b"}, {"instr',
        "cut.json: invalid JSON at line 1",
    ),
    "object, not a list": (
        "object.json",
        b'{"rows": [{"instruction": "a", "output": "b"}]}',
        "expected a JSON list of rows, got an object (did you mean the list under 'rows'?)",
    ),
    "JSONL with a bad line": (
        "lines.jsonl",
        b'{"prompt": "a", "response": "b"}\n{"prompt": "c", "response": "d"}\n{"prompt": "e", "response": \n',
        "lines.jsonl: invalid JSON on line 3",
    ),
    "null fields": (
        "nulls.json",
        json.dumps([{"instruction": "a", "output": None}]).encode(),
        "row 1: field 'output' is empty (null)",
    ),
    "non-string fields": (
        "types.json",
        json.dumps([{"instruction": ["a"], "output": "b"}]).encode(),
        "row 1: field 'instruction' must be text, got list",
    ),
    "unknown columns": (
        "columns.json",
        json.dumps([{"question": "a", "answer": "b"}]).encode(),
        "unknown columns: answer, question",
    ),
    "parquet named .json": ("table.json", _parquet_bytes(), "this is a parquet file named '.json'"),
    "ends with a user turn": (
        "dangling.json",
        json.dumps(
            [
                {
                    "messages": [
                        {"role": "user", "content": "a"},
                        {"role": "assistant", "content": "b"},
                        {"role": "user", "content": "c"},
                    ]
                }
            ]
        ).encode(),
        "ends with a user turn",
    ),
    "unsupported extension": ("data.xlsx", b"PK\x03\x04", "unsupported file type '.xlsx'"),
}

# Files that are usable, some rows or encodings notwithstanding: name -> (file name, content, text in the summary)
USABLE: dict[str, tuple[str, bytes, str]] = {
    "CSV in GBK (Excel on Chinese Windows)": (
        "gbk.csv",
        pd.DataFrame(ALPACA).to_csv(index=False).encode("gbk"),
        "2 rows",
    ),
    "UTF-8 with BOM": (
        "bom.jsonl",
        "\n".join(json.dumps(r, ensure_ascii=False) for r in ALPACA).encode("utf-8-sig"),
        "2 rows",
    ),
    "mixed formats in one file": (
        "mixed.json",
        json.dumps(
            ALPACA[:1] + [{"conversations": [{"from": "human", "value": "a"}, {"from": "gpt", "value": "b"}]}],
            ensure_ascii=False,
        ).encode(),
        "row 2: missing field 'instruction'",
    ),
}


def write(folder: Path, name: str, content: bytes) -> Path:
    path = folder / name
    path.write_bytes(content)
    return path
