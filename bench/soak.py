"""Soak test: for a while (15 minutes by default) runs train while the UI is killed and restarted, runs are
aborted and resumed, and chat and API requests arrive; then every promise of docs/DESIGN.md ("What the workbench
promises about your files") is checked on what is left.

    python bench/soak.py [--minutes 15] [--seed 0] [--out bench/results/soak.json]

Kept out of the test suite for its length. Everything happens on loopback, in a fresh folder under /tmp. At the
end: every run folder is finished, failed, aborted or interrupted, never running without a live owner; each one
that was not finished is resumed through the CLI and must reach its last step; the steps in each metrics.jsonl
never go backwards except right after a recorded resume; and no file outside the workspace changed.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
RUN_SETTINGS = {"Max steps": 120, "Epochs": 0, "Checkpoint every N steps": 10}


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def snapshot(folder: Path) -> dict[str, tuple[int, float]]:
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime) for p in folder.rglob("*") if p.is_file()}


class Soak:
    def __init__(self, root: Path, seed: int):
        self.root = root
        self.workspace = root / "workspace"
        self.random = random.Random(seed)
        self.port = free_port()
        self.ui: subprocess.Popen | None = None
        self.counts: dict[str, int] = {}
        self.errors: list[str] = []

    # ---- the UI process ----------------------------------------------------------------------------------
    def start_ui(self) -> None:
        log = open(self.root / "ui.log", "a")
        self.ui = subprocess.Popen(
            [
                sys.executable,
                str(REPO / "launch.py"),
                "--port",
                str(self.port),
                "--workspace",
                str(self.workspace),
                "--lang",
                "en",
            ],
            cwd=REPO,
            stdout=log,
            stderr=log,
        )
        deadline = time.time() + 120
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{self.port}/en/", timeout=2)
                return
            except OSError:
                if time.time() > deadline or self.ui.poll() is not None:
                    raise RuntimeError("the UI did not start") from None
                time.sleep(0.5)

    def stop_ui(self, hard: bool) -> None:
        if self.ui is None:
            return
        if hard:
            self.ui.send_signal(signal.SIGKILL)
        else:
            self.ui.terminate()
        try:
            self.ui.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.ui.kill()
            self.ui.wait(timeout=30)
        self.ui = None

    def client(self):
        import gradio_client

        return gradio_client.Client(f"http://127.0.0.1:{self.port}/en/", verbose=False)

    # ---- actions ------------------------------------------------------------------------------------------
    def action_kill_ui(self) -> None:
        self.stop_ui(hard=True)
        self.start_ui()

    def action_restart_ui(self) -> None:
        self.stop_ui(hard=False)
        self.start_ui()

    def action_start(self) -> None:
        client = self.client()
        parameters = client.view_api(return_format="dict", print_info=False)["named_endpoints"]["/start_training"]
        form = {p["label"]: p["parameter_default"] for p in parameters["parameters"]}
        form.update(RUN_SETTINGS)
        client.predict(*form.values(), api_name="/start_training")

    def action_abort(self) -> None:
        self.client().predict(api_name="/abort_training")

    def action_resume(self) -> None:
        self.client().predict(api_name="/resume_training")

    def action_chat(self) -> None:
        client = self.client()
        adapters = client.predict("demo", "", "", "", "", api_name="/refresh_chat_choices")[1]["choices"]
        adapter = self.random.choice(adapters)[1] if adapters else ""
        client.predict("你是谁？", [], "demo", adapter, "", 0.7, 0.9, 24, True, api_name="/chat")

    def action_api(self) -> None:
        port = free_port()
        client = self.client()
        client.predict(True, "demo", port, "", api_name="/serve_api")
        body = json.dumps({"model": "demo", "messages": [{"role": "user", "content": "你好"}], "max_tokens": 16})
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/v1/chat/completions",
            data=body.encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=120) as response:
            assert response.status == 200
        client.predict(False, "demo", port, "", api_name="/serve_api")

    def action_cli_second_writer(self) -> None:
        """A CLI resume of a run that the UI is training must be refused and change nothing."""
        from core.runs import list_runs

        training = [run for run in list_runs(self.workspace) if run.state == "running"]
        if not training:
            return
        result = subprocess.run(
            [sys.executable, "-m", "core.cli", "train", "--resume", str(training[0].path)],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=300,
        )
        if result.returncode == 0:
            self.errors.append(f"a second writer was let in on {training[0].name}")

    ACTIONS = {
        "kill_ui": 1,
        "restart_ui": 1,
        "start": 4,
        "abort": 2,
        "resume": 3,
        "chat": 3,
        "api": 1,
        "cli_second_writer": 1,
    }

    def run(self, minutes: float) -> None:
        self.start_ui()
        deadline = time.time() + minutes * 60
        names, weights = zip(*self.ACTIONS.items())
        while time.time() < deadline:
            name = self.random.choices(names, weights)[0]
            try:
                getattr(self, f"action_{name}")()
                self.counts[name] = self.counts.get(name, 0) + 1
            except Exception as exc:  # noqa: BLE001 - a refused action (busy, nothing to resume) is expected
                self.counts[f"{name}_refused"] = self.counts.get(f"{name}_refused", 0) + 1
                if self.ui is None or self.ui.poll() is not None:
                    self.start_ui()
                del exc
            time.sleep(self.random.uniform(0.5, 4))
        self.stop_ui(hard=self.random.random() < 0.5)

    # ---- the checks ----------------------------------------------------------------------------------------
    def check(self) -> dict:
        from core.runs import END_STATES, list_runs, read_metrics

        runs = list_runs(self.workspace)
        states = {run.name: run.state for run in runs}
        report = {"runs": len(runs), "states_at_end": dict(sorted(states.items()))}
        for name, state in states.items():
            if state not in END_STATES:
                self.errors.append(f"{name} is {state} with no live owner")
        resumed_to_the_end = 0
        for run in runs:
            if run.state != "finished":
                result = subprocess.run(
                    [sys.executable, "-m", "core.cli", "train", "--resume", str(run.path)],
                    cwd=REPO,
                    capture_output=True,
                    text=True,
                    timeout=900,
                )
                if result.returncode != 0:
                    self.errors.append(f"{run.name}: resume failed: {result.stderr[-500:]}")
                    continue
                resumed_to_the_end += 1
        for run in list_runs(self.workspace):
            status = run.status
            if run.state != "finished" or status.get("step") != status.get("max_steps"):
                self.errors.append(f"{run.name}: ended {run.state} at {status.get('step')}/{status.get('max_steps')}")
            previous, after_resume = 0, False
            for record in read_metrics(run.path):
                if record.get("event") == "resume":
                    after_resume = True
                    previous = record["step"]
                    continue
                if "loss" not in record:
                    continue
                if record["step"] <= previous and not after_resume:
                    self.errors.append(f"{run.name}: metrics went back from step {previous} to {record['step']}")
                previous, after_resume = record["step"], False
        report["resumed_at_the_end"] = resumed_to_the_end
        return report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=15)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(REPO / "bench" / "results" / "soak.json"))
    args = parser.parse_args()
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    os.environ.setdefault("GLM_WORKBENCH_LANG", "en")
    root = Path(tempfile.mkdtemp(prefix="glm-workbench-soak-"))
    outside = root / "users-own-files"
    outside.mkdir()
    (outside / "notes.txt").write_text("not the workbench's", encoding="utf-8")
    before_outside, before_repo = (
        snapshot(outside),
        subprocess.run(["git", "status", "--porcelain"], cwd=REPO, capture_output=True, text=True).stdout,
    )
    soak = Soak(root, args.seed)
    started = time.time()
    soak.run(args.minutes)
    report = soak.check()
    if snapshot(outside) != before_outside:
        soak.errors.append("a file outside the workspace changed")
    if subprocess.run(["git", "status", "--porcelain"], cwd=REPO, capture_output=True, text=True).stdout != before_repo:
        soak.errors.append("the repository's files changed")
    report.update(
        minutes=round((time.time() - started) / 60, 1),
        actions=dict(sorted(soak.counts.items())),
        errors=soak.errors,
        date=time.strftime("%Y-%m-%d"),
        seed=args.seed,
    )
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=1, ensure_ascii=False), encoding="utf-8")
    print(json.dumps(report, indent=1, ensure_ascii=False))
    return 1 if soak.errors else 0


if __name__ == "__main__":
    sys.exit(main())
