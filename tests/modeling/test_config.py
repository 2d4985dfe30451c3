"""HfLlmConfig: validation errors name the field and the allowed values; round trips through AutoConfig."""

from __future__ import annotations

import pytest
from cases import TINY
from transformers import AutoConfig

import hf_llm


@pytest.mark.parametrize(
    "fields, message",
    [
        (dict(backbone="lstm"), r"backbone='lstm' is not a backbone; allowed values are \['transformer', 'rnn', 'cnn'\]"),
        (dict(is_encoder_decoder=True, decoder_start_token_id=1, encoder_backbone="mamba"), r"encoder_backbone='mamba'"),
        (dict(decoder_backbone="rwkv"), r"decoder_backbone='rwkv' is not a backbone"),
        (dict(hidden_size=30, num_attention_heads=4), r"hidden_size=30 is not divisible by num_attention_heads=4"),
        (dict(hidden_size=0), r"hidden_size=0 must be a positive integer"),
        (dict(vocab_size=-5), r"vocab_size=-5 must be a positive integer"),
        (dict(num_hidden_layers=0), r"num_hidden_layers=0 must be a positive integer"),
        (dict(num_attention_heads=0), r"num_attention_heads=0 must be a positive integer"),
        (dict(intermediate_size=0), r"intermediate_size=0 must be a positive integer"),
        (dict(max_position_embeddings=0), r"max_position_embeddings=0 must be a positive integer"),
        (dict(hidden_size=32.0), r"hidden_size=32.0 must be a positive integer"),
        (dict(is_encoder_decoder=True, decoder_start_token_id=1, decoder_layers=0), r"decoder_layers=0"),
        (dict(is_encoder_decoder=True), r"decoder_start_token_id is required for an encoder-decoder"),
        (dict(encoder_backbone="transformer"), r"encoder_backbone='transformer' is set but is_encoder_decoder=False"),
        (dict(encoder_layers=2), r"encoder_layers=2 is set but is_encoder_decoder=False"),
        (dict(dropout=1.5), r"dropout=1.5 must be a number in \[0, 1\)"),
        (dict(attention_dropout=-0.1), r"attention_dropout=-0.1"),
        (dict(hidden_act="tanhh"), r"hidden_act='tanhh' is not supported"),
        (dict(pad_token_id=61), r"pad_token_id=61 is outside the vocabulary"),
        (dict(eos_token_id=[2, 99]), r"eos_token_id=99 is outside the vocabulary"),
        (dict(tie_word_embeddings="yes"), r"tie_word_embeddings='yes' must be true or false"),
    ],
)
def test_invalid_config_raises_value_error_naming_the_field(fields, message):
    with pytest.raises(ValueError, match=message):
        hf_llm.HfLlmConfig(**{**TINY, **fields})


def test_defaults_are_valid_and_per_side_fields_fall_back_to_the_shared_ones():
    config = hf_llm.HfLlmConfig(is_encoder_decoder=True, decoder_start_token_id=1, decoder_layers=3)
    assert config.side_backbone("encoder") == config.side_backbone("decoder") == "transformer"
    assert config.side_layers("encoder") == config.num_hidden_layers
    assert config.side_layers("decoder") == 3
    assert config.intermediate_size == 4 * config.hidden_size


def test_config_round_trips_through_auto_config(tmp_path):
    config = hf_llm.HfLlmConfig(**{**TINY, "is_encoder_decoder": True, "decoder_start_token_id": 1, "decoder_layers": 3})
    config.save_pretrained(tmp_path)
    loaded = AutoConfig.from_pretrained(tmp_path)
    assert type(loaded) is hf_llm.HfLlmConfig
    drop = {"_name_or_path"}
    assert {k: v for k, v in loaded.to_dict().items() if k not in drop} == {
        k: v for k, v in config.to_dict().items() if k not in drop
    }
    assert loaded.auto_map["AutoModelForSeq2SeqLM"] == "modeling_hf_llm.HfLlmForSeq2SeqLM"


def test_a_bad_config_file_fails_when_loaded(tmp_path):
    hf_llm.HfLlmConfig(**TINY).save_pretrained(tmp_path)
    path = tmp_path / "config.json"
    path.write_text(path.read_text().replace('"backbone": "transformer"', '"backbone": "transformr"'))
    with pytest.raises(ValueError, match="backbone='transformr' is not a backbone"):
        AutoConfig.from_pretrained(tmp_path)


def test_heads_reject_the_wrong_kind_of_config():
    lm = hf_llm.HfLlmConfig(**TINY)
    s2s = hf_llm.HfLlmConfig(**{**TINY, "is_encoder_decoder": True, "decoder_start_token_id": 1})
    with pytest.raises(ValueError, match="use HfLlmForSeq2SeqLM"):
        hf_llm.HfLlmForCausalLM(s2s)
    with pytest.raises(ValueError, match="set is_encoder_decoder=True"):
        hf_llm.HfLlmForSeq2SeqLM(lm)


def test_what_callers_outside_the_models_ask_the_config():
    def config(**fields):
        return hf_llm.HfLlmConfig(**{**TINY, **fields})

    # the longest input: bounded only where a stack has learned positions (the convolutional family)
    assert config(backbone="transformer").max_input_positions is None
    assert config(backbone="rnn").max_input_positions is None
    assert config(backbone="cnn").max_input_positions == TINY["max_position_embeddings"]
    mixed = config(is_encoder_decoder=True, decoder_start_token_id=1, encoder_backbone="cnn", decoder_backbone="rnn")
    assert mixed.max_input_positions == TINY["max_position_embeddings"]
    # hidden_size must be a multiple of the head count and, with a bidirectional RNN encoder, of 2
    assert config(backbone="transformer").hidden_size_multiple == 4
    assert config(backbone="rnn").hidden_size_multiple == 1
    assert config(hidden_size=48, num_attention_heads=3, is_encoder_decoder=True, decoder_start_token_id=1,
                  encoder_backbone="rnn", decoder_backbone="transformer").hidden_size_multiple == 6
    # a warm start's encoder-decoder has the decoder-only model's stack on both sides
    lm = config(backbone="cnn", cnn_decoder_spec=[[32, 3], [48, 2]])
    seq2seq = hf_llm.HfLlmConfig(**lm.encoder_decoder_fields(), decoder_start_token_id=1)
    assert seq2seq.is_encoder_decoder and seq2seq.used_backbones() == ["cnn", "cnn"]
    assert seq2seq.cnn_spec("encoder") == seq2seq.cnn_spec("decoder") == lm.cnn_spec("decoder")
    assert "convolutional" in lm.describe() and "blocks [(32, 3), (48, 2)]" in lm.describe_side("decoder")


def test_initializer_range_default_scales_with_width_for_transformer_encoder_decoders_only():
    # issue 19: 0.02 at width 128 made the Transformer encoder-decoder ignore its source on small data
    from hf_llm.modeling.configuration_hf_llm import HfLlmConfig

    pair = dict(is_encoder_decoder=True, decoder_start_token_id=1)
    assert HfLlmConfig(hidden_size=128, **pair).initializer_range == 128**-0.5
    assert HfLlmConfig(hidden_size=128).initializer_range == 0.02  # a decoder-only LM keeps GPT-2's value
    assert HfLlmConfig(hidden_size=128, backbone="rnn", **pair).initializer_range == 0.02
    mixed = HfLlmConfig(hidden_size=128, is_encoder_decoder=True, decoder_start_token_id=1, encoder_backbone="rnn")
    assert mixed.initializer_range == 0.02
    assert HfLlmConfig(hidden_size=128, initializer_range=0.2, **pair).initializer_range == 0.2
    saved = HfLlmConfig(hidden_size=128, **pair)
    assert HfLlmConfig.from_dict(saved.to_dict()).initializer_range == saved.initializer_range
