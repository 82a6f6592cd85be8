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


# ---- 3. staging leftovers of killed writes are reclaimed -----------------------------------------------------------
def cli_killed_when(args: list[str], folder_glob, tries: int = 3) -> Path:
    """Run `glm-workbench ARGS` and SIGKILL it the moment `folder_glob()` finds a staging entry; returns that
    entry. A write that finished before it was seen is tried again (a busy machine), up to `tries` times."""
    import os
    import signal
    import subprocess
    import sys

    from tests.conftest import REPO

    for _ in range(tries):
        process = subprocess.Popen(
            [sys.executable, "-m", "core.cli", *args],
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env={**os.environ, "GLM_WORKBENCH_LANG": "en"},
        )
        try:
            deadline = time.time() + 300
            while process.poll() is None and time.time() < deadline:
                found = folder_glob()
                if found:
                    process.send_signal(signal.SIGKILL)
                    process.wait(timeout=30)
                    return found[0]
                time.sleep(0.002)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait(timeout=30)
    pytest.fail(f"never saw the staging entry of: {' '.join(args)}")


def staging(folder: Path, pattern: str):
    return lambda: sorted(folder.glob(pattern)) if folder.is_dir() else []


@pytest.mark.slow
def test_a_kill_during_a_full_model_save_leaves_nothing_after_restart_or_resume(tmp_path, demo_model_dir):
    from core.workbench import Workbench

    workspace = tmp_path / "ws"
    args = ["train", "--workspace", str(workspace), "--set", "finetuning_type=full", "--set", "max_steps=2"]
    args += ["--set", "num_train_epochs=0", "--set", "learning_rate=1e-4"]
    leftover = cli_killed_when(args, lambda: sorted((workspace / "runs").glob("*/.model.partial-*")))
    run = leftover.parent
    assert leftover.is_dir() and not (run / "model").exists()
    copy = Path(shutil.copytree(run, tmp_path / "copy" / "runs" / run.name))  # the same state, twice
    time.sleep(2.5)  # FRESH_SECONDS: an entry this young might still be someone's

    # A restart of the workbench (the UI) reclaims it, saying so in the run's log.
    Workbench(workspace)
    assert not list(run.glob(".model.partial-*"))
    assert "reclaimed staging leftovers" in (run / "log.txt").read_text(encoding="utf-8")

    # Resume reclaims it too, and the finished run holds its model and nothing half-written.
    config = RunConfig.from_dict(dict(finetuning_type="full", max_steps=2, num_train_epochs=0, learning_rate=1e-4))
    status = TrainingSession(config, copy, resume=True).run()
    assert status["state"] == "finished", status.get("error")
    assert not [p.name for p in copy.iterdir() if ".partial" in p.name] and (copy / "model").is_dir()
    assert "reclaimed staging leftovers" in (copy / "log.txt").read_text(encoding="utf-8")


@pytest.mark.slow
def test_a_kill_during_a_merge_or_zip_leaves_nothing_in_exports(adapter_run, tmp_path, caplog):
    import logging

    from core.workbench import Workbench

    workspace = tmp_path / "ws"
    run = Path(shutil.copytree(adapter_run, workspace / "runs" / "lora"))
    exports = workspace / "exports"
    merged = cli_killed_when(
        ["export", "--run", str(run), "--merge", str(exports / "merged")], staging(exports, ".merged.partial-*")
    )
    assert merged.is_dir() and not (exports / "merged").exists()
    time.sleep(2.5)
    with caplog.at_level(logging.WARNING, logger="glm_workbench"):
        wb = Workbench(workspace)
    assert not merged.exists() and "reclaimed staging leftovers" in caplog.text and merged.name in caplog.text

    # A zip cut short (the full run's model, big enough to be caught) is reclaimed when the next export completes.
    full = tmp_path / "full"
    config = RunConfig.from_dict(dict(finetuning_type="full", max_steps=1, num_train_epochs=0, learning_rate=1e-4))
    assert TrainingSession(config, full).run()["state"] == "finished"
    zipped = cli_killed_when(
        ["export", "--run", str(full), "--zip", str(exports / "full.zip")], staging(exports, ".*.partial")
    )
    assert zipped.is_file()
    time.sleep(2.5)
    assert Path(wb.export_zip("lora")).is_file()
    assert not zipped.exists() and not [p.name for p in exports.iterdir() if p.name.startswith(".")]


def test_reclaim_removes_only_staging_names_the_workbench_made(tmp_path):
    """A user's files that merely look like staging leftovers (a merge target's parent is any folder the user
    names) survive a reclaim; ours, aged and unlocked, are removed."""
    import os

    from core.files import STAGING_TAG, reclaim_staging

    ours = [f".merged.partial-{STAGING_TAG}k2j", f".merged.old-{STAGING_TAG}x9", f".a.zip.{STAGING_TAG}q1.partial"]
    ours += [f".notes.json.{STAGING_TAG}z_3.tmp", f".partial-{STAGING_TAG}u7"]
    theirs = [".merged.partial-v2", ".thesis.old-2024", ".a.zip.draft.partial", ".notes.json.bak.tmp", ".partial-x"]
    for name in ours + theirs:
        path = tmp_path / name
        path.mkdir() if "partial-" in name or ".old-" in name else path.write_text("keep me", encoding="utf-8")
        os.utime(path, (time.time() - 60, time.time() - 60))  # old enough to be a dead writer's
    removed = {name for name, _ in reclaim_staging(tmp_path)}
    assert removed == set(ours)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(theirs)


# ---- 1. a UI killed while a dataset is prepared leaves no worker and a free port --------------------------------
def start_ui(workspace: Path, port: int, log: Path):
    import os
    import subprocess
    import sys
    import urllib.request

    from tests.conftest import REPO

    process = subprocess.Popen(
        [sys.executable, str(REPO / "launch.py"), "--port", str(port), "--workspace", str(workspace), "--lang", "en"],
        cwd=REPO,
        stdout=open(log, "ab"),  # noqa: SIM115 - the child keeps it
        stderr=subprocess.STDOUT,
        env={**os.environ, "GLM_WORKBENCH_DATA_PROCS": "2", "GLM_WORKBENCH_LANG": "en"},
    )
    deadline = time.time() + 180
    while True:
        if process.poll() is not None:
            return process  # it exited: the caller reads why
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/en/", timeout=2)
            return process
        except OSError:
            if time.time() > deadline:
                process.kill()
                raise TimeoutError(log.read_text()) from None
            time.sleep(0.3)


def children(pid: int) -> set[int]:
    found = set()
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found |= {int(c) for c in (task / "children").read_text().split()}
        except OSError:
            continue
    return found


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.slow
def test_a_ui_killed_while_preparing_data_leaves_no_worker_and_restarts_on_its_port(tmp_path, demo_model_dir):
    import os
    import signal
    import socket

    from gradio_client import Client, handle_file

    from tests.ui_server import free_port

    rows = tmp_path / "big.jsonl"
    with open(rows, "w", encoding="utf-8") as handle:
        for number in range(60_000):
            handle.write(json.dumps({"instruction": f"question {number} " * 4, "output": f"answer {number} " * 8}))
            handle.write("\n")
    workspace, port, log = tmp_path / "ws", free_port(), tmp_path / "ui.log"
    server = start_ui(workspace, port, log)
    workers: set[int] = set()
    try:
        client = Client(f"http://127.0.0.1:{port}/en/", verbose=False)
        client.submit(handle_file(str(rows)), "auto", "", "identity", api_name="/upload_dataset")
        deadline = time.time() + 120
        while len(workers) < 2 and time.time() < deadline:  # the datasets workers are at work
            workers |= children(server.pid)
            time.sleep(0.02)
        assert workers, f"no data worker was started: {log.read_text()[-2000:]}"
        server.send_signal(signal.SIGKILL)
        server.wait(timeout=30)
    finally:
        if server.poll() is None:
            server.kill()
    deadline = time.time() + 20
    while any(alive(pid) for pid in workers) and time.time() < deadline:
        time.sleep(0.1)
    survivors = [pid for pid in workers if alive(pid)]
    for pid in survivors:  # leave the machine clean whatever the verdict
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    assert not survivors, "data workers outlived the killed UI"
    from core.processes import port_holders

    holders = port_holders(port)
    for pid, _ in holders:  # forked from the killed UI: ours to clean up, whatever the verdict
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    assert not holders, f"the killed UI's port is still held by {holders}"
    with socket.socket() as probe:  # the port is free again at once
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind(("127.0.0.1", port))
    again = start_ui(workspace, port, log)
    try:
        assert again.poll() is None, log.read_text()[-2000:]
    finally:
        again.terminate()
        again.wait(timeout=30)


@pytest.mark.slow
def test_a_taken_port_is_refused_naming_the_process_that_holds_it(tmp_path):
    import os
    import socket
    import subprocess
    import sys

    from tests.conftest import REPO

    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        refused = subprocess.run(
            [sys.executable, str(REPO / "launch.py"), "--port", str(port), "--workspace", str(tmp_path / "ws")],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, "GLM_WORKBENCH_LANG": "en"},
        )
    assert refused.returncode == 2
    assert f"port {port} on 127.0.0.1 is already in use by process {os.getpid()}" in refused.stderr
    assert "pytest" in refused.stderr or "python" in refused.stderr


# ---- 7. a shared workbench only uses paths inside its allowed folders ------------------------------------------
def test_allowed_dirs_refuse_every_typed_path_outside_them(tmp_path, demo_model_dir):
    from core.access import AccessError
    from core.models.demo import DEMOS
    from core.workbench import Workbench

    outside = tmp_path / "private"
    outside.mkdir()
    secret = outside / "secret.jsonl"
    secret.write_text(json.dumps({"instruction": "pin", "output": "1234"}) + "\n", encoding="utf-8")
    (outside / "model").mkdir()
    (outside / "model" / "config.json").write_text("{}", encoding="utf-8")
    shared = tmp_path / "shared"
    shared.mkdir()
    inside = shared / "ok.jsonl"
    inside.write_text(secret.read_text(encoding="utf-8"), encoding="utf-8")
    wb = Workbench(tmp_path / "ws", allowed_dirs=[shared])
    for attempt in (
        lambda: wb.preview_dataset(str(secret)),
        lambda: wb.peek_dataset(str(secret), "auto", "", 10),
        lambda: wb.render_sample(str(secret), "auto", "demo", "auto", 0),
        lambda: wb.start_training(RunConfig(dataset=str(secret))),
        lambda: wb.start_training(RunConfig(model_name_or_path=str(outside / "model"))),
        lambda: wb.start_training(RunConfig(adapter_name_or_path=str(outside / "model"))),
        lambda: wb.start_training(RunConfig(output_dir=str(outside / "run"))),
        lambda: wb.estimate(RunConfig(model_name_or_path=str(outside / "model"))),
        lambda: wb.merge_run("any", str(outside / "merged")),
        lambda: list(wb.chat_stream([{"role": "user", "content": "hi"}], model=str(outside / "model"))),
    ):
        with pytest.raises(AccessError, match="is outside the folders this workbench may use"):
            attempt()
    assert not (tmp_path / "ws" / "runs").exists() or not any((tmp_path / "ws" / "runs").iterdir())
    assert wb.preview_dataset(str(inside)).row_count == 1  # an allowed folder, the demo sets and the workspace
    assert wb.preview_dataset("identity").row_count > 0
    for demo in DEMOS:  # every demo model is the workbench's own, not a typed path
        wb.access.check_model(demo)
    assert Workbench(tmp_path / "open").preview_dataset(str(secret)).row_count == 1  # not limited: as before


@pytest.mark.slow
def test_with_auth_a_logged_in_user_reads_and_copies_no_server_file(tmp_path, demo_model_dir):
    import uuid

    import httpx
    from gradio_client import Client, handle_file

    from tests.ui_server import running_ui

    pin = uuid.uuid4().hex  # this run's secret: a copy found anywhere came from this run
    secret = tmp_path / "private" / "secret.jsonl"
    secret.parent.mkdir()
    secret.write_text(json.dumps({"instruction": "pin", "output": pin}) + "\n", encoding="utf-8")
    workspace = tmp_path / "ws"
    with running_ui(workspace, extra_args=("--auth", "alice:s3cret")) as url:
        client = Client(url, auth=("alice", "s3cret"), verbose=False)
        summary, table, _ = client.predict(str(secret), "auto", 1, "", api_name="/preview_dataset")
        assert "is outside the folders this workbench may use" in summary and pin not in json.dumps(table)
        # A raw FileData naming a server file, never uploaded: refused, nothing copied into uploads/.
        raw = {"path": str(secret), "orig_name": "secret.jsonl", "meta": {"_type": "gradio.FileData"}}
        with httpx.Client(cookies=client.cookies, timeout=120) as http:
            event = http.post(f"{url}gradio_api/call/upload_dataset", json={"data": [raw, "auto", "", "identity"]})
            answer = http.get(f"{url}gradio_api/call/upload_dataset/{event.json()['event_id']}").text
        assert "was not uploaded by a user" in answer and pin not in answer
        assert not (workspace / "uploads").exists() or not list((workspace / "uploads").iterdir())
        from gradio.utils import get_upload_folder

        cached = [p for p in Path(get_upload_folder()).rglob("secret.jsonl") if pin in p.read_text()]
        assert not cached, cached  # not even copied into gradio's cache
        # A real upload still works, and is kept in the workspace.
        upload = tmp_path / "mine.jsonl"
        upload.write_text(json.dumps({"instruction": "q", "output": "a"}) + "\n", encoding="utf-8")
        chosen = client.predict(handle_file(str(upload)), "auto", "", "identity", api_name="/upload_dataset")[0]
        assert (workspace / "uploads" / "mine.jsonl").is_file(), chosen
