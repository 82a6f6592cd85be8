"""The data path on `datasets` (core/data/stream.py, cache.py, prepare.py): the same rows, problems, samples and
split as reading the whole file into Python; cached by content and settings; damaged entries rebuilt."""

from __future__ import annotations

import json
import os
import pickle
import random

import pandas as pd
import pytest

from core.data import prepare, stream
from core.data.cache import cache_root
from core.data.dataset import load_conversations, tokenize_conversations, tokenize_dataset
from core.data.readers import read_rows
from core.errors import DataError
from tests.bad_inputs import ALPACA, UNUSABLE, USABLE, write


@pytest.fixture(autouse=True)
def own_home(tmp_path, monkeypatch):
    """Each test its own workbench home, so its data cache starts empty."""
    monkeypatch.setenv("GLM_WORKBENCH_HOME", str(tmp_path / "home"))


def streamed(path) -> list:
    rows: list = []
    for _, texts in stream.row_batches(path, rows.clear):
        rows += [json.loads(text) for text in texts]
    return rows


def outcome(call, *args):
    """What a call gives: its value, or the English sentence of the DataError it raises."""
    try:
        return call(*args)
    except DataError as exc:
        return f"error: {exc}"


def old_check(path, fmt="auto", columns=""):
    loaded = load_conversations(str(path), fmt, columns)
    return loaded.format, len(loaded.rows), len(loaded.conversations), [str(p) for p in loaded.result.problems]


def new_check(path, fmt="auto", columns=""):
    checked = prepare.check(str(path), fmt, columns)
    return checked.format, checked.row_count, checked.usable_count, [str(p) for p in checked.problems()]


NESTED = [{"prompt": "再说一遍", "response": "好的", "history": [["你好", "你好！"]], "n": 3, "x": None}] * 3

# file name -> content: beyond the corpus, the cases where reading in batches could go wrong
MORE_FILES: dict[str, bytes] = {
    "numbers.jsonl": b'{"instruction": "a", "output": 1}\n{"instruction": 2.5, "output": true}\n',
    "not_objects.jsonl": b'{"instruction": "a", "output": "b"}\n[1]\n"x"\n',
    "bad_after_non_object.jsonl": b'{"instruction": "a", "output": "b"}\n[1]\n{"instruction": \n',
    "blank_lines.jsonl": b'\n\n{"instruction": "a", "output": "b"}\r\n\r\n  \n{"instruction": "c", "output": "d"}',
    "first_line_bad.jsonl": b'{"instruction": \n{"instruction": "a", "output": "b"}\n',
    "lines.json": b'{"prompt": "a", "response": "b"}\n{"prompt": "c", "response": "d"}\n',
    "one_object.json": b'{"prompt": "a", "response": "b"}',
    "empty_list.json": b"[ ]",
    "scalars.json": b"[1, 2]",
    "trailing_comma.json": b'[{"prompt": "a", "response": "b"},]',
    "after_list.json": b'[{"prompt": "a", "response": "b"}] []',
    "nested.json": json.dumps(NESTED, ensure_ascii=False, indent=2).encode(),
    "quote_open.csv": b'instruction,output\n"a,b\n',
    "header_only.csv": b"instruction,output\n",
    "gbk.jsonl": "\n".join(json.dumps(r, ensure_ascii=False) for r in ALPACA).encode("gbk"),
    "latin.jsonl": b'{"instruction": "\xff\xfe", "output": "b"}\n',
    "broken.parquet": b"PAR1 this is not really parquet",
    "history_not_pairs.json": json.dumps([{"instruction": "a", "output": "b", "history": [["x"]]}] + ALPACA).encode(),
}


def _all_files(folder):
    files = {name: write(folder, name, content) for name, (name, content, _) in {**UNUSABLE, **USABLE}.items()}
    files.update({name: write(folder, name, content) for name, content in MORE_FILES.items()})
    parquet = folder / "nested.parquet"
    pd.DataFrame(NESTED * 5).to_parquet(parquet)
    files["nested.parquet"] = parquet
    return files


def test_rows_read_in_batches_are_the_rows_read_whole(tmp_path, monkeypatch):
    monkeypatch.setattr(stream, "CHUNK_BYTES", 5)  # every value and line cut at a chunk boundary somewhere
    monkeypatch.setattr(stream, "BATCH_ROWS", 2)
    for name, path in _all_files(tmp_path).items():
        whole = outcome(read_rows, path)
        if isinstance(whole, list) and all(isinstance(row, dict) for row in whole):
            assert streamed(path) == whole, name


def test_check_reports_exactly_what_reading_whole_reports(tmp_path):
    """The bad-input corpus and more: the same error, or the same format, counts and row problems, word for word."""
    for name, path in _all_files(tmp_path).items():
        assert outcome(new_check, path) == outcome(old_check, path), name
    mapped = write(tmp_path, "qa.jsonl", b'{"q": "a", "a": "b"}\n{"q": "c"}\n')
    for fmt, columns in (("auto", "q=instruction, a=output"), ("chatglm", ""), ("nope", ""), ("auto", "q")):
        assert outcome(new_check, mapped, fmt, columns) == outcome(old_check, mapped, fmt, columns)
    broken = write(tmp_path, "broken.jsonl", b'{"q": "a"}\n{"q": \n')  # the file's error comes before the mapping's
    assert outcome(new_check, broken, "auto", "q") == outcome(old_check, broken, "auto", "q")
    assert "invalid JSON on line 2" in outcome(new_check, broken, "auto", "q")


def mid_size_rows(count: int) -> list[dict]:
    """Alpaca rows of many lengths (some beyond a small cutoff), with history, system prompts and bad rows."""
    rng = random.Random(7)
    words = ["你好", "世界", "GLM", "workbench", "训练", "数据", "模型", "hello", "。", "，", "!", "\n", "  "]
    rows = []
    for number in range(count):
        text = lambda low, high: "".join(rng.choice(words) for _ in range(rng.randint(low, high)))  # noqa: E731
        row = {"instruction": text(1, 30), "input": text(0, 5) if number % 3 else "", "output": text(0, 60)}
        if number % 17 == 0:
            row["history"] = [[text(1, 5), text(1, 5)]]
        if number % 23 == 0:
            row["system"] = text(1, 8)
        if number % 97 == 0:
            row["instruction"] = text(100, 120)  # the answer starts beyond cutoff_len: the sample is left out
        if number % 101 == 0:
            row["output"] = None
        if number % 211 == 0:
            row["instruction"] = ["not", "text"]
        rows.append(row)
    return rows


def test_a_mid_size_file_tokenizes_exactly_as_one_sample_at_a_time(tmp_path, monkeypatch, demo_tokenizer):
    """8,000 rows through 2 worker processes (4 map batches each way): every sample's ids, labels and mask, the
    split, the truncation count and the problem report equal the in-memory path's (TemplateEncoder.encode, one
    sample at a time)."""
    monkeypatch.setenv("GLM_WORKBENCH_DATA_PROCS", "2")
    path = tmp_path / "mid.jsonl"
    path.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in mid_size_rows(8_000)), encoding="utf-8")
    environ = os.environ
    new = tokenize_dataset(str(path), demo_tokenizer, "glm4", 96, val_size=0.05, seed=3)
    # datasets' workers put back a copy of the environment; ours keeps the real one (monkeypatch restores into it)
    assert os.environ is environ
    loaded = load_conversations(str(path))
    old = tokenize_conversations(loaded.conversations, demo_tokenizer, "glm4", 96, 0.05, 3, loaded.path)
    assert len(new.train) == len(old.train) and len(new.eval) == len(old.eval) > 300
    assert list(new.train) == old.train
    assert list(new.eval) == old.eval
    assert new.truncated == old.truncated > 0
    problems = [str(p) for p in loaded.result.problems] + [str(p) for p in old.problems]
    assert [str(p) for p in new.problems] == problems
    assert any(p.startswith("sample ") for p in problems) and any(p.startswith("row ") for p in problems)
    assert new.problems[:3] == list(new.problems)[:3] and len(new.problems) == len(problems)


def entries(kind: str) -> list[str]:
    return sorted(p.name for p in cache_root().glob(f"{kind}-*"))


def test_the_cache_is_hit_on_a_second_load_and_missed_when_an_input_changes(tmp_path, monkeypatch, demo_tokenizer):
    calls = {"read": 0, "check": 0, "tokenize": 0}

    def counted(name, function):
        def wrapper(*args, **kwargs):
            calls[name] += 1
            return function(*args, **kwargs)

        return wrapper

    import copy

    tokenizer = copy.deepcopy(demo_tokenizer)
    tokenizer.add_special_tokens({"additional_special_tokens": ["sop", "</s>"]})  # chatglm3's template works too
    monkeypatch.setattr(stream, "row_batches", counted("read", stream.row_batches))
    monkeypatch.setattr(prepare, "check_batch", counted("check", prepare.check_batch))
    monkeypatch.setattr(prepare, "tokenize_batch", counted("tokenize", prepare.tokenize_batch))
    path = tmp_path / "data.jsonl"
    path.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in ALPACA * 20), encoding="utf-8")

    def load(cutoff=64, template="glm4", columns="", max_samples=0):
        return tokenize_dataset(str(path), tokenizer, template, cutoff, columns=columns, max_samples=max_samples)

    first = load()
    assert calls == {"read": 1, "check": 1, "tokenize": 1}
    assert (len(entries("rows")), len(entries("checked")), len(entries("tokens"))) == (1, 1, 1)
    again = load()
    assert calls == {"read": 1, "check": 1, "tokenize": 1}  # nothing read, checked or tokenized again
    assert list(again.train) == list(first.train)
    load(cutoff=32)
    assert calls == {"read": 1, "check": 1, "tokenize": 2}
    load(max_samples=10)
    assert calls == {"read": 1, "check": 1, "tokenize": 3}
    load(template="chatglm3")
    assert calls == {"read": 1, "check": 1, "tokenize": 4}
    load(columns="instruction=prompt, output=response")
    assert calls == {"read": 1, "check": 2, "tokenize": 5}
    path.write_text(path.read_text(encoding="utf-8") + "\n" + json.dumps(ALPACA[0]), encoding="utf-8")
    assert len(load().train) == len(first.train) + 1
    assert calls == {"read": 2, "check": 3, "tokenize": 6}
    assert (len(entries("rows")), len(entries("checked")), len(entries("tokens"))) == (2, 3, 6)
    assert list(load().train) != list(first.train)  # the changed file's own entry, not the first one's


def test_a_different_template_or_tokenizer_is_a_different_entry(tmp_path, demo_tokenizer):
    from transformers import PreTrainedTokenizerFast

    path = write(tmp_path, "data.json", json.dumps(ALPACA * 3).encode())
    prepare.tokenize(prepare.check(str(path)), demo_tokenizer, "glm4", 64)
    other = PreTrainedTokenizerFast(tokenizer_object=demo_tokenizer.backend_tokenizer, eos_token="<|user|>")
    assert prepare.tokenizer_fingerprint(other) == prepare.tokenizer_fingerprint(demo_tokenizer)  # same encoding
    other.backend_tokenizer.add_tokens(["workbench"])
    assert prepare.tokenizer_fingerprint(other) != prepare.tokenizer_fingerprint(demo_tokenizer)
    prepare.tokenize(prepare.check(str(path)), other, "glm4", 64)
    assert len(entries("tokens")) == 2


def test_the_cache_lives_under_the_workbench_home_and_nothing_is_written_beside_the_data(tmp_path):
    folder = tmp_path / "data"
    folder.mkdir()
    path = write(folder, "data.jsonl", "\n".join(json.dumps(r) for r in ALPACA).encode())
    prepare.check(str(path))
    assert sorted(p.name for p in folder.iterdir()) == ["data.jsonl"]
    assert cache_root() == tmp_path / "home" / "data-cache" and entries("rows") and entries("checked")


def test_a_damaged_entry_is_rebuilt_and_a_folder_not_ours_is_left_alone(tmp_path, demo_tokenizer):
    path = write(tmp_path, "data.jsonl", "\n".join(json.dumps(r) for r in ALPACA * 50).encode())
    good = list(tokenize_dataset(str(path), demo_tokenizer, "glm4", 64).train)
    (tokens,) = cache_root().glob("tokens-*")
    (arrow,) = tokens.glob("*.arrow")
    arrow.write_bytes(arrow.read_bytes()[:-100])  # cut short, as by a full disk
    assert list(tokenize_dataset(str(path), demo_tokenizer, "glm4", 64).train) == good
    (rows,) = cache_root().glob("rows-*")
    (rows / "meta.json").unlink()
    (cache_root() / f".{rows.name}.partial-glmwbdead").mkdir()  # left by a process killed while writing
    assert list(tokenize_dataset(str(path), demo_tokenizer, "glm4", 64).train) == good
    assert not list(cache_root().glob(".*.partial-*"))
    (checked,) = cache_root().glob("checked-*")
    (checked / "usable.npy").write_bytes(b"not numpy at all, but of the right size?")
    assert list(tokenize_dataset(str(path), demo_tokenizer, "glm4", 64).train) == good

    # Someone else's folder where an entry would go: refused with a message, never deleted.
    import shutil

    shutil.rmtree(tokens)
    tokens.mkdir()
    (tokens / "mine.txt").write_text("not the workbench's", encoding="utf-8")
    with pytest.raises(DataError, match="is in the way of the data cache"):
        tokenize_dataset(str(path), demo_tokenizer, "glm4", 64)
    assert (tokens / "mine.txt").read_text(encoding="utf-8") == "not the workbench's"


def test_errors_cross_process_boundaries_whole():
    """A worker process's error reaches the caller with its code, parameters, file and row."""
    error = DataError("data.row_not_object", "/data/x.jsonl", 7, got="list")
    again = pickle.loads(pickle.dumps(error))
    assert type(again) is DataError and str(again) == str(error) and again.row == 7 and again.code == error.code


def test_the_data_tab_pages_a_large_file_without_reading_it_whole(tmp_path, monkeypatch, demo_model_dir):
    """A large file's first page comes straight from the file, later pages from the cache; the histogram measures
    a stated random sample; the summary counts every row."""
    import core.workbench as workbench
    from core.workbench import Workbench
    from webui.charts import length_histogram
    from webui.locale import Translator

    monkeypatch.setattr(prepare, "PEEK_FROM_BYTES", 1_000)  # "large" for this test
    monkeypatch.setattr(workbench, "LENGTH_SAMPLE", 40)
    rows = [{"instruction": f"问题 {n}", "input": "", "output": "答" * (n % 9 + 1)} for n in range(3_000)]
    rows[5]["output"] = None
    path = write(tmp_path, "big.jsonl", "\n".join(json.dumps(r, ensure_ascii=False) for r in rows).encode())
    wb = Workbench(tmp_path / "ws")
    peek = wb.peek_dataset(str(path), "auto", "", 20)
    assert peek.format == "alpaca" and peek.rows == rows[:20]
    assert not entries("rows")  # nothing read into the cache for the first page
    checked = wb.preview_dataset(str(path))
    assert (checked.row_count, checked.usable_count, checked.problem_count) == (3_000, 2_999, 1)
    assert [str(p) for p in checked.problems(20)] == ["row 6: field 'output' is empty (null)"]
    assert checked.page(150, 20) == rows[2_980:] and checked.page(151, 20) == []
    assert wb.peek_dataset(str(path), "auto", "", 20) is None  # checked before: the check itself is quick now
    assert wb.peek_dataset(str(path), "auto", "", 20_000) is None  # far pages wait for the check

    model = str(demo_model_dir)
    lengths = wb.token_lengths(str(path), "auto", model, "auto")
    assert lengths.sampled and len(lengths.lengths) == 40 and lengths.total == 2_999
    assert wb.token_lengths(str(path), "auto", model, "auto").lengths == lengths.lengths  # the same sample
    title = length_histogram(lengths.lengths, 8, Translator("en"), total=lengths.total).layout.title.text
    assert title.startswith("Token lengths of a random sample of 40 of the 2999 samples")
    template, pieces = wb.render_sample(str(path), "auto", model, "auto", 10**6)  # past the end: the last one
    assert template == "glm4" and "".join(text for text, trains in pieces if trains) == "答答答<|endoftext|>"


def test_a_full_disk_while_caching_says_so_and_leaves_no_partial_entry(tmp_path, monkeypatch):
    import errno

    import datasets

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(datasets.arrow_writer.ArrowWriter, "write_batch", full)
    path = write(tmp_path, "data.jsonl", "\n".join(json.dumps(r) for r in ALPACA).encode())
    with pytest.raises(DataError, match="cannot write the data cache in .*No space left on device"):
        prepare.check(str(path))
    assert not [p for p in cache_root().iterdir() if not p.name.endswith(".lock")]
