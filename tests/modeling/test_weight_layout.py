"""The decoding weight layout (hf_llm/modeling/weight_layout.py): `generate` on one sequence on CPU stores the float32
weights that multiply one row at a time column-major, and `generate` on several sequences or `train()` puts them back
row-major; neither values, nor ties, nor tokens, nor what a checkpoint holds change. And the eager one-token RNN step
(`step_rnn`, taken when nothing records gradients) equals the fused kernel."""

from __future__ import annotations

import copy

import pytest
import torch
from cases import LM_CASES
from helpers import assert_logits_close, make_lm, make_seq2seq, random_ids
from torch import nn
from transformers import AutoModelForCausalLM, GenerationMixin

from hf_llm.modeling.rnn_backbone import forward_rnn, fused_rnn
from hf_llm.modeling.weight_layout import decodes_one_sequence, decoding_layout, decoding_weights, is_column_major

CASES = list(LM_CASES) + ["transformer-transformer", "rnn-rnn[lstm,bahdanau,bi]", "rnn-rnn[gru,luong_dot,bi,feed]",
                          "cnn-cnn", "cnn-rnn[lstm,bahdanau]"]
GREEDY = dict(max_new_tokens=6, min_new_tokens=6, do_sample=False)


def make(case: str):
    return make_lm(case) if case in LM_CASES else make_seq2seq(case)


def logits_of(model, case: str) -> torch.Tensor:
    ids = random_ids(2, 6)
    with torch.no_grad():
        if case in LM_CASES:
            return model(input_ids=ids).logits
        return model(input_ids=ids, decoder_input_ids=random_ids(2, 4, seed=3)).logits


def layout(model) -> set[str]:
    """"column" or "row" for each decoding weight (a set: one element when they agree)."""
    return {"column" if is_column_major(w) else "row" if w.is_contiguous() else "other" for w in decoding_weights(model)}


@pytest.mark.parametrize("case", CASES)
def test_one_sequence_decodes_column_major_with_the_same_values_ties_and_tokens(case):
    model = make(case)
    as_loaded = copy.deepcopy(model)
    before = logits_of(model, case)
    assert layout(model) == {"row"}

    generated = model.generate(random_ids(1, 5), **GREEDY)

    assert layout(model) == {"column"}
    assert decoding_weights(model)
    expected = GenerationMixin.generate(as_loaded, random_ids(1, 5), **GREEDY)  # transformers' own: weights as loaded
    assert torch.equal(generated, expected)
    assert model.lm_head.weight is model.get_input_embeddings().weight, "the tie is kept"
    assert_logits_close(logits_of(model, case), before)
    for (name, a), (_, b) in zip(model.state_dict().items(), as_loaded.state_dict().items()):
        assert torch.equal(a, b), name


@pytest.mark.parametrize("case", ["transformer", "rnn-lstm", "cnn", "rnn-rnn[lstm,bahdanau,bi]"])
@pytest.mark.parametrize("several", [dict(batch=2), dict(num_beams=2), dict(num_return_sequences=2, do_sample=True)])
def test_several_sequences_decode_row_major_again_with_the_same_tokens(case, several):
    model = make(case)
    as_loaded = copy.deepcopy(model)
    model.generate(random_ids(1, 5), **GREEDY)
    assert layout(model) == {"column"}
    options = dict(several)  # (the parametrised dict is shared by the cases)
    ids = random_ids(options.pop("batch", 1), 5)
    kwargs = {**GREEDY, **options}

    torch.manual_seed(0)
    generated = model.generate(ids, **kwargs)

    assert layout(model) == {"row"}
    torch.manual_seed(0)
    assert torch.equal(generated, GenerationMixin.generate(as_loaded, ids, **kwargs))


def test_which_calls_decode_one_sequence():
    model = make_lm("transformer")
    one, two = random_ids(1, 4), random_ids(2, 4)
    assert decodes_one_sequence(model, (one,), {})
    assert decodes_one_sequence(model, (), {"input_ids": one, "max_new_tokens": 3})
    assert decodes_one_sequence(model, (), {"inputs_embeds": torch.zeros(1, 4, 32)})
    assert not decodes_one_sequence(model, (two,), {})
    assert not decodes_one_sequence(model, (one,), {"num_beams": 4})
    assert not decodes_one_sequence(model, (one,), {"num_return_sequences": 3, "do_sample": True})
    assert not decodes_one_sequence(model, (), {})  # nothing to tell: row-major
    model.generation_config.num_beams = 3  # the saved generation config counts too
    assert not decodes_one_sequence(model, (one,), {})


@pytest.mark.parametrize("case", ["transformer", "rnn-lstm", "cnn"])
def test_a_model_that_generated_saves_loads_and_trains_row_major(case, tmp_path):
    model = make(case)
    model.generate(random_ids(1, 4), max_new_tokens=2)
    assert layout(model) == {"column"}
    before = logits_of(model, case)
    model.save_pretrained(tmp_path)
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert layout(reloaded) == {"row"}
    assert_logits_close(logits_of(reloaded, case), before)

    model.train()
    assert layout(model) == {"row"}, "training runs on the row-major weights"
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    ids = random_ids(4, 12)
    losses = []
    for _ in range(5):
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < losses[0]


def test_bfloat16_weights_stay_row_major():
    model = make_lm("transformer").to(torch.bfloat16)
    model.generate(random_ids(1, 4), max_new_tokens=2)
    assert layout(model) == {"row"}


def test_weight_normalised_and_other_weights_are_left_alone():
    model = make_lm("cnn[spec,weight_norm]")
    normalised = [m for m in model.modules() if hasattr(m, "parametrizations")]
    assert normalised
    decoding_layout(model, column_major=True)
    assert layout(model) == {"column"}
    for module in normalised:
        for tensor in module.parametrizations.weight.original1, module.weight:
            assert tensor.is_contiguous()
    embedding = nn.Embedding(10, 4)
    decoding_layout(embedding, column_major=True)  # an embedding that is no LM head: its rows stay contiguous
    assert embedding.weight.is_contiguous()


@pytest.mark.parametrize("cell", [nn.LSTM, nn.GRU])
@pytest.mark.parametrize("layout", ["row-major", "column-major"])
def test_the_eager_one_token_step_equals_the_fused_kernel(cell, layout):
    torch.manual_seed(0)
    rnn = cell(8, 16, num_layers=3, batch_first=True)
    if layout == "column-major":
        decoding_layout(rnn, column_major=True)
        assert all(is_column_major(w) for w in decoding_weights(rnn))
    x = torch.randn(5, 1, 8)
    state = torch.randn(3, 5, 16)
    state = (state, torch.randn(3, 5, 16)) if cell is nn.LSTM else state
    with torch.no_grad():
        out, final = forward_rnn(rnn, x, state, None)
        expected_out, expected_final = fused_rnn(rnn, x, state, None)
    torch.testing.assert_close(out, expected_out, atol=1e-6, rtol=1e-5)
    for a, b in zip(final if isinstance(final, tuple) else (final,),
                    expected_final if isinstance(expected_final, tuple) else (expected_final,)):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)


def test_the_one_token_rnn_step_still_trains_through_the_fused_kernel():
    """With autograd on, one token goes through the fused kernel (the training path), whose gradients match."""
    torch.manual_seed(0)
    rnn = nn.LSTM(8, 16, num_layers=2, batch_first=True)
    x = torch.randn(3, 1, 8, requires_grad=True)
    out, _ = forward_rnn(rnn, x, None, None)
    out.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert out.grad_fn is not None
