"""Property-based tests (hypothesis) over random valid configurations of every family and pairing: the
forward pass, cached generation and save/load keep their invariants; random invalid configurations fail
with ValueError."""

from __future__ import annotations

import tempfile

import torch
from helpers import assert_logits_close
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM

import hf_llm

FAMILIES = ["transformer", "rnn", "cnn"]
SETTINGS = settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow],
                    derandomize=True)


@st.composite
def valid_configs(draw) -> dict:
    heads = draw(st.sampled_from([1, 2, 4]))
    fields = dict(
        vocab_size=draw(st.integers(16, 80)),
        hidden_size=heads * draw(st.sampled_from([4, 8])),
        num_attention_heads=heads,
        num_hidden_layers=draw(st.integers(1, 2)),
        intermediate_size=draw(st.integers(8, 48)),
        dropout=0.0,
        max_position_embeddings=64,
        tie_word_embeddings=draw(st.booleans()),
        rnn_cell=draw(st.sampled_from(["lstm", "gru"])),
        rnn_bidirectional_encoder=draw(st.booleans()),
        rnn_attention=draw(st.sampled_from(["bahdanau", "luong_dot", "luong_general", "none"])),
        rnn_input_feeding=draw(st.booleans()),
        cnn_kernel_size=draw(st.integers(1, 4)),
        initializer_range=0.2,
    )
    if draw(st.booleans()):
        fields.update(is_encoder_decoder=True, decoder_start_token_id=1,
                      encoder_backbone=draw(st.sampled_from(FAMILIES)), decoder_backbone=draw(st.sampled_from(FAMILIES)),
                      encoder_layers=draw(st.integers(1, 2)))
    else:
        fields["backbone"] = draw(st.sampled_from(FAMILIES))
    return fields


def build(fields: dict):
    torch.manual_seed(0)
    config = hf_llm.HfLlmConfig(**fields)
    auto = AutoModelForSeq2SeqLM if config.is_encoder_decoder else AutoModelForCausalLM
    model = auto.from_config(config).eval()
    model.generation_config.eos_token_id = None
    return model


def ids(vocab: int, batch: int, length: int, seed: int) -> torch.Tensor:
    return torch.randint(3, vocab, (batch, length), generator=torch.Generator().manual_seed(seed))


@SETTINGS
@given(valid_configs(), st.integers(0, 10_000))
def test_cached_decoding_equals_the_full_forward(fields, seed):
    model = build(fields)
    vocab = fields["vocab_size"]
    source = ids(vocab, 2, 5, seed)
    target = ids(vocab, 2, 6, seed + 1)
    with torch.no_grad():
        if model.config.is_encoder_decoder:
            full = model(input_ids=source, decoder_input_ids=target, use_cache=False).logits
            cache, steps = None, []
            for t in range(target.shape[1]):
                out = model(input_ids=source, decoder_input_ids=target[:, t : t + 1], cache=cache, use_cache=True)
                steps.append(out.logits)
                cache = out.cache
        else:
            full = model(target, use_cache=False).logits
            out = model(target[:, :3], use_cache=True)
            steps, cache = [out.logits], out.cache
            for t in range(3, target.shape[1]):
                out = model(target[:, t : t + 1], cache=cache, use_cache=True)
                steps.append(out.logits)
                cache = out.cache
    assert torch.isfinite(full).all()
    assert_logits_close(torch.cat(steps, dim=1), full)


@SETTINGS
@given(valid_configs(), st.integers(0, 10_000))
def test_generation_with_and_without_cache_and_after_save_load_agree(fields, seed):
    model = build(fields)
    prompt = ids(fields["vocab_size"], 2, 4, seed)
    kwargs = dict(max_new_tokens=4, num_beams=2, do_sample=False, pad_token_id=0)
    with torch.no_grad():
        cached = model.generate(prompt, use_cache=True, **kwargs)
        uncached = model.generate(prompt, use_cache=False, **kwargs)
        assert cached.tolist() == uncached.tolist()
        with tempfile.TemporaryDirectory() as folder:
            model.save_pretrained(folder)
            loaded = type(model).from_pretrained(folder).eval()
            loaded.generation_config.eos_token_id = None
            assert loaded.generate(prompt, **kwargs).tolist() == cached.tolist()


@SETTINGS
@given(valid_configs(), st.integers(0, 10_000))
def test_causality_holds_for_every_configuration(fields, seed):
    model = build(fields)
    vocab = fields["vocab_size"]
    target = ids(vocab, 1, 7, seed)
    changed = target.clone()
    changed[0, 4] = 3 + (int(target[0, 4]) - 3 + 1) % (vocab - 3)
    extra = {"input_ids": ids(vocab, 1, 5, seed + 2)} if model.config.is_encoder_decoder else {}
    with torch.no_grad():
        if model.config.is_encoder_decoder:
            a = model(decoder_input_ids=target, **extra).logits
            b = model(decoder_input_ids=changed, **extra).logits
        else:
            a, b = model(target).logits, model(changed).logits
    assert_logits_close(a[:, :4], b[:, :4])


INVALID = st.one_of(
    st.fixed_dictionaries({"backbone": st.text(min_size=1, max_size=8).filter(lambda s: s not in FAMILIES)}),
    st.fixed_dictionaries({"hidden_size": st.integers(-64, 0)}),
    st.fixed_dictionaries({"num_hidden_layers": st.integers(-4, 0)}),
    st.fixed_dictionaries({"vocab_size": st.integers(-10, 0)}),
    st.fixed_dictionaries({"dropout": st.floats(1.0, 100.0) | st.floats(-10.0, -0.001)}),
    st.fixed_dictionaries({"hidden_size": st.sampled_from([6, 10, 14]), "num_attention_heads": st.just(4)}),
    st.fixed_dictionaries({"rnn_cell": st.text(max_size=6).filter(lambda s: s not in ("lstm", "gru"))}),
    st.fixed_dictionaries({"rnn_attention": st.text(max_size=6).filter(
        lambda s: s not in ("bahdanau", "luong_dot", "luong_general", "none"))}),
    st.fixed_dictionaries({"cnn_kernel_size": st.integers(-3, 0)}),
    st.fixed_dictionaries({"pad_token_id": st.integers(64, 1000)}),
    st.fixed_dictionaries({"is_encoder_decoder": st.just(True)}),
    st.fixed_dictionaries({"cnn_decoder_spec": st.lists(st.lists(st.integers(-5, 0), min_size=2, max_size=2), min_size=1, max_size=3)}),
)


@settings(max_examples=60, deadline=None, derandomize=True)
@given(INVALID)
def test_invalid_configurations_fail_with_value_error(bad):
    fields = {"vocab_size": 64, "hidden_size": 16, "num_attention_heads": 4, **bad}
    try:
        hf_llm.HfLlmConfig(**fields)
    except ValueError as error:
        assert str(error)
    else:
        raise AssertionError(f"{bad} was accepted")
