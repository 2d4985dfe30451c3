"""Issue 21: copy attention (pointer-generator) and coverage, measured per decoder family.

    python benchmarks/copy_attention.py summarization [--steps 600] [--families transformer,rnn,cnn] [--variants plain,copy,...]
        [--jobs 2] [--results copy_attention.json]
    python benchmarks/copy_attention.py names [--steps 30]

`summarization`: the bundled summarization data (`summarization_tiny`'s, a docstring's body -> its first line),
for each family three runs through the CLI at the same budget: without copying (`summarization_tiny`), with copy
attention (`summarization_tiny_copy`), and with copy attention and the coverage loss (weight 1.0). One evaluation
at the end (no intermediate checkpoints), ROUGE-1/2/L of greedy summaries of the validation split, into
benchmarks/results/copy_attention.json. `names`: the copy task of tests/modeling/test_copy_attention.py for every
family (targets repeat identifiers never seen in training), exact match with and without copying, into
benchmarks/results/copy_names.json.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import subprocess
import sys
import time

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
FAMILIES = ("transformer", "rnn", "cnn")
VARIANTS = {
    "plain": ["summarization_tiny"],
    "copy": ["summarization_tiny_copy"],
    "copy+coverage": ["summarization_tiny_copy", "model.coverage_loss_weight=1.0"],
    # ... and the coverage fed to the attention scorer too (See et al.'s full coverage mechanism; RNN, ConvS2S).
    "copy+coverage+scorer": ["summarization_tiny_copy", "model.coverage_loss_weight=1.0", "model.coverage_attention=true"],
}
KEYS = ("eval_rouge1", "eval_rouge2", "eval_rougeL", "eval_loss", "train_runtime", "train_loss")


def summarize(family: str, variant: str, steps: int) -> tuple[str, dict]:
    output_dir = os.path.join("/tmp", "copy_attention_bench", f"{family}_{variant}")
    command = [
        sys.executable, "-m", "hf_llm.cli", "train", *VARIANTS[variant],
        f"model.encoder_backbone={family}", f"model.decoder_backbone={family}", f"training.max_steps={steps}",
        "training.eval_strategy=no", "training.save_strategy=no", "training.load_best_model_at_end=false",
        f"training.output_dir={output_dir}", "training.disable_tqdm=true", "--overwrite",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        return f"{family}/{variant}", {"error": done.stderr[-2000:]}
    results = json.load(open(os.path.join(output_dir, "all_results.json")))
    row = {k: results[k] for k in KEYS if k in results}
    predictions = os.path.join(output_dir, "generated_predictions.txt")
    if os.path.isfile(predictions):
        lines = open(predictions, encoding="utf-8").read().splitlines()
        row["distinct_outputs"] = round(len(set(lines)) / max(1, len(lines)), 3)
    return f"{family}/{variant}", {**row, "steps": steps}


# The copy task (the same as tests/modeling/test_copy_attention.py's).
FILLERS, TRAIN_NAMES, TEST_NAMES = range(3, 23), range(23, 80), range(80, 120)


def name_task(count: int, names: range, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    src = torch.tensor(FILLERS)[torch.randint(len(FILLERS), (count, 6), generator=generator)]
    name = torch.tensor(names)[torch.randint(len(names), (count,), generator=generator)]
    src[torch.arange(count), torch.randint(6, (count,), generator=generator)] = name
    return src, torch.stack([name, torch.full((count,), 2)], dim=1)


def names(family: str, copy: bool, steps: int) -> dict:
    from transformers import AutoModelForSeq2SeqLM

    import hf_llm

    torch.manual_seed(0)
    config = hf_llm.HfLlmConfig(
        vocab_size=120, hidden_size=32, num_hidden_layers=1, num_attention_heads=4, intermediate_size=64, dropout=0.0,
        is_encoder_decoder=True, decoder_start_token_id=1, encoder_backbone=family, decoder_backbone=family,
        rnn_input_feeding=False, copy_attention=copy,
    )
    model = AutoModelForSeq2SeqLM.from_config(config).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    start = time.perf_counter()
    for step in range(steps):
        src, labels = name_task(32, TRAIN_NAMES, seed=step)
        loss = model(input_ids=src, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    seconds = time.perf_counter() - start
    results = {}
    for split, pool, seed in (("seen", TRAIN_NAMES, 20_000), ("unseen", TEST_NAMES, 10_000)):
        src, labels = name_task(256, pool, seed=seed)
        with torch.no_grad():
            generated = model.eval().generate(src, max_new_tokens=2, do_sample=False, eos_token_id=None)[:, 1:]
        results[f"exact_match_{split}_names"] = round((generated == labels).all(1).float().mean().item(), 3)
    return {**results, "final_train_loss": round(loss.item(), 4), "steps": steps, "train_seconds": round(seconds, 1)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("what", choices=("summarization", "names", "table"))
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--families", default=",".join(FAMILIES))
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--results", default="copy_attention.json", help="file under benchmarks/results/")
    args = parser.parse_args()
    families = args.families.split(",")
    os.makedirs(os.path.join(HERE, "results"), exist_ok=True)
    if args.what == "table":  # the summarization figures as the markdown table of docs/ARCHITECTURE.md
        table = json.load(open(os.path.join(HERE, "results", args.results)))
        print("| Family | " + " | ".join(f"{v}: R-1 / R-2 / R-L (s)" for v in VARIANTS) + " |")
        print("|---|" + "---|" * len(VARIANTS))
        for family in families:
            cells = []
            for variant in VARIANTS:
                row = table.get(f"{family}/{variant}")
                cells.append("not run" if row is None else "error" if "error" in row else
                             f"{row['eval_rouge1']:.1f} / {row['eval_rouge2']:.1f} / {row['eval_rougeL']:.1f} "
                             f"({row['train_runtime']:.0f})")
            print(f"| {family} | " + " | ".join(cells) + " |")
        return
    if args.what == "names":
        out = os.path.join(HERE, "results", "copy_names.json")
        table = json.load(open(out)) if os.path.isfile(out) else {}
        for family in families:
            for copy in (False, True):
                key = f"{family}/{'copy' if copy else 'plain'}/{args.steps or 30}_steps"
                table[key] = names(family, copy, args.steps or 30)
                print(key, table[key], flush=True)
        json.dump(table, open(out, "w"), indent=1)
        return
    out = os.path.join(HERE, "results", args.results)
    table = json.load(open(out)) if os.path.isfile(out) else {}
    jobs = [(family, variant) for family in families for variant in args.variants.split(",")]
    with concurrent.futures.ThreadPoolExecutor(args.jobs) as pool:
        for key, row in pool.map(lambda job: summarize(*job, args.steps or 600), jobs):
            table[key] = row
            print(key, row, flush=True)
            with open(out, "w") as f:
                json.dump(table, f, indent=1)


if __name__ == "__main__":
    main()
