"""`hf-llm eval`: score a trained model on a recipe's validation data (perplexity, or the task metric)."""

from __future__ import annotations

import json
import os
import tempfile

from transformers import Trainer, default_data_collator

from .data import load_raw, require_columns, tokenize_for_causal_lm
from .recipes import Recipe, RecipeError, load_recipe
from .train import TRAINING_DEFAULTS, fit_lengths, perplexity


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
    from .averaging import RECORD_NAME

    averaged = os.path.join(model_dir, RECORD_NAME)
    if os.path.isfile(averaged):  # written last: `hf-llm average --output RUN_DIR` replaced the best model
        with open(averaged) as f:
            return {"averaged_checkpoints": json.load(f)["checkpoints"]}
    best = os.path.join(model_dir, "best_results.json")
    if os.path.isfile(best):
        with open(best) as f:
            return json.load(f)
    return {}


def evaluate_target(target: str, overrides: list[str] | None = None) -> dict:
    from .cli import load_model_and_tokenizer

    recipe, model_dir = resolve(target, overrides or [])
    model, tokenizer = load_model_and_tokenizer(model_dir)
    if recipe.task != "causal_lm":
        from .tasks import evaluate_task

        return {**evaluate_task(recipe, model, tokenizer), "model": model_dir, **provenance(model_dir)}
    data = recipe.data
    raw = load_raw(data, seed=0)
    require_columns(raw, [data.text_column], {data.text_column: "data.text_column"})
    fit_lengths(model, data, ("block_size",), truncate=False)
    blocks = tokenize_for_causal_lm(raw, tokenizer, data)
    with tempfile.TemporaryDirectory() as scratch:
        from transformers import TrainingArguments

        args = TrainingArguments(output_dir=scratch, **{k: v for k, v in TRAINING_DEFAULTS.items() if k != "save_total_limit"})
        trainer = Trainer(model=model, args=args, eval_dataset=blocks["validation"], data_collator=default_data_collator,
                          processing_class=tokenizer)
        metrics = trainer.evaluate()
    metrics["perplexity"] = perplexity(metrics["eval_loss"])
    return {**metrics, "model": model_dir, **provenance(model_dir)}
