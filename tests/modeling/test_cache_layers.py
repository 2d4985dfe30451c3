"""The source layer of an encoder-decoder cache (`HfLlmSourceLayer`): a beam reorder that moves rows only among equal
rows copies nothing; every other reorder, repeat or selection gives what transformers' `DynamicLayer` gives. Its
`group` (rows per source) lets the Transformer decoder's cross-attention read each source once for all its beams:
the same generations as reading it once per beam."""

from __future__ import annotations

import pytest
import torch
from helpers import make_seq2seq, random_ids
from transformers.cache_utils import DynamicLayer

from hf_llm.modeling import transformer_backbone
from hf_llm.modeling.cache_layers import HfLlmSourceLayer, row_group


def filled(layer_class: type, keys: torch.Tensor, values: torch.Tensor) -> DynamicLayer:
    layer = layer_class()
    layer.update(keys.clone(), values.clone())
    return layer


def three_sources_two_beams() -> tuple[torch.Tensor, torch.Tensor]:
    """Keys/values `(6, 2, 5, 4)` of 3 sources, each repeated twice, as generate lays out beams."""
    generator = torch.Generator().manual_seed(0)
    keys = torch.randn(3, 2, 5, 4, generator=generator).repeat_interleave(2, dim=0)
    values = torch.randn(3, 2, 5, 4, generator=generator).repeat_interleave(2, dim=0)
    return keys, values


def test_a_reorder_among_one_sources_beams_copies_nothing():
    layer = filled(HfLlmSourceLayer, *three_sources_two_beams())
    assert layer.row_labels.tolist() == [1, 1, 2, 2, 3, 3]
    keys, values = layer.keys, layer.values
    layer.reorder_cache(torch.tensor([1, 1, 2, 3, 5, 4]))  # beam search: every row from its own source's beams
    assert layer.keys is keys and layer.values is values


@pytest.mark.parametrize("order", [[2, 3, 0, 1, 4, 5], [0, 0, 0, 0, 0, 0], [5, 4, 3, 2, 1, 0], [0, 2, 1, 3, 4, 5]])
def test_a_reorder_across_sources_equals_transformers_layer_and_the_labels_follow(order):
    source, reference = filled(HfLlmSourceLayer, *three_sources_two_beams()), filled(DynamicLayer, *three_sources_two_beams())
    labels = source.row_labels
    # after `order`, reorders that would change nothing under the old labels but do under the new ones
    for beam_idx in (torch.tensor(order), torch.tensor([1, 0, 2, 3, 4, 5]), torch.tensor([1, 0, 3, 2, 5, 4]),
                     torch.tensor([0, 2, 4, 1, 3, 5])):
        source.reorder_cache(beam_idx)
        reference.reorder_cache(beam_idx)
        labels = labels[beam_idx]
        assert torch.equal(source.keys, reference.keys) and torch.equal(source.values, reference.values)
        assert torch.equal(source.row_labels, labels)


@pytest.mark.parametrize("which", [0, 1])
def test_rows_that_differ_are_never_taken_for_equal(which):
    keys, values = three_sources_two_beams()
    (keys, values)[which][1, 0, 0, 0] += 1e-6  # beam 2 of source 1 differs from beam 1 in one key or value only
    layer, reference = filled(HfLlmSourceLayer, keys, values), filled(DynamicLayer, keys, values)
    assert layer.row_labels.tolist() == [1, 2, 3, 3, 4, 4]
    beam_idx = torch.tensor([1, 0, 2, 3, 4, 5])
    layer.reorder_cache(beam_idx)
    reference.reorder_cache(beam_idx)
    assert torch.equal(layer.keys, reference.keys) and torch.equal(layer.values, reference.values)


def test_repeat_and_select_keep_the_labels_in_step():
    layer, reference = filled(HfLlmSourceLayer, *three_sources_two_beams()), filled(DynamicLayer, *three_sources_two_beams())
    for target in (layer, reference):
        target.batch_repeat_interleave(2)
        target.batch_select_indices(torch.tensor([0, 3, 4, 11]))
        target.reorder_cache(torch.tensor([1, 0, 3, 2]))  # rows 0, 3 are source 1's; 4, 11 sources 2 and 3
    assert layer.row_labels.tolist() == [1, 1, 3, 2]
    assert torch.equal(layer.keys, reference.keys) and torch.equal(layer.values, reference.values)


@pytest.mark.parametrize("case", ["transformer-transformer", "rnn-rnn[lstm,luong_general,bi,feed]", "cnn-cnn"])
def test_beam_search_keeps_its_source_layers_unreordered(case, monkeypatch):
    """In generate's beam search every decoder family's source layers keep one label per source, so no reorder
    copies them; the rows of one source's beams stay equal."""
    model = make_seq2seq(case)
    calls = {"source": 0, "copies": 0}
    reorder, copy = HfLlmSourceLayer.reorder_cache, DynamicLayer.reorder_cache

    def counted_reorder(self, beam_idx):
        calls["source"] += 1
        return reorder(self, beam_idx)

    def counted_copy(self, beam_idx):
        calls["copies"] += type(self) is HfLlmSourceLayer
        return copy(self, beam_idx)

    monkeypatch.setattr(HfLlmSourceLayer, "reorder_cache", counted_reorder)
    monkeypatch.setattr(DynamicLayer, "reorder_cache", counted_copy)
    out = model.generate(random_ids(3, 6, seed=5), num_beams=4, max_new_tokens=5, min_new_tokens=5, do_sample=False,
                         eos_token_id=None, return_dict_in_generate=True)
    assert calls["source"] > 0 and calls["copies"] == 0  # reordered every step, never copied
    layers = out.past_key_values.cross_attention_cache.layers
    assert layers and all(type(layer) is HfLlmSourceLayer for layer in layers)
    for layer in layers:
        assert layer.row_labels.tolist() == [1] * 4 + [2] * 4 + [3] * 4
        assert torch.equal(layer.keys, layer.keys[::4].repeat_interleave(4, dim=0))


@pytest.mark.parametrize("labels, group", [([1, 1, 2, 2, 3, 3], 2), ([1] * 4 + [2] * 4, 4), ([1, 1, 1, 1, 2, 2], 2),
                                           ([1, 1, 2, 2, 2], 1), ([1, 2, 3], 1), ([2, 2, 1, 1], 2), ([7], 1)])
def test_the_group_is_the_longest_block_of_rows_that_always_share_a_label(labels, group):
    assert row_group(torch.tensor(labels)) == group


def test_the_group_follows_reorders_repeats_and_selections():
    layer = filled(HfLlmSourceLayer, *three_sources_two_beams())
    assert layer.group == 2
    layer.reorder_cache(torch.tensor([1, 0, 2, 2, 5, 4]))  # among one source's beams: still pairs
    assert layer.group == 2
    layer.batch_repeat_interleave(2)
    assert layer.group == 4
    layer.reorder_cache(torch.tensor([0, 1, 2, 4] + list(range(4, 12))))  # row 3 now from source 2
    assert layer.group == 1 and torch.equal(layer.keys[3], layer.keys[4])
    layer.batch_select_indices(torch.tensor([4, 5, 8, 9]))
    assert layer.group == 2
    layer.reset()
    assert layer.group == 1


def sources_of_different_lengths() -> tuple[torch.Tensor, torch.Tensor]:
    """Three sources, right- and left-padded, so that every row's source mask differs."""
    ids = random_ids(3, 9, seed=7)
    mask = torch.ones_like(ids)
    mask[1, :3] = 0
    mask[2, 6:] = 0
    return ids, mask


@pytest.mark.parametrize("attn_implementation", ["sdpa", "eager"])
def test_cross_attention_reads_each_source_once_for_all_its_beams(attn_implementation, monkeypatch):
    """Beam search with the Transformer decoder: cross-attention keys/values are projected from the 3 sources, not from
    their 12 beam rows, the cache's source layers know the 4 rows per source, and the generations, scores and
    cross-attention weights are those of reading the source once per beam."""
    model = make_seq2seq("transformer-transformer", attn_implementation=attn_implementation)
    ids, mask = sources_of_different_lengths()
    kwargs = dict(attention_mask=mask, num_beams=4, max_new_tokens=6, min_new_tokens=6, do_sample=False,
                  eos_token_id=None, return_dict_in_generate=True, output_scores=True,
                  output_attentions=attn_implementation == "eager")
    rows = []
    hooks = [layer.cross_attn.kv_proj.register_forward_hook(lambda module, args, out: rows.append(args[0].shape[0]))
             for layer in model.get_decoder().layers]
    grouped = model.generate(ids, **kwargs)
    for hook in hooks:
        hook.remove()
    assert rows == [3] * len(hooks)  # once per source and layer, at the first step
    assert all(layer.group == 4 for layer in grouped.past_key_values.cross_attention_cache.layers)

    monkeypatch.setattr(transformer_backbone.HfLlmTransformerDecoder, "source_group", lambda self, *args: 1)
    per_beam = model.generate(ids, **kwargs)
    assert torch.equal(grouped.sequences, per_beam.sequences)
    for a, b in zip(grouped.scores, per_beam.scores):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    if attn_implementation == "eager":
        for step_a, step_b in zip(grouped.cross_attentions, per_beam.cross_attentions):
            for a, b in zip(step_a, step_b):
                assert a.shape == (12, model.config.num_attention_heads, 1, 9)
                torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_distinct_sources_are_read_row_by_row():
    """Greedy decoding of different sources: every row is its own group, the projection sees every row."""
    model = make_seq2seq("transformer-transformer")
    ids, mask = sources_of_different_lengths()
    out = model.generate(ids, attention_mask=mask, max_new_tokens=3, do_sample=False, return_dict_in_generate=True)
    assert all(layer.group == 1 for layer in out.past_key_values.cross_attention_cache.layers)


def test_keys_replaced_by_hand_lose_their_labels_and_group():
    layer = filled(HfLlmSourceLayer, *three_sources_two_beams())
    assert layer.group == 2
    layer.keys = torch.randn_like(layer.keys)  # no longer what the labels describe
    assert layer.labels() is None and layer.group == 1
    reference = DynamicLayer()
    reference.update(layer.keys.clone(), layer.values.clone())
    beam_idx = torch.tensor([1, 0, 2, 3, 5, 4])  # a no-op under the old labels: copies now
    layer.reorder_cache(beam_idx)
    reference.reorder_cache(beam_idx)
    assert torch.equal(layer.keys, reference.keys)


def test_rows_with_equal_keys_but_different_source_masks_are_not_one_group():
    keys, values = three_sources_two_beams()
    mask = torch.ones(6, 5, dtype=torch.long)
    mask[1, -1] = 0
    layer = HfLlmSourceLayer()
    layer.update(keys, values, {"source_mask": mask})
    assert layer.row_labels.tolist() == [1, 2, 3, 3, 4, 4] and layer.group == 1


@pytest.mark.parametrize("attn_implementation", ["sdpa", "eager"])
@pytest.mark.parametrize("copy_attention", [False, True])
def test_several_target_tokens_per_row_read_grouped_equal_read_per_row(attn_implementation, copy_attention,
                                                                        monkeypatch):
    """Forwards of 4 target tokens per row over 3 padded sources x 4 copies (and a cached prefill of 3 tokens, then 2
    more: what assisted decoding does): the blocks of group x T queries, the expanded masks and the unfolded weights
    give the logits and cross-attention weights of reading every row on its own."""
    model = make_seq2seq("transformer-transformer", attn_implementation=attn_implementation,
                         copy_attention=copy_attention)
    ids, mask = sources_of_different_lengths()
    encoder_outputs = model.get_encoder()(input_ids=ids, attention_mask=mask)
    # 4 copies of each source's encoder outputs, as generate lays out beams: it repeats the encoder's outputs (encoding
    # the repeated ids instead need not give equal rows: batched SDPA may round identical rows differently).
    for key, value in encoder_outputs.items():
        if isinstance(value, torch.Tensor):
            encoder_outputs[key] = value.repeat_interleave(4, dim=0)
    mask = mask.repeat_interleave(4, dim=0)  # (12, 9)
    targets = random_ids(12, 5, seed=9)

    def run():
        with torch.no_grad():
            full = model(encoder_outputs=encoder_outputs, attention_mask=mask, decoder_input_ids=targets[:, :4],
                         output_attentions=True)
            prefill = model(encoder_outputs=encoder_outputs, attention_mask=mask, decoder_input_ids=targets[:, :3],
                            use_cache=True)
            step = model(encoder_outputs=encoder_outputs, attention_mask=mask, decoder_input_ids=targets[:, 3:],
                         past_key_values=prefill.past_key_values, use_cache=True, output_attentions=True)
        return full, step, prefill.past_key_values

    grouped, grouped_step, cache = run()
    assert cache.cross_attention_cache.layers[0].group == 4
    monkeypatch.setattr(transformer_backbone.HfLlmTransformerDecoder, "source_group", lambda self, *args: 1)
    per_row, per_row_step, _ = run()
    torch.testing.assert_close(grouped.logits, per_row.logits, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(grouped_step.logits, per_row_step.logits, rtol=1e-4, atol=1e-5)
    for a, b in [*zip(grouped.cross_attentions, per_row.cross_attentions),
                 *zip(grouped_step.cross_attentions, per_row_step.cross_attentions)]:
        if attn_implementation == "eager" or b is not None:
            assert a.shape == b.shape and a.shape[0] == 12
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
