"""Issue 20: why the recurrent family lags, measured with `hf-llm compare` (transformers' Trainer, one tokenizer).

    python benchmarks/rnn_ablation.py lm-issue   --variants cnn,rnn_plain,rnn_residual   # 256 wide, 4 layers, 8k BPE, lr 1e-3
    python benchmarks/rnn_ablation.py lm-quick   --variants cnn,rnn_plain,rnn_residual --steps 3000  # quickstart shape
    python benchmarks/rnn_ablation.py translation --variants transformer,lstm_feed,lstm_nofeed
    python benchmarks/rnn_ablation.py step-time --variants transformer,lstm_feed,lstm_nofeed   # interleaved

`step-time` times one training step (forward, backward, AdamW) of each translation variant at translation_tiny's
shape (128 wide, 2 + 2 layers, vocab 1000, batch 32, sources and targets of 6-40 tokens, padded), the
variants interleaved A B C A B C ... and the median kept (benchmarks/common.py), one process.

Each study is `hf_llm.compare.run_compare` on a bundled recipe with overlay files (one per variant, written to
the report folder), so every variant sees the same tokenizer, data, split, schedule and evaluation. The report
folder (default benchmarks/results/rnn/<study>-<variants>) keeps report.md and results.json; the runs' model
folders are deleted afterwards (`--keep-runs` keeps them). Set OMP_NUM_THREADS to share the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys

import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)

from hf_llm.compare import run_compare  # noqa: E402

FAMILY = {"backbone": None, "encoder_backbone": None, "decoder_backbone": None}


def lm(backbone: str, **model) -> dict:
    return {"model": {**FAMILY, "backbone": backbone, **model}}


def seq2seq(backbone: str, **model) -> dict:
    return {"model": {"encoder_backbone": backbone, "decoder_backbone": backbone, **model}}


VARIANTS = {
    "lm": {
        "transformer": lm("transformer"),
        "cnn": lm("cnn"),
        "rnn_plain": lm("rnn", rnn_residual=False),  # the recurrent LM before issue 20
        "rnn_residual": lm("rnn", rnn_residual=True),
        "rnn_plain_lr2e-3": {**lm("rnn", rnn_residual=False), "training": {"learning_rate": 0.002}},
        "rnn_residual_lr2e-3": {**lm("rnn", rnn_residual=True), "training": {"learning_rate": 0.002}},
        "rnn_residual_lr3e-3": {**lm("rnn", rnn_residual=True), "training": {"learning_rate": 0.003}},
        "rnn_residual_drop0": lm("rnn", rnn_residual=True, dropout=0.0),
        "rnn_plain_drop0": lm("rnn", rnn_residual=False, dropout=0.0),
        "gru_residual": lm("rnn", rnn_residual=True, rnn_cell="gru"),
    },
    "translation": {
        "transformer": seq2seq("transformer"),
        "cnn": seq2seq("cnn"),
        "lstm_feed_plain": seq2seq("rnn", rnn_input_feeding=True, rnn_residual=False),  # before issue 20
        "lstm_feed": seq2seq("rnn", rnn_input_feeding=True, rnn_residual=True),
        "lstm_nofeed": seq2seq("rnn", rnn_input_feeding=False, rnn_residual=True),
        "lstm_nofeed_plain": seq2seq("rnn", rnn_input_feeding=False, rnn_residual=False),
        "lstm_bahdanau": seq2seq("rnn", rnn_attention="bahdanau", rnn_residual=True),
    },
}

STUDIES = {
    # The shape: 256 wide, 4 layers, byte-level BPE 8k, lr 1e-3, 600 steps x 16 x 128 tokens.
    "lm-issue": ("quickstart", "lm", ["model.hidden_size=256", "model.num_hidden_layers=4",
                                      "model.intermediate_size=1024", "tokenizer.vocab_size=8192",
                                      "training.learning_rate=0.001"]),
    # The quickstart recipe as it is (128 wide, 2 layers, 4k BPE, lr 2e-3).
    "lm-quick": ("quickstart", "lm", []),
    # The real translation demo (gettext en->fr), the recipe as it is (128 wide, 2 + 2 layers).
    "translation": ("translation_tiny", "translation", []),
}


def step_times(names: list[str], repeats: int) -> dict[str, float]:
    import torch
    from transformers import AutoModelForSeq2SeqLM

    import hf_llm
    from common import alternate, train_step_fn

    torch.manual_seed(0)
    vocab, batch = 1000, 32
    generator = torch.Generator().manual_seed(0)

    def padded(lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mask = torch.arange(int(lengths.max()))[None, :] < lengths[:, None]  # (B, T) right padding
        ids = torch.randint(3, vocab, mask.shape, generator=generator)
        return ids.masked_fill(~mask, 0), mask.long()

    source, source_mask = padded(torch.randint(6, 41, (batch,), generator=generator))
    target, target_mask = padded(torch.randint(6, 41, (batch,), generator=generator))
    labels = target.masked_fill(target_mask == 0, -100)
    steps = {}
    for name in names:
        model = VARIANTS["translation"][name]["model"]
        config = hf_llm.HfLlmConfig(is_encoder_decoder=True, vocab_size=vocab, hidden_size=128, num_hidden_layers=2,
                                    num_attention_heads=4, intermediate_size=256, dropout=0.1, decoder_start_token_id=1,
                                    **model)
        steps[name] = train_step_fn(AutoModelForSeq2SeqLM.from_config(config),
                                    {"input_ids": source, "attention_mask": source_mask, "labels": labels}, lr=1e-3)
    return alternate(steps, repeats=repeats, warmup=2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("study", choices=sorted(STUDIES) + ["step-time"])
    parser.add_argument("--repeats", type=int, default=15, help="step-time: interleaved rounds")
    parser.add_argument("--variants", required=True, help="comma-separated names from VARIANTS")
    parser.add_argument("--steps", type=int, default=None, help="budget in steps (default: the recipe's)")
    parser.add_argument("--match-params", action="store_true", help="size every variant to the first one")
    parser.add_argument("--output", default=None)
    parser.add_argument("--keep-runs", action="store_true")
    parser.add_argument("overrides", nargs="*", help="section.key=value, applied to every variant")
    args = parser.parse_intermixed_args()

    names = args.variants.split(",")
    if args.study == "step-time":
        import torch

        times = step_times(names, args.repeats)
        result = {"threads": torch.get_num_threads(), "repeats": args.repeats,
                  "median_step_s": {name: round(t, 4) for name, t in times.items()},
                  "ratio_to_first": {name: round(t / times[names[0]], 3) for name, t in times.items()}}
        os.makedirs(os.path.join(HERE, "results", "rnn"), exist_ok=True)
        with open(args.output or os.path.join(HERE, "results", "rnn", "step_time.json"), "w") as f:
            json.dump(result, f, indent=2)
        print(json.dumps(result, indent=2))
        return
    recipe, kind, overrides = STUDIES[args.study]
    output = args.output or os.path.join(HERE, "results", "rnn", f"{args.study}-{args.steps or 'recipe'}-{'-'.join(names)}")
    overlays = os.path.join(output + ".overlays")
    os.makedirs(overlays, exist_ok=True)
    paths = []
    for name in names:
        path = os.path.join(overlays, f"{name}.yaml")
        with open(path, "w") as f:
            yaml.safe_dump(VARIANTS[kind][name], f)
        paths.append(path)
    report = run_compare(recipe, overrides + list(args.overrides), None, ",".join(paths),
                         f"steps={args.steps}" if args.steps else None, args.match_params, output)
    shutil.rmtree(overlays)
    if not args.keep_runs:
        shutil.rmtree(os.path.join(output, "runs"), ignore_errors=True)
    summary = {name: {k: row[k] for k in ("parameters", "steps", "train_runtime_s", "eval_loss", report["metric"])}
               for name, row in report["candidates"].items()}
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
