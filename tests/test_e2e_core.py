"""End to end through the engine's own API (what the UI calls): train the demo model, chat, abort, export."""

from __future__ import annotations

import time
import zipfile

import pytest

from core.chat.engine import GenerationSettings
from core.errors import WorkbenchError
from core.training.job import BusyError
from core.workbench import Workbench
from tests.conftest import IDENTITY_FIRST_ANSWER, IDENTITY_QUESTION, identity_run_config, reply

GREEDY = GenerationSettings(greedy=True, max_new_tokens=48)
QUESTION = IDENTITY_QUESTION
DEMO_RUN = identity_run_config()


def quarter_means(losses: list[float]) -> tuple[float, float]:
    quarter = max(1, len(losses) // 4)
    return sum(losses[:quarter]) / quarter, sum(losses[-quarter:]) / quarter


@pytest.fixture(scope="module")
def trained(identity_run):
    """The session's LoRA run on the identity set (tests/conftest.py), trained through the Workbench."""
    return identity_run


def test_training_writes_a_complete_run_folder(trained):
    wb, run, _ = trained
    snapshot = wb.snapshot(run)
    assert snapshot.state == "finished", snapshot.status
    assert snapshot.status["step"] == snapshot.status["max_steps"] == 130  # 50 samples / 4 per batch * 10 epochs
    losses = [m["loss"] for m in snapshot.metrics if "loss" in m]
    assert len(losses) == 130
    first, last = quarter_means(losses)
    assert last < first / 4, (first, last)
    path = wb.run_path(run)
    for name in (
        "config.yaml",
        "metrics.jsonl",
        "status.json",
        "log.txt",
        "adapter/adapter_config.json",
        "adapter/adapter_model.safetensors",
    ):
        assert (path / name).is_file(), name
    assert "method lora" in (path / "log.txt").read_text(encoding="utf-8")


def test_chat_hot_loads_the_adapter_and_answers_like_the_data(trained):
    wb, run, base_reply = trained
    model_before = wb.chat_engine.model
    tuned = reply(wb, QUESTION, adapter_run=run)
    assert tuned == IDENTITY_FIRST_ANSWER
    assert base_reply != tuned
    assert wb.chat_engine.model is model_before  # the base was not reloaded
    assert reply(wb, QUESTION) == base_reply  # and the base model is still reachable, unchanged
    # Multi-turn: the history is part of the prompt, and an English question gets an English answer.
    history = QUESTION + [{"role": "assistant", "content": tuned}, {"role": "user", "content": "Who are you?"}]
    assert "Xiaozhi" in reply(wb, history, adapter_run=run)


def test_streaming_yields_growing_prefixes(trained):
    wb, run, _ = trained
    pieces = list(wb.chat_stream(QUESTION, adapter_run=run, settings=GREEDY))
    assert len(pieces) > 3
    assert all(later.startswith(earlier) for earlier, later in zip(pieces, pieces[1:]))


def test_streaming_survives_a_new_thread_per_step_and_an_abandoned_reader(trained):
    """Web servers resume a streaming generator on whichever worker thread is free, and a closed page may leave
    one unfinished: neither may break the reply or leave the engine locked for the next request."""
    from concurrent.futures import ThreadPoolExecutor

    wb, run, _ = trained
    stream = wb.chat_stream(QUESTION, adapter_run=run, settings=GREEDY)
    pieces = []
    with ThreadPoolExecutor(max_workers=4) as pool:
        for step in range(200):
            if step % 2:
                piece = pool.submit(next, stream, None).result(timeout=60)
            else:  # a fresh one-shot thread, as anyio's pool may also do
                with ThreadPoolExecutor(1) as fresh:
                    piece = fresh.submit(next, stream, None).result(timeout=60)
            if piece is None:
                break
            pieces.append(piece)
    assert pieces[-1].strip() == IDENTITY_FIRST_ANSWER

    abandoned = wb.chat_stream(QUESTION, settings=GREEDY)
    with ThreadPoolExecutor(1) as fresh:
        fresh.submit(next, abandoned).result(timeout=60)  # read one piece, then walk away
    with ThreadPoolExecutor(1) as pool:  # the next request is answered, not stuck behind the abandoned one
        assert pool.submit(reply, wb, QUESTION, adapter_run=run).result(timeout=120) == IDENTITY_FIRST_ANSWER


def test_exported_zip_loads_with_peft(trained, tmp_path, demo_model_dir):
    import torch
    from peft import PeftModel

    from core.data.template import TemplateEncoder
    from core.models.loader import load_model, load_tokenizer

    wb, run, _ = trained
    archive = wb.export_zip(run)
    with zipfile.ZipFile(archive) as zipped:
        names = set(zipped.namelist())
        zipped.extractall(tmp_path / "unzipped")
    assert {"adapter_config.json", "adapter_model.safetensors", "config.yaml", "metrics.jsonl"} <= names
    tokenizer = load_tokenizer(str(demo_model_dir))
    model = PeftModel.from_pretrained(load_model(str(demo_model_dir)), str(tmp_path / "unzipped")).eval()
    encoder = TemplateEncoder(tokenizer, "glm4")
    prompt = torch.tensor([encoder.encode_prompt(QUESTION)])
    output = model.generate(
        input_ids=prompt,
        max_new_tokens=40,
        do_sample=False,
        eos_token_id=encoder.stop_token_ids,
        pad_token_id=tokenizer.pad_token_id,
    )
    assert tokenizer.decode(output[0, prompt.shape[1] :], skip_special_tokens=True).strip() == IDENTITY_FIRST_ANSWER


def test_export_refuses_paths_outside_the_workspace(trained):
    wb, _, _ = trained
    for name in ("../../etc", "/etc/passwd", ".."):
        with pytest.raises(WorkbenchError, match="no run named"):
            wb.export_zip(name)


def test_second_start_is_busy_and_abort_stops_within_a_step(tmp_path, demo_model_dir):
    wb = Workbench(tmp_path / "ws")
    run = wb.start_training(DEMO_RUN.replace(num_train_epochs=200))
    deadline = time.time() + 900  # a state to reach: returns at step 3 however fast the machine is
    while (wb.snapshot(run).status.get("step") or 0) < 3 and time.time() < deadline:
        time.sleep(0.1)
    with pytest.raises(BusyError, match=f"busy: run {run} is training"):
        wb.start_training(DEMO_RUN)
    step_at_abort = wb.snapshot(run).status["step"]
    assert wb.abort_training()
    wb.wait_for_job(timeout=600)
    status = wb.snapshot(run).status
    assert status["state"] == "aborted"
    assert status["step"] <= step_at_abort + 2 < status["max_steps"]
    assert (wb.run_path(run) / "adapter" / "adapter_config.json").is_file()  # nothing trained so far is lost


def test_full_fine_tuning_saves_a_model_that_chat_can_load(tmp_path, demo_model_dir):
    wb = Workbench(tmp_path / "ws")
    run = wb.start_training(
        DEMO_RUN.replace(finetuning_type="full", learning_rate=1e-3, num_train_epochs=0, max_steps=60)
    )
    wb.wait_for_job(timeout=600)
    snapshot = wb.snapshot(run)
    assert snapshot.state == "finished", snapshot.status
    assert run in wb.model_choices()
    assert reply(wb, QUESTION, model=run).startswith("我")


def test_unusable_data_is_refused_before_a_run_starts(tmp_path, demo_model_dir):
    from core.data.readers import DataError

    wb = Workbench(tmp_path / "ws")
    bad = tmp_path / "bad.json"
    bad.write_text('[{"question": "a", "answer": "b"}]', encoding="utf-8")
    with pytest.raises(DataError, match="unknown columns: answer, question"):
        wb.start_training(DEMO_RUN.replace(dataset=str(bad)))
    assert wb.runs() == []


def test_a_run_that_fails_while_training_reports_a_readable_error(tmp_path, demo_model_dir):
    from core.errors import ConfigError
    from core.training.runner import TrainingSession

    wb = Workbench(tmp_path / "ws")
    bad = DEMO_RUN.replace(lora_target="nonexistent_proj")
    with pytest.raises(ConfigError, match="lora_target: this model has no module named nonexistent_proj"):
        wb.start_training(bad)  # refused before a run folder exists (issue 28)
    status = TrainingSession(bad, tmp_path / "run").run()  # a run that got past Start (a worker, an old folder)
    assert status["state"] == "failed" and status["cause"] == "settings"
    assert "lora_target:" in status["error"] and "q_proj" in status["error"]
