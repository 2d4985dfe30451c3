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
looks exactly like the zero padding at a sequence edge. Incremental decoding keeps each causal conv
block's inputs in an `HfLlmConvCacheLayer` and convolves the last k-1 of them with the new ones (fairseq's
"linearized convolution"): one new token costs one conv step per layer, whatever the length of the prefix.

Part of the exported folder: imports only the standard library, torch, transformers and siblings.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from transformers.cache_utils import Cache
from transformers.modeling_layers import GradientCheckpointingLayer

from .cache_layers import (
    STATIC_COVERAGE_ERROR, HfLlmConvCacheLayer, decoder_cache, is_static, source_memory, static_position,
)
from .copy_layers import HfLlmCoverageGate, covered_attention
from .shared_layers import (
    DocumentSplit, HfLlmDecoderOutput, HfLlmEncoderOutput, document_starts, embed, masked_softmax, new_token_mask,
    positions_from_mask,
)

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
    if torch.compiler.is_compiling() or (bound is not None and bound <= limit):
        return
    if position_ids.numel() and int(position_ids.max()) >= limit:
        raise ValueError(
            f"The input reaches position {int(position_ids.max())} but this convolutional model has learned "
            f"positions for {limit} (max_position_embeddings); truncate the input to {limit} tokens."
        )


def masked(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Zero the padded positions of `x (B, T, C)`; `mask (B, T)`."""
    return x if mask is None else x * mask.unsqueeze(-1).to(x.dtype)


class HfLlmConvBlock(GradientCheckpointingLayer):
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

    def convolve(self, x: torch.Tensor, cache_layer: HfLlmConvCacheLayer | None) -> torch.Tensor:
        """`x (B, T, C)` -> conv output `(B, 2C', T)`: "same" padding, or causal, after the cached inputs if any."""
        k, length = self.kernel_size, x.shape[1]
        if not self.causal:
            return self.conv(nn.functional.pad(x.transpose(1, 2), ((k - 1) // 2, k // 2)))
        if cache_layer is not None and is_static(cache_layer):
            # A static layer holds one input per cache slot (keys; values the same, for the key/value layout):
            # the window is slots start - (k - 1) ... start + T - 1, those before slot 0 being the zero padding.
            slots = torch.arange(length + k - 1, device=x.device) + (static_position(cache_layer) - (k - 1))  # (k-1+T,)
            inputs = cache_layer.update(x.unsqueeze(1), x.unsqueeze(1))[0][:, 0]  # (B, max_cache_len, C)
            window = inputs.index_select(1, slots.clamp(min=0)) * (slots >= 0).to(x.dtype).view(1, -1, 1)
            return self.conv(window.transpose(1, 2))
        if cache_layer is not None:
            x = cache_layer.update_inputs(x)[:, -(length + k - 1) :]  # (B, <= k - 1 + T, C): cached inputs + new ones
        return self.conv(nn.functional.pad(x.transpose(1, 2), (k - 1 + length - x.shape[1], 0)))

    def forward(
        self,
        x: torch.Tensor,
        mask: torch.Tensor | None = None,
        embedding: torch.Tensor | None = None,
        keys: torch.Tensor | None = None,
        values: torch.Tensor | None = None,
        source_mask: torch.Tensor | None = None,
        cache_layer: HfLlmConvCacheLayer | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """`x (B, T, C)` -> `(B, T, C')` and the attention weights `(B, T, S)` (None without attention)."""
        residual = x if self.residual_proj is None else self.residual_proj(x)  # (B, T, C')
        h = masked(self.dropout(x), mask)  # (B, T, C)
        h = nn.functional.glu(self.convolve(h, cache_layer), dim=1).transpose(1, 2)  # (B, T, C')
        probs = None
        if self.attention is not None:
            h, probs = self.attention(h, embedding, keys, values, source_mask, mask, cache_layer)
        return (h + residual) * SQRT_HALF, probs


class HfLlmMultiStepAttention(nn.Module):
    """ConvS2S attention of one decoder layer (Gehring et al. 2017, sec. 3.3); with `coverage`, the scores also see
    the coverage of the source so far (See et al. 2017, eq. 11, in bilinear form: `HfLlmCoverageGate`)."""

    def __init__(self, channels: int, embed_dim: int, dropout: float, weight_norm: bool, scaled: bool = True,
                 coverage: bool = False):
        super().__init__()
        # Scores are dot products of `embed_dim`-wide vectors of unit scale (normalised embeddings): without
        # 1/sqrt(embed_dim) the softmax starts saturated, one-hot on random source tokens (issue 19).
        self.score_scale = embed_dim**-0.5 if scaled else 1.0
        self.in_projection = cnn_linear(channels, embed_dim, 0.0, weight_norm)
        self.out_projection = cnn_linear(embed_dim, channels, 0.0, weight_norm)
        self.coverage_gate = HfLlmCoverageGate(embed_dim) if coverage else None

    def forward(self, x, target_embedding, keys, values, source_mask, mask=None, cache_layer=None):
        """`x (B, T, C)`, `target_embedding (B, T, E)`, `keys`/`values (B, S, E)` -> `(B, T, C)`, weights `(B, T, S)`;
        with coverage, `mask (B, T)` the target padding and `cache_layer` the block's cache (the coverage so far)."""
        query = (self.in_projection(x) + target_embedding) * SQRT_HALF  # (B, T, E)
        scores = torch.bmm(query, keys.transpose(1, 2)) * self.score_scale  # (B, T, S)
        if self.coverage_gate is None:
            probs = masked_softmax(scores, source_mask)  # (B, T, S)
        else:
            coverage = cache_layer.last_coverage() if cache_layer is not None else None
            coverage = coverage if coverage is not None else keys.new_zeros(keys.shape[:2])  # (B, S)
            gates = self.coverage_gate(query).squeeze(-1) * self.score_scale  # (B, T)
            probs, coverages = covered_attention(scores, gates, source_mask, mask, coverage)
            if cache_layer is not None:
                cache_layer.update_coverage(coverages)
        # Scale by sqrt(number of source tokens): the sum over S positions keeps its variance.
        lengths = source_mask.sum(-1) if source_mask is not None else torch.full((x.shape[0],), keys.shape[1])
        context = torch.bmm(probs, values) * lengths.to(x.dtype).sqrt().view(-1, 1, 1).to(x.device)  # (B, T, E)
        return (self.out_projection(context) + x) * SQRT_HALF, probs


class HfLlmCNNEncoder(nn.Module):
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
            [HfLlmConvBlock(channels[i], c, k, False, dropout, weight_norm) for i, (c, k) in enumerate(spec)]
        )
        self.fc_out = cnn_linear(channels[-1], config.hidden_size, 0.0, weight_norm)

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        output_hidden_states: bool = False,
        **kwargs,
    ) -> HfLlmEncoderOutput:
        inputs_embeds = embed(input_ids, inputs_embeds, self.embed_tokens)  # (B, S, H)
        bound = None
        if position_ids is None:
            position_ids = positions_from_mask(attention_mask, 0, inputs_embeds.shape[1], inputs_embeds.device)
            bound = inputs_embeds.shape[1]
        check_positions(position_ids, self.config.max_position_embeddings, bound)
        embedding = self.dropout(self.embed_norm(inputs_embeds + self.embed_positions(position_ids)))  # (B, S, H)
        all_hidden = [embedding] if output_hidden_states else None
        x = self.fc_in(embedding)  # (B, S, C)
        for layer in self.layers:
            x, _ = layer(x, attention_mask)  # (B, S, C)
            if all_hidden is not None:
                all_hidden.append(x)
        keys = masked(self.fc_out(x), attention_mask)  # (B, S, H)
        values = (keys + embedding) * SQRT_HALF
        if all_hidden is not None:
            all_hidden[-1] = keys  # the last entry is the output (projected back to the embedding width)
        return HfLlmEncoderOutput(
            last_hidden_state=keys, attention_values=values,
            hidden_states=tuple(all_hidden) if all_hidden is not None else None,
            source_ids=input_ids if self.config.copy_attention else None,
        )


class HfLlmCNNDecoder(nn.Module):
    """Causal ConvS2S decoder with multi-step attention; without an encoder, a gated convolutional LM.

    `(input_ids | inputs_embeds, attention_mask, encoder outputs, cache) -> (B, T, H)`.
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
                HfLlmConvBlock(
                    channels[i], c, k, True, dropout, weight_norm,
                    attention=HfLlmMultiStepAttention(
                        c, hidden, dropout, weight_norm, config.cnn_attention_scaling,
                        coverage=config.coverage_attention and i == len(spec) - 1,  # the attention that copies
                    )
                    if self.has_attention else None,
                )
                for i, (c, k) in enumerate(spec)
            ]
        )
        if self.has_attention:
            # Encoders of another width (or family) are bridged into the embedding width.
            self.key_proj = cnn_linear(encoder_hidden_size, hidden, 0.0, weight_norm) if encoder_hidden_size != hidden else None
        self.fc_out = cnn_linear(channels[-1], hidden, 0.0, weight_norm)

    def attention_memory(self, encoder_outputs: HfLlmEncoderOutput) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values `(B, S, H)` for every layer's attention (once per source; `source_memory` caches them):
        a ConvS2S encoder's output and output + source embedding; other encoders' states (bridged) for both."""
        if self.key_proj is not None or encoder_outputs.attention_values is None:
            states = encoder_outputs.last_hidden_state
            keys = states if self.key_proj is None else self.key_proj(states)
            return keys, keys
        return encoder_outputs.last_hidden_state, encoder_outputs.attention_values

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
        inputs_embeds = embed(input_ids, inputs_embeds, self.embed_tokens)  # (B, T, H)
        length = inputs_embeds.shape[1]
        # Packed documents (position ids restarting inside a row) run one per row; no cache then.
        starts = document_starts(position_ids, attention_mask) if cache is None and not self.has_attention else None
        cache, self_cache = decoder_cache(
            cache, use_cache and starts is None, self.has_attention, self.num_layers, HfLlmConvCacheLayer
        )
        static = self_cache is not None and is_static(self_cache.layers[0])
        if static and self.has_attention and self.config.coverage_attention:
            raise ValueError(STATIC_COVERAGE_ERROR)
        past = static_position(self_cache.layers[0]) if static else None
        mask = new_token_mask(attention_mask, length, 0 if past is None else past)  # the new tokens (B, T)

        bound = None
        if position_ids is None:
            bound = self_cache.layers[0].max_cache_len if static else None  # every slot's position is below it
            if past is None:
                past = self_cache.get_seq_length() if self_cache is not None else 0
                if attention_mask is not None:
                    past = attention_mask.shape[1] - length
                bound = past + length
            position_ids = positions_from_mask(attention_mask, past, length, inputs_embeds.device)
        position_ids = position_ids.expand(inputs_embeds.shape[0], -1)
        check_positions(position_ids, self.config.max_position_embeddings, bound)

        embedding = self.dropout(self.embed_norm(inputs_embeds + self.embed_positions(position_ids)))  # (B, T, H)
        keys = values = None
        if self.has_attention:
            keys, values = source_memory(cache, lambda: self.attention_memory(encoder_outputs))
        all_hidden = [embedding] if output_hidden_states else None
        all_probs = [] if output_attentions and self.has_attention else None
        probs = None
        if starts is not None:
            # Packed documents: one row per document, so no receptive field crosses a boundary.
            documents = DocumentSplit(starts)
            x = self.fc_in(documents.split(embedding))
            for layer in self.layers:
                x, _ = layer(x, documents.mask)
                if all_hidden is not None:
                    all_hidden.append(documents.merge(x))
            x = documents.merge(x)
        else:
            x = self.fc_in(embedding)  # (B, T, C)
            for i, layer in enumerate(self.layers):
                x, probs = layer(x, mask, embedding, keys, values, encoder_attention_mask,
                                 self_cache.layers[i] if self_cache is not None else None)
                if all_hidden is not None:
                    all_hidden.append(x)
                if all_probs is not None:
                    all_probs.append(probs.unsqueeze(1))  # (B, 1, T, S)
        hidden_states = self.dropout(self.fc_out(x))  # (B, T, H)
        if all_hidden is not None:
            all_hidden = (*all_hidden[: self.num_layers], hidden_states)  # the last entry is the output
        return HfLlmDecoderOutput(
            last_hidden_state=hidden_states,
            cache=cache,
            hidden_states=all_hidden,
            cross_attentions=tuple(all_probs) if all_probs is not None else None,
            # The last layer's multi-step attention (B, T, S) copies.
            source_attention=probs if self.config.uses_source_attention else None,
        )
