"""Dialogue: multi-turn chats (`messages` of `{role, content}`), trained on the assistant turns only.

Causal LMs read the whole conversation rendered by a ChatML-style chat template stored with the
tokenizer; the template marks assistant turns with `{% generation %}`, so
`apply_chat_template(..., return_assistant_tokens_mask=True)` gives the label mask (every other token is
-100). Encoder-decoder models get one example per assistant turn: the rendered conversation so far as the
source, the reply as the target. Metric: perplexity on the assistant tokens.
"""

from __future__ import annotations

import copy
import os

from transformers import AutoConfig, AutoModelForCausalLM, DataCollatorForSeq2Seq, Seq2SeqTrainer
from transformers.trainer_utils import set_seed

from ..data import load_raw, require_columns
from ..recipes import Recipe, RecipeError, build_config
from ..tokenizer import CHAT_TEMPLATE, CHAT_TOKENS, special_token_ids
from ..train import (
    HfLlmSeq2SeqTrainer,
    build_model,
    finish_run,
    fit_lengths,
    train_and_evaluate,
    get_tokenizer,
    perplexity,
    prepare_output_dir,
    set_generation_config,
    trainer_options,
    training_arguments,
)
from .warm_start import build_seq2seq

ROLES = ("system", "user", "assistant")
# The checkpoint a run keeps (`training.load_best_model_at_end`): the lowest loss on the assistant tokens.
BEST_METRIC = "loss"


def ensure_chat_template(tokenizer) -> bool:
    """Give the tokenizer our chat template (and its tokens) if it has none; True if tokens were added."""
    added = False
    missing = [t for t in CHAT_TOKENS if t not in tokenizer.get_vocab()]
    if missing:
        tokenizer.add_special_tokens({"additional_special_tokens": CHAT_TOKENS})
        added = True
    if not getattr(tokenizer, "chat_template", None):
        tokenizer.chat_template = CHAT_TEMPLATE
    return added


def check_conversations(raw, column: str) -> None:
    for name, split in raw.items():
        for i, messages in enumerate(split[column][:200]):
            if not isinstance(messages, list) or not messages:
                raise RecipeError(f"{name} row {i}: data.{'messages_column'} '{column}' must hold a list of messages.")
            for message in messages:
                if not isinstance(message, dict) or message.get("role") not in ROLES or not isinstance(message.get("content"), str):
                    raise RecipeError(f"{name} row {i}: every message needs a role in {list(ROLES)} and a text content; "
                                      f"got {message!r}.")
            if not any(m["role"] == "assistant" for m in messages):
                raise RecipeError(f"{name} row {i} has no assistant turn: there is nothing to learn from it.")


def assistant_labels(tokenizer, messages: list[dict], max_length: int) -> dict:
    """input_ids, attention_mask and labels (-100 outside assistant turns) of one conversation."""
    encoded = tokenizer.apply_chat_template(
        messages, tokenize=True, return_dict=True, return_assistant_tokens_mask=True,
    )
    ids = encoded["input_ids"][:max_length]
    mask = encoded["assistant_masks"][:max_length]
    return {"input_ids": ids, "attention_mask": [1] * len(ids),
            "labels": [token if keep else -100 for token, keep in zip(ids, mask)]}


def context_response_pairs(messages: list[dict]) -> list[tuple[list[dict], str]]:
    return [(messages[:i], m["content"]) for i, m in enumerate(messages) if m["role"] == "assistant" and i > 0]


def is_encoder_decoder(recipe: Recipe) -> bool:
    if recipe.model.name_or_path is not None:
        try:
            return AutoConfig.from_pretrained(recipe.model.name_or_path).is_encoder_decoder
        except (OSError, ValueError) as error:
            raise RecipeError(f"model.name_or_path: cannot load {recipe.model.name_or_path}: {error}") from None
    return bool(build_config(recipe, vocab_size=max(recipe.tokenizer.vocab_size, 300)).is_encoder_decoder)


def tokenize(raw, tokenizer, recipe: Recipe, encoder_decoder: bool):
    data = recipe.data
    column = data.messages_column
    eos = tokenizer.eos_token_id

    def causal(batch):
        rows = [assistant_labels(tokenizer, messages, data.block_size) for messages in batch[column]]
        return {key: [row[key] for row in rows] for key in ("input_ids", "attention_mask", "labels")}

    def seq2seq(batch):
        out = {"input_ids": [], "attention_mask": [], "labels": []}
        for messages in batch[column]:
            for context, reply in context_response_pairs(messages):
                source = tokenizer.apply_chat_template(context, tokenize=False, add_generation_prompt=True)
                ids = tokenizer(source, add_special_tokens=False)["input_ids"][-data.max_source_length :]
                target = tokenizer(reply, add_special_tokens=False)["input_ids"][: data.max_target_length - 1] + [eos]
                out["input_ids"].append(ids)
                out["attention_mask"].append([1] * len(ids))
                out["labels"].append(target)
        return out

    return raw.map(seq2seq if encoder_decoder else causal, batched=True, remove_columns=raw["train"].column_names,
                   desc="Tokenising conversations")


def prepare(recipe: Recipe, raw, tokenizer, model):
    """Chat template on the tokenizer (embeddings resized if its tokens were new), stop on <|im_end|>."""
    if ensure_chat_template(tokenizer):
        model.resize_token_embeddings(len(tokenizer))
    set_generation_config(model, recipe, tokenizer)
    end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    model.generation_config.eos_token_id = [special_token_ids(tokenizer)["eos_token_id"], end]


def run(recipe: Recipe, overwrite: bool = False) -> dict:
    data = recipe.data
    resume = prepare_output_dir(recipe.training, overwrite)
    set_seed(recipe.training.get("seed", 42))
    raw = load_raw(data, recipe.training.get("seed", 42))
    require_columns(raw, [data.messages_column], {data.messages_column: "data.messages_column"})
    check_conversations(raw, data.messages_column)
    tokenizer = get_tokenizer(recipe, raw["train"], texts_of=lambda batch: [
        m["content"] for messages in batch[data.messages_column] for m in messages])
    encoder_decoder = is_encoder_decoder(recipe)
    warm_report = None
    if encoder_decoder:
        model, warm_report = build_seq2seq(recipe, tokenizer)
    else:
        model = build_model(recipe, tokenizer, AutoModelForCausalLM)
    fit_lengths(model, data, ("block_size", "max_source_length", "max_target_length"), truncate=True)
    prepare(recipe, raw, tokenizer, model)
    intended_generation = copy.deepcopy(model.generation_config)
    tokenized = tokenize(raw, tokenizer, recipe, encoder_decoder)

    args = training_arguments(recipe, predict_with_generate=False, eval_on_start=resume is None,
                              metric_for_best_model=BEST_METRIC)
    trainer = HfLlmSeq2SeqTrainer(
        model=model, args=args, train_dataset=tokenized["train"], eval_dataset=tokenized["validation"],
        data_collator=DataCollatorForSeq2Seq(tokenizer, model=model if encoder_decoder else None),
        processing_class=tokenizer, **trainer_options(recipe),
    )
    os.makedirs(args.output_dir, exist_ok=True)
    train_result, metrics = train_and_evaluate(trainer, resume)
    return {**finish_run(trainer, tokenizer, recipe, train_result, metrics, intended_generation), "warm_start": warm_report}


def evaluate(recipe: Recipe, model, tokenizer) -> dict:
    import tempfile

    raw = load_raw(recipe.data, seed=0)
    require_columns(raw, [recipe.data.messages_column], {recipe.data.messages_column: "data.messages_column"})
    tokenized = tokenize(raw, tokenizer, recipe, model.config.is_encoder_decoder)
    with tempfile.TemporaryDirectory() as scratch:
        recipe.training = {**recipe.training, "output_dir": scratch}
        trainer = Seq2SeqTrainer(
            model=model, args=training_arguments(recipe), eval_dataset=tokenized["validation"],
            data_collator=DataCollatorForSeq2Seq(tokenizer, model=model if model.config.is_encoder_decoder else None),
            processing_class=tokenizer,
        )
        metrics = trainer.evaluate()
    metrics["perplexity"] = perplexity(metrics["eval_loss"])
    return metrics


def reply(model, tokenizer, messages: list[dict], **generate_kwargs) -> str:
    """The model's next assistant turn for a conversation (causal LM or encoder-decoder)."""
    import torch

    source = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    inputs = tokenizer(source, return_tensors="pt", add_special_tokens=False)
    with torch.no_grad():
        output = model.generate(**inputs, **generate_kwargs)
    new = output[0] if model.config.is_encoder_decoder else output[0, inputs["input_ids"].shape[1] :]
    return tokenizer.decode(new, skip_special_tokens=True).strip()
