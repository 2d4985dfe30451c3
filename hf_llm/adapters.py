"""LoRA adapters through peft (the recipe's `peft:` section): wrap a built model, and save a run's adapted model.

An adapted run's folder holds what every hf_llm command and transformers' Auto classes load, the merged model
(base weights + the adapter's update, `merge_and_unload`), and in `adapter/` the adapter alone, which peft
loads on its base:

    base = AutoModelForCausalLM.from_pretrained(BASE, trust_remote_code=True)
    model = PeftModel.from_pretrained(base, "RUN_DIR/adapter")

peft is an optional dependency (`pip install 'hf_llm[peft]'`); nothing here imports it before it is asked for.
A building block: it knows no task (peft's task type follows from the model's head) and no family.
"""

from __future__ import annotations

import copy
import os

import torch
from torch.nn.utils import parametrize

from .recipe_schema import PeftArgs, RecipeError, lora_config_fields

ADAPTER_FOLDER = "adapter"  # inside a run folder


def lora_config(peft_args: PeftArgs, model=None):
    """peft's `LoraConfig` for a `peft:` section (its own checks as a RecipeError); the task type from the model's
    head when a model is given: a language model's (causal or seq2seq), or a classifier's (whose new `score`
    head peft then trains in full, `modules_to_save`)."""
    try:
        from peft import LoraConfig, TaskType
    except ImportError:
        raise RecipeError("The recipe's peft: section needs peft: pip install 'hf_llm[peft]'.") from None
    task_type = None
    if model is not None:
        if model.get_output_embeddings() is None:
            task_type = TaskType.SEQ_CLS
        else:
            task_type = TaskType.SEQ_2_SEQ_LM if model.config.is_encoder_decoder else TaskType.CAUSAL_LM
    try:
        return LoraConfig(**lora_config_fields(peft_args), task_type=task_type)
    except (ValueError, TypeError) as error:
        raise RecipeError(f"peft: {error}") from None


def add_adapter(model, peft_args: PeftArgs):
    """`get_peft_model(model, LoraConfig(...))`: only the adapter (and `modules_to_save`) trains."""
    from peft import get_peft_model

    try:
        return get_peft_model(model, lora_config(peft_args, model))
    except ValueError as error:  # e.g. target modules that match nothing
        raise RecipeError(f"peft: {error}") from None


def is_adapted(model) -> bool:
    """Whether `model` is a peft model (an adapter around a base model)."""
    return hasattr(model, "peft_config") and hasattr(model, "get_base_model")


def unwrapped(model):
    """The transformers model inside a peft model (the model itself otherwise)."""
    return model.get_base_model() if is_adapted(model) else model


def merged(model):
    """A copy of a peft model with its adapter merged into the weights: peft's `merge_and_unload`, also for layers
    whose weight is parametrized (weight normalisation, w = g v / |v|: `cnn_weight_norm`, the fconv presets).
    peft adds the update to `weight.data`, which for such a layer is a tensor computed anew at every read, so
    the update would be lost without a word; here the merged matrix is assigned to `weight` instead (torch's
    parametrization solves for g and v through its right inverse) and that layer's update set to zero before
    peft merges the others."""
    model = copy.deepcopy(model)
    for layer in model.modules():
        base = getattr(layer, "base_layer", None)
        if base is None or not hasattr(layer, "get_delta_weight") or not parametrize.is_parametrized(base, "weight"):
            continue
        adapters = [name for name in layer.active_adapters if name in layer.lora_A]
        with torch.no_grad():
            base.weight = base.weight + sum(layer.get_delta_weight(name) for name in adapters)
            for name in adapters:
                layer.lora_B[name].weight.zero_()
    return model.merge_and_unload()


def save_model(model, folder: str) -> None:
    """`model.save_pretrained(folder)`; an adapted model saves its merged weights there (`merged`) and the adapter
    in `folder/adapter` (the model given keeps its adapter: the merge happens on a copy)."""
    if not is_adapted(model):
        model.save_pretrained(folder)
        return
    model.save_pretrained(os.path.join(folder, ADAPTER_FOLDER))
    merged(model).save_pretrained(folder)
