"""Installable like its peers: the wheel carries what the workbench reads at run time, and `glm-workbench webui`
(like every command) works from any folder with no checkout in sight; a taken port or a bad option is said at
once, before anything slow."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import sysconfig
import time
import urllib.request
import zipfile
from pathlib import Path

import pytest

from core.cli import build_parser, main
from core.resources import asset, asset_file
from tests.conftest import IDENTITY_FIRST_ANSWER, REPO
from tests.ui_server import free_port

# What a wheel must hold besides the code: every file of these folders (in the checkout, under the package).
PACKAGE_DATA = ("core/assets", "core/locales", "webui/locales")
# The same short LoRA run as examples/lora_identity.yaml (test_cli trains it for 10 epochs), given as --set keys
# so that the folder the commands run in holds nothing but what the workbench writes.
IDENTITY_RUN = {
    "model_name_or_path": "demo",
    "template": "glm4",
    "finetuning_type": "lora",
    "lora_rank": 8,
    "lora_alpha": 16,
    "lora_target": "all",
    "dataset": "identity",
    "cutoff_len": 256,
    "learning_rate": 0.002,
    "num_train_epochs": 10,
    "per_device_train_batch_size": 4,
    "lr_scheduler_type": "cosine",
    "logging_steps": 1,
    "seed": 42,
}


def test_the_webui_command_takes_launch_options():
    parser = build_parser()
    assert re.search(r"^\s+webui\s+start the web UI", parser.format_help(), re.MULTILINE)
    defaults = parser.parse_args(["webui"])
    assert (defaults.host, defaults.port, defaults.workspace, defaults.lang, defaults.share) == (
        "127.0.0.1",
        7860,
        "workspace",
        "zh",
        False,
    )
    chosen = parser.parse_args(
        [
            "webui",
            "--host",
            "0.0.0.0",
            "--port",
            "9000",
            "--workspace",
            "/w",
            "--lang",
            "en",
            "--auth",
            "a:b",
            "--share",
        ]
    )
    assert (chosen.host, chosen.port, chosen.workspace, chosen.lang, chosen.auth, chosen.share) == (
        "0.0.0.0",
        9000,
        "/w",
        "en",
        "a:b",
        True,
    )


def test_a_taken_port_is_said_at_once(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("GLM_WORKBENCH_LANG", "en")
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        started = time.monotonic()
        code = main(["webui", "--port", str(port), "--workspace", str(tmp_path / "ws")])
    said = capsys.readouterr().err
    assert code == 2
    assert f"port {port} on 127.0.0.1 is already in use" in said
    suggested = int(re.search(r"--port (\d+)", said).group(1))
    assert suggested != port
    with socket.socket() as probe:  # the port it suggests is one that is free
        probe.bind(("127.0.0.1", suggested))
    assert not (tmp_path / "ws").exists()  # refused before the workspace, the demo model or the pages
    assert time.monotonic() - started < 5


def test_auth_must_be_user_and_password(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("GLM_WORKBENCH_LANG", "zh")
    assert main(["webui", "--auth", "admin", "--port", str(free_port()), "--workspace", str(tmp_path / "ws")]) == 2
    assert "--auth：应写成 USER:PASSWORD" in capsys.readouterr().err
    assert not (tmp_path / "ws").exists()


def test_assets_are_the_package_data_the_repository_links_to():
    """The engine reads its assets from its own package (so an install finds them), and the repository's top-level
    assets/ is that very folder."""
    import core
    from core.data.readers import read_rows, resolve_dataset

    folder = Path(core.__file__).parent / "assets"
    assert Path(str(asset())) == folder
    assert (REPO / "assets").resolve() == folder.resolve()
    identity = resolve_dataset("identity")
    assert identity == asset_file("datasets", "identity.json") and identity.parent == folder / "datasets"
    assert read_rows(identity)[0]["output"] == IDENTITY_FIRST_ANSWER


def run(command: list[str], cwd: Path, env: dict[str, str], timeout: float = 600) -> subprocess.CompletedProcess:
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{command}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


def run_refused(command: list[str], cwd: Path, env: dict[str, str]) -> str:
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr
    return result.stderr


def build_wheel(out: Path) -> Path:
    """The wheel pip builds from this checkout, offline (no build isolation, no index): from a copy of what the
    build reads, so the checkout gets no build/ folder and no stale file of an earlier build gets in."""
    import shutil

    source = out / "source"
    source.mkdir(parents=True)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    for name in ("core", "webui"):
        shutil.copytree(REPO / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
    run(
        [*pip, "wheel", "--no-deps", "--no-build-isolation", "--no-index", "--wheel-dir", str(out), str(source)],
        out,
        {
            **os.environ,
            "PIP_NO_CACHE_DIR": "1",
        },
    )
    (wheel,) = out.glob("glm_workbench-*.whl")
    return wheel


def fresh_venv(root: Path, wheel: Path) -> tuple[Path, Path]:
    """A new virtual environment with the wheel installed, that borrows torch, transformers, gradio and the rest
    from this environment through .pth lines (plain paths: this environment's own .pth files, such as an
    editable install of the checkout, are not run there). Returns its bin folder and site-packages."""
    run([sys.executable, "-m", "venv", "--without-pip", str(root)], root.parent, dict(os.environ))
    python = root / "bin" / "python"
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--python", str(python)]
    run([*pip, "install", "--no-deps", "--no-index", str(wheel)], root.parent, dict(os.environ))
    query = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
    site_packages = Path(run([str(python), "-c", query], root, {}).stdout.strip())
    # Every site-packages folder this process imports from (this environment's, and any it borrows itself).
    searched = [sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"], *sys.path]
    borrowed = dict.fromkeys(
        p for p in searched if Path(p).name in ("site-packages", "dist-packages") and Path(p).is_dir()
    )
    (site_packages / "borrowed_dependencies.pth").write_text("\n".join(borrowed) + "\n", encoding="utf-8")
    return root / "bin", site_packages


def wait_for_page(url: str, process: subprocess.Popen, log: Path, timeout: float = 240) -> tuple[str, str]:
    deadline = time.time() + timeout
    while True:
        assert process.poll() is None, f"the UI exited: {log.read_text(encoding='utf-8')[-3000:]}"
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return response.geturl(), response.read().decode("utf-8")
        except OSError:
            assert time.time() < deadline, f"the UI did not answer: {log.read_text(encoding='utf-8')[-3000:]}"
            time.sleep(1)


@pytest.mark.slow
def test_the_installed_wheel_works_from_any_folder(tmp_path):
    wheel = build_wheel(tmp_path / "dist")
    carried = set(zipfile.ZipFile(wheel).namelist())
    for folder in PACKAGE_DATA:
        for path in (REPO / folder).rglob("*"):
            if path.is_file():
                assert path.relative_to(REPO).as_posix() in carried

    bin_dir, site_packages = fresh_venv(tmp_path / "venv", wheel)
    here = tmp_path / "anywhere"
    here.mkdir()
    env = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    # A home of its own: the installed package builds the demo model from its own data, not the session's.
    env |= {"PATH": f"{bin_dir}{os.pathsep}{env.get('PATH', '')}", "GLM_WORKBENCH_LANG": "en"}
    env |= {"GLM_WORKBENCH_HOME": str(tmp_path / "home")}
    workbench = str(bin_dir / "glm-workbench")

    # The engine and the UI come from the installed wheel, not from this checkout.
    imported = run(
        [str(bin_dir / "python"), "-c", "import core, webui; print(core.__file__); print(webui.__file__)"], here, env
    )
    for line in imported.stdout.split():
        assert Path(line).is_relative_to(site_packages), line
    assert "webui" in run([workbench, "--help"], here, env).stdout

    built = Path(run([workbench, "demo-model"], here, env).stdout.strip())
    assert built == tmp_path / "home" / "demo-model-v1" and (built / "glm_workbench_demo.json").is_file()

    settings = [item for key, value in IDENTITY_RUN.items() for item in ("--set", f"{key}={value}")]
    trained = here / run([workbench, "train", *settings], here, env).stdout.strip().splitlines()[-1]
    assert trained.parent.resolve() == here.resolve() / "workspace" / "runs"  # ./workspace of the folder it started in
    answer = run([workbench, "chat", "--adapter", str(trained), "--prompt", "你是谁？", "--greedy"], here, env)
    assert answer.stdout.strip() == IDENTITY_FIRST_ANSWER

    port = free_port()
    log = tmp_path / "ui.log"
    with open(log, "w", encoding="utf-8") as sink:
        process = subprocess.Popen(
            [workbench, "webui", "--port", str(port), "--lang", "en"], cwd=here, env=env, stdout=sink, stderr=sink
        )
        try:
            landed, page = wait_for_page(f"http://127.0.0.1:{port}/", process, log)
            assert landed == f"http://127.0.0.1:{port}/en/"
            css = asset("ui.css").read_text(encoding="utf-8")
            rules = [line.strip() for line in css.splitlines() if "{" in line and line.isascii() and '"' not in line]
            assert rules and all(rule in page for rule in rules), "the page is not styled with ui.css"

            import gradio_client

            client = gradio_client.Client(f"http://127.0.0.1:{port}/en/", verbose=False)
            summary = client.predict("identity", "auto", 1, api_name="/preview_dataset")[0]
            assert "format **alpaca**" in summary and "50 rows" in summary
            _, adapters, *_ = client.predict("demo", "", api_name="/refresh_chat_choices")
            assert [trained.name, trained.name] in adapters["choices"]  # the same ./workspace as the CLI's

            second = run_refused([workbench, "webui", "--port", str(port)], here, env)
            assert f"port {port} on 127.0.0.1 is already in use" in second
        finally:
            process.terminate()
            stopping = time.monotonic()
            process.wait(timeout=60)
    assert time.monotonic() - stopping < 15  # with a page's connection still open (the client's)
    usage = run([str(bin_dir / "python"), "-m", "webui", "--help"], here, env).stdout
    assert all(option in usage for option in ("--host", "--port", "--workspace", "--lang", "--auth", "--share"))
