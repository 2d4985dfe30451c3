"""The decoding weight layout (hf_llm/modeling/weight_layout.py): row-major vs column-major weights on this CPU.

    python benchmarks/bench_layout.py            # products, then batch-1 greedy decoding per family
    python benchmarks/bench_layout.py --compiled # also the static cache + compiled step, both layouts
    python benchmarks/bench_layout.py --quick

1. Products `x (rows, in) @ W.T` for the base shape's matrices (the 8192 x 256 LM head, a 1024 x 256 LSTM gate or
   MLP matrix, a 256 x 256 projection), `W` row-major (`nn.Linear`'s layout) or column-major (`W.T` contiguous,
   GPT-2's `Conv1D` layout), at 1 to 128 rows, float32 and bfloat16, interleaved, medians: microseconds per product.
2. Batch-1 greedy decoding of the three families' LMs (base shape, default path, prefill excluded, contexts 16 and
   512) with the weights row-major (as loaded) and column-major (`hf_llm.decoding_layout`, what `hf-llm generate`
   does for one sequence), all interleaved in one process: tokens/s. For the RNN also
   `row-major, fused kernel`: each one-token step through the fused `nn.LSTM` call, as eager decoding did before
   2026-12-07 (now `rnn_backbone.step_rnn`, the gate equations written out, when nothing records gradients).
   With `--compiled`, the same two layouts on the static cache + compiled step (`bench_decode.compile_config`; the
   compile is an untimed warm-up call).

One thread (decoding on the shared 2-core machine runs on one). Writes benchmarks/results/layout.json.
"""

from __future__ import annotations

import argparse
import copy
import os
import platform
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(__file__))
from bench_decode import compile_config  # noqa: E402
from common import alternate, dump  # noqa: E402
from run import RESULTS, SHAPES, decoder_builders  # noqa: E402

from transformers.utils import logging as hf_logging  # noqa: E402

from hf_llm import decoding_layout  # noqa: E402
from hf_llm.modeling import rnn_backbone  # noqa: E402
from hf_llm.modeling.weight_layout import decoding_weights, is_column_major  # noqa: E402

FAMILIES = ["hf_llm transformer", "hf_llm rnn", "hf_llm cnn"]


def products(repeats: int) -> dict:
    """Microseconds per `F.linear(x, W)` with `W` row-major and column-major (median of `repeats` timed loops)."""
    table = {}
    for dtype in (torch.float32, torch.bfloat16):
        for out_features, in_features in [(8192, 256), (1024, 256), (256, 256)]:
            weight = torch.randn(out_features, in_features).to(dtype)
            layouts = {"row-major": weight, "column-major": weight.t().contiguous().t()}
            for rows in (1, 2, 4, 16, 128):
                x = torch.randn(rows, in_features).to(dtype)
                loops = max(10, 100_000 // (rows * out_features // 64))
                samples = {name: [] for name in layouts}
                for name, w in layouts.items():  # warm-up
                    torch.nn.functional.linear(x, w)
                for _ in range(repeats):
                    for name, w in layouts.items():
                        start = time.perf_counter()
                        for _ in range(loops):
                            torch.nn.functional.linear(x, w)
                        samples[name].append((time.perf_counter() - start) / loops * 1e6)
                key = f"{str(dtype).removeprefix('torch.')} {out_features}x{in_features} rows {rows}"
                table[key] = {name: round(statistics.median(v), 1) for name, v in samples.items()}
                table[key]["column / row"] = round(table[key]["column-major"] / table[key]["row-major"], 2)
                print(key, table[key], flush=True)
    return table


def fused_kernel_per_token(generate):
    """`generate` with every eager one-token RNN step through the fused kernel (`rnn_backbone.fused_rnn`), as before
    `step_rnn` took them; `forward_rnn` is swapped for this call only."""
    def run(*args, **kwargs):
        own = rnn_backbone.forward_rnn

        def fused(rnn, x, state, weights):
            return own(rnn, x, state, weights) if torch.compiler.is_compiling() else \
                rnn_backbone.fused_rnn(rnn, x, state, weights)

        rnn_backbone.forward_rnn = fused
        try:
            return generate(*args, **kwargs)
        finally:
            rnn_backbone.forward_rnn = own
    return run


def decoding(new_tokens: int, repeats: int, compiled: bool = False) -> dict:
    """Batch-1 greedy tokens/s of each family with row-major and column-major weights, all interleaved."""
    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 32)  # 12 compiled steps
    builders = decoder_builders(SHAPES["base"])
    candidates, models = {}, {}
    for name in FAMILIES:
        torch.manual_seed(0)
        models[name] = builders[name]().eval()
        for context in (16, 512):
            ids = torch.randint(3, 8192, (1, context), generator=torch.Generator().manual_seed(0))
            kwargs = dict(do_sample=False, pad_token_id=0, eos_token_id=None)
            row_major = copy.deepcopy(models[name])
            column_major = copy.deepcopy(models[name])
            decoding_layout(column_major)
            paths = {"row-major": lambda n, m=row_major, ids=ids: m.generate(
                         ids, max_new_tokens=n, min_new_tokens=n, **kwargs),
                     "column-major": lambda n, m=column_major, ids=ids: m.generate(
                         ids, max_new_tokens=n, min_new_tokens=n, **kwargs)}
            if name == "hf_llm rnn":
                paths["row-major, fused kernel"] = fused_kernel_per_token(paths["row-major"])
            if compiled:
                static = dict(cache_implementation="static", compile_config=compile_config(name))
                row_compiled, column_compiled = copy.deepcopy(models[name]), copy.deepcopy(models[name])
                decoding_layout(column_compiled)
                paths["static+compiled row-major"] = lambda n, m=row_compiled, ids=ids: m.generate(
                    ids, max_new_tokens=n, min_new_tokens=n, **kwargs, **static)
                paths["static+compiled column-major"] = lambda n, m=column_compiled, ids=ids: m.generate(
                    ids, max_new_tokens=n, min_new_tokens=n, **kwargs, **static)
            with torch.no_grad():
                expected = paths["row-major"](new_tokens)
                assert all(torch.equal(run(new_tokens), expected) for run in paths.values()), name
            assert all(is_column_major(w) for w in decoding_weights(column_major)), name
            assert all(w.is_contiguous() for w in decoding_weights(row_major)), name
            for path, run in paths.items():
                candidates[f"{name} {context} {path} one"] = torch.no_grad()(lambda run=run: run(1))
                candidates[f"{name} {context} {path} many"] = torch.no_grad()(lambda run=run: run(new_tokens + 1))
    times = alternate(candidates, repeats=repeats)
    table = {}
    for key in candidates:
        if key.endswith(" one"):
            base = key.removesuffix(" one")
            table[base] = round(new_tokens / max(times[f"{base} many"] - times[key], 1e-9), 1)
    for name in FAMILIES:
        for context in (16, 512):
            table[f"{name} {context} column / row"] = round(
                table[f"{name} {context} column-major"] / table[f"{name} {context} row-major"], 2)
            if f"{name} {context} static+compiled row-major" in table:
                table[f"{name} {context} static+compiled column / row"] = round(
                    table[f"{name} {context} static+compiled column-major"]
                    / table[f"{name} {context} static+compiled row-major"], 2)
            if f"{name} {context} row-major, fused kernel" in table:
                table[f"{name} {context} row-major: step_rnn / fused kernel"] = round(
                    table[f"{name} {context} row-major"] / table[f"{name} {context} row-major, fused kernel"], 2)
    print(table, flush=True)
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--compiled", action="store_true", help="also the static cache + compiled step")
    parser.add_argument("--out", default=os.path.join(RESULTS, "layout.json"))
    args = parser.parse_args()
    hf_logging.set_verbosity_error()
    torch.set_num_threads(1)
    results = {"machine": platform.processor() or platform.machine(), "torch": torch.__version__,
               "threads": torch.get_num_threads()}
    results["products_us"] = products(repeats=3 if args.quick else 7)
    results["decode_tokens_per_s"] = decoding(new_tokens=16 if args.quick else 64, repeats=1 if args.quick else 7,
                                              compiled=args.compiled)
    dump(args.out, results)


if __name__ == "__main__":
    main()
