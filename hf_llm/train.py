"""The run driver: `hf-llm train` (`run`) and `hf-llm eval` (`evaluate`) for every task, through one outline.

    output folder -> data -> tokenizer -> model -> lengths -> model settings -> tokenised data -> trainer
    -> train -> final evaluation -> samples -> final save (model, metrics, state, loss curve, card, averaging)

Each step asks the task (`hf_llm.tasks`) where tasks differ; the building blocks below (outputs, data,
tokenizer, models, trainers) know no task. Order matters for safety: the recipe, the data, the tokenizer and
the model are all checked before the first byte is written, so a bad input never touches an existing
`output_dir`; a folder that already holds a run is only continued (`training.resume_from_checkpoint=true`) or
replaced on request (`--overwrite`). The recipe handed in is never changed: lengths fitted to the model go
into a copy.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import os
import tempfile
from typing import Any

from transformers import Trainer
from transformers.trainer_utils import set_seed

from .cards import write_card
from .data import load_raw
from .inference import load_model_and_tokenizer
from .models import fitted_lengths
from .outputs import best_checkpoint_summary, prepare_output_dir, save_final, save_loss_curve
from .recipe_schema import Recipe, dump_recipe
from .tasks import Task, get_task
from .tokenizer import tokenizer_for
from .trainers import trainer_options, training_arguments


def perplexity(loss: float) -> float:
    return math.exp(loss) if loss < 50 else float("inf")


def fit_to_model(recipe: Recipe, task: Task, model) -> Recipe:
    """A copy of the recipe whose data lengths fit what the model reads (the recipe given is unchanged)."""
    data = fitted_lengths(model, recipe.data, task.length_keys, task.truncates)
    return recipe if data is recipe.data else dataclasses.replace(recipe, data=data)


def make_trainer(task: Task, recipe: Recipe, model, tokenizer, tokenized, overrides: dict | None = None) -> Trainer:
    """The task's Trainer with the recipe's arguments; `tokenized` holds "validation" and, to train, "train"."""
    defaults = {"metric_for_best_model": task.best_metric, **task.argument_defaults(recipe)}
    args = training_arguments(recipe, task.arguments_class, defaults, overrides)
    return task.trainer_class(
        model=model, args=args, train_dataset=tokenized.get("train"), eval_dataset=tokenized["validation"],
        data_collator=task.collator(tokenizer, model), processing_class=tokenizer,
        compute_metrics=task.compute_metrics(recipe, tokenizer, tokenized["validation"]), model_card=write_card,
        **trainer_options(recipe),
    )


def initial_metrics(trainer: Trainer, with_perplexity: bool) -> dict:
    """`init_*` metrics from the evaluation the Trainer ran before the first step (`eval_on_start`).

    That first evaluation runs after the model is wrapped for distributed training. A `trainer.evaluate()`
    before `trainer.train()` would mark the model as prepared, and accelerate then skips the DDP wrapper: the
    replicas silently drift apart (seen with transformers 5.24 / accelerate 1.15).
    """
    start = next((e for e in trainer.state.log_history if e.get("step") == 0 and "eval_loss" in e), None)
    metrics = {f"init_{key}": value for key, value in (start or {}).items() if key.startswith("eval_")}
    if with_perplexity and start:
        metrics["init_perplexity"] = perplexity(start["eval_loss"])
    return metrics


def run(recipe: Recipe, overwrite: bool = False) -> dict[str, Any]:
    """Train as the recipe says; return the final metrics (and where the run is)."""
    task = get_task(recipe.task)
    resume = prepare_output_dir(recipe.training, overwrite)
    seed = recipe.training.get("seed", 42)
    set_seed(seed)

    raw = load_raw(recipe.data, seed)
    task.check_data(recipe, raw)
    tokenizer = tokenizer_for(recipe, raw["train"], task.training_texts(recipe, raw), task.tokenizer_ends_with_eos)
    model, warm_report = task.build_model(recipe, tokenizer, raw)
    recipe = fit_to_model(recipe, task, model)
    task.prepare_model(recipe, model, tokenizer)
    # Evaluation with generation writes its settings into the model's generation config: the one saved is this.
    intended_generation = copy.deepcopy(getattr(model, "generation_config", None))
    tokenized = task.tokenize(recipe, raw, tokenizer, model)
    trainer = make_trainer(task, recipe, model, tokenizer, tokenized, {"eval_on_start": resume is None})

    output_dir = trainer.args.output_dir
    os.makedirs(output_dir, exist_ok=True)
    if trainer.args.should_save:
        dump_recipe(recipe, os.path.join(output_dir, "recipe.yaml"))
        if warm_report is not None:
            with open(os.path.join(output_dir, "warm_start.json"), "w") as f:
                json.dump(warm_report, f, indent=2)

    train_result = trainer.train(resume_from_checkpoint=resume)
    metrics = task.final_evaluation(trainer)
    metrics.update(initial_metrics(trainer, task.reports_perplexity))
    if task.reports_perplexity:
        metrics["perplexity"] = perplexity(metrics["eval_loss"])
    samples = task.samples(recipe, model, tokenizer) if trainer.args.should_save else None
    if samples is not None:
        with open(os.path.join(output_dir, "samples.json"), "w") as f:
            json.dump(samples, f, indent=2)
    result = finish_run(trainer, tokenizer, recipe, train_result, metrics, intended_generation)
    return {**result, "samples": samples or [], "warm_start": warm_report}


def finish_run(trainer: Trainer, tokenizer, recipe: Recipe, train_result, metrics: dict, generation_config) -> dict:
    """Everything after the last evaluation: final model, metrics files, state, loss curve, model card, and —
    with training.push_to_hub — the Trainer's own push (which uploads the card above)."""
    output_dir = trainer.args.output_dir
    best = best_checkpoint_summary(trainer)
    averaged = {}
    if trainer.args.should_save:  # the main process of a distributed run
        save_final(trainer, tokenizer, recipe, output_dir, generation_config)
        trainer.save_metrics("train", train_result.metrics)
        trainer.save_metrics("eval", metrics)
        if best:
            trainer.save_metrics("best", best)
        trainer.save_state()
        save_loss_curve(trainer.state.log_history, os.path.join(output_dir, "loss_curve.png"))
        last = recipe.training.get("average_last_checkpoints")
        if last:
            averaged = average_at_the_end(trainer, recipe, last)
        write_card(output_dir, trainer.hub_model_id, trainer.model)
    if trainer.args.push_to_hub:
        trainer.push_to_hub(commit_message="hf-llm: end of training")  # every rank calls it; only the main one pushes
    return {**train_result.metrics, **metrics, **best, **averaged, "output_dir": output_dir}


def average_at_the_end(trainer: Trainer, recipe: Recipe, last: int) -> dict[str, Any]:
    """`training.average_last_checkpoints`: average the last checkpoints into `output_dir/average-last-N` and
    score that model on the validation data; its metrics are saved as `averaged_*` in all_results.json."""
    from .averaging import average_checkpoints, averaged_from

    folder = average_checkpoints(trainer.args.output_dir, last)
    model, tokenizer = load_model_and_tokenizer(folder)
    evaluated = evaluate(recipe, model, tokenizer)
    scores = {f"averaged_{key}": value for key, value in evaluated.items() if key.startswith("eval_") or key == "perplexity"}
    scores.update(averaged_model=folder, averaged_checkpoints=averaged_from(folder))
    trainer.save_metrics("averaged", scores)
    return scores


def evaluate(recipe: Recipe, model, tokenizer) -> dict:
    """The task's validation metrics of a model on the recipe's data (nothing is written)."""
    task = get_task(recipe.task)
    raw = load_raw(recipe.data, seed=0)
    task.check_data(recipe, raw)
    recipe = fit_to_model(recipe, task, model)
    tokenized = task.tokenize(recipe, raw, tokenizer, model)
    with tempfile.TemporaryDirectory() as scratch:
        scratch_recipe = dataclasses.replace(recipe, training={**recipe.training, "output_dir": scratch})
        # Only evaluation: no checkpoints, no best model to keep, nothing pushed or reported.
        overrides = dict(eval_strategy="no", save_strategy="no", load_best_model_at_end=False, push_to_hub=False,
                         report_to="none", eval_on_start=False)
        metrics = make_trainer(task, scratch_recipe, model, tokenizer, {"validation": tokenized["validation"]},
                               overrides).evaluate()
    if task.reports_perplexity:
        metrics["perplexity"] = perplexity(metrics["eval_loss"])
    return metrics
