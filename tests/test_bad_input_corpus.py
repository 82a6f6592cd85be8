"""Every malformed input of the corpus gets its specific message from the CLI (the UI's are checked in
test_ui_api.py against a running UI), and a 1 MB row or data longer than cutoff_len is handled and reported."""

from __future__ import annotations

import json

import pytest

from core.cli import main as cli_main
from tests.bad_inputs import UNUSABLE, USABLE, write


@pytest.mark.parametrize("case", list(UNUSABLE))
def test_cli_names_the_problem(case, tmp_path, capsys, demo_model_dir):
    name, content, message = UNUSABLE[case]
    path = write(tmp_path, name, content)
    code = cli_main(["train", "--workspace", str(tmp_path / "ws"), "--set", f"dataset={path}", "--set", "max_steps=1"])
    captured = capsys.readouterr()
    assert code != 0
    assert message in captured.err
    assert "Traceback" not in captured.err


@pytest.mark.parametrize("case", list(USABLE))
def test_usable_files_train(case, tmp_path, capsys, demo_model_dir):
    name, content, _ = USABLE[case]
    path = write(tmp_path, name, content)
    code = cli_main(["train", "--workspace", str(tmp_path / "ws"), "--set", f"dataset={path}", "--set", "max_steps=2"])
    assert code == 0, capsys.readouterr().err


def test_a_one_megabyte_row_is_truncated_and_reported(tmp_path, capsys, demo_model_dir):
    rows = [
        {"instruction": "总结：" + "长" * 1_000_000, "output": "很长。"},
        {"instruction": "你好", "output": "你好！"},
    ]
    path = tmp_path / "big.json"
    path.write_text(json.dumps(rows, ensure_ascii=False), encoding="utf-8")
    code = cli_main(
        [
            "train",
            "--workspace",
            str(tmp_path / "ws"),
            "--set",
            f"dataset={path}",
            "--set",
            "max_steps=2",
            "--set",
            "cutoff_len=64",
        ]
    )
    assert code == 0
    run = capsys.readouterr().out.strip().splitlines()[-1]
    log = open(f"{run}/log.txt", encoding="utf-8").read()
    # The long row's answer lies beyond the cutoff, so it is reported and skipped; the short one trains.
    assert "1 train / 0 eval samples" in log and "beyond cutoff_len=64" in log


def test_every_sample_longer_than_cutoff(tmp_path, capsys, demo_model_dir):
    code = cli_main(
        ["train", "--workspace", str(tmp_path / "ws"), "--set", "dataset=identity", "--set", "cutoff_len=8"]
    )
    assert code != 0
    assert "no sample keeps any answer token within cutoff_len=8: raise cutoff_len" in capsys.readouterr().err
