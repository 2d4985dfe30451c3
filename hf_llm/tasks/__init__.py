"""Fine-tuning tasks (translation, summarization, dialogue, classification)."""

from __future__ import annotations

from ..recipes import Recipe, RecipeError


def run_task(recipe: Recipe, overwrite: bool = False) -> dict:
    raise RecipeError(f"task {recipe.task!r} is not available yet in this version of hf_llm; use task: causal_lm.")


def evaluate_task(recipe: Recipe, model, tokenizer) -> dict:
    raise RecipeError(f"task {recipe.task!r} is not available yet in this version of hf_llm; use task: causal_lm.")
