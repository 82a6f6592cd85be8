"""A validation split (val_size) is kept: the rows behind the eval samples, in the run folder as a dataset, so that
Evaluate and the Arena start on prompts the run never trained on, and the page names them, not their path."""

from __future__ import annotations

import json

from core.config import RunConfig
from core.data.dataset import tokenize_dataset
from core.data.formats import convert_row
from core.data.prepare import cut_sample
from core.data.readers import resolve_dataset
from core.data.template import TemplateEncoder
from core.evaluation.evaluate import EvalSettings, evaluate_run
from core.workbench import Workbench
from tests.conftest import write
from webui.context import UIContext
from webui.locale import Translator
from webui.tabs.evaluate_handlers import own_data


def test_the_held_out_rows_are_exactly_the_eval_samples_even_after_dropped_rows(tmp_path, demo_tokenizer):
    # Rows 1 and 4 keep no answer token within the cutoff: the samples after them shift, the held-out rows must not.
    long = "很长的问题" * 200
    rows = [{"instruction": f"问题{i}", "output": f"答案{i}"} for i in range(12)]
    rows[0]["instruction"] = rows[3]["instruction"] = long
    data_file = write(tmp_path / "rows.json", json.dumps(rows, ensure_ascii=False))
    data = tokenize_dataset(str(data_file), demo_tokenizer, "glm4", cutoff_len=64, val_size=4, seed=7)
    assert len(data.eval) == len(data.held_out) == 4 and len(data.problems) == 2
    encoder = TemplateEncoder(demo_tokenizer, "glm4")
    encoded = [cut_sample(*encoder.encode(c, cutoff_len=10**9), 64)[0]["input_ids"] for c in data.held_out]
    assert encoded == [list(sample["input_ids"]) for sample in data.eval]
    assert all(c.messages[0]["content"] != long for c in data.held_out)


def test_a_run_with_val_size_is_evaluated_on_its_held_out_rows(tmp_path, demo_model_dir):
    wb = Workbench(tmp_path / "workspace")
    run = wb.start_training(RunConfig(dataset="tool_calls", model_name_or_path="demo-moe", val_size=3, max_steps=2))
    wb.wait_for_job(600)
    assert wb.snapshot(run).state == "finished"
    trained, held_out = wb.run_datasets(run)
    assert trained == "tool_calls" and held_out == str(wb.run_path(run) / "held_out.jsonl")

    # Three rows of the set, as they were (tools, the calls and their arguments, reasoning), read back alike.
    kept = [json.loads(line) for line in open(held_out, encoding="utf-8")]
    originals = [convert_row(row, "openai") for row in json.loads(resolve_dataset("tool_calls").read_text("utf-8"))]
    assert len(kept) == 3 and all(convert_row(row, "openai") in originals for row in kept)
    assert any(m.get("tool_calls") for row in kept for m in row["messages"])

    # The Evaluate tab starts on them, lists them by name, and says they were held out.
    ctx = UIContext(wb, Translator("en"))
    choice, note = own_data(ctx, run)
    assert choice["value"] == held_out
    assert (f"{run}'s held-out rows (val_size)", held_out) in [tuple(c) for c in choice["choices"]]
    assert note == Translator("en")("eval_own_split", run=run, dataset="held_out.jsonl")
    result = evaluate_run(wb.run_path(run), held_out, settings=EvalSettings(max_samples=3, max_new_tokens=16))
    questions = {row["messages"][0]["content"] for row in kept}
    assert questions <= {p["prompt"] for p in result.predictions} and result.metrics["eval_loss"] > 0
