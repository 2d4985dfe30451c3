"""Issue 20: why the recurrent family lags, measured with `hf-llm compare` (transformers' Trainer, one tokenizer).

    python benchmarks/rnn_ablation.py lm-issue   --variants cnn,rnn_plain,rnn_residual   # 256 wide, 4 layers, 8k BPE, lr 1e-3
    python benchmarks/rnn_ablation.py lm-quick   --variants cnn,rnn_plain,rnn_residual --steps 3000  # quickstart shape
    python benchmarks/rnn_ablation.py translation --variants transformer,lstm_feed,lstm_nofeed

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("study", choices=sorted(STUDIES))
    parser.add_argument("--variants", required=True, help="comma-separated names from VARIANTS")
    parser.add_argument("--steps", type=int, default=None, help="budget in steps (default: the recipe's)")
    parser.add_argument("--match-params", action="store_true", help="size every variant to the first one")
    parser.add_argument("--output", default=None)
    parser.add_argument("--keep-runs", action="store_true")
    parser.add_argument("overrides", nargs="*", help="section.key=value, applied to every variant")
    args = parser.parse_args()

    recipe, kind, overrides = STUDIES[args.study]
    names = args.variants.split(",")
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
