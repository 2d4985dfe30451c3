"""The convolutional family: gated convolutional LMs and ConvS2S encoder-decoders.

- Blocks from Gehring et al. 2017, "Convolutional Sequence to Sequence Learning" (ConvS2S): dropout ->
  1-D convolution to twice the channels -> gated linear unit (GLU, Dauphin et al. 2017, "Language Modeling
  with Gated Convolutional Networks") -> residual, the sum scaled by sqrt(0.5); learned positions added
  to the embeddings, then a LayerNorm (tied, small-init embeddings would otherwise start the stack from
  near-zero inputs); linear projections where the channel count changes. Initialisation as in the paper
  (variance preserved through GLU and dropout); optional weight normalisation (Salimans & Kingma 2016).
- Encoder: non-causal ("same" padding). Decoder: causal (left padding only); without an encoder it is a
  gated convolutional language model.
- Multi-step attention: one attention per decoder layer over the encoder, keys = encoder output,
  values = encoder output + source embedding (scaled by sqrt(0.5)), masked softmax over source padding.

Padding never leaks: every convolution input is multiplied by the padding mask, so a padded position
looks exactly like the zero padding at a sequence edge. Incremental decoding keeps, per causal conv
layer, its last k-1 inputs in a conv cache layer (fairseq's "linearized convolution"): one new token
costs one conv step per layer, whatever the length of the prefix.

Part of the exported folder: imports only the standard library, torch, transformers and siblings.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from transformers.cache_utils import Cache, DynamicCache, EncoderDecoderCache, LinearAttentionLayer
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import BaseModelOutputWithPast

from .shared_layers import DocumentSplit, HfLlmEncoderOutput, document_starts, positions_from_mask

SQRT_HALF = math.sqrt(0.5)


def cnn_linear(in_features: int, out_features: int, dropout: float, weight_norm: bool) -> nn.Linear:
    """Linear layer with ConvS2S's initialisation std sqrt((1 - dropout) / fan_in), set by `_init_weights`."""
    layer = nn.Linear(in_features, out_features)
    layer.init_std = math.sqrt((1.0 - dropout) / in_features)
    return nn.utils.parametrizations.weight_norm(layer) if weight_norm else layer


def cnn_conv(in_channels: int, out_channels: int, kernel_size: int, dropout: float, weight_norm: bool) -> nn.Conv1d:
    """Conv1d feeding a GLU: std sqrt(4 (1 - dropout) / (k * in_channels)) (Gehring et al. 2017, sec. 3.5)."""
    conv = nn.Conv1d(in_channels, out_channels, kernel_size)
    conv.init_std = math.sqrt(4.0 * (1.0 - dropout) / (kernel_size * in_channels))
    return nn.utils.parametrizations.weight_norm(conv) if weight_norm else conv


def check_positions(position_ids: torch.Tensor, limit: int, bound: int | None = None) -> None:
    """Learned positions stop at `max_position_embeddings`: a longer input is an error, not an IndexError.

    `bound`, when known from shapes (positions made here from the mask are below it), spares the check's
    device sync (and torch.compile's graph break) whenever it is within the limit. Compiled models skip it.
    """
    if (bound is not None and bound <= limit) or torch.compiler.is_compiling():
        return
    if position_ids.numel() and int(position_ids.max()) >= limit:
        raise ValueError(
            f"The input reaches position {int(position_ids.max())} but this convolutional model has learned "
            f"positions for {limit} (max_position_embeddings); truncate the input to {limit} tokens."
        )


def masked(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Zero the padded positions of `x (B, T, C)`; `mask (B, T)`."""
    return x if mask is None else x * mask.unsqueeze(-1).to(x.dtype)


class ConvBlock(GradientCheckpointingLayer):
    """Residual GLU convolution, causal or "same": (x [projected] + GLU(conv(dropout(x)))) * sqrt(0.5), with
    the decoder's multi-step attention applied between the GLU and the residual sum (as in fairseq's fconv)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, causal: bool, dropout: float,
                 weight_norm: bool, attention: nn.Module | None = None):
        super().__init__()
        self.attention = attention
        self.kernel_size = kernel_size
        self.causal = causal
        self.residual_proj = (
            cnn_linear(in_channels, out_channels, dropout, weight_norm) if in_channels != out_channels else None
        )
        self.dropout = nn.Dropout(dropout)
        self.conv = cnn_conv(in_channels, 2 * out_channels, kernel_size, dropout, weight_norm)

    def convolve(self, x: torch.Tensor, layer_idx: int, cache: Cache | None) -> torch.Tensor:
        """`x (B, C, T)` -> conv output `(B, 2C', T)`: "same" padding, or causal with the cached last k-1 inputs."""
        k = self.kernel_size
        if not self.causal:
            return self.conv(nn.functional.pad(x, ((k - 1) // 2, k // 2)))
        if cache is None or k == 1:
            return self.conv(nn.functional.pad(x, (k - 1, 0)))
        if not cache.has_previous_state(layer_idx):
            # First call: left zero padding, and the last k-1 inputs become the cached state.
            return self.conv(cache.update_conv_state(nn.functional.pad(x, (k - 1, 0)), layer_idx, conv_kernel_size=k - 1))
        return self.conv(cache.update_conv_state(x, layer_idx))  # (B, C, k - 1 + T): cached inputs + new ones

    def forward(
        self,
        x: torch.Tensor,
        mask: torch.Tensor | None = None,
        embedding: torch.Tensor | None = None,
        keys: torch.Tensor | None = None,
        values: torch.Tensor | None = None,
        source_mask: torch.Tensor | None = None,
        layer_idx: int = 0,
        cache: Cache | None = None,
    ) -> torch.Tensor:
        residual = x if self.residual_proj is None else self.residual_proj(x)  # (B, T, C')
        h = masked(self.dropout(x), mask).transpose(1, 2)  # (B, C, T)
        h = nn.functional.glu(self.convolve(h, layer_idx, cache), dim=1).transpose(1, 2)  # (B, T, C')
        if self.attention is not None:
            h = self.attention(h, embedding, keys, values, source_mask)
        return (h + residual) * SQRT_HALF


class MultiStepAttention(nn.Module):
    """ConvS2S attention of one decoder layer (Gehring et al. 2017, sec. 3.3)."""

    def __init__(self, channels: int, embed_dim: int, dropout: float, weight_norm: bool):
        super().__init__()
        self.in_projection = cnn_linear(channels, embed_dim, 0.0, weight_norm)
        self.out_projection = cnn_linear(embed_dim, channels, 0.0, weight_norm)

    def forward(self, x, target_embedding, keys, values, source_mask) -> torch.Tensor:
        """`x (B, T, C)`, `target_embedding (B, T, E)`, `keys`/`values (B, S, E)` -> `(B, T, C)`."""
        query = (self.in_projection(x) + target_embedding) * SQRT_HALF  # (B, T, E)
        scores = torch.bmm(query, keys.transpose(1, 2))  # (B, T, S)
        if source_mask is not None:
            scores = scores.masked_fill(~source_mask.bool().unsqueeze(1), torch.finfo(scores.dtype).min)
        probs = torch.softmax(scores.float(), dim=-1).to(x.dtype)
        # Scale by sqrt(number of source tokens): the sum over S positions keeps its variance.
        lengths = source_mask.sum(-1) if source_mask is not None else torch.full((x.shape[0],), keys.shape[1])
        context = torch.bmm(probs, values) * lengths.to(x.dtype).sqrt().view(-1, 1, 1).to(x.device)  # (B, T, E)
        return (self.out_projection(context) + x) * SQRT_HALF


class CNNEncoder(nn.Module):
    """ConvS2S encoder: `(B, S) -> keys (B, S, H)` as `last_hidden_state`, values (+ source embedding) as
    `attention_values`."""

    def __init__(self, config, num_layers: int):
        super().__init__()
        spec = config.cnn_spec("encoder")
        dropout, weight_norm = config.dropout, config.cnn_weight_norm
        self.config = config
        self.output_size = config.hidden_size
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size, config.pad_token_id)
        self.embed_positions = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        self.embed_norm = nn.LayerNorm(config.hidden_size, eps=config.norm_eps, bias=False)
        self.dropout = nn.Dropout(dropout)
        self.fc_in = cnn_linear(config.hidden_size, spec[0][0], dropout, weight_norm)
        channels = [spec[0][0]] + [c for c, _ in spec]
        self.layers = nn.ModuleList(
            [ConvBlock(channels[i], c, k, False, dropout, weight_norm) for i, (c, k) in enumerate(spec)]
        )
        self.fc_out = cnn_linear(channels[-1], config.hidden_size, 0.0, weight_norm)

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        **kwargs,
    ) -> HfLlmEncoderOutput:
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("Pass exactly one of input_ids or inputs_embeds to the encoder.")
        if inputs_embeds is None:
            inputs_embeds = self.embed_tokens(input_ids)  # (B, S, H)
        bound = None
        if position_ids is None:
            position_ids = positions_from_mask(attention_mask, 0, inputs_embeds.shape[1], inputs_embeds.device)
            bound = inputs_embeds.shape[1]
        check_positions(position_ids, self.config.max_position_embeddings, bound)
        embedding = self.dropout(self.embed_norm(inputs_embeds + self.embed_positions(position_ids)))  # (B, S, H)
        x = self.fc_in(embedding)  # (B, S, C)
        for layer in self.layers:
            x = layer(x, attention_mask)  # (B, S, C)
        keys = masked(self.fc_out(x), attention_mask)  # (B, S, H)
        values = (keys + embedding) * SQRT_HALF
        return HfLlmEncoderOutput(last_hidden_state=keys, attention_values=values)


class CNNDecoder(nn.Module):
    """Causal ConvS2S decoder with multi-step attention; without an encoder, a gated convolutional LM.

    `(input_ids | inputs_embeds, attention_mask, encoder states, cache) -> (B, T, H)`.
    """

    def __init__(self, config, num_layers: int, encoder_hidden_size: int | None = None):
        super().__init__()
        spec = config.cnn_spec("decoder")
        dropout, weight_norm = config.dropout, config.cnn_weight_norm
        hidden = config.hidden_size
        self.config = config
        self.output_size = hidden
        self.num_layers = len(spec)
        self.embed_tokens = nn.Embedding(config.vocab_size, hidden, config.pad_token_id)
        self.embed_positions = nn.Embedding(config.max_position_embeddings, hidden)
        self.embed_norm = nn.LayerNorm(hidden, eps=config.norm_eps, bias=False)
        self.dropout = nn.Dropout(dropout)
        self.fc_in = cnn_linear(hidden, spec[0][0], dropout, weight_norm)
        channels = [spec[0][0]] + [c for c, _ in spec]
        self.has_attention = encoder_hidden_size is not None
        self.layers = nn.ModuleList(
            [
                ConvBlock(
                    channels[i], c, k, True, dropout, weight_norm,
                    attention=MultiStepAttention(c, hidden, dropout, weight_norm) if self.has_attention else None,
                )
                for i, (c, k) in enumerate(spec)
            ]
        )
        if self.has_attention:
            # Encoders of another width (or family) are bridged into the embedding width.
            self.key_proj = cnn_linear(encoder_hidden_size, hidden, 0.0, weight_norm) if encoder_hidden_size != hidden else None
        self.fc_out = cnn_linear(channels[-1], hidden, 0.0, weight_norm)

    def make_cache(self, is_encoder_decoder: bool) -> Cache:
        """Empty cache: one conv layer per block (its last k-1 inputs) and one holding the next position."""
        layers = [LinearAttentionLayer() for _ in range(self.num_layers + 1)]
        decoder_cache = Cache(layers=layers)
        return EncoderDecoderCache(decoder_cache, DynamicCache()) if is_encoder_decoder else decoder_cache

    def attention_memory(self, encoder_hidden_states, encoder_attention_values, cache):
        """Keys and values `(B, S, H)` for every layer's attention, bridged once per source and cached."""
        if isinstance(cache, EncoderDecoderCache) and cache.is_updated.get(0):
            layer = cache.cross_attention_cache.layers[0]
            return layer.keys, layer.values
        if self.key_proj is not None or encoder_attention_values is None:
            keys = encoder_hidden_states if self.key_proj is None else self.key_proj(encoder_hidden_states)
            values = keys
        else:
            keys, values = encoder_hidden_states, encoder_attention_values
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
        """`encoder_attention_values` (a ConvS2S encoder's output + source embedding) are the attention
        values; other encoders' states serve as keys and values. `encoder_final_state` is not used."""
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("Pass exactly one of input_ids or inputs_embeds to the decoder.")
        if inputs_embeds is None:
            inputs_embeds = self.embed_tokens(input_ids)  # (B, T, H)
        length = inputs_embeds.shape[1]
        # Packed documents (position ids restarting inside a row) run one per row; no cache then.
        starts = document_starts(position_ids, attention_mask) if cache is None and not self.has_attention else None
        if use_cache and cache is None and starts is None:
            cache = self.make_cache(encoder_hidden_states is not None)
        self_cache = cache.self_attention_cache if isinstance(cache, EncoderDecoderCache) else cache
        mask = attention_mask[:, -length:] if attention_mask is not None else None  # the new tokens

        bound = None
        if position_ids is None:
            next_position = None
            if self_cache is not None and self_cache.layers[-1].is_recurrent_states_initialized[0]:
                next_position = self_cache.layers[-1].recurrent_states[0]  # (B, 1)
            if next_position is not None and attention_mask is None:
                position_ids = next_position + torch.arange(length, device=next_position.device)
            else:
                past = attention_mask.shape[1] - length if attention_mask is not None else 0
                position_ids = positions_from_mask(attention_mask, past, length, inputs_embeds.device)
                bound = past + length
        position_ids = position_ids.expand(inputs_embeds.shape[0], -1)
        check_positions(position_ids, self.config.max_position_embeddings, bound)
        if self_cache is not None:
            self_cache.update_recurrent_state(position_ids[:, -1:] + 1, self.num_layers)

        embedding = self.dropout(self.embed_norm(inputs_embeds + self.embed_positions(position_ids)))  # (B, T, H)
        keys = values = None
        if self.has_attention:
            keys, values = self.attention_memory(encoder_hidden_states, encoder_attention_values, cache)
        if starts is not None:
            # Packed documents: one row per document, so no receptive field crosses a boundary.
            documents = DocumentSplit(starts)
            x = documents.merge(self.blocks(documents.split(embedding), documents.mask))
        else:
            x = self.blocks(embedding, mask, keys, values, encoder_attention_mask, self_cache)
        hidden_states = self.dropout(self.fc_out(x))  # (B, T, H)
        return BaseModelOutputWithPast(last_hidden_state=hidden_states, cache=cache)

    def blocks(self, embedding, mask, keys=None, values=None, source_mask=None, cache=None) -> torch.Tensor:
        """`embedding (B, T, H)` -> last block's output `(B, T, C)`."""
        x = self.fc_in(embedding)  # (B, T, C)
        for i, layer in enumerate(self.layers):
            x = layer(x, mask, embedding, keys, values, source_mask, layer_idx=i, cache=cache)
        return x
