"""Build the model of a task: fresh, from a checkpoint of that kind, or warm-started from a causal LM.

A seq2seq model can take its decoder and/or encoder weights from a causal-LM hf_llm checkpoint of the
same family: every tensor whose name and shape match is copied (the LM's decoder stack has the same
parameter names as a seq2seq decoder, and — minus cross-attention and bidirectional parts — as an
encoder of its family); the rest (cross-attention, attention projections, bridges) stays newly
initialised. The report lists both.
"""

from __future__ import annotations

import logging

from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM

from ..modeling.configuration_hf_llm import HfLlmConfig
from ..modeling.modeling_hf_llm import HfLlmForSeq2SeqLM
from ..recipes import Recipe, RecipeError
from ..tokenizer import special_token_ids
from ..train import build_model

logger = logging.getLogger("hf_llm")

NOT_ARCHITECTURE = {"architectures", "auto_map", "_name_or_path", "transformers_version", "model_type", "dtype",
                    "torch_dtype", "is_encoder_decoder", "decoder_start_token_id", "id2label", "label2id",
                    "problem_type", "num_labels"}


def build_seq2seq(recipe: Recipe, tokenizer) -> tuple[HfLlmForSeq2SeqLM, dict | None]:
    """(model, warm-start report or None) for a translation / summarization / seq2seq dialogue run."""
    name = recipe.model.name_or_path
    if name is None:
        return build_model(recipe, tokenizer, AutoModelForSeq2SeqLM), None
    try:
        config = AutoConfig.from_pretrained(name)
    except (OSError, ValueError) as error:
        raise RecipeError(f"model.name_or_path: cannot load {name}: {error}") from None
    if config.is_encoder_decoder:
        return build_model(recipe, tokenizer, AutoModelForSeq2SeqLM), None
    return warm_start(recipe, name, tokenizer)


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
    family = lm.config.side_backbone("decoder")
    fields = {k: v for k, v in lm.config.to_dict().items() if k not in NOT_ARCHITECTURE}
    fields.update(is_encoder_decoder=True, encoder_backbone=family, decoder_backbone=family,
                  decoder_layers=None, encoder_layers=None, num_hidden_layers=lm.config.side_layers("decoder"))
    if family == "cnn":
        fields["cnn_encoder_spec"] = fields.get("cnn_decoder_spec")
    for key in ("backbone", "encoder_backbone", "decoder_backbone"):
        if getattr(recipe.model, key) is not None:
            fields[key] = getattr(recipe.model, key)
    fields.update(recipe.model.config)
    fields["decoder_start_token_id"] = special_token_ids(tokenizer)["bos_token_id"]
    try:
        config = HfLlmConfig(**fields)
    except ValueError as error:
        raise RecipeError(f"model: {error}") from None
    model = HfLlmForSeq2SeqLM(config)

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
