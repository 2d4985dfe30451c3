"""Causal-LM pretraining: text sliced into fixed-length blocks (HF's `group_texts`), perplexity, samples.

Rows have a `data.text_column` (default `text`); every document ends with EOS and the token stream is cut into
blocks of `data.block_size` (with `data.packing`, document boundaries are kept inside blocks). The checkpoint
kept is the one with the lowest validation loss; at the end the model continues `generation.prompts`.
"""

from __future__ import annotations

import torch
from transformers import default_data_collator

from ..data import require_columns, tokenize_for_causal_lm
from ..inference import generate_text
from ..models import set_generation_config
from ..presets import PRESETS
from ..recipe_schema import Recipe, RecipeError
from .base import Task


class CausalLMTask(Task):
    name = "causal_lm"
    default_dataset = "hf_llm:python_docs"
    is_encoder_decoder = False
    streams = True  # documents are tokenised and sliced as they come
    samples_by_default = True
    best_metric = "loss"
    reports_perplexity = True
    length_keys = ("block_size",)
    truncates = False  # the block is the unit of training: a model that cannot read it is an error
    quality = ("perplexity", "validation perplexity", False)
    card_metrics = (("perplexity", "perplexity", "Perplexity"), ("eval_loss", "loss", "Loss"))
    display_name = "Causal language modeling"

    def check_recipe(self, recipe: Recipe) -> None:
        super().check_recipe(recipe)
        asked = recipe.model.config.get("is_encoder_decoder")
        if asked is None and recipe.model.preset is not None:
            asked = PRESETS.get(recipe.model.preset, {}).get("is_encoder_decoder")
        if asked:
            raise RecipeError("task causal_lm trains a decoder-only model but the model section (or its preset) "
                              "asks for an encoder-decoder; use a seq2seq task (translation, summarization, dialogue) for one.")

    def check_data(self, recipe: Recipe, raw) -> None:
        column = recipe.data.text_column
        require_columns(raw, [column], {column: "data.text_column"})

    def prepare_model(self, recipe: Recipe, model, tokenizer) -> None:
        set_generation_config(model, recipe, tokenizer, self.samples_by_default)

    def tokenize(self, recipe: Recipe, raw, tokenizer, model):
        return tokenize_for_causal_lm(raw, tokenizer, recipe.data)

    def collator(self, tokenizer, model):
        return default_data_collator

    def samples(self, recipe: Recipe, model, tokenizer) -> list[str]:
        model.eval()
        torch.manual_seed(recipe.generation.seed)
        return [prompt + generate_text(model, tokenizer, prompt) for prompt in recipe.generation.prompts]

    def intended_use(self, config) -> str:
        return "Text continuation in the style of its training data; a starting point for fine-tuning."
