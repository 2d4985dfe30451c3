"""Tiny model configurations shared by the tests: one entry per backbone (pairing) under test."""

from __future__ import annotations

import hf_llm

TINY = dict(
    vocab_size=61,
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=64,
    dropout=0.0,
    max_position_embeddings=256,
    pad_token_id=0,
    bos_token_id=1,
    eos_token_id=2,
)

# Decoder-only language models.
LM_CASES: dict[str, dict] = {
    "transformer": dict(backbone="transformer"),
}

# Encoder-decoders: "<encoder>-<decoder>" pairs.
SEQ2SEQ_CASES: dict[str, dict] = {
    "transformer-transformer": dict(encoder_backbone="transformer", decoder_backbone="transformer"),
}


def lm_config(case: str, **overrides) -> hf_llm.HfLlmConfig:
    return hf_llm.HfLlmConfig(**{**TINY, **LM_CASES[case], **overrides})


def seq2seq_config(case: str, **overrides) -> hf_llm.HfLlmConfig:
    fields = {**TINY, "is_encoder_decoder": True, "decoder_start_token_id": 1, **SEQ2SEQ_CASES[case], **overrides}
    return hf_llm.HfLlmConfig(**fields)


def tiny_tokenizer():
    """A 61-token word-level tokenizer (ids match TINY): <pad> <s> </s> <unk>, then w0..w56."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "<s>": 1, "</s>": 2, "<unk>": 3}
    vocab.update({f"w{i}": i + 4 for i in range(TINY["vocab_size"] - 4)})
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", bos_token="<s>", eos_token="</s>", unk_token="<unk>"
    )
