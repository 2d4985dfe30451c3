"""A run's output folder: checked before anything is written, checkpoints whose save was interrupted found and
removed, the final model moved in whole, the loss curve, and which checkpoint the run kept.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import pathlib
import re
import shutil
import tempfile
from typing import Any

from safetensors import safe_open
from transformers import Trainer
from transformers.trainer import TRAINER_STATE_NAME
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from .adapters import save_model, unwrapped
from .averaging import weight_files
from .recipe_schema import Recipe, RecipeError, dump_recipe

logger = logging.getLogger("hf_llm")


def checkpoint_folders(run_dir: str | os.PathLike) -> list[str]:
    """The `checkpoint-N` folders of a run, by step."""
    if not os.path.isdir(run_dir):
        return []
    found = [(int(m.group(1)), name) for name in os.listdir(run_dir)
             if (m := re.fullmatch(rf"{PREFIX_CHECKPOINT_DIR}-(\d+)", name)) and os.path.isdir(os.path.join(run_dir, name))]
    return [os.path.join(run_dir, name) for _, name in sorted(found)]


def is_complete_checkpoint(folder: str) -> bool:
    """The Trainer writes a checkpoint's `trainer_state.json` last (after the model, optimizer, scheduler and RNG
    states), so a checkpoint whose save was interrupted — a crash, a full disk, SIGKILL — has none, or half of one."""
    try:
        with open(os.path.join(folder, TRAINER_STATE_NAME)) as f:
            json.load(f)
        return True
    except (OSError, ValueError):
        return False


def last_complete_checkpoint(run_dir: str | os.PathLike) -> str | None:
    complete = [folder for folder in checkpoint_folders(run_dir) if is_complete_checkpoint(folder)]
    return complete[-1] if complete else None


def remove_incomplete_checkpoints(run_dir: str | os.PathLike, only: str | None = None) -> list[str]:
    """Delete the checkpoint folders whose save did not finish — `only` that one (a save that just failed), or
    those newer than the last complete checkpoint (what a kill during a save leaves) — and return them: they
    would be taken for the last checkpoint, and count against `save_total_limit`. The main process only."""
    last = last_complete_checkpoint(run_dir)
    newer = [folder for folder in checkpoint_folders(run_dir) if not is_complete_checkpoint(folder)
             and (last is None or checkpoint_step(folder) > checkpoint_step(last))]
    removed = [folder for folder in newer if only is None or os.path.basename(folder) == os.path.basename(only)]
    if is_main_process():
        for folder in removed:
            logger.warning("Removing %s: its save was interrupted (no complete %s).", folder, TRAINER_STATE_NAME)
            shutil.rmtree(folder, ignore_errors=True)
    return removed


def checkpoint_step(folder: str) -> int:
    return int(os.path.basename(folder).rsplit("-", 1)[1])


def shared_weight_names(model) -> set[str]:
    """The names of the weights that share their tensor with another name (tied embeddings, however deep in the
    model): `save_pretrained` writes each such tensor once, under one of its names."""
    by_storage: dict[int, list[str]] = {}
    for name, tensor in model.state_dict(keep_vars=True).items():
        by_storage.setdefault(tensor.data_ptr(), []).append(name)
    return {name for names in by_storage.values() if len(names) > 1 for name in names}


class WriteFailed(RecipeError):
    """Writing part of a run failed (a full disk, a file-size limit, a read-only folder): what was being written,
    why, the space there is and a checkpoint needs, the last good checkpoint and how to resume."""


def folder_size(folder: str) -> int:
    return sum(os.path.getsize(os.path.join(root, name)) for root, _, names in os.walk(folder) for name in names)


WRITE_ERRNOS = {errno.ENOSPC, errno.EFBIG, errno.EDQUOT, errno.EROFS, errno.EIO, errno.EACCES, errno.EPERM}


def is_write_error(error: BaseException) -> bool:
    """The file system refused a write: an OSError with a write errno (no space, file too large, quota, read-only,
    I/O error, no permission), or what safetensors / torch.save raise for one."""
    if isinstance(error, OSError):
        return error.errno in WRITE_ERRNOS
    text = str(error)
    return (type(error).__name__ == "SafetensorError" and re.search(r"I/O error|IoError|os error", text) is not None) \
        or (isinstance(error, RuntimeError) and re.search(r"file write failed|No space left|File too large", text)
            is not None)


def write_failure(error: BaseException, what: str, output_dir: str) -> WriteFailed:
    """The one-line error for a failed write of `what` into the run folder `output_dir`."""
    reason = " ".join(str(error).split())[:240] or type(error).__name__
    last = last_complete_checkpoint(output_dir)
    where = os.path.abspath(output_dir)
    try:
        free = f"{shutil.disk_usage(where).free / 2**20:,.1f} MiB free there"
    except OSError:
        free = "free space unknown"
    needed = f"; a checkpoint of this run takes {folder_size(last) / 2**20:,.1f} MiB" if last else ""
    resume = (f"hf-llm train {os.path.join(output_dir, 'recipe.yaml')} training.resume_from_checkpoint=true"
              if last else "hf-llm train ... --overwrite (no checkpoint to resume from)")
    return WriteFailed(
        f"Writing {what} failed: {reason} ({free}{needed}). "
        + (f"The last good checkpoint is {last}. " if last else "No complete checkpoint was written. ")
        + f"Free some space (or choose another training.output_dir), then: {resume}"
    )


def prepare_output_dir(training: dict, overwrite: bool) -> str | None:
    """Check `output_dir` before anything is written; return the checkpoint to resume from, if any."""
    output_dir = pathlib.Path(training["output_dir"])
    resume = training.get("resume_from_checkpoint")
    if resume:
        if resume is True or resume == "true":
            last = last_complete_checkpoint(output_dir)
            if last is None:
                found = "holds no checkpoint-* folder" if not checkpoint_folders(output_dir) else \
                    "holds no complete checkpoint (every save was interrupted)"
                raise RecipeError(f"training.resume_from_checkpoint=true but {output_dir} {found}.")
            return last  # the incomplete ones after it are removed once the resume is known to fit
        if not os.path.isdir(resume):
            raise RecipeError(f"training.resume_from_checkpoint: checkpoint folder not found: {resume}")
        if not is_complete_checkpoint(resume):
            last = last_complete_checkpoint(os.path.dirname(os.path.abspath(resume)))
            raise RecipeError(f"training.resume_from_checkpoint: {resume} is incomplete (no readable "
                              f"{TRAINER_STATE_NAME}: its save was interrupted)"
                              + (f"; the last complete checkpoint is {last}." if last else "."))
        return resume
    # Under torchrun / accelerate every rank runs this; only the main one judges the folder (the others could
    # otherwise see what the main rank has started writing).
    if is_main_process() and output_dir.is_dir() and any(output_dir.iterdir()) and not overwrite:
        raise RecipeError(
            f"training.output_dir={output_dir} already holds a run. Continue it with "
            "training.resume_from_checkpoint=true, choose another training.output_dir, or pass --overwrite."
        )
    return None


def check_resume_fits(checkpoint: str, model, tokenizer) -> None:
    """A checkpoint this run can continue: its weights have the names and shapes of the recipe's model and its
    tokenizer (saved by the Trainer beside them) has the same vocabulary as the run's. Checked before anything is
    written; otherwise transformers fails deep in `load_state_dict`, or — for a tokenizer of the same size but
    other tokens — trains on silently."""
    shapes = {}
    for path in weight_files(checkpoint):
        with safe_open(path, framework="pt") as f:
            shapes.update({name: tuple(f.get_slice(name).get_shape()) for name in f.keys()})  # noqa: SIM118
    own = {name: tuple(tensor.shape) for name, tensor in model.state_dict().items()}
    tied = shared_weight_names(model)
    differ = [f"{name} {shapes[name]} vs {own[name]}" for name in own if name in shapes and shapes[name] != own[name]]
    missing = sorted(set(own) - set(shapes) - tied)
    unexpected = sorted(set(shapes) - set(own))
    if differ or missing or unexpected:
        details = "; ".join(filter(None, [
            f"shapes differ: {', '.join(differ[:3])}" if differ else "",
            f"the checkpoint lacks {', '.join(missing[:3])}" if missing else "",
            f"the model has no {', '.join(unexpected[:3])}" if unexpected else ""]))
        raise RecipeError(f"training.resume_from_checkpoint: {checkpoint} holds another model than this recipe builds "
                          f"({details}). Resume with the recipe that wrote it ({os.path.dirname(checkpoint)}/"
                          "recipe.yaml), or train into a new training.output_dir.")
    if os.path.isfile(os.path.join(checkpoint, "tokenizer.json")):
        from transformers import AutoTokenizer

        saved = AutoTokenizer.from_pretrained(checkpoint)
        if saved.get_vocab() != tokenizer.get_vocab():
            raise RecipeError(f"training.resume_from_checkpoint: the run's tokenizer ({len(tokenizer)} tokens) is not "
                              f"the one {checkpoint} was trained with ({len(saved)} tokens). Resume with the recipe that "
                              "wrote it (same tokenizer section and data), or give tokenizer.name_or_path="
                              f"{checkpoint}.")


def is_main_process() -> bool:
    return os.environ.get("RANK", "0") == "0"


def save_final(trainer: Trainer, tokenizer, recipe: Recipe, output_dir: str, generation_config=None) -> None:
    """Model + tokenizer + generation config + recipe, written beside each other and moved in at the end,
    so an interrupted save never leaves a half-written model in `output_dir`. `generation_config` restores
    the one set before training (evaluation with generation writes its own settings into the model's). A model
    with a LoRA adapter is saved merged, the adapter beside it in `adapter/` (`hf_llm.adapters.save_model`)."""
    if generation_config is not None:
        unwrapped(trainer.model).generation_config = generation_config
    staging = tempfile.mkdtemp(prefix=".final-", dir=output_dir)
    try:
        save_model(trainer.model, staging)
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
