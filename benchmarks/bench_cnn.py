"""Convolutional family benchmark (issue 4).

1. Greedy generation of 512 tokens with the conv cache vs recomputing the whole prefix (goal >= 5x).
2. Greedy decoding tokens/s at context 512 divided by context 16 (goal >= 0.95).

    python benchmarks/bench_cnn.py [--quick] [--out benchmarks/results/cnn.json]
"""

from __future__ import annotations

import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(__file__))
from common import alternate, decode_tokens_per_second, dump  # noqa: E402

import hf_llm  # noqa: E402
from transformers import AutoModelForCausalLM  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer repeats and tokens (a smoke run)")
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "cnn.json"))
    args = parser.parse_args()
    repeats = 1 if args.quick else 3
    new_tokens = 128 if args.quick else 512
    torch.manual_seed(0)
    vocab = 8192
    config = hf_llm.HfLlmConfig(backbone="cnn", vocab_size=vocab, hidden_size=256, cnn_decoder_spec=[[256, 3]] * 4)
    model = AutoModelForCausalLM.from_config(config).eval()
    prompt = torch.randint(3, vocab, (1, 8), generator=torch.Generator().manual_seed(0))
    kwargs = dict(max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False, pad_token_id=0,
                  eos_token_id=None)
    with torch.no_grad():
        cached = model.generate(prompt, use_cache=True, **kwargs)
        uncached = model.generate(prompt, use_cache=False, **kwargs)
        assert cached.tolist() == uncached.tolist(), "cached and uncached generations must agree"
        seconds = alternate(
            {"cached": lambda: model.generate(prompt, use_cache=True, **kwargs),
             "recompute": lambda: model.generate(prompt, use_cache=False, **kwargs)},
            repeats=repeats, warmup=0,
        )
    decode = {ctx: decode_tokens_per_second(model, ctx, 256, vocab, repeats=3 if args.quick else 5) for ctx in (16, 512)}
    results = {
        "shape": dict(vocab=vocab, hidden=256, spec=config.cnn_decoder_spec),
        "threads": torch.get_num_threads(),
        "generation_seconds": seconds,
        "new_tokens": new_tokens,
        "speedup_cached_over_recompute": seconds["recompute"] / seconds["cached"],
        "decode_tokens_per_s": decode,
        "ratio_ctx512_over_ctx16": decode[512] / decode[16],
    }
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    dump(args.out, results)
    print(f"CNN LM, {new_tokens} greedy tokens: cached {seconds['cached']:.2f} s, full recompute "
          f"{seconds['recompute']:.2f} s, speed-up {results['speedup_cached_over_recompute']:.1f}x (goal >= 5x)")
    print(f"CNN LM greedy decoding: ctx16 {decode[16]:.0f} tok/s, ctx512 {decode[512]:.0f} tok/s, "
          f"ratio {results['ratio_ctx512_over_ctx16']:.3f} (goal >= 0.95)")


if __name__ == "__main__":
    main()
