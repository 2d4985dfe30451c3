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
    # Large enough that logits are O(1), so absolute tolerances in the tests mean something.
    initializer_range=0.2,
    pad_token_id=0,
    bos_token_id=1,
    eos_token_id=2,
)

# Decoder-only language models.
LM_CASES: dict[str, dict] = {
    "transformer": dict(backbone="transformer"),
    "rnn-lstm": dict(backbone="rnn", rnn_cell="lstm"),
    "rnn-gru": dict(backbone="rnn", rnn_cell="gru"),
    "cnn": dict(backbone="cnn", cnn_kernel_size=3),
    "cnn[spec,weight_norm]": dict(backbone="cnn", cnn_decoder_spec=[[32, 3], [48, 2], [48, 4]], cnn_weight_norm=True),
}

# Encoder-decoders: "<encoder>-<decoder>" pairs.
def _rnn(cell, attention, bidirectional, input_feeding=True, init_state="encoder", encoder="rnn", decoder="rnn"):
    return dict(encoder_backbone=encoder, decoder_backbone=decoder, rnn_cell=cell, rnn_attention=attention,
                rnn_bidirectional_encoder=bidirectional, rnn_input_feeding=input_feeding, rnn_init_state=init_state)


SEQ2SEQ_CASES: dict[str, dict] = {
    "transformer-transformer": dict(encoder_backbone="transformer", decoder_backbone="transformer"),
    # The recurrent family: both cells, every attention, uni- and bidirectional encoders.
    "rnn-rnn[lstm,bahdanau,bi]": _rnn("lstm", "bahdanau", True),
    "rnn-rnn[gru,bahdanau,uni]": _rnn("gru", "bahdanau", False),
    "rnn-rnn[lstm,luong_dot,uni]": _rnn("lstm", "luong_dot", False, input_feeding=False),
    "rnn-rnn[gru,luong_dot,bi,feed]": _rnn("gru", "luong_dot", True),
    "rnn-rnn[lstm,luong_general,bi,feed]": _rnn("lstm", "luong_general", True),
    "rnn-rnn[gru,luong_general,uni,zeros]": _rnn("gru", "luong_general", False, input_feeding=False, init_state="zeros"),
    "rnn-rnn[lstm,none,bi]": _rnn("lstm", "none", True),
    "rnn-rnn[gru,none,uni]": _rnn("gru", "none", False),
    # Mixed pairs.
    "transformer-rnn[lstm,luong_general,feed]": _rnn("lstm", "luong_general", True, encoder="transformer"),
    "rnn-transformer[gru,bi]": _rnn("gru", "luong_general", True, decoder="transformer"),
    # The convolutional family (ConvS2S) and its mixed pairs.
    "cnn-cnn": dict(encoder_backbone="cnn", decoder_backbone="cnn"),
    "cnn-cnn[spec,weight_norm]": dict(
        encoder_backbone="cnn", decoder_backbone="cnn", cnn_encoder_spec=[[32, 3], [48, 4]],
        cnn_decoder_spec=[[48, 3], [32, 2], [32, 3]], cnn_weight_norm=True,
    ),
    "transformer-cnn": dict(encoder_backbone="transformer", decoder_backbone="cnn"),
    "cnn-rnn[lstm,bahdanau]": _rnn("lstm", "bahdanau", True, encoder="cnn"),
    "rnn-cnn[gru,bi]": _rnn("gru", "luong_general", True, decoder="cnn"),
    "cnn-transformer": dict(encoder_backbone="cnn", decoder_backbone="transformer"),
}


def lm_config(case: str, **overrides) -> hf_llm.HfLlmConfig:
    return hf_llm.HfLlmConfig(**{**TINY, **LM_CASES[case], **overrides})


def seq2seq_config(case: str, **overrides) -> hf_llm.HfLlmConfig:
    fields = {**TINY, "is_encoder_decoder": True, "decoder_start_token_id": 1, **SEQ2SEQ_CASES[case], **overrides}
    return hf_llm.HfLlmConfig(**fields)




