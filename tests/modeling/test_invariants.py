"""The invariants every backbone (pairing) must keep, for decoder-only LMs and encoder-decoders.

1. token-by-token decoding with the cache gives the logits of one full forward pass;
2. a left-padded batch generates what each row generates alone (greedy and beam);
3. beam search with the cache equals beam search without it; seeded sampling is reproducible;
4. save -> load gives identical logits;
5. nothing of the future leaks into a causal position; source padding does not change decoder outputs.
"""

from __future__ import annotations

import pytest
import torch
from cases import LM_CASES, SEQ2SEQ_CASES
from helpers import (
    assert_beam_search_agrees_with_and_without_cache,
    assert_seq2seq_padded_rows_generate_alone,
    assert_logits_close,
    left_pad,
    make_lm,
    make_seq2seq,
    random_ids,
    right_pad,
)
from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM


# --------------------------------------------------------------------------------------------------
# 1. cached decoding == full forward
@pytest.mark.parametrize("case", LM_CASES)
def test_lm_cached_decoding_matches_full_forward(case):
    model = make_lm(case)
    ids = random_ids(2, 12)
    with torch.no_grad():
        full = model(ids, use_cache=False).logits  # (B, T, V)
        # Prefill 5 tokens at once, then one token at a time.
        out = model(ids[:, :5], use_cache=True)
        steps, cache = [out.logits], out.cache
        for t in range(5, ids.shape[1]):
            out = model(ids[:, t : t + 1], cache=cache, use_cache=True)
            steps.append(out.logits)
            cache = out.cache
    assert full.std() > 0.02, "logits must be O(1) for the tolerance to mean something"
    assert_logits_close(torch.cat(steps, dim=1), full)


@pytest.mark.parametrize("case", LM_CASES)
def test_lm_cached_decoding_with_left_padding_matches_full_forward(case):
    model = make_lm(case)
    ids, mask = left_pad([random_ids(1, 9, seed=2)[0], random_ids(1, 5, seed=3)[0]])
    with torch.no_grad():
        full = model(ids, attention_mask=mask, use_cache=False).logits
        out = model(ids[:, :6], attention_mask=mask[:, :6], use_cache=True)
        steps, cache = [out.logits], out.cache
        for t in range(6, ids.shape[1]):
            out = model(ids[:, t : t + 1], attention_mask=mask[:, : t + 1], cache=cache, use_cache=True)
            steps.append(out.logits)
            cache = out.cache
    real = mask.bool()
    assert_logits_close(torch.cat(steps, dim=1)[real], full[real])


@pytest.mark.parametrize("case", SEQ2SEQ_CASES)
def test_seq2seq_cached_decoding_matches_full_forward(case):
    model = make_seq2seq(case)
    src, src_mask = right_pad([random_ids(1, 9, seed=4)[0], random_ids(1, 6, seed=5)[0]])
    tgt = random_ids(2, 8, seed=6)
    with torch.no_grad():
        full = model(input_ids=src, attention_mask=src_mask, decoder_input_ids=tgt, use_cache=False).logits
        encoder_outputs = model.get_encoder()(input_ids=src, attention_mask=src_mask)
        cache, steps = None, []
        for t in range(tgt.shape[1]):
            out = model(
                encoder_outputs=encoder_outputs,
                attention_mask=src_mask,
                decoder_input_ids=tgt[:, t : t + 1],
                cache=cache,
                use_cache=True,
            )
            steps.append(out.logits)
            cache = out.cache
    assert full.std() > 0.02, "logits must be O(1) for the tolerance to mean something"
    assert_logits_close(torch.cat(steps, dim=1), full)


# --------------------------------------------------------------------------------------------------
# 2. left-padded batch == rows alone
@pytest.mark.parametrize("num_beams", [1, 3])
@pytest.mark.parametrize("case", LM_CASES)
def test_lm_left_padded_batch_generates_rows_alone(case, num_beams):
    model = make_lm(case)
    rows = [random_ids(1, 7, seed=7)[0], random_ids(1, 3, seed=8)[0], random_ids(1, 5, seed=9)[0]]
    ids, mask = left_pad(rows)
    kwargs = dict(max_new_tokens=6, do_sample=False, num_beams=num_beams, pad_token_id=0)
    with torch.no_grad():
        batched = model.generate(ids, attention_mask=mask, **kwargs)[:, ids.shape[1] :]
        for i, row in enumerate(rows):
            alone = model.generate(row[None], attention_mask=torch.ones(1, len(row), dtype=torch.long), **kwargs)
            assert batched[i].tolist() == alone[0, len(row) :].tolist(), f"row {i} differs when batched"


@pytest.mark.parametrize("num_beams", [1, 3])
@pytest.mark.parametrize("case", SEQ2SEQ_CASES)
def test_seq2seq_padded_batch_generates_rows_alone(case, num_beams):
    assert_seq2seq_padded_rows_generate_alone(make_seq2seq(case), num_beams)


# --------------------------------------------------------------------------------------------------
# 3. beam search with cache == without; sampling reproducible
@pytest.mark.parametrize("case", LM_CASES)
def test_lm_beam_search_with_and_without_cache_agree(case):
    ids, mask = left_pad([random_ids(1, 6, seed=13)[0], random_ids(1, 4, seed=14)[0]])
    assert_beam_search_agrees_with_and_without_cache(make_lm(case), ids, mask)


@pytest.mark.parametrize("case", SEQ2SEQ_CASES)
def test_seq2seq_beam_search_with_and_without_cache_agree(case):
    ids, mask = right_pad([random_ids(1, 7, seed=15)[0], random_ids(1, 4, seed=16)[0]])
    assert_beam_search_agrees_with_and_without_cache(make_seq2seq(case), ids, mask)


@pytest.mark.parametrize("case", list(LM_CASES) + list(SEQ2SEQ_CASES))
def test_sampling_with_a_seed_is_reproducible(case):
    model = make_lm(case) if case in LM_CASES else make_seq2seq(case)
    ids = random_ids(2, 5, seed=17)
    kwargs = dict(max_new_tokens=8, do_sample=True, top_k=0, temperature=1.5, pad_token_id=0)
    with torch.no_grad():
        torch.manual_seed(123)
        first = model.generate(ids, **kwargs)
        torch.manual_seed(123)
        second = model.generate(ids, **kwargs)
        torch.manual_seed(321)
        other = model.generate(ids, **kwargs)
    assert first.tolist() == second.tolist()
    assert first.tolist() != other.tolist(), "different seeds should sample differently"


# --------------------------------------------------------------------------------------------------
# 5. causality and source padding
@pytest.mark.parametrize("case", LM_CASES)
def test_lm_future_tokens_do_not_leak(case):
    model = make_lm(case)
    ids = random_ids(1, 10, seed=18)
    changed = ids.clone()
    changed[0, 6] = (ids[0, 6] + 1 - 3) % 58 + 3
    with torch.no_grad():
        a = model(ids).logits
        b = model(changed).logits
    assert_logits_close(a[:, :6], b[:, :6])
    assert not torch.allclose(a[:, 6:], b[:, 6:], atol=1e-4), "the changed token must change later logits"


@pytest.mark.parametrize("case", SEQ2SEQ_CASES)
def test_seq2seq_future_decoder_tokens_do_not_leak(case):
    model = make_seq2seq(case)
    src = random_ids(1, 6, seed=19)
    tgt = random_ids(1, 9, seed=20)
    changed = tgt.clone()
    changed[0, 5] = (tgt[0, 5] + 1 - 3) % 58 + 3
    with torch.no_grad():
        a = model(input_ids=src, decoder_input_ids=tgt).logits
        b = model(input_ids=src, decoder_input_ids=changed).logits
    assert_logits_close(a[:, :5], b[:, :5])
    assert not torch.allclose(a[:, 5:], b[:, 5:], atol=1e-4)


@pytest.mark.parametrize("case", SEQ2SEQ_CASES)
def test_seq2seq_source_padding_does_not_change_decoder_outputs(case):
    model = make_seq2seq(case)
    src = random_ids(1, 6, seed=21)[0]
    tgt = random_ids(1, 7, seed=22)
    with torch.no_grad():
        alone = model(input_ids=src[None], decoder_input_ids=tgt).logits
        for pad in (left_pad, right_pad):
            ids, mask = pad([src, random_ids(1, 11, seed=23)[0]])
            padded = model(input_ids=ids, attention_mask=mask, decoder_input_ids=tgt.repeat(2, 1)).logits
            assert_logits_close(padded[:1], alone)
        # The source does matter: another source gives other logits.
        other = model(input_ids=random_ids(1, 6, seed=24), decoder_input_ids=tgt).logits
    assert not torch.allclose(other, alone, atol=1e-4)


# --------------------------------------------------------------------------------------------------
# 4. save -> load
@pytest.mark.parametrize("case", list(LM_CASES) + list(SEQ2SEQ_CASES))
def test_save_load_gives_identical_logits(case, tmp_path):
    is_lm = case in LM_CASES
    model = make_lm(case) if is_lm else make_seq2seq(case)
    auto = AutoModelForCausalLM if is_lm else AutoModelForSeq2SeqLM
    ids = random_ids(2, 7, seed=25)
    inputs = dict(input_ids=ids) if is_lm else dict(input_ids=ids, decoder_input_ids=random_ids(2, 5, seed=26))
    model.save_pretrained(tmp_path)
    loaded = auto.from_pretrained(tmp_path).eval()
    assert type(loaded) is type(model)
    with torch.no_grad():
        # Bit-identical weights; the logits may differ in the last float bit (BLAS kernels depend on alignment).
        for name, tensor in model.state_dict().items():
            assert torch.equal(loaded.state_dict()[name], tensor), name
        torch.testing.assert_close(loaded(**inputs).logits, model(**inputs).logits, atol=1e-6, rtol=0)
    assert (tmp_path / "model.safetensors").exists()
