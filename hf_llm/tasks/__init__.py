"""Fine-tuning tasks: translation and summarization (Seq2SeqTrainer, generated text scored with
sacreBLEU/chrF and ROUGE), dialogue (assistant-only loss), classification (accuracy, macro-F1)."""

from __future__ import annotations

from ..recipes import Recipe


def run_task(recipe: Recipe, overwrite: bool = False) -> dict:
    from . import classification, dialogue, seq2seq

    runners = {"translation": seq2seq.run, "summarization": seq2seq.run, "dialogue": dialogue.run,
               "classification": classification.run}
    return runners[recipe.task](recipe, overwrite)


def evaluate_task(recipe: Recipe, model, tokenizer) -> dict:
    from . import classification, dialogue, seq2seq

    evaluators = {"translation": seq2seq.evaluate, "summarization": seq2seq.evaluate, "dialogue": dialogue.evaluate,
                  "classification": classification.evaluate}
    return evaluators[recipe.task](recipe, model, tokenizer)
