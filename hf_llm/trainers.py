"""transformers' Trainer and Seq2SeqTrainer with what hf_llm's runs add (a stop on a non-finite loss, a
wall-time budget, early stopping, hf_llm's model card), and the TrainingArguments of a recipe.

A building block: it knows recipes, not tasks; the task gives its TrainingArguments class and defaults.
Only public Trainer methods are overridden (`training_step`, `create_model_card`); what a checkpoint interrupted
mid-save leaves is dealt with by the run driver (hf_llm.outputs: a checkpoint is complete once the Trainer has
written its `trainer_state.json`, the last file of every save).
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
import time
from collections.abc import Callable

import torch
from transformers import EarlyStoppingCallback, Seq2SeqTrainer, Trainer, TrainerCallback, TrainingArguments

from .outputs import folder_size, last_complete_checkpoint, write_failure
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


class FreeSpaceCheck(TrainerCallback):
    """Before each checkpoint save, the free space of the run folder's file system against the size of the last
    checkpoint (cheap to know: a few files); too little stops the run with a WriteFailed that says so, before a
    byte of the new checkpoint is written. Single-process runs only: under DDP the main process would stop alone
    and leave the others waiting (there, a failed write is reported after the fact, like any other)."""

    def _check(self, args, state, control):
        if not (control.should_save and args.should_save) or args.world_size > 1:
            return
        last = last_complete_checkpoint(args.output_dir)
        if last is None:
            return
        needed, free = folder_size(last), shutil.disk_usage(args.output_dir).free
        if free < needed:
            raise write_failure(OSError(errno.ENOSPC, f"{os.strerror(errno.ENOSPC)} (checked before the save: "
                                                      f"{needed / 2**20:,.1f} MiB needed)"),
                                f"checkpoint-{state.global_step}", args.output_dir)

    def on_step_end(self, args, state, control, **kwargs):
        self._check(args, state, control)

    def on_epoch_end(self, args, state, control, **kwargs):
        self._check(args, state, control)


class HfLlmTrainerMixin:
    """What hf_llm adds to transformers' Trainer:

    - a non-finite training loss stops the run with a clear message (the checkpoints already written are
      the last good ones), or, with `on_nonfinite_loss="skip"`, the step is skipped (its gradients dropped);
      under DDP every process takes the same decision;
    - `Trainer.push_to_hub` uploads hf_llm's model card (`model_card`) instead of writing transformers' own;
    - the free space checked before each checkpoint save (FreeSpaceCheck);
    - `max_minutes` (a wall-time budget) and `early_stopping_patience` (transformers' `EarlyStoppingCallback`)
      as callbacks.
    """

    def __init__(self, *args, on_nonfinite_loss: str = "stop", max_minutes: float | None = None,
                 early_stopping_patience: int | None = None, model_card: Callable | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.on_nonfinite_loss = on_nonfinite_loss
        self.model_card = model_card
        self.skipped_steps = 0
        self.add_callback(FreeSpaceCheck())  # after transformers' DefaultFlowCallback, which decides should_save
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
        last = last_complete_checkpoint(self.args.output_dir)
        raise TrainingStopped(
            f"Non-finite training loss ({value}) at step {step}: training stopped, nothing more is written. "
            + (f"The last good checkpoint is {last}. " if last else "No checkpoint had been written yet. ")
            + "Lower training.learning_rate or set training.max_grad_norm, check the data, or set "
            "training.on_nonfinite_loss=skip to skip such steps."
        )

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

