"""What the convolutional family promises beyond the shared invariants."""

from __future__ import annotations

import math

import pytest
import torch
from helpers import make_lm, make_seq2seq, random_ids
from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM

import hf_llm


@pytest.mark.parametrize("case", ["cnn", "cnn[spec,weight_norm]"])
def test_cache_keeps_each_blocks_inputs_one_per_token(case):
    """One cache layer per block, holding that block's convolution inputs `(B, 1, T, C_in)`: what the next
    step convolves with, and what `crop` rewinds."""
    model = make_lm(case)
    spec = model.config.cnn_spec("decoder")
    inputs = [spec[0][0]] + [c for c, _ in spec]
    ids = random_ids(2, 5, seed=60)
    with torch.no_grad():
        cache = model(ids, use_cache=True).cache
        for step in range(3):
            cache = model(random_ids(2, 1, seed=61 + step), cache=cache, use_cache=True).cache
    assert [tuple(layer.keys.shape) for layer in cache.layers] == [(2, 1, 8, inputs[i]) for i in range(len(spec))]
    assert cache.get_seq_length() == 8
    cache.crop(-3)
    assert cache.get_seq_length() == 5


def test_one_new_token_costs_one_conv_step_per_layer():
    """During decoding each causal convolution sees exactly its kernel width of inputs, never the prefix."""
    model = make_lm("cnn[spec,weight_norm]")
    widths = []
    hooks = [block.conv.register_forward_pre_hook(lambda m, args: widths.append(args[0].shape[-1]))
             for block in model.model.decoder.layers]
    with torch.no_grad():
        model.generate(random_ids(1, 30, seed=62), max_new_tokens=4, do_sample=False, pad_token_id=0)
    for hook in hooks:
        hook.remove()
    kernels = [k for _, k in model.config.cnn_spec("decoder")]
    prefill = [30 + k - 1 for k in kernels]
    assert widths == prefill + kernels * 3


def test_multi_step_attention_uses_source_embeddings_as_values():
    model = make_seq2seq("cnn-cnn")
    encoder = model.get_encoder()
    assert all(block.attention is not None for block in model.model.decoder.layers)  # one attention per layer
    src, tgt = random_ids(1, 6, seed=63), random_ids(1, 5, seed=64)
    with torch.no_grad():
        encoded = encoder(input_ids=src)
        embedding = encoder.embed_norm(encoder.embed_tokens(src) + encoder.embed_positions(torch.arange(6)[None]))
        torch.testing.assert_close(encoded.attention_values, (encoded.last_hidden_state + embedding) * math.sqrt(0.5))
        base = model(encoder_outputs=encoded, decoder_input_ids=tgt).logits
        encoded.attention_values = encoded.attention_values + 1.0
        shifted = model(encoder_outputs=encoded, decoder_input_ids=tgt).logits
    assert not torch.allclose(base, shifted, atol=1e-4), "values must reach the decoder"


def test_convs2s_initialisation_and_weight_norm():
    torch.manual_seed(0)
    config = hf_llm.HfLlmConfig(backbone="cnn", vocab_size=100, hidden_size=64, cnn_decoder_spec=[[128, 5]] * 2,
                                dropout=0.2, cnn_weight_norm=True)
    model = AutoModelForCausalLM.from_config(config)
    conv = model.model.decoder.layers[0].conv
    assert hasattr(conv, "parametrizations"), "weight normalisation requested"
    expected = math.sqrt(4 * (1 - 0.2) / (5 * 128))
    assert abs(conv.weight.std().item() - expected) / expected < 0.05
    assert torch.count_nonzero(conv.bias) == 0


def test_fairseq_presets_and_layer_specs():
    assert hf_llm.parse_layer_spec("[(512, 3)] * 2 + [(1024, 1)]") == [[512, 3], [512, 3], [1024, 1]]
    with pytest.raises(ValueError, match="Cannot read the layer spec"):
        hf_llm.parse_layer_spec("__import__('os').system('true')")
    iwslt = hf_llm.preset_config("fconv_iwslt_de_en", vocab_size=1000)
    assert iwslt.cnn_spec("encoder") == [(256, 3)] * 4 and iwslt.cnn_spec("decoder") == [(256, 3)] * 3
    model = AutoModelForSeq2SeqLM.from_config(iwslt)
    assert len(model.model.encoder.layers) == 4 and len(model.model.decoder.layers) == 3
    wmt = hf_llm.preset_config("fconv_wmt_en_de", vocab_size=1000)
    assert wmt.side_layers("encoder") == 15 and wmt.cnn_spec("decoder")[-1] == (2048, 1) and wmt.hidden_size == 768
    gcnn = hf_llm.preset_config("gcnn_lm_dauphin_wikitext103", vocab_size=1000)
    assert not gcnn.is_encoder_decoder and gcnn.side_layers("decoder") == 14


@pytest.mark.parametrize(
    "fields, message",
    [
        (dict(cnn_decoder_spec=[[32, 0]]), r"cnn_decoder_spec=\[\[32, 0\]\] must be a non-empty list"),
        (dict(cnn_decoder_spec=[]), r"cnn_decoder_spec=\[\] must be a non-empty list"),
        (dict(cnn_decoder_spec=[[32, 3]], decoder_layers=2), r"decoder_layers=2 disagrees with cnn_decoder_spec"),
        (dict(cnn_kernel_size=0), r"cnn_kernel_size=0 must be a positive integer"),
        (dict(cnn_weight_norm="no"), r"cnn_weight_norm='no' must be true or false"),
    ],
)
def test_invalid_cnn_fields_raise(fields, message):
    with pytest.raises(ValueError, match=message):
        hf_llm.HfLlmConfig(backbone="cnn", vocab_size=100, hidden_size=32, **fields)
