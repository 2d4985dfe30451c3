"""Named model presets: published architectures (fairseq's shapes) and the sizes the recipes use.

A preset is a plain dict of `HfLlmConfig` fields; `preset_config(name, **overrides)` builds the config.
Presets fix the architecture; the vocabulary size and special tokens come from the tokenizer.
Not part of the exported folder (a checkpoint's config.json already holds every field).
"""

from __future__ import annotations

from .modeling.configuration_hf_llm import HfLlmConfig

PRESETS: dict[str, dict] = {
    # fairseq `transformer_iwslt_de_en` (Vaswani et al. 2017 shape for IWSLT): 6+6 layers, 512 wide, 4 heads, FFN 1024.
    "transformer_iwslt_de_en": dict(
        is_encoder_decoder=True, backbone="transformer", hidden_size=512, num_hidden_layers=6,
        num_attention_heads=4, intermediate_size=1024, dropout=0.1,
    ),
    # fairseq `lstm_wiseman_iwslt_de_en` (Wiseman & Rush 2016): 1-layer LSTM encoder and decoder, 256 wide,
    # unidirectional encoder, attention with input feeding.
    "lstm_wiseman_iwslt_de_en": dict(
        is_encoder_decoder=True, backbone="rnn", rnn_cell="lstm", hidden_size=256, num_hidden_layers=1,
        rnn_bidirectional_encoder=False, rnn_attention="luong_general", rnn_input_feeding=True, dropout=0.1,
    ),
    # fairseq `lstm_luong_wmt_en_de` (Luong et al. 2015): 4-layer LSTMs, 1000 wide, global attention with
    # input feeding.
    "lstm_luong_wmt_en_de": dict(
        is_encoder_decoder=True, backbone="rnn", rnn_cell="lstm", hidden_size=1000, num_hidden_layers=4,
        rnn_bidirectional_encoder=False, rnn_attention="luong_general", rnn_input_feeding=True, dropout=0.1,
    ),
    # Decoder-only language models of about the same size per family, for pretraining recipes.
    "transformer_lm_small": dict(backbone="transformer", hidden_size=256, num_hidden_layers=4, num_attention_heads=4),
    "lstm_lm_small": dict(backbone="rnn", rnn_cell="lstm", hidden_size=512, num_hidden_layers=2),
}


def preset_config(name: str, **overrides) -> HfLlmConfig:
    """`HfLlmConfig` of a named preset; `overrides` replace any of its fields."""
    if name not in PRESETS:
        raise ValueError(f"Unknown preset {name!r}; available presets are {sorted(PRESETS)}.")
    fields = dict(PRESETS[name])
    if fields.get("is_encoder_decoder"):
        fields.setdefault("decoder_start_token_id", overrides.get("bos_token_id", 1))
    fields.update(overrides)
    return HfLlmConfig(**fields)
