"""Robustness: every bad input is one clear error (exit 2, no traceback, nothing written over an existing
output); interrupted runs resume exactly, wherever they were killed; a checkpoint cut mid-save is never resumed
from; a refused write is one clear error; non-finite losses stop (or skip) cleanly; loading is safe and strict;
long inputs are handled."""

from __future__ import annotations

import errno
import json
import os
import pathlib
import re
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch
import yaml
from helpers import nan_loss_at, write_recipe, write_task_recipe
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM
from transformers.trainer_utils import get_last_checkpoint

import hf_llm
import hf_llm.trainers as hf_train
from hf_llm.cli import main


@pytest.fixture(scope="module")
def trained_lm(docs, tmp_path_factory):
    root = tmp_path_factory.mktemp("lm")
    assert main(["train", write_recipe(root / "r.yaml", "transformer", root / "run", docs, max_steps=3,
                                        save_strategy="no")]) == 0
    return root / "run"


def snapshot(folder) -> dict:
    """Every file under `folder` (relative path -> bytes)."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()} \
        if folder.exists() else {}


# --------------------------------------------------------------------------------------------------
# The battery: (description, command builder, expected message). Every train command runs with --overwrite
# on a folder that already holds a run, so "nothing is written" is checked even when writing is allowed.
def _jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def bad_inputs(tmp_path, docs, trained_lm):
    lm = lambda *overrides, recipe=None: ["train", recipe or write_recipe(tmp_path / "r.yaml", "transformer", tmp_path / "out", docs), *overrides, "--overwrite"]  # noqa: E731
    task = lambda name, *overrides, **kw: ["train", write_task_recipe(tmp_path, name, "transformer", **kw), *overrides, "--overwrite"]  # noqa: E731
    broken_yaml = tmp_path / "broken.yaml"
    broken_yaml.write_text("model: [unclosed\n")
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    malformed = tmp_path / "malformed.jsonl"
    malformed.write_text('{"text": "fine"}\n{"text": oops}\n')
    no_text = _jsonl(tmp_path / "notext.jsonl", [{"body": f"row {i}"} for i in range(20)])
    short = _jsonl(tmp_path / "short.jsonl", [{"text": "tiny"} for _ in range(10)])
    one_label = _jsonl(tmp_path / "onelabel.jsonl", [{"text": f"t {i}", "label": "pos"} for i in range(20)])
    no_assistant = _jsonl(tmp_path / "noassistant.jsonl", [{"messages": [{"role": "user", "content": "hi"}]}] * 10)
    pairs = _jsonl(tmp_path / "pairs.jsonl", [{"translation": {"en": "a b", "fr": "c d"}}] * 10)
    (tmp_path / "notes.xml").write_text("<x/>")
    bin_only = tmp_path / "bin_only"
    bin_only.mkdir()
    shutil.copy(trained_lm / "config.json", bin_only / "config.json")
    torch.save({}, bin_only / "pytorch_model.bin")
    misfit = tmp_path / "misfit"
    shutil.copytree(trained_lm, misfit)
    config = json.loads((misfit / "config.json").read_text())
    config["num_hidden_layers"] = 3
    (misfit / "config.json").write_text(json.dumps(config))
    big_tokenizer = tmp_path / "big_tokenizer"
    hf_llm.tokenizer.train_tokenizer(["word " * 50 + str(i) for i in range(2000)], vocab_size=900,
                                     min_frequency=1).save_pretrained(big_tokenizer)
    return [
        # model configuration (recipe `model` section)
        ("unknown backbone", lm("model.backbone=lstm"), "backbone='lstm' is not a backbone"),
        ("heads do not divide", lm("model.hidden_size=30"), "hidden_size=30 is not divisible by num_attention_heads=4"),
        ("unknown attention", lm("model.rnn_attention=dot"), "rnn_attention='dot' is not supported"),
        ("bad conv spec", lm("model.cnn_decoder_spec=[[32,0]]"), "cnn_decoder_spec=[[32, 0]] must be a non-empty list"),
        ("dropout out of range", lm("model.dropout=2.0"), "dropout=2.0 must be a number in [0, 1)"),
        ("seq2seq for causal LM", lm("model.is_encoder_decoder=true"), "task causal_lm trains a decoder-only model"),
        ("unknown preset", lm("model.preset=lstm_huge"), "model.preset: unknown preset 'lstm_huge'"),
        # recipe
        ("unknown section", lm("optimizer.lr=1"), "Unknown section 'optimizer'"),
        ("unknown key", lm("training.max_step=3"), "Unknown key 'training.max_step'"),
        ("wrong type", lm("data.block_size=big"), "'data.block_size' must be int"),
        ("malformed override", lm("blocksize=3"), "must look like section.key=value"),
        ("missing recipe", ["train", "no_such_recipe.yaml"], "Recipe file not found: no_such_recipe.yaml"),
        ("invalid YAML", ["train", str(broken_yaml)], "is not valid YAML"),
        ("unknown task", ["train", write_recipe(tmp_path / "t.yaml", "transformer", tmp_path / "out", docs)],
         None),  # placeholder replaced below
        ("bad eval strategy", lm("training.eval_strategy=sometimes"), "'training.eval_strategy' must be one of"),
        ("bad nonfinite policy", lm("training.on_nonfinite_loss=ignore"), "'training.on_nonfinite_loss' must be"),
        ("zero beams", lm("generation.num_beams=0"), "generation.num_beams must be at least 1"),
        ("zero block size", lm("data.block_size=0"), "data.block_size must be a positive integer"),
        # data files
        ("missing train file", lm("data.train_file=/no/such.jsonl"), "data.train_file: file not found: /no/such.jsonl"),
        ("empty train file", lm(f"data.train_file={empty}", "data.validation_file=null"), "is empty"),
        ("unsupported format", lm(f"data.train_file={tmp_path / 'notes.xml'}", "data.validation_file=null"),
         "use a .txt, .jsonl/.json, .csv or .parquet file"),
        ("missing text column", lm(f"data.train_file={no_text}", "data.validation_file=null"),
         "has no column 'text' (set by data.text_column)"),
        ("malformed JSON lines", lm(f"data.train_file={malformed}", "data.validation_file=null"), "Cannot read the data"),
        ("too little text for a block", lm(f"data.train_file={short}", "data.validation_file=null", "data.block_size=64"),
         "fewer than data.block_size=64 tokens"),
        ("unknown language", task("translation", "data.source_lang=de"), "data.source_lang='de' is not a language"),
        ("single label", task("classification", f"data.train_file={one_label}", "data.dataset_name=null"),
         "holds a single label"),
        ("chat without assistant", task("dialogue", f"data.train_file={no_assistant}", "data.dataset_name=null"),
         "has no assistant turn"),
        ("translation without target", task("translation", f"data.train_file={pairs}", "data.dataset_name=null",
                                            "data.target_lang=null"), "need data.source_lang and data.target_lang"),
        # tokenizer
        ("tokenizer folder missing", lm("tokenizer.name_or_path=./no/tokenizer"), "tokenizer.name_or_path: folder not found"),
        ("vocabulary too small", lm("tokenizer.vocab_size=100"), "tokenizer.vocab_size must be at least 300"),
        ("tokenizer larger than the model", lm(f"model.name_or_path={trained_lm}", f"tokenizer.name_or_path={big_tokenizer}"),
         "The tokenizer has 900 tokens but the model"),
        # checkpoints
        ("weights that do not fit the config", lm(f"model.name_or_path={misfit}"), "do not fit its config"),
        ("nothing to resume", lm("training.resume_from_checkpoint=true"), "holds no checkpoint-* folder"),
        # command-line arguments
        ("generate: missing model", ["generate", str(tmp_path / "nope"), "hi"], "Model folder not found"),
        ("generate: zero new tokens", ["generate", str(trained_lm), "hi", "--max-new-tokens", "0"], "--max-new-tokens must be positive"),
        ("generate: zero beams", ["generate", str(trained_lm), "hi", "--num-beams", "0"], "--num-beams must be positive"),
        ("generate: negative temperature", ["generate", str(trained_lm), "hi", "--do-sample", "--temperature", "-1"], "generate:"),
        ("generate: pickled weights only", ["generate", str(bin_only), "hi"], "Cannot load the model"),
        ("eval: not a model", ["eval", str(tmp_path)], "holds no config.json"),
        ("push: no safetensors", ["push", str(bin_only), "me/x"], "holds no safetensors weights"),
        ("chat: missing model", ["chat", str(tmp_path / "nope")], "Model folder not found"),
    ]


def test_every_bad_input_is_one_clear_error_and_writes_nothing(tmp_path, docs, trained_lm, capsys, monkeypatch):
    monkeypatch.setattr("sys.stdin", open(os.devnull))
    cases = bad_inputs(tmp_path, docs, trained_lm)
    # the unknown-task case needs its own recipe file
    task_recipe = tmp_path / "task.yaml"
    task_recipe.write_text(yaml.safe_dump({"task": "poetry"}))
    cases = [(d, ["train", str(task_recipe)], "Unknown task 'poetry'") if d == "unknown task" else (d, c, m)
             for d, c, m in cases]
    assert len(cases) >= 30
    existing = tmp_path / "out"  # every train command's output_dir, already holding a run
    existing.mkdir()
    (existing / "model.safetensors").write_bytes(b"precious weights")
    (existing / "notes.txt").write_text("keep me")
    before = snapshot(existing)
    failures = []
    for description, command, message in cases:
        capsys.readouterr()
        code = main(command)
        err = capsys.readouterr().err.strip()
        lines = [line for line in err.splitlines() if line.startswith("error:")]
        if code != 2 or len(lines) != 1 or "Traceback" in err or message not in lines[0]:
            failures.append(f"{description}: exit {code}, stderr {err[-400:]!r}")
        if snapshot(existing) != before:
            failures.append(f"{description}: the existing output folder changed")
    assert not failures, "\n".join(failures)


# --------------------------------------------------------------------------------------------------
def weights(folder) -> dict:
    return load_file(os.path.join(folder, "model.safetensors"))


def test_a_run_killed_with_sigkill_resumes_to_the_same_weights(docs, tmp_path):
    """SIGKILL midway, resume from the last checkpoint, end with the uninterrupted run's weights."""
    steps = dict(max_steps=400, save_steps=25, save_strategy="steps", logging_steps=25, save_total_limit=2)
    whole = tmp_path / "whole"
    assert main(["train", write_recipe(tmp_path / "a.yaml", "rnn", whole, docs, **steps)]) == 0

    killed = tmp_path / "killed"
    recipe = write_recipe(tmp_path / "b.yaml", "rnn", killed, docs, **steps)
    process = subprocess.Popen([sys.executable, "-m", "hf_llm.cli", "train", recipe], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)  # same thread count as the in-process runs
    deadline = time.time() + 300
    while time.time() < deadline and process.poll() is None:
        last = get_last_checkpoint(str(killed)) if killed.is_dir() else None
        if last and int(last.rsplit("-", 1)[1]) >= 50:
            break
        time.sleep(0.05)
    assert process.poll() is None, "the run ended before it could be killed"
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (killed / "model.safetensors").exists(), "killed before the end"
    interrupted_at = int(get_last_checkpoint(str(killed)).rsplit("-", 1)[1])
    assert 50 <= interrupted_at < 400

    recipe = write_recipe(tmp_path / "c.yaml", "rnn", killed, docs, **steps, resume_from_checkpoint=True)
    assert main(["train", recipe]) == 0
    a, b = weights(whole), weights(killed)
    for key in a:
        torch.testing.assert_close(b[key], a[key], atol=0, rtol=0)


def test_a_crash_during_a_checkpoint_save_leaves_the_previous_checkpoint(docs, tmp_path, monkeypatch, capsys):
    saves = []
    original = hf_train.HfLlmTrainer._save_optimizer_and_scheduler

    def crash_on_second_save(self, output_dir):
        saves.append(output_dir)
        if len(saves) == 2:
            raise OSError(errno.ENOSPC, "No space left on device (simulated)")
        return original(self, output_dir)

    monkeypatch.setattr(hf_train.HfLlmTrainer, "_save_optimizer_and_scheduler", crash_on_second_save)
    output_dir = tmp_path / "run"
    recipe = write_recipe(tmp_path / "r.yaml", "cnn", output_dir, docs, max_steps=12, save_steps=4,
                          save_strategy="steps")
    assert main(["train", recipe]) == 2
    assert re.search(r"error: Writing checkpoint-8 failed: \[Errno 28\] No space left on device \(simulated\) .*The last good checkpoint is "
                     r".*checkpoint-4\.", capsys.readouterr().err)
    assert sorted(p for p in os.listdir(output_dir) if p.startswith("checkpoint-")) == ["checkpoint-4"]
    assert get_last_checkpoint(str(output_dir)).endswith("checkpoint-4")
    model = AutoModelForCausalLM.from_pretrained(output_dir / "checkpoint-4")
    assert model.config.backbone == "cnn"
    assert not (output_dir / "model.safetensors").exists()
    # ... and the run resumes from it.
    monkeypatch.setattr(hf_train.HfLlmTrainer, "_save_optimizer_and_scheduler", original)
    resume = write_recipe(tmp_path / "s.yaml", "cnn", output_dir, docs, max_steps=12, save_steps=4,
                          save_strategy="steps", resume_from_checkpoint=True)
    assert main(["train", resume]) == 0
    assert (output_dir / "model.safetensors").exists()


def test_a_checkpoint_whose_save_was_cut_short_is_never_resumed_from(docs, tmp_path, caplog, capsys):
    """What SIGKILL during a save leaves: a checkpoint folder without its trainer_state.json (the Trainer writes it
    last). Resuming takes the last complete checkpoint, removes the cut one, and ends as an uninterrupted run."""
    steps = {"max_steps": 12, "save_steps": 4, "save_strategy": "steps", "save_total_limit": 5}
    whole = tmp_path / "whole"
    assert main(["train", write_recipe(tmp_path / "a.yaml", "cnn", whole, docs, **steps)]) == 0
    cut = tmp_path / "cut"
    shutil.copytree(whole, cut)
    for name in os.listdir(cut):  # as if killed during the save of checkpoint-12
        if not name.startswith("checkpoint-") and name != "recipe.yaml":
            os.remove(cut / name) if (cut / name).is_file() else shutil.rmtree(cut / name)
    (cut / "checkpoint-12" / "trainer_state.json").unlink()
    (cut / "checkpoint-8" / "trainer_state.json").write_text('{"global_step": 8, "log_hi')  # cut mid-write too
    assert get_last_checkpoint(str(cut)).endswith("checkpoint-12"), "transformers alone would take the cut one"

    named = write_recipe(tmp_path / "n.yaml", "cnn", cut, docs, **steps, resume_from_checkpoint=str(cut / "checkpoint-12"))
    assert main(["train", named]) == 2
    assert re.search(r"checkpoint-12 is incomplete .* the last complete checkpoint is .*checkpoint-4",
                     capsys.readouterr().err)
    resume = write_recipe(tmp_path / "r.yaml", "cnn", cut, docs, **steps, resume_from_checkpoint=True)
    with caplog.at_level("WARNING", logger="hf_llm"):
        assert main(["train", resume]) == 0
    assert "checkpoint-12: its save was interrupted" in caplog.text
    state = json.loads((cut / "checkpoint-12" / "trainer_state.json").read_text())
    assert state["global_step"] == 12
    a, b = weights(whole), weights(cut)
    for key in a:
        torch.testing.assert_close(b[key], a[key], atol=0, rtol=0)


def test_a_resume_that_cannot_be_honoured_says_why_and_writes_nothing(docs, tmp_path, capsys):
    output_dir = tmp_path / "run"
    steps = {"max_steps": 4, "save_steps": 4, "save_strategy": "steps"}
    assert main(["train", write_recipe(tmp_path / "a.yaml", "cnn", output_dir, docs, **steps)]) == 0
    before = snapshot(output_dir)
    resume = write_recipe(tmp_path / "b.yaml", "cnn", output_dir, docs, **{**steps, "max_steps": 8},
                          resume_from_checkpoint=True)
    cases = {
        "model.hidden_size=64": r"checkpoint-4 holds another model than this recipe builds \(shapes differ: .*\)\. "
                                r"Resume with the recipe that wrote it",
        "model.backbone=rnn": r"holds another model than this recipe builds \(.*the checkpoint lacks",
        "tokenizer.vocab_size=350": r"holds another model than this recipe builds \(shapes differ: .*embed",
        # same size, other tokens (trained on fewer documents): only the vocabularies tell
        "tokenizer.max_training_documents=30": r"the run's tokenizer \(400 tokens\) is not the one .*checkpoint-4 was "
                                               r"trained with \(400 tokens\)",
    }
    for override, message in cases.items():
        assert main(["train", resume, override]) == 2, override
        assert re.search(message, capsys.readouterr().err), override
        assert snapshot(output_dir) == before, f"{override}: nothing is written"
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["train", write_recipe(tmp_path / "c.yaml", "cnn", empty, docs, **steps, resume_from_checkpoint=True)]) == 2
    assert "holds no checkpoint-* folder" in capsys.readouterr().err


KILL_AT = {  # (module, class or "-", function, condition on its args): there the run SIGKILLs itself, for real
    # mid-save: checkpoint-8's weights, optimizer and RNG state are written, its trainer_state.json is not
    "mid-save": ("transformers", "TrainerState", "save_to_json", "'checkpoint-8' in str(args[1])"),
    # after the last save: the final checkpoint is written, the final model, metrics and card are not
    "after-the-last-save": ("hf_llm.train", "-", "save_outputs", "True"),
}
KILLER = r"""
import importlib, os, signal, sys
recipe, module, owner, name, condition = sys.argv[1:6]
target = importlib.import_module(module)
target = getattr(target, owner) if owner != "-" else target
original = getattr(target, name)
def killing(*args, **kwargs):
    if eval(condition):
        os.kill(os.getpid(), signal.SIGKILL)
    return original(*args, **kwargs)
setattr(target, name, killing)
from hf_llm.cli import main
sys.exit(main(["train", recipe]))
"""


@pytest.mark.parametrize("point", KILL_AT)
def test_a_run_killed_at_any_point_resumes_to_the_uninterrupted_result(point, docs, tmp_path):
    steps = {"max_steps": 12, "save_steps": 4, "save_strategy": "steps", "save_total_limit": 5}
    whole = tmp_path / "whole"
    assert main(["train", write_recipe(tmp_path / "a.yaml", "cnn", whole, docs, **steps)]) == 0
    killed = tmp_path / "killed"
    recipe = write_recipe(tmp_path / "b.yaml", "cnn", killed, docs, **steps)
    process = subprocess.run([sys.executable, "-c", KILLER, recipe, *KILL_AT[point]], capture_output=True,
                             timeout=600)
    assert process.returncode == -signal.SIGKILL, process.stderr[-2000:]
    assert not (killed / "model.safetensors").exists(), "killed before the final save"
    resume = write_recipe(tmp_path / "c.yaml", "cnn", killed, docs, **steps, resume_from_checkpoint=True)
    assert main(["train", resume]) == 0
    assert json.loads((killed / "trainer_state.json").read_text())["global_step"] == 12
    assert sorted(p for p in os.listdir(killed) if p.startswith("checkpoint-")) == \
        sorted(p for p in os.listdir(whole) if p.startswith("checkpoint-"))
    a, b = weights(whole), weights(killed)
    for key in a:
        torch.testing.assert_close(b[key], a[key], atol=0, rtol=0)
    ours, theirs = (json.loads((run / "eval_results.json").read_text()) for run in (killed, whole))
    assert ours["eval_loss"] == pytest.approx(theirs["eval_loss"], rel=1e-6)
    for name in ("README.md", "samples.json", "config.json", "tokenizer.json", "loss_curve.png"):
        assert (killed / name).is_file(), name


def test_a_seq2seq_run_killed_after_its_last_save_resumes_to_the_same_model(tmp_path):
    """Tied embeddings shared deep inside the encoder-decoder are saved once: resuming still fits."""
    runs = {}
    for name in ("whole", "killed"):
        (tmp_path / name).mkdir()
        runs[name] = write_task_recipe(tmp_path / name, "translation", "transformer", output_dir=str(tmp_path / name / "run"),
                                       max_steps=4, save_steps=2, save_strategy="steps", save_total_limit=5)
    assert main(["train", runs["whole"]]) == 0
    process = subprocess.run([sys.executable, "-c", KILLER, runs["killed"], *KILL_AT["after-the-last-save"]],
                             capture_output=True, timeout=600)
    assert process.returncode == -signal.SIGKILL, process.stderr[-2000:]
    recipe = yaml.safe_load(open(runs["killed"]))
    recipe["training"]["resume_from_checkpoint"] = True
    pathlib.Path(runs["killed"]).write_text(yaml.safe_dump(recipe))
    assert main(["train", runs["killed"]]) == 0
    a, b = weights(tmp_path / "whole" / "run"), weights(tmp_path / "killed" / "run")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_resume_with_more_epochs_trains_them(docs, tmp_path):
    steps = {"save_strategy": "epoch", "per_device_train_batch_size": 64, "max_steps": -1}
    output_dir = tmp_path / "run"
    assert main(["train", write_recipe(tmp_path / "a.yaml", "cnn", output_dir, docs, num_train_epochs=1, **steps)]) == 0
    one_epoch = json.loads((output_dir / "trainer_state.json").read_text())["global_step"]
    more = write_recipe(tmp_path / "b.yaml", "cnn", output_dir, docs, num_train_epochs=2, resume_from_checkpoint=True,
                        **steps)
    assert main(["train", more]) == 0
    assert json.loads((output_dir / "trainer_state.json").read_text())["global_step"] == 2 * one_epoch


def limit_file_size(limit: int):
    """For a child process: the kernel refuses to grow any file beyond `limit` bytes (EFBIG; Python ignores
    SIGXFSZ, so the write fails rather than the process dying) — a full disk, as far as the writer can tell."""
    import resource

    def apply():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return apply


def test_a_write_refused_by_the_file_system_is_one_clear_error_and_the_last_checkpoint_survives(docs, tmp_path):
    """A real fault: the run is resumed under a file-size limit that its next checkpoint's weights exceed."""
    output_dir = tmp_path / "run"
    steps = {"save_steps": 4, "save_strategy": "steps", "save_total_limit": 5}
    assert main(["train", write_recipe(tmp_path / "a.yaml", "cnn", output_dir, docs, max_steps=4, **steps)]) == 0
    before = weights(output_dir)
    resume = write_recipe(tmp_path / "b.yaml", "cnn", output_dir, docs, max_steps=8, resume_from_checkpoint=True,
                          **steps)
    limit = 64 * 1024  # above every small file of the run, below its weights
    assert os.path.getsize(output_dir / "checkpoint-4" / "model.safetensors") > limit
    result = subprocess.run([sys.executable, "-m", "hf_llm.cli", "train", resume], capture_output=True, text=True,
                            preexec_fn=limit_file_size(limit), timeout=600)
    assert result.returncode == 2, result.stderr[-3000:]
    error = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(error) == 1 and "Traceback" not in result.stderr, result.stderr[-3000:]
    assert re.search(r"error: Writing checkpoint-8 failed: .*MiB free there; a checkpoint of this run "
                     r"takes [\d.]+ MiB\)\. The last good checkpoint is .*checkpoint-4\. .*then: hf-llm train "
                     r".*recipe\.yaml training\.resume_from_checkpoint=true", error[0]), error[0]
    assert sorted(p for p in os.listdir(output_dir) if p.startswith("checkpoint-")) == ["checkpoint-4"]
    assert not [p for p in os.listdir(output_dir) if p.startswith(".")], "no staging folder left behind"
    after = weights(output_dir)  # the finished run's model is untouched
    assert all(torch.equal(after[k], before[k]) for k in before)


def test_too_little_free_space_stops_the_run_before_a_checkpoint_is_written(docs, tmp_path, monkeypatch, capsys):
    """The check before a save (a stand-in file system that reports 1 KiB free once a checkpoint exists)."""
    output_dir = tmp_path / "run"
    real = shutil.disk_usage
    monkeypatch.setattr(shutil, "disk_usage", lambda path: real(path)._replace(free=1024))
    recipe = write_recipe(tmp_path / "r.yaml", "cnn", output_dir, docs, max_steps=12, save_steps=4,
                          save_strategy="steps")
    assert main(["train", recipe]) == 2
    err = capsys.readouterr().err
    assert re.search(r"error: Writing checkpoint-8 failed: .*checked before the save: [\d.]+ MiB needed.*0\.0 MiB "
                     r"free there.*The last good checkpoint is .*checkpoint-4\.", err), err
    assert sorted(p for p in os.listdir(output_dir) if p.startswith("checkpoint-")) == ["checkpoint-4"]


def poison_loss(monkeypatch, at_call: int):
    monkeypatch.setattr(hf_llm.HfLlmForCausalLM, "forward", nan_loss_at(hf_llm.HfLlmForCausalLM.forward, at_call))


def test_a_non_finite_loss_stops_the_run_keeping_the_last_good_checkpoint(docs, tmp_path, monkeypatch, capsys):
    poison_loss(monkeypatch, at_call=7)
    output_dir = tmp_path / "run"
    recipe = write_recipe(tmp_path / "r.yaml", "transformer", output_dir, docs, max_steps=12, save_steps=5,
                          save_strategy="steps")
    assert main(["train", recipe]) == 2
    err = capsys.readouterr().err
    assert re.search(r"error: Non-finite training loss \(nan\) at step 7: training stopped.*checkpoint-5", err), err
    assert sorted(p for p in os.listdir(output_dir) if p.startswith("checkpoint-")) == ["checkpoint-5"]
    assert not (output_dir / "model.safetensors").exists()
    good = weights(output_dir / "checkpoint-5")
    assert all(torch.isfinite(t).all() for t in good.values())


def test_a_non_finite_loss_can_skip_the_step_instead(docs, tmp_path, monkeypatch, caplog):
    poison_loss(monkeypatch, at_call=3)
    output_dir = tmp_path / "run"
    recipe = write_recipe(tmp_path / "r.yaml", "transformer", output_dir, docs, max_steps=6, save_strategy="no",
                          on_nonfinite_loss="skip")
    assert main(["train", recipe]) == 0
    assert all(torch.isfinite(t).all() for t in weights(output_dir).values())
    assert "Non-finite loss (nan) at step 3: step skipped" in caplog.text
    state = json.loads((output_dir / "trainer_state.json").read_text())
    assert state["global_step"] == 6


# --------------------------------------------------------------------------------------------------
def test_using_a_trained_model_never_unpickles(trained_lm, tmp_path, monkeypatch, capsys):
    """generate, eval and average read safetensors only: with pickle loading made to fail, they all work."""
    def refuse(*args, **kwargs):
        raise AssertionError("torch.load was called")

    monkeypatch.setattr(torch, "load", refuse)
    assert main(["generate", str(trained_lm), "Return the", "--max-new-tokens", "3"]) == 0
    assert main(["eval", str(trained_lm)]) == 0
    assert "torch.load was called" not in capsys.readouterr().err


@pytest.mark.parametrize("edit, message", [
    ({"vocab_size": 2000}, "some tensors have other shapes"),
    ({"num_hidden_layers": 3}, "tensors are missing"),
    ({"num_hidden_layers": 1}, "tensors are not used"),
    ({"backbone": "rnn"}, "the config's family or layer count differs"),
])
def test_a_checkpoint_whose_config_and_weights_disagree_fails_clearly(trained_lm, tmp_path, edit, message):
    folder = tmp_path / "edited"
    shutil.copytree(trained_lm, folder)
    config = json.loads((folder / "config.json").read_text())
    config.update(edit)
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=message):
        AutoModelForCausalLM.from_pretrained(folder)
    with pytest.raises(ValueError, match=message):  # the remote-code path runs the same class code
        hf_llm.HfLlmForCausalLM.from_pretrained(folder)


def test_weights_that_fit_still_load_across_heads(trained_lm):
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(trained_lm, num_labels=3)
    lm = AutoModelForCausalLM.from_pretrained(trained_lm)
    torch.testing.assert_close(model.model.decoder.embed_tokens.weight, lm.model.decoder.embed_tokens.weight)


# --------------------------------------------------------------------------------------------------
def test_long_inputs(docs, tmp_path, trained_lm, capsys, caplog):
    # The convolutional family has learned positions: a longer input is a clear error...
    config = hf_llm.HfLlmConfig(backbone="cnn", vocab_size=64, hidden_size=16, num_hidden_layers=1,
                                max_position_embeddings=8)
    model = AutoModelForCausalLM.from_config(config).eval()
    with pytest.raises(ValueError, match="reaches position 8 but this convolutional model has learned positions for 8"):
        model(torch.randint(3, 64, (1, 9)))
    model(torch.randint(3, 64, (1, 8)))
    # ... pretraining blocks beyond the limit are an error, task inputs are truncated with a warning ...
    recipe = write_recipe(tmp_path / "r.yaml", "cnn", tmp_path / "run", docs, max_steps=2)
    assert main(["train", recipe, "model.max_position_embeddings=16", "data.block_size=32"]) == 2
    assert "data.block_size=32 exceeds the model's max_position_embeddings=16" in capsys.readouterr().err
    recipe = write_task_recipe(tmp_path, "translation", "cnn", max_steps=2, data={"max_source_length": 64})
    assert main(["train", recipe, "model.max_position_embeddings=32"]) == 0
    assert "data.max_source_length=64 exceeds max_position_embeddings=32" in caplog.text
    # ... and an over-long prompt keeps its last tokens. The Transformer and the RNN have no limit.
    for family in ("transformer", "rnn"):
        config = hf_llm.HfLlmConfig(backbone=family, vocab_size=64, hidden_size=16, num_hidden_layers=1,
                                    num_attention_heads=2, max_position_embeddings=8)
        AutoModelForCausalLM.from_config(config).eval()(torch.randint(3, 64, (1, 20)))
    trained = tmp_path / "small_cnn"
    assert main(["train", write_recipe(tmp_path / "s.yaml", "cnn", trained, docs, max_steps=2),
                 "model.max_position_embeddings=32"]) == 0
    capsys.readouterr()
    assert main(["generate", str(trained), "word " * 60, "--max-new-tokens", "3", "--no-do-sample"]) == 0
    assert "its last 29 tokens are used" in capsys.readouterr().err + caplog.text
