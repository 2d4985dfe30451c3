"""Run `hf-llm train RECIPE` in a distributed job and record, per rank, what a test needs to check:
a digest of the trained weights (and whether they are finite), and how many predictions each evaluation's
metric saw. With HF_LLM_TEST_POISON=RANK:CALL, that rank's CALL-th training forward returns a NaN loss.

    torchrun --nproc_per_node 2 tests/scripts/distributed_worker.py RECIPE REPORT_DIR
    accelerate launch --multi_gpu --num_processes 2 tests/scripts/distributed_worker.py RECIPE REPORT_DIR
"""

import hashlib
import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # tests/
from helpers import nan_loss_at  # noqa: E402

import hf_llm
import hf_llm.tasks.seq2seq as seq2seq
import hf_llm.trainers as hf_train
from hf_llm.cli import main

recipe, report_dir = sys.argv[1], sys.argv[2]
rank = int(os.environ.get("RANK", "0"))
seen: list[int] = []

original_train = hf_train.HfLlmTrainer.train
original_s2s_train = hf_train.HfLlmSeq2SeqTrainer.train
original_metrics = seq2seq.translation_metrics


def record_weights(train):
    def wrapper(self, *args, **kwargs):
        result = train(self, *args, **kwargs)
        blob = b"".join(p.detach().cpu().contiguous().numpy().tobytes() for p in self.model.parameters())
        with open(os.path.join(report_dir, f"weights-{rank}.json"), "w") as f:
            json.dump({"digest": hashlib.sha256(blob).hexdigest(), "world_size": self.args.world_size,
                       "finite": all(bool(torch.isfinite(p).all()) for p in self.model.parameters())}, f)
        return result

    return wrapper


def record_metrics(predictions, references):
    seen.append(len(predictions))
    with open(os.path.join(report_dir, f"metrics-{rank}.json"), "w") as f:
        json.dump(seen, f)
    return original_metrics(predictions, references)


if os.environ.get("HF_LLM_TEST_POISON"):
    poisoned_rank, at_call = map(int, os.environ["HF_LLM_TEST_POISON"].split(":"))
    if rank == poisoned_rank:
        hf_llm.HfLlmForSeq2SeqLM.forward = nan_loss_at(hf_llm.HfLlmForSeq2SeqLM.forward, at_call)

hf_train.HfLlmTrainer.train = record_weights(original_train)
hf_train.HfLlmSeq2SeqTrainer.train = record_weights(original_s2s_train)
seq2seq.translation_metrics = record_metrics
sys.exit(main(["train", recipe]))
