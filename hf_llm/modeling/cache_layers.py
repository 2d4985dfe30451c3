"""Cache layers of the recurrent and convolutional families, in the key/value layout of transformers' caches.

Every hf_llm decoder keeps one cache layer per block, as transformers' own models do, and every layer holds
one entry per processed token, shaped `(B, heads, T, head_dim)` like a key/value layer:

- Transformer blocks: keys and values (transformers' own `DynamicLayer`).
- Convolutional blocks: `HfLlmConvCacheLayer`, the block's convolution inputs `(B, 1, T, C)`; a causal convolution
  of width k reads the last k - 1 of them (fairseq's "linearized convolution" keeps the same inputs).
- Recurrent layers: `HfLlmRecurrentCacheLayer`, the layer's state after each token: hidden state `(B, 1, T, H)` as
  keys, LSTM cell as values (a GRU's state is its hidden state, so values are the keys), and on the top layer of an
  input-feeding decoder the attentional vector fed to the next step.
- With `coverage_attention`, the layer whose attention sees the coverage (the RNN decoder's top layer, the ConvS2S
  decoder's last block) also keeps the coverage vector after each token `(B, 1, T, S)` (`coverages`), so it rewinds,
  reorders and repeats with the rest.

Keeping the per-token history, not only the last state, is what lets `crop` rewind to any earlier token, so
assisted (speculative) decoding and prompt lookup work for every family; beam search reorders, and
contrastive search repeats and selects, rows of every layer alike. The price is the memory of a one-head
key/value cache (C or 2H numbers per token and layer, a fraction of a Transformer's 2H per layer).

The cross-attention part of an encoder-decoder cache keeps what the decoder attends to, computed once per
source: the Transformer's projected keys/values per layer; for the recurrent and convolutional decoders the
attention keys/values over the source `(B, 1, S, H)`, stored per decoder block.

Part of the exported folder: imports only the standard library, torch, transformers and siblings.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from transformers.cache_utils import Cache, DynamicCache, DynamicLayer, EncoderDecoderCache, StaticLayer

STATIC_COVERAGE_ERROR = (
    "coverage_attention keeps the coverage of the source in the dynamic cache's layers; a static cache has no slot "
    "for it. Generate with cache_implementation='dynamic' (the default) for this model."
)


class CoverageHistory:
    """The coverage after each token `coverages (B, 1, T, S)` (`coverage_attention`), kept by the cache layer of the
    block whose attention sees it; the layer crops, reorders and repeats it with its other entries."""

    coverages: torch.Tensor | None = None

    def update_coverage(self, coverages: torch.Tensor) -> None:
        """Append the coverage after each new token `(B, T, S)`."""
        new = coverages.unsqueeze(1)
        self.coverages = new if self.coverages is None else torch.cat([self.coverages, new], dim=-2)

    def last_coverage(self) -> torch.Tensor | None:
        """The coverage `(B, S)` after the last cached token, or None."""
        return self.coverages[:, 0, -1] if self.coverages is not None and self.coverages.shape[-2] > 0 else None


class HfLlmConvCacheLayer(CoverageHistory, DynamicLayer):
    """Inputs of one causal convolution block, one per token: `keys (B, 1, T, C)` (`values` is the same tensor);
    with coverage in the block's attention, the coverage after each token `coverages (B, 1, T, S)`."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.coverages: torch.Tensor | None = None

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor | None = None, *args, **kwargs):
        raise NotImplementedError("HfLlmConvCacheLayer holds convolution inputs: use update_inputs(x).")

    def update_inputs(self, inputs: torch.Tensor) -> torch.Tensor:
        """Append `inputs (B, T, C)`; return every input so far `(B, past + T, C)`."""
        if not self.is_initialized:
            self.lazy_initialization(inputs, inputs)
            self.keys = inputs.unsqueeze(1)
        else:
            self.keys = torch.cat([self.keys, inputs.unsqueeze(1)], dim=-2)
        self.values = self.keys
        return self.keys[:, 0]

    def inputs(self) -> torch.Tensor | None:
        """Every cached input `(B, T, C)`, or None before the first token."""
        return self.keys[:, 0] if self.get_seq_length() > 0 else None

    def crop(self, tokens_to_remove: int) -> None:
        super().crop(tokens_to_remove)
        self.values = self.keys
        if self.coverages is not None:
            self.coverages = self.coverages[..., : self.get_seq_length(), :]

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        if self.get_seq_length() > 0:
            self.keys = self.values = self.keys.index_select(0, beam_idx.to(self.keys.device))
        if self.coverages is not None:
            self.coverages = self.coverages.index_select(0, beam_idx.to(self.coverages.device))

    def batch_repeat_interleave(self, repeats: int) -> None:
        if self.get_seq_length() > 0:
            self.keys = self.values = self.keys.repeat_interleave(repeats, dim=0)
        if self.coverages is not None:
            self.coverages = self.coverages.repeat_interleave(repeats, dim=0)

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        if self.get_seq_length() > 0:
            self.keys = self.values = self.keys[indices, ...]
        if self.coverages is not None:
            self.coverages = self.coverages[indices, ...]

    def reset(self) -> None:
        self.coverages = None
        super().reset()


class HfLlmRecurrentCacheLayer(CoverageHistory, DynamicLayer):
    """State of one LSTM/GRU layer after each token: `keys` = hidden state `(B, 1, T, H)`, `values` = LSTM cell
    (GRU: the hidden state again), `feeds` = the attentional vector of an input-feeding decoder `(B, 1, T, H)`
    (top layer only, else None), `coverages` = the coverage after each token `(B, 1, T, S)` (top layer, with
    `coverage_attention`, else None)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.feeds: torch.Tensor | None = None
        self.coverages: torch.Tensor | None = None

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor | None = None, *args, **kwargs):
        raise NotImplementedError("HfLlmRecurrentCacheLayer holds recurrent states: use update_states(h, c, feed).")

    def update_states(self, hidden: torch.Tensor, cell: torch.Tensor | None = None, feed: torch.Tensor | None = None) -> None:
        """Append the states after each new token: `hidden`, `cell`, `feed` each `(B, T, H)`."""
        new = [hidden.unsqueeze(1), None if cell is None else cell.unsqueeze(1), None if feed is None else feed.unsqueeze(1)]
        if not self.is_initialized:
            self.lazy_initialization(hidden, hidden)
            keys, values, feeds = new
        else:
            old = [self.keys, self.values if cell is not None else None, self.feeds]
            keys, values, feeds = (None if n is None else torch.cat([o, n], dim=-2) for o, n in zip(old, new))
        self.keys, self.feeds = keys, feeds
        self.values = values if values is not None else keys

    def last_states(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None] | None:
        """`(h, c, feed)` after the last cached token, each `(B, H)` (c is h for a GRU), or None before the first."""
        if self.get_seq_length() == 0:
            return None
        feed = self.feeds[:, 0, -1] if self.feeds is not None else None
        return self.keys[:, 0, -1], self.values[:, 0, -1], feed

    def _apply(self, function: Callable[[torch.Tensor], torch.Tensor]) -> None:
        aliased = self.values is self.keys
        self.keys = function(self.keys)
        self.values = self.keys if aliased else function(self.values)
        if self.feeds is not None:
            self.feeds = function(self.feeds)
        if self.coverages is not None:
            self.coverages = function(self.coverages)

    def crop(self, tokens_to_remove: int) -> None:
        if tokens_to_remove > 0:
            raise ValueError(f"crop({tokens_to_remove}): pass a negative number of tokens to remove.")
        if tokens_to_remove < 0 and self.get_seq_length() > 0:
            self._apply(lambda t: t[..., :tokens_to_remove, :])

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        if self.get_seq_length() > 0:
            self._apply(lambda t: t.index_select(0, beam_idx.to(t.device)))

    def batch_repeat_interleave(self, repeats: int) -> None:
        if self.get_seq_length() > 0:
            self._apply(lambda t: t.repeat_interleave(repeats, dim=0))

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        if self.get_seq_length() > 0:
            self._apply(lambda t: t[indices, ...])

    def reset(self) -> None:
        self.feeds = self.coverages = None
        super().reset()


def equal_row_labels(*tensors: torch.Tensor) -> torch.Tensor:
    """`(N,)` labels of the batch rows of `tensors` (a layer's keys and values, or a decoder's encoder states and
    source mask): rows with the same label are equal (`==` on every element) in every tensor. Each run of consecutive
    equal rows gets one label, as `generate` lays out the `num_beams` (or `num_return_sequences`) copies of one
    source."""
    same = torch.ones(tensors[0].shape[0], dtype=torch.bool, device=tensors[0].device)
    same[:1] = False
    for tensor in tensors:
        same[1:] &= (tensor[1:] == tensor[:-1]).flatten(1).all(1)
    return torch.cumsum(~same, 0)


def row_group(labels: torch.Tensor) -> int:
    """The largest `g` such that every block of `g` consecutive rows shares one label: the greatest common divisor of
    the lengths of the runs of equal labels (`num_beams` for the rows `generate` lays out for beam search; 1 when no
    two neighbouring rows are equal). One host sync: `HfLlmSourceLayer.group` calls it once after its labels change,
    not per decoding step."""
    return math.gcd(*torch.unique_consecutive(labels, return_counts=True)[1].tolist()) if labels.numel() else 1


class HfLlmSourceLayer(DynamicLayer):
    """transformers' `DynamicLayer` for what a decoder attends to over the source (cross-attention keys/values,
    computed once per source), which knows which of its rows are equal.

    `generate` repeats each source `num_beams` times, so the rows of one source's beams hold the same keys and values,
    and beam search only moves rows among one source's beams. The layer labels its equal rows when it is filled
    (`row_labels`, `equal_row_labels`) and uses that twice:

    - A beam reorder that sends every row onto one with its label copies nothing (it would copy equal rows): an exact
      test on a vector of `B` labels, so any other reorder (rows of other sources, a user's own call) still copies,
      and the labels follow the copy. Beam-4 on the base encoder-decoder (4 sources of 64 tokens): 7-8% faster.
    - `group`: every block of `group` consecutive rows is one source's (`row_group`), so a Transformer decoder's
      cross-attention reads each source's keys and values once, with the queries of all its beams as one block
      (`HfLlmTransformerAttention`), instead of once per beam.
    """

    row_labels: torch.Tensor | None = None
    _group: int | None = None
    _labelled: tuple | None = None  # the keys the labels describe (their storage and shape)

    def _set_labels(self, labels: torch.Tensor | None) -> None:
        self.row_labels, self._group = labels, None
        self._labelled = (self.keys.data_ptr(), tuple(self.keys.shape)) if labels is not None else None

    def labels(self) -> torch.Tensor | None:
        """`row_labels` while they describe the layer's keys; None once the keys were replaced by hand."""
        if self.row_labels is None or self._labelled != (self.keys.data_ptr(), tuple(self.keys.shape)):
            return None
        return self.row_labels

    @property
    def group(self) -> int:
        """How many consecutive rows hold one source (`row_group` of the labels; 1 without labels). Computed on the
        first read after the labels change (one host sync, outside any compiled step), then kept."""
        labels = self.labels()
        if labels is None:
            return 1
        if self._group is None:
            self._group = row_group(labels)
        return self._group

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, cache_kwargs: dict | None = None, *args, **kwargs
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """transformers' update; `cache_kwargs["source_mask"] (B, S)`, when given, is compared row by row too, so rows
        with the same label also share their source mask."""
        keys, values = super().update(key_states, value_states, cache_kwargs, *args, **kwargs)
        mask = (cache_kwargs or {}).get("source_mask")
        if mask is not None and mask.shape[0] != keys.shape[0]:
            mask = None  # a mask broadcast over the batch is the same for every row
        self._set_labels(equal_row_labels(keys, values, *(() if mask is None else (mask,))))
        return keys, values

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        if self.get_seq_length() == 0:
            return
        current = self.labels()
        if current is None:  # keys set by hand: no labels, copy as DynamicLayer does
            self._set_labels(None)
            return super().reorder_cache(beam_idx)
        beam_idx = beam_idx.to(self.keys.device)
        labels = current.to(self.keys.device)[beam_idx]
        if torch.equal(labels, current.to(labels.device)):
            return  # every row receives a row equal to it
        super().reorder_cache(beam_idx)
        self._set_labels(labels)

    def batch_repeat_interleave(self, repeats: int) -> None:
        labels = self.labels()
        super().batch_repeat_interleave(repeats)
        if labels is not None and self.get_seq_length() > 0:
            self._set_labels(labels.repeat_interleave(repeats, dim=0))

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        labels = self.labels()
        super().batch_select_indices(indices)
        if labels is not None and self.get_seq_length() > 0:
            self._set_labels(labels[torch.as_tensor(indices, device=labels.device)])

    def reset(self) -> None:
        self._set_labels(None)
        super().reset()


class HfLlmStaticFeedLayer(StaticLayer):
    """transformers' `StaticLayer` (an input-feeding recurrent decoder's top layer: hidden states as keys, LSTM cells or
    GRU hidden states as values) that also keeps, per cache slot, the attentional vector fed to the next step:
    `feeds (B, 1, max_cache_len, H)`, written with the keys/values, reordered for beams, cropped with them."""

    def __init__(self, max_cache_len: int, **kwargs):
        super().__init__(max_cache_len=max_cache_len, **kwargs)
        self.feeds: torch.Tensor | None = None

    def update_feeds(self, feeds: torch.Tensor) -> None:
        """Write `feeds (B, 1, T, H)` at the slots the next `update` fills (call it first)."""
        if self.feeds is None:
            self.feeds = torch.zeros((feeds.shape[0], 1, self.max_cache_len, feeds.shape[-1]), dtype=feeds.dtype,
                                     device=feeds.device)
            if not torch.compiler.is_compiling():
                torch._dynamo.mark_static_address(self.feeds)
        slots = torch.arange(feeds.shape[-2], device=feeds.device) + self.cumulative_length.to(feeds.device)
        self.feeds.index_copy_(2, slots, feeds)

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        super().reorder_cache(beam_idx)
        if self.feeds is not None:
            self.feeds = self.feeds.index_select(0, beam_idx.to(self.feeds.device))

    def reset(self) -> None:
        super().reset()
        if self.feeds is not None:
            self.feeds.zero_()


STATIC_LAYERS = (StaticLayer, HfLlmStaticFeedLayer)


def static_length(cache: Cache | None) -> int | None:
    """`max_cache_len` when every layer of `cache` is a transformers `StaticLayer` (what `generate(cache_implementation=
    "static")` and `StaticCache(config, max_cache_len)` build), else None."""
    layers = getattr(cache, "layers", None)
    if not layers or not all(type(layer) in STATIC_LAYERS for layer in layers):
        return None
    return layers[0].max_cache_len


def is_static(layer) -> bool:
    """Whether a decoder block keeps its state in a fixed-size `StaticLayer` (written at its cache positions)."""
    return type(layer) in STATIC_LAYERS


def static_position(layer: StaticLayer) -> torch.Tensor | int:
    """How many tokens a static layer holds: its 0-dim `cumulative_length` tensor (no device sync, no graph
    break), or 0 before the first token."""
    return layer.cumulative_length if layer.is_initialized else 0


def _static_layers(layers: list, num_layers: int, max_cache_len: int, top: type = StaticLayer) -> list:
    """`layers` when they are `num_layers` static layers with a `top` one last, else fresh ones of the same length."""
    if len(layers) == num_layers and type(layers[-1]) is top:
        return layers
    if any(layer.is_initialized for layer in layers):
        raise ValueError(f"The static cache holds states of another model ({len(layers)} layers; this decoder keeps "
                         f"{num_layers}). Pass the cache this model returned, or none.")
    return [StaticLayer(max_cache_len=max_cache_len) for _ in range(num_layers - 1)] + [top(max_cache_len=max_cache_len)]


def decoder_cache(
    cache: Cache | None, use_cache: bool, is_encoder_decoder: bool, num_layers: int, layer_class: type,
    static_top: type = StaticLayer,
) -> tuple[Cache | None, Cache | None]:
    """The cache a decoder keeps its state in, and its self-attention part.

    Creates one when asked for (`use_cache`) and none is given. A cache made elsewhere (generate's default,
    a user's `DynamicCache()`) that holds no state yet gets this decoder's layers, one `layer_class` per
    block; one that holds state of another kind is an error. A static cache (`StaticCache`, or generate's
    `cache_implementation="static"`) keeps its fixed-size `StaticLayer`s, one per block, whatever the family:
    every family writes its per-token state there through `StaticLayer.update` (see "Static caches and compiled
    decoding" in docs/ARCHITECTURE.md); `static_top` is the class of the top one (`HfLlmStaticFeedLayer` for an
    input-feeding recurrent decoder).
    """
    if cache is None:
        if not use_cache:
            return None, None
        cache = EncoderDecoderCache(DynamicCache(), DynamicCache()) if is_encoder_decoder else DynamicCache()
    if is_encoder_decoder and not isinstance(cache, EncoderDecoderCache):
        raise ValueError("An encoder-decoder needs an EncoderDecoderCache (decoder states + attention over the source).")
    self_cache = cache.self_attention_cache if isinstance(cache, EncoderDecoderCache) else cache
    layers = self_cache.layers
    max_cache_len = static_length(self_cache)
    if max_cache_len is not None:
        self_cache.layers = _static_layers(layers, num_layers, max_cache_len, static_top)
    elif len(layers) != num_layers or not all(type(layer) is layer_class for layer in layers):
        if any(getattr(layer, "is_initialized", False) and layer.get_seq_length() > 0 for layer in layers):
            raise ValueError(
                f"The cache holds states of another model ({[type(layer).__name__ for layer in layers]}); this "
                f"decoder keeps {num_layers} x {layer_class.__name__}. Pass the cache this model returned, or none."
            )
        self_cache.layers = [layer_class() for _ in range(num_layers)]
        self_cache.layer_class_to_replicate = None
    if isinstance(cache, EncoderDecoderCache) and not cache.is_updated.get(0):
        cross = cache.cross_attention_cache
        cross_length = static_length(cross)
        if cross_length is not None and not any(layer.is_initialized for layer in cross.layers):
            # generate's static cross-attention cache (one StaticLayer per block, sized to the source)
            cross.layers = _static_layers(cross.layers, num_layers, cross_length)
        else:
            cross.layers = [HfLlmSourceLayer() for _ in range(num_layers)]
            cross.layer_class_to_replicate = None
        cache.is_updated = dict.fromkeys(range(num_layers), False)
    return cache, self_cache


def source_memory(
    cache: Cache | None, compute: Callable[[], tuple[torch.Tensor, torch.Tensor]]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Attention keys and values over the source `(B, S, H)` of a recurrent or convolutional decoder: computed once
    per source and kept, per decoder block, in the cross-attention part of an `EncoderDecoderCache`."""
    if isinstance(cache, EncoderDecoderCache) and cache.is_updated.get(0):
        layer = cache.cross_attention_cache.layers[0]
        return layer.keys[:, 0], layer.values[:, 0]
    keys, values = compute()
    if isinstance(cache, EncoderDecoderCache):
        for i, layer in enumerate(cache.cross_attention_cache.layers):
            layer.update(keys.unsqueeze(1), values.unsqueeze(1))
            cache.is_updated[i] = True
    return keys, values
