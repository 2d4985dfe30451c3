"""The memory layout of the weights for decoding one sequence on CPU: every weight then multiplies one row at a time.

`nn.Linear` keeps `W (out, in)` row-major and computes `x @ W.T`. For one row `x (1, in)` that product is a
matrix-vector product, and MKL's sgemv on the AMD EPYC CPU measured (2026-12-07, one thread,
`benchmarks/bench_layout.py`) runs it 10-30% faster over the rows of `W.T` (`W` column-major: the layout of GPT-2's
`Conv1D`, whose weights are stored `(in, out)`) than over the rows of `W`: 105 vs 146 us for an 8192 x 256 LM head,
15 vs 17 us for a 1024 x 256 gate matrix. From 4 rows on the row-major layout wins (1.15-1.66x at 4-16 rows), and in
bfloat16 it wins at every size. So the layout follows the work:

- `generate` on one sequence (one prompt, no beams, one returned sequence) on CPU stores each float32 weight that
  multiplies hidden states column-major (`decoding_layout(model, column_major=True)`), and keeps it so for the next
  such call (a server, a chat: the copy is paid once, ~7 ms for 5 M parameters);
- `generate` on several sequences, and `model.train()`, put them back row-major (`column_major=False`).

Only the strides change: the same shapes, values and `nn.Parameter` objects (ties, optimiser state and peft's
wrappers see the same object), and a checkpoint is unaffected (`save_pretrained` writes contiguous tensors). A
forward outside `generate` runs on whichever layout the last call left (the same results, to float rounding).

Part of the exported folder: imports only the standard library, torch and transformers.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils import parametrize


def decoding_weights(module: nn.Module) -> list[nn.Parameter]:
    """The 2-D weights of `module` that multiply hidden states one token at a time when it decodes: those of its
    linear layers (the LM head, which may be the tied input embedding, included) and the gate matrices of its
    LSTMs/GRUs (`weight_ih_l0`, `weight_hh_l0`, ...). Left out: parametrised weights (weight normalisation: recomputed
    at every call), tensor subclasses (quantised weights), tensors off the CPU, one-row weights (a scorer's `v`: a
    vector either way) and views into other tensors (the flattened parameters of a sharding wrapper)."""
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
                    and weight.shape[0] > 1 and weight.is_floating_point() and weight.device.type == "cpu"
                    and not weight.data._is_view() and id(weight) not in seen):
                seen.add(id(weight))
                weights.append(weight)
    return weights


def is_column_major(weight: torch.Tensor) -> bool:
    """`W.T` contiguous: strides `(1, out)`."""
    return weight.stride() == (1, weight.shape[0])


@torch.no_grad()
def decoding_layout(module: nn.Module, column_major: bool) -> None:
    """Store every weight of `decoding_weights(module)` column-major (float32 ones only: in bfloat16 the row-major
    product is the faster one), or, with `column_major=False`, row-major again; in place, a weight already so stored
    untouched."""
    for weight in decoding_weights(module):
        if column_major and weight.dtype == torch.float32 and weight.is_contiguous():
            weight.data = weight.data.t().contiguous().t()  # (out, in), strides (1, out)
        elif not column_major and not weight.is_contiguous():
            weight.data = weight.data.contiguous()


def decodes_one_sequence(model: nn.Module, args: tuple, kwargs: dict) -> bool:
    """Whether `model.generate(*args, **kwargs)` decodes one sequence at a time: one prompt (the first of `inputs`,
    `input_ids`, `inputs_embeds` has one row), one beam, one returned sequence. Unknown means no."""
    prompt = next((t for t in (args[0] if args else kwargs.get("inputs"), kwargs.get("input_ids"),
                               kwargs.get("inputs_embeds")) if isinstance(t, torch.Tensor)), None)
    config = kwargs.get("generation_config") or (args[1] if len(args) > 1 else None) or model.generation_config
    beams = kwargs.get("num_beams") or getattr(config, "num_beams", 1) or 1
    returned = kwargs.get("num_return_sequences") or getattr(config, "num_return_sequences", 1) or 1
    return prompt is not None and prompt.shape[0] == 1 and beams == 1 and returned == 1


def layout_for_generate(model: nn.Module, args: tuple, kwargs: dict) -> None:
    """The weights of `model` laid out for the `generate(*args, **kwargs)` call about to run (module docstring)."""
    decoding_layout(model, column_major=decodes_one_sequence(model, args, kwargs))
