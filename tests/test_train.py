"""Runs that keep their best: the best checkpoint by the task metric is the final model (and survives
checkpoint rotation and resuming), early stopping, epoch budgets, validation predictions written to
`generated_predictions.txt`, and checkpoint averaging (`hf-llm average`, `training.average_last_checkpoints`).

To make "the metric got worse at the end" certain rather than likely, several tests rank checkpoints by the
validation loss with `greater_is_better: true`: the loss falls as the tiny models learn, so under that
ordering every later evaluation is worse than the first one.
"""

from __future__ import annotations

import json
import os

import pytest
import torch
from helpers import write_task_recipe
from safetensors.torch import load_file
from transformers import (
    AutoModelForSeq2SeqLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    DataCollatorForSeq2Seq,
)

import hf_llm
from hf_llm.cli import main
from hf_llm.data import load_raw
from hf_llm.recipes import load_recipe
from hf_llm.tasks import get_task

# The first evaluation is the best one (see the module docstring).
FIRST_IS_BEST = dict(metric_for_best_model="loss", greater_is_better=True)
KEEP_BEST = dict(save_strategy="steps", save_steps=10, load_best_model_at_end=True, logging_steps=10)


def state(run) -> dict:
    return json.loads((run / "trainer_state.json").read_text())


def same_weights(a, b) -> bool:
    x, y = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    return x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)


def classification_run(tmp_path, *overrides: str, **training) -> int:
    recipe = write_task_recipe(tmp_path, "classification", "transformer", data={"max_train_samples": 320}, **training)
    return main(["train", recipe, *overrides])


def test_the_final_model_is_the_best_checkpoint_not_the_last(tmp_path):
    run = tmp_path / "run"
    assert classification_run(tmp_path, **KEEP_BEST, **FIRST_IS_BEST, max_steps=40) == 0
    trained = state(run)
    assert trained["global_step"] == 40 and trained["best_global_step"] == 10
    assert trained["best_model_checkpoint"] == str(run / "checkpoint-10")
    assert (run / "checkpoint-10").is_dir(), "rotation (save_total_limit=2) kept the best checkpoint"
    assert (run / "checkpoint-40").is_dir(), "... and the last one, for resuming"
    assert same_weights(run, run / "checkpoint-10") and not same_weights(run, run / "checkpoint-40")
    # The reports say which step was kept, and the final evaluation is the best checkpoint's.
    results = json.loads((run / "all_results.json").read_text())
    assert (results["best_step"], results["last_step"]) == (10, 40)
    assert results["metric_for_best_model"] == "eval_loss"
    assert results["eval_loss"] == pytest.approx(results["best_metric"])
    assert json.loads((run / "best_results.json").read_text())["best_model_checkpoint"] == str(run / "checkpoint-10")
    assert "step 10 of 40" in (run / "README.md").read_text(), "the model card names the kept checkpoint"


def test_resuming_from_the_best_checkpoint_keeps_it_the_best(tmp_path):
    # The staged checkpoint's trainer_state.json must record its final path, or the run resumed from it forgets it.
    run = tmp_path / "run"
    assert classification_run(tmp_path, **KEEP_BEST, **FIRST_IS_BEST, max_steps=10) == 0
    saved = json.loads((run / "checkpoint-10" / "trainer_state.json").read_text())
    assert saved["best_model_checkpoint"] == str(run / "checkpoint-10")
    assert classification_run(tmp_path, "training.resume_from_checkpoint=true", **KEEP_BEST, **FIRST_IS_BEST,
                              max_steps=30) == 0
    resumed = state(run)
    assert resumed["global_step"] == 30 and resumed["best_model_checkpoint"] == str(run / "checkpoint-10")
    assert sorted(p for p in os.listdir(run) if p.startswith("checkpoint-")) == ["checkpoint-10", "checkpoint-30"]
    assert same_weights(run, run / "checkpoint-10")


def test_early_stopping_stops_after_patience_evaluations_without_progress(tmp_path):
    assert classification_run(tmp_path, **KEEP_BEST, **FIRST_IS_BEST, max_steps=200, early_stopping_patience=2) == 0
    # Best at step 10; steps 20 and 30 are no better: the second of them stops the run.
    trained = state(tmp_path / "run")
    assert trained["global_step"] == 30 and trained["best_global_step"] == 10


def test_an_epoch_budget_from_the_command_line_replaces_the_recipes_steps(tmp_path):
    # 320 examples, batch 16: 20 steps an epoch; evaluated and saved once an epoch, the best one kept.
    assert classification_run(tmp_path, "training.num_train_epochs=2", save_strategy="epoch",
                              load_best_model_at_end=True, max_steps=120) == 0
    trained = state(tmp_path / "run")
    assert trained["global_step"] == 40 and trained["num_train_epochs"] == 2
    assert [e["epoch"] for e in trained["log_history"] if "eval_f1" in e] == [0, 1.0, 2.0, 2.0]
    assert trained["best_model_checkpoint"] in (str(tmp_path / "run" / "checkpoint-20"), str(tmp_path / "run" / "checkpoint-40"))
    assert same_weights(tmp_path / "run", tmp_path / "run" / os.path.basename(trained["best_model_checkpoint"]))


def test_seq2seq_runs_keep_their_best_and_write_the_predictions_of_it(tmp_path, capsys):
    run = tmp_path / "run"
    recipe = write_task_recipe(tmp_path, "translation", "transformer", **{**KEEP_BEST, "save_steps": 15}, max_steps=30,
                               data={"max_eval_samples": 24})
    assert main(["train", recipe]) == 0
    assert "kept the best checkpoint: step" in capsys.readouterr().out
    trained = state(run)
    assert trained["best_model_checkpoint"] == str(run / f"checkpoint-{trained['best_global_step']}")
    assert same_weights(run, run / f"checkpoint-{trained['best_global_step']}")
    results = json.loads((run / "all_results.json").read_text())
    assert results["metric_for_best_model"] == "eval_bleu" and results["eval_bleu"] == pytest.approx(results["best_metric"])

    lines = (run / "generated_predictions.txt").read_text(encoding="utf-8").split("\n")
    assert lines[-1] == "" and len(lines) - 1 == 24, "one line per validation example"
    model = AutoModelForSeq2SeqLM.from_pretrained(run).eval()
    tokenizer = AutoTokenizer.from_pretrained(run)
    recipe_obj = load_recipe(str(run / "recipe.yaml"))
    raw = load_raw(recipe_obj.data, seed=0)
    validation = get_task(recipe_obj.task).tokenize(recipe_obj, raw, tokenizer, model)["validation"]
    batch = DataCollatorForSeq2Seq(tokenizer, model=model)([{"input_ids": r["input_ids"], "attention_mask": r["attention_mask"]}
                                                            for r in validation])
    with torch.no_grad():
        generated = model.generate(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    expected = [" ".join(t.strip().splitlines()) for t in tokenizer.batch_decode(generated, skip_special_tokens=True)]
    assert lines[:-1] == expected

    # `hf-llm eval` says which checkpoint the folder holds.
    assert main(["eval", str(run)]) == 0
    evaluated = json.loads(capsys.readouterr().out)
    assert evaluated["best_step"] == trained["best_global_step"]
    assert evaluated["eval_bleu"] == pytest.approx(results["eval_bleu"])


# --------------------------------------------------------------------------------------------------
# Averaging
def fake_run(root, steps=(10, 20, 30), hidden_size=32) -> tuple:
    """A run folder with a final model and checkpoints of random weights (tiny seq2seq models)."""
    from hf_llm.tokenizer import train_tokenizer

    tokenizer = train_tokenizer(["we see three red cars", "nous voyons trois voitures rouges"] * 20, vocab_size=300,
                                min_frequency=1)
    config = hf_llm.HfLlmConfig(is_encoder_decoder=True, decoder_start_token_id=1, vocab_size=len(tokenizer),
                                hidden_size=hidden_size, num_hidden_layers=1, num_attention_heads=4, intermediate_size=64)
    run = root / "run"
    for seed, folder in enumerate([run] + [run / f"checkpoint-{s}" for s in steps]):
        torch.manual_seed(seed)
        AutoModelForSeq2SeqLM.from_config(config).save_pretrained(folder)
        tokenizer.save_pretrained(folder)
    return run, tokenizer


def test_average_writes_the_mean_of_the_last_checkpoints_as_a_loadable_model(tmp_path, capsys):
    run, tokenizer = fake_run(tmp_path)
    before = (run / "model.safetensors").read_bytes()
    assert main(["average", str(run), "--last", "2"]) == 0
    out = run / "average-last-2"
    assert str(out) in capsys.readouterr().out
    a, b = load_file(run / "checkpoint-20" / "model.safetensors"), load_file(run / "checkpoint-30" / "model.safetensors")
    averaged = load_file(out / "model.safetensors")
    assert averaged.keys() == a.keys()
    for name in a:
        torch.testing.assert_close(averaged[name], (a[name] + b[name]) / 2)
    assert not torch.equal(averaged["model.encoder.embed_tokens.weight"], b["model.encoder.embed_tokens.weight"])
    assert (run / "model.safetensors").read_bytes() == before, "the run's own model is untouched"
    assert json.loads((out / "averaged_checkpoints.json").read_text())["steps"] == [20, 30]
    model = AutoModelForSeq2SeqLM.from_pretrained(out).eval()
    assert torch.equal(model.state_dict()["model.encoder.embed_tokens.weight"], averaged["model.encoder.embed_tokens.weight"])
    ids = torch.tensor([tokenizer("we see", add_special_tokens=False)["input_ids"] + [2]])
    assert model.generate(ids, max_new_tokens=3).shape[0] == 1
    assert AutoTokenizer.from_pretrained(out).get_vocab() == tokenizer.get_vocab()
    assert not [p for p in os.listdir(run) if p.startswith(".average-")], "no staging folder left behind"
    # Asked to, it replaces the run's own weights.
    assert main(["average", str(run), "--last", "2", "--output", str(run)]) == 0
    assert load_file(run / "model.safetensors").keys() == averaged.keys()
    assert all(torch.equal(load_file(run / "model.safetensors")[k], averaged[k]) for k in averaged)
    assert not [p for p in os.listdir(run) if p.startswith(".average-")]


@pytest.mark.parametrize("case", ["too few", "shapes differ", "no run", "output exists", "last 1"])
def test_average_refuses_bad_inputs_with_one_error_line(case, tmp_path, capsys):
    run, _ = fake_run(tmp_path)
    arguments = ["average", str(run), "--last", "3"]
    if case == "too few":
        arguments[-1] = "4"
        message = "holds 3 checkpoint-* folders (checkpoint-10, checkpoint-20, checkpoint-30); averaging the last 4 needs 4"
    elif case == "shapes differ":
        other, _ = fake_run(tmp_path / "other", steps=(20,), hidden_size=48)
        os.replace(other / "checkpoint-20", run / "checkpoint-25")
        message = "has shape"
    elif case == "no run":
        arguments[1] = str(tmp_path / "nowhere")
        message = "Run folder not found"
    elif case == "output exists":
        (tmp_path / "taken").mkdir()
        (tmp_path / "taken" / "file").write_text("x")
        arguments += ["--output", str(tmp_path / "taken")]
        message = "already exists and is not empty"
    else:
        arguments[-1] = "1"
        message = "--last must be at least 2"
    capsys.readouterr()
    assert main(arguments) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and len(err.strip().splitlines()) == 1, err
    assert not (run / "average-last-3").exists() and not (run / "average-last-4").exists()


def test_a_run_can_average_its_last_checkpoints_at_the_end(tmp_path, capsys):
    run = tmp_path / "run"
    assert classification_run(tmp_path, **KEEP_BEST, max_steps=40, save_total_limit=4, average_last_checkpoints=3) == 0
    results = json.loads((run / "all_results.json").read_text())
    assert results["averaged_model"] == str(run / "average-last-3")
    assert results["averaged_checkpoints"] == ["checkpoint-20", "checkpoint-30", "checkpoint-40"]
    assert "averaged_eval_f1" in results and "averaged_eval_f1" in capsys.readouterr().out
    model = AutoModelForSequenceClassification.from_pretrained(run / "average-last-3")
    expected = load_file(run / "checkpoint-40" / "model.safetensors")["score.weight"]
    for step in (20, 30):
        expected = expected + load_file(run / f"checkpoint-{step}" / "model.safetensors")["score.weight"]
    torch.testing.assert_close(model.score.weight, expected / 3)
