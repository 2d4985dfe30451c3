"""Data-parallel training on CPU (gloo) with the same code: torchrun and accelerate launch, 2 processes.

The replicas end with identical weights, and evaluation metrics count each example once (no padded
duplicates from the distributed sampler)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys

import pytest
from test_tasks import write_task_recipe

from hf_llm.cli import main

WORKER = os.path.join(os.path.dirname(__file__), "scripts", "distributed_worker.py")
EVAL_EXAMPLES = 33  # not a multiple of 2 processes x 4 per device: the sampler pads the last batch


def free_port() -> int:
    with socket.socket() as probe:  # port 0 makes torchrun's static rendezvous hang: pick a free one
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def launch(launcher: str, recipe: str, report_dir) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    if launcher == "torchrun":
        command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port())]
    else:
        accelerate = shutil.which("accelerate") or os.path.join(os.path.dirname(sys.executable), "accelerate")
        command = [accelerate, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
                   "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(free_port())]
    result = subprocess.run([*command, WORKER, recipe, str(report_dir)], capture_output=True, text=True, env=env,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]


@pytest.mark.parametrize("launcher", ["torchrun", "accelerate"])
def test_two_process_training_keeps_replicas_identical_and_counts_each_example_once(launcher, tmp_path, capsys):
    recipe = write_task_recipe(
        tmp_path, "translation", "transformer", max_steps=40, per_device_train_batch_size=4,
        per_device_eval_batch_size=4, data={"max_train_samples": 200, "max_eval_samples": EVAL_EXAMPLES},
    )
    report = tmp_path / "report"
    report.mkdir()
    launch(launcher, recipe, report)

    weights = [json.loads((report / f"weights-{rank}.json").read_text()) for rank in (0, 1)]
    assert weights[0]["world_size"] == weights[1]["world_size"] == 2
    assert weights[0]["digest"] == weights[1]["digest"], "the replicas drifted apart"
    seen = json.loads((report / "metrics-0.json").read_text())
    assert seen == [EVAL_EXAMPLES, EVAL_EXAMPLES], f"metrics saw {seen} predictions for {EVAL_EXAMPLES} examples"

    # The distributed evaluation equals a single-process one of the saved model.
    trained = json.loads((tmp_path / "run" / "eval_results.json").read_text())
    capsys.readouterr()
    assert main(["eval", str(tmp_path / "run")]) == 0
    single = json.loads(capsys.readouterr().out)
    assert single["eval_bleu"] == pytest.approx(trained["eval_bleu"])
    assert not (tmp_path / "run" / "weights-1.json").exists()
    assert sorted(p for p in os.listdir(tmp_path / "run") if p.endswith(".json") and "results" in p) == [
        "all_results.json", "eval_results.json", "train_results.json"]
