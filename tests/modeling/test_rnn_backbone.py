"""What the recurrent family promises beyond the shared invariants."""

from __future__ import annotations

import pytest
import torch
from cases import lm_config, seq2seq_config
from helpers import make_lm, make_seq2seq, random_ids, right_pad
from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM

import hf_llm


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_recurrent_weights_get_a_sensible_initialisation(cell):
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(lm_config(f"rnn-{cell}"))
    rnns = [m for m in model.modules() if isinstance(m, (torch.nn.LSTM, torch.nn.GRU))]
    assert len(rnns) == model.config.num_hidden_layers
    gates = 4 if cell == "lstm" else 3
    hidden = rnns[0].hidden_size
    for name, param in (item for rnn in rnns for item in rnn.named_parameters()):
        if name.startswith("weight_hh"):
            for block in param.detach().chunk(gates):  # each gate's recurrent matrix is orthogonal
                torch.testing.assert_close(block @ block.T, torch.eye(hidden), atol=1e-5, rtol=0)
        elif name.startswith("weight_ih"):
            bound = (6.0 / (param.shape[0] + param.shape[1])) ** 0.5  # Xavier uniform
            assert param.abs().max() <= bound and param.std() > bound / 4
        elif name.startswith("bias_hh") and cell == "lstm":
            expected = torch.zeros(gates * hidden)
            expected[hidden : 2 * hidden] = 1.0  # forget gate
            torch.testing.assert_close(param.detach(), expected)
        else:
            assert torch.count_nonzero(param) == 0, name


def test_attention_projections_run_once_per_source_during_generation():
    model = make_seq2seq("rnn-rnn[lstm,bahdanau,bi]")
    decoder = model.model.decoder
    assert decoder.value_proj is None, "a bidirectional encoder's states are hidden_size wide: nothing to bridge"
    calls = {"key_proj": 0, "bridge": 0}
    for name in calls:
        getattr(decoder, name).register_forward_pre_hook(lambda *a, n=name: calls.__setitem__(n, calls[n] + 1))
    ids, mask = right_pad([random_ids(1, 7, seed=50)[0], random_ids(1, 4, seed=51)[0]])
    with torch.no_grad():
        model.generate(ids, attention_mask=mask, max_new_tokens=8, num_beams=3, do_sample=False, pad_token_id=0)
    assert calls == {"key_proj": 1, "bridge": 1}


@pytest.mark.parametrize("case", ["rnn-lstm", "rnn-rnn[lstm,luong_dot,uni]", "rnn-rnn[lstm,none,bi]"])
def test_fused_variants_run_the_rnn_once_over_the_whole_sequence(case):
    model = make_lm(case) if case.startswith("rnn-lstm") else make_seq2seq(case)
    rnns = [m for m in model.model.decoder.modules() if isinstance(m, (torch.nn.LSTM, torch.nn.GRU))]
    calls = []
    for rnn in rnns:
        rnn.register_forward_pre_hook(lambda module, args: calls.append(module))
    ids = random_ids(2, 9, seed=52)
    inputs = dict(input_ids=ids) if case == "rnn-lstm" else dict(input_ids=ids, decoder_input_ids=ids)
    model.train()(**inputs)
    assert calls == rnns, "each recurrent module runs once, over all positions"


def test_stepped_variants_loop_over_target_positions():
    model = make_seq2seq("rnn-rnn[lstm,luong_general,bi,feed]")
    calls = []
    model.model.decoder.recurrence.rnn.register_forward_pre_hook(lambda *a: calls.append(1))
    model(input_ids=random_ids(2, 5, seed=53), decoder_input_ids=random_ids(2, 7, seed=54))
    assert len(calls) == 7


def test_padding_never_changes_the_recurrent_state():
    """A decoder-only RNN LM: left padding in the prompt leaves the state (and all later logits) unchanged."""
    model = make_lm("rnn-gru")
    row = random_ids(1, 6, seed=55)
    # Masked positions hold a real token (7), not the pad id whose embedding is zero.
    padded = torch.cat([torch.full((1, 4), 7, dtype=torch.long), row], dim=1)
    mask = torch.cat([torch.zeros(1, 4, dtype=torch.long), torch.ones(1, 6, dtype=torch.long)], dim=1)
    with torch.no_grad():
        alone = model(row, use_cache=True)
        left = model(padded, attention_mask=mask, use_cache=True)
    torch.testing.assert_close(left.logits[:, 4:], alone.logits, atol=1e-6, rtol=0)
    for padded_layer, alone_layer in zip(left.cache.layers, alone.cache.layers):
        torch.testing.assert_close(padded_layer.last_states()[0], alone_layer.last_states()[0])
    # Without the mask the pads would have entered the state.
    with torch.no_grad():
        unmasked = model(padded)
    assert not torch.allclose(unmasked.logits[:, 4:], alone.logits, atol=1e-4)


@pytest.mark.parametrize("encoder", ["rnn", "transformer"])
def test_decoder_starts_from_the_encoder_state_and_bridges_shapes(encoder):
    """Bidirectional 3-layer encoder -> 2-layer decoder: the initial state depends on the source."""
    config = seq2seq_config(
        "rnn-rnn[lstm,none,bi]", encoder_backbone=encoder, encoder_layers=3, decoder_layers=2, rnn_init_state="encoder"
    )
    torch.manual_seed(0)
    model = AutoModelForSeq2SeqLM.from_config(config).eval()
    tgt = random_ids(1, 4, seed=56)
    with torch.no_grad():
        a = model(input_ids=random_ids(1, 5, seed=57), decoder_input_ids=tgt).logits
        b = model(input_ids=random_ids(1, 5, seed=58), decoder_input_ids=tgt).logits
    assert not torch.allclose(a, b, atol=1e-4)


def test_fairseq_presets_have_the_published_shapes():
    wiseman = hf_llm.preset_config("lstm_wiseman_iwslt_de_en", vocab_size=1000)
    assert (wiseman.hidden_size, wiseman.num_hidden_layers, wiseman.rnn_cell) == (256, 1, "lstm")
    assert wiseman.is_encoder_decoder and not wiseman.rnn_bidirectional_encoder and wiseman.rnn_input_feeding
    model = AutoModelForSeq2SeqLM.from_config(wiseman)
    assert model.model.encoder.recurrence.layers[0].rnn.hidden_size == 256
    luong = hf_llm.preset_config("lstm_luong_wmt_en_de", vocab_size=1000)
    assert (luong.hidden_size, luong.side_layers("encoder"), luong.side_layers("decoder")) == (1000, 4, 4)
    assert luong.rnn_attention == "luong_general" and not luong.rnn_residual and not wiseman.rnn_residual
    with pytest.raises(ValueError, match="Unknown preset 'lstm_big'"):
        hf_llm.preset_config("lstm_big")


@pytest.mark.parametrize("case", ["rnn-lstm", "rnn-gru"])
def test_residual_stacks_change_the_outputs_and_cached_steps_still_match(case):
    """`rnn_residual` adds each upper layer's input to its outputs (so it changes the logits), while a cache still
    records the layers' own states: a left-padded prefix run with the cache, cropped, then one token at a time,
    gives the uncached logits of the whole sequence."""
    model = make_lm(case, num_hidden_layers=3, rnn_residual=True)
    plain = make_lm(case, num_hidden_layers=3, rnn_residual=False)
    plain.load_state_dict(model.state_dict())  # same weights, no residual connections
    ids = torch.cat([torch.full((1, 2), 7, dtype=torch.long), random_ids(1, 8, seed=59)], dim=1)  # (1, 10)
    mask = torch.cat([torch.zeros(1, 2, dtype=torch.long), torch.ones(1, 8, dtype=torch.long)], dim=1)
    with torch.no_grad():
        full = model(ids, attention_mask=mask).logits
        assert not torch.allclose(plain(ids, attention_mask=mask).logits[:, 2:], full[:, 2:], atol=1e-3)
        out = model(ids[:, :8], attention_mask=mask[:, :8], use_cache=True)
        stepped, cache = [out.logits[:, :6]], out.cache
        cache.crop(-2)  # back to the state after token 6 (as assisted decoding does): the recorded states count
        for t in range(6, ids.shape[1]):
            out = model(ids[:, t:t + 1], attention_mask=mask[:, :t + 1], cache=cache, use_cache=True)
            stepped.append(out.logits)
            cache = out.cache
    torch.testing.assert_close(torch.cat(stepped, dim=1)[:, 2:], full[:, 2:], atol=1e-5, rtol=0)


def test_residual_is_on_for_new_configs_and_off_for_configs_saved_before_it(tmp_path):
    """A fresh config gets the residual stacks and writes the field; a config.json without the field (every saved
    config carries `transformers_version`) comes from before it and loads without them, as it was trained."""
    config = hf_llm.HfLlmConfig(backbone="rnn")
    assert config.rnn_residual is True
    config.save_pretrained(tmp_path)
    assert hf_llm.HfLlmConfig.from_pretrained(tmp_path).rnn_residual is True
    old = config.to_dict()
    del old["rnn_residual"]
    assert hf_llm.HfLlmConfig.from_dict(old).rnn_residual is False
    assert hf_llm.HfLlmConfig.from_dict({**old, "rnn_residual": True}).rnn_residual is True
    encoder = AutoModelForSeq2SeqLM.from_config(seq2seq_config("rnn-rnn[lstm,none,bi]", rnn_residual=True))
    assert encoder.model.encoder.recurrence.residual and encoder.model.decoder.recurrence.residual


def test_new_attention_decoders_are_fused_and_saved_input_feeding_is_kept(tmp_path):
    """The default Luong decoder runs fused (no input feeding, issue 20); a saved config with input feeding (every
    config.json carries the field) loads with the stepped decoder it was trained with."""
    fresh = AutoModelForSeq2SeqLM.from_config(hf_llm.HfLlmConfig(
        is_encoder_decoder=True, backbone="rnn", vocab_size=61, hidden_size=32, num_hidden_layers=1,
        decoder_start_token_id=1))
    assert not fresh.config.rnn_input_feeding and not fresh.model.decoder.recurrence.stepped
    fresh.config.rnn_input_feeding = True
    fresh.config.save_pretrained(tmp_path)
    saved = AutoModelForSeq2SeqLM.from_config(hf_llm.HfLlmConfig.from_pretrained(tmp_path))
    assert saved.model.decoder.recurrence.stepped
