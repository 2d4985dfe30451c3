"""The recipe format: its sections as dataclasses, the checks of YAML values against their types, and the
translation of a recipe into an `HfLlmConfig`, `TrainingArguments` fields and `GenerationConfig` fields.

Nothing here knows a task: what differs between tasks (default data, arguments class, sampling) is
passed in by the caller, which asks the task (`hf_llm.tasks`). Reading a recipe file is `hf_llm.recipes`.
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
    attn_implementation: str | None = None  # transformers' switch: sdpa (the default) | eager
    dtype: str | None = None  # the weights' dtype: float32 (default) | bfloat16 | float16 (mixed precision: training.bf16)
    config: dict[str, Any] = field(default_factory=dict)  # the HfLlmConfig fields given in the section


@dataclass
class TokenizerArgs:
    name_or_path: str | None = None  # an existing tokenizer; otherwise one is trained on the training text
    vocab_size: int = 8192
    min_frequency: int = 2
    # Train the tokenizer on the first N training examples (all of them when None; a streamed dataset has no
    # end to reach, so it reads STREAMED_TOKENIZER_EXAMPLES when None).
    max_training_documents: int | None = None


@dataclass
class DataArgs:
    # A Hub dataset, a local folder laid out like one (data/<split>-00000-of-00001.parquet, ...), a folder
    # written by `save_to_disk`, or "hf_llm:<name>" for a bundled one.
    dataset_name: str | None = None
    dataset_config_name: str | None = None  # the dataset's configuration (run_clm's name), e.g. "3.0.0"
    dataset_config: str | None = None  # the same; an older name kept as an alias
    dataset_revision: str | None = None  # a branch, tag or commit of a Hub dataset, e.g. "refs/convert/parquet"
    # The splits to train and validate on (e.g. "train_sft" / "test_sft"). Without a "validation" split the first
    # of "valid", "dev", "test" is used, else validation_split_percentage of the train split is carved off.
    train_split: str = "train"
    validation_split: str = "validation"
    train_file: str | None = None
    validation_file: str | None = None
    text_column: str | None = None  # default: the task's ("text"; "document" for summarization)
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

    def __post_init__(self) -> None:
        if (self.dataset_config is not None and self.dataset_config_name is not None
                and self.dataset_config != self.dataset_config_name):
            raise RecipeError(f"data.dataset_config_name={self.dataset_config_name!r} and data.dataset_config="
                              f"{self.dataset_config!r} name two configurations; give one (dataset_config is an "
                              "alias of dataset_config_name).")

    @property
    def config_name(self) -> str | None:
        """The dataset configuration, whichever of `dataset_config_name` / `dataset_config` gave it."""
        return self.dataset_config_name if self.dataset_config_name is not None else self.dataset_config


@dataclass
class GenerationArgs:
    prompts: list[str] = field(default_factory=lambda: ["Return the"])
    max_new_tokens: int = 40
    do_sample: bool | None = None  # default: the task's (sampling for text continuation and chat)
    temperature: float = 0.8
    top_k: int = 50
    top_p: float = 0.95
    num_beams: int = 1
    seed: int = 0
    # "static": fixed-size caches for every family (saved in the model's generation config); None: transformers'
    # default (a dynamic cache)
    cache_implementation: str | None = None
    # compile the decoding step (torch.compile, no graph break) wherever this run generates; implies a static cache
    compile: bool = False


CACHE_IMPLEMENTATIONS = (None, "dynamic", "static")


def compile_config():
    """transformers' `CompileConfig` for a compiled decoding step: the whole step as one graph (`fullgraph=True`), CUDA
    graphs on CUDA (`mode="reduce-overhead"`, transformers' default), and compiled on any device (transformers
    compiles on accelerators only unless `_compile_all_devices` is set, as its own tests do)."""
    from transformers import CompileConfig

    config = CompileConfig(fullgraph=True)
    config._compile_all_devices = True
    return config


@dataclass
class PeftArgs:
    """A LoRA adapter trained instead of the whole model (the `peft:` section; peft's `LoraConfig` fields, the same
    defaults). `all-linear` adapts every linear layer except the output head, the recurrent family's LSTM/GRU
    weights included (docs/ARCHITECTURE.md, "PEFT")."""

    r: int = 8
    lora_alpha: int = 8
    lora_dropout: float = 0.0
    target_modules: str | list[str] | None = "all-linear"
    target_parameters: list[str] | None = None
    exclude_modules: str | list[str] | None = None
    modules_to_save: list[str] | None = None
    bias: typing.Literal["none", "all", "lora_only"] = "none"  # which biases train besides the adapter
    use_rslora: bool = False
    use_dora: bool = False
    init_lora_weights: bool | str = True


def lora_config_fields(p: PeftArgs) -> dict[str, Any]:
    """The `LoraConfig` fields of a `peft:` section."""
    return dataclasses.asdict(p)


def generation_fields(g: GenerationArgs, sample_by_default: bool) -> dict:
    """GenerationConfig fields of the generation section (sampling knobs only when sampling); `do_sample` unset
    means the task's default (`Task.samples_by_default`)."""
    do_sample = g.do_sample if g.do_sample is not None else sample_by_default
    fields = dict(max_new_tokens=g.max_new_tokens, do_sample=do_sample, num_beams=g.num_beams)
    if g.cache_implementation is not None or g.compile:
        fields["cache_implementation"] = g.cache_implementation or "static"
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
    peft: PeftArgs | None = None  # a LoRA adapter (the `peft:` section); None: the whole model trains

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
            **({"peft": dataclasses.asdict(self.peft)} if self.peft is not None else {}),
        }


SECTIONS = {"model": ModelArgs, "tokenizer": TokenizerArgs, "data": DataArgs, "generation": GenerationArgs,
            "peft": PeftArgs}
OPTIONAL_SECTIONS = ("peft",)  # absent: None in the Recipe (present, even empty: the section's defaults)
TOP_LEVEL = ("description", "task", "model", "tokenizer", "data", "generation", "training", "peft")
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
DTYPES = ("float32", "bfloat16", "float16")  # model.dtype, hf-llm generate --dtype

TOKENIZER_DERIVED = {  # HfLlmConfig fields a recipe does not set: the tokenizer decides them
    "vocab_size": "its length; set tokenizer.vocab_size, or a tokenizer.name_or_path",
    "pad_token_id": "its pad token", "bos_token_id": "its bos token", "eos_token_id": "its eos token",
    "decoder_start_token_id": "the bos token of an encoder-decoder",
}
TOKENIZER_FIELDS = set(TOKENIZER_DERIVED)


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


def training_field_types(arguments_class: type) -> dict[str, Any]:
    """The keys a `training` section may hold: the fields of the task's TrainingArguments class, plus hf_llm's own."""
    hints = typing.get_type_hints(arguments_class)
    fields = {f.name: hints.get(f.name, Any) for f in dataclasses.fields(arguments_class) if f.init}
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
        if key not in allowed and section == "model" and key in TOKENIZER_FIELDS:
            raise RecipeError(f"'model.{key}' is not set by a recipe: the model takes it from the tokenizer "
                              f"({TOKENIZER_DERIVED[key]}).")
        if key not in allowed:
            close = [k for k in allowed if k.startswith(str(key)[:4])][:5]
            hint = f" Did you mean one of {close}?" if close else ""
            raise RecipeError(f"Unknown key '{section}.{key}'.{hint} See `hf-llm train --help` for the recipe format.")
        if not matches(value, allowed[key]):
            hint = " (booleans are true / false)" if isinstance(value, str) and matches(True, allowed[key]) else ""
            raise RecipeError(
                f"'{section}.{key}' must be {describe_type(allowed[key])}, got {value!r} ({type(value).__name__}){hint}."
            )


# --------------------------------------------------------------------------------------------------
class RecipeLoader(yaml.SafeLoader):
    """YAML with YAML 1.2's booleans: only true / false (any case) are booleans; `no`, `off`, `yes`, `on` stay
    strings, so transformers' own values (`eval_strategy: no`, `save_strategy: no`) mean what they say."""


RecipeLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
RecipeLoader.add_implicit_resolver("tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
                                   list("tTfF"))


def load_yaml(text: str) -> Any:
    """A recipe's (or an override's) YAML, with YAML 1.2 booleans (RecipeLoader)."""
    return yaml.load(text, Loader=RecipeLoader)


def parse_override(text: str) -> tuple[str, str, Any]:
    """'section.key=value' -> (section, key, YAML-parsed value); `typed_value` then gives the value the type
    its field declares."""
    if "=" not in text or "." not in text.split("=", 1)[0]:
        raise RecipeError(f"Override {text!r} must look like section.key=value, e.g. training.max_steps=100.")
    dotted, raw = text.split("=", 1)
    section, key = dotted.split(".", 1)
    try:
        value = load_yaml(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    return section.strip(), key.strip(), value


def typed_value(value: Any, text: str, annotation: Any) -> Any:
    """An override's value as its field declares it: YAML reads `run_name=2024` as a number and
    `hub_model_id=null` as None (a field that takes text, and not what YAML made of it, gets the text itself), and
    `learning_rate=1e-3` as text (a float field gets the number)."""
    if annotation is None or matches(value, annotation):
        return value
    if matches(text, annotation):
        return text
    if isinstance(value, str) and matches(1.0, annotation):  # YAML 1.1 reads `1e-3` as text: a float field's number
        try:
            return float(text)
        except ValueError:
            pass
    return value


def build_config(recipe: Recipe, vocab_size: int, special: dict[str, int] | None = None,
                 is_encoder_decoder: bool | None = None) -> HfLlmConfig:
    """The model config a recipe asks for: preset, then backbone fields, then any other config field;
    `is_encoder_decoder` True or False where the task decides it (None: as the recipe says)."""
    from .presets import PRESETS

    model = recipe.model
    fields: dict[str, Any] = dict(PRESETS[model.preset]) if model.preset else {}
    for key in ("backbone", "encoder_backbone", "decoder_backbone"):
        if getattr(model, key) is not None:
            fields[key] = getattr(model, key)
    fields.update(model.config)
    if is_encoder_decoder is not None:
        fields["is_encoder_decoder"] = is_encoder_decoder
    special = special or {"pad_token_id": 0, "bos_token_id": 1, "eos_token_id": 2}
    fields.update(special, vocab_size=vocab_size)
    if fields.get("is_encoder_decoder"):
        fields.setdefault("decoder_start_token_id", special["bos_token_id"])
    return HfLlmConfig(**fields)


def dump_recipe(recipe: Recipe, path: str | os.PathLike) -> None:
    pathlib.Path(path).write_text(yaml.safe_dump(recipe.to_dict(), sort_keys=False))
