"""The whole spine through the web UI's own API (gradio_client), against a real `launch.py` process."""

from __future__ import annotations

import json
import time
import zipfile

import pytest

from tests.bad_inputs import UNUSABLE, USABLE, write
from tests.conftest import IDENTITY_FIRST_ANSWER
from tests.ui_server import poll_until, running_ui

pytestmark = pytest.mark.slow

gradio_client = pytest.importorskip("gradio_client")


def train_form(client, **by_label) -> list:
    """The Start button's inputs: the form's defaults, with some fields set by their (English) label."""
    parameters = client.view_api(return_format="dict", print_info=False)["named_endpoints"]["/start_training"][
        "parameters"
    ]
    labels = [p["label"] for p in parameters]
    assert set(by_label) <= set(labels), labels
    return [by_label.get(p["label"], p["parameter_default"]) for p in parameters]


def shown(output):
    """A component's value, whether the handler returned it plainly or in an update (that also shows it)."""
    return output.get("value", output) if isinstance(output, dict) and "__type__" in output else output


def chat(client, text, history=(), adapter=""):
    result = client.predict(text, list(history), "demo", adapter, "", 0.7, 0.9, 48, True, api_name="/chat")
    return result[0], result[0][-1]["content"][0]["text"]


@pytest.fixture(scope="module")
def ui(tmp_path_factory, demo_model_dir):
    workspace = tmp_path_factory.mktemp("ui") / "workspace"
    with running_ui(workspace) as url:
        yield gradio_client.Client(url, verbose=False), workspace


def test_train_in_the_ui_then_chat_and_download(ui, tmp_path, demo_model_dir):
    client, workspace = ui
    summary = client.predict("identity", "auto", 1, api_name="/preview_dataset")[0]
    assert "format **alpaca**" in summary and "50 rows" in summary
    _, base_reply = chat(client, "你是谁？")

    form = train_form(client, Method="lora", Dataset="identity")
    started = client.predict(*form, api_name="/start_training")
    assert started.startswith("Started run")
    run = started.split("run ")[1].rstrip(".")
    busy = client.predict(*form, api_name="/start_training")
    assert f"busy: run {run} is training" in busy

    deadline, status = time.time() + 600, {}
    while time.time() < deadline:
        progress, figure, log, status, *_ = client.predict("", api_name="/poll")
        if status.get("state") in ("finished", "failed", "aborted"):
            break
        time.sleep(1)
    assert status["state"] == "finished", status
    assert f"step {status['max_steps']}/{status['max_steps']}" in progress
    plotted = json.loads(figure["plot"])["data"][0]["y"]
    assert len(plotted) == status["max_steps"]
    quarter = len(plotted) // 4
    assert sum(plotted[-quarter:]) / quarter < sum(plotted[:quarter]) / quarter

    _, adapters, *_ = client.predict("demo", "", "", "", "", api_name="/refresh_chat_choices")
    assert [run, run] in adapters["choices"]
    history, tuned = chat(client, "你是谁？", adapter=run)
    assert tuned == IDENTITY_FIRST_ANSWER != base_reply
    _, second = chat(client, "Who are you?", history=history, adapter=run)
    assert "Xiaozhi" in second

    archive, notice = client.predict(run, api_name="/export_zip")
    assert notice.endswith(".zip")
    with zipfile.ZipFile(archive) as zipped:
        zipped.extractall(tmp_path / "adapter")
    from peft import PeftModel

    from core.models.loader import load_model

    model = PeftModel.from_pretrained(load_model(str(demo_model_dir)), str(tmp_path / "adapter"))
    assert any("lora_A" in name for name, _ in model.named_parameters())


@pytest.mark.parametrize("case", list(UNUSABLE))
def test_bad_uploads_show_a_specific_message_and_the_ui_keeps_working(ui, tmp_path, case):
    client, _ = ui
    name, content, message = UNUSABLE[case]
    path = write(tmp_path, name, content)
    result = client.predict(gradio_client.handle_file(str(path)), "auto", api_name="/upload_dataset")
    summary = result[1]
    assert summary.startswith("**Error:**") and message in summary
    assert "value" not in result[0]  # the dataset choice stays where it was: a file that cannot train is not selected
    assert "is still the dataset in use" in summary
    assert "Traceback" not in summary
    # The UI still answers: a good dataset previews fine afterwards.
    assert "format **sharegpt**" in client.predict("multiturn", "auto", 1, api_name="/preview_dataset")[0]


@pytest.mark.parametrize("case", list(USABLE))
def test_usable_uploads_preview_with_their_notes(ui, tmp_path, case):
    client, _ = ui
    name, content, text = USABLE[case]
    result = client.predict(
        gradio_client.handle_file(str(write(tmp_path, name, content))), "auto", api_name="/upload_dataset"
    )
    assert text in result[1] and not result[1].startswith("**Error:**")


def test_good_upload_is_selected_and_previewed(ui, tmp_path):
    client, workspace = ui
    path = tmp_path / "mine.jsonl"
    path.write_text(
        '{"prompt": "你好", "response": "你好！"}\n{"prompt": "再见", "response": "再见！"}\n', encoding="utf-8"
    )
    dataset, summary, table, page, _ = client.predict(
        gradio_client.handle_file(str(path)), "auto", api_name="/upload_dataset"
    )
    assert dataset["value"].endswith("mine.jsonl") and "format **chatglm**" in summary and "2 rows" in summary
    assert shown(table)["data"][0][:2] == ["你好", "你好！"]


def test_a_column_mapping_makes_a_differently_named_file_usable(ui, tmp_path):
    client, workspace = ui
    path = tmp_path / "qa.jsonl"
    path.write_text(
        '{"question": "你是谁？", "answer": "我是问答助手。"}\n{"question": "你好", "answer": "你好！"}\n',
        encoding="utf-8",
    )
    dataset, summary, *_ = client.predict(gradio_client.handle_file(str(path)), "auto", "", api_name="/upload_dataset")
    assert summary.startswith("**Error:**") and "column mapping such as question=instruction" in summary
    assert "value" not in dataset and "upload the file again" in summary  # never the dataset in use as it is
    mapping = "question=instruction, answer=output"
    dataset, summary, *_ = client.predict(
        gradio_client.handle_file(str(path)), "auto", mapping, api_name="/upload_dataset"
    )
    uploaded = dataset["value"]  # with the mapping typed in first, it is kept and selected
    summary, table, _ = client.predict(uploaded, "auto", 1, mapping, api_name="/preview_dataset")
    assert "format **alpaca**" in summary and "2 rows" in summary
    assert shown(table)["headers"] == ["question", "answer"]  # the table shows the file as it is
    wrong = client.predict(uploaded, "auto", 1, "question=prompt_text", api_name="/preview_dataset")[0]
    assert wrong.startswith("**Error:**") and "'prompt_text' is not a column any format reads" in wrong
    started = client.predict(
        *train_form(client, Dataset=uploaded, Epochs=0, **{"Max steps": 2, "Column mapping (optional)": mapping}),
        api_name="/start_training",
    )
    run = started.split("run ")[1].rstrip(".")
    assert poll_until(client, ("finished", "failed"))["state"] == "finished"
    assert f"columns: {mapping}" in (workspace / "runs" / run / "config.yaml").read_text(encoding="utf-8")


def test_invalid_form_values_are_named(ui, tmp_path):
    client, _ = ui
    message = client.predict(
        *train_form(client, **{"Learning rate": -1, "Epochs": 0, "Batch size": 0, "LoRA rank": 0, "Model": ""}),
        api_name="/start_training",
    )
    assert message.startswith("**Error:**")
    # Each problem names the field as the form labels it, the config key after it.
    for expected in (
        "Learning rate (learning_rate): must be greater than 0",
        "Epochs (num_train_epochs): must be > 0 unless max_steps is set",
        "Batch size (per_device_train_batch_size): must be at least 1",
        "LoRA rank (lora_rank): must be at least 1",
        "Model (model_name_or_path): must name a model folder or 'demo'",
    ):
        assert expected in message
    # The template picker only offers known templates; a YAML file can still name another.
    yaml_file = tmp_path / "bad.yaml"
    yaml_file.write_text("template: llama3\n", encoding="utf-8")
    loaded = client.predict(gradio_client.handle_file(str(yaml_file)), api_name="/load_config")
    assert (
        loaded[-1].startswith("**Error:**")
        and "Chat template (template): must be auto or one of glm4, glm4_moe, glm47, glmz1, chatglm3, chatglm2"
        in loaded[-1]
    )
    missing = client.predict(*train_form(client, Model="/no/such/model"), api_name="/start_training")
    assert missing.startswith("**Error:**") and "/no/such/model: model folder not found" in missing
    assert client.predict("", api_name="/poll")[3].get("state") != "running"  # nothing was started


def test_data_beyond_cutoff_through_the_ui(ui, tmp_path):
    """Every sample longer than cutoff_len: the run fails saying so; a 1 MB row trains, reported in the log."""
    client, workspace = ui
    client.predict(*train_form(client, Dataset="identity", **{"Cutoff length (tokens)": 8}), api_name="/start_training")
    failed = poll_until(client, ("finished", "failed"))
    assert failed["state"] == "failed"
    assert "no sample keeps any answer token within cutoff_len=8: raise cutoff_len" in failed["error"]
    assert "raise cutoff_len" in client.predict("", api_name="/poll")[0]  # shown in the progress, in plain words

    rows = [
        {"instruction": "总结：" + "长" * 1_000_000, "output": "很长。"},
        {"instruction": "你好", "output": "你好！"},
    ]
    path = tmp_path / "big.json"
    path.write_text(json.dumps(rows, ensure_ascii=False), encoding="utf-8")
    dataset, summary, *_ = client.predict(gradio_client.handle_file(str(path)), "auto", api_name="/upload_dataset")
    assert "2 rows" in summary and not summary.startswith("**Error:**")
    started = client.predict(
        *train_form(client, Dataset=dataset["value"], Epochs=0, **{"Max steps": 2, "Cutoff length (tokens)": 64}),
        api_name="/start_training",
    )
    run = started.split("run ")[1].rstrip(".")
    assert poll_until(client, ("finished", "failed"))["state"] == "finished"
    log = (workspace / "runs" / run / "log.txt").read_text(encoding="utf-8")
    assert "1 train / 0 eval samples" in log and "beyond cutoff_len=64" in log


def test_abort_resume_and_evaluate_from_the_ui(ui):
    client, _ = ui
    form = train_form(client, Method="lora", Epochs=0, **{"Max steps": 400})
    started = client.predict(*form, api_name="/start_training")
    run = started.split("run ")[1].rstrip(".")
    deadline = time.time() + 120
    while (client.predict("", api_name="/poll")[3].get("step") or 0) < 5 and time.time() < deadline:
        time.sleep(0.3)
    assert "Stopping" in client.predict(api_name="/abort_training")
    aborted = poll_until(client, ("aborted",))
    assert aborted["step"] < 400
    assert client.predict(api_name="/resume_training").startswith("Resuming")
    # From the click on, the page reads the run as under way, never its old "aborted" (Abort live, Resume not).
    assert client.predict("", api_name="/poll")[3]["state"] in ("queued", "running")
    finished = poll_until(client, ("finished",))
    assert finished["step"] == 400
    notice, metrics, predictions, *_ = client.predict(run, "identity", 4, 48, True, 0.7, api_name="/evaluate")
    assert notice == ""
    metrics, predictions = shown(metrics), shown(predictions)
    row = dict(zip(metrics["headers"], metrics["data"][0]))
    assert row["samples"] == 4 and row["ROUGE-1"] > 50
    assert predictions["headers"] == ["prompt", "reference answer", "model's answer"]


def test_config_saves_and_loads_as_yaml_with_a_command_preview(ui, tmp_path):
    client, _ = ui
    form = train_form(client, Method="freeze", **{"Learning rate": 5e-4, "Trainable layers": 3})
    saved, message = client.predict(*form, api_name="/save_config")
    assert message == ""
    text = open(saved, encoding="utf-8").read()
    assert "finetuning_type: freeze" in text and "freeze_trainable_layers: 3" in text
    preview = client.predict(*form, api_name="/command_preview")
    assert "--set finetuning_type=freeze" in preview and "--set freeze_trainable_layers=3" in preview
    loaded = client.predict(gradio_client.handle_file(saved), api_name="/load_config")
    labels = [
        p["label"]
        for p in client.view_api(return_format="dict", print_info=False)["named_endpoints"]["/start_training"][
            "parameters"
        ]
    ]
    values = dict(zip(labels, loaded))
    assert values["Method"] == "freeze" and values["Trainable layers"] == 3 and values["Learning rate"] == 5e-4
    assert loaded[-1].startswith("Loaded")


def test_side_by_side_runs_table_histogram_and_delete(ui):
    client, _ = ui
    started = client.predict(*train_form(client, Method="lora"), api_name="/start_training")
    run = started.split("run ")[1].rstrip(".")
    poll_until(client, ("finished",))
    answers = client.predict(
        "你是谁？", "demo", "", 0.7, 0.9, 48, True, "", run, run, 1.0, True, "", None, api_name="/compare"
    )
    assert answers[1] == answers[2] == IDENTITY_FIRST_ANSWER != answers[0]

    figure, cutoff_note = client.predict("identity", "auto", "demo", "auto", 8, api_name="/token_lengths")
    assert cutoff_note.startswith("**0 of 50 conversations keep an answer token within cutoff 8**")
    histogram = json.loads(figure["plot"])
    assert len(histogram["data"][0]["x"]) == 50
    assert "50 longer than cutoff_len=8" in histogram["layout"]["title"]["text"]

    client.predict(api_name="/refresh_runs")
    comparison = json.loads(client.predict([run], api_name="/compare_runs")["plot"])
    assert comparison["data"][0]["name"] == run and len(comparison["data"][0]["y"]) > 10

    table, *_, notice = client.predict(run, api_name="/delete_run")
    assert notice.startswith("Deleted") and run not in [row[0] for row in shown(table)["data"]]


def test_auth_protects_the_page_and_its_api(tmp_path, demo_model_dir):
    with running_ui(tmp_path / "ws", extra_args=("--auth", "alice:s3cret")) as url:
        with pytest.raises(Exception):  # noqa: B017 - gradio_client raises a different type in each version
            gradio_client.Client(url, verbose=False).predict("identity", "auto", 1, api_name="/preview_dataset")
        client = gradio_client.Client(url, auth=("alice", "s3cret"), verbose=False)
        assert "format **alpaca**" in client.predict("identity", "auto", 1, api_name="/preview_dataset")[0]


def test_chat_tab_serves_an_openai_api(ui):
    import openai

    from tests.ui_server import free_port

    client, _ = ui
    port = free_port()
    notice = client.predict(True, "demo", port, "", api_name="/serve_api")
    assert notice.startswith("API at") and f"127.0.0.1:{port}/v1" in notice
    api = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused", max_retries=0)
    names = [m.id for m in api.models.list().data]
    assert names[0] == "demo"
    reply = api.chat.completions.create(model="demo", messages=[{"role": "user", "content": "hi"}], max_tokens=5)
    assert reply.choices[0].message.role == "assistant"
    assert "stopped" in client.predict(False, "demo", port, "", api_name="/serve_api")


def test_abort_during_evaluation_keeps_the_scored_samples(ui):
    client, _ = ui
    started = client.predict(*train_form(client, Epochs=0, **{"Max steps": 3}), api_name="/start_training")
    run = started.split("run ")[1].rstrip(".")
    poll_until(client, ("finished",))
    job = client.submit(run, "advertise_gen", 0, 512, False, 1.0, api_name="/evaluate")  # sampling: long answers
    deadline = time.time() + 120
    while not client.predict(api_name="/abort_evaluation").startswith(
        "Evaluation stops"
    ):  # until the evaluation is under way
        assert time.time() < deadline and not job.done(), "the evaluation never started"
        time.sleep(0.2)
    notice, metrics, predictions, *_ = job.result(timeout=120)
    metrics, predictions = shown(metrics), shown(predictions)
    row = dict(zip(metrics["headers"], metrics["data"][0]))
    assert notice.startswith("Evaluation aborted after") and row["samples"] < row["planned"]
    assert len(predictions["data"]) == row["samples"]
    assert client.predict(api_name="/abort_evaluation") == "No evaluation is running."


def test_twenty_concurrent_chats_through_the_ui_queue_and_the_api(ui):
    from concurrent.futures import ThreadPoolExecutor

    import openai

    from tests.ui_server import free_port

    client, _ = ui
    questions = [f"第{n}个问题：你是谁？" for n in range(20)]
    jobs = [
        client.submit(q, [], "demo", "", "", 0.7, 0.9, 24, True, 1.0, True, "", api_name="/chat") for q in questions
    ]
    replies = [job.result(timeout=600) for job in jobs]
    for question, (history, _, notice, *_) in zip(questions, replies):
        assert notice == "" and history[0]["content"][0]["text"] == question
        assert history[-1]["role"] == "assistant" and history[-1]["content"][0]["text"]

    port = free_port()
    assert client.predict(True, "demo", port, "", api_name="/serve_api").startswith("API at")
    api = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused", max_retries=0, timeout=600)

    def ask(question: str) -> str:
        reply = api.chat.completions.create(
            model="demo", messages=[{"role": "user", "content": question}], max_tokens=24, temperature=0
        )
        return reply.choices[0].message.content

    try:
        with ThreadPoolExecutor(max_workers=20) as pool:
            answers = list(pool.map(ask, questions))
    finally:
        client.predict(False, "demo", port, "", api_name="/serve_api")
    assert len(answers) == 20 and all(answers)


def test_repetition_penalty_reaches_generation(ui):
    client, _ = ui

    def reply(penalty: float) -> str:
        history = client.predict("你好", [], "demo", "", "", 0.7, 0.9, 48, True, penalty, api_name="/chat")[0]
        return history[-1]["content"][0]["text"]

    assert reply(1.0) == reply(1.0) != reply(1.8)  # greedy: the same text twice, another with the penalty
