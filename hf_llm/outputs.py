"""A run's output folder: checked before anything is written, the final model moved in whole, the loss curve,
and which checkpoint the run kept.
"""

from __future__ import annotations

import logging
import os
import pathlib
import shutil
import tempfile
from typing import Any

from transformers import Trainer
from transformers.trainer_utils import get_last_checkpoint

from .recipe_schema import Recipe, RecipeError, dump_recipe

logger = logging.getLogger("hf_llm")


def prepare_output_dir(training: dict, overwrite: bool) -> str | None:
    """Check `output_dir` before anything is written; return the checkpoint to resume from, if any."""
    output_dir = pathlib.Path(training["output_dir"])
    resume = training.get("resume_from_checkpoint")
    if resume:
        if resume is True or resume == "true":
            last = get_last_checkpoint(str(output_dir)) if output_dir.is_dir() else None
            if last is None:
                raise RecipeError(f"training.resume_from_checkpoint=true but {output_dir} holds no checkpoint-* folder.")
            return last
        if not os.path.isdir(resume):
            raise RecipeError(f"training.resume_from_checkpoint: checkpoint folder not found: {resume}")
        return resume
    # Under torchrun / accelerate every rank runs this; only the main one judges the folder (the others could
    # otherwise see what the main rank has started writing).
    if is_main_process() and output_dir.is_dir() and any(output_dir.iterdir()) and not overwrite:
        raise RecipeError(
            f"training.output_dir={output_dir} already holds a run. Continue it with "
            "training.resume_from_checkpoint=true, choose another training.output_dir, or pass --overwrite."
        )
    return None


def is_main_process() -> bool:
    return os.environ.get("RANK", "0") == "0"


def save_final(trainer: Trainer, tokenizer, recipe: Recipe, output_dir: str, generation_config=None) -> None:
    """Model + tokenizer + generation config + recipe, written beside each other and moved in at the end,
    so an interrupted save never leaves a half-written model in `output_dir`. `generation_config` restores
    the one set before training (evaluation with generation writes its own settings into the model's)."""
    if generation_config is not None:
        trainer.model.generation_config = generation_config
    staging = tempfile.mkdtemp(prefix=".final-", dir=output_dir)
    try:
        trainer.model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        dump_recipe(recipe, os.path.join(staging, "recipe.yaml"))
        for name in os.listdir(staging):
            os.replace(os.path.join(staging, name), os.path.join(output_dir, name))
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def save_loss_curve(log_history: list[dict], path: str) -> str | None:
    """Training and evaluation loss against steps, as a PNG (needs matplotlib: `pip install hf_llm[plot]`)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        logger.warning("matplotlib is not installed: no loss curve (pip install 'hf_llm[plot]').")
        return None
    train = [(e["step"], e["loss"]) for e in log_history if "loss" in e and "step" in e]
    evaluation = [(e["step"], e["eval_loss"]) for e in log_history if "eval_loss" in e and "step" in e]
    figure, axis = plt.subplots(figsize=(6, 4))
    if train:
        axis.plot(*zip(*train), label="training loss")
    if evaluation:
        axis.plot(*zip(*evaluation), "o-", label="validation loss")
    axis.set_xlabel("step")
    axis.set_ylabel("loss")
    axis.legend()
    axis.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def best_checkpoint_summary(trainer: Trainer) -> dict[str, Any]:
    """Which checkpoint the run kept (`load_best_model_at_end`), from the Trainer's state; empty if none."""
    state = trainer.state
    if not trainer.args.load_best_model_at_end or state.best_model_checkpoint is None:
        return {}
    metric = trainer.args.metric_for_best_model
    return {"best_step": state.best_global_step, "best_metric": state.best_metric,
            "metric_for_best_model": metric if metric.startswith("eval_") else f"eval_{metric}",
            "best_model_checkpoint": state.best_model_checkpoint, "last_step": state.global_step}
