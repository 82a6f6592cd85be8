"""Kills, damaged files and hostile requests (issue 28): each case reproduced with real files, real processes and
real kills, and what must hold afterwards."""

from __future__ import annotations

import importlib.util
import json
import shutil
import threading
import time
from pathlib import Path

import pytest
from transformers import TrainerCallback

from core.config import RunConfig
from core.runs import read_metrics, read_status
from core.training.runner import TrainingSession

SHORT = RunConfig(dataset="identity", learning_rate=2e-3, max_steps=8, num_train_epochs=0, save_steps=2)


class AbortAt(TrainerCallback):
    """Presses Abort once the run reaches `step` (Abort saves a checkpoint there)."""

    def __init__(self, stop: threading.Event, step: int):
        self.stop, self.step = stop, step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step >= self.step:
            self.stop.set()


def aborted_run(folder: Path, step: int = 5) -> Path:
    stop = threading.Event()
    status = TrainingSession(SHORT, folder, stop_event=stop, callbacks=[AbortAt(stop, step)]).run()
    assert status["state"] == "aborted", status
    assert (folder / "checkpoints" / f"checkpoint-{step}").is_dir()
    return folder


@pytest.fixture(scope="module")
def aborted(tmp_path_factory, demo_model_dir) -> Path:
    """One LoRA run aborted at step 5, with checkpoints 2, 4 and 5: each test damages its own copy."""
    return aborted_run(tmp_path_factory.mktemp("aborted") / "run")


def copy_of(run: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(run, tmp_path / run.name))


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


DAMAGE = {
    "adapter_model.safetensors": truncate,
    "optimizer.pt": truncate,
    "trainer_state.json": lambda path: path.write_text("{not json", encoding="utf-8"),
}


# ---- 2. a damaged newest checkpoint never blocks Resume ----------------------------------------------------------
@pytest.mark.parametrize("damaged", list(DAMAGE))
def test_resume_skips_a_damaged_newest_checkpoint_and_says_which(damaged, aborted, tmp_path):
    run = copy_of(aborted, tmp_path)
    DAMAGE[damaged](run / "checkpoints" / "checkpoint-5" / damaged)
    notes = []
    status = TrainingSession(SHORT, run, resume=True, notify=notes.append).run()
    assert status["state"] == "finished" and status["step"] == 8, status.get("error")
    said = [str(note) for note in notes]
    assert any("checkpoint-5 is damaged" in s and damaged in s and "Resuming from checkpoint-4" in s for s in said)
    assert not any("unexpected error" in s or "bug" in s for s in said)
    log = (run / "log.txt").read_text(encoding="utf-8")
    assert "checkpoint-5 is damaged and was skipped" in log and damaged in log
    assert (run / "checkpoints" / "damaged-checkpoint-5" / damaged).is_file()  # kept aside, out of rotation
    records = read_metrics(run)
    assert [m["step"] for m in records if m.get("event") == "resume"] == [4]  # resumed from the intact one
    assert read_status(run)["state"] == "finished"


def test_every_checkpoint_damaged_trains_again_from_step_0(aborted, tmp_path):
    run = copy_of(aborted, tmp_path)
    for checkpoint in (run / "checkpoints").glob("checkpoint-*"):
        truncate(checkpoint / "adapter_model.safetensors")
    notes = []
    status = TrainingSession(SHORT, run, resume=True, notify=notes.append).run()
    assert status["state"] == "finished" and status["step"] == 8, status.get("error")
    assert sum("is damaged" in str(note) for note in notes) == 3
    assert any("step 0 (no intact checkpoint is left)" in str(note) for note in notes)
    assert json.loads((run / "status.json").read_text())["state"] == "finished"


# ---- 5. settings that cannot run are refused before a run folder exists ----------------------------------------
BAD_SETTINGS = {
    "seed": (dict(seed=-1), "seed: must be a whole number from 0 to 4294967295 (got -1)"),
    "epochs": (dict(num_train_epochs=float("inf")), "num_train_epochs: must be a finite number (got inf)"),
    "tracker": (dict(report_to="wandb"), "report_to: wandb is not installed here: pip install wandb"),
    "lora_target": (dict(lora_target="q_proj,nonexistent_proj"), "lora_target: this model has no module named"),
}


@pytest.mark.parametrize("case", list(BAD_SETTINGS))
def test_settings_that_cannot_run_are_refused_before_a_run_folder(case, tmp_path, demo_model_dir):
    from core.errors import ConfigError
    from core.workbench import Workbench

    changes, said = BAD_SETTINGS[case]
    if case == "tracker" and importlib.util.find_spec("wandb") is not None:
        pytest.skip("wandb is installed here")
    workspace = tmp_path / "ws"
    with pytest.raises(ConfigError) as refused:
        Workbench(workspace).start_training(RunConfig(**changes))
    text = str(refused.value)
    assert text.startswith(said) and "\n" not in text, text
    assert "unexpected" not in text and not (workspace / "runs").exists() or not any((workspace / "runs").iterdir())


def test_a_run_that_fails_on_its_settings_says_so_and_resume_is_refused(tmp_path, demo_model_dir):
    """A run folder whose config cannot run (written by hand, or by an older version that let it through): the
    run fails naming the setting, not as an unexpected error, and Resume is refused with the same words."""
    from core.errors import ConfigError
    from core.training.lifecycle import claim_for_resume

    run = tmp_path / "run"
    status = TrainingSession(SHORT.replace(lora_target="nonexistent_proj"), run).run()
    assert status["state"] == "failed" and status["cause"] == "settings"
    assert status["error"].startswith("The run's settings cannot be used: lora_target: this model has no module")
    assert "Fix them and start a new run" in status["error"] and "unexpected" not in status["error"]
    with pytest.raises(ConfigError, match="lora_target: this model has no module named nonexistent_proj"):
        claim_for_resume(run)
    assert read_status(run)["state"] == "failed"  # the refused Resume changed nothing


@pytest.mark.slow
def test_the_cli_and_a_yaml_refuse_bad_settings_before_a_run_folder(tmp_path, demo_model_dir):
    import os
    import subprocess
    import sys

    from tests.conftest import REPO

    workspace = tmp_path / "ws"
    config = tmp_path / "bad.yaml"
    config.write_text("dataset: identity\nseed: -1\nnum_train_epochs: .inf\nlora_target: nope\n", encoding="utf-8")
    refused = subprocess.run(
        [sys.executable, "-m", "core.cli", "train", str(config), "--workspace", str(workspace)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "GLM_WORKBENCH_LANG": "en"},
    )
    assert refused.returncode == 2, refused.stderr[-2000:]
    assert "seed: must be a whole number from 0 to 4294967295 (got -1)" in refused.stderr
    assert "num_train_epochs: must be a finite number (got inf)" in refused.stderr
    assert "Traceback" not in refused.stderr and "unexpected" not in refused.stderr
    assert not (workspace / "runs").exists() or not any((workspace / "runs").iterdir())


# ---- 4. opening the page never writes --------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.browser
def test_opening_the_page_builds_no_zip_and_the_click_downloads_one(browser, tmp_path, demo_model_dir):
    import time
    import zipfile

    from playwright.sync_api import expect

    from tests.browser import open_tab
    from tests.ui_server import running_ui
    from webui.locale import Translator

    workspace = tmp_path / "ws"
    status = TrainingSession(SHORT.replace(save_steps=0, max_steps=2), workspace / "runs" / "done").run()
    assert status["state"] == "finished"
    exports = workspace / "exports"
    with running_ui(workspace) as url:
        page = browser.new_page(accept_downloads=True)
        page.set_default_timeout(60_000)
        page.goto(url)
        expect(page.locator("#data-summary")).not_to_be_empty(timeout=60_000)
        time.sleep(4)  # the page's load events have run (the Export tab's picker is set among them)
        assert not list(exports.glob("*.zip")), list(exports.iterdir())
        open_tab(page, Translator("en")("tab_export"))
        expect(page.locator("#export-notice")).to_contain_text("done.zip")
        time.sleep(2)
        assert not list(exports.glob("*.zip"))  # choosing the run still wrote nothing
        with page.expect_download() as download:
            page.locator("#export-download").click()
        saved = tmp_path / "got.zip"
        download.value.save_as(saved)
        page.close()
    assert (exports / "done.zip").is_file()
    assert "adapter_model.safetensors" in " ".join(zipfile.ZipFile(saved).namelist())


# ---- 6. every API answer is an OpenAI error, adapters checked at start, a bounded queue -------------------------
@pytest.fixture(scope="module")
def adapter_run(tmp_path_factory, demo_model_dir) -> Path:
    run = tmp_path_factory.mktemp("adapter") / "run"
    assert TrainingSession(SHORT.replace(save_steps=0, max_steps=2), run).run()["state"] == "finished"
    return run


@pytest.fixture(scope="module")
def api(adapter_run, tmp_path_factory):
    """The API over the demo model, with a good adapter and a truncated copy of it; no waiting room."""
    from core.api import ApiServer, create_api
    from core.chat.engine import ChatEngine
    from tests.ui_server import free_port

    damaged = Path(shutil.copytree(adapter_run / "adapter", tmp_path_factory.mktemp("damaged") / "adapter"))
    truncate(damaged / "adapter_model.safetensors")
    adapters = {"good": str(adapter_run / "adapter"), "damaged": str(damaged)}
    engine = ChatEngine()
    engine.load_model("demo")
    app = create_api(engine, "demo", lambda: adapters, api_key="sk-right", max_queue=0)
    server = ApiServer(app, port=free_port()).start()
    server.app, server.engine = app, engine
    yield server
    server.stop()


def call(server, path: str, body: bytes | None = None, key: str = "sk-right", method: str | None = None):
    """(status, headers, parsed JSON body); a body that is not JSON fails the test."""
    import urllib.error
    import urllib.request

    request = urllib.request.Request(
        server.url.removesuffix("/v1") + path,
        data=body,
        method=method or ("POST" if body is not None else "GET"),
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, response.headers, json.loads(response.read())
    except urllib.error.HTTPError as error:
        text = error.read()
        try:
            return error.code, error.headers, json.loads(text)
        except ValueError:
            pytest.fail(f"{error.code} answered with plain text: {text[:200]!r}")


def openai_error(answer) -> dict:
    status, _, body = answer
    assert set(body) == {"error"} and {"message", "type", "param", "code"} <= set(body["error"]), body
    return body["error"]


def chat_body(model: str = "demo", **extra) -> bytes:
    return json.dumps({"model": model, "messages": [{"role": "user", "content": "你是谁？"}], "max_tokens": 4, **extra})


def test_a_deeply_nested_body_is_a_400_openai_error(api, caplog):
    for body in ("[" * 1000 + "]" * 1000, '{"model": "demo", "messages": ' + "[" * 1000 + "]" * 1000 + "}"):
        answer = call(api, "/v1/chat/completions", body.encode())
        assert answer[0] == 400, answer
        assert openai_error(answer)["type"] == "invalid_request_error"
    assert "RecursionError" not in caplog.text and "Traceback" not in caplog.text


def test_unknown_routes_and_internal_errors_are_openai_errors(api):
    missing = call(api, "/v1/completions", chat_body().encode())
    assert missing[0] == 404 and "POST /v1/completions" in openai_error(missing)["message"]
    assert call(api, "/v1/models", method="DELETE")[0] == 405
    assert openai_error(call(api, "/nowhere"))["code"] == "not_found"


def test_an_internal_error_is_an_openai_500(adapter_run):
    """Whatever escapes a route (here: the adapter list cannot be read) is a 500 in OpenAI's shape."""
    from fastapi.testclient import TestClient

    from core.api import create_api
    from core.chat.engine import ChatEngine

    def broken() -> dict:
        raise RuntimeError("the adapter list is unreadable")

    engine = ChatEngine()
    engine.load_model("demo")
    with TestClient(create_api(engine, "demo", broken), raise_server_exceptions=False) as client:
        answer = client.get("/v1/models")
    assert answer.status_code == 500 and answer.headers["content-type"].startswith("application/json")
    body = answer.json()["error"]
    assert body["type"] == "server_error" and "RuntimeError" in body["message"]


def test_a_damaged_adapter_is_a_400_naming_its_file(api):
    answer = call(api, "/v1/chat/completions", chat_body("damaged").encode())
    error = openai_error(answer)
    assert answer[0] == 400 and error["param"] == "model" and error["code"] == "model_unavailable"
    assert "adapter_model.safetensors is damaged" in error["message"] and "cut short" in error["message"]
    assert call(api, "/v1/chat/completions", chat_body("good").encode())[0] == 200  # the good one still serves


def test_past_the_queue_a_request_gets_429_with_retry_after(api):
    """max_queue=0: while one request waits for the model (held here, as a chat in the same process would), the
    next is refused at once; when the model is free the first is answered."""
    from concurrent.futures import ThreadPoolExecutor

    engine, queue = api.engine, api.app.state.queue
    engine._lock.acquire()  # noqa: SLF001 - the model is busy
    try:
        with ThreadPoolExecutor(1) as pool:
            first = pool.submit(call, api, "/v1/chat/completions", chat_body().encode())
            deadline = time.time() + 60
            while queue.count < 1 and time.time() < deadline:
                time.sleep(0.05)
            status, headers, body = refused = call(api, "/v1/chat/completions", chat_body().encode())
            assert status == 429 and int(headers["Retry-After"]) >= 1
            assert openai_error(refused)["type"] == "rate_limit_error"
            engine._lock.release()  # noqa: SLF001
            assert first.result(timeout=120)[0] == 200
    finally:
        if engine._lock._is_owned():  # noqa: SLF001
            engine._lock.release()  # noqa: SLF001
    assert queue.count == 0 and call(api, "/v1/chat/completions", chat_body().encode())[0] == 200


def test_wrong_keys_are_refused_whatever_their_length(api):
    for key in ("", "sk-righ", "sk-right-and-more", "sk-wrong", "clé"):
        answer = call(api, "/v1/models", key=key)
        assert answer[0] == 401 and openai_error(answer)["code"] == "invalid_api_key"
    assert call(api, "/v1/models")[0] == 200


@pytest.mark.slow
def test_the_api_command_refuses_a_damaged_adapter_at_start(adapter_run, tmp_path):
    import os
    import subprocess
    import sys

    from tests.conftest import REPO
    from tests.ui_server import free_port

    damaged = Path(shutil.copytree(adapter_run / "adapter", tmp_path / "adapter"))
    truncate(damaged / "adapter_model.safetensors")
    started = subprocess.run(
        [sys.executable, "-m", "core.cli", "api", "--adapter", f"bad={damaged}", "--port", str(free_port())],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "GLM_WORKBENCH_LANG": "en"},
    )
    assert started.returncode == 2, started.stderr[-2000:]
    assert "adapter_model.safetensors is damaged" in started.stderr and "Traceback" not in started.stderr
