"""Copy attention (pointer-generator) and the coverage loss, for the encoder-decoders of every decoder family.

- See et al. 2017, "Get To The Point: Summarization with Pointer-Generator Networks": a generation probability
  p_gen = sigmoid(w_h . s_t + w_c . c_t + w_x . x_t + b) from the decoder state s_t, its context vector c_t
  (the attention-weighted encoder states) and its input embedding x_t; the output distribution is
  p_gen * softmax(vocabulary logits) + (1 - p_gen) * the attention over the source, scattered onto the source
  token ids (OpenNMT-py's copy generator does the same over an extended vocabulary; with byte-level BPE every
  string is made of in-vocabulary ids, so copying onto those ids suffices: docs/ARCHITECTURE.md).
- Coverage (See et al. 2017, sec. 2.3): the coverage vector c_t = sum_{t' < t} a_t' and the loss
  sum_i min(a_t,i, c_t,i), which penalises attending again to what was already attended to; with
  `coverage_attention` the coverage vector is also an input of the attention scorer (See et al.'s eq. 11; Tu et al.
  2016, "Modeling Coverage for Neural Machine Translation"), so the decoder can see what it has covered.

The mixture is returned as log-probabilities: what `generate()` turns into scores (log_softmax leaves them as they
are), so greedy, sampling and beam search work unchanged; the loss is their negative log-likelihood.

Part of the exported folder: imports only the standard library, torch, transformers and siblings.
"""

from __future__ import annotations

import torch
from torch import nn

from .shared_layers import masked_softmax


class HfLlmCopyGenerator(nn.Module):
    """The pointer-generator's switch p_gen and the mixture of the vocabulary and copy distributions."""

    def __init__(self, hidden_size: int, encoder_hidden_size: int):
        super().__init__()
        self.switch = nn.Linear(2 * hidden_size + encoder_hidden_size, 1)  # [s_t; c_t; x_t] -> logit of p_gen

    def forward(
        self,
        logits: torch.Tensor,
        states: torch.Tensor,
        attention: torch.Tensor,
        encoder_states: torch.Tensor,
        inputs_embeds: torch.Tensor,
        source_ids: torch.LongTensor,
    ) -> torch.Tensor:
        """`logits (B, T, V)` of the vocabulary, decoder `states (B, T, H)`, `attention (B, T, S)` over the source,
        `encoder_states (B, S, E)`, decoder `inputs_embeds (B, T, H)`, `source_ids (B, S)` -> log-probabilities of
        the mixture `(B, T, V)`, in float32."""
        context = torch.bmm(attention.to(encoder_states.dtype), encoder_states)  # (B, T, E)
        switch = self.switch(torch.cat([states, context.to(states.dtype), inputs_embeds.to(states.dtype)], dim=-1))
        switch = switch.float()  # (B, T, 1)
        log_generate = nn.functional.log_softmax(logits.float(), dim=-1) + nn.functional.logsigmoid(switch)
        index = source_ids.to(logits.device)[:, None, :].expand(-1, logits.shape[1], -1)  # (B, T, S)
        copied = torch.zeros_like(log_generate).scatter_add(-1, index, attention.float())  # (B, T, V)
        # log of the copy mass, -inf where nothing is copied (log(0) without its NaN gradient).
        log_copied = torch.where(
            copied > 0, copied.clamp(min=torch.finfo(copied.dtype).tiny).log(), torch.full_like(copied, -torch.inf)
        )
        return torch.logaddexp(log_generate, log_copied + nn.functional.logsigmoid(-switch))


class HfLlmCoverageGate(nn.Linear):
    """w_c of See et al.'s eq. 11, e_t,i = v . tanh(W_h h_i + W_s s_t + w_c c_t,i + b): the coverage c_t,i of source
    position i, times a learned vector, joins the attention keys. For a bilinear score (Luong, ConvS2S) that is
    q_t . (k_i + c_t,i w_c) = q_t . k_i + c_t,i (w_c . q_t): the gate `(w_c . q_t)` is this layer applied to the
    queries. Zero at initialisation, so a model starts as the same model without coverage in its scorer."""

    def __init__(self, query_size: int):
        super().__init__(query_size, 1, bias=False)

    def keys(self, keys: torch.Tensor, coverage: torch.Tensor) -> torch.Tensor:
        """Additive scorers: `keys (B, S, H)` + `coverage (B, S)` times w_c -> `(B, S, H)`."""
        return keys + coverage.unsqueeze(-1).to(keys.dtype) * self.weight[0]


def covered_attention(
    scores: torch.Tensor,
    gates: torch.Tensor,
    source_mask: torch.Tensor | None,
    mask: torch.Tensor | None,
    coverage: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Attention whose scores see the coverage: for each target step t, a_t = softmax(scores_t + gates_t * c_t)
    over the real source tokens, then c_{t+1} = c_t + a_t (a padded target position adds nothing).

    `scores (B, T, S)` the bilinear scores without coverage, `gates (B, T)` = w_c . q_t (`HfLlmCoverageGate`),
    `source_mask (B, S)`, `mask (B, T)` the target's padding mask or None, `coverage (B, S)` before the first step
    -> attention `(B, T, S)` and the coverage after each step `(B, T, S)` (what a cache keeps).

    The loop over target steps is the recurrence c_t itself (a_t depends on every earlier a); each step is a few
    `(B, S)` element-wise operations, the `(B, T, S)` scores are computed for all steps at once before it.
    """
    probs, coverages = [], []
    coverage = coverage.to(scores.dtype)
    for t in range(scores.shape[1]):
        step = masked_softmax(scores[:, t] + gates[:, t, None] * coverage, source_mask)  # (B, S)
        coverage = coverage + (step if mask is None else step * mask[:, t, None].to(step.dtype))
        probs.append(step)
        coverages.append(coverage)
    return torch.stack(probs, dim=1), torch.stack(coverages, dim=1)


def coverage_loss(
    attention: torch.Tensor, labels: torch.Tensor, num_items_in_batch: torch.Tensor | int | None = None
) -> torch.Tensor:
    """See et al.'s coverage loss of `attention (B, T, S)`: per target token sum_i min(a_t,i, c_t,i), summed over the
    tokens with a label (`labels (B, T)`, -100 ignored) and divided by their number, or by `num_items_in_batch`
    when the Trainer passes it (as the token loss is)."""
    attention = attention.float()
    coverage = attention.cumsum(dim=1) - attention  # (B, T, S): the sum of the earlier steps' attention
    per_token = torch.minimum(attention, coverage).sum(-1)  # (B, T)
    valid = (labels.to(attention.device) != -100).to(per_token.dtype)
    total = (per_token * valid).sum()
    if num_items_in_batch is None:
        return total / valid.sum().clamp(min=1.0)
    if torch.is_tensor(num_items_in_batch):
        num_items_in_batch = num_items_in_batch.to(total.device)
    return total / num_items_in_batch
