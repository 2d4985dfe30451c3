"""Static caches and a compiled decoding step for every family (issue 15).

`generate(cache_implementation="static")` builds transformers' own `StaticCache` (an `EncoderDecoderCache` of two for
seq2seq); every family keeps its per-token state in those fixed-size layers. Checked here: the static path generates
what the dynamic one does (greedy, beam, sampling, left padding), stepping a `StaticCache` by hand gives the full
forward's logits (crop included), and the decoding step compiles as one graph (`fullgraph=True`) with equal tokens.
The compile tests use the `aot_eager` backend: graph breaks are dynamo's business, whatever the backend, and
inductor's code generation would cost tens of seconds per model on a CPU.
"""

from __future__ import annotations

import pytest
import torch
from cases import LM_CASES, SEQ2SEQ_CASES
from helpers import (
    assert_logits_close, assert_seq2seq_padded_rows_generate_alone, left_pad, make_lm, make_seq2seq, random_ids,
)
from transformers import CompileConfig, EncoderDecoderCache, StaticCache

# one decoder of each kind: Transformer, RNN stepped (feeding, Bahdanau) and fused (Luong without feeding, none), CNN
SEQ2SEQ_STATIC = ["transformer-transformer", "rnn-rnn[lstm,luong_general,bi,feed]", "rnn-rnn[gru,bahdanau,uni]",
                  "rnn-rnn[lstm,luong_dot,uni]", "rnn-rnn[gru,none,uni]", "cnn-cnn[spec,weight_norm]"]
assert set(SEQ2SEQ_STATIC) <= set(SEQ2SEQ_CASES)

MODES = {"greedy": dict(do_sample=False), "beam": dict(do_sample=False, num_beams=3),
         "sample": dict(do_sample=True, top_k=5)}


def generate_both(model, ids, mask, **kwargs):
    """The dynamic-cache and static-cache generations of the same call (same seed), and the static call's cache."""
    kwargs = dict(attention_mask=mask, max_new_tokens=6, pad_token_id=0, **kwargs)
    with torch.no_grad():
        torch.manual_seed(0)
        dynamic = model.generate(ids, **kwargs)
        torch.manual_seed(0)
        static = model.generate(ids, cache_implementation="static", return_dict_in_generate=True, **kwargs)
    return dynamic, static.sequences, static.past_key_values


@pytest.mark.parametrize("case", LM_CASES)
def test_static_cache_generates_what_the_dynamic_cache_does(case):
    model = make_lm(case)
    ids, mask = left_pad([random_ids(1, 7, seed=3)[0], random_ids(1, 4, seed=4)[0]])
    for mode, kwargs in MODES.items():
        dynamic, static, cache = generate_both(model, ids, mask, **kwargs)
        assert isinstance(cache, StaticCache), mode
        assert static.tolist() == dynamic.tolist(), mode


@pytest.mark.parametrize("case", SEQ2SEQ_STATIC)
def test_seq2seq_static_cache_generates_what_the_dynamic_cache_does(case):
    model = make_seq2seq(case)
    ids, mask = left_pad([random_ids(1, 7, seed=3)[0], random_ids(1, 4, seed=4)[0]])
    for mode, kwargs in MODES.items():
        dynamic, static, cache = generate_both(model, ids, mask, **kwargs)
        assert isinstance(cache, EncoderDecoderCache) and isinstance(cache.self_attention_cache, StaticCache), mode
        assert static.tolist() == dynamic.tolist(), mode
    model.generation_config.cache_implementation = "static"
    assert_seq2seq_padded_rows_generate_alone(model, num_beams=1)


@pytest.mark.parametrize("case", LM_CASES)
def test_stepping_a_static_cache_gives_the_full_forward_logits(case):
    """Prefill 5 tokens, then one token at a time into a `StaticCache`; crop 2 and redo them (the recurrent state is
    read at the cache's position, so a crop rewinds it)."""
    model = make_lm(case)
    ids = random_ids(2, 9)
    with torch.no_grad():
        full = model(ids).logits
        cache = StaticCache(config=model.config, max_cache_len=12)
        steps = [model(ids[:, :5], cache=cache, use_cache=True).logits]
        steps += [model(ids[:, t : t + 1], cache=cache, use_cache=True).logits for t in range(5, 9)]
        assert_logits_close(torch.cat(steps, dim=1), full)
        cache.crop(-2)
        again = [model(ids[:, t : t + 1], cache=cache, use_cache=True).logits for t in range(7, 9)]
    assert_logits_close(torch.cat(again, dim=1), full[:, 7:9])


def compile_config() -> CompileConfig:
    config = CompileConfig(fullgraph=True, dynamic=False, backend="aot_eager")
    config._compile_all_devices = True  # compile on CPU (transformers compiles on accelerators only by default)
    return config


@pytest.mark.parametrize("case", ["transformer", "rnn-lstm", "rnn-gru", "cnn", "transformer-transformer",
                                  "rnn-rnn[lstm,luong_general,bi,feed]", "rnn-rnn[gru,bahdanau,uni]", "cnn-cnn"])
def test_the_decoding_step_compiles_as_one_graph_and_gives_the_eager_tokens(case):
    model = make_lm(case) if case in LM_CASES else make_seq2seq(case)
    ids, mask = left_pad([random_ids(1, 6, seed=5)[0], random_ids(1, 3, seed=6)[0]])
    kwargs = dict(attention_mask=mask, max_new_tokens=5, do_sample=False, pad_token_id=0)
    torch.compiler.reset()
    with torch.no_grad():
        eager = model.generate(ids, **kwargs)
        compiled = model.generate(ids, cache_implementation="static", compile_config=compile_config(), **kwargs)
    assert hasattr(model, "_compiled_call")  # transformers took its compile path (fullgraph: no graph break)
    assert compiled.tolist() == eager.tolist()
