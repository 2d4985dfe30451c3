"""Dialogue: multi-turn chats (`messages` of `{role, content}`), trained on the assistant turns only.

Causal LMs read the whole conversation rendered by a ChatML-style chat template stored with the
tokenizer; the template marks assistant turns with `{% generation %}`, so
`apply_chat_template(..., return_assistant_tokens_mask=True)` gives the label mask (every other token is
-100). Encoder-decoder models get one example per assistant turn: the rendered conversation so far as the
source, the reply as the target. Metric: perplexity on the assistant tokens.
"""

from __future__ import annotations

from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM, DataCollatorForSeq2Seq, Seq2SeqTrainingArguments

from ..data import require_columns
from ..models import build_model, build_seq2seq, pretrained_is_encoder_decoder, set_generation_config
from ..recipe_schema import Recipe, RecipeError, build_config
from ..tokenizer import ensure_chat_template, special_token_ids
from ..trainers import HfLlmSeq2SeqTrainer
from .base import Task

ROLES = ("system", "user", "assistant")


def check_conversations(raw, column: str) -> None:
    for name, split in raw.items():
        for i, messages in enumerate(split[column][:200]):
            if not isinstance(messages, list) or not messages:
                raise RecipeError(f"{name} row {i}: data.messages_column '{column}' must hold a list of messages.")
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


def tokenize_conversations(raw, tokenizer, recipe: Recipe, encoder_decoder: bool):
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


class DialogueTask(Task):
    name = "dialogue"
    default_dataset = "hf_llm:demo_dialogue"
    arguments_class = Seq2SeqTrainingArguments
    trainer_class = HfLlmSeq2SeqTrainer
    is_encoder_decoder = None  # a causal LM reads the whole chat; an encoder-decoder answers the chat so far
    samples_by_default = True
    best_metric = "loss"  # on the assistant tokens
    reports_perplexity = True
    length_keys = ("block_size", "max_source_length", "max_target_length")
    quality = ("perplexity", "validation perplexity", False)
    card_metrics = (("perplexity", "perplexity", "Perplexity (assistant tokens)"), ("eval_loss", "loss", "Loss"))
    display_name = "Dialogue"

    def check_data(self, recipe: Recipe, raw) -> None:
        column = recipe.data.messages_column
        require_columns(raw, [column], {column: "data.messages_column"})
        check_conversations(raw, column)

    def training_texts(self, recipe: Recipe, raw):
        column = recipe.data.messages_column
        return lambda batch: [m["content"] for messages in batch[column] for m in messages]

    def auto_class(self, config):
        return AutoModelForSeq2SeqLM if config.is_encoder_decoder else AutoModelForCausalLM

    def build_model(self, recipe: Recipe, tokenizer, raw) -> tuple:
        encoder_decoder = pretrained_is_encoder_decoder(recipe)
        if encoder_decoder is None:  # a fresh model: as the recipe (or its preset) says
            encoder_decoder = build_config(recipe, vocab_size=len(tokenizer)).is_encoder_decoder
        if encoder_decoder:
            return build_seq2seq(recipe, tokenizer)
        return build_model(recipe, tokenizer, AutoModelForCausalLM), None

    def prepare_model(self, recipe: Recipe, model, tokenizer) -> None:
        """Chat template on the tokenizer (embeddings resized if its tokens were new), stop on <|im_end|>."""
        if ensure_chat_template(tokenizer):
            model.resize_token_embeddings(len(tokenizer))
        set_generation_config(model, recipe, tokenizer, self.samples_by_default)
        end = tokenizer.convert_tokens_to_ids("<|im_end|>")
        model.generation_config.eos_token_id = [special_token_ids(tokenizer)["eos_token_id"], end]

    def tokenize(self, recipe: Recipe, raw, tokenizer, model):
        return tokenize_conversations(raw, tokenizer, recipe, model.config.is_encoder_decoder)

    def collator(self, tokenizer, model):
        return DataCollatorForSeq2Seq(tokenizer, model=model if model.config.is_encoder_decoder else None)

    def argument_defaults(self, recipe: Recipe) -> dict:
        return {"predict_with_generate": False}

    def tokens_per_example(self, recipe: Recipe) -> int:
        return recipe.data.block_size

    def pipeline_tag(self, config) -> str:
        return "text2text-generation" if config.is_encoder_decoder else "text-generation"

    def intended_use(self, config) -> str:
        return "Short assistant replies in the style of its training conversations."

    def usage_snippet(self, config, repo_id: str, tokenizer=None) -> str:
        if config.is_encoder_decoder:  # the source is the chat so far, rendered by the chat template
            return (f'from transformers import AutoModelForSeq2SeqLM, AutoTokenizer\n\n'
                    f'tokenizer = AutoTokenizer.from_pretrained("{repo_id}")\n'
                    f'model = AutoModelForSeq2SeqLM.from_pretrained("{repo_id}", trust_remote_code=True)\n'
                    f'chat = [{{"role": "user", "content": "Hello!"}}]\n'
                    f'inputs = tokenizer.apply_chat_template(chat, add_generation_prompt=True, return_dict=True, '
                    f'return_tensors="pt")\n'
                    f'print(tokenizer.decode(model.generate(**inputs, max_new_tokens=40)[0], skip_special_tokens=True))')
        return (f'from transformers import pipeline\n\nchat = pipeline("text-generation", model="{repo_id}", '
                f'trust_remote_code=True)\nprint(chat([{{"role": "user", "content": "Hello!"}}], max_new_tokens=40))')
