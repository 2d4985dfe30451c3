"""The memory layout of the weights for decoding on CPU: one token at a time multiplies each weight by one row.

`nn.Linear` keeps `W (out, in)` row-major and computes `x @ W.T`. For a batch of one token that product is a
matrix-vector product over the rows of `W`, which MKL's sgemm runs 2.5-3x slower than the same product over
the rows of `W.T` (`in` contiguous rows of `out` numbers: the layout of GPT-2's `Conv1D`, whose weights are
stored `(in, out)`) on the AMD EPYC CPU measured (benchmarks/bench_layout.py: 12 gate matrices of 1024 x 256 and an
8192 x 256 LM head, 2.8 ms vs 0.93 ms for one token; equal at 128 rows). `decoding_layout` therefore stores
each 2-D weight that multiplies hidden states column-major: same shape, same values, same `nn.Parameter`
(ties, optimiser state and peft's wrappers see the same object), only the strides change, so that `x @ W.T` reads
`W.T` contiguously.

Generation calls it on CPU before it decodes (`HfLlmForCausalLM.generate`); a checkpoint is unaffected
(`save_pretrained` writes contiguous tensors, `from_pretrained` loads contiguous ones).

Part of the exported folder: imports only the standard library, torch and transformers.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils import parametrize


def decoding_weights(module: nn.Module) -> list[nn.Parameter]:
    """The 2-D weights of `module` that multiply hidden states one token at a time when it decodes: those of its
    linear layers (the LM head, which may be the tied input embedding, included) and the gate matrices of its
    LSTMs/GRUs (`weight_ih_l0`, `weight_hh_l0`, ...). Parametrised weights (weight normalisation: recomputed at
    every call) are left out, and so are tensor subclasses (quantised weights) and tensors off the CPU."""
    weights, seen = [], set()
    for child in module.modules():
        if isinstance(child, nn.RNNBase):
            candidates = [p for name, p in child.named_parameters(recurse=False) if name.startswith("weight_")]
        elif isinstance(child, nn.Linear) and not parametrize.is_parametrized(child):
            candidates = [child.weight]
        else:
            continue
        for weight in candidates:
            if (isinstance(weight, nn.Parameter) and type(weight.data) is torch.Tensor and weight.dim() == 2
                    and weight.is_floating_point() and weight.device.type == "cpu" and id(weight) not in seen):
                seen.add(id(weight))
                weights.append(weight)
    return weights


@torch.no_grad()
def decoding_layout(module: nn.Module) -> None:
    """Store every weight of `decoding_weights(module)` column-major (`W.T` contiguous), in place; a weight already
    stored so, or a view into another tensor (a flattened parameter of a sharding wrapper), stays as it is."""
    for weight in decoding_weights(module):
        if weight.is_contiguous() and weight.shape[0] > 1 and not weight.data._is_view():
            weight.data = weight.data.t().contiguous().t()  # (out, in), strides (1, out)
