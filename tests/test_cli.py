"""The CLI: train prints the run folder last, chat reproduces the training answer, export zips, errors are plain."""

from __future__ import annotations

import subprocess
import sys
import zipfile

import pytest

from tests.conftest import IDENTITY_FIRST_ANSWER, REPO

pytestmark = pytest.mark.slow


def cli(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "core.cli", *args], cwd=REPO, capture_output=True, text=True, timeout=timeout
    )


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, demo_model_dir):
    workspace = tmp_path_factory.mktemp("cli")
    result = cli("train", "examples/lora_identity.yaml", "--workspace", str(workspace), "--set", "num_train_epochs=10")
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout.strip().splitlines()[-1]


def test_train_prints_run_folder_last(trained_run):
    from pathlib import Path

    assert (Path(trained_run) / "adapter" / "adapter_model.safetensors").is_file()
    assert (Path(trained_run) / "config.yaml").read_text(encoding="utf-8").count("num_train_epochs: 10") == 1


def test_greedy_chat_reproduces_a_training_answer(trained_run):
    tuned = cli("chat", "--adapter", trained_run, "--prompt", "你是谁？", "--greedy")
    base = cli("chat", "--prompt", "你是谁？", "--greedy", "--max-new-tokens", "20")
    assert tuned.returncode == 0 and base.returncode == 0, tuned.stderr + base.stderr
    assert tuned.stdout.strip() == IDENTITY_FIRST_ANSWER
    assert base.stdout.strip() != IDENTITY_FIRST_ANSWER


def test_export_zip(trained_run, tmp_path):
    result = cli("export", "--run", trained_run, "--zip", str(tmp_path / "out.zip"))
    assert result.returncode == 0, result.stderr
    assert "adapter_model.safetensors" in zipfile.ZipFile(tmp_path / "out.zip").namelist()


@pytest.mark.parametrize(
    "content, name, message",
    [
        ('[{"instruction": "a", ', "bad.json", "bad.json: invalid JSON at line 1"),
        ('[{"q": "a", "a": "b"}]', "cols.json", "unknown columns: a, q"),
        ("", "empty.json", "empty.json: the file is empty"),
        ("a,b", "data.xlsx", "unsupported file type '.xlsx'"),
    ],
)
def test_bad_dataset_gives_a_plain_message(tmp_path, demo_model_dir, content, name, message):
    (tmp_path / name).write_text(content, encoding="utf-8")
    result = cli(
        "train",
        "examples/lora_identity.yaml",
        "--workspace",
        str(tmp_path / "ws"),
        "--set",
        f"dataset={tmp_path / name}",
    )
    assert result.returncode == 2  # refused before any run folder exists: nothing to clean up, nothing to resume
    assert message in result.stderr and not (tmp_path / "ws" / "runs").exists()
    assert "Traceback" not in result.stderr


def test_bad_config_values_exit_2_naming_each_key(tmp_path):
    result = cli(
        "train",
        "examples/lora_identity.yaml",
        "--set",
        "learning_rate=-1",
        "--set",
        "per_device_train_batch_size=0",
        "--set",
        "lora_rnk=4",
    )
    assert result.returncode == 2
    assert "lora_rnk: unknown key (did you mean 'lora_rank'?)" in result.stderr
    assert "learning_rate: must be greater than 0" in result.stderr
    assert "per_device_train_batch_size: must be at least 1" in result.stderr
    assert "Traceback" not in result.stderr


def test_missing_model_folder(tmp_path):
    result = cli("chat", "--model", str(tmp_path / "no-model"), "--prompt", "hi")
    assert result.returncode == 2
    assert "model folder not found" in result.stderr


def test_dpo_continues_the_run_and_sft_data_is_refused_for_it(trained_run, tmp_path):
    import json
    from pathlib import Path

    common = ["train", "--workspace", str(tmp_path / "ws"), "--set", "stage=dpo", "--set", "max_steps=3"]
    refused = cli(*common, "--set", "dataset=identity")
    assert refused.returncode == 2 and "no row holds a preference pair (format alpaca)" in refused.stderr
    assert not (tmp_path / "ws" / "runs").exists()
    result = cli(
        *common,
        "--set",
        "dataset=identity_pairs",
        "--set",
        f"adapter_name_or_path={trained_run}/adapter",
        "--set",
        "num_train_epochs=0",
    )
    assert result.returncode == 0, result.stderr[-2000:]
    run = Path(result.stdout.strip().splitlines()[-1])
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert metrics[0]["reward_margin"] == 0 and "reward_accuracy" in metrics[-1]


def test_arena_judged_by_rouge_and_by_the_person_at_the_terminal(trained_run):
    import json

    args = ["arena", "--run", trained_run, "--dataset", "identity", "--max-samples", "3", "--max-new-tokens", "24"]
    rouge = cli(*args)
    assert rouge.returncode == 0, rouge.stderr[-2000:]
    scores = json.loads(rouge.stdout)
    assert scores["rouge-l"]["win_rate"] == 1.0 and scores["first"] is None  # no person judged: still blind
    person = subprocess.run(
        [sys.executable, "-m", "core.cli", *args, "--judge", "person"],
        cwd=REPO,
        input="x\n1\n2\nt\n",
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert person.returncode == 0, person.stderr[-2000:]
    scores = json.loads(person.stdout)
    assert scores["second"] == "base" and scores["person"]["judged"] == 3 and scores["person"]["ties"] == 1
    assert person.stderr.count("[1] ") == 3
