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
from helpers import write_task_recipe

from hf_llm.cli import main

WORKER = os.path.join(os.path.dirname(__file__), "scripts", "distributed_worker.py")
EVAL_EXAMPLES = 33  # not a multiple of 2 processes x 4 per device: the sampler pads the last batch


def free_port() -> int:
    with socket.socket() as probe:  # port 0 makes torchrun's static rendezvous hang: pick a free one
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def launch(launcher: str, recipe: str, report_dir, poison: str | None = None, expect: int = 0, timeout: int = 600):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    if poison:
        env["HF_LLM_TEST_POISON"] = poison
    if launcher == "torchrun":
        command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port())]
    else:
        accelerate = shutil.which("accelerate") or os.path.join(os.path.dirname(sys.executable), "accelerate")
        command = [accelerate, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
                   "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(free_port())]
    result = subprocess.run([*command, WORKER, recipe, str(report_dir)], capture_output=True, text=True, env=env,
                            timeout=timeout)
    assert (result.returncode == 0) == (expect == 0), result.stderr[-4000:]
    return result


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


@pytest.mark.parametrize("policy", ["skip", "stop"])
def test_a_non_finite_loss_on_one_process_is_handled_alike_on_every_process(policy, tmp_path):
    """Rank 1 alone sees a NaN loss at its 3rd step. Skip: every process drops that step (the averaged gradients
    are NaN everywhere) and the replicas stay identical and finite. Stop: every process stops, none waits."""
    recipe = write_task_recipe(
        tmp_path, "translation", "transformer", max_steps=6, per_device_train_batch_size=4, save_strategy="no",
        eval_strategy="no", on_nonfinite_loss=policy, data={"max_train_samples": 64, "max_eval_samples": 8},
    )
    report = tmp_path / "report"
    report.mkdir()
    result = launch("torchrun", recipe, report, poison="1:3", expect=0 if policy == "skip" else 2, timeout=300)
    if policy == "skip":
        weights = [json.loads((report / f"weights-{rank}.json").read_text()) for rank in (0, 1)]
        assert weights[0]["finite"] and weights[1]["finite"], "a NaN step reached the weights"
        assert weights[0]["digest"] == weights[1]["digest"], "the replicas drifted apart"
        assert result.stderr.count("step skipped") == 2, "both processes skip the step"
    else:
        assert "Non-finite training loss (nan) at step 3" in result.stderr
        assert "Non-finite training loss (on another process) at step 3" in result.stderr
        assert not (tmp_path / "run" / "model.safetensors").exists()
