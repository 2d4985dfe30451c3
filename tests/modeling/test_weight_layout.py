"""The decoding weight layout (hf_llm/modeling/weight_layout.py): `decoding_layout(model)` stores the float32 CPU
weights that multiply one row at a time column-major, and `decoding_layout(model, column_major=False)` or `train()`
row-major again; neither values, nor ties, nor tokens, nor what a checkpoint holds change, and `generate` itself
leaves the weights alone. And the eager one-token RNN step on CPU (`step_rnn`, taken when nothing records gradients)
equals the fused kernel, which still runs every step that trains."""

from __future__ import annotations

import copy

import pytest
import torch
from cases import LM_CASES
from helpers import assert_logits_close, make_lm, make_seq2seq, random_ids
from torch import nn
from transformers import AutoModelForCausalLM

from hf_llm import decoding_layout
from hf_llm.modeling import rnn_backbone
from hf_llm.modeling.rnn_backbone import forward_rnn, fused_rnn
from hf_llm.modeling.weight_layout import decoding_weights, is_column_major

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
def test_the_layout_keeps_values_ties_and_tokens(case):
    model = make(case)
    as_loaded = copy.deepcopy(model)
    before = logits_of(model, case)
    assert layout(model) == {"row"}

    decoding_layout(model)

    assert layout(model) == {"column"} and decoding_weights(model)
    for kwargs in (GREEDY, {**GREEDY, "num_beams": 2}):
        ids = random_ids(1, 5)
        assert torch.equal(model.generate(ids, **kwargs), as_loaded.generate(ids, **kwargs))
    assert model.lm_head.weight is model.get_input_embeddings().weight, "the tie is kept"
    assert_logits_close(logits_of(model, case), before)
    for (name, a), (_, b) in zip(model.state_dict().items(), as_loaded.state_dict().items()):
        assert torch.equal(a, b), name
    decoding_layout(model, column_major=False)
    assert layout(model) == {"row"}
    assert_logits_close(logits_of(model, case), before)


@pytest.mark.parametrize("case", ["transformer", "rnn-lstm", "rnn-rnn[lstm,bahdanau,bi]"])
def test_generate_leaves_the_weights_alone(case):
    model = make(case)
    for kwargs in (GREEDY, {**GREEDY, "num_beams": 2}):
        model.generate(random_ids(1, 5), **kwargs)
        assert layout(model) == {"row"}
    decoding_layout(model)
    model.generate(random_ids(2, 5), **GREEDY)
    assert layout(model) == {"column"}, "the caller's layout stays"


@pytest.mark.parametrize("case", ["transformer", "rnn-lstm", "cnn"])
def test_a_laid_out_model_saves_loads_and_trains_row_major(case, tmp_path):
    model = make(case)
    with torch.inference_mode():
        decoding_layout(model)
        model.generate(random_ids(1, 4), max_new_tokens=2)
    assert layout(model) == {"column"}
    assert not any(w.is_inference() for w in decoding_weights(model)), "an ordinary tensor: the model still trains"
    before = logits_of(model, case)
    model.save_pretrained(tmp_path)
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert layout(reloaded) == {"row"}
    assert_logits_close(logits_of(reloaded, case), before)

    model.train()
    assert layout(model) == {"row"}, "training runs on the row-major (contiguous) weights"
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


def test_a_model_trained_in_eval_mode_after_the_layout_under_inference_mode_computes_gradients():
    model = make_lm("transformer")
    with torch.inference_mode():
        decoding_layout(model)
    ids = random_ids(2, 6)
    model(input_ids=ids, labels=ids).loss.backward()  # "Inference tensors cannot be saved for backward" otherwise
    assert all(p.grad is not None for p in decoding_weights(model))


def test_bfloat16_weights_are_row_major():
    model = make_lm("transformer")
    decoding_layout(model)
    model.to(torch.bfloat16)  # .to keeps the strides
    assert layout(model) == {"column"}
    decoding_layout(model)
    assert layout(model) == {"row"}, "column-major gains nothing in bfloat16"


def test_weight_normalised_and_other_weights_are_left_alone():
    model = make_lm("cnn[spec,weight_norm]")
    normalised = [m for m in model.modules() if hasattr(m, "parametrizations")]
    assert normalised
    decoding_layout(model)
    assert layout(model) == {"column"}
    for module in normalised:
        for tensor in module.parametrizations.weight.original1, module.weight:
            assert tensor.is_contiguous()
    embedding = nn.Embedding(10, 4)
    decoding_layout(embedding)  # an embedding that is no LM head: its rows stay contiguous for the look-up
    assert embedding.weight.is_contiguous()


@pytest.mark.parametrize("cell", [nn.LSTM, nn.GRU])
@pytest.mark.parametrize("weights", ["row-major", "column-major"])
def test_the_eager_one_token_step_equals_the_fused_kernel(cell, weights, monkeypatch):
    calls = spy_on_the_rnn_paths(monkeypatch)
    torch.manual_seed(0)
    rnn = cell(8, 16, num_layers=3, batch_first=True)
    if weights == "column-major":
        decoding_layout(rnn)
        assert all(is_column_major(w) for w in decoding_weights(rnn))
    x = torch.randn(5, 1, 8)
    state = torch.randn(3, 5, 16)
    state = (state, torch.randn(3, 5, 16)) if cell is nn.LSTM else state
    with torch.no_grad():
        out, final = forward_rnn(rnn, x, state, None)
        assert calls == ["step"], "forward_rnn took step_rnn, which is what is compared"
        expected_out, expected_final = fused_rnn(rnn, x, state, None)
    torch.testing.assert_close(out, expected_out, atol=1e-6, rtol=1e-5)
    for a, b in zip(final if isinstance(final, tuple) else (final,),
                    expected_final if isinstance(expected_final, tuple) else (expected_final,)):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)


def spy_on_the_rnn_paths(monkeypatch) -> list[str]:
    """Which of `step_rnn` ("step") and the fused kernel ("fused") each call of `forward_rnn` goes through."""
    calls = []
    step, fused = rnn_backbone.step_rnn, rnn_backbone.fused_rnn
    monkeypatch.setattr(rnn_backbone, "step_rnn", lambda *args: calls.append("step") or step(*args))
    monkeypatch.setattr(rnn_backbone, "fused_rnn", lambda *args: calls.append("fused") or fused(*args))
    return calls


def test_every_step_that_trains_and_every_sequence_goes_through_the_fused_kernel(monkeypatch):
    calls = spy_on_the_rnn_paths(monkeypatch)
    torch.manual_seed(0)
    rnn = nn.LSTM(8, 16, num_layers=2, batch_first=True)
    x = torch.randn(3, 1, 8, requires_grad=True)
    out, _ = rnn_backbone.forward_rnn(rnn, x, None, None)  # one token, autograd on: training
    out.sum().backward()
    assert calls == ["fused"] and x.grad is not None and x.grad.abs().sum() > 0
    with torch.no_grad():
        rnn_backbone.forward_rnn(rnn, torch.randn(3, 5, 8), None, None)  # a sequence
        rnn_backbone.forward_rnn(rnn, torch.randn(3, 1, 8), None, None)  # one token: the step
    assert calls == ["fused", "fused", "step"]
