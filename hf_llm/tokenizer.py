"""Byte-level BPE tokenizers trained with `tokenizers`, saved as `PreTrainedTokenizerFast`.

Special tokens have fixed ids that match HfLlmConfig's defaults: <pad>=0, <s>=1, </s>=2, <unk>=3, then
the chat tokens <|im_start|>=4 and <|im_end|>=5 (reserved for dialogue, ChatML style).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Iterator

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from .recipe_schema import Recipe, RecipeError

logger = logging.getLogger("hf_llm")

SPECIAL_TOKENS = {"pad_token": "<pad>", "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}
CHAT_TOKENS = ["<|im_start|>", "<|im_end|>"]
# ChatML-style; `{% generation %}` marks what assistant-only training learns (the reply and its <|im_end|>).
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' }}"
    "{% if message['role'] == 'assistant' %}"
    "{% generation %}{{ message['content'] + '<|im_end|>' }}{% endgeneration %}"
    "{% else %}{{ message['content'] + '<|im_end|>' }}{% endif %}"
    "{{ '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def train_tokenizer(texts: Iterable[str], vocab_size: int = 8192, min_frequency: int = 2) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE (GPT-2's pre-tokenisation and byte alphabet) on `texts`."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=list(SPECIAL_TOKENS.values()) + CHAT_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, additional_special_tokens=CHAT_TOKENS, clean_up_tokenization_spaces=False,
        **SPECIAL_TOKENS,
    )
    fast.chat_template = CHAT_TEMPLATE  # every hf_llm tokenizer can render chats (saved as chat_template.jinja)
    return fast


def load_tokenizer(name_or_path: str) -> PreTrainedTokenizerFast:
    return AutoTokenizer.from_pretrained(name_or_path)


def tokenizer_for(recipe: Recipe, train_split, texts_of: Callable[[dict], list[str]]) -> PreTrainedTokenizerFast:
    """The recipe's tokenizer (`tokenizer.name_or_path`, else the one saved with `model.name_or_path`), or a
    byte-level BPE trained on the training split's texts: `texts_of(batch)` gives the texts of a batch of rows
    (the task knows which columns hold text: documents, both sides of translation pairs, chat messages)."""
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
            yield [t for t in texts_of(train_split[start : min(start + 1000, total)]) if isinstance(t, str) and t]

    logger.info("Training a byte-level BPE tokenizer (vocab %d)", recipe.tokenizer.vocab_size)
    return train_tokenizer(texts(), recipe.tokenizer.vocab_size, recipe.tokenizer.min_frequency)


def ensure_chat_template(tokenizer) -> bool:
    """Give the tokenizer hf_llm's chat template (and its tokens) if it has none; True if tokens were added
    (the model's embeddings must then grow)."""
    added = False
    missing = [t for t in CHAT_TOKENS if t not in tokenizer.get_vocab()]
    if missing:
        tokenizer.add_special_tokens({"additional_special_tokens": CHAT_TOKENS})
        added = True
    if not getattr(tokenizer, "chat_template", None):
        tokenizer.chat_template = CHAT_TEMPLATE
    return added


def special_token_ids(tokenizer) -> dict[str, int]:
    """The config fields that come from the tokenizer (pad falls back to eos, bos to eos)."""
    eos = tokenizer.eos_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    bos = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else eos
    if eos is None:
        raise ValueError("The tokenizer has no eos_token; set one (e.g. tokenizer.eos_token='</s>').")
    return {"pad_token_id": pad, "bos_token_id": bos, "eos_token_id": eos}


def batched_texts(dataset, column: str, limit: int | None = None, batch_size: int = 1000) -> Iterator[list[str]]:
    """Batches of texts from a datasets split for tokenizer training."""
    total = len(dataset) if limit is None else min(limit, len(dataset))
    for start in range(0, total, batch_size):
        yield dataset[start : min(start + batch_size, total)][column]
