"""The recurrent family: (bi)LSTM/GRU encoders, attention decoders and recurrent language models.

- Encoder: embeddings -> multi-layer (bidirectional) LSTM/GRU, the fused `nn.LSTM` / `nn.GRU` over packed
  sequences, so padding never enters a state and there is no Python loop over time.
- Decoder without attention (a recurrent LM, or Sutskever et al. 2014's seq2seq that starts from the
  encoder state): the fused RNN over the whole sequence.
- Luong et al. 2015, "Effective Approaches to Attention-based Neural Machine Translation": global
  attention ("dot" or "general" score) applied *after* the RNN, so training runs the RNN fused over the
  whole target and attends for all steps at once; with input feeding (the previous attentional vector is
  part of the next input) it needs a loop over target steps.
- Bahdanau et al. 2015, "Neural Machine Translation by Jointly Learning to Align and Translate": additive
  attention queried by the previous state, the context fed into the RNN: a loop over target steps.

Every attention is a masked softmax over the source padding. The encoder states are projected for
attention once per source and kept in the cross-attention part of an `EncoderDecoderCache`; the
recurrent state (h and c for an LSTM) and the input-feed vector live, batch first, in a recurrent cache
layer, so `generate()` reorders them for beam search like any other cache.

Part of the exported folder: imports only the standard library, torch, transformers and siblings.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence
from transformers.cache_utils import Cache, DynamicCache, EncoderDecoderCache, LinearAttentionLayer
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import BaseModelOutputWithPast

from .shared_layers import DocumentSplit, HfLlmEncoderOutput, document_starts

RNNState = torch.Tensor | tuple[torch.Tensor, torch.Tensor]  # GRU: h; LSTM: (h, c); each (L * dirs, B, H)
RECURRENT_STATE, INPUT_FEED = 0, 1  # state indices inside the recurrent cache layer


class PackedPadding:
    """Real tokens of each row gathered to the front and packed (`pack_padded_sequence`), and back.

    Padding may sit anywhere (left or right): the final state of each row is then the state after its last
    real token, and the outputs go back to their positions with zeros at the pads.
    """

    def __init__(self, mask: torch.Tensor):
        self.length = mask.shape[1]
        self.lengths = mask.sum(-1).clamp(min=1).cpu()
        self.order = torch.argsort((mask == 0).to(torch.int8), dim=1, stable=True)  # real tokens first, in order

    def pack(self, x: torch.Tensor):
        front = x.gather(1, self.order.unsqueeze(-1).expand_as(x))
        return pack_padded_sequence(front, self.lengths, batch_first=True, enforce_sorted=False)

    def unpack(self, packed) -> torch.Tensor:
        front, _ = pad_packed_sequence(packed, batch_first=True, total_length=self.length)  # (B, T, D)
        return torch.zeros_like(front).scatter(1, self.order.unsqueeze(-1).expand_as(front), front)


def needs_packing(mask: torch.Tensor | None) -> bool:
    return mask is not None and not bool(mask.all())


def run_rnn(rnn: nn.RNNBase, x: torch.Tensor, mask: torch.Tensor | None, state: RNNState | None):
    """Run a fused RNN over `x (B, T, D)` from `state`, skipping padding wherever it is (left or right)."""
    if not needs_packing(mask):
        return rnn(x, state)
    padding = PackedPadding(mask)
    packed_out, final = rnn(padding.pack(x), state)
    return padding.unpack(packed_out), final


def state_to_cache(state: RNNState) -> torch.Tensor:
    """(L, B, H) h [and c] -> one batch-first tensor (B, L, k, H), k = 2 for an LSTM, 1 for a GRU."""
    parts = state if isinstance(state, tuple) else (state,)
    return torch.stack(parts, dim=2).transpose(0, 1)


def state_from_cache(cached: torch.Tensor, cell: str) -> RNNState:
    layers_first = cached.transpose(0, 1)  # (L, B, k, H)
    if cell == "lstm":
        return layers_first[:, :, 0].contiguous(), layers_first[:, :, 1].contiguous()
    return layers_first[:, :, 0].contiguous()


def read_recurrent(cache: Cache | None, index: int) -> torch.Tensor | None:
    # Read the layer directly: Cache.get_recurrent_state() only answers after a conv-state update (5.24).
    if cache is None or not cache.layers:
        return None
    layer = cache.layers[0]
    return layer.recurrent_states[index] if layer.is_recurrent_states_initialized[index] else None


def keep_where(keep: torch.Tensor, new: RNNState, old: RNNState) -> RNNState:
    """Per row (`keep (B,)`), the new state or the old one."""
    if isinstance(new, tuple):
        return tuple(torch.where(keep[None, :, None], n, o) for n, o in zip(new, old))
    return torch.where(keep[None, :, None], new, old)


def masked_softmax(scores: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Softmax over the last axis (source positions) with padding excluded; `mask (B, S)`."""
    if mask is not None:
        mask = mask.bool().view(mask.shape[0], *([1] * (scores.dim() - 2)), mask.shape[-1])
        scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
    return torch.softmax(scores.float(), dim=-1).to(scores.dtype)


class RecurrentLayer(GradientCheckpointingLayer):
    """One (bidirectional) LSTM/GRU layer, on a padded batch or a packed sequence: the unit that gradient
    checkpointing recomputes (so the backward pass holds one layer's activations at a time)."""

    def __init__(self, cell: str, input_size: int, hidden_size: int, bidirectional: bool):
        super().__init__()
        rnn_class = nn.LSTM if cell == "lstm" else nn.GRU
        self.rnn = rnn_class(input_size, hidden_size, 1, batch_first=True, bidirectional=bidirectional)

    def forward(self, x, state: RNNState | None = None):
        return self.rnn(x, state)


class Recurrence(nn.Module):
    """A multi-layer (bidirectional) LSTM/GRU over a padded batch: layer by layer (as the fused multi-layer
    kernel runs internally), packed once when there is padding, dropout between layers."""

    def __init__(self, cell: str, input_size: int, hidden_size: int, num_layers: int, dropout: float,
                 bidirectional: bool = False):
        super().__init__()
        directions = 2 if bidirectional else 1
        self.directions = directions
        self.dropout = dropout
        self.layers = nn.ModuleList(
            [RecurrentLayer(cell, input_size if i == 0 else directions * hidden_size, hidden_size, bidirectional)
             for i in range(num_layers)]
        )

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None, state: RNNState | None = None):
        """`x (B, T, D)` -> outputs `(B, T, dirs * H)` and the final state `(L * dirs, B, H)` [LSTM: (h, c)]."""
        padding = PackedPadding(mask) if needs_packing(mask) else None
        h = padding.pack(x) if padding is not None else x
        finals = []
        for i, layer in enumerate(self.layers):
            if i > 0 and self.dropout and self.training:
                h = h._replace(data=nn.functional.dropout(h.data, self.dropout)) if padding is not None else \
                    nn.functional.dropout(h, self.dropout)
            rows = slice(i * self.directions, (i + 1) * self.directions)
            layer_state = None if state is None else (
                tuple(part[rows] for part in state) if isinstance(state, tuple) else state[rows])
            h, final = layer(h, layer_state)
            finals.append(final)
        if isinstance(finals[0], tuple):
            final = tuple(torch.cat(parts, dim=0) for parts in zip(*finals))
        else:
            final = torch.cat(finals, dim=0)
        return (padding.unpack(h) if padding is not None else h), final


class AttentionRecurrence(GradientCheckpointingLayer):
    """An RNN decoder's recurrence with its attention over the encoder (keys/values prepared outside).

    - Luong without input feeding: the fused RNN over all steps, then attention for all steps at once.
    - Luong with input feeding, Bahdanau: one fused multi-layer RNN step per target position.
    """

    def __init__(self, config, num_layers: int):
        super().__init__()
        hidden = config.hidden_size
        self.attention = config.rnn_attention
        self.stepped = config.rnn_input_feeding or self.attention == "bahdanau"
        rnn_class = nn.LSTM if config.rnn_cell == "lstm" else nn.GRU
        # Bahdanau feeds the context into the RNN; Luong input feeding feeds the previous attentional vector.
        input_size = 2 * hidden if self.stepped else hidden
        self.rnn = rnn_class(input_size, hidden, num_layers, batch_first=True,
                             dropout=config.dropout if num_layers > 1 else 0.0)
        if self.attention == "bahdanau":
            self.query_proj = nn.Linear(hidden, hidden, bias=False)  # W_a s_{t-1}
            self.score_proj = nn.Linear(hidden, 1, bias=False)  # v_a
        self.combine = nn.Linear(2 * hidden, hidden, bias=False)  # tanh(W_c [context; state])

    def luong_attend(self, states: torch.Tensor, keys, values, source_mask) -> torch.Tensor:
        """Global attention for states `(B, T, H)` at once: tanh(W_c [context; h_t])."""
        probs = masked_softmax(torch.bmm(states, keys.transpose(1, 2)), source_mask)  # (B, T, S)
        context = torch.bmm(probs, values)  # (B, T, H)
        return torch.tanh(self.combine(torch.cat([context, states], dim=-1)))

    def bahdanau_context(self, query: torch.Tensor, keys, values, source_mask) -> torch.Tensor:
        """Additive attention for one step, queried by the previous top-layer state `(B, H)`."""
        energy = self.score_proj(torch.tanh(keys + self.query_proj(query).unsqueeze(1))).squeeze(-1)  # (B, S)
        return torch.bmm(masked_softmax(energy, source_mask).unsqueeze(1), values).squeeze(1)  # (B, H)

    def forward(self, x, mask, state, feed, keys, values, source_mask):
        """`x (B, T, H)`, `feed (B, H)` the previous attentional vector (Luong input feeding; for Bahdanau it
        only carries the output over padding steps) -> `(B, T, H)`, final state, last attentional vector."""
        if not self.stepped:
            states, state = run_rnn(self.rnn, x, mask, state)
            return self.luong_attend(states, keys, values, source_mask), state, feed
        outputs = []
        for t in range(x.shape[1]):
            if self.attention == "bahdanau":
                top = (state[0] if isinstance(state, tuple) else state)[-1]  # (B, H) previous top-layer state
                context = self.bahdanau_context(top, keys, values, source_mask)
                out, new_state = self.rnn(torch.cat([x[:, t], context], dim=-1).unsqueeze(1), state)
                attentional = torch.tanh(self.combine(torch.cat([context, out.squeeze(1)], dim=-1)))
            else:
                out, new_state = self.rnn(torch.cat([x[:, t], feed], dim=-1).unsqueeze(1), state)
                attentional = self.luong_attend(out, keys, values, source_mask).squeeze(1)
            if mask is not None:  # a padding step keeps the previous state
                keep = mask[:, t].bool()
                new_state = keep_where(keep, new_state, state)
                attentional = torch.where(keep[:, None], attentional, feed)
            state, feed = new_state, attentional
            outputs.append(attentional)
        return torch.stack(outputs, dim=1), state, feed


class RNNEncoder(nn.Module):
    """Embeddings -> multi-layer (bidirectional) LSTM/GRU over packed sequences: `(B, S) -> (B, S, dirs * H)`.

    `final_state` is the last layer-wise hidden state `(B, L, dirs * H)` (directions concatenated), from
    which an RNN decoder may start.
    """

    def __init__(self, config, num_layers: int):
        super().__init__()
        self.config = config
        self.num_layers = num_layers
        self.num_directions = 2 if config.rnn_bidirectional_encoder else 1
        self.output_size = self.num_directions * config.hidden_size
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size, config.pad_token_id)
        self.embed_norm = nn.LayerNorm(config.hidden_size, eps=config.norm_eps, bias=False)
        self.dropout = nn.Dropout(config.dropout)
        self.recurrence = Recurrence(
            config.rnn_cell, config.hidden_size, config.hidden_size, num_layers, config.dropout,
            bidirectional=config.rnn_bidirectional_encoder,
        )

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        **kwargs,
    ) -> HfLlmEncoderOutput:
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("Pass exactly one of input_ids or inputs_embeds to the encoder.")
        if inputs_embeds is None:
            inputs_embeds = self.embed_tokens(input_ids)  # (B, S, H)
        x = self.dropout(self.embed_norm(inputs_embeds))
        outputs, final = self.recurrence(x, attention_mask)  # (B, S, dirs*H)
        hidden = final[0] if isinstance(final, tuple) else final  # (L * dirs, B, H)
        batch = hidden.shape[1]
        hidden = hidden.view(self.num_layers, self.num_directions, batch, -1).permute(2, 0, 1, 3)
        final_state = hidden.reshape(batch, self.num_layers, self.output_size)  # (B, L, dirs*H)
        return HfLlmEncoderOutput(last_hidden_state=self.dropout(outputs), final_state=final_state)


class RNNDecoder(nn.Module):
    """Multi-layer LSTM/GRU decoder: a recurrent LM, or, with `encoder_hidden_size`, an attention decoder.

    `(input_ids | inputs_embeds, attention_mask, encoder states, cache) -> (B, T, H)`. LayerNorms on the
    embeddings and on the outputs (the LM head is tied to the small-init embeddings): without them a
    2-layer LSTM LM did not get below the unigram loss in 200 steps (docs/ARCHITECTURE.md).
    """

    def __init__(self, config, num_layers: int, encoder_hidden_size: int | None = None):
        super().__init__()
        hidden = config.hidden_size
        self.config = config
        self.cell = config.rnn_cell
        self.num_layers = num_layers
        self.output_size = hidden
        self.state_parts = 2 if self.cell == "lstm" else 1
        self.attention = config.rnn_attention if encoder_hidden_size is not None else "none"

        self.embed_tokens = nn.Embedding(config.vocab_size, hidden, config.pad_token_id)
        self.embed_norm = nn.LayerNorm(hidden, eps=config.norm_eps, bias=False)
        self.dropout = nn.Dropout(config.dropout)
        self.norm = nn.LayerNorm(hidden, eps=config.norm_eps, bias=False)
        if self.attention == "none":
            self.recurrence = Recurrence(self.cell, hidden, hidden, num_layers, config.dropout)
        else:
            self.recurrence = AttentionRecurrence(config, num_layers)
            # Attention values live in the decoder's width; a projection bridges a wider/narrower encoder.
            self.value_proj = nn.Linear(encoder_hidden_size, hidden, bias=False) if encoder_hidden_size != hidden else None
            if self.attention != "luong_dot":
                self.key_proj = nn.Linear(hidden, hidden, bias=False)  # Luong W_a h_s, Bahdanau U_a h_s
        self.bridge = None
        if encoder_hidden_size is not None and config.rnn_init_state == "encoder":
            # Encoder final state (any width, layer count or direction count) -> initial h [and c].
            self.bridge = nn.Linear(encoder_hidden_size, self.state_parts * hidden)

    @staticmethod
    def make_cache(is_encoder_decoder: bool) -> Cache:
        """Empty cache: one recurrent layer holding the whole stack's state and the input-feed vector
        (+ the projected encoder states for attention, in the cross-attention part, for seq2seq)."""
        recurrent = Cache(layers=[LinearAttentionLayer(number_of_states=2)])
        return EncoderDecoderCache(recurrent, DynamicCache()) if is_encoder_decoder else recurrent

    def initial_state(
        self,
        batch: int,
        reference: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None,
        encoder_attention_mask: torch.Tensor | None,
        encoder_final_state: torch.Tensor | None,
    ) -> RNNState:
        hidden = self.output_size
        if self.bridge is None or encoder_hidden_states is None:
            zeros = reference.new_zeros(self.num_layers, batch, hidden)
            return (zeros, zeros.clone()) if self.cell == "lstm" else zeros
        if encoder_final_state is None:
            # Encoders without a recurrent state (Transformer, CNN): start from the mean of the source states.
            weights = (
                encoder_attention_mask.to(encoder_hidden_states.dtype).unsqueeze(-1)
                if encoder_attention_mask is not None
                else torch.ones_like(encoder_hidden_states[..., :1])
            )
            pooled = (encoder_hidden_states * weights).sum(1) / weights.sum(1).clamp(min=1.0)  # (B, E)
            encoder_final_state = pooled.unsqueeze(1)  # (B, 1, E)
        if encoder_final_state.shape[1] != self.num_layers:
            # Different layer counts: every decoder layer starts from the encoder's top layer.
            encoder_final_state = encoder_final_state[:, -1:].expand(-1, self.num_layers, -1)
        bridged = torch.tanh(self.bridge(encoder_final_state))  # (B, L, k * H)
        return state_from_cache(bridged.view(batch, self.num_layers, self.state_parts, hidden), self.cell)

    def attention_memory(
        self, encoder_hidden_states: torch.Tensor, cache: Cache | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values `(B, S, H)` for attention, computed once per source and cached."""
        if isinstance(cache, EncoderDecoderCache) and cache.is_updated.get(0):
            layer = cache.cross_attention_cache.layers[0]
            return layer.keys, layer.values
        values = encoder_hidden_states if self.value_proj is None else self.value_proj(encoder_hidden_states)
        keys = values if self.attention == "luong_dot" else self.key_proj(values)
        if isinstance(cache, EncoderDecoderCache):
            keys, values = cache.cross_attention_cache.update(keys, values, 0)
            cache.is_updated[0] = True
        return keys, values

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        encoder_hidden_states: torch.Tensor | None = None,
        encoder_attention_mask: torch.Tensor | None = None,
        encoder_final_state: torch.Tensor | None = None,
        encoder_attention_values: torch.Tensor | None = None,
        cache: Cache | None = None,
        use_cache: bool = False,
        **kwargs,
    ) -> BaseModelOutputWithPast:
        """A recurrence knows where it is: `position_ids` only mark packed documents (a position that does not
        follow the previous one starts a new document, from a fresh state). `encoder_attention_values`
        (ConvS2S encoders) are not used: attention values are projected from `encoder_hidden_states`."""
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("Pass exactly one of input_ids or inputs_embeds to the decoder.")
        if inputs_embeds is None:
            inputs_embeds = self.embed_tokens(input_ids)  # (B, T, H)
        batch, length, _ = inputs_embeds.shape
        # Packed documents (position ids restarting inside a row) each start from a fresh state; no cache then.
        starts = document_starts(position_ids, attention_mask) if cache is None and self.attention == "none" else None
        if use_cache and cache is None and starts is None:
            cache = self.make_cache(encoder_hidden_states is not None)
        self_cache = cache.self_attention_cache if isinstance(cache, EncoderDecoderCache) else cache
        # The mask covers past + new tokens; the new tokens are the last `length` columns.
        mask = attention_mask[:, -length:] if attention_mask is not None else None

        cached = read_recurrent(self_cache, RECURRENT_STATE)
        if cached is not None:
            state = state_from_cache(cached, self.cell)
        else:
            state = self.initial_state(
                batch, inputs_embeds, encoder_hidden_states, encoder_attention_mask, encoder_final_state
            )
        x = self.dropout(self.embed_norm(inputs_embeds))

        feed = None
        if starts is not None:
            # Packed documents: one row per document, each from the initial (zero) state.
            documents = DocumentSplit(starts)
            outputs, _ = self.recurrence(documents.split(x), documents.mask)
            hidden_states = documents.merge(outputs)
        elif self.attention == "none":
            hidden_states, state = self.recurrence(x, mask, state)
        else:
            keys, values = self.attention_memory(encoder_hidden_states, cache)
            if self.recurrence.stepped:
                feed = read_recurrent(self_cache, INPUT_FEED)
                if feed is None:
                    feed = inputs_embeds.new_zeros(batch, self.output_size)
            hidden_states, state, feed = self.recurrence(x, mask, state, feed, keys, values, encoder_attention_mask)

        if self_cache is not None:
            self_cache.update_recurrent_state(state_to_cache(state), 0, state_idx=RECURRENT_STATE)
            if feed is not None:
                self_cache.update_recurrent_state(feed, 0, state_idx=INPUT_FEED)
        return BaseModelOutputWithPast(last_hidden_state=self.norm(self.dropout(hidden_states)), cache=cache)
