"""Each reader turns its file type into rows, and says which file and row is wrong when it cannot."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from core.data.readers import DataError, read_rows, resolve_dataset
from tests.conftest import write

ROWS = [{"instruction": "你好", "input": "", "output": "你好！"}, {"instruction": "1+1=?", "input": "", "output": "2"}]


def test_json_list(tmp_path):
    path = write(tmp_path / "a.json", json.dumps(ROWS, ensure_ascii=False))
    assert read_rows(path) == ROWS


def test_jsonl(tmp_path):
    path = write(tmp_path / "a.jsonl", "\n".join(json.dumps(r, ensure_ascii=False) for r in ROWS) + "\n\n")
    assert read_rows(path) == ROWS


def test_csv_utf8_with_bom_and_gbk(tmp_path):
    frame = pd.DataFrame(ROWS)
    bom = tmp_path / "bom.csv"
    bom.write_bytes(frame.to_csv(index=False).encode("utf-8-sig"))
    gbk = tmp_path / "gbk.csv"
    gbk.write_bytes(frame.to_csv(index=False).encode("gbk"))
    assert read_rows(bom) == ROWS
    assert read_rows(gbk) == ROWS


def test_parquet_with_nested_history(tmp_path):
    rows = [{"prompt": "再说一遍", "response": "好的", "history": [["你好", "你好！"]]}]
    path = tmp_path / "a.parquet"
    pd.DataFrame(rows).to_parquet(path)
    assert read_rows(path) == rows


def test_demo_datasets_resolve_and_read():
    for name in ("identity", "advertise_gen", "multiturn", "identity_pairs"):
        assert len(read_rows(resolve_dataset(name))) >= 30


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("empty.json", "", "empty.json: the file is empty"),
        ("blank.jsonl", "  \n\n ", "blank.jsonl: the file is empty"),
        ("broken.json", '[{"instruction": "a", "output": "b"},', "broken.json: invalid JSON at line 1"),
        (
            "object.json",
            '{"data": [{"a": 1}]}',
            "expected a JSON list of rows, got an object (did you mean the list under 'data'?)",
        ),
        ("bad.jsonl", '{"a": "1"}\n{"a": 2\n', "bad.jsonl: invalid JSON on line 2"),
        ("notes.txt", "hello", "notes.txt: unsupported file type '.txt'"),
        ("numbers.json", "[1, 2]", "numbers.json row 1: expected an object with named fields, got int"),
    ],
)
def test_bad_files_name_file_and_problem(tmp_path, name, content, message):
    with pytest.raises(DataError) as error:
        read_rows(write(tmp_path / name, content))
    assert message in str(error.value)


def test_parquet_named_json_is_explained(tmp_path):
    path = tmp_path / "data.json"
    pd.DataFrame(ROWS).to_parquet(path)
    with pytest.raises(DataError, match="parquet file named '.json'"):
        read_rows(path)


def test_missing_dataset_lists_demo_names(tmp_path):
    with pytest.raises(DataError, match="not a demo dataset: identity, advertise_gen, multiturn"):
        resolve_dataset(str(tmp_path / "nope.json"))
