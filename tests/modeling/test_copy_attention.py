"""Copy attention (pointer-generator) and coverage, for every decoder family (issue 21).

1. the mixed distribution is a distribution (exp(logits) sums to one) and copies onto real source tokens only;
2. with p_gen forced to 1 the model is the same model without copying;
3. the cache invariants hold with copying on: cached == full forward, padded batches generate the rows alone,
   beam search with the cache equals beam search without it; source padding changes nothing;
4. the loss is the NLL of the mixture, honours num_items_in_batch, adds the coverage loss, and trains;
5. save -> load gives identical logits and generations (trust_remote_code: test_remote_code.py);
6. a copy task only copying solves: targets repeat identifiers never seen in training;
7. coverage fed to the attention scorer (RNN, ConvS2S): starts as the model without it, then moves the attention;
   the cache invariants hold with it (the coverage rides in the cache); it learns; plain checkpoints load with it.
"""

from __future__ import annotations

import pytest
import torch
from cases import seq2seq_config
from helpers import (
    assert_beam_search_agrees_with_and_without_cache,
    assert_logits_close,
    assert_seq2seq_padded_rows_generate_alone,
    left_pad,
    make_seq2seq,
    random_ids,
    right_pad,
)
from transformers import AutoModelForSeq2SeqLM

import hf_llm

# Every decoder family (and its attention variants: stepped / fused Luong, Bahdanau), over encoders of each family.
CASES = [
    "transformer-transformer",
    "cnn-transformer",
    "rnn-rnn[lstm,bahdanau,bi]",
    "rnn-rnn[gru,luong_general,uni,zeros]",
    "cnn-cnn",
]
COPY = dict(copy_attention=True)


def make_copy(case: str, **overrides):
    return make_seq2seq(case, **COPY, **overrides)


# --------------------------------------------------------------------------------------------------
# 1. a distribution, copying onto the source
@pytest.mark.parametrize("case", CASES)
def test_mixed_distribution_sums_to_one_and_copies_real_source_tokens(case):
    model = make_copy(case)
    src, mask = right_pad([random_ids(1, 9, seed=1)[0], random_ids(1, 5, seed=2)[0]])
    tgt = random_ids(2, 6, seed=3)
    with torch.no_grad():
        out = model(input_ids=src, attention_mask=mask, decoder_input_ids=tgt, output_attentions=True)
        plain = AutoModelForSeq2SeqLM.from_config(seq2seq_config(case)).eval()
        plain.load_state_dict({k: v for k, v in model.state_dict().items() if not k.startswith("copy_generator.")})
        vocab = plain(input_ids=src, attention_mask=mask, decoder_input_ids=tgt).logits.log_softmax(-1)
    torch.testing.assert_close(out.logits.exp().sum(-1), torch.ones(2, 6), atol=1e-5, rtol=0)
    # Copying adds probability to source tokens only: every other token has less than in the vocabulary
    # distribution alone (p_gen < 1 scales it), every real source token of row 1 gets more somewhere.
    gain = out.logits - vocab  # (B, T, V)
    in_source = torch.zeros_like(gain, dtype=torch.bool)
    for row in range(2):
        in_source[row, :, src[row][mask[row].bool()]] = True
    assert (gain[~in_source] < 0).all()
    row1 = src[1][mask[1].bool()]
    assert (gain[1][:, row1] > 0).any(0).all()
    assert 7 not in row1.tolist()  # the filler in the padding is not copied: it lost mass like any other token
    assert (gain[1, :, 7] < 0).all()


# --------------------------------------------------------------------------------------------------
# 2. p_gen = 1 is the model without copying
@pytest.mark.parametrize("case", CASES)
def test_generation_probability_one_gives_the_model_without_copying(case):
    model = make_copy(case)
    with torch.no_grad():
        model.copy_generator.switch.weight.zero_()
        model.copy_generator.switch.bias.fill_(1e4)  # p_gen = sigmoid(1e4) = 1
    plain = AutoModelForSeq2SeqLM.from_config(seq2seq_config(case)).eval()
    missing, unexpected = plain.load_state_dict(model.state_dict(), strict=False)
    assert not missing and all(k.startswith("copy_generator.") for k in unexpected)
    src, mask = left_pad([random_ids(1, 8, seed=4)[0], random_ids(1, 5, seed=5)[0]])
    tgt = random_ids(2, 7, seed=6)
    with torch.no_grad():
        copied = model(input_ids=src, attention_mask=mask, decoder_input_ids=tgt).logits
        expected = plain(input_ids=src, attention_mask=mask, decoder_input_ids=tgt).logits.log_softmax(-1)
    assert_logits_close(copied, expected)
    kwargs = dict(attention_mask=mask, max_new_tokens=5, num_beams=3, do_sample=False, pad_token_id=0)
    with torch.no_grad():
        assert model.generate(src, **kwargs).tolist() == plain.generate(src, **kwargs).tolist()


# --------------------------------------------------------------------------------------------------
# 3. cache invariants with copying on
@pytest.mark.parametrize("case", CASES)
def test_cached_decoding_matches_full_forward_with_copying(case):
    model = make_copy(case)
    src, src_mask = right_pad([random_ids(1, 9, seed=7)[0], random_ids(1, 6, seed=8)[0]])
    tgt = random_ids(2, 8, seed=9)
    with torch.no_grad():
        full = model(input_ids=src, attention_mask=src_mask, decoder_input_ids=tgt, use_cache=False).logits
        encoder_outputs = model.get_encoder()(input_ids=src, attention_mask=src_mask)
        assert torch.equal(encoder_outputs.source_ids, src)  # the ids ride in the encoder outputs
        cache, steps = None, []
        for t in range(tgt.shape[1]):
            out = model(encoder_outputs=encoder_outputs, attention_mask=src_mask, decoder_input_ids=tgt[:, t : t + 1],
                        cache=cache, use_cache=True)
            steps.append(out.logits)
            cache = out.cache
    assert_logits_close(torch.cat(steps, dim=1), full)


@pytest.mark.parametrize("num_beams", [1, 3])
@pytest.mark.parametrize("case", CASES)
def test_padded_batch_generates_rows_alone_with_copying(case, num_beams):
    assert_seq2seq_padded_rows_generate_alone(make_copy(case), num_beams)


@pytest.mark.parametrize("case", CASES)
def test_beam_search_with_and_without_cache_agree_with_copying(case):
    ids, mask = right_pad([random_ids(1, 7, seed=13)[0], random_ids(1, 4, seed=14)[0]])
    assert_beam_search_agrees_with_and_without_cache(make_copy(case), ids, mask)


def test_beams_copy_from_their_own_source():
    """Beams of different sources copy their own source: a model that only copies (p_gen = 0) from sources of one
    token each generates, as its best beam, that source's token."""
    model = make_copy("rnn-rnn[lstm,bahdanau,bi]")
    with torch.no_grad():
        model.copy_generator.switch.weight.zero_()
        model.copy_generator.switch.bias.fill_(-1e4)  # p_gen = 0: only copying
    src = torch.tensor([[11, 11, 11, 11], [23, 23, 23, 23]])
    with torch.no_grad():
        generated = model.generate(src, max_new_tokens=3, num_beams=3, do_sample=False, pad_token_id=0)
    assert generated[:, 1:].tolist() == [[11] * 3, [23] * 3]


# --------------------------------------------------------------------------------------------------
# 4. the loss
@pytest.mark.parametrize("case", ["transformer-transformer", "rnn-rnn[lstm,bahdanau,bi]", "cnn-cnn"])
def test_loss_is_the_nll_of_the_mixture_plus_coverage(case):
    model = make_copy(case, coverage_loss_weight=0.5)
    src = random_ids(2, 6, seed=15)
    labels = random_ids(2, 5, seed=16)
    labels[1, 3:] = -100
    model.train()  # the fused loss gives way to the mixture's NLL
    out = model(input_ids=src, labels=labels, output_attentions=True)
    assert out.logits is not None
    valid = labels != -100
    nll = -out.logits.gather(-1, labels.clamp(min=0)[..., None])[..., 0][valid].mean()
    decoder_input_ids = model.prepare_decoder_input_ids_from_labels(labels)
    source_attention = model.model(input_ids=src, decoder_input_ids=decoder_input_ids).source_attention  # (B, T, S)
    coverage = source_attention.cumsum(1) - source_attention
    cov = torch.minimum(source_attention, coverage).sum(-1)[valid].mean()
    assert cov > 0
    torch.testing.assert_close(out.loss, nll + 0.5 * cov)
    summed = model(input_ids=src, labels=labels, num_items_in_batch=torch.tensor(20)).loss
    torch.testing.assert_close(summed, (nll + 0.5 * cov) * valid.sum() / 20)
    out.loss.backward()
    assert model.copy_generator.switch.weight.grad.abs().sum() > 0


def test_coverage_loss_without_copying_keeps_the_fused_loss():
    model = make_seq2seq("cnn-cnn", coverage_loss_weight=1.0).train()
    plain = make_seq2seq("cnn-cnn").train()
    src, labels = random_ids(2, 6, seed=17), random_ids(2, 5, seed=18)
    out, base = model(input_ids=src, labels=labels), plain(input_ids=src, labels=labels)
    assert out.logits is None  # fused
    assert out.loss > base.loss  # the coverage term is added


def test_copy_attention_settings_are_validated():
    with pytest.raises(ValueError, match="copy_attention=True needs an encoder-decoder"):
        hf_llm.HfLlmConfig(copy_attention=True)
    with pytest.raises(ValueError, match="coverage_loss_weight"):
        hf_llm.HfLlmConfig(coverage_loss_weight=1.0)
    with pytest.raises(ValueError, match="coverage_loss_weight=-1"):
        seq2seq_config("cnn-cnn", coverage_loss_weight=-1)
    with pytest.raises(ValueError, match="copy_attention='yes' must be true or false"):
        seq2seq_config("cnn-cnn", copy_attention="yes")
    with pytest.raises(ValueError, match="rnn_attention='none'"):
        seq2seq_config("rnn-rnn[lstm,none,bi]", copy_attention=True)
    model = make_copy("cnn-cnn")
    embeds = model.get_input_embeddings()(random_ids(1, 4))
    with pytest.raises(ValueError, match="pass input_ids"):
        model(inputs_embeds=embeds, decoder_input_ids=random_ids(1, 3))


# --------------------------------------------------------------------------------------------------
# 5. save / load / remote code
def test_save_load_gives_identical_outputs(tmp_path):
    """(The trust_remote_code load of copy models is in test_remote_code.py, with every other case.)"""
    inputs = dict(input_ids=random_ids(2, 6, seed=19), decoder_input_ids=random_ids(2, 4, seed=20))
    for i, case in enumerate(["transformer-transformer", "rnn-rnn[lstm,bahdanau,bi]", "cnn-cnn"]):
        model = make_copy(case, coverage_loss_weight=0.1)
        model.save_pretrained(tmp_path / f"m{i}")
        loaded = AutoModelForSeq2SeqLM.from_pretrained(tmp_path / f"m{i}").eval()
        assert loaded.config.copy_attention and loaded.config.coverage_loss_weight == 0.1
        kwargs = dict(max_new_tokens=5, num_beams=2, do_sample=False, pad_token_id=0)
        with torch.no_grad():
            torch.testing.assert_close(loaded(**inputs).logits, model(**inputs).logits, atol=1e-6, rtol=0)
            assert loaded.generate(inputs["input_ids"], **kwargs).tolist() == model.generate(inputs["input_ids"], **kwargs).tolist()


def test_a_checkpoint_without_copying_loads_with_copying_turned_on(tmp_path):
    make_seq2seq("cnn-cnn").save_pretrained(tmp_path)
    model = AutoModelForSeq2SeqLM.from_pretrained(tmp_path, copy_attention=True)
    assert model.copy_generator is not None


# --------------------------------------------------------------------------------------------------
# 6. a task only copying solves
FILLERS, TRAIN_NAMES, TEST_NAMES = range(3, 23), range(23, 80), range(80, 120)


def name_task(count: int, names: range, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Sources of six filler words with one identifier ("name") among them; the target repeats the name, then EOS."""
    generator = torch.Generator().manual_seed(seed)
    src = torch.tensor(FILLERS)[torch.randint(len(FILLERS), (count, 6), generator=generator)]
    name = torch.tensor(names)[torch.randint(len(names), (count,), generator=generator)]
    src[torch.arange(count), torch.randint(6, (count,), generator=generator)] = name
    return src, torch.stack([name, torch.full((count,), 2)], dim=1)


def train_on_names(family: str, copy: bool, steps: int = 30) -> float:
    """Exact-match accuracy on names never seen in training, after `steps` AdamW steps of 32 examples."""
    torch.manual_seed(0)
    config = hf_llm.HfLlmConfig(
        vocab_size=120, hidden_size=32, num_hidden_layers=1, num_attention_heads=4, intermediate_size=64, dropout=0.0,
        is_encoder_decoder=True, decoder_start_token_id=1, encoder_backbone=family, decoder_backbone=family,
        rnn_input_feeding=False, copy_attention=copy,  # (no input feeding: the fused RNN, no loop over steps)
    )
    model = AutoModelForSeq2SeqLM.from_config(config).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for step in range(steps):
        src, labels = name_task(32, TRAIN_NAMES, seed=step)
        model(input_ids=src, labels=labels).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    src, labels = name_task(64, TEST_NAMES, seed=10_000)
    with torch.no_grad():
        generated = model.eval().generate(src, max_new_tokens=2, do_sample=False, eos_token_id=None)[:, 1:]
    return (generated == labels).all(1).float().mean().item()


@pytest.mark.parametrize("family", ["rnn", "cnn"])
def test_copying_repeats_names_never_seen_in_training(family):
    """Targets repeat an identifier from the source; the test identifiers never occur in training, so a model without
    copying has never produced them (its output layer never learned them), while a pointer copies any source token.
    (All families, more steps: benchmarks/copy_task.py.)"""
    plain, copying = train_on_names(family, copy=False), train_on_names(family, copy=True)
    assert copying >= 0.8, f"copy attention: {copying:.2f} exact match"
    assert plain <= 0.1, f"without copying: {plain:.2f} exact match"


# --------------------------------------------------------------------------------------------------
# 7. coverage fed to the attention scorer (coverage_attention; RNN and ConvS2S decoders)
# Bahdanau (additive), fused Luong (scores at once, coverage loop), stepped Luong (input feeding), ConvS2S.
COVERAGE_CASES = [
    "rnn-rnn[lstm,bahdanau,bi]",
    "rnn-rnn[gru,luong_general,uni,zeros]",
    "rnn-rnn[lstm,luong_general,bi,feed]",
    "cnn-cnn",
    "transformer-cnn",
]


def make_covered(case: str, scale: float = 10.0):
    """A copy model whose scorer sees the coverage, with gates drawn large (they start at zero) so the coverage moves
    the attention."""
    model = make_copy(case, coverage_attention=True, coverage_loss_weight=0.5)
    gates = [p for n, p in model.named_parameters() if ".coverage_gate." in n]
    assert len(gates) == 1 and torch.equal(gates[0], torch.zeros_like(gates[0]))  # one attention copies; zero at init
    with torch.no_grad():
        gates[0].normal_(0.0, scale, generator=torch.Generator().manual_seed(5))
    return model


@pytest.mark.parametrize("case", COVERAGE_CASES)
def test_coverage_in_the_scorer_starts_as_the_model_without_it_and_then_moves_the_attention(case):
    src, mask = right_pad([random_ids(1, 9, seed=21)[0], random_ids(1, 6, seed=22)[0]])
    tgt = random_ids(2, 7, seed=23)
    inputs = dict(input_ids=src, attention_mask=mask, decoder_input_ids=tgt, output_attentions=True)
    covered = make_copy(case, coverage_attention=True)
    plain = make_copy(case)
    missing, unexpected = plain.load_state_dict(covered.state_dict(), strict=False)
    assert not missing and len(unexpected) == 1 and ".coverage_gate." in unexpected[0]
    with torch.no_grad():
        zero, base = covered(**inputs), plain(**inputs)
        assert_logits_close(zero.logits, base.logits)
        covered.get_parameter(unexpected[0]).normal_(0.0, 10.0, generator=torch.Generator().manual_seed(5))
        moved = covered(**inputs)
    first = moved.cross_attentions[-1][:, 0]  # (B, T, S): the attention that copies
    # The first step has no coverage yet; every later step's attention differs from the plain model's.
    torch.testing.assert_close(first[:, 0], base.cross_attentions[-1][:, 0, 0], atol=1e-6, rtol=0)
    assert (first[:, 1:] - base.cross_attentions[-1][:, 0, 1:]).abs().amax(-1).min() > 1e-4
    assert not torch.allclose(moved.logits, base.logits)


@pytest.mark.parametrize("case", COVERAGE_CASES)
def test_cached_decoding_matches_full_forward_with_coverage_in_the_scorer(case):
    model = make_covered(case)
    src, src_mask = right_pad([random_ids(1, 9, seed=24)[0], random_ids(1, 5, seed=25)[0]])
    tgt = random_ids(2, 8, seed=26)
    with torch.no_grad():
        full = model(input_ids=src, attention_mask=src_mask, decoder_input_ids=tgt, use_cache=False).logits
        encoder_outputs = model.get_encoder()(input_ids=src, attention_mask=src_mask)
        cache, steps = None, []
        for t in range(0, tgt.shape[1], 3):  # several tokens per cached call too
            out = model(encoder_outputs=encoder_outputs, attention_mask=src_mask, decoder_input_ids=tgt[:, t : t + 3],
                        cache=cache, use_cache=True)
            steps.append(out.logits)
            cache = out.cache
        assert cache.self_attention_cache.layers[-1].coverages.shape == (2, 1, 8, 9)  # after each token
        cache.crop(-3)  # back to 5 tokens: rewinds the coverage with the states (assisted decoding)
        again = model(encoder_outputs=encoder_outputs, attention_mask=src_mask, decoder_input_ids=tgt[:, 5:],
                      cache=cache, use_cache=True).logits
    assert_logits_close(torch.cat(steps, dim=1), full)
    assert_logits_close(again, full[:, 5:])


@pytest.mark.parametrize("num_beams", [1, 3])
@pytest.mark.parametrize("case", COVERAGE_CASES[:4])
def test_padded_batch_generates_rows_alone_with_coverage_in_the_scorer(case, num_beams):
    assert_seq2seq_padded_rows_generate_alone(make_covered(case), num_beams)


@pytest.mark.parametrize("case", COVERAGE_CASES[:4])
def test_beam_search_with_and_without_cache_agree_with_coverage_in_the_scorer(case):
    """Beam search reorders the coverage with the beams: a beam that continues another one continues its coverage."""
    ids, mask = right_pad([random_ids(1, 7, seed=27)[0], random_ids(1, 4, seed=28)[0]])
    assert_beam_search_agrees_with_and_without_cache(make_covered(case), ids, mask)


@pytest.mark.parametrize("case", ["rnn-rnn[lstm,bahdanau,bi]", "cnn-cnn"])
def test_coverage_gate_learns_and_a_plain_checkpoint_loads_with_it(case, tmp_path):
    """The gate starts at zero and still gets a gradient; a checkpoint saved without coverage_attention loads with it
    turned on (no strict-loading error) and gives the same logits; a saved coverage model reloads as it was."""
    model = make_copy(case, coverage_attention=True).train()
    src, labels = random_ids(2, 6, seed=29), random_ids(2, 5, seed=30)
    model(input_ids=src, labels=labels).loss.backward()
    gate = next(p for n, p in model.named_parameters() if ".coverage_gate." in n)
    assert gate.grad is not None and gate.grad.abs().sum() > 0
    plain = make_copy(case)
    plain.save_pretrained(tmp_path / "plain")
    loaded = AutoModelForSeq2SeqLM.from_pretrained(tmp_path / "plain", coverage_attention=True).eval()
    inputs = dict(input_ids=src, decoder_input_ids=random_ids(2, 4, seed=31))
    with torch.no_grad():
        assert_logits_close(loaded(**inputs).logits, plain(**inputs).logits)
    covered = make_covered(case)
    covered.save_pretrained(tmp_path / "covered")
    reloaded = AutoModelForSeq2SeqLM.from_pretrained(tmp_path / "covered").eval()
    assert reloaded.config.coverage_attention
    with torch.no_grad():
        torch.testing.assert_close(reloaded(**inputs).logits, covered(**inputs).logits, atol=1e-6, rtol=0)


def test_coverage_attention_settings_are_validated():
    with pytest.raises(ValueError, match="coverage_attention=True is for decoders with one attention"):
        seq2seq_config("transformer-transformer", coverage_attention=True)
    with pytest.raises(ValueError, match="coverage_attention=True needs an encoder-decoder"):
        hf_llm.HfLlmConfig(backbone="rnn", coverage_attention=True)
    with pytest.raises(ValueError, match="rnn_attention='none'"):
        seq2seq_config("rnn-rnn[lstm,none,bi]", coverage_attention=True)
    with pytest.raises(ValueError, match="coverage_attention='yes' must be true or false"):
        seq2seq_config("cnn-cnn", coverage_attention="yes")


@pytest.mark.parametrize("case", ["rnn-rnn[lstm,bahdanau,bi]", "cnn-cnn"])
def test_coverage_in_the_scorer_with_a_static_cache_is_a_clear_error(case):
    model = make_covered(case)
    with pytest.raises(ValueError, match="coverage_attention keeps the coverage .* cache_implementation='dynamic'"):
        model.generate(random_ids(1, 5), max_new_tokens=3, do_sample=False, cache_implementation="static")
