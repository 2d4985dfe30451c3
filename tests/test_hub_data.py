"""Runs on datasets laid out as they are on the Hub (local folders, offline): a streamed dataset whose run trains
its own tokenizer from the stream, a ClassLabel column whose names become the classifier's labels, and
`hf-llm tokenizer train --files` over several files."""

from __future__ import annotations

import json

import pytest
from datasets import ClassLabel, Dataset, Features, Value
from helpers import write_task_recipe
from transformers import AutoConfig, AutoTokenizer, pipeline

from hf_llm.cli import main
from hf_llm.data import load_raw
from hf_llm.recipes import load_recipe


def write_hub_folder(folder, splits: dict[str, list[dict]], features=None, shards: int = 2) -> str:
    """data/<split>-0000i-of-0000n.parquet, as the Hub stores a dataset (the train split in `shards` files)."""
    (folder / "data").mkdir(parents=True)
    for split, rows in splits.items():
        count = shards if split == "train" else 1
        for i in range(count):
            part = Dataset.from_list(rows[i::count], features=features)
            part.to_parquet(str(folder / "data" / f"{split}-{i:05d}-of-{count:05d}.parquet"))
    return str(folder)


def read_jsonl(path) -> list[dict]:
    with open(path) as f:
        return [{"text": json.loads(line)["text"]} for line in f]


def test_a_streamed_run_trains_its_tokenizer_from_the_stream(docs, tmp_path):
    folder = write_hub_folder(tmp_path / "stream", {"train": read_jsonl(docs["train"])[:200],
                                                    "validation": read_jsonl(docs["validation"])[:20]})
    recipe = write_task_recipe(tmp_path, "causal_lm", "transformer", max_steps=2, data={
        "dataset_name": folder, "streaming": True, "max_train_samples": None, "max_eval_samples": 8,
        "block_size": 32}, per_device_train_batch_size=2, per_device_eval_batch_size=4)
    assert main(["train", recipe]) == 0
    run = tmp_path / "run"
    state = json.loads((run / "trainer_state.json").read_text())
    assert state["global_step"] == 2
    tokenizer = AutoTokenizer.from_pretrained(run)
    assert 300 < len(tokenizer) <= 500, "a BPE trained on the streamed text (vocab_size 500)"
    # tokenizer.max_training_documents bounds what is read from a stream
    raw = load_raw(load_recipe(recipe, ["tokenizer.max_training_documents=5"]).data)
    from hf_llm.tokenizer import first_batches

    assert sum(len(batch["text"]) for batch in first_batches(raw["train"], 5, batch_size=2)) == 5


def test_class_label_names_become_the_model_labels(tmp_path):
    names = ["positive", "negative"]  # the dataset's own order, not sorted
    features = Features({"text": Value("string"), "label": ClassLabel(names=names)})
    rows = [{"text": f"{word} film number {i}", "label": label}
            for i in range(40) for word, label in (("wonderful", 0), ("awful", 1))]
    folder = write_hub_folder(tmp_path / "sentiment", {"train": rows[:64], "validation": rows[64:]}, features)
    recipe = write_task_recipe(tmp_path, "classification", "transformer", max_steps=3,
                               data={"dataset_name": folder, "max_train_samples": None})
    assert main(["train", recipe]) == 0
    config = AutoConfig.from_pretrained(tmp_path / "run")
    assert config.id2label == {0: "positive", 1: "negative"}
    assert config.label2id == {"positive": 0, "negative": 1}
    classify = pipeline("text-classification", model=str(tmp_path / "run"))
    assert classify("wonderful film")[0]["label"] in names
    card = (tmp_path / "run" / "README.md").read_text()
    assert "a local dataset folder (sentiment)" in card and "huggingface.co/datasets//" not in card


def test_unlabelled_class_label_rows_are_a_clear_error(tmp_path, capsys):
    features = Features({"text": Value("string"), "label": ClassLabel(names=["a", "b"])})
    rows = [{"text": f"text {i}", "label": i % 2} for i in range(20)]
    folder = write_hub_folder(tmp_path / "glue_like", {"train": rows, "test": [{"text": "x", "label": -1}] * 4},
                              features)
    recipe = write_task_recipe(tmp_path, "classification", "transformer", max_steps=1,
                               data={"dataset_name": folder, "max_train_samples": None})
    assert main(["train", recipe]) == 2
    assert "holds [-1], outside its ClassLabel ids 0..1" in capsys.readouterr().err


def test_tokenizer_train_reads_every_file(tmp_path, capsys):
    first, second = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    first.write_text("".join(json.dumps({"text": f"plain words number {i}"}) + "\n" for i in range(50)))
    second.write_text("".join(json.dumps({"text": f"zyxwvutsrq {i}"}) + "\n" for i in range(50)))
    out = tmp_path / "tok"
    assert main(["tokenizer", "train", "--files", str(first), str(second), "--vocab-size", "400",
                 "--output", str(out)]) == 0
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert tokenizer.tokenize("zyxwvutsrq") == ["zyxwvutsrq"], "the second file's word was learned"
    assert tokenizer.tokenize("plain") == ["plain"]


@pytest.mark.parametrize("files, message", [(["a.jsonl", "b.csv"], "must be of the same format")])
def test_tokenizer_train_files_of_two_formats_are_an_error(tmp_path, capsys, files, message):
    for name in files:
        (tmp_path / name).write_text('{"text": "x"}\n' if name.endswith(".jsonl") else "text\nx\n")
    assert main(["tokenizer", "train", "--files", *[str(tmp_path / n) for n in files], "--output",
                 str(tmp_path / "tok")]) == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("task", ["translation", "summarization", "dialogue", "classification"])
def test_tasks_that_read_their_data_whole_refuse_streaming_clearly(task, tmp_path):
    from hf_llm.recipes import RecipeError

    recipe = write_task_recipe(tmp_path, task, "transformer", data={"streaming": True})
    with pytest.raises(RecipeError, match=rf"data.streaming=true: the {task} task reads its training data whole"):
        load_recipe(recipe)
