"""Recipes: YAML files whose sections map onto dataclasses, with `section.key=value` overrides.

```yaml
description: one line shown by `hf-llm recipes`
task: causal_lm            # what the run trains (see hf_llm.tasks)
model:     {...}           # ModelArgs fields, plus any HfLlmConfig field (hidden_size, rnn_cell, ...)
tokenizer: {...}           # TokenizerArgs
data:      {...}           # DataArgs
generation: {...}          # GenerationArgs: the sample printed at the end, saved as generation_config
training:  {...}           # transformers.TrainingArguments fields, unchanged
peft:      {...}           # optional, PeftArgs (peft's LoraConfig fields): train a LoRA adapter, not the model
```

Every problem — an unknown section or key, a value of the wrong type, a missing file — raises
`RecipeError` naming the key or the path, before anything is written. The format itself (the dataclasses)
is `hf_llm.recipe_schema`; what a task adds to it (its default data, its TrainingArguments class, its own
checks) comes from the task (`hf_llm.tasks`).
"""

from __future__ import annotations

import os
import pathlib
import re
import typing
from importlib.resources.abc import Traversable

import yaml

from .recipe_schema import (  # noqa: F401  (re-exported: the recipe format's names, where users import them)
    BUDGET_KEYS,
    CACHE_IMPLEMENTATIONS,
    DTYPES,
    OPTIONAL_SECTIONS,
    SECTIONS,
    TOP_LEVEL,
    TRAINING_DEFAULTS,
    DataArgs,
    GenerationArgs,
    ModelArgs,
    PeftArgs,
    Recipe,
    RecipeError,
    TokenizerArgs,
    build_config,
    check_section,
    config_field_types,
    dump_recipe,
    generation_fields,
    load_yaml,
    parse_override,
    training_arguments_fields,
    training_field_types,
    typed_value,
)
from .resources import bundled_recipes
from .tasks import DEFAULT_TASK, get_task

def resolve_recipe_path(name_or_path: str) -> pathlib.Path | Traversable:
    """A recipe file, or the name of a bundled recipe (`quickstart` -> recipes/quickstart.yaml, shipped inside the
    package: hf_llm.resources)."""
    path = pathlib.Path(name_or_path)
    if path.is_file():
        return path
    bundled = bundled_recipes()
    name = name_or_path[: -len(path.suffix)] if path.suffix in (".yaml", ".yml") else name_or_path
    if name in bundled:
        return bundled[name]
    raise RecipeError(f"Recipe file not found: {name_or_path} (bundled recipes: {', '.join(bundled) or 'none'}).")


def load_recipe(name_or_path: str | None, overrides: list[str] | None = None, raw: dict | None = None) -> Recipe:
    """Read, override and validate a recipe. Nothing is written."""
    path = None
    if raw is None:
        path = resolve_recipe_path(name_or_path)
        try:
            raw = load_yaml(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as error:
            raise RecipeError(f"{path} is not valid YAML: {error}") from None
    if not isinstance(raw, dict):
        raise RecipeError(f"{path or 'The recipe'} must be a YAML mapping with sections {list(TOP_LEVEL)}.")
    raw = {k: (dict(v) if isinstance(v, dict) else v) for k, v in raw.items()}
    texts: dict[tuple[str, str], str] = {}  # (section, key) -> the override's text, for typed_value
    for override in overrides or []:
        section, key, value = parse_override(override)
        texts[(section, key)] = override.split("=", 1)[1]
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
    task = get_task(raw.get("task", DEFAULT_TASK))

    def typed(section: str, values: dict, allowed: dict) -> dict:
        return {k: typed_value(v, texts[(section, k)], allowed.get(k)) if (section, k) in texts else v
                for k, v in values.items()} if isinstance(values, dict) else values

    sections = {}
    for name, cls in SECTIONS.items():
        if name in OPTIONAL_SECTIONS and name not in raw:
            sections[name] = None
            continue
        values = raw.get(name) or {}
        hints = typing.get_type_hints(cls)
        if name == "model":
            config_types = config_field_types()
            allowed = {**{k: v for k, v in hints.items() if k != "config"}, **config_types}
            values = typed(name, values, allowed)
            check_section(name, values, allowed)
            own = {k: v for k, v in values.items() if k in hints and k != "config"}
            sections[name] = ModelArgs(**own, config={k: v for k, v in values.items() if k in config_types and k not in hints})
        else:
            values = typed(name, values, hints)
            check_section(name, values, hints)
            sections[name] = cls(**values)
    training_types = training_field_types(task.arguments_class)
    training = typed("training", dict(raw.get("training") or {}), training_types)
    check_section("training", training, training_types)
    if not training.get("output_dir"):
        training["output_dir"] = str(pathlib.Path("runs") / (pathlib.Path(path.name).stem if path else "run"))

    recipe = Recipe(
        path=str(path) if path else None,
        description=str(raw.get("description", "")),
        task=task.name,
        training=training,
        **sections,
    )
    data = recipe.data
    if data.text_column is None:
        data.text_column = task.default_text_column
    if data.train_file is None and data.dataset_name is None:
        data.dataset_name = task.default_dataset  # bundled data: every task runs offline
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
    if model.dtype is not None and model.dtype not in DTYPES:
        raise RecipeError(f"model.dtype must be one of {list(DTYPES)}, got {model.dtype!r}.")
    if model.warm_start not in ("both", "encoder", "decoder"):
        raise RecipeError(f"model.warm_start must be 'both', 'encoder' or 'decoder', got {model.warm_start!r}.")
    if model.preset is not None:
        from .presets import PRESETS

        if model.preset not in PRESETS:
            raise RecipeError(f"model.preset: unknown preset {model.preset!r}; presets are {sorted(PRESETS)}.")
    task = get_task(recipe.task)
    task.check_recipe(recipe)
    if model.name_or_path is None:
        try:  # validates the architecture fields
            build_config(recipe, vocab_size=max(tokenizer.vocab_size, 300), is_encoder_decoder=task.is_encoder_decoder)
        except ValueError as error:
            raise RecipeError(f"model: {error}") from None
    g = recipe.generation
    for key, ok, rule in (("num_beams", g.num_beams >= 1, "at least 1"), ("max_new_tokens", g.max_new_tokens >= 1, "at least 1"),
                          ("temperature", g.temperature > 0, "positive"), ("top_p", 0 < g.top_p <= 1, "in (0, 1]"),
                          ("top_k", g.top_k >= 0, "0 or more")):
        if not ok:
            raise RecipeError(f"generation.{key} must be {rule}, got {getattr(g, key)}.")
    if g.cache_implementation not in CACHE_IMPLEMENTATIONS:
        raise RecipeError(f"generation.cache_implementation must be one of {list(CACHE_IMPLEMENTATIONS)}, got "
                          f"{g.cache_implementation!r}.")
    if g.compile and g.cache_implementation == "dynamic":
        raise RecipeError("generation.compile compiles a fixed-shape decoding step: it needs cache_implementation "
                          "static (or unset), not dynamic.")
    from transformers import GenerationConfig

    try:
        GenerationConfig(**generation_fields(recipe.generation, task.samples_by_default)).validate(strict=True)
    except ValueError as error:
        raise RecipeError(f"generation: {error}") from None
    try:  # TrainingArguments checks its own combinations (eval/save strategies, ...); nothing is written
        arguments = task.arguments_class(**training_arguments_fields({**TRAINING_DEFAULTS, **recipe.training}))
    except (ValueError, TypeError) as error:
        raise RecipeError(f"training: {error}") from None
    validate_training_keys(recipe, arguments)
    check_reporting(arguments.report_to)
    if recipe.peft is not None:
        validate_peft(recipe)


def validate_peft(recipe: Recipe) -> None:
    """A `peft:` section: peft installed, a LoraConfig it accepts, a base model to adapt, and none of the run
    features that read whole-model checkpoints (an adapted run's checkpoints hold the adapter only)."""
    from .adapters import lora_config

    if recipe.peft.r < 1:
        raise RecipeError(f"peft.r (the adapter's rank) must be at least 1, got {recipe.peft.r}.")
    lora_config(recipe.peft)
    if recipe.model.name_or_path is None:
        raise RecipeError("peft: a LoRA adapter adapts a trained model: set model.name_or_path to the base checkpoint "
                          "(a run folder or a Hub id), or leave out the peft: section to train a model from scratch.")
    for key in ("resume_from_checkpoint", "average_last_checkpoints"):
        if recipe.training.get(key):
            raise RecipeError(f"training.{key} is not supported with a peft: section yet (its checkpoints hold the "
                              "adapter only); leave it out, or fine-tune the whole model.")


def check_reporting(report_to: list[str] | None) -> None:
    """Each integration `training.report_to` names is installed (transformers would fail later, when the Trainer
    is built, with a message about PyTorch versions)."""
    import transformers.integrations as integrations

    for name in report_to or []:
        available = getattr(integrations, f"is_{name}_available", None)
        if available is not None and not available():
            extra = " (pip install 'hf_llm[tensorboard]')" if name == "tensorboard" else ""
            raise RecipeError(f"training.report_to={name} needs the {name} package: pip install {name}{extra}, "
                              "or choose another training.report_to (none, to log to the console only).")


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

