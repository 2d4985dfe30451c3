"""HF features users rely on: attention backends, gradient checkpointing, logits_to_keep, tied embeddings,
the deprecated cache name, and the classification head (pooling and the three HF losses)."""

from __future__ import annotations

import pytest
import torch
from cases import LM_CASES, SEQ2SEQ_CASES, TINY, lm_config, seq2seq_config
from helpers import (
    assert_logits_close,
    left_pad,
    make_lm,
    make_seq2seq,
    random_ids,
    right_pad,
)
from transformers import (
    AutoModelForCausalLM,
    AutoModelForSeq2SeqLM,
    AutoModelForSequenceClassification,
)
from transformers.modeling_layers import GradientCheckpointingLayer

import hf_llm

ALL_CASES = list(LM_CASES) + list(SEQ2SEQ_CASES)


def build(case: str, **overrides):
    torch.manual_seed(0)
    if case in LM_CASES:
        return AutoModelForCausalLM.from_config(lm_config(case, **overrides))
    return AutoModelForSeq2SeqLM.from_config(seq2seq_config(case, **overrides))


def batch_for(case: str) -> dict:
    ids, mask = left_pad([random_ids(1, 8, seed=40)[0], random_ids(1, 5, seed=41)[0]])
    if case in LM_CASES:
        return dict(input_ids=ids, attention_mask=mask)
    return dict(input_ids=ids, attention_mask=mask, decoder_input_ids=random_ids(2, 6, seed=42))


@pytest.mark.parametrize("case", ALL_CASES)
def test_eager_and_sdpa_attention_give_the_same_logits(case):
    batch = batch_for(case)
    eager = build(case, attn_implementation="eager").eval()
    sdpa = build(case, attn_implementation="sdpa").eval()
    assert eager.config._attn_implementation == "eager" and sdpa.config._attn_implementation == "sdpa"
    with torch.no_grad():
        a, b = eager(**batch).logits, sdpa(**batch).logits
    real = batch["attention_mask"].bool() if case in LM_CASES else slice(None)
    assert_logits_close(a[real], b[real])


@pytest.mark.parametrize("case", ALL_CASES)
def test_gradient_checkpointing_gives_the_same_gradients(case):
    batch = batch_for(case)
    labels = batch["input_ids"] if case in LM_CASES else batch["decoder_input_ids"]
    grads, forward_calls = [], []
    for checkpointing in (False, True):
        model = build(case).train()
        if checkpointing:
            model.activation_checkpointing_enable()
            assert model.is_activation_checkpointing
        # A module inside the first checkpointed unit starts again when the backward pass recomputes it.
        unit = next(m for m in model.model.decoder.modules() if isinstance(m, GradientCheckpointingLayer))
        calls = []
        next(iter(unit.children())).register_forward_pre_hook(lambda *args: calls.append(1))
        model(**batch, labels=labels).loss.backward()
        forward_calls.append(len(calls))
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    assert forward_calls[1] == 2 * forward_calls[0], "checkpointed units run again in the backward pass"
    assert grads[0].keys() == grads[1].keys() and len(grads[0]) > 0
    for name in grads[0]:
        torch.testing.assert_close(grads[1][name], grads[0][name], atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("case", ALL_CASES)
def test_logits_to_keep_returns_the_last_positions(case):
    model = build(case).eval()
    batch = batch_for(case)
    with torch.no_grad():
        full = model(**batch).logits
        last = model(**batch, logits_to_keep=1).logits
    assert last.shape[1] == 1
    assert_logits_close(last, full[:, -1:])


def test_the_deprecated_past_key_values_name_still_works_with_a_warning():
    model = make_lm(next(iter(LM_CASES)))
    ids = random_ids(1, 6, seed=43)
    with torch.no_grad():
        cache = model(ids[:, :5], use_cache=True).cache
        expected = model(ids).logits[:, -1]
        with pytest.warns(FutureWarning, match="past_key_values"):
            step = model(ids[:, 5:], past_key_values=cache, use_cache=True).logits[:, -1]
    assert_logits_close(step, expected)


@pytest.mark.parametrize("case", ALL_CASES)
def test_word_embeddings_are_tied_by_default_and_untied_on_request(case, tmp_path):
    tied = build(case)
    embeddings = tied.get_input_embeddings().weight
    assert tied.get_output_embeddings().weight is embeddings
    if case in SEQ2SEQ_CASES:
        assert tied.get_encoder().embed_tokens.weight is embeddings
    untied = build(case, tie_word_embeddings=False)
    assert untied.get_output_embeddings().weight is not untied.get_input_embeddings().weight
    untied.save_pretrained(tmp_path)
    loaded = type(untied).from_pretrained(tmp_path)
    torch.testing.assert_close(loaded.get_output_embeddings().weight, untied.get_output_embeddings().weight)
    assert not torch.equal(loaded.get_output_embeddings().weight, loaded.get_input_embeddings().weight)


def test_generation_grows_the_cache_one_token_at_a_time():
    model = make_lm(next(iter(LM_CASES)))
    ids = random_ids(1, 6, seed=44)
    with torch.no_grad():
        out = model.generate(ids, max_new_tokens=4, do_sample=False, return_dict_in_generate=True)
    # The prompt plus 3 fed-back tokens are cached; the 4th generated token was never fed back.
    assert out.cache.get_seq_length() == 6 + 3


# --------------------------------------------------------------------------------------------------
# Classification
def classifier(case: str, **overrides):
    torch.manual_seed(0)
    config = lm_config(case, **overrides) if case in LM_CASES else seq2seq_config(case, **overrides)
    return AutoModelForSequenceClassification.from_config(config).eval()


@pytest.mark.parametrize("case", ALL_CASES)
def test_classifier_pools_real_tokens_only(case):
    model = classifier(case, num_labels=3)
    if case in SEQ2SEQ_CASES:
        assert model.model.decoder is None, "an encoder-decoder config classifies with the encoder only"
    rows = [random_ids(1, 7, seed=45)[0], random_ids(1, 4, seed=46)[0]]
    with torch.no_grad():
        alone = torch.cat([model(input_ids=r[None]).logits for r in rows])
        for pad in (left_pad, right_pad):
            ids, mask = pad(rows)
            assert_logits_close(model(input_ids=ids, attention_mask=mask).logits, alone)


@pytest.mark.parametrize("case", ALL_CASES)
def test_classifier_losses_follow_hf_problem_types(case):
    ids = random_ids(4, 6, seed=47)
    single = classifier(case, num_labels=3)
    labels = torch.tensor([0, 2, 1, 2])
    out = single(input_ids=ids, labels=labels)
    torch.testing.assert_close(out.loss, torch.nn.functional.cross_entropy(out.logits, labels))
    assert single.config.problem_type == "single_label_classification"

    multi = classifier(case, num_labels=3)
    targets = torch.tensor([[1.0, 0.0, 1.0], [0.0, 0.0, 1.0], [1.0, 1.0, 0.0], [0.0, 1.0, 0.0]])
    out = multi(input_ids=ids, labels=targets)
    torch.testing.assert_close(out.loss, torch.nn.functional.binary_cross_entropy_with_logits(out.logits, targets))
    assert multi.config.problem_type == "multi_label_classification"

    regression = classifier(case, num_labels=1)
    values = torch.tensor([0.5, -1.0, 2.0, 0.0])
    out = regression(input_ids=ids, labels=values)
    torch.testing.assert_close(out.loss, torch.nn.functional.mse_loss(out.logits.squeeze(-1), values))


def test_classifier_loads_the_encoder_of_a_seq2seq_checkpoint(tmp_path):
    seq2seq = make_seq2seq(next(iter(SEQ2SEQ_CASES)))
    seq2seq.save_pretrained(tmp_path)
    model = AutoModelForSequenceClassification.from_pretrained(tmp_path, num_labels=2)
    for name, tensor in seq2seq.model.encoder.state_dict().items():
        torch.testing.assert_close(model.model.encoder.state_dict()[name], tensor, atol=0, rtol=0)


def test_hf_llm_model_returns_hidden_states():
    config = hf_llm.HfLlmConfig(**TINY)
    model = hf_llm.HfLlmModel(config).eval()
    out = model(input_ids=random_ids(2, 5, seed=48))
    assert out.last_hidden_state.shape == (2, 5, TINY["hidden_size"])


@pytest.mark.parametrize("case", ["transformer", "rnn-gru", "cnn", "transformer-transformer", "cnn-rnn[lstm,bahdanau]"])
def test_fused_loss_equals_the_plain_loss_and_gradients(case):
    batch = batch_for(case)
    labels = batch["input_ids"].clone() if case in LM_CASES else batch["decoder_input_ids"].clone()
    labels[0, :2] = -100
    results = []
    for fused in (True, False):
        model = build(case, fused_loss=fused).train()
        out = model(**batch, labels=labels, num_items_in_batch=torch.tensor(11))
        assert (out.logits is None) == fused, "the fused path does not materialise logits"
        out.loss.backward()
        results.append((out.loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}))
    torch.testing.assert_close(results[0][0], results[1][0], atol=1e-5, rtol=1e-5)
    for name, grad in results[1][1].items():
        torch.testing.assert_close(results[0][1][name], grad, atol=1e-6, rtol=1e-4)
    model.eval()
    with torch.no_grad():
        assert model(**batch, labels=labels).logits is not None, "evaluation still returns logits"


@pytest.mark.parametrize("case", ["transformer", "rnn-lstm", "cnn"])
def test_skip_logits_chooses_per_call_whether_a_forward_with_labels_returns_logits(case):
    """`skip_logits=False`: logits even in a training forward (a trainer that reads them, e.g. trl <= 1.14);
    `skip_logits=True`: the fused loss even in evaluation. The loss is the same either way."""
    batch = batch_for(case)
    labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    model = build(case).train()
    fused = model(**batch, labels=labels)
    plain = model(**batch, labels=labels, skip_logits=False)
    assert fused.logits is None and plain.logits is not None
    torch.testing.assert_close(plain.loss, fused.loss, atol=1e-5, rtol=1e-5)
    with torch.no_grad():
        evaluated = model.eval()(**batch, labels=labels, skip_logits=True)
    assert evaluated.logits is None
    torch.testing.assert_close(evaluated.loss, fused.loss.detach(), atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="needs labels"):
        model(**batch, skip_logits=True)
    with pytest.raises(ValueError, match="logits_to_keep"):
        model(**batch, labels=labels, skip_logits=True, logits_to_keep=1)


@pytest.mark.parametrize("chunk_size", [3, 7, 512, None])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_fused_cross_entropy_over_several_chunks_matches_the_plain_loss(chunk_size, dtype):
    """Loss and both gradients, any chunking (uneven last chunk, ignored labels), fp32 and under bf16 autocast."""
    from hf_llm.modeling.shared_layers import fused_cross_entropy

    generator = torch.Generator().manual_seed(3)
    hidden = torch.randn(2, 10, 16, generator=generator)
    weight = torch.randn(37, 16, generator=generator) * 0.3
    labels = torch.randint(0, 37, (2, 10), generator=generator)
    labels[1, 4:7] = -100
    results = []
    for fused in (True, False):
        h, w = hidden.clone().requires_grad_(), weight.clone().requires_grad_()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):
            if fused:
                loss = fused_cross_entropy(h, w, labels, shift=True, chunk_size=chunk_size)
            else:
                logits = (h @ w.t()).float()
                shifted = torch.nn.functional.pad(labels, (0, 1), value=-100)[:, 1:]
                loss = torch.nn.functional.cross_entropy(logits.reshape(-1, 37), shifted.reshape(-1))
        loss.backward()
        results.append((loss.detach().float(), h.grad, w.grad))
    tolerance = dict(atol=1e-5, rtol=1e-5) if dtype == torch.float32 else dict(atol=2e-2, rtol=2e-2)
    for fused, plain in zip(results[0], results[1]):
        torch.testing.assert_close(fused.float(), plain.float(), **tolerance)
