"""transformers' model contract, family by family, without the conformance kit: output fields, tuple outputs,
generate's dict outputs, assisted and prompt-lookup decoding, continuing from a cache, the loading rules and
gradient checkpointing. Each test mirrors what transformers' common tests assert, on the project's tiny cases."""

from __future__ import annotations

import pytest
import torch
from cases import LM_CASES, lm_config, seq2seq_config
from helpers import assert_logits_close, left_pad, make_lm, make_seq2seq, random_ids
from transformers import (
    AutoModel,
    AutoModelForCausalLM,
    AutoModelForSeq2SeqLM,
    AutoModelForSequenceClassification,
)

LMS = ["transformer", "rnn-lstm", "rnn-gru", "cnn"]
SEQ2SEQ = ["transformer-transformer", "rnn-rnn[lstm,luong_general,bi,feed]", "rnn-rnn[gru,bahdanau,uni]",
           "cnn-cnn", "transformer-cnn", "rnn-transformer[gru,bi]"]
HIDDEN, LAYERS = 32, 2


def make(case: str, **overrides):
    return make_lm(case, **overrides) if case in LM_CASES else make_seq2seq(case, **overrides)


def inputs_for(case: str) -> dict:
    return dict(input_ids=random_ids(2, 6)) if case in LM_CASES else seq2seq_inputs()


def seq2seq_inputs(batch: int = 2) -> dict:
    return dict(input_ids=random_ids(batch, 6, seed=3), decoder_input_ids=random_ids(batch, 5, seed=4))


# 1. output_hidden_states ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("case", LMS)
def test_lm_hidden_states_are_embeddings_plus_one_per_block(case):
    model = make_lm(case)
    ids = random_ids(2, 7)
    out = model(ids, output_hidden_states=True)
    assert len(out.hidden_states) == LAYERS + 1
    assert all(h.shape == (2, 7, HIDDEN) for h in out.hidden_states)
    base = model.model(ids, output_hidden_states=True)
    torch.testing.assert_close(base.hidden_states[-1], base.last_hidden_state)
    model.config.output_hidden_states = True  # the config's default counts too
    assert len(model(ids).hidden_states) == LAYERS + 1
    classifier = AutoModelForSequenceClassification.from_config(lm_config(case, num_labels=3))
    assert len(classifier(ids, output_hidden_states=True).hidden_states) == LAYERS + 1


@pytest.mark.parametrize("case", SEQ2SEQ)
def test_seq2seq_hidden_states_on_both_sides(case):
    out = make_seq2seq(case)(**seq2seq_inputs(), output_hidden_states=True)
    assert [h.shape for h in out.encoder_hidden_states] == [(2, 6, HIDDEN)] * (LAYERS + 1)
    assert [h.shape for h in out.decoder_hidden_states] == [(2, 5, HIDDEN)] * (LAYERS + 1)
    torch.testing.assert_close(out.encoder_hidden_states[-1], out.encoder_last_hidden_state)


@pytest.mark.parametrize("case", ["transformer", "transformer-transformer", "cnn-cnn"])
def test_hidden_states_keep_their_gradients(case):
    model = make(case)
    out = model(**inputs_for(case), output_hidden_states=True)
    first = out.hidden_states[0] if case in LM_CASES else out.decoder_hidden_states[0]
    first.retain_grad()
    out.logits[0, -1].sum().backward()
    assert first.grad is not None and first.grad.abs().sum() > 0


# 2. output_attentions ------------------------------------------------------------------------------------------
def test_transformer_attention_weights_are_softmax_rows_over_unmasked_keys():
    model = AutoModelForSeq2SeqLM.from_config(seq2seq_config("transformer-transformer"), attn_implementation="eager")
    ids, mask = left_pad([random_ids(1, 6, seed=5)[0], random_ids(1, 4, seed=6)[0]])
    out = model.eval()(input_ids=ids, attention_mask=mask, decoder_input_ids=random_ids(2, 5), output_attentions=True)
    heads = model.config.num_attention_heads
    assert [a.shape for a in out.encoder_attentions] == [(2, heads, 6, 6)] * LAYERS
    assert [a.shape for a in out.decoder_attentions] == [(2, heads, 5, 5)] * LAYERS
    assert [a.shape for a in out.cross_attentions] == [(2, heads, 5, 6)] * LAYERS
    for weights in out.cross_attentions:
        torch.testing.assert_close(weights.sum(-1), torch.ones(2, heads, 5))
        assert weights[1, :, :, :2].abs().max() < 1e-6, "padded source positions get no attention"
    causal = out.decoder_attentions[0][0, 0]
    assert torch.count_nonzero(torch.triu(causal, diagonal=1)) == 0, "no attention to the future"


@pytest.mark.parametrize("case", ["rnn-rnn[lstm,luong_general,bi,feed]", "rnn-rnn[gru,bahdanau,uni]", "cnn-cnn"])
def test_rnn_and_convs2s_attention_over_the_source_is_returned(case):
    model = make_seq2seq(case)
    out = model(**seq2seq_inputs(), output_attentions=True)
    expected = 1 if case.startswith("rnn") else LAYERS  # one attention (top of the RNN), one per ConvS2S block
    assert [a.shape for a in out.cross_attentions] == [(2, 1, 5, 6)] * expected
    for weights in out.cross_attentions:
        torch.testing.assert_close(weights.sum(-1), torch.ones(2, 1, 5))


# 3. return_dict=False ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("case", ["transformer", "rnn-lstm", "cnn-cnn"])
def test_tuple_outputs_hold_the_same_values_in_model_output_order(case):
    model = make(case)
    inputs = inputs_for(case)
    as_dict = model(**inputs, output_hidden_states=True, use_cache=True)
    as_tuple = model(**inputs, output_hidden_states=True, use_cache=True, return_dict=False)
    assert isinstance(as_tuple, tuple)
    torch.testing.assert_close(as_tuple[0], as_dict.logits)
    model.config.return_dict = False
    torch.testing.assert_close(model(**inputs)[0], as_dict.logits)
    name = "hidden_states" if case in LM_CASES else "decoder_hidden_states"
    hidden, position = as_dict[name], list(as_dict.keys()).index(name)
    for a, b in zip(as_tuple[position], hidden):
        torch.testing.assert_close(a, b)


# 4. generate's dict outputs ------------------------------------------------------------------------------------
@pytest.mark.parametrize("case", LMS + ["rnn-rnn[lstm,luong_general,bi,feed]", "cnn-cnn", "transformer-transformer"])
@pytest.mark.parametrize("mode", [dict(do_sample=False), dict(do_sample=True), dict(num_beams=2, do_sample=False)])
def test_generate_returns_scores_logits_and_hidden_states(case, mode):
    model = make(case)
    ids = random_ids(2, 5)
    torch.manual_seed(0)
    out = model.generate(ids, max_new_tokens=3, min_new_tokens=3, return_dict_in_generate=True, output_scores=True,
                         output_logits=True, output_hidden_states=True, **mode)
    vocab = model.config.vocab_size
    rows = 2 * mode.get("num_beams", 1)
    assert len(out.scores) == len(out.logits) == 3
    assert all(s.shape == (rows, vocab) for s in out.scores)
    hidden = out.hidden_states if case in LM_CASES else out.decoder_hidden_states
    assert len(hidden) == 3 and all(len(step) == LAYERS + 1 for step in hidden)
    if case not in LM_CASES:
        assert len(out.encoder_hidden_states) == LAYERS + 1
    if not mode.get("do_sample") and mode.get("num_beams", 1) == 1:
        # greedy: each token is the argmax of its step's logits
        new = out.sequences[:, -3:]
        torch.testing.assert_close(torch.stack(out.logits, 1).argmax(-1), new)


# 5. assisted (speculative) and prompt-lookup decoding ----------------------------------------------------------
@pytest.mark.parametrize("case", LMS + ["rnn-rnn[lstm,luong_general,bi,feed]", "rnn-rnn[gru,luong_dot,bi,feed]",
                                        "cnn-cnn", "transformer-transformer", "transformer-rnn[lstm,luong_general,feed]"])
def test_assisted_and_prompt_lookup_decoding_equal_greedy(case):
    model = make(case)
    assistant = make(case, initializer_range=0.05)  # another model of the same family drafts the tokens
    ids, mask = left_pad([random_ids(1, 6, seed=7)[0], random_ids(1, 4, seed=8)[0]])
    common = dict(attention_mask=mask, max_new_tokens=8, min_new_tokens=8, do_sample=False)
    greedy = model.generate(ids, **common)
    for row in range(2):  # assisted decoding runs one sequence at a time
        one = dict(common, attention_mask=mask[row : row + 1])
        assisted = model.generate(ids[row : row + 1], assistant_model=assistant, **one)
        assert torch.equal(assisted, greedy[row : row + 1])
        lookup = model.generate(ids[row : row + 1], prompt_lookup_num_tokens=3, **one)
        assert torch.equal(lookup, greedy[row : row + 1])


@pytest.mark.parametrize("case", ["transformer", "rnn-lstm", "cnn"])
def test_crop_rewinds_the_cache_to_an_earlier_token(case):
    model = make_lm(case)
    ids = random_ids(2, 9)
    with torch.no_grad():
        cache = model(ids[:, :5], use_cache=True).cache
        cache = model(ids[:, 5:8], cache=cache, use_cache=True).cache
        cache.crop(-2)  # back to 6 tokens
        assert cache.get_seq_length() == 6
        resumed = model(ids[:, 6:9], cache=cache, use_cache=True).logits
        full = model(ids).logits
    assert_logits_close(resumed, full[:, 6:9])


# 6. continuing from a returned cache, or from inputs_embeds ----------------------------------------------------
@pytest.mark.parametrize("case", LMS + ["rnn-rnn[lstm,luong_general,bi,feed]", "cnn-cnn", "transformer-transformer"])
def test_generation_continued_from_its_cache_equals_one_call(case):
    model = make(case)
    ids = random_ids(2, 5)
    whole = model.generate(ids, max_new_tokens=8, min_new_tokens=8, do_sample=False)
    first = model.generate(ids, max_new_tokens=4, min_new_tokens=4, do_sample=False, return_dict_in_generate=True)
    # As in transformers' own test: an encoder-decoder continues from its decoder tokens and their full mask.
    extra = {} if case in LM_CASES else dict(
        input_ids=ids, decoder_input_ids=first.sequences, decoder_attention_mask=torch.ones_like(first.sequences))
    second = model.generate(
        **(extra or dict(input_ids=first.sequences)), cache=first.past_key_values, max_new_tokens=4, min_new_tokens=4,
        do_sample=False,
    )
    assert torch.equal(second, whole)


@pytest.mark.parametrize("case", LMS)
def test_generation_from_inputs_embeds_equals_from_ids(case):
    model = make_lm(case)
    ids = random_ids(2, 5)
    from_ids = model.generate(ids, max_new_tokens=5, min_new_tokens=5, do_sample=False)
    embeds = model.get_input_embeddings()(ids)
    from_embeds = model.generate(inputs_embeds=embeds, max_new_tokens=5, min_new_tokens=5, do_sample=False)
    assert torch.equal(from_embeds, from_ids[:, 5:])


# 7. the loading contract ---------------------------------------------------------------------------------------
def test_ignore_mismatched_sizes_reinitialises_and_a_plain_load_refuses(tmp_path):
    model = AutoModelForSequenceClassification.from_config(lm_config("rnn-lstm", num_labels=3))
    model.save_pretrained(tmp_path)
    with pytest.raises(RuntimeError, match="ignore_mismatched_sizes"):
        AutoModelForSequenceClassification.from_pretrained(tmp_path, num_labels=5)
    reloaded = AutoModelForSequenceClassification.from_pretrained(tmp_path, num_labels=5, ignore_mismatched_sizes=True)
    assert reloaded.score.weight.shape == (5, HIDDEN)
    torch.testing.assert_close(reloaded.model.decoder.embed_tokens.weight, model.model.decoder.embed_tokens.weight)


def test_a_checkpoint_that_fits_only_partly_is_still_an_error(tmp_path):
    make_lm("cnn").save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="family or layer count"):
        AutoModelForCausalLM.from_pretrained(tmp_path, num_hidden_layers=3)


def test_fresh_initialisation_from_an_empty_state_dict_equals_the_constructor():
    config = seq2seq_config("cnn-cnn")
    torch.manual_seed(0)
    built = AutoModelForSeq2SeqLM.from_config(config)
    loaded = type(built).from_pretrained(None, config=config, state_dict={})
    assert sorted(loaded.state_dict()) == sorted(built.state_dict())
    assert not any(p.device.type == "meta" for p in loaded.parameters())


def test_tied_weights_reload_with_nothing_missing(tmp_path):
    model = make_seq2seq("transformer-rnn[lstm,luong_general,feed]")
    model.save_pretrained(tmp_path)
    reloaded, info = AutoModelForSeq2SeqLM.from_pretrained(tmp_path, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    assert reloaded.lm_head.weight.data_ptr() == reloaded.model.encoder.embed_tokens.weight.data_ptr()
    base, base_info = AutoModel.from_pretrained(tmp_path, output_loading_info=True)
    assert not base_info["missing_keys"]
    torch.testing.assert_close(base.decoder.embed_tokens.weight, model.model.encoder.embed_tokens.weight)


# 8. gradient checkpointing, reentrant or not -------------------------------------------------------------------
@pytest.mark.parametrize("case", ["transformer", "rnn-lstm", "cnn", "transformer-transformer",
                                  "rnn-rnn[lstm,luong_general,bi,feed]", "cnn-cnn"])
@pytest.mark.parametrize("reentrant", [True, False])
def test_gradient_checkpointing_recomputes_and_gives_the_same_gradients(case, reentrant):
    model = make(case).train()
    labels = random_ids(2, 6 if case in LM_CASES else 5)
    inputs = dict(**inputs_for(case), labels=labels, attention_mask=torch.tensor([[0, 1, 1, 1, 1, 1], [1] * 6]))
    calls = []
    for module in model.modules():
        if isinstance(module, (torch.nn.Linear, torch.nn.LSTM, torch.nn.GRU, torch.nn.Conv1d)):
            module.register_forward_pre_hook(lambda *a: calls.append(1))

    def gradients() -> tuple[dict, int]:
        calls.clear()
        model.zero_grad(set_to_none=True)
        model(**inputs).loss.backward()
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}, len(calls)

    expected, plain_calls = gradients()
    model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": reentrant})
    got, checkpointed_calls = gradients()
    assert checkpointed_calls > plain_calls, "the backward pass recomputes the checkpointed layers"
    assert got.keys() == expected.keys()
    for name, grad in expected.items():
        torch.testing.assert_close(got[name], grad, atol=1e-5, rtol=1e-4, msg=name)


# Checkpoints saved by hf_llm before the per-token cache layers and the HfLlm* class names ------------------------
@pytest.mark.parametrize("name", ["lm_transformer", "lm_rnn", "lm_cnn", "s2s_transformer", "s2s_rnn", "s2s_cnn"])
def test_checkpoints_of_the_previous_layout_load_with_their_logits(name):
    from pathlib import Path

    from safetensors.torch import load_file

    folder = Path(__file__).parent.parent / "data" / "layout_v1" / name
    expected = load_file(folder / "expected.safetensors")
    auto = AutoModelForCausalLM if name.startswith("lm_") else AutoModelForSeq2SeqLM
    # ConvS2S models of that layout were trained without the attention scaling that is now the default.
    model = auto.from_pretrained(folder, **({"cnn_attention_scaling": False} if name == "s2s_cnn" else {})).eval()
    ids = expected["input_ids"]
    with torch.no_grad():
        logits = model(ids).logits if name.startswith("lm_") else model(ids, decoder_input_ids=ids).logits
    assert_logits_close(logits, expected["logits"])


@pytest.mark.parametrize("case", ["transformer", "rnn-lstm", "cnn", "transformer-transformer", "rnn-rnn[gru,bahdanau,uni]",
                                  "cnn-cnn"])
@pytest.mark.parametrize("tie", [True, False])
def test_the_trainer_reloads_a_best_checkpoint_without_missing_weights(case, tie, tmp_path):
    """`load_best_model_at_end` loads model.safetensors with `load_state_dict(strict=False)` and warns about any
    missing key unless the missing keys are the model's `_keys_to_ignore_on_save`, which it then ties: tied weights
    (saved once) are exactly those, and after the tie the model is the saved one."""
    from safetensors.torch import load_file

    make = make_lm if case in LM_CASES else make_seq2seq
    model = make(case, tie_word_embeddings=tie)
    model.save_pretrained(tmp_path)
    other = make(case, tie_word_embeddings=tie)
    with torch.no_grad():
        for parameter in other.parameters():
            parameter.add_(1.0)
    loaded = other.load_state_dict(load_file(tmp_path / "model.safetensors"), strict=False)
    assert set(loaded.missing_keys) == set(other._keys_to_ignore_on_save) and not loaded.unexpected_keys
    assert bool(loaded.missing_keys) == tie
    other.tie_weights()
    ids = random_ids(2, 7)
    inputs = {"input_ids": ids, **({} if case in LM_CASES else {"decoder_input_ids": ids})}
    assert_logits_close(other(**inputs).logits, model(**inputs).logits)
