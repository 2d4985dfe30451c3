"""Issue 19's table: every fine-tuning recipe, per family, at the recipe's own budget, through the CLI.

    python benchmarks/recipe_table.py --label after [--tasks translation,summarization,dialogue] [--jobs 2]
    PYTHONPATH=/path/to/old/checkout python benchmarks/recipe_table.py --label before --mt-files  # the code before a change

Every task runs on its recipe's default data: translation on the gettext en->fr catalogs of this machine
(`hf_llm:gettext_en_fr`: 39,111 training pairs, validated on 300 pairs of 7 held-out catalogs), summarization and
dialogue on the bundled data. (Labels before / after were measured before translation_tiny defaulted to
`hf_llm:gettext_en_fr`, with its data overridden by the files of `python benchmarks/real_translation.py data`:
mt_train.jsonl and mt_test300.jsonl, the same pairs in the same order; `--mt-files` does that again, for code
older than the bundled gettext dataset.) Each run is `hf-llm train <recipe>
model.*_backbone=<family>` with one thread; the final metrics (of the checkpoint the run kept) and the untrained
model's (`init_*`) land in benchmarks/results/recipes/<label>.json.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
FAMILIES = ("transformer", "rnn", "cnn")
RECIPES = {
    "translation": ["translation_tiny"],
    "summarization": ["summarization_tiny"],
    "dialogue": ["dialogue_tiny"],
}
KEYS = ("eval_bleu", "eval_chrf", "eval_rouge1", "eval_rouge2", "eval_rougeL", "perplexity", "eval_loss",
        "init_eval_bleu", "init_eval_chrf", "init_eval_rouge1", "init_eval_rouge2", "init_perplexity", "best_step",
        "train_runtime")


MT_FILES = [f"data.train_file={HERE}/real_data/mt_train.jsonl", f"data.validation_file={HERE}/real_data/mt_test300.jsonl",
            "data.dataset_name=null"]


def run_one(label: str, task: str, family: str, mt_files: bool = False) -> tuple[str, dict]:
    output_dir = os.path.join("/tmp", f"recipe_table_{label}", f"{task}_{family}")
    sides = ([f"model.backbone={family}"] if task == "dialogue"
             else [f"model.encoder_backbone={family}", f"model.decoder_backbone={family}"])
    data = MT_FILES if mt_files and task == "translation" else []
    command = [sys.executable, "-m", "hf_llm.cli", "train", *RECIPES[task], *data, *sides,
               f"training.output_dir={output_dir}", "training.disable_tqdm=true", "--overwrite"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        return f"{task}/{family}", {"error": done.stderr[-2000:]}
    results = json.load(open(os.path.join(output_dir, "all_results.json")))
    best = os.path.join(output_dir, "best_results.json")
    if os.path.isfile(best):
        results.update(json.load(open(best)))
    predictions = os.path.join(output_dir, "generated_predictions.txt")
    if os.path.isfile(predictions):
        lines = open(predictions, encoding="utf-8").read().splitlines()
        results["distinct_outputs"] = round(len(set(lines)) / max(1, len(lines)), 3)
    return f"{task}/{family}", {k: results[k] for k in (*KEYS, "distinct_outputs", "last_step") if k in results}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--label", required=True)
    parser.add_argument("--tasks", default=",".join(RECIPES))
    parser.add_argument("--families", default=",".join(FAMILIES))
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--mt-files", action="store_true", help="translation on benchmarks/real_data/mt_train.jsonl "
                        "and mt_test300.jsonl (`real_translation.py data`) instead of the recipe's default data")
    args = parser.parse_args()
    jobs = [(t, f) for t in args.tasks.split(",") for f in args.families.split(",")]
    out = os.path.join(HERE, "results", "recipes", f"{args.label}.json")
    os.makedirs(os.path.dirname(out), exist_ok=True)
    table = json.load(open(out)) if os.path.isfile(out) else {}
    with concurrent.futures.ThreadPoolExecutor(args.jobs) as pool:
        for key, row in pool.map(lambda job: run_one(args.label, *job, args.mt_files), jobs):
            table[key] = row
            print(key, row, flush=True)
            with open(out, "w") as f:
                json.dump(table, f, indent=1)


if __name__ == "__main__":
    main()
