"""Task metrics computed offline with the reference libraries (never an `evaluate.load` Hub download).

- translation: sacreBLEU corpus BLEU and chrF (sacrebleu), with their signatures;
- summarization: ROUGE-1/2/L/Lsum F-measures (rouge_score, Porter stemming; Lsum on sentence lines);
- classification: accuracy and macro-F1.
Scores are on a 0-100 scale, as the libraries and papers report them.
"""

from __future__ import annotations

import re
from collections.abc import Sequence


def translation_metrics(predictions: Sequence[str], references: Sequence[str]) -> dict:
    import sacrebleu

    bleu = sacrebleu.metrics.BLEU()
    chrf = sacrebleu.metrics.CHRF()
    bleu_score = bleu.corpus_score(list(predictions), [list(references)])
    chrf_score = chrf.corpus_score(list(predictions), [list(references)])
    return {
        "bleu": bleu_score.score,
        "bleu_signature": str(bleu.get_signature()),
        "chrf": chrf_score.score,
        "chrf_signature": str(chrf.get_signature()),
    }


def sentence_lines(text: str) -> str:
    """One sentence per line, which ROUGE-Lsum expects (a regex split: nltk's punkt would need a download)."""
    return "\n".join(s for s in re.split(r"(?<=[.!?])\s+", text.strip()) if s)


def summarization_metrics(predictions: Sequence[str], references: Sequence[str]) -> dict:
    from rouge_score import rouge_scorer

    kinds = ["rouge1", "rouge2", "rougeL", "rougeLsum"]
    scorer = rouge_scorer.RougeScorer(kinds, use_stemmer=True)
    totals = dict.fromkeys(kinds, 0.0)
    for prediction, reference in zip(predictions, references):
        scores = scorer.score(sentence_lines(reference), sentence_lines(prediction))
        for kind in kinds:
            totals[kind] += scores[kind].fmeasure
    count = max(len(predictions), 1)
    return {kind: 100 * total / count for kind, total in totals.items()}


def classification_metrics(predictions: Sequence[int], labels: Sequence[int]) -> dict:
    """Accuracy and macro-F1 (every class present in the labels or the predictions weighs the same)."""
    pairs = list(zip(predictions, labels))
    accuracy = sum(p == y for p, y in pairs) / max(len(pairs), 1)
    f1s = []
    for cls in sorted(set(labels) | set(predictions)):
        tp = sum(p == cls and y == cls for p, y in pairs)
        fp = sum(p == cls and y != cls for p, y in pairs)
        fn = sum(p != cls and y == cls for p, y in pairs)
        f1s.append(2 * tp / (2 * tp + fp + fn) if tp else 0.0)
    return {"accuracy": 100 * accuracy, "f1": 100 * sum(f1s) / max(len(f1s), 1)}
