"""What the workbench promises about your files (docs/DESIGN.md), each promise tried the way it was broken:
through the CLI and the engine, with real processes killed and a real full disk where the machine allows one.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from core.config import RunConfig
from core.errors import RunStateError
from core.runs import read_metrics, read_status
from core.training.runner import TrainingSession
from core.workbench import Workbench
from tests.conftest import REPO

SHORT = RunConfig(dataset="identity", learning_rate=2e-3, max_steps=6, num_train_epochs=0)


def cli(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "core.cli", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "GLM_WORKBENCH_LANG": "en"},
    )


def tree(folder: Path) -> dict[str, bytes]:
    """Every file under `folder` with its bytes: what must come out of a refused command unchanged."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def leftovers(folder: Path) -> list[str]:
    """Staging and temporary files a write left behind."""
    return [str(p) for p in folder.rglob("*") if ".partial" in p.name or p.name.endswith(".tmp")]


def poll(predicate, timeout: float = 900, every: float = 0.2):
    """The predicate's first true value. The timeout is for a machine far busier than ours: a state reached
    early returns at once."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise TimeoutError(predicate)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, demo_model_dir) -> Path:
    """A workspace with one finished LoRA run."""
    root = tmp_path_factory.mktemp("trust") / "ws"
    status = TrainingSession(SHORT, root / "runs" / "finished-lora").run()
    assert status["state"] == "finished"
    return root


# ---- 1. a merge, export or conversion never deletes what it did not write -----------------------------------------
@pytest.mark.slow
def test_merge_into_a_folder_that_is_not_empty_is_refused_and_deletes_nothing(workspace, tmp_path):
    run = workspace / "runs" / "finished-lora"
    before = tree(workspace)
    refused = cli("export", "--run", str(run), "--merge", str(workspace / "runs"))
    assert refused.returncode == 2 and "is not empty: choose a new or empty folder" in refused.stderr
    assert "Traceback" not in refused.stderr
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me", encoding="utf-8")
    overwrite = cli("export", "--run", str(run), "--merge", str(mine), "--overwrite")
    assert overwrite.returncode == 2 and "is not empty" in overwrite.stderr  # --overwrite replaces only our own
    assert tree(workspace) == before and (mine / "notes.txt").read_text(encoding="utf-8") == "keep me"

    merged = tmp_path / "merged"
    assert cli("export", "--run", str(run), "--merge", str(merged)).returncode == 0
    again = cli("export", "--run", str(run), "--merge", str(merged))
    assert again.returncode == 2 and "--overwrite" in again.stderr
    assert cli("export", "--run", str(run), "--merge", str(merged), "--overwrite").returncode == 0
    assert (merged / "config.json").is_file() and not leftovers(tmp_path)


def test_zip_convert_and_demo_model_never_replace_a_stranger(workspace, tmp_path):
    from core.export import zip_run
    from core.models.chatglm import convert_chatglm
    from core.models.demo import build_demo_model
    from tests.chatglm_fixtures import write_thudm_checkpoint

    theirs = tmp_path / "adapter.zip"
    theirs.write_bytes(b"someone's zip")
    with pytest.raises(RunStateError, match="not an export of the workbench"):
        zip_run(workspace / "runs" / "finished-lora", theirs, overwrite=True)
    assert theirs.read_bytes() == b"someone's zip"
    occupied = tmp_path / "occupied"
    occupied.mkdir()
    (occupied / "weights.bin").write_bytes(b"precious")
    write_thudm_checkpoint(tmp_path / "thudm", "chatglm3")
    with pytest.raises(RunStateError, match="is not empty"):
        convert_chatglm(tmp_path / "thudm", occupied, overwrite=True)
    with pytest.raises(RunStateError, match="is not empty"):
        build_demo_model(occupied, overwrite=True)
    assert tree(occupied) == {"weights.bin": b"precious"} and not leftovers(tmp_path)


# ---- 2. a new run never trains into a folder that holds a run ------------------------------------------------------
@pytest.mark.slow
def test_output_dir_of_an_existing_run_is_refused(workspace, tmp_path):
    run = workspace / "runs" / "finished-lora"
    before = tree(run)
    refused = cli("train", "--set", f"output_dir={run}", "--set", "max_steps=2", "--set", "num_train_epochs=0")
    assert refused.returncode == 2
    assert "already holds a run" in refused.stderr and f"--resume {run}" in refused.stderr
    for method in ("lora", "full", "ptuning_v2"):
        with pytest.raises(RunStateError, match="already holds a run"):
            Workbench(workspace).start_training(SHORT.replace(output_dir=str(run), finetuning_type=method))
    assert tree(run) == before  # not one byte of the finished run changed
    occupied = tmp_path / "occupied"
    occupied.mkdir()
    (occupied / "data.csv").write_text("a,b\n", encoding="utf-8")
    with pytest.raises(RunStateError, match="is not empty"):
        Workbench(workspace).start_training(SHORT.replace(output_dir=str(occupied)))
    assert tree(occupied) == {"data.csv": b"a,b\n"}


# ---- 3 and 4. one owner per run; a killed owner leaves an interrupted run that Resume finishes ------------------
STEPS = 40  # four checkpoints: enough to be killed between two of them and resumed to the end


@pytest.mark.slow
def test_a_second_writer_is_refused_and_a_killed_run_resumes(tmp_path, demo_model_dir):
    workspace = tmp_path / "ws"
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "core.cli",
            "train",
            "--workspace",
            str(workspace),
            "--set",
            f"max_steps={STEPS}",
            "--set",
            "num_train_epochs=0",
            "--set",
            "save_steps=10",
            "--set",
            "learning_rate=2e-3",
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        run = poll(lambda: next((workspace / "runs").glob("*"), None) if (workspace / "runs").is_dir() else None)
        poll(lambda: (run / "checkpoints" / "checkpoint-10").is_dir())
        # Held still (it keeps its lock and its state), so that however fast or slow this machine is, it is
        # mid-run while a second writer tries it: the test waits for states, never for the run's speed.
        process.send_signal(signal.SIGSTOP)
        second = cli("train", "--resume", str(run))
        assert second.returncode == 2 and f"is being trained by process {process.pid}" in second.stderr
        with pytest.raises(RunStateError, match="is being trained by process"):
            Workbench(workspace).resume_training(run.name)
        with pytest.raises(RunStateError, match="abort it before deleting"):
            Workbench(workspace).delete_run(run.name)
        assert read_status(run)["state"] == "running" and process.poll() is None  # the first one is still its owner
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=60)
    # The owner is gone: the run shows as interrupted at once, with its step and newest checkpoint.
    wb = Workbench(workspace)
    snapshot = wb.snapshot(run.name)
    assert snapshot.state == "interrupted" and read_status(run)["state"] == "running"
    assert snapshot.status["checkpoint"] and 10 <= snapshot.status["step"] < STEPS
    assert [row["state"] for row in wb.runs_table()] == ["interrupted"]
    resumed = cli("train", "--resume", str(run))
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    status = read_status(run)
    assert status["state"] == "finished" and status["step"] == STEPS
    records = read_metrics(run)
    assert [m.get("event") for m in records].count("resume") == 1  # the resume is recorded...
    assert [m["step"] for m in records if "loss" in m] == list(range(1, STEPS + 1))  # ...and no step logged twice


@pytest.mark.slow
def test_resume_of_a_finished_run_says_how_to_continue_it(workspace):
    run = workspace / "runs" / "finished-lora"
    before = tree(run)
    refused = cli("train", "--resume", str(run))
    assert refused.returncode == 2 and "has already finished" in refused.stderr
    assert "Continue training" in refused.stderr and "adapter_name_or_path" in refused.stderr
    assert tree(run) == before and not (run / "checkpoints" / "checkpoint-7").exists()


# ---- 5. a full disk, wherever it strikes, ends as a failed run that Resume finishes -------------------------------
def enospc(path: str | Path = "") -> OSError:
    return OSError(errno.ENOSPC, "No space left on device", str(path))


def test_disk_full_when_the_run_starts_leaves_nothing_behind(tmp_path, monkeypatch, demo_model_dir):
    import core.files

    def full(path, text):
        raise enospc(path)

    monkeypatch.setattr(core.files, "write_text_atomic", full)
    workspace = tmp_path / "ws"
    with pytest.raises(RunStateError, match="Disk full: the run folder .* could not be written"):
        Workbench(workspace).start_training(SHORT)
    assert list((workspace / "runs").iterdir()) == []


@pytest.mark.parametrize("site", ["status", "metrics", "checkpoint", "adapter"])
def test_disk_full_at_each_write_site_fails_plainly_and_resumes(site, tmp_path, monkeypatch, demo_model_dir):
    import core.runs
    import core.training.callbacks
    import core.training.runner

    config = SHORT.replace(max_steps=12, save_steps=4)
    run_dir = tmp_path / "run"
    failing = {"on": True}
    if site == "status":
        real = core.runs.write_json_atomic
        tripped = {"yes": False}

        def status_writer(path, data):  # from step 6 on, no status.json fits: the failed state is written in place
            tripped["yes"] = tripped["yes"] or data.get("step", 0) >= 6
            if failing["on"] and tripped["yes"]:
                raise enospc(path)
            return real(path, data)

        monkeypatch.setattr(core.runs, "write_json_atomic", status_writer)
    elif site == "metrics":
        real = core.training.callbacks.append_metrics

        def metrics_writer(folder, record):
            if failing["on"] and record.get("step", 0) >= 6:
                raise enospc(Path(folder) / "metrics.jsonl")
            return real(folder, record)

        monkeypatch.setattr(core.training.callbacks, "append_metrics", metrics_writer)
    elif site == "checkpoint":
        real = torch.save

        def checkpoint_writer(obj, target, *args, **kwargs):
            if failing["on"] and "checkpoint-8" in str(target):
                raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 1024 vs 960")
            return real(obj, target, *args, **kwargs)

        monkeypatch.setattr(torch, "save", checkpoint_writer)
    else:
        real = core.training.runner.save_model_and_tokenizer

        def adapter_writer(model, tokenizer, folder):
            if failing["on"]:
                (Path(folder) / "adapter_model.safetensors").write_bytes(b"half")
                raise enospc(Path(folder) / "adapter_model.safetensors")
            return real(model, tokenizer, folder)

        monkeypatch.setattr(core.training.runner, "save_model_and_tokenizer", adapter_writer)
    status = TrainingSession(config, run_dir).run()
    assert status["state"] == "failed" and read_status(run_dir)["state"] == "failed"
    assert status["error"].startswith("Disk full") and "Resume continues from it" in status["error"]
    assert "Traceback" not in status["error"] and not leftovers(run_dir)
    assert not (run_dir / "adapter").exists()
    from core.runs import newest_checkpoint

    assert newest_checkpoint(run_dir).name == ("checkpoint-12" if site == "adapter" else "checkpoint-4")
    failing["on"] = False  # space freed
    resumed = TrainingSession(config, run_dir, resume=True).run()
    assert resumed["state"] == "finished" and resumed["step"] == 12
    assert (run_dir / "adapter" / "adapter_model.safetensors").stat().st_size > 1000


def test_a_log_that_cannot_be_written_prints_no_traceback(tmp_path, monkeypatch, capsys, demo_model_dir):
    import logging

    def emit_fails(self, record):
        try:
            raise enospc("log.txt")
        except OSError:
            self.handleError(record)

    import core.training.runner

    monkeypatch.setattr(core.training.runner.RunLogHandler, "emit", emit_fails)
    logging.raiseExceptions = True
    assert TrainingSession(SHORT, tmp_path / "run").run()["state"] == "finished"
    assert "Logging error" not in capsys.readouterr().err


def mount_tmpfs(folder: Path, size: str) -> bool:
    folder.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], capture_output=True, text=True
    )
    return result.returncode == 0


def test_a_real_full_disk_fails_plainly_keeps_a_checkpoint_and_resumes(tmp_path, demo_model_dir):
    disk = tmp_path / "disk"
    if not mount_tmpfs(disk, "6m"):
        pytest.skip("cannot mount a tmpfs here: the ENOSPC writer tests above cover each write site")
    try:
        ballast = disk / "ballast.bin"
        ballast.write_bytes(b"\0" * (2 * 2**20))
        config = SHORT.replace(max_steps=60, save_steps=3, save_total_limit=100)
        status = TrainingSession(config, disk / "run").run()
        assert status["state"] == "failed", status
        assert (
            status["error"].startswith("Disk full") and "inline_container" not in status["error"].split("Details:")[0]
        )
        assert not leftovers(disk)
        from core.runs import newest_checkpoint

        newest = newest_checkpoint(disk / "run")
        assert newest is not None and (newest / "adapter_model.safetensors").is_file()
        ballast.unlink()  # space freed; older checkpoints are the user's to prune: keep only the newest now
        for old in (disk / "run" / "checkpoints").glob("checkpoint-*"):
            if old != newest:
                subprocess.run(["rm", "-rf", str(old)], check=True)
        resumed = TrainingSession(config.replace(save_steps=0), disk / "run", resume=True).run()
        assert resumed["state"] == "finished" and resumed["step"] == 60, resumed
    finally:
        subprocess.run(["umount", "-l", str(disk)], capture_output=True)


# ---- 10, 11. plain words for skipped rows, an empty config, a folder given as a dataset -------------------------
@pytest.mark.slow
def test_skipped_rows_are_counted_on_the_terminal_and_listed_in_the_run(tmp_path, demo_model_dir):
    data = tmp_path / "nulls.jsonl"
    rows = [{"instruction": "a", "output": None}, {"instruction": "b"}, {"instruction": "你好", "output": "你好！"}]
    data.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows), encoding="utf-8")
    result = cli(
        "train",
        "--workspace",
        str(tmp_path / "ws"),
        "--set",
        f"dataset={data}",
        "--set",
        "max_steps=2",
        "--set",
        "num_train_epochs=0",
    )
    assert result.returncode == 0, result.stderr[-2000:]
    run = Path(result.stdout.strip().splitlines()[-1])
    assert "2 of 3 rows skipped" in result.stderr
    assert "row 1: field 'output' is empty (null)" in result.stderr and "row 2: missing field 'output'" in result.stderr
    assert str(run / "skipped_rows.txt") in result.stderr
    assert (run / "skipped_rows.txt").read_text(encoding="utf-8").splitlines() == [
        "row 1: field 'output' is empty (null)",
        "row 2: missing field 'output'",
    ]
    assert read_status(run)["data_problems"] == 2


@pytest.mark.slow
def test_an_empty_config_and_a_folder_as_dataset_are_refused_by_name(tmp_path):
    empty = tmp_path / "empty.yaml"
    empty.write_text("", encoding="utf-8")
    refused = cli("train", str(empty), "--workspace", str(tmp_path / "ws"))
    assert refused.returncode == 2 and "the config file is empty" in refused.stderr
    folder = tmp_path / "adir"
    folder.mkdir()
    refused = cli("train", "--workspace", str(tmp_path / "ws"), "--set", f"dataset={folder}")
    assert refused.returncode == 2 and f"{folder.resolve()} is a folder without a data file" in refused.stderr
    assert not (tmp_path / "ws" / "runs").exists() or not list((tmp_path / "ws" / "runs").iterdir())


# ---- 8. the API says when it listens for everyone without a key ---------------------------------------------------
def test_api_on_a_public_address_without_a_key_warns(monkeypatch, capsys, demo_model_dir):
    import uvicorn

    from core import cli as cli_module

    apps = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kwargs: apps.append(app))  # no socket is opened by this test
    monkeypatch.delenv("GLM_WORKBENCH_API_KEY", raising=False)
    assert cli_module.main(["api", "--host", "0.0.0.0", "--port", "8765"]) == 0
    assert "listening on 0.0.0.0 without --api-key" in capsys.readouterr().err
    assert cli_module.main(["api", "--host", "0.0.0.0", "--api-key", "k", "--fetch-images"]) == 0
    assert "without --api-key" not in capsys.readouterr().err
    assert [app.state.fetch_images for app in apps] == [False, True]  # web images only when switched on
