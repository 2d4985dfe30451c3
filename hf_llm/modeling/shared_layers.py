"""What the three families really share: positions from masks, the token loss, the encoder output type.

Part of the exported folder: imports only the standard library, torch and transformers.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from transformers.modeling_outputs import BaseModelOutput


@dataclass
class HfLlmEncoderOutput(BaseModelOutput):
    """Output of every hf_llm encoder.

    Args:
        last_hidden_state: `(B, S, H_enc)` encoder states, what every decoder attends to.
        final_state: `(B, L, D)` batch-first final recurrent state of an RNN encoder (others: None);
            an RNN decoder may start from it.
        attention_values: `(B, S, H_enc)` values for ConvS2S attention (encoder output + source embedding,
            Gehring et al. 2017); None for the other families, whose decoders use `last_hidden_state`.
    """

    final_state: torch.Tensor | None = None
    attention_values: torch.Tensor | None = None


def positions_from_mask(
    attention_mask: torch.Tensor | None, past_length: int, seq_length: int, device: torch.device
) -> torch.Tensor:
    """Position ids `(B or 1, T)` of the last `seq_length` tokens.

    With a 2-D padding mask the positions count real tokens only, so a left-padded row gets the same
    positions as the row alone; pads get position 0.
    """
    if attention_mask is None:
        return torch.arange(past_length, past_length + seq_length, device=device).unsqueeze(0)
    positions = attention_mask.long().cumsum(-1) - 1  # (B, past + T)
    positions = positions.masked_fill(attention_mask == 0, 0)
    return positions[:, -seq_length:]


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
