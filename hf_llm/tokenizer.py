"""Byte-level BPE tokenizers trained with `tokenizers`, saved as `PreTrainedTokenizerFast`.

Special tokens have fixed ids that match HfLlmConfig's defaults: <pad>=0, <s>=1, </s>=2, <unk>=3, then
the chat tokens <|im_start|>=4 and <|im_end|>=5 (reserved for dialogue, ChatML style).

The tokenizer frames a text the way the task trains on it, with its own post-processor (tokenizers'
`TemplateProcessing`), so that a plain `tokenizer(text)` gives the ids training used: with `end_with_eos`
(seq2seq sources and targets) every text ends with </s>; without it (causal LM documents, chat templates,
classification) nothing is added. `ends_with_eos(tokenizer)` tells which kind a tokenizer is (older hf_llm
tokenizers and many pretrained ones add nothing; Marian's and T5's add </s>).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Iterator

from datasets import IterableDataset
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
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
# A streamed training split has no end to reach: the tokenizer is trained on its first examples.
STREAMED_TOKENIZER_EXAMPLES = 10_000


def train_tokenizer(texts: Iterable[str], vocab_size: int = 8192, min_frequency: int = 2,
                    end_with_eos: bool = False) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE (GPT-2's pre-tokenisation and byte alphabet) on `texts`. With `end_with_eos`
    its post-processor ends every encoded text with </s> (`tokenizer(text)`; `add_special_tokens=False` leaves
    it out), as the seq2seq tasks train; without it, it adds nothing."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    if end_with_eos:
        eos = SPECIAL_TOKENS["eos_token"]
        tokenizer.post_processor = processors.TemplateProcessing(
            single=f"$A {eos}", pair=f"$A {eos} $B {eos}",
            special_tokens=[(eos, list(SPECIAL_TOKENS).index("eos_token"))])
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


def ends_with_eos(tokenizer) -> bool:
    """Whether `tokenizer(text)` is the text's ids and EOS, by itself (its post-processor)."""
    if tokenizer.eos_token_id is None:
        return False
    plain = tokenizer("x", add_special_tokens=False)["input_ids"]
    # only EOS, nothing else (a BART/RoBERTa-style tokenizer also prepends BOS: it is framed the old way)
    return tokenizer("x")["input_ids"] == plain + [tokenizer.eos_token_id]


def first_batches(split, limit: int | None = None, batch_size: int = 1000) -> Iterator[dict]:
    """Batches (column -> values) of a split's first `limit` rows (all rows when None; a streamed split: the
    first STREAMED_TOKENIZER_EXAMPLES when None)."""
    if isinstance(split, IterableDataset):
        split = split.take(STREAMED_TOKENIZER_EXAMPLES if limit is None else limit)
    elif limit is not None:
        split = split.select(range(min(limit, len(split))))
    return split.iter(batch_size=batch_size)


def tokenizer_for(recipe: Recipe, train_split, texts_of: Callable[[dict], list[str]],
                  end_with_eos: bool = False) -> PreTrainedTokenizerFast:
    """The recipe's tokenizer (`tokenizer.name_or_path`, else the one saved with `model.name_or_path`), or a
    byte-level BPE trained on the training split's texts (the first `tokenizer.max_training_documents` rows;
    of a streamed split, the first STREAMED_TOKENIZER_EXAMPLES unless that key says): `texts_of(batch)` gives
    the texts of a batch of rows (the task knows which columns hold text: documents, both sides of translation
    pairs, chat messages). `end_with_eos`: the trained tokenizer ends every text with EOS (the task trains so);
    a loaded tokenizer is used as it is."""
    if recipe.tokenizer.name_or_path is not None:
        try:
            return load_tokenizer(recipe.tokenizer.name_or_path)
        except (OSError, ValueError) as error:
            raise RecipeError(f"tokenizer.name_or_path: cannot load {recipe.tokenizer.name_or_path}: {error}") from None
    if recipe.model.name_or_path is not None and os.path.isfile(os.path.join(recipe.model.name_or_path, "tokenizer.json")):
        return load_tokenizer(recipe.model.name_or_path)

    def texts():
        for batch in first_batches(train_split, recipe.tokenizer.max_training_documents):
            yield [t for t in texts_of(batch) if isinstance(t, str) and t]

    logger.info("Training a byte-level BPE tokenizer (vocab %d)", recipe.tokenizer.vocab_size)
    return train_tokenizer(texts(), recipe.tokenizer.vocab_size, recipe.tokenizer.min_frequency, end_with_eos)


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
    """Batches of texts from a datasets split (streamed or not) for tokenizer training."""
    for batch in first_batches(dataset, limit, batch_size):
        yield batch[column]
