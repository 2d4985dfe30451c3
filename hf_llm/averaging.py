"""`hf-llm average`: the mean of the weights of a run's last checkpoints, as a model folder of its own.

As fairseq's `scripts/average_checkpoints.py --num-update-checkpoints N`: the last N `checkpoint-*` folders
(by step) are read, every floating-point tensor is averaged (in float64, then cast back to its dtype; other
tensors are taken from the last checkpoint), and the result is written with the config, generation config,
tokenizer, modelling code and recipe of the run, so it loads, generates and evaluates like the run's own
model. The folder is built beside its destination and renamed into place: a failure leaves nothing behind.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from transformers.trainer_utils import sort_checkpoints
from transformers.utils import SAFE_WEIGHTS_INDEX_NAME, SAFE_WEIGHTS_NAME

from .recipe_schema import RecipeError

# Files of a model folder besides its weights (everything `from_pretrained` and `hf-llm eval` need).
MODEL_FILES = ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
               "special_tokens_map.json", "added_tokens.json", "chat_template.jinja", "recipe.yaml")
RECORD_NAME = "averaged_checkpoints.json"


def last_checkpoints(run_dir: str, count: int) -> list[str]:
    """The last `count` `checkpoint-*` folders of a run, oldest first."""
    if not os.path.isdir(run_dir):
        raise RecipeError(f"Run folder not found: {run_dir}")
    if count < 2:
        raise RecipeError(f"--last must be at least 2 (checkpoints to average), got {count}.")
    checkpoints = sort_checkpoints(run_dir)
    if len(checkpoints) < count:
        found = ", ".join(os.path.basename(c) for c in checkpoints) or "none"
        raise RecipeError(f"{run_dir} holds {len(checkpoints)} checkpoint-* folders ({found}); averaging the last "
                          f"{count} needs {count}. Save more often (training.save_steps) or keep more "
                          "(training.save_total_limit).")
    return checkpoints[-count:]


def weight_files(folder: str) -> list[str]:
    index = os.path.join(folder, SAFE_WEIGHTS_INDEX_NAME)
    if os.path.isfile(index):
        with open(index) as f:
            return [os.path.join(folder, name) for name in sorted(set(json.load(f)["weight_map"].values()))]
    single = os.path.join(folder, SAFE_WEIGHTS_NAME)
    if not os.path.isfile(single):
        raise RecipeError(f"{folder} holds no {SAFE_WEIGHTS_NAME}: not a checkpoint with safetensors weights.")
    return [single]


def read_weights(folder: str) -> dict[str, torch.Tensor]:
    tensors = {}
    for path in weight_files(folder):
        with safe_open(path, framework="pt") as f:
            tensors.update({name: f.get_tensor(name) for name in f.keys()})
    return tensors


def average_weights(folders: list[str]) -> dict[str, torch.Tensor]:
    """The element-wise mean of the checkpoints' floating-point tensors (same names and shapes required)."""
    reference = read_weights(folders[-1])
    sums = {name: tensor.to(torch.float64) for name, tensor in reference.items() if tensor.is_floating_point()}
    for folder in folders[:-1]:
        tensors = read_weights(folder)
        if tensors.keys() != reference.keys():
            difference = sorted(tensors.keys() ^ reference.keys())
            raise RecipeError(f"{folder} and {folders[-1]} hold different tensors ({', '.join(difference[:3])}"
                              f"{', ...' if len(difference) > 3 else ''}): not checkpoints of one model.")
        for name, tensor in tensors.items():
            if tensor.shape != reference[name].shape:
                raise RecipeError(f"{name} has shape {tuple(tensor.shape)} in {folder} but "
                                  f"{tuple(reference[name].shape)} in {folders[-1]}: not checkpoints of one model.")
            if name in sums:
                sums[name] += tensor.to(torch.float64)
    return {name: (sums[name] / len(folders)).to(tensor.dtype) if name in sums else tensor
            for name, tensor in reference.items()}


def copy_model_files(source: str, destination: str) -> None:
    for name in os.listdir(source):
        if name in MODEL_FILES or name.endswith(".py"):
            shutil.copy2(os.path.join(source, name), os.path.join(destination, name))


def average_checkpoints(run_dir: str, last: int, output_dir: str | None = None) -> str:
    """Average the last `last` checkpoints of `run_dir` into `output_dir` (default `run_dir/average-last-N`)
    and return it. `output_dir=run_dir` replaces the run's own model (weights only; its results stay)."""
    folders = last_checkpoints(run_dir, last)
    output_dir = output_dir or os.path.join(run_dir, f"average-last-{last}")
    replace_run_model = os.path.isdir(output_dir) and os.path.samefile(output_dir, run_dir)
    if os.path.exists(output_dir) and not replace_run_model and os.listdir(output_dir):
        raise RecipeError(f"--output {output_dir} already exists and is not empty; remove it or choose another folder.")
    averaged = average_weights(folders)
    # The run's own files when it has a final model (the generation config it was trained for), else the
    # last checkpoint's.
    source = run_dir if os.path.isfile(os.path.join(run_dir, "config.json")) else folders[-1]
    parent = os.path.dirname(os.path.abspath(output_dir))
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=".average-", dir=run_dir if replace_run_model else parent)
    try:
        if not replace_run_model:
            copy_model_files(source, staging)
        save_file(averaged, os.path.join(staging, SAFE_WEIGHTS_NAME), metadata={"format": "pt"})
        with open(os.path.join(staging, RECORD_NAME), "w") as f:
            json.dump({"checkpoints": [os.path.basename(c) for c in folders],
                       "steps": [int(c.rsplit("-", 1)[1]) for c in folders]}, f, indent=2)
        if replace_run_model:
            for name in os.listdir(staging):
                os.replace(os.path.join(staging, name), os.path.join(output_dir, name))
            stale_index = os.path.join(output_dir, SAFE_WEIGHTS_INDEX_NAME)
            if os.path.isfile(stale_index):
                os.remove(stale_index)
        else:
            if os.path.isdir(output_dir):
                os.rmdir(output_dir)  # an empty folder: take its place
            os.replace(staging, output_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return output_dir


def averaged_from(folder: str) -> list[str] | None:
    """The checkpoints averaged into a model folder (its averaged_checkpoints.json), or None."""
    record = os.path.join(folder, RECORD_NAME)
    if not os.path.isfile(record):
        return None
    with open(record) as f:
        return json.load(f)["checkpoints"]
