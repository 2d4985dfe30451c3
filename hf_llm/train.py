"""The run driver: `hf-llm train` (`run`) and `hf-llm eval` (`evaluate`) for every task, through one outline.

    output folder -> data -> tokenizer -> model -> lengths -> model settings -> tokenised data -> trainer
    -> train -> final evaluation -> samples -> final save (model, metrics, state, loss curve, card, averaging)

With a `peft:` section the model built is wrapped with a LoRA adapter before the trainer (only the adapter
trains); the final save writes the merged model and, in `adapter/`, the adapter (`hf_llm.adapters`).

Each step asks the task (`hf_llm.tasks`) where tasks differ; the building blocks below (outputs, data,
tokenizer, models, trainers) know no task. Order matters for safety: the recipe, the data, the tokenizer and
the model are all checked before the first byte is written, so a bad input never touches an existing
`output_dir`; a folder that already holds a run is only continued (`training.resume_from_checkpoint=true`) or
replaced on request (`--overwrite`). The recipe handed in is never changed: lengths fitted to the model go
into a copy.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import logging
import math
import os
import tempfile
from typing import Any

from transformers import Trainer, TrainerState
from transformers.trainer import TRAINER_STATE_NAME
from transformers.trainer_utils import TrainOutput, set_seed

from .adapters import add_adapter
from .averaging import read_weights
from .cards import write_card
from .data import load_raw
from .inference import load_model_and_tokenizer
from .models import fitted_lengths
from .outputs import (
    best_checkpoint_summary,
    check_resume_fits,
    is_write_error,
    prepare_output_dir,
    remove_incomplete_checkpoints,
    save_final,
    save_loss_curve,
    shared_weight_names,
    write_failure,
)
from .recipe_schema import Recipe, RecipeError, dump_recipe
from .tasks import Task, get_task
from .tokenizer import tokenizer_for
from .trainers import trainer_options, training_arguments

logger = logging.getLogger("hf_llm")


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
    if resume:
        check_resume_fits(resume, model, tokenizer)
    # Evaluation with generation writes its settings into the model's generation config: the one saved is this.
    intended_generation = copy.deepcopy(getattr(model, "generation_config", None))
    if recipe.peft is not None:
        if warm_report is not None:
            raise RecipeError("peft: a LoRA adapter adapts a model of this task's kind, but model.name_or_path is "
                              "warm-started (new layers that the adapter would leave untrained); fine-tune the "
                              "whole model, or start from a checkpoint of this task.")
        model = add_adapter(model, recipe.peft)
        trainable, total = model.get_nb_trainable_parameters()
        logger.info("peft: training a LoRA adapter, %d of %d parameters (%.2f%%)", trainable, total,
                    100 * trainable / total)
    tokenized = task.tokenize(recipe, raw, tokenizer, model)
    trainer = make_trainer(task, recipe, model, tokenizer, tokenized, {"eval_on_start": resume is None})

    output_dir = trainer.args.output_dir
    with reported_write_failures(output_dir, "the recipe into"):
        os.makedirs(output_dir, exist_ok=True)
        if trainer.args.should_save:
            if resume:  # what a kill during a save left after the checkpoint resumed from
                remove_incomplete_checkpoints(output_dir)
            dump_recipe(recipe, os.path.join(output_dir, "recipe.yaml"))
            if warm_report is not None:
                with open(os.path.join(output_dir, "warm_start.json"), "w") as f:
                    json.dump(warm_report, f, indent=2)

    try:
        finished = resume and finished_checkpoint(trainer, resume)
        train_result = finished or trainer.train(resume_from_checkpoint=resume)
    except BaseException as error:
        # A save that failed half-way leaves a checkpoint without its trainer_state.json; remove it, so the last
        # checkpoint in the folder is a complete one (the one to resume from).
        saving = os.path.join(output_dir, f"checkpoint-{trainer.state.global_step}")
        cut = remove_incomplete_checkpoints(output_dir, only=saving) if trainer.args.should_save else []
        if isinstance(error, Exception) and not isinstance(error, RecipeError) and is_write_error(error):
            what = os.path.basename(cut[-1]) if cut else f"into {output_dir}"
            raise write_failure(error, what, output_dir) from error
        raise
    with reported_write_failures(output_dir, "the final evaluation's predictions or the samples into"):
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


@contextlib.contextmanager
def reported_write_failures(output_dir: str, what: str):
    """A write the file system refuses (a full disk, ...) inside the block becomes one WriteFailed line naming
    `what` was written into `output_dir`, the space there and the last good checkpoint; other errors pass."""
    try:
        yield
    except Exception as error:
        if isinstance(error, RecipeError) or not is_write_error(error):
            raise
        raise write_failure(error, f"{what} {output_dir}", output_dir) from error


def finished_checkpoint(trainer: Trainer, checkpoint: str) -> TrainOutput | None:
    """A run resumed from a checkpoint that already holds its whole budget (killed during the final evaluation or
    save): the Trainer's state and weights of that checkpoint (the best one's weights with
    `load_best_model_at_end`, as `train()` would have ended), and a TrainOutput for them; None if steps remain.

    transformers' `Trainer.train(resume_from_checkpoint=...)` would train one step beyond its `max_steps` here
    (5.24: its step loop checks the budget only after a step), ending on other weights than the run that was
    not interrupted."""
    state = TrainerState.load_from_json(os.path.join(checkpoint, TRAINER_STATE_NAME))
    args = trainer.args
    if args.max_steps > 0:
        budget, done = f"{args.max_steps} steps", state.global_step >= args.max_steps
    else:  # an epoch budget: a resume with more epochs continues
        budget, done = f"{args.num_train_epochs:g} epochs", state.epoch is not None and \
            state.global_step >= state.max_steps and state.epoch >= args.num_train_epochs - 1e-6
    if not done:
        return None
    state.is_world_process_zero = trainer.is_world_process_zero()
    state.is_local_process_zero = trainer.is_local_process_zero()
    trainer.state = state
    weights = checkpoint
    if args.load_best_model_at_end and state.best_model_checkpoint:
        # the path as recorded, or the same checkpoint beside this one (the run folder moved since)
        best = [path for path in (state.best_model_checkpoint, os.path.join(
            os.path.dirname(checkpoint), os.path.basename(state.best_model_checkpoint))) if os.path.isdir(path)]
        if not best:
            raise RecipeError(f"training.resume_from_checkpoint: {checkpoint} ends the run, and its best checkpoint "
                              f"{state.best_model_checkpoint} is gone; without it the run cannot end on its best.")
        weights = state.best_model_checkpoint = best[0]
    loaded = trainer.model.load_state_dict(read_weights(weights), strict=False)
    tied = shared_weight_names(trainer.model)  # saved once, under one of their names
    if loaded.unexpected_keys or set(loaded.missing_keys) - tied:
        raise RecipeError(f"training.resume_from_checkpoint: the weights of {weights} do not fit the model of this "
                          f"recipe (missing {sorted(set(loaded.missing_keys) - tied)[:5]}, unexpected "
                          f"{loaded.unexpected_keys[:5]}); resume with the recipe that wrote it.")
    trainer.model.tie_weights()
    losses = [entry["loss"] for entry in state.log_history if "loss" in entry]
    metrics = {"train_loss": sum(losses) / len(losses) if losses else float("nan"), "epoch": state.epoch,
               "resumed_finished_checkpoint": checkpoint}
    logger.warning("%s already holds the whole budget (step %d, %s): nothing left to train; the run finishes from "
                   "it (final evaluation, save, card).", checkpoint, state.global_step, budget)
    return TrainOutput(state.global_step, metrics["train_loss"], metrics)


def finish_run(trainer: Trainer, tokenizer, recipe: Recipe, train_result, metrics: dict, generation_config) -> dict:
    """Everything after the last evaluation: final model, metrics files, state, loss curve, model card, and —
    with training.push_to_hub — the Trainer's own push (which uploads the card above)."""
    output_dir = trainer.args.output_dir
    best = best_checkpoint_summary(trainer)
    averaged = {}
    if trainer.args.should_save:  # the main process of a distributed run
        with reported_write_failures(output_dir, "the final model, tokenizer, metrics or card into"):
            averaged = save_outputs(trainer, tokenizer, recipe, train_result, metrics, generation_config, best)
    if trainer.args.push_to_hub:
        trainer.push_to_hub(commit_message="hf-llm: end of training")  # every rank calls it; only the main one pushes
    return {**train_result.metrics, **metrics, **best, **averaged, "output_dir": output_dir}


def save_outputs(trainer: Trainer, tokenizer, recipe: Recipe, train_result, metrics: dict, generation_config,
                 best: dict) -> dict:
    """The final model (moved in whole), metrics files, state, loss curve, averaged checkpoints, model card;
    returns the averaged model's scores (if any)."""
    output_dir = trainer.args.output_dir
    save_final(trainer, tokenizer, recipe, output_dir, generation_config)
    trainer.save_metrics("train", train_result.metrics)
    trainer.save_metrics("eval", metrics)
    if best:
        trainer.save_metrics("best", best)
    trainer.save_state()
    save_loss_curve(trainer.state.log_history, os.path.join(output_dir, "loss_curve.png"))
    averaged = {}
    last = recipe.training.get("average_last_checkpoints")
    if last:
        averaged = average_at_the_end(trainer, recipe, last)
    write_card(output_dir, trainer.hub_model_id, trainer.model)
    return averaged


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
