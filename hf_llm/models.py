"""Building a run's model: fresh from the recipe, from a checkpoint, or warm-started from a causal LM; its
input lengths fitted to what it reads; its generation config.

A building block: the task says which Auto class, whether the model is an encoder-decoder and which extra
config fields it needs (a classifier's labels); nothing here tests a task's or a family's name.

Warm start: a seq2seq model can take its decoder and/or encoder weights from a causal-LM hf_llm checkpoint of
the same family. Every tensor whose name and shape match is copied (the LM's decoder stack has the same
parameter names as a seq2seq decoder, and — minus cross-attention and bidirectional parts — as an encoder of
its family); the rest (cross-attention, attention projections, bridges) stays newly initialised. The report
lists both.
"""

from __future__ import annotations

import dataclasses
import logging

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM, GenerationConfig

from .modeling.configuration_hf_llm import HfLlmConfig
from .modeling.modeling_hf_llm import HfLlmForSeq2SeqLM
from .recipe_schema import DTYPES, DataArgs, Recipe, RecipeError, build_config, compile_config, generation_fields
from .tokenizer import special_token_ids

logger = logging.getLogger("hf_llm")


def loading_options(recipe: Recipe) -> dict:
    """`model.attn_implementation` and `model.dtype` as the keyword arguments of transformers' `from_config` /
    `from_pretrained`."""
    options: dict = {}
    if recipe.model.attn_implementation is not None:
        options["attn_implementation"] = recipe.model.attn_implementation
    if recipe.model.dtype is not None:
        if recipe.model.dtype not in DTYPES:
            raise RecipeError(f"model.dtype must be one of {list(DTYPES)}, got {recipe.model.dtype!r}.")
        options["dtype"] = getattr(torch, recipe.model.dtype)
    return options


def build_model(recipe: Recipe, tokenizer, auto_class=AutoModelForCausalLM, is_encoder_decoder: bool | None = None,
                **config_fields):
    """A fresh model of the recipe's architecture sized to the tokenizer, or `model.name_or_path`;
    `config_fields` are set on the config either way (a classifier's `num_labels`, `id2label`, ...)."""
    special = special_token_ids(tokenizer)
    if recipe.model.name_or_path is not None:
        try:
            model = auto_class.from_pretrained(recipe.model.name_or_path, use_safetensors=True, **config_fields,
                                               **loading_options(recipe))
        except (OSError, ValueError, ImportError) as error:
            raise RecipeError(f"model.name_or_path: cannot load {recipe.model.name_or_path}: {error}") from None
        if model.config.vocab_size < len(tokenizer):
            raise RecipeError(
                f"The tokenizer has {len(tokenizer)} tokens but the model {recipe.model.name_or_path} only "
                f"{model.config.vocab_size}; use the tokenizer saved with the model."
            )
        return model
    try:
        config = build_config(recipe, vocab_size=len(tokenizer), special=special, is_encoder_decoder=is_encoder_decoder)
        for key, value in config_fields.items():
            setattr(config, key, value)
        config.check_fields()
        return auto_class.from_config(config, **loading_options(recipe))
    except (ValueError, ImportError) as error:  # ImportError: an attn_implementation whose kernel is missing
        raise RecipeError(f"model: {error}") from None


def pretrained_is_encoder_decoder(recipe: Recipe) -> bool | None:
    """Whether `model.name_or_path` is an encoder-decoder (None without one)."""
    if recipe.model.name_or_path is None:
        return None
    try:
        return bool(AutoConfig.from_pretrained(recipe.model.name_or_path).is_encoder_decoder)
    except (OSError, ValueError) as error:
        raise RecipeError(f"model.name_or_path: cannot load {recipe.model.name_or_path}: {error}") from None


def build_seq2seq(recipe: Recipe, tokenizer) -> tuple[HfLlmForSeq2SeqLM, dict | None]:
    """(model, warm-start report or None) for a seq2seq run: fresh, an encoder-decoder checkpoint, or warm-started
    from a causal-LM checkpoint."""
    if pretrained_is_encoder_decoder(recipe) is False:
        return warm_start(recipe, recipe.model.name_or_path, tokenizer)
    return build_model(recipe, tokenizer, AutoModelForSeq2SeqLM, is_encoder_decoder=True), None


def warm_start(recipe: Recipe, lm_path: str, tokenizer) -> tuple[HfLlmForSeq2SeqLM, dict]:
    try:
        lm = AutoModelForCausalLM.from_pretrained(lm_path, use_safetensors=True)
    except (OSError, ValueError) as error:
        raise RecipeError(f"model.name_or_path: cannot load {lm_path}: {error}") from None
    if getattr(lm.config, "model_type", None) != "hf_llm":
        raise RecipeError(f"model.name_or_path: {lm_path} is not an hf_llm model, so it cannot warm-start one.")
    if lm.config.vocab_size < len(tokenizer):
        raise RecipeError(f"The tokenizer has {len(tokenizer)} tokens but {lm_path} only {lm.config.vocab_size}; "
                          "use the tokenizer saved with the model.")
    fields = lm.config.encoder_decoder_fields()
    for key in ("backbone", "encoder_backbone", "decoder_backbone"):
        if getattr(recipe.model, key) is not None:
            fields[key] = getattr(recipe.model, key)
    fields.update(recipe.model.config)
    fields["decoder_start_token_id"] = special_token_ids(tokenizer)["bos_token_id"]
    try:
        config = HfLlmConfig(**fields)
    except ValueError as error:
        raise RecipeError(f"model: {error}") from None
    try:
        model = AutoModelForSeq2SeqLM.from_config(config, **loading_options(recipe))
    except (ValueError, ImportError) as error:
        raise RecipeError(f"model: {error}") from None

    source = lm.model.decoder.state_dict()
    sides = ["encoder", "decoder"] if recipe.model.warm_start == "both" else [recipe.model.warm_start]
    report: dict = {"from": lm_path}
    for side in sides:
        target = getattr(model.model, side)
        own = target.state_dict()
        loadable = {k: v for k, v in source.items() if k in own and own[k].shape == v.shape}
        target.load_state_dict(loadable, strict=False)
        report[side] = {"loaded": sorted(loadable), "new": sorted(set(own) - set(loadable))}
    if not config.tie_word_embeddings and not lm.config.tie_word_embeddings:
        model.lm_head.load_state_dict(lm.lm_head.state_dict())
    loaded = sum(len(report[s]["loaded"]) for s in sides)
    if loaded == 0:
        raise RecipeError(f"model.name_or_path: no weight of {lm_path} fits the {config.side_backbone('decoder')} "
                          "decoder; warm-start from a causal LM of the same family.")
    logger.warning("Warm start from %s: %s", lm_path, ", ".join(
        f"{s}: {len(report[s]['loaded'])} tensors loaded, {len(report[s]['new'])} new" for s in sides))
    return model, report


def fitted_lengths(model, data: DataArgs, keys: tuple[str, ...], truncate: bool) -> DataArgs:
    """`data` with its lengths fitted to the longest input the model reads (`config.max_input_positions`; None:
    no limit). Where examples are truncated anyway (task inputs), a longer `data.<key>` is lowered to the limit
    with a warning; where the length is the unit of training (pretraining blocks), it is an error. Returns a
    copy; the `data` given is left as it is."""
    limit = model.config.max_input_positions
    if limit is None:
        return data
    changes = {}
    for key in keys:
        length = getattr(data, key)
        if length <= limit:
            continue
        if not truncate:
            raise RecipeError(
                f"data.{key}={length} exceeds the model's max_position_embeddings={limit} (it has learned "
                "positions); lower it or raise model.max_position_embeddings."
            )
        logger.warning("data.%s=%d exceeds max_position_embeddings=%d of the model (learned positions): inputs "
                       "are truncated to %d tokens.", key, length, limit, limit)
        changes[key] = limit
    return dataclasses.replace(data, **changes) if changes else data


def set_generation_config(model, recipe: Recipe, tokenizer, sample_by_default: bool) -> None:
    """The recipe's `generation` section as the model's generation config (saved with it)."""
    special = special_token_ids(tokenizer)
    model.generation_config = GenerationConfig(
        **generation_fields(recipe.generation, sample_by_default), **special,
        decoder_start_token_id=getattr(model.config, "decoder_start_token_id", None),
    )
    if recipe.generation.compile:  # for this run's own generation (samples, evaluation); not saved by transformers
        model.generation_config.compile_config = compile_config()
