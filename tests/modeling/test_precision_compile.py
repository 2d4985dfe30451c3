"""bf16 (autocast training, bf16 weights for inference) and torch.compile work for every family."""

from __future__ import annotations

import pytest
import torch
from cases import LM_CASES
from helpers import make_lm, make_seq2seq, random_ids

CASES = ["transformer", "rnn-lstm", "rnn-gru", "cnn", "transformer-transformer", "rnn-rnn[lstm,bahdanau,bi]",
         "rnn-rnn[gru,luong_dot,bi,feed]", "cnn-cnn", "transformer-cnn"]


def build(case):
    return make_lm(case) if case in LM_CASES else make_seq2seq(case)


def inputs_for(case):
    ids = random_ids(2, 9, seed=80)
    return dict(input_ids=ids, labels=ids) if case in LM_CASES else dict(input_ids=ids, labels=random_ids(2, 7, seed=81))


@pytest.mark.parametrize("case", CASES)
def test_bf16_autocast_training_step(case):
    model = build(case).train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = model(**inputs_for(case)).loss
    loss.backward()
    reference = build(case).train()(**inputs_for(case)).loss
    assert torch.isfinite(loss) and abs(loss.item() - reference.item()) < 0.05 * reference.item()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)


@pytest.mark.parametrize("case", CASES)
def test_bf16_weights_generate_with_the_cache(case):
    model = build(case)
    ids = random_ids(2, 6, seed=82)
    with torch.no_grad():
        reference = model(input_ids=ids, **({} if case in LM_CASES else {"decoder_input_ids": ids})).logits
        model = model.to(torch.bfloat16)
        logits = model(input_ids=ids, **({} if case in LM_CASES else {"decoder_input_ids": ids})).logits
        cached = model.generate(ids, max_new_tokens=5, do_sample=False, pad_token_id=0)
        uncached = model.generate(ids, max_new_tokens=5, do_sample=False, pad_token_id=0, use_cache=False)
    assert logits.dtype == torch.bfloat16
    assert (logits.float() - reference).abs().max() < 0.1 * reference.abs().max()
    # bf16 rounding may flip a near tie between the two paths; most tokens agree
    agree = (cached == uncached).float().mean().item()
    assert agree > 0.8, (cached, uncached)


@pytest.mark.parametrize("case", ["transformer", "rnn-lstm", "cnn", "transformer-transformer", "rnn-rnn[lstm,bahdanau,bi]", "cnn-cnn"])
def test_torch_compile_gives_the_eager_results(case):
    model = build(case).train()
    model.config.dropout = 0.0
    compiled = torch.compile(model, backend="aot_eager", dynamic=False)
    batch = inputs_for(case)
    eager = model(**batch)
    traced = compiled(**batch)
    torch.testing.assert_close(traced.logits, eager.logits, atol=1e-5, rtol=1e-5)
    traced.loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def quantized_share(model) -> float:
    """The share of parameter elements that torchao stores quantized (its tensor subclasses)."""
    sizes = [(p.numel(), type(p.data) is not torch.Tensor) for p in model.parameters()]
    return sum(n for n, quantized in sizes if quantized) / sum(n for n, _ in sizes)


# Weight-only int8 through transformers' own torchao integration quantizes nn.Linear weights: most of a
# Transformer, the attention projections of the ConvS2S decoder, nothing of nn.LSTM / nn.GRU or of a tied head.
INT8_SHARE = {"transformer": 0.5, "rnn-lstm": 0.0, "cnn": 0.0, "transformer-transformer": 0.5,
              "rnn-rnn[lstm,bahdanau,bi]": 0.05, "cnn-cnn": 0.05}


@pytest.mark.parametrize("case", list(INT8_SHARE))
def test_int8_weight_only_loads_generates_and_stays_close(case, tmp_path):
    pytest.importorskip("torchao")
    from torchao.quantization import Int8WeightOnlyConfig
    from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM, TorchAoConfig

    model = build(case)
    model.save_pretrained(tmp_path)
    auto = AutoModelForCausalLM if case in LM_CASES else AutoModelForSeq2SeqLM
    quantized = auto.from_pretrained(tmp_path, quantization_config=TorchAoConfig(Int8WeightOnlyConfig())).eval()
    assert quantized_share(quantized) > INT8_SHARE[case] or INT8_SHARE[case] == 0.0
    ids = random_ids(2, 6, seed=83)
    extra = {} if case in LM_CASES else {"decoder_input_ids": ids}
    with torch.no_grad():
        expected = model(input_ids=ids, **extra).logits.softmax(-1)
        actual = quantized(input_ids=ids, **extra).logits.softmax(-1)
        generated = quantized.generate(ids, max_new_tokens=4, do_sample=False, pad_token_id=0)
    # measured on these tiny random models: max |delta p| <= 0.02 (0 where nothing is quantized)
    assert (actual - expected).abs().max() < 0.05
    assert generated.shape[-1] == (ids.shape[-1] + 4 if case in LM_CASES else 5)


@pytest.mark.parametrize("case", ["rnn-lstm", "rnn-gru", "rnn-rnn[lstm,bahdanau,bi]"])
def test_compiled_training_keeps_the_fused_rnn_out_of_the_graph(case):
    """A compiled training step over a sequence calls the fused LSTM/GRU kernel eagerly (a graph break): inside the
    graph, inductor would unroll it step by step (40 minutes of compiling, half the eager speed at sequence 256)."""
    graphs = []

    def capture(graph_module, example_inputs):
        graphs.append(graph_module)
        return graph_module.forward

    model = build(case).train()
    model.config.dropout = 0.0
    batch = inputs_for(case)
    eager = model(**batch).loss
    torch._dynamo.reset()
    loss = torch.compile(model, backend=capture, dynamic=False)(**batch).loss
    torch._dynamo.reset()
    targets = [str(node.target).lower() for graph in graphs for node in graph.graph.nodes]
    assert graphs and not [t for t in targets if "lstm" in t or "gru" in t], targets
    torch.testing.assert_close(loss, eager, atol=1e-5, rtol=1e-5)
