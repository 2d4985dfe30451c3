"""transformers' Trainer and Seq2SeqTrainer with what hf_llm's runs add (safe checkpoints, a stop on a
non-finite loss, a wall-time budget, early stopping, hf_llm's model card), and the TrainingArguments of a recipe.

A building block: it knows recipes, not tasks; the task gives its TrainingArguments class and defaults.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections.abc import Callable

import torch
from transformers import EarlyStoppingCallback, Seq2SeqTrainer, Trainer, TrainerCallback, TrainingArguments
from transformers.trainer import TRAINER_STATE_NAME
from transformers.trainer_utils import get_last_checkpoint, rotate_checkpoints

from .recipe_schema import TRAINING_DEFAULTS, Recipe, RecipeError, training_arguments_fields

logger = logging.getLogger("hf_llm")


def training_arguments(recipe: Recipe, arguments_class: type = TrainingArguments, defaults: dict | None = None,
                       overrides: dict | None = None) -> TrainingArguments:
    """The recipe's TrainingArguments (of the task's class): hf_llm's defaults, then the task's `defaults`
    (its `metric_for_best_model`, ...), then the recipe's `training` section, then `overrides`."""
    fields = training_arguments_fields({**TRAINING_DEFAULTS, **(defaults or {}), **recipe.training, **(overrides or {})})
    try:
        return arguments_class(**fields)
    except (ValueError, TypeError) as error:
        raise RecipeError(f"training: {error}") from None


class TrainingStopped(RecipeError):
    """Training stopped on purpose (a non-finite loss); the message says what to do, the CLI exits with 2."""


class TimeBudget(TrainerCallback):
    """Stop training once `minutes` of wall time have passed since the first step (`training.max_minutes`)."""

    def __init__(self, minutes: float):
        self.seconds = 60 * minutes
        self.start = None

    def on_train_begin(self, args, state, control, **kwargs):
        self.start = time.monotonic()

    def on_step_end(self, args, state, control, **kwargs):
        if self.start is not None and time.monotonic() - self.start >= self.seconds:
            control.should_training_stop = True
        return control


class HfLlmTrainerMixin:
    """What hf_llm adds to transformers' Trainer:

    - checkpoints are written to a staging folder and renamed into place, so a crash during a save
      leaves the previous `checkpoint-*` as the last one, loadable;
    - a non-finite training loss stops the run with a clear message (the checkpoints already written are
      the last good ones), or, with `on_nonfinite_loss="skip"`, the step is skipped (its gradients dropped);
      under DDP every process takes the same decision;
    - `Trainer.push_to_hub` uploads hf_llm's model card (`model_card`) instead of writing transformers' own;
    - `max_minutes` (a wall-time budget) and `early_stopping_patience` (transformers' `EarlyStoppingCallback`)
      as callbacks.
    """

    def __init__(self, *args, on_nonfinite_loss: str = "stop", max_minutes: float | None = None,
                 early_stopping_patience: int | None = None, model_card: Callable | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.on_nonfinite_loss = on_nonfinite_loss
        self.model_card = model_card
        self.skipped_steps = 0
        self._checkpoint_staging: str | None = None
        if max_minutes is not None:
            self.add_callback(TimeBudget(max_minutes))
        if early_stopping_patience is not None:
            self.add_callback(EarlyStoppingCallback(early_stopping_patience=early_stopping_patience))

    def training_step(self, model, inputs, num_items_in_batch=None):
        loss = super().training_step(model, inputs, num_items_in_batch)
        local_bad = not bool(torch.isfinite(loss).all())
        bad = local_bad
        if self.args.world_size > 1 and torch.distributed.is_initialized():
            # Every process must decide alike: the gradients were averaged across processes, so one non-finite
            # loss poisons them all, and a process that stopped alone would leave the others waiting forever.
            flag = torch.tensor([float(local_bad)], device=loss.device)
            torch.distributed.all_reduce(flag)
            bad = bool(flag.item())
        if not bad:
            return loss
        value = loss.item() if local_bad else "on another process"
        step = self.state.global_step + 1
        if self.on_nonfinite_loss == "skip":
            for parameter in model.parameters():
                parameter.grad = None  # the optimizer skips parameters without a gradient
            self.skipped_steps += 1
            logger.warning("Non-finite loss (%s) at step %d: step skipped (%d so far).", value, step,
                           self.skipped_steps)
            return torch.zeros_like(loss)
        last = get_last_checkpoint(self.args.output_dir) if os.path.isdir(self.args.output_dir) else None
        raise TrainingStopped(
            f"Non-finite training loss ({value}) at step {step}: training stopped, nothing more is written. "
            + (f"The last good checkpoint is {last}. " if last else "No checkpoint had been written yet. ")
            + "Lower training.learning_rate or set training.max_grad_norm, check the data, or set "
            "training.on_nonfinite_loss=skip to skip such steps."
        )

    def _get_output_dir(self, trial):
        return self._checkpoint_staging or super()._get_output_dir(trial)

    def _save_checkpoint(self, model, trial) -> None:
        run_dir = super()._get_output_dir(trial)
        staging = os.path.join(run_dir, ".checkpoint-staging")
        name = f"checkpoint-{self.state.global_step}"
        if self.args.should_save:
            shutil.rmtree(staging, ignore_errors=True)
            os.makedirs(staging)
        self.accelerator.wait_for_everyone()
        self._checkpoint_staging = staging
        try:
            super()._save_checkpoint(model, trial)
        finally:
            self._checkpoint_staging = None
        self.accelerator.wait_for_everyone()  # every rank has written its RNG state
        # A new best checkpoint is recorded under the staging folder; it lives at its final name from now on
        # (every rank: each loads the best model at the end).
        best = self.state.best_model_checkpoint
        if best is not None and best.startswith(staging):
            self.state.best_model_checkpoint = best.replace(staging, run_dir, 1)
        if self.args.should_save:
            state_file = os.path.join(staging, name, TRAINER_STATE_NAME)
            if best != self.state.best_model_checkpoint and os.path.isfile(state_file):
                # ... and so in the staged trainer_state.json, or a run resumed from it would lose its best.
                self.state.save_to_json(state_file)
            final = os.path.join(run_dir, name)
            if os.path.isdir(final):
                shutil.rmtree(final)
            os.replace(os.path.join(staging, name), final)  # atomic on one filesystem
            shutil.rmtree(staging, ignore_errors=True)
            rotate_checkpoints(output_dir=run_dir, save_total_limit=self.args.save_total_limit,
                               best_model_checkpoint=self.state.best_model_checkpoint, use_mtime=False)
        self.accelerator.wait_for_everyone()

    def create_model_card(self, *args, **kwargs) -> None:
        """`Trainer.push_to_hub` calls this before uploading: hf_llm's card (`model_card(output_dir, repo_id, model)`,
        given by the run driver) instead of transformers' own; without one, transformers' card."""
        if self.model_card is None:
            return super().create_model_card(*args, **kwargs)
        self.model_card(self.args.output_dir, self.hub_model_id, self.model)


class HfLlmTrainer(HfLlmTrainerMixin, Trainer):
    pass


class HfLlmSeq2SeqTrainer(HfLlmTrainerMixin, Seq2SeqTrainer):
    pass


def trainer_options(recipe: Recipe) -> dict:
    """The HfLlmTrainerMixin keys of a recipe's `training` section."""
    return {"on_nonfinite_loss": recipe.training.get("on_nonfinite_loss", "stop"),
            "max_minutes": recipe.training.get("max_minutes"),
            "early_stopping_patience": recipe.training.get("early_stopping_patience")}

