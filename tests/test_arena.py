"""The arena: the win rate and its 95% Wilson interval are exact on fixed votes; judging is blind (left/right in a
seeded order, names and the person's score hidden until every item is judged or the judge reveals); ROUGE-L
judges against the reference; and two real models meet through the Workbench facade."""

from __future__ import annotations

import json

import pytest

from core.errors import RunStateError
from core.evaluation.arena import Arena, auto_judge, judge, reveal, score, view, wilson_interval
from core.workbench import Workbench
from tests.conftest import copy_run
from webui.locale import Translator


def test_win_rate_counts_a_tie_as_half_and_the_interval_is_wilsons():
    # 7 wins, 2 losses, 1 tie of 10: (7 + 0.5) / 10; Wilson with z = 1.96, worked by hand:
    # centre = (0.75 + 1.96^2/20) / (1 + 1.96^2/10) = 0.680615, half-width = 0.238439.
    result = score("person", wins=7, losses=2, ties=1, total=12)
    assert (result.win_rate, result.judged, result.total) == (0.75, 10, 12)
    assert (result.low, result.high) == (pytest.approx(0.442176, abs=1e-6), pytest.approx(0.919054, abs=1e-6))
    # Without the tie: 7 of 9 decided.
    assert result.win_rate_without_ties == pytest.approx(7 / 9)
    assert (result.low_without_ties, result.high_without_ties) == (
        pytest.approx(0.452583, abs=1e-6),
        pytest.approx(0.936776, abs=1e-6),
    )
    assert wilson_interval(0, 5) == (0.0, pytest.approx(0.434491, abs=1e-6))
    assert wilson_interval(5, 5) == (pytest.approx(0.565509, abs=1e-6), 1.0)
    only_ties = score("person", 0, 0, 4)
    assert only_ties.win_rate == 0.5 and only_ties.win_rate_without_ties is None
    assert score("person", 0, 0, 0).win_rate is None


def fixed_arena(run_dir, swapped=(False, True, False, True)) -> Arena:
    arena = Arena(
        id="fixed",
        run_dir=str(run_dir),
        first="run-a",
        second="base",
        dataset="identity",
        settings={},
        items=[
            {
                "prompt": [{"role": "user", "content": f"q{i}"}],
                "system": "",
                "reference": "我是小智，由 GLM Workbench 团队微调的 AI 助手。",
                "answers": [f"a{i}", f"b{i}"],
                "swapped": flag,
                "person": None,
                "auto": None,
                "rouge_l": None,
            }
            for i, flag in enumerate(swapped)
        ],
    )
    arena.save()
    return arena


def test_judging_is_blind_until_every_item_is_judged(tmp_path):
    fixed_arena(tmp_path)
    shown = view(Arena.load(tmp_path, "fixed"))
    assert [(item.left, item.right) for item in shown.items] == [("a0", "b0"), ("b1", "a1"), ("a2", "b2"), ("b3", "a3")]
    assert (shown.first, shown.second, shown.items[0].left_name, shown.revealed) == (None, None, None, False)
    # The person prefers the left answer everywhere: that is a0, b1, a2 (and, below, b3 / a tie).
    for index, verdict in enumerate(("left", "left", "left")):
        blind = view(judge(tmp_path, "fixed", index, verdict))
        assert blind.scores == {} and blind.first is None and blind.judged == index + 1
        assert blind.items[index].verdict == verdict
    done = view(judge(tmp_path, "fixed", 3, "tie"))
    assert (done.revealed, done.first, done.second) == (True, "run-a", "base")
    assert [(item.left_name, item.right_name) for item in done.items][:2] == [("run-a", "base"), ("base", "run-a")]
    person = done.scores["person"]
    assert (person["wins"], person["losses"], person["ties"], person["win_rate"]) == (2, 1, 1, 0.625)
    stored = json.loads((tmp_path / "eval" / "arena-fixed.json").read_text(encoding="utf-8"))
    assert [item["person"] for item in stored["items"]] == ["first", "second", "first", "tie"]
    with pytest.raises(RunStateError, match="is revealed") as raised:  # the names are known now
        judge(tmp_path, "fixed", 0, "right")
    assert Translator("zh").message(raised.value) != str(raised.value)


def test_reveal_early_and_what_is_refused(tmp_path):
    fixed_arena(tmp_path)
    judge(tmp_path, "fixed", 1, "right")
    early = view(reveal(tmp_path, "fixed"))
    assert early.revealed and early.scores["person"]["judged"] == 1 and early.scores["person"]["total"] == 4
    assert early.scores["person"]["wins"] == 1  # right was a1: the first contestant's answer
    with pytest.raises(RunStateError, match="unknown verdict 'up': use one of left, right, tie"):
        judge(tmp_path, "fixed", 0, "up")
    with pytest.raises(RunStateError, match="no arena '../x' in this run"):
        Arena.load(tmp_path, "../x")
    fixed_arena(tmp_path)
    with pytest.raises(RunStateError, match="there is no item 4: the arena has 4"):
        judge(tmp_path, "fixed", 4, "left")


def test_rouge_l_judges_against_the_reference(tmp_path):
    arena = fixed_arena(tmp_path)
    reference = arena.items[0]["reference"]
    answers = [[reference, "no idea"], ["no idea", reference], [reference, reference], ["你好", "再见"]]
    for item, pair in zip(arena.items, answers):
        item["answers"] = pair
    arena.save()
    judged = view(auto_judge(tmp_path, "fixed"))
    assert [item.auto_verdict for item in judged.items] == ["left", "left", "tie", "tie"]  # item 1 is swapped
    assert judged.items[0].rouge_l == (100.0, 0.0) and judged.items[1].rouge_l == (100.0, 0.0)
    auto = judged.scores["rouge-l"]
    assert (auto["wins"], auto["losses"], auto["ties"], auto["win_rate"]) == (1, 1, 2, 0.5)
    assert "person" not in judged.scores and judged.first is None  # the automatic judge reveals nothing


@pytest.mark.slow
def test_a_run_meets_its_base_through_the_workbench(identity_run_dir, tmp_path):
    wb = Workbench(tmp_path / "ws")
    run = copy_run(identity_run_dir, tmp_path / "ws")  # the session's LoRA run on the identity set (conftest)
    from core.evaluation.arena import ArenaSettings

    arena = wb.arena_start(run, "identity", settings=ArenaSettings(max_samples=4, max_new_tokens=24, seed=3))
    assert (arena.total, arena.judged, arena.first, arena.run) == (4, 0, None, run)
    assert (wb.run_path(run) / "eval" / f"arena-{arena.id}.json").is_file()
    assert [item["id"] for item in wb.arenas(run)] == [arena.id]
    auto = wb.arena_auto_judge(run, arena.id)
    assert auto.scores["rouge-l"]["win_rate"] == 1.0  # the trained run says who it is; the random base babbles
    for item in auto.items:  # the person sides with ROUGE-L on every item
        last = wb.arena_judge(run, arena.id, item.index, item.auto_verdict)
    assert (last.revealed, last.first, last.second) == (True, run, "base")
    assert last.scores["person"]["win_rate"] == 1.0 and last.scores["person"]["low"] == pytest.approx(
        0.510100, abs=1e-6
    )
    assert {item.left_name for item in last.items} == {run, "base"}  # both sides were used (seeded order)
    with pytest.raises(RunStateError, match="has nothing to evaluate|no saved"):
        wb.arena_start("nope", "identity")
