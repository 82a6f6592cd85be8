"""The chat's judgments through the Workbench facade: each lands in feedback/<name>.jsonl with the right sides, in
LLaMA-Factory's pairwise format; a written answer is pairs plus an SFT row; a tie is kept apart; concurrent votes
all land whole; the files are listed with counts and read back as training data."""

from __future__ import annotations

import json
import threading

import pytest

from core.data.dataset import load_conversations
from core.errors import DataError
from core.workbench import Workbench
from webui.locale import Translator

CHAT = [
    {"role": "user", "content": "你好"},
    {"role": "assistant", "content": "你好！"},
    {"role": "user", "content": "你是谁？"},
]


def rows(path) -> list[dict]:
    return [json.loads(line) for line in open(path, encoding="utf-8")]


def test_votes_land_with_the_right_sides(tmp_path):
    wb = Workbench(tmp_path / "ws")
    counts = wb.record_judgment(CHAT, "我是小智。", "不知道。", "better", "run-a", "", system="Be kind.")
    assert (counts["pairs"], counts["ties"], counts["sft_rows"]) == (1, 0, 0)
    wb.record_judgment(CHAT, "不知道。", "我是小智。", "worse", "", "run-a")
    better, worse = rows(counts["path"])
    for row in (better, worse):  # the better answer is always `chosen`, whichever side it was shown on
        assert (row["chosen"], row["rejected"], row["chosen_run"], row["rejected_run"]) == (
            "我是小智。",
            "不知道。",
            "run-a",
            "",
        )
        assert (row["instruction"], row["input"], row["history"]) == ("你是谁？", "", [["你好", "你好！"]])
    assert (better["judgment"], worse["judgment"], better["system"], worse["system"]) == (
        "better",
        "worse",
        "Be kind.",
        "",
    )
    assert better["time"][:2] == "20"
    assert counts["path"] == str(tmp_path / "ws" / "feedback" / "chat.jsonl")


def test_a_vote_under_one_column_judges_it_against_each_different_answer(tmp_path):
    """Side by side's buttons: column 2 "better" than base (columns 1 and 3 answered alike: one pair), "worse"
    puts the other answers first, a column whose answer nobody else differs from has nothing to be judged against."""
    wb = Workbench(tmp_path / "ws")
    answers, runs = ["不知道。", "我是小智。", "不知道。"], ["", "run-a", ""]
    counts = wb.record_column_judgment(CHAT, answers, runs, 1, "better")
    assert counts["pairs"] == 1
    wb.record_column_judgment(CHAT, ["我是小智。", "随便。", "再见。"], ["run-a", "", "run-b"], 0, "worse")
    first, *worse = rows(counts["path"])
    assert (first["chosen"], first["rejected"], first["chosen_run"], first["rejected_run"]) == (
        "我是小智。",
        "不知道。",
        "run-a",
        "",
    )
    assert [(row["chosen_run"], row["rejected_run"], row["rejected"]) for row in worse] == [
        ("", "run-a", "我是小智。"),
        ("run-b", "run-a", "我是小智。"),
    ]
    assert wb.record_column_judgment(CHAT, answers, runs, 0, "tie")["ties"] == 1
    with pytest.raises(DataError, match="the same"):
        wb.record_column_judgment(CHAT, ["同一个。", "同一个。", ""], runs, 0, "better")
    with pytest.raises(DataError, match="no column 4"):
        wb.record_column_judgment(CHAT, answers, runs, 3, "better")


def test_a_tie_is_kept_apart_and_a_written_answer_is_pairs_and_sft(tmp_path):
    wb = Workbench(tmp_path / "ws")
    counts = wb.record_judgment(CHAT, "A", "B", "tie", "run-a", "run-b", feedback="mine")
    assert (counts["pairs"], counts["ties"]) == (0, 1)
    (tie,) = rows(counts["ties_path"])
    assert (tie["answers"], tie["runs"], tie["instruction"]) == (["A", "B"], ["run-a", "run-b"], "你是谁？")
    assert "chosen" not in tie and "rejected" not in tie  # no trainer reads it as a preference
    counts = wb.record_written_answer(CHAT, "我是小智。", ["A", "我是小智。"], ["run-a", "run-b"], feedback="mine")
    assert (counts["pairs"], counts["ties"], counts["sft_rows"]) == (1, 1, 1)  # the equal shown answer is no pair
    (pair,) = rows(counts["path"])
    assert (pair["chosen"], pair["rejected"], pair["judgment"], pair["rejected_run"]) == (
        "我是小智。",
        "A",
        "written",
        "run-a",
    )
    (sft,) = rows(counts["sft_path"])
    assert (sft["instruction"], sft["output"], sft["history"]) == ("你是谁？", "我是小智。", [["你好", "你好！"]])
    # Each file is training data as it is: the pairs for a preference stage, the written answers for SFT.
    pairs = load_conversations(counts["path"])
    assert pairs.format == "alpaca_pairwise"
    assert pairs.conversations[0].messages[-1]["content"] == "我是小智。" and pairs.conversations[0].rejected == "A"
    assert pairs.conversations[0].messages[:2] == CHAT[:2]
    assert load_conversations(counts["sft_path"]).format == "alpaca"
    with pytest.raises(DataError, match="unknown columns"):
        load_conversations(counts["ties_path"])


def test_concurrent_votes_all_land_whole_and_nothing_is_rewritten(tmp_path):
    wb = Workbench(tmp_path / "ws")
    wb.record_judgment(CHAT, "first", "second", "better")
    path = tmp_path / "ws" / "feedback" / "chat.jsonl"
    first_line = path.read_bytes()
    workers = [
        threading.Thread(
            target=lambda n=n: [wb.record_judgment(CHAT, f"good {n}-{i}" * 50, "bad", "better") for i in range(10)]
        )
        for n in range(8)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert path.read_bytes().startswith(first_line)
    written = rows(path)
    assert len(written) == 81
    assert {row["chosen"] for row in written[1:]} == {f"good {n}-{i}" * 50 for n in range(8) for i in range(10)}


def test_a_line_cut_short_stays_a_row_of_its_own(tmp_path):
    wb = Workbench(tmp_path / "ws")
    wb.record_judgment(CHAT, "first", "second", "better")
    path = tmp_path / "ws" / "feedback" / "chat.jsonl"
    with open(path, "a", encoding="utf-8") as handle:
        handle.write('{"instruction": "cut sh')  # a crash mid-write
    wb.record_judgment(CHAT, "third", "fourth", "better")
    lines = path.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 3 and json.loads(lines[2])["chosen"] == "third"


def test_feedback_datasets_are_listed_with_counts_beside_the_uploads(tmp_path):
    wb = Workbench(tmp_path / "ws")
    assert wb.feedback_datasets() == []
    wb.record_judgment(CHAT, "a", "b", "better", feedback="alpha")
    wb.record_judgment(CHAT, "a", "b", "tie", feedback="beta")
    wb.record_written_answer(CHAT, "c", ["a"], feedback="beta")
    listed = {item["name"]: item for item in wb.feedback_datasets()}
    assert {name: (c["pairs"], c["ties"], c["sft_rows"]) for name, c in listed.items()} == {
        "alpha": (1, 0, 0),
        "beta": (1, 1, 1),
    }
    choices = dict(wb.dataset_choices())
    assert choices["feedback/alpha.jsonl"] == listed["alpha"]["path"]
    assert choices["feedback/beta.sft.jsonl"] == listed["beta"]["sft_path"]
    assert "feedback/alpha.sft.jsonl" not in choices  # no written answers there yet


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda wb: wb.record_judgment(CHAT, "same", "same ", "better"), "the two answers are the same"),
        (lambda wb: wb.record_judgment(CHAT, "", "b", "better"), "an answer is empty"),
        (lambda wb: wb.record_judgment(CHAT, "a", "b", "maybe"), "unknown judgment 'maybe': use one of better"),
        (lambda wb: wb.record_judgment(CHAT[:2], "a", "b", "better"), "must alternate user and assistant"),
        (lambda wb: wb.record_judgment(CHAT, "a", "b", "better", feedback="../x"), "cannot name a feedback"),
        (lambda wb: wb.record_written_answer(CHAT, " ", ["a"]), "an answer is empty"),
    ],
)
def test_what_cannot_be_recorded_is_refused_in_both_languages(tmp_path, call, message):
    wb = Workbench(tmp_path / "ws")
    with pytest.raises(DataError, match=message) as raised:
        call(wb)
    assert Translator("zh").message(raised.value) != str(raised.value)
    assert not (tmp_path / "ws" / "feedback" / "chat.jsonl").exists()
