"""The arena: two models answer the same prompts, a judge picks the better answer without knowing whose it is, and
the first model's win rate comes with a 95% interval.

- Contestants: two finished runs, or a run and its base (the run's `model_name_or_path`, no adapter: "base").
  The first one's run folder keeps the arena, beside the other evaluation files: RUN/eval/arena-<id>.json,
  written atomically after every judgment.
- Items: the conversations of a dataset; everything before the last answer is the prompt, and the last answer
  (for a pairwise dataset: the chosen one) is the reference. Each contestant answers every prompt (greedy by
  default), one model loaded at a time.
- Blind: each item shows the two answers left and right in an order drawn with the arena's seed. What a judge
  sees (`ArenaView`) names neither model, and the person's score stays hidden, until every item is judged or the
  judge asks to reveal; a revealed arena takes no more judgments.
- Judges: a person, left / right / tie per item; and an automatic judge, ChatGLM's ROUGE-L
  (core/evaluation/metrics.py) of each answer against the item's reference: the higher wins, equal is a tie.
- The score of the first contestant: win rate = (wins + ties / 2) / judged items, with the 95% Wilson score
  interval (z = 1.96) over the judged items, a tie counting as half a win. Beside it the same without ties:
  wins / (wins + losses), with its Wilson interval over the decided items.
"""

from __future__ import annotations

import gc
import json
import math
import random
import re
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from core.chat.engine import StopOnEvent
from core.chat.turns import answer_only
from core.data.dataset import load_conversations
from core.data.multimodal import first_messages
from core.data.template import TemplateEncoder
from core.errors import RunStateError
from core.evaluation.evaluate import EvalSettings, generate_answer
from core.evaluation.metrics import score as text_scores
from core.evaluation.trained import load_base, load_trained
from core.files import write_json_atomic

ARENA_PREFIX = "arena-"
BASE = "base"  # the label of a run's base model as a contestant
VERDICTS = ("left", "right", "tie")
Z_95 = 1.96
_ID = re.compile(r"[\w.\-]{1,120}")
_locks: dict[str, threading.Lock] = {}
_locks_guard = threading.Lock()


# ---- the statistics -------------------------------------------------------------------------------------------------
def wilson_interval(successes: float, trials: int, z: float = Z_95) -> tuple[float, float]:
    """The Wilson score interval of a proportion successes / trials (successes may be fractional: half-wins)."""
    if trials <= 0:
        return 0.0, 1.0
    p = successes / trials
    denominator = 1 + z * z / trials
    centre = (p + z * z / (2 * trials)) / denominator
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass
class ArenaScore:
    """How the first contestant fared with one judge."""

    judge: str  # "person" or "rouge-l"
    wins: int
    losses: int
    ties: int
    total: int  # items in the arena (judged or not)
    win_rate: float | None = None  # (wins + ties / 2) / judged
    low: float | None = None  # the 95% Wilson interval of win_rate
    high: float | None = None
    win_rate_without_ties: float | None = None  # wins / (wins + losses)
    low_without_ties: float | None = None
    high_without_ties: float | None = None

    @property
    def judged(self) -> int:
        return self.wins + self.losses + self.ties

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "judged": self.judged}


def score(judge: str, wins: int, losses: int, ties: int, total: int | None = None) -> ArenaScore:
    result = ArenaScore(judge, wins, losses, ties, total if total is not None else wins + losses + ties)
    judged = wins + losses + ties
    if judged:
        result.win_rate = (wins + ties / 2) / judged
        result.low, result.high = wilson_interval(wins + ties / 2, judged)
    if wins + losses:
        result.win_rate_without_ties = wins / (wins + losses)
        result.low_without_ties, result.high_without_ties = wilson_interval(wins, wins + losses)
    return result


# ---- the arena on disk ----------------------------------------------------------------------------------------------
@dataclass
class ArenaSettings:
    max_samples: int = 20  # prompts from the dataset (0: all)
    max_new_tokens: int = 128
    greedy: bool = True
    temperature: float = 0.7
    top_p: float = 0.9
    cutoff_len: int = 1024
    seed: int = 0  # the left/right order (and sampling, when not greedy)


@dataclass
class Arena:
    """What RUN/eval/arena-<id>.json holds. Per item, answers[0] is the first contestant's; `swapped` puts it on
    the right; `person` / `auto` are verdicts for a contestant: "first", "second" or "tie"."""

    id: str
    run_dir: str
    first: str  # the first contestant: its run's name
    second: str  # the second: a run's name, or "base"
    dataset: str
    settings: dict[str, Any]
    items: list[dict[str, Any]] = field(default_factory=list)
    revealed: bool = False
    created: float = 0.0

    @property
    def path(self) -> Path:
        return Path(self.run_dir) / "eval" / f"{ARENA_PREFIX}{self.id}.json"

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(self.path, {k: v for k, v in asdict(self).items() if k != "run_dir"})

    @classmethod
    def load(cls, run_dir: str | Path, arena_id: str) -> Arena:
        if not _ID.fullmatch(arena_id or "") or arena_id.startswith("."):
            raise RunStateError("arena.unknown", arena=arena_id)
        path = Path(run_dir) / "eval" / f"{ARENA_PREFIX}{arena_id}.json"
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            raise RunStateError("arena.unknown", arena=arena_id) from None
        return cls(run_dir=str(run_dir), **data)

    @property
    def complete(self) -> bool:
        return all(item.get("person") for item in self.items)

    @property
    def names_shown(self) -> bool:
        return self.revealed or self.complete

    def scores(self) -> dict[str, ArenaScore]:
        """The first contestant's score by judge: "person" (once revealed) and "rouge-l" (once run)."""
        found = {}
        for key, judge in (("person", "person"), ("auto", "rouge-l")):
            verdicts = [item.get(key) for item in self.items]
            if key == "person" and not self.names_shown or not any(verdicts):
                continue
            found[judge] = score(
                judge,
                verdicts.count("first"),
                verdicts.count("second"),
                verdicts.count("tie"),
                len(self.items),
            )
        return found


def _lock(path: Path) -> threading.Lock:
    with _locks_guard:
        return _locks.setdefault(str(path.resolve()), threading.Lock())


def _new_id(run_dir: Path, second: str, dataset: str) -> str:
    stem = re.sub(r"[^\w.\-]+", "_", f"{second}-{Path(dataset).stem}")[:60]
    base = f"{time.strftime('%Y%m%d-%H%M%S')}-{stem}"
    folder = run_dir / "eval"
    for counter in range(1, 1000):
        candidate = base if counter == 1 else f"{base}-{counter}"
        if not (folder / f"{ARENA_PREFIX}{candidate}.json").exists():
            return candidate
    raise FileExistsError(folder / base)


def start_arena(
    first_dir: str | Path,
    second_dir: str | Path | None,
    dataset: str,
    fmt: str = "auto",
    settings: ArenaSettings | None = None,
    stop_event: threading.Event | None = None,
) -> Arena:
    """Both contestants answer the dataset's prompts; the arena is saved in the first one's run folder. With
    `second_dir` None the second contestant is the first one's base model. Abort keeps the items both answered."""
    from transformers import StoppingCriteriaList

    settings = settings or ArenaSettings()
    first_dir = Path(first_dir)
    loaded = load_conversations(dataset, fmt)
    conversations, image_folder = loaded.conversations, Path(loaded.path).parent
    if settings.max_samples:
        conversations = conversations[: settings.max_samples]
    generation = EvalSettings(
        max_new_tokens=settings.max_new_tokens,
        greedy=settings.greedy,
        temperature=settings.temperature,
        top_p=settings.top_p,
    )
    stop = StoppingCriteriaList([StopOnEvent(stop_event)] if stop_event is not None else [])

    def answer_all(contestant, prompts) -> list[str]:
        """The contestant's answers, in order, until Abort (an answer cut short by it is dropped)."""
        import torch

        encoder = TemplateEncoder(contestant.tokenizer, contestant.config.template)
        torch.manual_seed(settings.seed)
        replies = []
        for conversation in prompts:
            if stop_event is not None and stop_event.is_set():
                break
            asked = len(conversation.messages) - 1
            reply = generate_answer(  # a GLM-V model sees the prompt's images: both contestants the same ones
                contestant,
                encoder,
                first_messages(conversation, asked) if contestant.vision is not None else conversation.messages[:asked],
                conversation.system,
                generation,
                stop,
                conversation.tools,
                image_folder,
            )
            if stop_event is not None and stop_event.is_set():
                break
            replies.append(reply)
        return replies

    first_model = load_trained(first_dir)  # one model in memory at a time
    base_config = first_model.config
    answers = [answer_all(first_model, conversations)]
    del first_model
    gc.collect()
    second_model = load_trained(second_dir) if second_dir else load_base(base_config)
    answers.append(answer_all(second_model, conversations[: len(answers[0])]))
    del second_model
    gc.collect()
    count = min(len(answers[0]), len(answers[1]))
    if not count:
        raise RunStateError("arena.nothing_answered")
    order = random.Random(settings.seed)
    second = Path(second_dir).name if second_dir else BASE
    arena = Arena(
        id=_new_id(first_dir, second, dataset),
        run_dir=str(first_dir),
        first=first_dir.name,
        second=second,
        dataset=str(dataset),
        settings=asdict(settings),
        created=time.time(),
    )
    for conversation, first, other in zip(conversations[:count], answers[0], answers[1]):
        arena.items.append(
            {
                "prompt": conversation.messages[:-1],
                **({"images": absolute_images(conversation, image_folder)} if conversation.images else {}),
                "system": conversation.system,
                "reference": conversation.messages[-1]["content"],
                "answers": [first, other],
                "swapped": order.random() < 0.5,
                "person": None,
                "auto": None,
                "rouge_l": None,
            }
        )
    arena.save()
    return arena


def absolute_images(conversation, folder: Path) -> list[str]:
    """The prompt's images as the arena keeps them: files by absolute path, data: URIs as they are."""
    return [image if image.startswith("data:") else str(folder / image) for image in conversation.images or ()]


def judge(run_dir: str | Path, arena_id: str, index: int, verdict: str) -> Arena:
    """A person's verdict on item `index` as they saw it: left, right or tie."""
    if verdict not in VERDICTS:
        raise RunStateError("arena.verdict", verdict=verdict, choices=", ".join(VERDICTS))
    arena = Arena.load(run_dir, arena_id)
    with _lock(arena.path):
        arena = Arena.load(run_dir, arena_id)  # the newest, under the lock: concurrent verdicts all land
        if arena.names_shown:  # revealed, or every item judged: the names are known, so no verdict is blind now
            raise RunStateError("arena.revealed", arena=arena_id)
        if not 0 <= index < len(arena.items):
            raise RunStateError("arena.no_item", index=index, count=len(arena.items))
        item = arena.items[index]
        if verdict == "tie":
            item["person"] = "tie"
        else:
            first_on_left = not item["swapped"]
            item["person"] = "first" if (verdict == "left") == first_on_left else "second"
        arena.save()
    return arena


def reveal(run_dir: str | Path, arena_id: str) -> Arena:
    """Show the names (and the person's score) before every item is judged; judging ends there."""
    arena = Arena.load(run_dir, arena_id)
    with _lock(arena.path):
        arena = Arena.load(run_dir, arena_id)
        arena.revealed = True
        arena.save()
    return arena


def auto_judge(run_dir: str | Path, arena_id: str) -> Arena:
    """ROUGE-L of each answer against the item's reference decides it; equal scores are a tie."""
    arena = Arena.load(run_dir, arena_id)
    with _lock(arena.path):
        arena = Arena.load(run_dir, arena_id)
        for item in arena.items:
            reference = answer_only(item["reference"])  # the answers without their reasoning are judged
            first, second = (text_scores(answer_only(a), reference)["rouge-l"] for a in item["answers"])
            item["rouge_l"] = [first, second]
            item["auto"] = "first" if first > second else "second" if second > first else "tie"
        arena.save()
    return arena


def list_arenas(run_dir: str | Path) -> list[Arena]:
    folder = Path(run_dir) / "eval"
    found = []
    for path in sorted(folder.glob(f"{ARENA_PREFIX}*.json"), reverse=True) if folder.is_dir() else []:
        try:
            found.append(Arena.load(run_dir, path.stem[len(ARENA_PREFIX) :]))
        except RunStateError:
            continue  # being written right now, or not ours
    return found


# ---- what a judge sees ----------------------------------------------------------------------------------------------
@dataclass
class ArenaItemView:
    index: int
    prompt: list[dict[str, str]]  # the conversation up to the user's last turn
    system: str
    reference: str
    left: str
    right: str
    verdict: str | None  # the person's: left, right, tie, or None
    auto_verdict: str | None  # ROUGE-L's, as left, right or tie
    left_name: str | None = None  # once the names are shown
    right_name: str | None = None
    rouge_l: tuple[float, float] | None = None  # (left, right), once the automatic judge ran
    images: list[str] = field(default_factory=list)  # the prompt's images (both contestants saw them)


@dataclass
class ArenaView:
    """An arena as the page shows it: blind until every item is judged or the judge reveals it."""

    id: str
    run: str  # the first contestant's run: where the arena is kept
    dataset: str
    total: int
    judged: int
    revealed: bool  # names shown (every item judged, or revealed on request)
    items: list[ArenaItemView]
    first: str | None = None  # the contestants' names, once shown
    second: str | None = None
    scores: dict[str, dict[str, Any]] = field(default_factory=dict)  # by judge: ArenaScore.to_dict()

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _side(verdict: str | None, swapped: bool) -> str | None:
    if verdict in (None, "tie"):
        return verdict
    return "left" if (verdict == "first") != swapped else "right"


def view(arena: Arena) -> ArenaView:
    shown = arena.names_shown
    items = []
    for index, item in enumerate(arena.items):
        swapped = bool(item["swapped"])
        left, right = (item["answers"][1], item["answers"][0]) if swapped else tuple(item["answers"])
        names = (arena.second, arena.first) if swapped else (arena.first, arena.second)
        rouge = item.get("rouge_l")
        items.append(
            ArenaItemView(
                index=index,
                prompt=item["prompt"],
                system=item["system"],
                reference=item["reference"],
                left=left,
                right=right,
                verdict=_side(item.get("person"), swapped),
                auto_verdict=_side(item.get("auto"), swapped),
                left_name=names[0] if shown else None,
                right_name=names[1] if shown else None,
                rouge_l=(rouge[1], rouge[0]) if rouge and swapped else tuple(rouge) if rouge else None,
                images=list(item.get("images") or ()),
            )
        )
    return ArenaView(
        id=arena.id,
        run=arena.first,
        dataset=arena.dataset,
        total=len(arena.items),
        judged=sum(1 for item in arena.items if item.get("person")),
        revealed=shown,
        items=items,
        first=arena.first if shown else None,
        second=arena.second if shown else None,
        scores={judge: result.to_dict() for judge, result in arena.scores().items()},
    )
