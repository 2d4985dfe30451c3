"""Named model presets: published architectures (fairseq's shapes) and the sizes the recipes use.

A preset is a plain dict of `HfLlmConfig` fields; `preset_config(name, **overrides)` builds the config.
Presets fix the architecture; the vocabulary size and special tokens come from the tokenizer.
Not part of the exported folder (a checkpoint's config.json already holds every field).
"""

from __future__ import annotations

import ast

from .modeling.configuration_hf_llm import HfLlmConfig


def parse_layer_spec(text: str) -> list[list[int]]:
    """fairseq's layer spec, e.g. "[(512, 3)] * 9 + [(1024, 3)] * 4", as a list of [channels, kernel] pairs.

    Only list/tuple literals of integers, `+` and `* <int>` are accepted (no code is evaluated).
    """

    def evaluate(node: ast.AST):
        if isinstance(node, (ast.List, ast.Tuple)):
            return [evaluate(element) for element in node.elts]
        if isinstance(node, ast.Constant) and isinstance(node.value, int) and not isinstance(node.value, bool):
            return node.value
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
            return evaluate(node.left) + evaluate(node.right)
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mult):
            return evaluate(node.left) * evaluate(node.right)
        raise ValueError(f"unsupported element {ast.dump(node)}")

    try:
        value = evaluate(ast.parse(text.strip(), mode="eval").body)
        spec = [[int(channels), int(kernel)] for channels, kernel in value]
    except (SyntaxError, ValueError, TypeError) as error:
        raise ValueError(
            f"Cannot read the layer spec {text!r} ({error}); write it as in fairseq, e.g. \"[(256, 3)] * 4\"."
        ) from None
    return spec


PRESETS: dict[str, dict] = {
    # fairseq `transformer_iwslt_de_en` (Vaswani et al. 2017 shape for IWSLT): 6+6 layers, 512 wide, 4 heads, FFN 1024.
    "transformer_iwslt_de_en": dict(
        is_encoder_decoder=True, backbone="transformer", hidden_size=512, num_hidden_layers=6,
        num_attention_heads=4, intermediate_size=1024, dropout=0.1,
    ),
    # fairseq `lstm_wiseman_iwslt_de_en` (Wiseman & Rush 2016): 1-layer LSTM encoder and decoder, 256 wide,
    # unidirectional encoder, attention with input feeding (no residual connections, as published).
    "lstm_wiseman_iwslt_de_en": dict(
        is_encoder_decoder=True, backbone="rnn", rnn_cell="lstm", hidden_size=256, num_hidden_layers=1,
        rnn_bidirectional_encoder=False, rnn_attention="luong_general", rnn_input_feeding=True, dropout=0.1,
        rnn_residual=False,
    ),
    # fairseq `lstm_luong_wmt_en_de` (Luong et al. 2015): 4-layer LSTMs, 1000 wide, global attention with
    # input feeding (no residual connections, as published).
    "lstm_luong_wmt_en_de": dict(
        is_encoder_decoder=True, backbone="rnn", rnn_cell="lstm", hidden_size=1000, num_hidden_layers=4,
        rnn_bidirectional_encoder=False, rnn_attention="luong_general", rnn_input_feeding=True, dropout=0.1,
        rnn_residual=False,
    ),
    # fairseq `fconv_iwslt_de_en` (Gehring et al. 2017 for IWSLT): 4 encoder and 3 decoder blocks of 256
    # channels, kernel 3, embeddings 256.
    "fconv_iwslt_de_en": dict(
        is_encoder_decoder=True, backbone="cnn", hidden_size=256,
        cnn_encoder_spec=parse_layer_spec("[(256, 3)] * 4"), cnn_decoder_spec=parse_layer_spec("[(256, 3)] * 3"),
        cnn_weight_norm=True, dropout=0.1,
    ),
    # fairseq `fconv_wmt_en_de` shape: 15 blocks per side (9 x 512, 4 x 1024, 2 x 1x1 of 2048), embeddings 768.
    "fconv_wmt_en_de": dict(
        is_encoder_decoder=True, backbone="cnn", hidden_size=768,
        cnn_encoder_spec=parse_layer_spec("[(512, 3)] * 9 + [(1024, 3)] * 4 + [(2048, 1)] * 2"),
        cnn_decoder_spec=parse_layer_spec("[(512, 3)] * 9 + [(1024, 3)] * 4 + [(2048, 1)] * 2"),
        cnn_weight_norm=True, dropout=0.1,
    ),
    # fairseq `fconv_lm_dauphin_wikitext103`: the gated convolutional LM (GCNN-14) of Dauphin et al. 2017.
    "gcnn_lm_dauphin_wikitext103": dict(
        backbone="cnn", hidden_size=280, cnn_weight_norm=True, dropout=0.1,
        cnn_decoder_spec=parse_layer_spec(
            "[(850, 6)] * 3 + [(850, 1)] + [(850, 5)] * 4 + [(850, 1)] + [(850, 4)] * 3 + [(1024, 4)] + [(2048, 4)]"
        ),
    ),
    # Decoder-only language models of about the same size per family, for pretraining recipes.
    "transformer_lm_small": dict(backbone="transformer", hidden_size=256, num_hidden_layers=4, num_attention_heads=4),
    "lstm_lm_small": dict(backbone="rnn", rnn_cell="lstm", hidden_size=512, num_hidden_layers=2),
    "gcnn_lm_small": dict(backbone="cnn", hidden_size=256, cnn_decoder_spec=[[512, 4]] * 4),
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
