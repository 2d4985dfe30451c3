"""`hf-llm train` end to end for every family: the loss falls, the saved model loads and generates,
a resumed run ends where an uninterrupted one does, and an existing run is never written over."""

from __future__ import annotations

import json
import os
import shutil

import pytest
import torch
import yaml
from helpers import write_recipe
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from hf_llm.cli import main

BACKBONES = ["transformer", "rnn", "cnn"]








@pytest.mark.parametrize("backbone", BACKBONES)
def test_train_lowers_the_loss_and_leaves_a_model_that_loads_and_generates(backbone, docs, tmp_path, capsys):
    output_dir = tmp_path / "run"
    recipe = write_recipe(tmp_path / "r.yaml", backbone, output_dir, docs)
    assert main(["train", recipe]) == 0
    printed = capsys.readouterr().out
    assert "perplexity" in printed and "--- sample ---" in printed

    results = json.loads((output_dir / "all_results.json").read_text())
    assert results["eval_loss"] < 0.8 * results["init_eval_loss"], results
    assert results["perplexity"] == pytest.approx(torch.tensor(results["eval_loss"]).exp().item(), rel=1e-4)
    assert json.loads((output_dir / "eval_results.json").read_text())["perplexity"] == results["perplexity"]
    for name in ("model.safetensors", "config.json", "generation_config.json", "tokenizer.json", "recipe.yaml",
                 "loss_curve.png", "modeling_hf_llm.py"):
        assert (output_dir / name).is_file(), name
    assert (output_dir / "loss_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not [p for p in os.listdir(output_dir) if p.startswith(".final-")], "no staging folder left behind"

    model = AutoModelForCausalLM.from_pretrained(output_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(output_dir)
    assert model.config.backbone == backbone and model.config.vocab_size == len(tokenizer)
    inputs = tokenizer("Return the", return_tensors="pt")
    out = model.generate(**inputs, max_new_tokens=6, do_sample=False)
    assert out.shape[1] == inputs["input_ids"].shape[1] + 6

    # The CLI's generate and eval use the same model.
    assert main(["generate", str(output_dir), "Return the", "--max-new-tokens", "6", "--no-do-sample"]) == 0
    assert capsys.readouterr().out.strip() == "Return the" + tokenizer.decode(out[0, inputs["input_ids"].shape[1]:],
                                                                              skip_special_tokens=True).rstrip()
    assert main(["eval", str(output_dir)]) == 0
    evaluated = json.loads(capsys.readouterr().out)
    assert evaluated["perplexity"] == pytest.approx(results["perplexity"], rel=1e-4)


@pytest.mark.parametrize("backbone", BACKBONES)
def test_resuming_from_a_checkpoint_ends_like_an_uninterrupted_run(backbone, docs, tmp_path):
    steps = dict(max_steps=8, save_steps=4, save_strategy="steps", logging_steps=2)
    whole = tmp_path / "whole"
    assert main(["train", write_recipe(tmp_path / "a.yaml", backbone, whole, docs, **steps)]) == 0
    resumed = tmp_path / "resumed"
    resumed.mkdir()
    shutil.copytree(whole / "checkpoint-4", resumed / "checkpoint-4")
    copied = resumed / "checkpoint-4" / "model.safetensors"
    stamp = copied.stat().st_mtime_ns
    recipe = write_recipe(tmp_path / "b.yaml", backbone, resumed, docs, **steps, resume_from_checkpoint=True)
    assert main(["train", recipe]) == 0
    # It continued from the copied checkpoint: a run from scratch would have written checkpoint-4 again.
    assert copied.stat().st_mtime_ns == stamp and (resumed / "checkpoint-8").is_dir()
    a, b = load_file(whole / "model.safetensors"), load_file(resumed / "model.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(b[key], a[key], atol=0, rtol=0)
    losses = lambda d: [e["loss"] for e in json.loads((d / "trainer_state.json").read_text())["log_history"] if "loss" in e]
    assert losses(resumed)[-2:] == losses(whole)[-2:]


def test_an_existing_run_is_never_written_over(docs, tmp_path, capsys):
    output_dir = tmp_path / "run"
    output_dir.mkdir()
    (output_dir / "model.safetensors").write_bytes(b"precious")
    recipe = write_recipe(tmp_path / "r.yaml", "transformer", output_dir, docs, max_steps=2)
    assert main(["train", recipe]) == 2
    assert "already holds a run" in capsys.readouterr().err
    assert (output_dir / "model.safetensors").read_bytes() == b"precious"
    assert sorted(os.listdir(output_dir)) == ["model.safetensors"]


def test_the_embedded_corpus_is_the_default_data(tmp_path):
    recipe = {
        "model": {"backbone": "transformer", "hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2},
        "tokenizer": {"vocab_size": 400},
        "data": {"block_size": 32, "max_train_samples": 200, "max_eval_samples": 40},
        "generation": {"prompts": ["Return"], "max_new_tokens": 4},
        "training": {"output_dir": str(tmp_path / "run"), "max_steps": 3, "disable_tqdm": True, "use_cpu": True},
    }
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(recipe))
    assert main(["train", str(path)]) == 0
    saved = yaml.safe_load((tmp_path / "run" / "recipe.yaml").read_text())
    assert saved["data"]["dataset_name"] == "hf_llm:python_docs"


def test_data_errors_are_reported_before_anything_is_written(docs, tmp_path, capsys):
    rows = tmp_path / "rows.jsonl"
    rows.write_text("".join(json.dumps({"body": f"text {i}"}) + "\n" for i in range(20)))
    output_dir = tmp_path / "run"
    recipe = write_recipe(tmp_path / "r.yaml", "transformer", output_dir, docs)
    assert main(["train", recipe, f"data.train_file={rows}", "data.validation_file=null"]) == 2
    assert "no column 'text' (set by data.text_column)" in capsys.readouterr().err
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    assert main(["train", recipe, f"data.train_file={empty}", "data.validation_file=null"]) == 2
    assert "is empty" in capsys.readouterr().err
    assert not output_dir.exists()


def test_tokenizer_train_command(docs, tmp_path, capsys):
    out = tmp_path / "tok"
    assert main(["tokenizer", "train", "--files", docs["train"], "--vocab-size", "350", "--output", str(out)]) == 0
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert len(tokenizer) == 350
    assert (tokenizer.pad_token_id, tokenizer.bos_token_id, tokenizer.eos_token_id) == (0, 1, 2)
    assert tokenizer.convert_tokens_to_ids(["<|im_start|>", "<|im_end|>"]) == [4, 5]
    text = "Return the number of items.\n    >>> len(x)"
    assert tokenizer.decode(tokenizer(text)["input_ids"]) == text
