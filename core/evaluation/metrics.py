"""ChatGLM's generation metrics, computed exactly as its official P-tuning code does.

Per sample: ROUGE-1/2/L F-scores x100 with `rouge_chinese` on jieba-segmented text, and BLEU-4 x100 with NLTK's
`sentence_bleu` over characters with `SmoothingFunction().method3`; then the mean over samples. An empty
prediction (or label) scores 0 instead of raising, as in THUDM's GLM-4 fine-tuning code.
"""

from __future__ import annotations

import logging

METRIC_NAMES = ("rouge-1", "rouge-2", "rouge-l", "bleu-4")


def _segment(text: str) -> str:
    import jieba

    jieba.setLogLevel(logging.WARNING)
    return " ".join(jieba.cut(text))


def score(prediction: str, label: str) -> dict[str, float]:
    from nltk.translate.bleu_score import SmoothingFunction, sentence_bleu
    from rouge_chinese import Rouge

    hypothesis, reference = _segment(prediction), _segment(label)
    if not hypothesis.split() or not reference.split():
        return {name: 0.0 for name in METRIC_NAMES}
    rouge = Rouge().get_scores(hypothesis, reference)[0]
    result = {name: round(rouge[name]["f"] * 100, 4) for name in ("rouge-1", "rouge-2", "rouge-l")}
    bleu = sentence_bleu([list(label)], list(prediction), smoothing_function=SmoothingFunction().method3)
    result["bleu-4"] = round(bleu * 100, 4)
    return result


def average(scores: list[dict[str, float]]) -> dict[str, float]:
    if not scores:
        return {name: 0.0 for name in METRIC_NAMES}
    return {name: sum(s[name] for s in scores) / len(scores) for name in METRIC_NAMES}
