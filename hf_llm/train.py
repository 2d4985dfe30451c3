"""`hf-llm train`: run a recipe with transformers' Trainer.

Order matters for safety: the recipe, the data, the tokenizer and the model are all checked before the
first byte is written, so a bad input never touches an existing `output_dir`; a folder that already holds
a run is only continued (`training.resume_from_checkpoint=true`) or replaced on request (`--overwrite`).
"""

from __future__ import annotations

import json
import logging
import math
import os
import pathlib
import shutil
import tempfile
import time
from collections.abc import Callable
from typing import Any

import torch
from transformers import (
    AutoModelForCausalLM,
    EarlyStoppingCallback,
    GenerationConfig,
    Seq2SeqTrainer,
    Trainer,
    TrainerCallback,
    TrainingArguments,
    default_data_collator,
)
from transformers.trainer import TRAINER_STATE_NAME
from transformers.trainer_utils import get_last_checkpoint, rotate_checkpoints, set_seed

from .data import load_raw, require_columns, tokenize_for_causal_lm
from .recipes import (
    TRAINING_DEFAULTS,
    Recipe,
    RecipeError,
    arguments_class,
    build_config,
    dump_recipe,
    generation_fields,
    training_arguments_fields,
)
from .tokenizer import load_tokenizer, special_token_ids, train_tokenizer

logger = logging.getLogger("hf_llm")

# The checkpoint a causal LM run keeps (`training.load_best_model_at_end`): the lowest validation loss.
BEST_METRIC = "loss"


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


def training_arguments(recipe: Recipe, **task_defaults) -> TrainingArguments:
    """The recipe's TrainingArguments; `task_defaults` are the task's own (its `metric_for_best_model`, ...)."""
    fields = training_arguments_fields({**TRAINING_DEFAULTS, **task_defaults, **recipe.training})
    try:
        return arguments_class(recipe.task)(**fields)
    except (ValueError, TypeError) as error:
        raise RecipeError(f"training: {error}") from None


def get_tokenizer(recipe: Recipe, train_split, text_columns: list[str] | None = None, texts_of=None):
    """The recipe's tokenizer, or a byte-level BPE trained on the training text (the given columns, or
    `texts_of(batch) -> list[str]` for structured rows such as translation pairs or chats)."""
    if recipe.tokenizer.name_or_path is not None:
        try:
            return load_tokenizer(recipe.tokenizer.name_or_path)
        except (OSError, ValueError) as error:
            raise RecipeError(f"tokenizer.name_or_path: cannot load {recipe.tokenizer.name_or_path}: {error}") from None
    if recipe.model.name_or_path is not None and os.path.isfile(os.path.join(recipe.model.name_or_path, "tokenizer.json")):
        return load_tokenizer(recipe.model.name_or_path)
    limit = recipe.tokenizer.max_training_documents

    def texts():
        total = len(train_split) if limit is None else min(limit, len(train_split))
        for start in range(0, total, 1000):
            batch = train_split[start : min(start + 1000, total)]
            if texts_of is not None:
                yield texts_of(batch)
            for column in text_columns or []:
                yield [t for t in batch[column] if isinstance(t, str)]

    logger.info("Training a byte-level BPE tokenizer (vocab %d)", recipe.tokenizer.vocab_size)
    return train_tokenizer(texts(), recipe.tokenizer.vocab_size, recipe.tokenizer.min_frequency)


def build_model(recipe: Recipe, tokenizer, auto_class=AutoModelForCausalLM, **config_fields):
    """A fresh model of the recipe's architecture sized to the tokenizer, or `model.name_or_path`."""
    special = special_token_ids(tokenizer)
    if recipe.model.name_or_path is not None:
        try:
            model = auto_class.from_pretrained(recipe.model.name_or_path, use_safetensors=True, **config_fields)
        except (OSError, ValueError) as error:
            raise RecipeError(f"model.name_or_path: cannot load {recipe.model.name_or_path}: {error}") from None
        if model.config.vocab_size < len(tokenizer):
            raise RecipeError(
                f"The tokenizer has {len(tokenizer)} tokens but the model {recipe.model.name_or_path} only "
                f"{model.config.vocab_size}; use the tokenizer saved with the model."
            )
        return model
    try:
        config = build_config(recipe, vocab_size=len(tokenizer), special=special)
        for key, value in config_fields.items():
            setattr(config, key, value)
        config.check_fields()
        return auto_class.from_config(config)
    except ValueError as error:
        raise RecipeError(f"model: {error}") from None


def fit_lengths(model, data, keys: tuple[str, ...], truncate: bool) -> None:
    """Families with learned positions (CNN) see at most `max_position_embeddings` tokens. Where examples are
    truncated anyway (task inputs), a longer `data.<key>` is lowered to the limit with a warning; where the
    length is the unit of training (pretraining blocks), it is an error. The Transformer (rotary) and the
    RNN have no length limit."""
    config = model.config
    if "cnn" not in config.used_backbones():
        return
    limit = config.max_position_embeddings
    for key in keys:
        length = getattr(data, key)
        if length <= limit:
            continue
        if not truncate:
            raise RecipeError(
                f"data.{key}={length} exceeds the model's max_position_embeddings={limit} (the convolutional "
                "family has learned positions); lower it or raise model.max_position_embeddings."
            )
        logger.warning("data.%s=%d exceeds max_position_embeddings=%d of the convolutional model: inputs are "
                       "truncated to %d tokens.", key, length, limit, limit)
        setattr(data, key, limit)


def set_generation_config(model, recipe: Recipe, tokenizer) -> None:
    special = special_token_ids(tokenizer)
    model.generation_config = GenerationConfig(
        **generation_fields(recipe.generation, recipe.task), **special,
        decoder_start_token_id=getattr(model.config, "decoder_start_token_id", None),
    )


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
    - `Trainer.push_to_hub` uploads hf_llm's model card instead of writing transformers' own;
    - `max_minutes` (a wall-time budget) and `early_stopping_patience` (transformers' `EarlyStoppingCallback`)
      as callbacks.
    """

    def __init__(self, *args, on_nonfinite_loss: str = "stop", max_minutes: float | None = None,
                 early_stopping_patience: int | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.on_nonfinite_loss = on_nonfinite_loss
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
        from .cards import write_card

        write_card(self.args.output_dir, self.hub_model_id, self.model)


class HfLlmTrainer(HfLlmTrainerMixin, Trainer):
    pass


class HfLlmSeq2SeqTrainer(HfLlmTrainerMixin, Seq2SeqTrainer):
    pass


def trainer_options(recipe: Recipe) -> dict:
    return {"on_nonfinite_loss": recipe.training.get("on_nonfinite_loss", "stop"),
            "max_minutes": recipe.training.get("max_minutes"),
            "early_stopping_patience": recipe.training.get("early_stopping_patience")}


def best_checkpoint_summary(trainer: Trainer) -> dict[str, Any]:
    """Which checkpoint the run kept (`load_best_model_at_end`), from the Trainer's state; empty if none."""
    state = trainer.state
    if not trainer.args.load_best_model_at_end or state.best_model_checkpoint is None:
        return {}
    metric = trainer.args.metric_for_best_model
    return {"best_step": state.best_global_step, "best_metric": state.best_metric,
            "metric_for_best_model": metric if metric.startswith("eval_") else f"eval_{metric}",
            "best_model_checkpoint": state.best_model_checkpoint, "last_step": state.global_step}


def finish_run(trainer: Trainer, tokenizer, recipe: Recipe, train_result, metrics: dict, generation_config=None) -> dict:
    """Everything after the last evaluation: final model, metrics files, state, loss curve, model card, and —
    with training.push_to_hub — the Trainer's own push (which uploads the card above)."""
    from .cards import write_card

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
            averaged = average_at_the_end(trainer, last)
        write_card(output_dir, trainer.hub_model_id, trainer.model)
    if trainer.args.push_to_hub:
        trainer.push_to_hub(commit_message="hf-llm: end of training")  # every rank calls it; only the main one pushes
    return {**train_result.metrics, **metrics, **best, **averaged, "output_dir": output_dir}


def average_at_the_end(trainer: Trainer, last: int) -> dict[str, Any]:
    """`training.average_last_checkpoints`: average the last checkpoints into `output_dir/average-last-N` and
    score that model on the validation data; its metrics are saved as `averaged_*` in all_results.json."""
    from .averaging import average_checkpoints
    from .evaluation import evaluate_target

    folder = average_checkpoints(trainer.args.output_dir, last)
    evaluated = evaluate_target(folder)
    scores = {f"averaged_{key}": value for key, value in evaluated.items() if key.startswith("eval_") or key == "perplexity"}
    scores.update(averaged_model=folder, averaged_checkpoints=evaluated["averaged_checkpoints"])
    trainer.save_metrics("averaged", scores)
    return scores


def train_and_evaluate(trainer: Trainer, resume: str | None, with_perplexity: bool = True,
                       final_evaluation: Callable[[Trainer], dict] | None = None) -> tuple:
    """Train, then evaluate the final model (the best checkpoint's with `load_best_model_at_end`, by
    `final_evaluation(trainer)` where given); `init_*` metrics come from the evaluation the Trainer runs
    before the first step.

    That first evaluation is the Trainer's `eval_on_start` (set by `training_arguments(..., eval_on_start=...)`),
    which runs after the model is wrapped for distributed training. A `trainer.evaluate()` before
    `trainer.train()` would mark the model as prepared, and accelerate then skips the DDP wrapper: the
    replicas silently drift apart (seen with transformers 5.24 / accelerate 1.15).
    """
    train_result = trainer.train(resume_from_checkpoint=resume)
    metrics = final_evaluation(trainer) if final_evaluation is not None else trainer.evaluate()
    start = next((e for e in trainer.state.log_history if e.get("step") == 0 and "eval_loss" in e), None)
    for key, value in (start or {}).items():
        if key.startswith("eval_"):
            metrics[f"init_{key}"] = value
    if with_perplexity:
        metrics["perplexity"] = perplexity(metrics["eval_loss"])
        if start:
            metrics["init_perplexity"] = perplexity(start["eval_loss"])
    return train_result, metrics


def perplexity(loss: float) -> float:
    return math.exp(loss) if loss < 50 else float("inf")


@torch.no_grad()
def sample(model, tokenizer, recipe: Recipe) -> list[str]:
    """Generate from each of the recipe's prompts with the saved generation config."""
    model.eval()
    torch.manual_seed(recipe.generation.seed)
    texts = []
    for prompt in recipe.generation.prompts:
        if model.config.is_encoder_decoder:
            from .pipelines import encode_sources

            ids = torch.tensor(encode_sources(tokenizer, [prompt], recipe.data.source_prefix or ""), device=model.device)
            inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
        else:
            inputs = tokenizer(prompt, return_tensors="pt", add_special_tokens=False).to(model.device)
        output = model.generate(**inputs)
        new = output[0] if model.config.is_encoder_decoder else output[0, inputs["input_ids"].shape[1] :]
        continuation = tokenizer.decode(new, skip_special_tokens=True)
        texts.append(continuation if model.config.is_encoder_decoder else prompt + continuation)
    return texts


def run(recipe: Recipe, overwrite: bool = False) -> dict[str, Any]:
    """Train as the recipe says; return the final metrics."""
    if recipe.task != "causal_lm":
        from .tasks import run_task

        return run_task(recipe, overwrite)
    return run_causal_lm(recipe, overwrite)


def run_causal_lm(recipe: Recipe, overwrite: bool = False) -> dict[str, Any]:
    data = recipe.data
    resume = prepare_output_dir(recipe.training, overwrite)
    seed = recipe.training.get("seed", 42)
    set_seed(seed)

    raw = load_raw(data, seed)
    require_columns(raw, [data.text_column], {data.text_column: "data.text_column"})
    tokenizer = get_tokenizer(recipe, raw["train"], [data.text_column])
    model = build_model(recipe, tokenizer)
    fit_lengths(model, data, ("block_size",), truncate=False)
    set_generation_config(model, recipe, tokenizer)
    blocks = tokenize_for_causal_lm(raw, tokenizer, data)
    args = training_arguments(recipe, eval_on_start=resume is None, metric_for_best_model=BEST_METRIC)

    trainer = HfLlmTrainer(
        model=model, args=args, train_dataset=blocks["train"], eval_dataset=blocks["validation"],
        data_collator=default_data_collator, processing_class=tokenizer, **trainer_options(recipe),
    )
    os.makedirs(args.output_dir, exist_ok=True)
    if args.should_save:
        dump_recipe(recipe, os.path.join(args.output_dir, "recipe.yaml"))
    train_result, metrics = train_and_evaluate(trainer, resume)
    samples = sample(model, tokenizer, recipe) if args.should_save else []
    if args.should_save:
        with open(os.path.join(args.output_dir, "samples.json"), "w") as f:
            json.dump(samples, f, indent=2)
    return {**finish_run(trainer, tokenizer, recipe, train_result, metrics), "samples": samples}
