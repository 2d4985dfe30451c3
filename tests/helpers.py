"""Helpers that several test modules use: tiny models and inputs, padding, logits comparison, recipes written
for a run, a sample of the embedded corpus, a loss made NaN on purpose. Fixtures are in conftest.py; the model
configurations under test are in cases.py."""

from __future__ import annotations

import json

import torch
import yaml
from cases import lm_config, seq2seq_config
from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM

from hf_llm import corpus

ATOL = 1e-5
# Masked positions hold a real token rather than the pad id, whose embedding is zero: zeros could slip
# through a recurrence or a convolution unnoticed, a real token cannot.
FILLER = 7


def assert_logits_close(actual: torch.Tensor, expected: torch.Tensor) -> None:
    """Equal up to float32 rounding: ATOL for logits of order 1, scaled up for larger ones."""
    scale = max(1.0, expected.abs().max().item())
    torch.testing.assert_close(actual, expected, atol=ATOL * scale, rtol=0)


def make_lm(case: str, **overrides):
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(lm_config(case, **overrides)).eval()
    model.generation_config.eos_token_id = None  # fixed-length generations compare cleanly
    return model


def make_seq2seq(case: str, **overrides):
    torch.manual_seed(0)
    model = AutoModelForSeq2SeqLM.from_config(seq2seq_config(case, **overrides)).eval()
    model.generation_config.eos_token_id = None
    return model


def random_ids(batch: int, length: int, seed: int = 1) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(3, 61, (batch, length), generator=generator)


def left_pad(rows: list[torch.Tensor], pad: int = FILLER) -> tuple[torch.Tensor, torch.Tensor]:
    length = max(len(r) for r in rows)
    ids = torch.full((len(rows), length), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), length), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, length - len(row) :] = row
        mask[i, length - len(row) :] = 1
    return ids, mask


def right_pad(rows: list[torch.Tensor], pad: int = FILLER) -> tuple[torch.Tensor, torch.Tensor]:
    length = max(len(r) for r in rows)
    ids = torch.full((len(rows), length), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), length), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = row
        mask[i, : len(row)] = 1
    return ids, mask


def corpus_sample(folder, train: int, validation: int) -> dict[str, str]:
    """The first documents of the embedded corpus's splits, as local jsonl files: {split: path}."""
    files = corpus.corpus_files()
    out = {}
    for split, count in (("train", train), ("validation", validation)):
        with open(files[split]) as src, open(folder / f"{split}.jsonl", "w") as dst:
            for _, line in zip(range(count), src):
                dst.write(line)
        out[split] = str(folder / f"{split}.jsonl")
    return out


def write_recipe(path, backbone: str, output_dir, docs, **training) -> str:
    recipe = {
        "description": "test",
        "model": {"backbone": backbone, "hidden_size": 48, "num_hidden_layers": 2, "num_attention_heads": 4,
                  "intermediate_size": 96, "dropout": 0.0, "cnn_kernel_size": 3},
        "tokenizer": {"vocab_size": 400},
        "data": {"train_file": docs["train"], "validation_file": docs["validation"], "block_size": 32},
        "generation": {"prompts": ["Return the"], "max_new_tokens": 8, "do_sample": False},
        "training": {"output_dir": str(output_dir), "max_steps": 60, "per_device_train_batch_size": 8,
                     "learning_rate": 5e-3, "logging_steps": 10, "save_steps": 30, "disable_tqdm": True, "seed": 0,
                     "use_cpu": True, **training},
    }
    with open(path, "w") as f:
        yaml.safe_dump(recipe, f)
    return str(path)


TINY_MODEL = {"hidden_size": 48, "num_hidden_layers": 1, "num_attention_heads": 4, "intermediate_size": 96,
              "dropout": 0.0, "cnn_kernel_size": 3, "rnn_attention": "luong_general"}


def write_task_recipe(tmp_path, task: str, family: str, model=None, data=None, **training) -> str:
    seq2seq = task in ("translation", "summarization")
    backbone = {"encoder_backbone": family, "decoder_backbone": family} if seq2seq else {"backbone": family}
    recipe = {
        "task": task,
        "model": {**TINY_MODEL, **backbone, **(model or {})},
        "tokenizer": {"vocab_size": 500},
        "data": {"max_train_samples": 800, "max_eval_samples": 48, "max_source_length": 64, "max_target_length": 24,
                 "block_size": 96, **({"source_lang": "en", "target_lang": "fr"} if task == "translation" else {}),
                 **(data or {})},
        "generation": {"do_sample": False, "max_new_tokens": 12},
        "training": {"output_dir": str(tmp_path / "run"), "max_steps": 120, "per_device_train_batch_size": 16,
                     "per_device_eval_batch_size": 48, "learning_rate": 5e-3, "logging_steps": 20,
                     "save_strategy": "no", "disable_tqdm": True, "use_cpu": True, "seed": 0, **training},
    }
    path = tmp_path / f"{task}.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return str(path)


def results(tmp_path) -> dict:
    return json.loads((tmp_path / "run" / "all_results.json").read_text())


def nan_loss_at(forward, at_call: int):
    """`forward` whose `at_call`-th training call (with a loss) returns a NaN loss."""
    import functools

    calls = {"n": 0}

    @functools.wraps(forward)  # the Trainer reads the signature to pick the dataset columns
    def wrapper(self, *args, **kwargs):
        out = forward(self, *args, **kwargs)
        if self.training and out.loss is not None:
            calls["n"] += 1
            if calls["n"] == at_call:
                out.loss = out.loss * float("nan")
        return out

    return wrapper


def assert_seq2seq_padded_rows_generate_alone(model, num_beams: int) -> None:
    """A left- or right-padded batch of sources generates what each source generates alone."""
    rows = [random_ids(1, 8, seed=10)[0], random_ids(1, 3, seed=11)[0], random_ids(1, 5, seed=12)[0]]
    kwargs = dict(max_new_tokens=6, do_sample=False, num_beams=num_beams, pad_token_id=0)
    with torch.no_grad():
        alone = [model.generate(r[None], attention_mask=torch.ones(1, len(r), dtype=torch.long), **kwargs)[0] for r in rows]
        for pad in (left_pad, right_pad):
            ids, mask = pad(rows)
            batched = model.generate(ids, attention_mask=mask, **kwargs)
            for i in range(len(rows)):
                assert batched[i].tolist() == alone[i].tolist(), f"row {i} differs with {pad.__name__}"


def assert_beam_search_agrees_with_and_without_cache(model, ids: torch.Tensor, mask: torch.Tensor) -> None:
    kwargs = dict(attention_mask=mask, max_new_tokens=6, num_beams=4, do_sample=False, pad_token_id=0)
    with torch.no_grad():
        cached = model.generate(ids, use_cache=True, **kwargs)
        uncached = model.generate(ids, use_cache=False, **kwargs)
    assert cached.tolist() == uncached.tolist()
