"""Recipes: YAML files whose sections map onto dataclasses, with `section.key=value` overrides.

```yaml
description: one line shown by `hf-llm recipes`
task: causal_lm            # what the run trains (see hf_llm.tasks)
model:     {...}           # ModelArgs fields, plus any HfLlmConfig field (hidden_size, rnn_cell, ...)
tokenizer: {...}           # TokenizerArgs
data:      {...}           # DataArgs
generation: {...}          # GenerationArgs: the sample printed at the end, saved as generation_config
training:  {...}           # transformers.TrainingArguments fields, unchanged
```

Every problem — an unknown section or key, a value of the wrong type, a missing file — raises
`RecipeError` naming the key or the path, before anything is written.
"""

from __future__ import annotations

import dataclasses
import enum
import inspect
import os
import pathlib
import re
import types
import typing
from dataclasses import dataclass, field
from typing import Any

import torch
import yaml

from .modeling.configuration_hf_llm import HfLlmConfig

RECIPES_DIR = pathlib.Path(__file__).resolve().parent.parent / "recipes"
TASKS = ("causal_lm", "translation", "summarization", "dialogue", "classification")
DEFAULT_DATASETS = {
    "causal_lm": "hf_llm:python_docs",
    "translation": "hf_llm:demo_translation",
    "summarization": "hf_llm:demo_summarization",
    "dialogue": "hf_llm:demo_dialogue",
    "classification": "hf_llm:demo_sentiment",
}


class RecipeError(ValueError):
    """A problem in a recipe or its inputs that the user can fix; the CLI prints it without a traceback."""


@dataclass
class ModelArgs:
    """Which model to train. Any other key is an `HfLlmConfig` field (hidden_size, rnn_cell, ...)."""

    name_or_path: str | None = None  # start from this checkpoint (a folder, or a Hub id when online)
    preset: str | None = None  # a named architecture from hf_llm.presets
    backbone: str | None = None
    encoder_backbone: str | None = None
    decoder_backbone: str | None = None
    # A seq2seq task started from a causal-LM checkpoint (name_or_path): which sides take its weights.
    warm_start: str = "both"  # both | encoder | decoder
    config: dict[str, Any] = field(default_factory=dict)  # the HfLlmConfig fields given in the section


@dataclass
class TokenizerArgs:
    name_or_path: str | None = None  # an existing tokenizer; otherwise one is trained on the training text
    vocab_size: int = 8192
    min_frequency: int = 2
    max_training_documents: int | None = None


@dataclass
class DataArgs:
    dataset_name: str | None = None  # a Hub dataset, or "hf_llm:<name>" for a bundled one
    dataset_config: str | None = None
    train_file: str | None = None
    validation_file: str | None = None
    text_column: str | None = None  # default: "text" ("document" for summarization)
    block_size: int = 256
    packing: bool = False  # keep document boundaries inside blocks (no attention / state / receptive field across)
    validation_split_percentage: float = 5.0
    streaming: bool = False
    max_train_samples: int | None = None
    max_eval_samples: int | None = None
    preprocessing_num_workers: int | None = None
    # Task fields (fine-tuning recipes).
    summary_column: str = "summary"
    source_lang: str | None = None
    target_lang: str | None = None
    source_prefix: str | None = None
    label_column: str = "label"
    messages_column: str = "messages"
    max_source_length: int = 256
    max_target_length: int = 128


@dataclass
class GenerationArgs:
    prompts: list[str] = field(default_factory=lambda: ["Return the"])
    max_new_tokens: int = 40
    do_sample: bool | None = None  # default: sample for causal_lm / dialogue, greedy or beam for the others
    temperature: float = 0.8
    top_k: int = 50
    top_p: float = 0.95
    num_beams: int = 1
    seed: int = 0


def generation_fields(g: GenerationArgs, task: str = "causal_lm") -> dict:
    """GenerationConfig fields of the generation section (sampling knobs only when sampling)."""
    do_sample = g.do_sample if g.do_sample is not None else task in ("causal_lm", "dialogue")
    fields = dict(max_new_tokens=g.max_new_tokens, do_sample=do_sample, num_beams=g.num_beams)
    if do_sample:
        fields.update(temperature=g.temperature, top_k=g.top_k, top_p=g.top_p)
    return fields


@dataclass
class Recipe:
    path: str | None
    description: str
    task: str
    model: ModelArgs
    tokenizer: TokenizerArgs
    data: DataArgs
    generation: GenerationArgs
    training: dict[str, Any]  # TrainingArguments fields; resume_from_checkpoint may also be true

    def to_dict(self) -> dict:
        model = {k: v for k, v in dataclasses.asdict(self.model).items() if k != "config" and v is not None}
        model.update(self.model.config)
        return {
            "description": self.description,
            "task": self.task,
            "model": model,
            "tokenizer": dataclasses.asdict(self.tokenizer),
            "data": dataclasses.asdict(self.data),
            "generation": dataclasses.asdict(self.generation),
            "training": dict(self.training),
        }


SECTIONS = {"model": ModelArgs, "tokenizer": TokenizerArgs, "data": DataArgs, "generation": GenerationArgs}
TOP_LEVEL = ("description", "task", "model", "tokenizer", "data", "generation", "training")
# HfLlmConfig fields that come from the tokenizer, not from a recipe.
# Keys of the `training` section that hf_llm handles itself (not TrainingArguments fields).
HF_LLM_TRAINING_KEYS = ("resume_from_checkpoint", "on_nonfinite_loss", "max_minutes", "early_stopping_patience",
                        "average_last_checkpoints")
# Defaults of hf_llm's runs where TrainingArguments' own do not suit (the recipe's values win).
TRAINING_DEFAULTS = dict(report_to="none", logging_steps=10, save_total_limit=2, per_device_train_batch_size=8,
                         per_device_eval_batch_size=8, dataloader_pin_memory=torch.cuda.is_available(),
                         include_num_input_tokens_seen=True)
# A budget given on the command line replaces the recipe's: `training.num_train_epochs=3` on a recipe with
# `max_steps: 800` means three epochs (for TrainingArguments, max_steps would win).
BUDGET_KEYS = ("max_steps", "num_train_epochs")
TOKENIZER_FIELDS = {"vocab_size", "pad_token_id", "bos_token_id", "eos_token_id", "decoder_start_token_id"}


# --------------------------------------------------------------------------------------------------
# Type checking of YAML values against dataclass annotations
def matches(value: Any, annotation: Any) -> bool:
    """Whether a YAML value fits a type annotation (ints are accepted where floats are expected)."""
    if annotation is Any or annotation is inspect.Parameter.empty:
        return True
    if annotation is None or annotation is type(None):
        return value is None
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(annotation)
        enums = [a for a in args if isinstance(a, type) and issubclass(a, enum.Enum)]
        if enums and isinstance(value, str):  # `SomeEnum | str` fields take one of the enum's names
            return any(matches(value, e) for e in enums)
        return any(matches(value, arg) for arg in args)
    if origin is typing.Literal:
        return value in typing.get_args(annotation)
    if origin in (list, tuple):
        args = typing.get_args(annotation)
        return isinstance(value, list) and (not args or all(matches(v, args[0]) for v in value))
    if origin is dict:
        return isinstance(value, dict)
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return value in {member.value for member in annotation} or isinstance(value, annotation)
    if annotation is bool:
        return isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if isinstance(annotation, type):
        return isinstance(value, annotation)
    return True


def describe_type(annotation: Any) -> str:
    enums = [a for a in typing.get_args(annotation) if isinstance(a, type) and issubclass(a, enum.Enum)]
    if enums:
        return f"one of {[member.value for member in enums[0]]}"
    text = str(annotation).replace("typing.", "").replace("<class '", "").replace("'>", "")
    return text.replace("NoneType", "None")


def config_field_types() -> dict[str, Any]:
    """HfLlmConfig.__init__ parameters (the recipe's `model` keys besides ModelArgs) and their types."""
    hints = typing.get_type_hints(HfLlmConfig.__init__)
    parameters = inspect.signature(HfLlmConfig.__init__).parameters
    return {
        name: hints.get(name, Any)
        for name, p in parameters.items()
        if name not in ("self", "kwargs") and p.kind is not p.VAR_KEYWORD and name not in TOKENIZER_FIELDS
    }


def arguments_class(task: str):
    """TrainingArguments, or Seq2SeqTrainingArguments (generation during evaluation) for generative tasks."""
    from transformers import Seq2SeqTrainingArguments, TrainingArguments

    return Seq2SeqTrainingArguments if task in ("translation", "summarization", "dialogue") else TrainingArguments


def training_field_types(task: str = "causal_lm") -> dict[str, Any]:
    cls = arguments_class(task)
    hints = typing.get_type_hints(cls)
    fields = {f.name: hints.get(f.name, Any) for f in dataclasses.fields(cls) if f.init}
    fields["resume_from_checkpoint"] = str | bool | None  # true: the last checkpoint in output_dir
    fields["on_nonfinite_loss"] = typing.Literal["stop", "skip"]
    fields["max_minutes"] = float | None  # stop training after this much wall time (the budget of `hf-llm compare`)
    fields["early_stopping_patience"] = int | None  # stop after this many evaluations without a better metric
    fields["average_last_checkpoints"] = int | None  # average the weights of the last N checkpoints at the end
    return fields


def training_arguments_fields(training: dict[str, Any]) -> dict[str, Any]:
    """The TrainingArguments fields of a `training` section: hf_llm's own keys dropped and, where the best
    checkpoint is kept (`load_best_model_at_end`), evaluation aligned with saving unless the recipe says
    otherwise: the same strategy, and `eval_steps` = `save_steps` (TrainingArguments would take `logging_steps`)."""
    fields = {key: value for key, value in training.items() if key not in HF_LLM_TRAINING_KEYS}
    if fields.get("load_best_model_at_end"):
        fields.setdefault("eval_strategy", fields.get("save_strategy", "steps"))
        if fields["eval_strategy"] == "steps" and fields.get("eval_steps") is None:
            fields["eval_steps"] = fields.get("save_steps", 500)
    return fields


def check_section(section: str, values: Any, allowed: dict[str, Any]) -> None:
    if not isinstance(values, dict):
        raise RecipeError(f"Section '{section}' must be a mapping of keys to values, not {type(values).__name__}.")
    for key, value in values.items():
        if key not in allowed:
            close = [k for k in allowed if k.startswith(str(key)[:4])][:5]
            hint = f" Did you mean one of {close}?" if close else ""
            raise RecipeError(f"Unknown key '{section}.{key}'.{hint} See `hf-llm train --help` for the recipe format.")
        if not matches(value, allowed[key]):
            raise RecipeError(
                f"'{section}.{key}' must be {describe_type(allowed[key])}, got {value!r} ({type(value).__name__})."
            )


# --------------------------------------------------------------------------------------------------
def parse_override(text: str) -> tuple[str, str, Any]:
    """'section.key=value' -> (section, key, YAML-parsed value)."""
    if "=" not in text or "." not in text.split("=", 1)[0]:
        raise RecipeError(f"Override {text!r} must look like section.key=value, e.g. training.max_steps=100.")
    dotted, raw = text.split("=", 1)
    section, key = dotted.split(".", 1)
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    return section.strip(), key.strip(), value


def resolve_recipe_path(name_or_path: str) -> pathlib.Path:
    """A recipe file, or the name of a bundled recipe (`quickstart` -> recipes/quickstart.yaml)."""
    path = pathlib.Path(name_or_path)
    if path.is_file():
        return path
    bundled = RECIPES_DIR / (name_or_path if name_or_path.endswith((".yaml", ".yml")) else f"{name_or_path}.yaml")
    if bundled.is_file():
        return bundled
    available = ", ".join(sorted(p.stem for p in RECIPES_DIR.glob("*.yaml"))) if RECIPES_DIR.is_dir() else "none"
    raise RecipeError(f"Recipe file not found: {name_or_path} (bundled recipes: {available}).")


def load_recipe(name_or_path: str | None, overrides: list[str] | None = None, raw: dict | None = None) -> Recipe:
    """Read, override and validate a recipe. Nothing is written."""
    path = None
    if raw is None:
        path = resolve_recipe_path(name_or_path)
        try:
            raw = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as error:
            raise RecipeError(f"{path} is not valid YAML: {error}") from None
    if not isinstance(raw, dict):
        raise RecipeError(f"{path or 'The recipe'} must be a YAML mapping with sections {list(TOP_LEVEL)}.")
    raw = {k: (dict(v) if isinstance(v, dict) else v) for k, v in raw.items()}
    for override in overrides or []:
        section, key, value = parse_override(override)
        if section not in TOP_LEVEL or section in ("description", "task"):
            raise RecipeError(f"Unknown section '{section}' in override {override!r}; sections are "
                              f"{[s for s in TOP_LEVEL if s not in ('description', 'task')]}.")
        raw.setdefault(section, {})
        if not isinstance(raw[section], dict):
            raw[section] = {}
        if section == "training" and key in BUDGET_KEYS:
            for other in BUDGET_KEYS:
                raw[section].pop(other, None)
        raw[section][key] = value

    unknown = [key for key in raw if key not in TOP_LEVEL]
    if unknown:
        raise RecipeError(f"Unknown section '{unknown[0]}'; a recipe has the sections {list(TOP_LEVEL)}.")
    task = raw.get("task", "causal_lm")
    if task not in TASKS:
        raise RecipeError(f"Unknown task {task!r}; tasks are {list(TASKS)}.")

    sections = {}
    for name, cls in SECTIONS.items():
        values = raw.get(name) or {}
        hints = typing.get_type_hints(cls)
        if name == "model":
            config_types = config_field_types()
            allowed = {**{k: v for k, v in hints.items() if k != "config"}, **config_types}
            check_section(name, values, allowed)
            own = {k: v for k, v in values.items() if k in hints and k != "config"}
            sections[name] = ModelArgs(**own, config={k: v for k, v in values.items() if k in config_types and k not in hints})
        else:
            check_section(name, values, hints)
            sections[name] = cls(**values)
    training = dict(raw.get("training") or {})
    check_section("training", training, training_field_types(task))
    if not training.get("output_dir"):
        training["output_dir"] = str(pathlib.Path("runs") / (path.stem if path else "run"))

    recipe = Recipe(
        path=str(path) if path else None,
        description=str(raw.get("description", "")),
        task=task,
        training=training,
        **sections,
    )
    validate_inputs(recipe)
    return recipe


def check_pretrained_path(key: str, name: str) -> None:
    """An existing folder, or something shaped like a Hub id (checked when loaded; offline it fails there)."""
    if os.path.isdir(os.path.expanduser(name)):
        return
    if re.fullmatch(r"[A-Za-z0-9_][\w.-]*(/[\w.-]+)?", name):
        return
    raise RecipeError(f"{key}: folder not found: {name}")


def validate_inputs(recipe: Recipe) -> None:
    """Files that must exist, values that must be in range: checked before anything runs."""
    data, model, tokenizer = recipe.data, recipe.model, recipe.tokenizer
    for key in ("train_file", "validation_file"):
        path = getattr(data, key)
        if path is not None and not os.path.isfile(os.path.expanduser(path)):
            raise RecipeError(f"data.{key}: file not found: {path}")
    if data.text_column is None:
        data.text_column = "document" if recipe.task == "summarization" else "text"
    if data.train_file is None and data.dataset_name is None:
        data.dataset_name = DEFAULT_DATASETS[recipe.task]  # bundled data: every task runs offline
    for section, args in (("model", model), ("tokenizer", tokenizer)):
        if args.name_or_path is not None:
            check_pretrained_path(f"{section}.name_or_path", args.name_or_path)
    for key in ("block_size", "max_source_length", "max_target_length"):
        if getattr(data, key) <= 0:
            raise RecipeError(f"data.{key} must be a positive integer, got {getattr(data, key)}.")
    if not 0 < data.validation_split_percentage < 100:
        raise RecipeError(f"data.validation_split_percentage must be in (0, 100), got {data.validation_split_percentage}.")
    if tokenizer.vocab_size < 300 and tokenizer.name_or_path is None:
        raise RecipeError(f"tokenizer.vocab_size must be at least 300 for a byte-level BPE, got {tokenizer.vocab_size}.")
    if model.warm_start not in ("both", "encoder", "decoder"):
        raise RecipeError(f"model.warm_start must be 'both', 'encoder' or 'decoder', got {model.warm_start!r}.")
    if model.preset is not None:
        from .presets import PRESETS

        if model.preset not in PRESETS:
            raise RecipeError(f"model.preset: unknown preset {model.preset!r}; presets are {sorted(PRESETS)}.")
    if recipe.task == "causal_lm" and model.config.get("is_encoder_decoder"):
        raise RecipeError("task causal_lm trains a decoder-only model but model.is_encoder_decoder is true; use a "
                          "seq2seq task (translation, summarization, dialogue) for an encoder-decoder.")
    if model.name_or_path is None:
        try:
            build_config(recipe, vocab_size=max(tokenizer.vocab_size, 300))  # validates the architecture fields
        except ValueError as error:
            raise RecipeError(f"model: {error}") from None
    g = recipe.generation
    for key, ok, rule in (("num_beams", g.num_beams >= 1, "at least 1"), ("max_new_tokens", g.max_new_tokens >= 1, "at least 1"),
                          ("temperature", g.temperature > 0, "positive"), ("top_p", 0 < g.top_p <= 1, "in (0, 1]"),
                          ("top_k", g.top_k >= 0, "0 or more")):
        if not ok:
            raise RecipeError(f"generation.{key} must be {rule}, got {getattr(g, key)}.")
    from transformers import GenerationConfig

    try:
        GenerationConfig(**generation_fields(recipe.generation, recipe.task)).validate(strict=True)
    except ValueError as error:
        raise RecipeError(f"generation: {error}") from None
    try:  # TrainingArguments checks its own combinations (eval/save strategies, ...); nothing is written
        arguments = arguments_class(recipe.task)(**training_arguments_fields({**TRAINING_DEFAULTS, **recipe.training}))
    except (ValueError, TypeError) as error:
        raise RecipeError(f"training: {error}") from None
    validate_training_keys(recipe, arguments)


def validate_training_keys(recipe: Recipe, arguments) -> None:
    """hf_llm's own `training` keys, against the TrainingArguments they come with."""
    training = recipe.training
    if recipe.data.streaming and arguments.max_steps <= 0:
        raise RecipeError("data.streaming=true has no length to count epochs in: give training.max_steps.")
    patience = training.get("early_stopping_patience")
    if patience is not None:
        if patience < 1:
            raise RecipeError(f"training.early_stopping_patience must be at least 1, got {patience}.")
        if not arguments.load_best_model_at_end:
            raise RecipeError("training.early_stopping_patience needs training.load_best_model_at_end=true (and "
                              "evaluation during training), so that the run ends on its best checkpoint.")
    last = training.get("average_last_checkpoints")
    if last is not None:
        if last < 2:
            raise RecipeError(f"training.average_last_checkpoints must be at least 2, got {last}.")
        if arguments.save_strategy == "no":
            raise RecipeError("training.average_last_checkpoints needs checkpoints: training.save_strategy is 'no'.")
        # With load_best_model_at_end the best checkpoint is kept besides the most recent ones.
        needed = last + int(bool(arguments.load_best_model_at_end))
        limit = arguments.save_total_limit
        if limit is not None and 0 < limit < needed:
            raise RecipeError(f"training.average_last_checkpoints={last} needs training.save_total_limit of at least "
                              f"{needed} (or null), got {limit}.")


def build_config(recipe: Recipe, vocab_size: int, special: dict[str, int] | None = None) -> HfLlmConfig:
    """The model config a recipe asks for: preset, then backbone fields, then any other config field."""
    from .presets import PRESETS

    model = recipe.model
    fields: dict[str, Any] = dict(PRESETS[model.preset]) if model.preset else {}
    for key in ("backbone", "encoder_backbone", "decoder_backbone"):
        if getattr(model, key) is not None:
            fields[key] = getattr(model, key)
    fields.update(model.config)
    if recipe.task in ("translation", "summarization") or (recipe.task == "dialogue" and fields.get("is_encoder_decoder")):
        fields["is_encoder_decoder"] = True
    special = special or {"pad_token_id": 0, "bos_token_id": 1, "eos_token_id": 2}
    fields.update(special, vocab_size=vocab_size)
    if fields.get("is_encoder_decoder"):
        fields.setdefault("decoder_start_token_id", special["bos_token_id"])
    return HfLlmConfig(**fields)


def dump_recipe(recipe: Recipe, path: str | os.PathLike) -> None:
    pathlib.Path(path).write_text(yaml.safe_dump(recipe.to_dict(), sort_keys=False))
