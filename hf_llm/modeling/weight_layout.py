"""The memory layout of the weights for decoding one sequence on CPU: every weight then multiplies one row at a time.

`nn.Linear` keeps `W (out, in)` row-major and computes `x @ W.T`. For one row `x (1, in)` that product is a
matrix-vector product, and MKL's sgemv on the AMD EPYC CPU measured (2026-12-07, one thread,
`benchmarks/bench_layout.py`, `benchmarks/results/layout.json`) runs it in 0.77-0.91x the time over the rows of `W.T`
(`W` column-major: the layout of GPT-2's `Conv1D`, whose weights are stored `(in, out)`) than over the rows of `W`;
batch-1 greedy decoding runs 1.14-1.41x faster eager, 1.02-1.32x compiled. At 4 rows the row-major layout is up to
1.66x faster, at 16-128 rows the LM head's two layouts are within 7% (a 1024 x 256 matrix's up to 1.27x), and in
bfloat16 the column-major one gains nothing at one row (1.03-1.62x the time). So the column-major layout is for
float32 decoding of one sequence at a time, and it is asked for:

    from hf_llm import decoding_layout
    decoding_layout(model)                        # float32 weights on CPU column-major, in place
    model.generate(ids)                           # ... one prompt, one beam, as often as wanted
    decoding_layout(model, column_major=False)    # row-major again (or model.train(), which does it too)

`hf-llm generate` (one sequence), `hf-llm chat` and `hf-llm serve` ask for it; `model.generate` itself never
changes the weights. Only the strides change: the same shapes, values and `nn.Parameter` objects (ties, optimiser
state and peft's wrappers see the same object), and `save_pretrained` writes contiguous tensors. While the layout
holds, the weights are not contiguous: `p.view(-1)` on them fails (`.reshape` works), and a product of many rows
runs slower. Laying out costs one copy of the weights (7 ms for 5 M parameters here once warm, 15-48 ms on a
process's first call), so a caller that generates once per load gains from it only over a few dozen tokens;
`generate` doing it for each call and undoing it after would pay that twice per call.

Part of the exported folder: imports only the standard library, torch and transformers.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils import parametrize


def decoding_weights(module: nn.Module) -> list[nn.Parameter]:
    """The 2-D weights of `module` that multiply hidden states when it decodes: those of its linear layers (the LM
    head, which may be the tied input embedding, included) and the gate matrices of its LSTMs/GRUs (`weight_ih_l0`,
    `weight_hh_l0`, ...). Left out: parametrised weights (weight normalisation: recomputed at every call), tensor
    subclasses (quantised weights), vectors (`(1, n)` or `(n, 1)`: one layout either way) and views into other
    tensors (the flattened parameters of a sharding wrapper)."""
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
                    and min(weight.shape) > 1 and weight.is_floating_point() and not weight.data._is_view()
                    and id(weight) not in seen):
                seen.add(id(weight))
                weights.append(weight)
    return weights


def is_column_major(weight: torch.Tensor) -> bool:
    """`W.T` contiguous: strides `(1, out)`."""
    return weight.stride() == (1, weight.shape[0])


def decoding_layout(module: nn.Module, column_major: bool = True) -> None:
    """Store the float32 CPU weights of `decoding_weights(module)` column-major (`W.T` contiguous), for decoding one
    sequence at a time, and any other (bfloat16, on a GPU) row-major; with `column_major=False` every one row-major
    again. In place; a weight already so stored is not copied. (Under `torch.inference_mode` too, the new storage
    is an ordinary tensor, so the model still trains afterwards.)"""
    with torch.inference_mode(False), torch.no_grad():
        for weight in decoding_weights(module):
            wanted = column_major and weight.dtype == torch.float32 and weight.device.type == "cpu"
            if wanted and not is_column_major(weight):
                weight.data = weight.data.t().contiguous().t()  # (out, in), strides (1, out)
            elif not wanted and not weight.is_contiguous():
                weight.data = weight.data.contiguous()
