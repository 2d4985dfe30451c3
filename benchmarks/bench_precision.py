"""Fewer bytes per token (issue 15): batch-1 greedy decoding with fp32, bf16 and weight-only int8 weights.

    python benchmarks/bench_precision.py            # base shape (vocab 8192, hidden 256, 4 layers)
    python benchmarks/bench_precision.py --quick    # fewer tokens, one repeat

Each family's decoder-only LM (and GPT-2 as the reference) is saved once and loaded three ways through
transformers' own loading: `dtype=torch.float32`, `dtype=torch.bfloat16`, and
`quantization_config=TorchAoConfig(Int8WeightOnlyConfig())` (torchao's weight-only int8 through transformers'
quantizer). Reported per variant: decoding tokens/s at context 16 (prefill excluded; variants interleaved
A B C A B C so machine drift hits all of them), the share of the parameters that are stored in the low
precision, and how far the logits move from fp32 on a batch of real text (max |delta p| and argmax agreement).
Writes benchmarks/results/precision.json.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile

import torch

sys.path.insert(0, os.path.dirname(__file__))
from common import alternate, dump  # noqa: E402
from run import RESULTS, SHAPES, corpus_batches, decoder_builders  # noqa: E402

from transformers import AutoModelForCausalLM, GPT2LMHeadModel, TorchAoConfig  # noqa: E402
from transformers.utils import logging as hf_logging  # noqa: E402

FAMILIES = ["hf_llm transformer", "hf_llm rnn", "hf_llm cnn", "GPT-2"]


def low_precision_share(model: torch.nn.Module) -> float:
    """The share of parameter elements not stored as float32 (bf16 weights, or torchao's int8 tensors)."""
    total = low = 0
    for parameter in model.parameters():
        total += parameter.numel()
        if parameter.dtype != torch.float32 or type(parameter.data) is not torch.Tensor:
            low += parameter.numel()
    return low / total


def load_variants(folder: str, name: str) -> dict[str, torch.nn.Module]:
    from torchao.quantization import Int8WeightOnlyConfig

    auto = GPT2LMHeadModel if name == "GPT-2" else AutoModelForCausalLM
    return {
        "fp32": auto.from_pretrained(folder, dtype=torch.float32).eval(),
        "bf16": auto.from_pretrained(folder, dtype=torch.bfloat16).eval(),
        "int8": auto.from_pretrained(folder, quantization_config=TorchAoConfig(Int8WeightOnlyConfig())).eval(),
    }


@torch.no_grad()
def decode_fn(model, ids: torch.Tensor, new_tokens: int):
    kwargs = dict(do_sample=False, pad_token_id=0, eos_token_id=None)
    return (lambda: model.generate(ids, max_new_tokens=1, min_new_tokens=1, **kwargs),
            lambda: model.generate(ids, max_new_tokens=new_tokens + 1, min_new_tokens=new_tokens + 1, **kwargs))


@torch.no_grad()
def closeness(variant, reference, batch: torch.Tensor) -> dict[str, float]:
    expected = reference(batch).logits.float()
    actual = variant(batch).logits.float()
    return {
        "max_abs_delta_probability": (actual.softmax(-1) - expected.softmax(-1)).abs().max().item(),
        "argmax_agreement": (actual.argmax(-1) == expected.argmax(-1)).float().mean().item(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    hf_logging.set_verbosity_error()
    torch.set_num_threads(min(torch.get_num_threads(), 2))
    shape = SHAPES["base"]
    new_tokens, repeats = (16, 1) if args.quick else (64, 3)
    ids = torch.randint(3, shape["vocab"], (1, 16), generator=torch.Generator().manual_seed(0))
    text = corpus_batches(shape["vocab"], 128, 4, 1)[0]
    builders = decoder_builders(shape)
    results = {"machine": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
               "torch": torch.__version__, "shape": shape, "new_tokens": new_tokens, "families": {}}
    for name in FAMILIES:
        torch.manual_seed(0)
        with tempfile.TemporaryDirectory() as folder:
            builders[name]().save_pretrained(folder)
            variants = load_variants(folder, name)
        candidates = {}
        for key, model in variants.items():
            one, many = decode_fn(model, ids, new_tokens)
            candidates[f"{key} one"], candidates[f"{key} many"] = one, many
        times = alternate(candidates, repeats=repeats)
        family = {}
        for key, model in variants.items():
            family[key] = {
                "decode_tokens_per_second": new_tokens / max(times[f"{key} many"] - times[f"{key} one"], 1e-9),
                "low_precision_share": low_precision_share(model),
                **closeness(model, variants["fp32"], text),
            }
        results["families"][name] = family
        print(name, {k: round(v["decode_tokens_per_second"], 1) for k, v in family.items()},
              {k: round(v["low_precision_share"], 3) for k, v in family.items()}, flush=True)
    os.makedirs(RESULTS, exist_ok=True)
    dump(os.path.join(RESULTS, "precision.json"), results)


if __name__ == "__main__":
    main()
