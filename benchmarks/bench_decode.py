"""Static caches and a compiled decoding step (issue 15): greedy decoding speed, prefill excluded.

    python benchmarks/bench_decode.py                 # base shape (vocab 8192, hidden 256, 4 layers)
    python benchmarks/bench_decode.py --quick         # fewer tokens, one repeat
    python benchmarks/bench_decode.py --models "hf_llm rnn,GPT-2"
    python benchmarks/bench_decode.py --bf16          # also a bf16-weights static+compiled path
    python benchmarks/bench_decode.py --batched       # 32 prompts x 128 new tokens: default, static, static+compiled
    python benchmarks/bench_decode.py --beam          # beam-4 seq2seq, hf_llm vs BART, default vs static cache
                                                      # (and hf_llm reading the source per beam, and copying it)
    python benchmarks/bench_decode.py --beam --source-length 512 --out benchmarks/results/decode_beam4_src512.json

Each decoder-only LM of the base shape (hf_llm's three families, GPT-2, Llama; `run.decoder_builders`) decodes at
batch 1 from contexts of 16 and 512 tokens two ways:

- `default`: transformers' default path (a DynamicCache, eager);
- `static+compiled`: `generate(cache_implementation="static", compile_config=CompileConfig(fullgraph=...))`, the
  decoding step compiled by transformers' own auto-compile (forced on CPU with `compile_config._compile_all_devices`,
  as transformers' tests do; `fullgraph=True` for hf_llm, whose step has no graph break; transformers' default
  `fullgraph=False` for GPT-2 / Llama).

With `--bf16`, a third path: `bf16 static+compiled`, the static+compiled path with bfloat16 weights.

tokens/s = N / (time for 1 + N tokens - time for 1 token). The static paths use one copy of the model per context,
so that each static cache is sized to its context (transformers keeps the largest `max_cache_len` a model has seen,
to avoid recompiling: one instance serving both contexts attends over 512 + N slots at context 16 too; the files
before 2026-12-02 were measured that way); each copy compiles its step in a warm-up call, not timed (the first
compile's seconds are reported). Every path and context of every model is interleaved with all the others in one
process (A B C D ... A B C D ...; medians). Writes
benchmarks/results/decode.json.
"""

from __future__ import annotations

import argparse
import copy
import os
import platform
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(__file__))
from common import alternate, dump  # noqa: E402
from run import RESULTS, SHAPES, decoder_builders, seq2seq_models  # noqa: E402

from transformers import CompileConfig  # noqa: E402
from transformers.cache_utils import DynamicLayer  # noqa: E402

from hf_llm import decoding_layout  # noqa: E402
from hf_llm.modeling import cache_layers, transformer_backbone  # noqa: E402

SOURCE_LAYER = cache_layers.HfLlmSourceLayer
from transformers.utils import logging as hf_logging  # noqa: E402

MODELS = ["hf_llm transformer", "hf_llm rnn", "hf_llm cnn", "GPT-2", "Llama"]
CONTEXTS = (16, 512)


def compile_config(name: str) -> CompileConfig:
    config = CompileConfig(fullgraph=name.startswith("hf_llm"), dynamic=False)
    config._compile_all_devices = True  # compile on CPU too (transformers compiles on accelerators only)
    return config


def decode_fns(model, name: str, context: int, new_tokens: int, static: bool):
    """Batch-1 greedy generation of 1 and of `new_tokens + 1` tokens; an hf_llm model decodes on the weight layout
    for one sequence, as `hf-llm generate` does (`hf_llm.decoding_layout`: float32 weights column-major)."""
    if name.startswith("hf_llm"):
        decoding_layout(model)
    ids = torch.randint(3, model.config.vocab_size, (1, context), generator=torch.Generator().manual_seed(0))
    kwargs = dict(do_sample=False, pad_token_id=0, eos_token_id=None)
    if static:
        kwargs.update(cache_implementation="static", compile_config=compile_config(name))

    @torch.no_grad()
    def run(count: int):
        return model.generate(ids, max_new_tokens=count, min_new_tokens=count, **kwargs)

    return (lambda: run(1)), (lambda: run(new_tokens + 1)), run


@torch.no_grad()
def batched_throughput(names: list[str], builders: dict, prompts: int, new_tokens: int, repeats: int,
                       compiled: bool = True) -> dict:
    """Serving throughput: `prompts` prompts of 16 tokens at once, `new_tokens` greedy tokens each, tokens/s of the
    whole call (prefill included), models interleaved: the default cache, a static cache, and (`compiled`) a static
    cache with the decoding step compiled as in `decode_fns` (the compile, one per model and batch shape, is the
    untimed warm-up call; its seconds are reported)."""
    ids = torch.randint(3, SHAPES["base"]["vocab"], (prompts, 16), generator=torch.Generator().manual_seed(1))
    kwargs = dict(max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False, pad_token_id=0,
                  eos_token_id=None)
    candidates, compile_seconds = {}, {}
    for name in names:
        torch.manual_seed(0)
        model = builders[name]().eval()
        candidates[f"{name} default"] = lambda model=model: model.generate(ids, **kwargs)
        candidates[f"{name} static"] = lambda model=model: model.generate(ids, cache_implementation="static", **kwargs)
        if compiled:
            config = compile_config(name)
            run = lambda model=model, config=config: model.generate(
                ids, cache_implementation="static", compile_config=config, **kwargs)
            start = time.perf_counter()
            run()  # compiles the decoding step for this batch shape
            compile_seconds[name] = round(time.perf_counter() - start, 1)
            candidates[f"{name} static+compiled"] = run
    times = alternate(candidates, repeats=repeats)
    candidates.clear()
    torch.compiler.reset()  # drop the compiled steps (and the models they hold) before whatever runs next
    return {**{key: round(prompts * new_tokens / seconds, 1) for key, seconds in times.items()},
            "compile_seconds (first call)": compile_seconds}


@torch.no_grad()
def beam_search(repeats: int, new_tokens: int, source_length: int = 64) -> dict:
    """Beam-4 seq2seq generation as in run.py (4 sources of `source_length` tokens, 64 there, `new_tokens` tokens,
    tokens/s = 4 x new / s):
    hf_llm's Transformer encoder-decoder against BART, each with the default cache and with a static one, interleaved.
    transformers 5.24's beam search never takes the compiled path (`_beam_search` calls the model eagerly, whatever
    `compile_config` says), so "best path" here is the better of the two eager caches for each model."""
    models = seq2seq_models(SHAPES["base"])
    source = torch.randint(3, SHAPES["base"]["vocab"], (4, source_length), generator=torch.Generator().manual_seed(2))
    beam = dict(num_beams=4, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False, eos_token_id=None,
                pad_token_id=0)
    candidates = {}
    for name, model in models.items():
        model.eval()
        candidates[f"{name} default"] = lambda model=model: model.generate(source, **beam)
        candidates[f"{name} static"] = lambda model=model: model.generate(source, cache_implementation="static", **beam)

    def read_per_beam(copy_source_layers: bool = False):
        """hf_llm before its cross-attention read each source once for all its beams (`source_group` 1: keys/values
        projected and attended per beam row), and with `copy_source_layers` also before the source layers skipped
        needless reorders (transformers' DynamicLayer as the cross part). The module's names are swapped for this
        call only; the same generation is asserted below."""
        group = transformer_backbone.HfLlmTransformerDecoder.source_group
        transformer_backbone.HfLlmTransformerDecoder.source_group = lambda self, *args: 1
        if copy_source_layers:
            cache_layers.HfLlmSourceLayer = DynamicLayer
        try:
            return models["hf_llm seq2seq"].generate(source, **beam)
        finally:
            transformer_backbone.HfLlmTransformerDecoder.source_group = group
            cache_layers.HfLlmSourceLayer = SOURCE_LAYER

    before = {"hf_llm seq2seq default, cross-attention read per beam": read_per_beam,
              "hf_llm seq2seq default, read per beam, source layers copied every step": lambda: read_per_beam(True)}
    for name, run in before.items():
        assert torch.equal(run(), candidates["hf_llm seq2seq default"]()), name
        candidates[name] = run
    times = alternate(candidates, repeats=repeats)
    return {"tokens_per_s": {key: round(4 * new_tokens / seconds, 1) for key, seconds in times.items()}}


def greedy_paths(names: list[str], builders: dict, new_tokens: int, repeats: int, bf16: bool = False) -> dict:
    """Batch-1 greedy decoding tokens/s of each model at both contexts, `default` and `static+compiled` (and with
    `bf16`, `bf16 static+compiled`: the same with bfloat16 weights, fewer bytes per token), with the
    seconds of each static path's warm-up call (its compile) and whether the fp32 paths gave the same tokens (the bf16
    tokens may differ at near ties).

    Every path of every model is interleaved with every other (A B C ... A B C ...), so that the machine's drift
    (this shared CPU's speed moved by up to 1.5x between processes minutes apart on 2026-12-07) hits all models
    alike: the ratios between models are what the goals are about. Before 2026-12-07 each model's paths were
    measured in a block of their own, and the blocks' drift went into the ratios."""
    paths = ["static+compiled", "default"] + (["bf16 static+compiled"] if bf16 else [])
    # Every model x path x context compiles its own step, several from the same `forward` code object (the three
    # hf_llm families share one): dynamo's default limit of 8 compiled versions per code object would fall back to
    # eager for the rest.
    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 8 * len(names) * len(paths))
    candidates, checks, table = {}, {}, {}
    for name in names:
        torch.manual_seed(0)
        model = builders[name]().eval()
        compile_seconds = {}
        for path in paths:
            for context in sorted(CONTEXTS, reverse=True):
                key = f"{path} {context}"
                # The static paths use one copy of the model per context (same weights), so that each static cache
                # is sized to its own context, as a fresh model serving one prompt length would (transformers
                # keeps the largest cache a model has seen: one instance serving both contexts would attend over
                # 512 + N slots at context 16 too).
                instance = model if path == "default" else copy.deepcopy(model)
                if path.startswith("bf16"):
                    instance = instance.to(torch.bfloat16)
                one, many, run = decode_fns(instance, name, context, new_tokens, static=path != "default")
                if path != "default":  # the warm-up call compiles this instance's step
                    start = time.perf_counter()
                    run(3)
                    compile_seconds[key] = round(time.perf_counter() - start, 1)
                checks[name, key] = run(new_tokens + 1)
                candidates[name, key, "one"], candidates[name, key, "many"] = one, many
        table[name] = {"compile_seconds": compile_seconds}
        print(name, "compiled", compile_seconds, flush=True)
    times = alternate(candidates, repeats=repeats)
    for (name, key), tokens in checks.items():
        table[name][key] = round(new_tokens / max(times[name, key, "many"] - times[name, key, "one"], 1e-9), 1)
    for name in names:
        for context in CONTEXTS:  # greedy tokens of the fp32 paths (equal unless near ties)
            table[name][f"same tokens {context}"] = bool(torch.equal(checks[name, f"default {context}"],
                                                                      checks[name, f"static+compiled {context}"]))
        print(name, table[name], flush=True)
    candidates.clear()
    torch.compiler.reset()
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--out", default=None, help="the JSON to write (default: benchmarks/results/decode.json, "
                                                     "decode_batched.json with --batched, decode_beam4.json with --beam)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (default 1: on a shared 2-core machine two threads spin against the load)")
    parser.add_argument("--repeats", type=int, default=9, help="interleaved rounds of the batch-1 paths (medians)")
    parser.add_argument("--bf16", action="store_true", help="also a static+compiled path with bfloat16 weights")
    parser.add_argument("--beam", action="store_true", help="only beam-4 seq2seq generation, hf_llm vs BART")
    parser.add_argument("--source-length", type=int, default=64,
                        help="with --beam: tokens per source (64, as in run.py; longer sources cost BART more, whose "
                             "cache copies the source keys/values at every step)")
    parser.add_argument("--batched", action="store_true", help="only the batched throughput (32 prompts x 128 tokens)")
    args = parser.parse_args()
    hf_logging.set_verbosity_error()
    torch.set_num_threads(args.threads)
    shape = SHAPES["base"]
    # 9 interleaved rounds: with 3 (before 2026-12-07) one model's figure moved by up to 1.4x between runs
    new_tokens, repeats = (16, 1) if args.quick else (64, args.repeats)
    builders = decoder_builders(shape)
    results = {"machine": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
               "torch": torch.__version__, "shape": shape, "new_tokens": new_tokens, "repeats": repeats}
    if args.beam:
        results["source_length"] = args.source_length
        results["beam4"] = beam_search(1 if args.quick else 7, 8 if args.quick else 32, args.source_length)
        print(results["beam4"], flush=True)
        dump(args.out or os.path.join(RESULTS, "decode_beam4.json"), results)
        return
    if args.batched:
        prompts, count = (8, 16) if args.quick else (32, 128)
        results.update(prompts=prompts, new_tokens=count,
                       batched=batched_throughput(args.models.split(","), builders, prompts, count, 1 if args.quick else 3))
        print(results["batched"], flush=True)
        dump(args.out or os.path.join(RESULTS, "decode_batched.json"), results)
        return
    results["models"] = greedy_paths(args.models.split(","), builders, new_tokens, repeats, bf16=args.bf16)
    dump(args.out or os.path.join(RESULTS, "decode.json"), results)


if __name__ == "__main__":
    main()
