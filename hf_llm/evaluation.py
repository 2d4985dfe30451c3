"""`hf-llm eval`: score a trained model on a recipe's validation data (perplexity, or the task metric)."""

from __future__ import annotations

import json
import os

from .averaging import averaged_from
from .inference import load_model_and_tokenizer
from .recipes import Recipe, RecipeError, load_recipe
from .train import evaluate


def resolve(target: str, overrides: list[str]) -> tuple[Recipe, str]:
    """(recipe, model folder) for a model folder or a recipe."""
    if os.path.isfile(os.path.join(target, "config.json")):
        saved = os.path.join(target, "recipe.yaml")
        if os.path.isfile(saved):
            recipe = load_recipe(saved, overrides)
        else:
            recipe = load_recipe(None, overrides, raw={})
        return recipe, target
    if os.path.isdir(target):
        raise RecipeError(f"{target} holds no config.json: not a saved model.")
    recipe = load_recipe(target, overrides)
    model_dir = recipe.model.name_or_path or recipe.training["output_dir"]
    if not os.path.isfile(os.path.join(model_dir, "config.json")):
        raise RecipeError(f"No trained model in {model_dir}: run `hf-llm train {target}` first, or set model.name_or_path.")
    return recipe, model_dir


def provenance(model_dir: str) -> dict:
    """Which weights the folder holds: the best checkpoint its run kept (`best_results.json`, from the
    Trainer's state), or the checkpoints averaged into it (`hf-llm average`)."""
    averaged = averaged_from(model_dir)
    if averaged is not None:  # written last: `hf-llm average --output RUN_DIR` replaced the best model
        return {"averaged_checkpoints": averaged}
    best = os.path.join(model_dir, "best_results.json")
    if os.path.isfile(best):
        with open(best) as f:
            return json.load(f)
    return {}


def evaluate_target(target: str, overrides: list[str] | None = None) -> dict:
    """The task's validation metrics of a model folder or of a recipe's trained model, with which weights they are."""
    recipe, model_dir = resolve(target, overrides or [])
    model, tokenizer = load_model_and_tokenizer(model_dir)
    return {**evaluate(recipe, model, tokenizer), "model": model_dir, **provenance(model_dir)}
