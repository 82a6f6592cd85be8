"""The chat's judgments, kept as training data: workspace/feedback/<name>.jsonl and its two siblings.

`<name>.jsonl` holds one row per preference in LLaMA-Factory's pairwise (alpaca ranking) format, so it trains here
(stage dpo, orpo or kto) and in LLaMA-Factory as it is:

    {"instruction": last user message, "input": "", "chosen": ..., "rejected": ...,
     "system": ..., "history": [[question, answer], ...],                 # the turns before, for multi-turn chats
     "judgment": "better" | "worse" | "written", "chosen_run": ..., "rejected_run": ..., "time": ISO 8601}

- better / worse: the first of the two shown answers is better / worse than the second.
- written ("write the right answer"): the written answer beats each shown answer that differs from it (one pair
  each, `rejected_run` naming the shown answer's run, `chosen_run` empty), and is also an SFT row in
  `<name>.sft.jsonl` (alpaca: instruction, input, output, system, history, time).
- Answers of a model that thinks or calls tools (the GLM-4.5 generation) are kept as the model writes them:
  `<think>reasoning</think>`, the answer, the calls as `<tool_call>` markup (core/chat/turns.reply_markup), and the
  row's `tools` (LLaMA-Factory's column) lists the functions the prompt offered; the template reads both back, so
  DPO/ORPO/KTO on the file learn the reasoning and the calls.
- tie: no preference either way. DPO and LLaMA-Factory have no tie, so a tie never enters `<name>.jsonl`: it is
  kept in `<name>.ties.jsonl` (instruction, input, system, history, "answers": [first, second], "runs": [...],
  "time"). No trainer reads that file (its rows have no chosen/rejected: a preference stage refuses it), the
  count is shown, and it stays for a later relabelling.

A run name "" means the base model. Appends are serialised per file (a thread lock, for the page's concurrent
requests, and an OS lock, for another process such as the CLI); each row is one write to a file opened for
appending, so earlier rows are never rewritten, and a row is only ever added whole.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.errors import DataError

FEEDBACK_DIR = "feedback"
JUDGMENTS = ("better", "worse", "tie")
SFT_SUFFIX = ".sft.jsonl"
TIES_SUFFIX = ".ties.jsonl"
DEFAULT_NAME = "chat"
IMAGES_DIR = "images"  # the images of votes on image prompts, beside the feedback files
IMAGE_PLACEHOLDER = "<image>"  # LLaMA-Factory's, as core.data.formats reads it (a lower layer: not imported)
_NAME = re.compile(r"[\w\-][\w.\-]{0,63}")

_locks: dict[str, threading.Lock] = {}
_locks_guard = threading.Lock()


@dataclass
class FeedbackCounts:
    """One feedback dataset as a list shows it: its files and how many rows each holds."""

    name: str
    path: str  # <name>.jsonl: the pairs (a pairwise dataset: pick it for a dpo/orpo/kto run)
    pairs: int = 0
    ties: int = 0
    sft_rows: int = 0
    sft_path: str = ""  # <name>.sft.jsonl: the written answers (an alpaca dataset for SFT), once there is one
    ties_path: str = ""
    updated: float = 0.0  # the newest file's modification time

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def check_name(name: str) -> str:
    name = (name or "").strip()
    if not _NAME.fullmatch(name) or name.endswith((".sft", ".ties")):
        raise DataError("feedback.bad_name", name=name)
    return name


class FeedbackStore:
    def __init__(self, workspace: str | Path):
        self.root = Path(workspace) / FEEDBACK_DIR

    # ---- writing ------------------------------------------------------------------------------------------------
    def record(
        self,
        name: str,
        messages: list[dict[str, str]],
        first: str,
        second: str,
        judgment: str,
        first_run: str = "",
        second_run: str = "",
        system: str = "",
        tools: list[dict[str, Any]] | None = None,
    ) -> FeedbackCounts:
        """One judgment of two answers to the conversation `messages` (ending with the user's turn). `tools`: the
        functions the prompt offered (kept in the row: a call in an answer is only learnt beside them)."""
        name = check_name(name)
        if judgment not in JUDGMENTS:
            raise DataError("feedback.judgment", judgment=judgment, choices=", ".join(JUDGMENTS))
        prompt = self._keep_images(_prompt(messages, system, tools))
        first, second = _answer(first), _answer(second)
        if judgment == "tie":
            row = {**prompt, "answers": [first, second], "runs": [first_run, second_run], "time": _now()}
            self._append(self.root / f"{name}{TIES_SUFFIX}", [row])
            return self.counts(name)
        if first.strip() == second.strip():
            raise DataError("feedback.same_answers")
        if judgment == "worse":
            first, second, first_run, second_run = second, first, second_run, first_run
        row = _pair(prompt, first, second, judgment, first_run, second_run)
        self._append(self.root / f"{name}.jsonl", [row])
        return self.counts(name)

    def record_column(
        self,
        name: str,
        messages: list[dict[str, str]],
        answers: list[str],
        runs: list[str],
        column: int,
        judgment: str,
        system: str = "",
        tools: list[dict[str, Any]] | None = None,
    ) -> FeedbackCounts:
        """Side by side's verdict on one column: its answer is better than, worse than, or as good as each other
        column's answer (one row each; a column with the same answer, or none, is no comparison). Refused when no
        other column has a different answer."""
        if not 0 <= column < len(answers):
            raise DataError("feedback.no_column", column=column + 1, count=len(answers))
        judged = (answers[column] or "").strip()
        others = []
        for index, answer in enumerate(answers):
            text = (answer or "").strip()
            if index != column and text and text != judged and text not in [a for a, _ in others]:
                others.append((text, runs[index] if index < len(runs) else ""))
        if not judged:
            raise DataError("feedback.empty_answer")
        if not others:
            raise DataError("feedback.same_answers")
        run = runs[column] if column < len(runs) else ""
        for answer, other_run in others:
            self.record(name, messages, judged, answer, judgment, run, other_run, system, tools)
        return self.counts(name)

    def record_written(
        self,
        name: str,
        messages: list[dict[str, str]],
        written: str,
        shown: list[str],
        shown_runs: list[str] | None = None,
        system: str = "",
        tools: list[dict[str, Any]] | None = None,
    ) -> FeedbackCounts:
        """The right answer, written by the user: it beats each shown answer (one pair each, an answer equal to it
        is no pair) and becomes an SFT row."""
        name = check_name(name)
        prompt = self._keep_images(_prompt(messages, system, tools))
        written = _answer(written)
        runs = list(shown_runs or []) + [""] * len(shown)
        pairs = [
            _pair(prompt, written, _answer(answer), "written", "", run)
            for answer, run in zip(shown, runs)
            if answer.strip() and answer.strip() != written.strip()
        ]
        if pairs:
            self._append(self.root / f"{name}.jsonl", pairs)
        sft = {k: prompt[k] for k in ("instruction", "input")} | {"output": written}
        sft |= {k: v for k, v in prompt.items() if k not in ("instruction", "input")} | {"time": _now()}
        self._append(self.root / f"{name}{SFT_SUFFIX}", [sft])
        return self.counts(name)

    def _keep_images(self, prompt: dict[str, Any]) -> dict[str, Any]:
        """A prompt's images copied into feedback/images/ (named by their content) and named relative to the
        feedback files: the page's uploads live in a temporary folder, and the rows must outlive it."""
        if not prompt.get("images"):
            return prompt
        import hashlib
        import shutil

        folder = self.root / IMAGES_DIR
        folder.mkdir(parents=True, exist_ok=True)
        kept = []
        for image in prompt["images"]:
            source = Path(image)
            name = hashlib.sha256(source.read_bytes()).hexdigest()[:24] + source.suffix.lower()
            if not (folder / name).is_file():
                shutil.copyfile(source, folder / name)
            kept.append(f"{IMAGES_DIR}/{name}")
        return {**prompt, "images": kept}

    def _append(self, path: Path, rows: list[dict[str, Any]]) -> None:
        text = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows).encode("utf-8")
        path.parent.mkdir(parents=True, exist_ok=True)
        with _lock_for(path):
            handle = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                fcntl.flock(handle, fcntl.LOCK_EX)
                if os.fstat(handle).st_size and _last_byte(path) != b"\n":
                    text = b"\n" + text  # a line cut short (a crash mid-write) stays a bad row of its own
                view = memoryview(text)
                while view:
                    view = view[os.write(handle, view) :]
                os.fsync(handle)
            finally:
                os.close(handle)  # releases the OS lock too

    # ---- reading ------------------------------------------------------------------------------------------------
    def counts(self, name: str) -> FeedbackCounts:
        name = check_name(name)
        pairs, sft, ties = (self.root / f"{name}{suffix}" for suffix in (".jsonl", SFT_SUFFIX, TIES_SUFFIX))
        existing = [p for p in (pairs, sft, ties) if p.is_file()]
        return FeedbackCounts(
            name=name,
            path=str(pairs),
            pairs=_lines(pairs),
            ties=_lines(ties),
            sft_rows=_lines(sft),
            sft_path=str(sft) if sft.is_file() else "",
            ties_path=str(ties) if ties.is_file() else "",
            updated=max((p.stat().st_mtime for p in existing), default=0.0),
        )

    def datasets(self) -> list[FeedbackCounts]:
        """Every feedback dataset, most recently updated first."""
        if not self.root.is_dir():
            return []
        names = set()
        for path in self.root.glob("*.jsonl"):
            stem = path.name
            for suffix in (SFT_SUFFIX, TIES_SUFFIX, ".jsonl"):
                if stem.endswith(suffix):
                    stem = stem[: -len(suffix)]
                    break
            if _NAME.fullmatch(stem):
                names.add(stem)
        return sorted((self.counts(name) for name in names), key=lambda c: (-c.updated, c.name))


def _lock_for(path: Path) -> threading.Lock:
    with _locks_guard:
        return _locks.setdefault(str(path.resolve()), threading.Lock())


def _last_byte(path: Path) -> bytes:
    with open(path, "rb") as handle:
        handle.seek(-1, os.SEEK_END)
        return handle.read(1)


def _lines(path: Path) -> int:
    if not path.is_file():
        return 0
    with open(path, "rb") as handle:
        return sum(1 for line in handle if line.strip())


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def _answer(text: Any) -> str:
    if not isinstance(text, str) or not text.strip():
        raise DataError("feedback.empty_answer")
    return text


def _prompt(messages: list[dict[str, str]], system: str = "", tools: list[dict] | None = None) -> dict[str, Any]:
    """The conversation the answers reply to, in LLaMA-Factory's alpaca fields. `messages` alternate user and
    assistant and end with the user (a leading system message is taken as the system prompt)."""
    messages = list(messages or [])
    if messages and messages[0].get("role") == "system":
        system = system or str(messages[0].get("content") or "")
        messages = messages[1:]
    roles = [m.get("role") for m in messages]
    expected = ["user" if i % 2 == 0 else "assistant" for i in range(len(messages))]
    if not messages or roles != expected or roles[-1] != "user":
        raise DataError("feedback.bad_conversation")
    if not all(isinstance(m.get("content"), str) for m in messages) or not messages[-1]["content"].strip():
        raise DataError("feedback.bad_conversation")
    history = [[messages[i]["content"], messages[i + 1]["content"]] for i in range(0, len(messages) - 1, 2)]
    prompt = {"instruction": messages[-1]["content"], "input": "", "system": system, "history": history}
    images = [str(image) for image in messages[-1].get("images") or ()]
    if images:  # LLaMA-Factory's image rows: a placeholder per image in the text, the files beside
        text = prompt["instruction"]
        if text.count(IMAGE_PLACEHOLDER) != len(images):
            text = IMAGE_PLACEHOLDER * len(images) + text.replace(IMAGE_PLACEHOLDER, "")
        prompt |= {"instruction": text, "images": images}
    return prompt | ({"tools": list(tools)} if tools else {})


def _pair(prompt: dict[str, Any], chosen: str, rejected: str, judgment: str, chosen_run: str, rejected_run: str):
    return {
        "instruction": prompt["instruction"],
        "input": "",
        "chosen": chosen,
        "rejected": rejected,
        "system": prompt["system"],
        "history": prompt["history"],
        **({"tools": prompt["tools"]} if "tools" in prompt else {}),
        **({"images": prompt["images"]} if "images" in prompt else {}),
        "judgment": judgment,
        "chosen_run": chosen_run,
        "rejected_run": rejected_run,
        "time": _now(),
    }
