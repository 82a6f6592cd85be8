"""Start the real web UI (`launch.py`) in a subprocess on a free loopback port, for gradio_client tests."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def running_ui(
    workspace: Path, lang: str = "en", timeout: float = 600, extra_args: tuple[str, ...] = ()
) -> Iterator[str]:
    """Yield the page's address in `lang` (/en/ or /zh/); both languages are served by the one process."""
    port = free_port()
    url = f"http://127.0.0.1:{port}/{lang}/"
    log = open(workspace.parent / f"ui-{port}.log", "w")
    process = subprocess.Popen(
        [
            sys.executable,
            str(REPO / "launch.py"),
            "--port",
            str(port),
            "--workspace",
            str(workspace),
            "--lang",
            lang,
            *extra_args,
        ],
        cwd=REPO,
        stdout=log,
        stderr=subprocess.STDOUT,
        env=os.environ.copy(),
    )
    try:
        deadline = time.time() + timeout
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"UI exited early: {(workspace.parent / f'ui-{port}.log').read_text()}")
            try:
                urllib.request.urlopen(url, timeout=2)
                break
            except OSError:
                if time.time() > deadline:
                    raise TimeoutError("UI did not start") from None
                time.sleep(0.5)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()


def poll_until(client, states, timeout: float = 600) -> dict:
    """Poll the train tab's status (through the UI's API) until the run reaches one of `states`."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        status = client.predict("", api_name="/poll")[3]
        if status.get("state") in states:
            return status
        time.sleep(0.5)
    raise TimeoutError(states)
