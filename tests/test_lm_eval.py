"""lm-evaluation-harness on an hf_llm checkpoint: `lm_eval --model hf --model_args
pretrained=DIR,trust_remote_code=True` with hf_llm's own task (hf_llm/eval_tasks, `hf_llm_pydoc`), offline.
The harness's loglikelihood of every (context, choice) pair is the one computed here with the model directly,
and its accuracies are those the loglikelihoods give."""

from __future__ import annotations

import json
import shutil
import socket

import pytest
import torch
from cases import lm_config
from transformers import AutoModelForCausalLM, AutoTokenizer

from hf_llm.cli import main
from hf_llm.resources import eval_tasks_folder
from test_inference import RUNS

lm_eval = pytest.importorskip("lm_eval")
from lm_eval.tasks import TaskManager  # noqa: E402

TASK = "hf_llm_pydoc"
LIMIT = 6  # items of the task's 44 (4 choices each)


@pytest.fixture(scope="module")
def task_manager() -> TaskManager:
    return TaskManager(include_path=str(eval_tasks_folder()), include_defaults=False)


@pytest.fixture
def no_network(monkeypatch):
    """Any connection attempt fails the test (lm-eval and transformers must read the local folder only)."""
    def refuse(self, address, *args):
        raise AssertionError(f"network access to {address}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)


def checkpoint(tmp_path, case: str) -> str:
    """A causal LM saved as `hf-llm train` saves one (weights, config with auto_map, the modelling code for
    trust_remote_code) with the byte-level tokenizer of tests/data/run_v1/lm."""
    folder = tmp_path / case
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(lm_config(case, vocab_size=300)).save_pretrained(folder)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(RUNS / "lm" / name, folder / name)
    assert (folder / "modeling_hf_llm.py").exists()
    return str(folder)


@torch.no_grad()
def loglikelihood(model, tokenizer, context: str, continuation: str) -> float:
    """sum log p(continuation | context): the continuation's tokens are those the whole text has after the
    context's (read as hf_llm's causal LMs read text: no special tokens added)."""
    whole = tokenizer(context + continuation, add_special_tokens=False)["input_ids"]
    start = len(tokenizer(context, add_special_tokens=False)["input_ids"])
    logits = model(torch.tensor([whole])).logits[0].float()  # (T, V)
    log_probs = torch.log_softmax(logits[start - 1 : -1], dim=-1)  # the positions that predict the continuation
    return log_probs.gather(1, torch.tensor(whole[start:])[:, None]).sum().item()


@pytest.mark.parametrize("case", ["transformer", "rnn-lstm", "cnn"])
def test_harness_loglikelihoods_are_ours(tmp_path, task_manager, no_network, case):
    folder = checkpoint(tmp_path, case)
    out = lm_eval.simple_evaluate(
        model="hf", model_args=f"pretrained={folder},trust_remote_code=True,device=cpu,dtype=float32",
        tasks=[TASK], task_manager=task_manager, limit=LIMIT, log_samples=True, batch_size=4, bootstrap_iters=0,
    )
    model = AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    samples = out["samples"][TASK]
    assert len(samples) == LIMIT

    accuracies, normalized = [], []
    for sample in samples:
        doc = sample["doc"]
        assert [tuple(a) for a in sample["arguments"]] == [(doc["query"], " " + c) for c in doc["choices"]]
        theirs = torch.tensor([ll for ll, _ in sample["filtered_resps"]])
        ours = torch.tensor([loglikelihood(model, tokenizer, context, choice) for context, choice in
                             sample["arguments"]])
        torch.testing.assert_close(theirs, ours, atol=1e-4, rtol=1e-5)
        lengths = torch.tensor([float(len(c)) for c in doc["choices"]])
        accuracies.append(float(ours.argmax().item() == doc["gold"]))
        normalized.append(float((ours / lengths).argmax().item() == doc["gold"]))
        assert sample["acc"] == accuracies[-1] and sample["acc_norm"] == normalized[-1]
    results = out["results"][TASK]
    assert results["acc,none"] == pytest.approx(sum(accuracies) / LIMIT)
    assert results["acc_norm,none"] == pytest.approx(sum(normalized) / LIMIT)


def test_the_task_folder_is_printed_and_complete(capsys):
    assert main(["harness-tasks"]) == 0
    folder = capsys.readouterr().out.strip()
    assert folder == str(eval_tasks_folder())
    rows = [json.loads(line) for line in (eval_tasks_folder() / "pydoc_endings.jsonl").read_text().splitlines()]
    assert len(rows) == 44 and all(len(r["choices"]) == 4 and 0 <= r["gold"] < 4 for r in rows)
    assert all(r["choices"].count(r["choices"][r["gold"]]) == 1 for r in rows), "one right ending per item"
