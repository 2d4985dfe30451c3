"""The Transformer family: pre-norm encoder and decoder stacks.

Transformer blocks from Vaswani et al. 2017, "Attention Is All You Need", with the normalisation moved
in front of each sub-layer (pre-norm, Xiong et al. 2020, "On Layer Normalization in the Transformer
Architecture"), bias-free LayerNorms (Ba et al. 2016; torch's fused LayerNorm is ~5x faster than its
RMSNorm on CPU, forward and backward), a norm on the embeddings (as mBART's
`layernorm_embedding`, Liu et al. 2020) and rotary positions (Su et al. 2021, "RoFormer") in self- *and*
cross-attention: a cross-attention score depends on the distance between target and source positions,
so no absolute positions (and no length limit) are needed. Without the embedding norm and the rotary
cross-attention, a tiny model learned a copy task about 20x slower (docs/ARCHITECTURE.md).
Attention runs through transformers' attention interface (eager, SDPA, flash attention), with the masks
built by `transformers.masking_utils`, so padding is a masked softmax everywhere.

Incremental decoding keeps keys/values in the HF `Cache` passed as `cache`: a `DynamicCache` of one key/value
layer per block for a decoder-only LM, an `EncoderDecoderCache` (self-attention + cross-attention) for an
encoder-decoder. `output_attentions=True` returns the attention weights of the eager path (SDPA warns and
returns none, as in transformers' own models). With copy attention (or the coverage loss) the last layer's
cross-attention is computed explicitly, whatever the attention implementation: its weights copy.

Part of the exported folder: imports only the standard library, torch, transformers and siblings.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from transformers.activations import ACT2FN
from transformers.cache_utils import Cache, DynamicLayer, EncoderDecoderCache
from transformers.masking_utils import create_bidirectional_mask, create_causal_mask
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

from .cache_layers import decoder_cache, equal_row_labels, row_group
from .shared_layers import HfLlmDecoderOutput, HfLlmEncoderOutput, document_starts, embed, masked_softmax, positions_from_mask


class HfLlmRotaryEmbedding(nn.Module):
    """Rotary position embedding (Su et al. 2021): unit complex numbers e^{i * position * theta_j} per pair.

    Pairs are adjacent channels (as in RoFormer and the original LLaMA code) and the rotation is one complex
    multiplication: on CPU five times faster than the cos/sin "rotate half" form, forward and backward.
    """

    def __init__(self, head_dim: int, theta: float):
        super().__init__()
        self.head_dim = head_dim
        self.theta = theta
        self.register_buffer("inv_freq", self.compute_inv_freq(), persistent=False)

    def compute_inv_freq(self) -> torch.Tensor:
        exponents = torch.arange(0, self.head_dim, 2, dtype=torch.int64).float() / self.head_dim
        return 1.0 / (self.theta**exponents)  # (D/2,)

    @torch.no_grad()
    def forward(self, x: torch.Tensor, position_ids: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device_type=x.device.type, enabled=False):
            angles = position_ids[..., None].float() * self.inv_freq.float()  # (B, T, D/2)
            if torch.compiler.is_compiling():
                # inductor has no code generation for complex numbers (it would fall back to eager kernels): the
                # same rotation as (cos, sin) pairs, which it fuses
                return torch.stack([angles.cos(), angles.sin()], dim=-1)  # (B, T, D/2, 2)
            return torch.polar(torch.ones_like(angles), angles)  # (B, T, D/2) complex64


def rotate(x: torch.Tensor, rotation: torch.Tensor) -> torch.Tensor:
    """Rotate queries or keys `(B, nh, T, hd)` by their positions; `rotation` is `(B, T, hd/2)` complex, or (compiled)
    `(B, T, hd/2, 2)` cosines and sines. (Rotating queries and keys stacked in one call was tried: 35% slower forward
    + backward at the training shape, so it was not kept.)"""
    if not rotation.is_complex():
        pairs = x.float().reshape(*x.shape[:-1], -1, 2)  # (B, nh, T, hd/2, 2)
        real, imag = pairs[..., 0], pairs[..., 1]
        cos, sin = rotation[..., 0].unsqueeze(1), rotation[..., 1].unsqueeze(1)  # (B, 1, T, hd/2)
        return torch.stack([real * cos - imag * sin, real * sin + imag * cos], dim=-1).flatten(-2).type_as(x)
    pairs = torch.view_as_complex(x.float().reshape(*x.shape[:-1], -1, 2))  # (B, nh, T, hd/2)
    return torch.view_as_real(pairs * rotation.unsqueeze(1)).flatten(-2).type_as(x)


# Attention implementations that take any number of queries per row and a (B, 1, T, S) mask: cross-attention reads
# each source once for all its beams with these (flash attention's padded-sequence path is left as it is).
GROUPED_ATTENTION = ("sdpa", "eager")


def source_rows_group(encoder_hidden_states: torch.Tensor, encoder_attention_mask: torch.Tensor | None) -> int:
    """How many consecutive rows of the encoder states `(B, S, H)` (and of the source mask `(B, S)`) are equal, block
    by block: `num_beams` for what `generate` hands the decoder in beam search, 1 for a batch of different sources.
    Compares every element (one pass over the states) and syncs once; the decoder calls it when it fills its cache's
    source layers (and at every step without a cache)."""
    if encoder_hidden_states.shape[0] < 2:
        return 1
    masks = () if encoder_attention_mask is None else (encoder_attention_mask,)
    return row_group(equal_row_labels(encoder_hidden_states, *masks))


def eager_attention_forward(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float,
    dropout: float = 0.0,
    **kwargs,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Plain softmax(QK^T / sqrt(d) + mask) V; the mask is additive (0 or the dtype minimum)."""
    attn_weights = torch.matmul(query, key.transpose(2, 3)) * scaling  # (B, nh, T, S)
    if attention_mask is not None:
        attn_weights = attn_weights + attention_mask
    attn_weights = nn.functional.softmax(attn_weights, dim=-1, dtype=torch.float32).to(query.dtype)
    attn_weights = nn.functional.dropout(attn_weights, p=dropout, training=module.training)
    attn_output = torch.matmul(attn_weights, value).transpose(1, 2).contiguous()  # (B, T, nh, hd)
    return attn_output, attn_weights


class HfLlmTransformerAttention(nn.Module):
    """Multi-head attention (Vaswani et al. 2017) with rotary positions: self-attention with a fused QKV
    projection, or cross-attention over encoder states of any width (`kv_size`), whose keys are rotated by
    the source positions and queries by the target positions."""

    def __init__(self, config, layer_idx: int, is_causal: bool, kv_size: int | None = None):
        super().__init__()
        self.config = config
        self.layer_idx = layer_idx
        self.num_heads = config.num_attention_heads
        self.head_dim = config.hidden_size // config.num_attention_heads
        self.num_key_value_groups = 1  # read by transformers' attention functions
        self.scaling = self.head_dim**-0.5
        self.is_causal = is_causal
        self.is_cross_attention = kv_size is not None
        # The last layer's cross-attention when its weights copy (`config.uses_source_attention`) is computed
        # explicitly: SDPA and flash attention return no weights.
        self.explicit = self.is_cross_attention and config.uses_source_attention and \
            layer_idx == config.side_layers("decoder") - 1
        hidden = config.hidden_size
        if self.is_cross_attention:
            self.q_proj = nn.Linear(hidden, hidden, bias=False)
            self.kv_proj = nn.Linear(kv_size, 2 * hidden, bias=False)
            # Initialised with std 1/sqrt(fan_in), not `initializer_range` (tuned for widths near 1000): at small
            # widths that made the source attention uniform and its output the same mean for every source.
            self.q_proj.init_std, self.kv_proj.init_std = hidden**-0.5, kv_size**-0.5
        else:
            self.qkv_proj = nn.Linear(hidden, 3 * hidden, bias=False)
        self.o_proj = nn.Linear(hidden, hidden, bias=False)

    def _heads(self, x: torch.Tensor, parts: int) -> tuple[torch.Tensor, ...]:
        # (B, T, parts * H) -> parts x (B, nh, T, hd)
        batch, length, _ = x.shape
        x = x.view(batch, length, parts, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        return x.unbind(0)

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        position_embeddings: torch.Tensor | None = None,
        key_value_states: torch.Tensor | None = None,
        key_position_embeddings: torch.Tensor | None = None,
        cache: Cache | None = None,
        source_mask: torch.Tensor | None = None,
        source_group: int = 1,
        **kwargs,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """`source_mask (B, S)` is the source padding mask, read by an explicit cross-attention and compared row by row
        by the cache's source layer. `source_group` (cross-attention): every block of `source_group` consecutive rows
        holds one source and its mask (the beams `generate` lays out, found by `source_rows_group`); their keys and
        values are projected and read once."""
        batch, length, _ = hidden_states.shape
        if not self.is_cross_attention:
            query, key, value = self._heads(self.qkv_proj(hidden_states), 3)  # (B, nh, T, hd) each
            query, key = rotate(query, position_embeddings), rotate(key, position_embeddings)
            if cache is not None:
                key, value = cache.update(key, value, self.layer_idx)  # (B, nh, past + T, hd)
        else:
            (query,) = self._heads(self.q_proj(hidden_states), 1)
            query = rotate(query, position_embeddings)
            # `cache` is an EncoderDecoderCache: encoder keys/values are projected once per source.
            if cache is not None and cache.is_updated.get(self.layer_idx):
                layer = cache.cross_attention_cache.layers[self.layer_idx]
                key, value = layer.keys, layer.values
            else:
                states, positions = key_value_states, key_position_embeddings
                if source_group > 1:  # one projection per source, not per beam: its beams' rows are equal
                    states, positions = states[::source_group], positions[::source_group]
                key, value = self._heads(self.kv_proj(states), 2)  # (B / group, nh, S, hd)
                key = rotate(key, positions)
                if source_group > 1:
                    key, value = key.repeat_interleave(source_group, 0), value.repeat_interleave(source_group, 0)
                if cache is not None:
                    # the layer labels its equal rows (keys, values and source mask): its `group` at the next steps
                    key, value = cache.cross_attention_cache.update(
                        key, value, self.layer_idx, {"source_mask": source_mask}
                    )
                    cache.is_updated[self.layer_idx] = True

        if self.explicit:
            # softmax(QK^T / sqrt(d)) over the real source tokens; the weights (before dropout) copy.
            attn_weights = masked_softmax(torch.matmul(query, key.transpose(2, 3)) * self.scaling, source_mask)
            dropped = nn.functional.dropout(attn_weights, p=self.config.attention_dropout, training=self.training)
            attn_output = torch.matmul(dropped, value).transpose(1, 2).reshape(batch, length, -1)  # (B, T, H)
            return self.o_proj(attn_output), attn_weights  # weights (B, nh, T, S)
        group = source_group if self.is_cross_attention and self.config._attn_implementation in GROUPED_ATTENTION \
            and (attention_mask is None or attention_mask.dim() == 4) else 1
        if group > 1:
            # Each source's keys/values once, the queries of its `group` beams as one block of group x T queries:
            # (B, nh, T, hd) -> (B / group, nh, group * T, hd), the mask (B, 1, T, S) -> (B / group, 1, group * T, S).
            query = query.view(-1, group, self.num_heads, length, self.head_dim).transpose(1, 2)
            query = query.reshape(-1, self.num_heads, group * length, self.head_dim)
            key, value = key[::group], value[::group]
            if attention_mask is not None:
                mask = attention_mask[::group].unsqueeze(2)  # (B / group, 1, 1, T or 1, S)
                attention_mask = mask.expand(-1, -1, group, length, -1).flatten(2, 3)
        attention_interface: Callable = ALL_ATTENTION_FUNCTIONS.get_interface(
            self.config._attn_implementation, eager_attention_forward
        )
        attn_output, attn_weights = attention_interface(
            self,
            query,
            key,
            value,
            attention_mask,
            dropout=self.config.attention_dropout if self.training else 0.0,
            scaling=self.scaling,
            is_causal=self.is_causal,
            **kwargs,
        )
        attn_output = attn_output.reshape(batch, length, -1)  # (B / group, group * T, nh, hd) -> (B, T, H)
        if group > 1 and attn_weights is not None:  # (B / group, nh, group * T, S) -> (B, nh, T, S)
            attn_weights = attn_weights.unflatten(2, (group, length)).transpose(1, 2).flatten(0, 1)
        return self.o_proj(attn_output), attn_weights


class HfLlmTransformerMLP(nn.Module):
    """Position-wise feed-forward block: Linear -> activation -> Linear."""

    def __init__(self, config):
        super().__init__()
        self.fc_in = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.act = ACT2FN[config.hidden_act]
        self.fc_out = nn.Linear(config.intermediate_size, config.hidden_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc_out(self.act(self.fc_in(x)))


class HfLlmTransformerEncoderLayer(GradientCheckpointingLayer):
    def __init__(self, config, layer_idx: int):
        super().__init__()
        self.attn_norm = nn.LayerNorm(config.hidden_size, eps=config.norm_eps, bias=False)
        self.self_attn = HfLlmTransformerAttention(config, layer_idx, is_causal=False)
        self.mlp_norm = nn.LayerNorm(config.hidden_size, eps=config.norm_eps, bias=False)
        self.mlp = HfLlmTransformerMLP(config)
        self.dropout = nn.Dropout(config.dropout)

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        position_embeddings: torch.Tensor | None = None,
        **kwargs,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """`(B, S, H)` -> `(B, S, H)` and the self-attention weights `(B, nh, S, S)` (eager path; else None)."""
        attn, weights = self.self_attn(self.attn_norm(hidden_states), attention_mask, position_embeddings, **kwargs)
        hidden_states = hidden_states + self.dropout(attn)
        return hidden_states + self.dropout(self.mlp(self.mlp_norm(hidden_states))), weights


class HfLlmTransformerDecoderLayer(GradientCheckpointingLayer):
    def __init__(self, config, layer_idx: int, encoder_hidden_size: int | None = None):
        super().__init__()
        self.attn_norm = nn.LayerNorm(config.hidden_size, eps=config.norm_eps, bias=False)
        self.self_attn = HfLlmTransformerAttention(config, layer_idx, is_causal=True)
        if encoder_hidden_size is not None:
            self.cross_attn_norm = nn.LayerNorm(config.hidden_size, eps=config.norm_eps, bias=False)
            self.cross_attn = HfLlmTransformerAttention(config, layer_idx, is_causal=False, kv_size=encoder_hidden_size)
        self.mlp_norm = nn.LayerNorm(config.hidden_size, eps=config.norm_eps, bias=False)
        self.mlp = HfLlmTransformerMLP(config)
        self.dropout = nn.Dropout(config.dropout)

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        position_embeddings: torch.Tensor | None = None,
        encoder_hidden_states: torch.Tensor | None = None,
        encoder_attention_mask: torch.Tensor | None = None,
        encoder_position_embeddings: torch.Tensor | None = None,
        cache: Cache | None = None,
        source_mask: torch.Tensor | None = None,
        source_group: int = 1,
        **kwargs,
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """`(B, T, H)` -> `(B, T, H)`, self-attention weights `(B, nh, T, past + T)` and cross-attention weights
        `(B, nh, T, S)` (eager path; else None). Encoder states come positionally, so that reentrant gradient
        checkpointing sees them as inputs."""
        self_cache = cache.self_attention_cache if isinstance(cache, EncoderDecoderCache) else cache
        attn, self_weights = self.self_attn(
            self.attn_norm(hidden_states), attention_mask, position_embeddings, cache=self_cache, **kwargs
        )
        hidden_states = hidden_states + self.dropout(attn)
        cross_weights = None
        if encoder_hidden_states is not None:
            attn, cross_weights = self.cross_attn(
                self.cross_attn_norm(hidden_states),
                encoder_attention_mask,
                position_embeddings,
                key_value_states=encoder_hidden_states,
                key_position_embeddings=encoder_position_embeddings,
                cache=cache,
                source_mask=source_mask,
                source_group=source_group,
                **kwargs,
            )
            hidden_states = hidden_states + self.dropout(attn)
        return hidden_states + self.dropout(self.mlp(self.mlp_norm(hidden_states))), self_weights, cross_weights


class HfLlmTransformerEncoder(nn.Module):
    """Bidirectional pre-norm Transformer encoder: `(input_ids | inputs_embeds, attention_mask) -> (B, S, H)`."""

    def __init__(self, config, num_layers: int):
        super().__init__()
        self.config = config
        self.output_size = config.hidden_size
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size, config.pad_token_id)
        self.embed_norm = nn.LayerNorm(config.hidden_size, eps=config.norm_eps, bias=False)
        self.rotary_emb = HfLlmRotaryEmbedding(config.hidden_size // config.num_attention_heads, config.rope_theta)
        self.dropout = nn.Dropout(config.dropout)
        self.layers = nn.ModuleList([HfLlmTransformerEncoderLayer(config, i) for i in range(num_layers)])
        self.norm = nn.LayerNorm(config.hidden_size, eps=config.norm_eps, bias=False)

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        output_attentions: bool = False,
        output_hidden_states: bool = False,
        **kwargs,
    ) -> HfLlmEncoderOutput:
        inputs_embeds = embed(input_ids, inputs_embeds, self.embed_tokens)  # (B, S, H)
        if position_ids is None:
            position_ids = positions_from_mask(attention_mask, 0, inputs_embeds.shape[1], inputs_embeds.device)
        mask = create_bidirectional_mask(self.config, inputs_embeds, attention_mask)
        position_embeddings = self.rotary_emb(inputs_embeds, position_ids)
        hidden_states = self.dropout(self.embed_norm(inputs_embeds))
        all_hidden = [hidden_states] if output_hidden_states else None
        all_attentions = [] if output_attentions else None
        for layer in self.layers:
            hidden_states, weights = layer(
                hidden_states, mask, position_embeddings, output_attentions=output_attentions
            )
            if all_hidden is not None:
                all_hidden.append(hidden_states)
            if all_attentions is not None:
                all_attentions.append(weights)
        hidden_states = self.norm(hidden_states)
        if all_hidden is not None:
            all_hidden[-1] = hidden_states  # the last entry is the output, after the final norm (as in HF models)
        return HfLlmEncoderOutput(
            last_hidden_state=hidden_states,
            hidden_states=tuple(all_hidden) if all_hidden is not None else None,
            attentions=tuple(all_attentions) if all_attentions is not None else None,
            source_ids=input_ids if self.config.copy_attention else None,
        )


class HfLlmTransformerDecoder(nn.Module):
    """Causal pre-norm Transformer decoder, with cross-attention when `encoder_hidden_size` is given.

    `(input_ids | inputs_embeds, attention_mask, encoder_hidden_states, encoder_attention_mask, cache) -> (B, T, H)`;
    without encoder states it is a decoder-only language model.
    """

    def __init__(self, config, num_layers: int, encoder_hidden_size: int | None = None):
        super().__init__()
        self.config = config
        self.output_size = config.hidden_size
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size, config.pad_token_id)
        self.embed_norm = nn.LayerNorm(config.hidden_size, eps=config.norm_eps, bias=False)
        self.rotary_emb = HfLlmRotaryEmbedding(config.hidden_size // config.num_attention_heads, config.rope_theta)
        self.dropout = nn.Dropout(config.dropout)
        self.layers = nn.ModuleList(
            [HfLlmTransformerDecoderLayer(config, i, encoder_hidden_size) for i in range(num_layers)]
        )
        self.norm = nn.LayerNorm(config.hidden_size, eps=config.norm_eps, bias=False)

    def source_group(
        self, encoder_hidden_states: torch.Tensor, encoder_attention_mask: torch.Tensor | None, cache: Cache | None
    ) -> int:
        """How many consecutive rows hold one source (`source_rows_group`): read from the cache's source layers once
        they are filled (their labels compare keys, values and source mask), else found in the encoder states (at the
        first step, or at every step without a cache: one pass over them). Only without gradients (`generate`,
        evaluation) and not compiling (a data-dependent count would break the graph): 1 otherwise, every row on its
        own."""
        if self.training or torch.is_grad_enabled() or torch.compiler.is_compiling():
            return 1
        if cache is not None and cache.is_updated.get(0):
            return getattr(cache.cross_attention_cache.layers[0], "group", 1)
        return source_rows_group(encoder_hidden_states, encoder_attention_mask)

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        encoder_outputs: HfLlmEncoderOutput | None = None,
        encoder_attention_mask: torch.Tensor | None = None,
        cache: Cache | None = None,
        use_cache: bool = False,
        output_attentions: bool = False,
        output_hidden_states: bool = False,
        **kwargs,
    ) -> HfLlmDecoderOutput:
        """Cross-attention projects its own keys and values from `encoder_outputs.last_hidden_state` (whatever the
        encoder's family); without `encoder_outputs` this is a decoder-only LM."""
        inputs_embeds = embed(input_ids, inputs_embeds, self.embed_tokens)  # (B, T, H)
        encoder_hidden_states = encoder_outputs.last_hidden_state if encoder_outputs is not None else None
        # Packed documents (position ids restarting inside a row): masks keep them apart; no cache then.
        packed = cache is None and document_starts(position_ids, attention_mask) is not None
        if packed and attention_mask is not None and bool(attention_mask.all()):
            attention_mask = None  # transformers builds the packed-sequence mask only without a padding mask
        cache, self_cache = decoder_cache(
            cache, use_cache and not packed, encoder_hidden_states is not None, len(self.layers), DynamicLayer
        )
        past_length = self_cache.get_seq_length() if self_cache is not None else 0
        if position_ids is None:
            position_ids = positions_from_mask(attention_mask, past_length, inputs_embeds.shape[1], inputs_embeds.device)

        causal_mask = create_causal_mask(
            config=self.config,
            inputs_embeds=inputs_embeds,
            attention_mask=attention_mask,
            cache=self_cache,
            position_ids=position_ids,
        )
        cross_mask = encoder_position_embeddings = None
        source_group = 1
        if encoder_hidden_states is not None:
            cross_mask = create_bidirectional_mask(
                config=self.config,
                inputs_embeds=inputs_embeds,
                attention_mask=encoder_attention_mask,
                encoder_hidden_states=encoder_hidden_states,
            )
            if cache is None or not cache.is_updated.get(0):  # source keys not rotated and cached yet
                source_positions = positions_from_mask(
                    encoder_attention_mask, 0, encoder_hidden_states.shape[1], encoder_hidden_states.device
                )
                encoder_position_embeddings = self.rotary_emb(inputs_embeds, source_positions)
            source_group = self.source_group(encoder_hidden_states, encoder_attention_mask, cache)

        position_embeddings = self.rotary_emb(inputs_embeds, position_ids)
        hidden_states = self.dropout(self.embed_norm(inputs_embeds))
        all_hidden = [hidden_states] if output_hidden_states else None
        all_self, all_cross = ([], []) if output_attentions else (None, None)
        for layer in self.layers:
            hidden_states, self_weights, cross_weights = layer(
                hidden_states,
                causal_mask,
                position_embeddings,
                encoder_hidden_states,
                cross_mask,
                encoder_position_embeddings,
                cache=cache,
                source_mask=encoder_attention_mask,
                source_group=source_group,
                output_attentions=output_attentions,
                **kwargs,
            )
            if all_hidden is not None:
                all_hidden.append(hidden_states)
            if all_self is not None:
                all_self.append(self_weights)
                all_cross.append(cross_weights)
        hidden_states = self.norm(hidden_states)
        if all_hidden is not None:
            all_hidden[-1] = hidden_states
        return HfLlmDecoderOutput(
            last_hidden_state=hidden_states,
            cache=cache,
            hidden_states=tuple(all_hidden) if all_hidden is not None else None,
            attentions=tuple(all_self) if all_self is not None else None,
            cross_attentions=tuple(all_cross) if all_cross is not None and encoder_hidden_states is not None else None,
            # The last layer's cross-attention averaged over heads (B, T, S) copies.
            source_attention=cross_weights.mean(1) if self.config.uses_source_attention else None,
        )
