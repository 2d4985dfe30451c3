"""What the three families really share: the encoder output type, embedding look-up, masked softmax, positions
from masks, packed documents, the token losses.

Part of the exported folder: imports only the standard library, torch and transformers.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from transformers.modeling_outputs import BaseModelOutput, BaseModelOutputWithPastAndCrossAttentions


@dataclass
class HfLlmEncoderOutput(BaseModelOutput):
    """Output of every hf_llm encoder.

    Args:
        last_hidden_state: `(B, S, H_enc)` encoder states, what every decoder attends to.
        final_state: `(B, L, D)` batch-first final recurrent state of an RNN encoder (others: None);
            an RNN decoder may start from it.
        attention_values: `(B, S, H_enc)` values for ConvS2S attention (encoder output + source embedding,
            Gehring et al. 2017); None for the other families, whose decoders use `last_hidden_state`.
        source_ids: `(B, S)` the source token ids, which copy attention scatters its attention onto (with
            `copy_attention` only, else None). They ride here so that `generate()`, which runs the encoder once
            and expands every tensor of its output for beams and samples, has them at every decoding step.
    """

    final_state: torch.Tensor | None = None
    attention_values: torch.Tensor | None = None
    source_ids: torch.LongTensor | None = None


@dataclass
class HfLlmDecoderOutput(BaseModelOutputWithPastAndCrossAttentions):
    """Output of every hf_llm decoder.

    Args:
        source_attention: `(B, T, S)` the attention over the source that copies and whose coverage is penalised
            (`config.uses_source_attention`, else None): the recurrent decoder's attention, the last ConvS2S
            layer's multi-step attention, the last Transformer layer's cross-attention averaged over heads.
    """

    source_attention: torch.Tensor | None = None


def embed(input_ids: torch.LongTensor | None, inputs_embeds: torch.Tensor | None, embed_tokens: nn.Embedding) -> torch.Tensor:
    """Token embeddings `(B, T, H)` of exactly one of `input_ids` or `inputs_embeds` (which pass through)."""
    if (input_ids is None) == (inputs_embeds is None):
        raise ValueError("Pass exactly one of input_ids or inputs_embeds.")
    return embed_tokens(input_ids) if inputs_embeds is None else inputs_embeds


def masked_softmax(scores: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Softmax over the last axis (source positions) with padding excluded; `mask (B, S)`, computed in float32."""
    if mask is not None:
        mask = mask.bool().view(mask.shape[0], *([1] * (scores.dim() - 2)), mask.shape[-1])
        scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
    return torch.softmax(scores.float(), dim=-1).to(scores.dtype)


def positions_from_mask(
    attention_mask: torch.Tensor | None, past_length: int | torch.Tensor, seq_length: int, device: torch.device
) -> torch.Tensor:
    """Position ids `(B or 1, T)` of the last `seq_length` tokens.

    With a 2-D padding mask the positions count real tokens only, so a left-padded row gets the same
    positions as the row alone; pads get position 0. `past_length` may be a static cache's 0-dim length tensor
    (no device sync, no graph break under torch.compile).
    """
    if attention_mask is None:
        return (torch.arange(seq_length, device=device) + past_length).unsqueeze(0)
    if attention_mask.dim() == 4:  # generate's mask for a static cache (B, 1, T, max_cache_len)
        return positions_from_4d_mask(attention_mask) * new_token_mask(attention_mask, seq_length, past_length)
    positions = attention_mask.long().cumsum(-1) - 1  # (B, past + T)
    positions = positions.masked_fill(attention_mask == 0, 0)
    return positions[:, -seq_length:]


def new_token_mask(
    attention_mask: torch.Tensor | None, length: int, past_length: int | torch.Tensor = 0
) -> torch.Tensor | None:
    """Which of the `length` new tokens are real `(B, T)` (1 real, 0 padding), or None when all are.

    `attention_mask` is the usual 2-D padding mask over past + new tokens, or the 4-D mask `(B, 1, T, max_cache_len)`
    that `generate` builds for a static cache (bool "may attend", or additive 0 / dtype minimum): a token is real
    when it may attend to its own cache slot `past_length + t` (the causal mask lets a query see the real keys up to
    its own position). Recurrent and convolutional decoders read their padding from it.
    """
    if attention_mask is None:
        return None
    if attention_mask.dim() == 2:
        return attention_mask[:, -length:]
    rows = attention_mask[:, 0]  # (B, T, K)
    slots = (torch.arange(length, device=rows.device) + past_length).view(1, length, 1).expand(rows.shape[0], -1, -1)
    own = rows.gather(-1, slots).squeeze(-1)  # (B, T)
    return (own if own.dtype == torch.bool else own == 0).long()


def positions_from_4d_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Position ids `(B, T)` from a 4-D mask `(B, 1, T, K)`: the real tokens a query sees, minus one (its own), so a
    left-padded row gets the positions of the row alone; pads get position 0, as in `positions_from_mask`."""
    allowed = attention_mask[:, 0] if attention_mask.dtype == torch.bool else attention_mask[:, 0] == 0
    return (allowed.long().sum(-1) - 1).clamp(min=0)


def token_cross_entropy(
    logits: torch.Tensor, labels: torch.Tensor, num_items_in_batch: torch.Tensor | int | None = None
) -> torch.Tensor:
    """Cross-entropy of `logits (B, T, V)` against `labels (B, T)` without shifting (seq2seq targets).

    When the Trainer passes `num_items_in_batch` the loss is summed and divided by it, so gradient
    accumulation gives the same loss as one larger batch.
    """
    logits = logits.float().reshape(-1, logits.shape[-1])
    labels = labels.to(logits.device).reshape(-1)
    if num_items_in_batch is None:
        return nn.functional.cross_entropy(logits, labels, ignore_index=-100)
    loss = nn.functional.cross_entropy(logits, labels, ignore_index=-100, reduction="sum")
    if torch.is_tensor(num_items_in_batch):
        num_items_in_batch = num_items_in_batch.to(loss.device)
    return loss / num_items_in_batch


def shift_tokens_right(labels: torch.Tensor, pad_token_id: int, decoder_start_token_id: int) -> torch.Tensor:
    """Decoder inputs from labels: prepend the start token, drop the last label, -100 becomes pad."""
    shifted = labels.new_zeros(labels.shape)
    shifted[:, 1:] = labels[:, :-1].clone()
    shifted[:, 0] = decoder_start_token_id
    return shifted.masked_fill(shifted == -100, pad_token_id)


def document_starts(position_ids: torch.Tensor | None, attention_mask: torch.Tensor | None = None) -> torch.Tensor | None:
    """Where packed documents start: `(B, T)` bool, True where a real token's position does not follow the
    previous real token's (and at the start of every row).

    None when no row holds more than one document (the usual, unpacked case). Position ids that restart
    at 0 inside a row are how packed training data mark document boundaries (as transformers'
    `DataCollatorWithFlattening` does); padding (mask 0), whose positions are 0, is not a boundary.
    """
    if position_ids is None or position_ids.dim() != 2 or position_ids.shape[1] < 2:
        return None
    if attention_mask is not None and attention_mask.dim() != 2:
        attention_mask = None  # a prepared 4-D mask already says what attends to what
    if attention_mask is not None:
        position_ids = position_ids.expand(attention_mask.shape[0], -1)
    starts = torch.ones_like(position_ids, dtype=torch.bool)
    starts[:, 1:] = position_ids[:, 1:] != position_ids[:, :-1] + 1
    if attention_mask is not None:
        real = attention_mask[:, -position_ids.shape[1] :].bool()
        starts[:, 1:] &= real[:, 1:] & real[:, :-1]
    return starts if bool(starts[:, 1:].any()) else None


class DocumentSplit:
    """Reshape a packed batch `(B, T, ...)` into one row per document `(N, L, ...)` and back.

    Recurrent and convolutional stacks run on the split batch, so no state and no receptive field
    crosses a document boundary; each document is left-aligned and right-padded (`mask (N, L)`).
    """

    def __init__(self, starts: torch.Tensor):
        batch, length = starts.shape
        flat = starts.reshape(-1)
        self.shape = (batch, length)
        self.document = flat.long().cumsum(0) - 1  # (B*T,) document of each token
        first = flat.nonzero().squeeze(1)  # (N,) flat index where each document starts
        self.offset = torch.arange(flat.numel(), device=flat.device) - first[self.document]
        lengths = torch.bincount(self.document, minlength=first.numel())
        self.mask = torch.arange(int(lengths.max()), device=flat.device)[None, :] < lengths[:, None]  # (N, L)

    def split(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, *x.shape[2:])
        out = flat.new_zeros(self.mask.shape + flat.shape[1:])
        out[self.document, self.offset] = flat
        return out

    def merge(self, x: torch.Tensor) -> torch.Tensor:
        return x[self.document, self.offset].reshape(*self.shape, *x.shape[2:])


class LinearCrossEntropy(torch.autograd.Function):
    """Cross-entropy of `hidden @ weight.T` without keeping the logits: chunk by chunk, the forward pass
    computes the loss *and* both gradients (softmax minus one-hot, then two matmuls), reusing one logits
    buffer in place; the backward pass only scales them. Same FLOPs as the plain loss, a fraction of the
    memory traffic and none of the `(tokens, vocab)` activations (the idea of Liger's fused linear
    cross-entropy and of Wijmans et al. 2024, "Cut Your Losses in Large-Vocabulary Language Models").
    """

    @staticmethod
    def forward(ctx, hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor, divisor: torch.Tensor,
                chunk_size: int) -> torch.Tensor:
        # hidden (N, H), weight (V, H), labels (N,) with -100 = ignore; returns sum of token losses / divisor.
        grad_hidden = torch.empty_like(hidden)
        grad_weight = torch.zeros_like(weight, dtype=torch.float32)
        total = hidden.new_zeros((), dtype=torch.float32)
        for start in range(0, hidden.shape[0], chunk_size):
            h = hidden[start : start + chunk_size]
            y = labels[start : start + chunk_size]
            valid = y != -100
            target = y.clamp(min=0).unsqueeze(1)
            logits = (h @ weight.t()).float()  # (C, V), the only large buffer
            logits -= logits.max(dim=-1, keepdim=True).values
            target_logit = logits.gather(1, target).squeeze(1)
            logits.exp_()
            norm = logits.sum(dim=-1, keepdim=True)
            total += ((norm.squeeze(1).log() - target_logit) * valid).sum()
            logits /= norm  # softmax
            logits.scatter_add_(1, target, -valid.unsqueeze(1).to(logits.dtype))  # minus one-hot
            logits *= valid.unsqueeze(1)
            grad = logits.to(hidden.dtype)
            grad_hidden[start : start + chunk_size] = grad @ weight
            if torch.is_autocast_enabled(h.device.type):  # out of place: autocast runs it in bf16 like the others
                grad_weight += grad.t() @ h
            else:  # in place, no (vocab, hidden) temporary
                grad_weight.addmm_(grad.t().float(), h.float())
        ctx.save_for_backward(grad_hidden, grad_weight.to(weight.dtype), divisor)
        return total / divisor

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        grad_hidden, grad_weight, divisor = ctx.saved_tensors
        scale = grad_output / divisor
        return grad_hidden * scale.to(grad_hidden.dtype), grad_weight * scale.to(grad_weight.dtype), None, None, None


def fused_cross_entropy(
    hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor, num_items_in_batch=None, shift: bool = False,
    chunk_size: int | None = None,
) -> torch.Tensor:
    """`token_cross_entropy(hidden @ weight.T, labels)` (or the shifted causal-LM loss) without the logits.

    `chunk_size` (tokens per chunk) defaults to 512 on CPU, where a small logits buffer stays in cache, and on
    accelerators to as many tokens as fill 1 GiB of fp32 logits: there each chunk costs a dozen kernel
    launches, and 512-token chunks made training 30% slower than the plain loss (benchmarks/gpu.py, H200).
    """
    if chunk_size is None:
        chunk_size = 512 if hidden.device.type == "cpu" else max(512, 2**30 // (4 * weight.shape[0]))
    if shift:  # position t predicts token t + 1, as transformers' ForCausalLMLoss
        labels = nn.functional.pad(labels, (0, 1), value=-100)[..., 1:]
    hidden = hidden.reshape(-1, hidden.shape[-1])
    labels = labels.reshape(-1).to(hidden.device)
    if num_items_in_batch is None:
        divisor = (labels != -100).sum().clamp(min=1).float()
    else:
        divisor = torch.as_tensor(num_items_in_batch, dtype=torch.float32, device=hidden.device)
    return LinearCrossEntropy.apply(hidden, weight, labels, divisor, chunk_size)
