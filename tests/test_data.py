"""Data: file formats, validation carve-off, block slicing, document-aware packing, the embedded corpus."""

from __future__ import annotations

import json

import pytest
import torch
from cases import LM_CASES
from helpers import assert_logits_close, make_lm, random_ids

from hf_llm import corpus
from hf_llm.data import group_texts, load_raw, require_columns
from hf_llm.recipes import DataArgs, RecipeError


def write_rows(path, rows):
    if path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    elif path.suffix == ".txt":
        path.write_text("".join(r["text"] + "\n" for r in rows))
    elif path.suffix == ".csv":
        import csv

        with open(path, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    elif path.suffix == ".parquet":
        import pandas as pd

        pd.DataFrame(rows).to_parquet(path)
    return str(path)


ROWS = [{"text": f"document number {i} says hello"} for i in range(40)]


@pytest.mark.parametrize("suffix", [".jsonl", ".txt", ".csv", ".parquet"])
def test_local_files_of_every_format_load_with_a_carved_validation_split(tmp_path, suffix):
    path = write_rows(tmp_path / f"train{suffix}", ROWS)
    raw = load_raw(DataArgs(train_file=path, validation_split_percentage=10))
    assert (len(raw["train"]), len(raw["validation"])) == (36, 4)
    texts = set(raw["train"]["text"]) | set(raw["validation"]["text"])
    assert texts == {r["text"] for r in ROWS}, "the split partitions the data"


def test_a_given_validation_file_is_used_as_is(tmp_path):
    train = write_rows(tmp_path / "train.jsonl", ROWS)
    valid = write_rows(tmp_path / "valid.jsonl", ROWS[:3])
    raw = load_raw(DataArgs(train_file=train, validation_file=valid))
    assert len(raw["train"]) == 40 and raw["validation"]["text"] == [r["text"] for r in ROWS[:3]]


def test_missing_column_and_empty_data_are_clear_errors(tmp_path):
    raw = load_raw(DataArgs(train_file=write_rows(tmp_path / "t.jsonl", [{"body": "x y"}] * 10)))
    with pytest.raises(RecipeError, match=r"The train data has no column 'text' \(set by data.text_column\); "
                                          r"its columns are \['body'\]"):
        require_columns(raw, ["text"], {"text": "data.text_column"})
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(RecipeError, match="empty|at least 2 examples|Cannot read"):
        load_raw(DataArgs(train_file=str(empty)))
    (tmp_path / "t.xml").write_text("<doc/>")
    with pytest.raises(RecipeError, match="use a .txt, .jsonl/.json, .csv or .parquet file"):
        load_raw(DataArgs(train_file=str(tmp_path / "t.xml")))


def test_group_texts_slices_the_stream_into_full_blocks():
    docs = {"input_ids": [[1, 2, 3, 9], [4, 5, 9], [6, 7, 8, 10, 11, 9]]}
    blocks = group_texts(docs, block_size=4)
    assert blocks["input_ids"] == [[1, 2, 3, 9], [4, 5, 9, 6], [7, 8, 10, 11]]  # remainder [9] dropped
    assert blocks["labels"] == blocks["input_ids"]
    assert "position_ids" not in blocks


def test_packing_restarts_positions_at_each_document_and_masks_the_cross_document_label():
    docs = {"input_ids": [[1, 2, 3, 9], [4, 5, 9], [6, 7, 8, 10, 11, 9]]}
    blocks = group_texts(docs, block_size=4, packing=True)
    assert blocks["position_ids"] == [[0, 1, 2, 3], [0, 1, 2, 0], [1, 2, 3, 4]]
    assert blocks["labels"] == [[1, 2, 3, 9], [4, 5, 9, -100], [7, 8, 10, 11]]


@pytest.mark.parametrize("case", LM_CASES)
def test_nothing_crosses_a_packed_document_boundary(case):
    """Two documents packed in one row give the logits each gives alone: no attention (Transformer),
    no state (RNN) and no receptive field (CNN) crosses the boundary."""
    model = make_lm(case)
    first, second = random_ids(1, 5, seed=70)[0], random_ids(1, 7, seed=71)[0]
    packed = torch.cat([first, second])[None]
    positions = torch.cat([torch.arange(5), torch.arange(7)])[None]
    with torch.no_grad():
        together = model(packed, position_ids=positions).logits
        alone_first = model(first[None]).logits
        alone_second = model(second[None]).logits
        unpacked = model(packed).logits  # without the boundary the second document sees the first
    assert_logits_close(together[:, :5], alone_first)
    assert_logits_close(together[:, 5:], alone_second)
    assert not torch.allclose(unpacked[:, 5:], alone_second, atol=1e-3)


def test_embedded_corpus_is_deduplicated_and_split_by_module():
    splits = corpus.build()
    train_modules = {d["module"] for d in splits["train"]}
    valid_modules = {d["module"] for d in splits["validation"]}
    assert not train_modules & valid_modules
    texts = [d["text"] for split in splits.values() for d in split]
    assert len(texts) == len(set(texts))
    assert len(splits["train"]) > 1000 and len(splits["validation"]) > 100
    assert all(len(t) >= corpus.MIN_CHARS for t in texts)
    files = corpus.corpus_files()
    with open(files["validation"]) as f:
        assert sum(1 for _ in f) == len(splits["validation"])


# --------------------------------------------------------------------------------------------------
# Datasets as they are on the Hub, laid out locally (no network): sharded Parquet files under data/,
# configurations declared in the README, custom split names, save_to_disk folders, loading scripts.
def write_parquet(path, rows, features=None):
    from datasets import Dataset

    path.parent.mkdir(parents=True, exist_ok=True)
    Dataset.from_list(rows, features=features).to_parquet(str(path))


def hub_folder(tmp_path, splits: dict[str, list[list[dict]]]):
    """A dataset folder as the Hub lays one out: data/<split>-0000i-of-0000n.parquet for each shard."""
    folder = tmp_path / "hub_dataset"
    for split, shards in splits.items():
        for i, rows in enumerate(shards):
            write_parquet(folder / "data" / f"{split}-{i:05d}-of-{len(shards):05d}.parquet", rows)
    return str(folder)


def test_a_folder_laid_out_like_the_hub_loads_every_shard_and_names_its_splits(tmp_path):
    folder = hub_folder(tmp_path, {"train": [ROWS[:10], ROWS[10:30]], "validation": [ROWS[30:]]})
    raw = load_raw(DataArgs(dataset_name=folder, train_split="train", validation_split="validation"))
    assert sorted(raw["train"]["text"]) == sorted(r["text"] for r in ROWS[:30]), "both train shards"
    assert raw["validation"]["text"] == [r["text"] for r in ROWS[30:]], "the validation split as it is"
    with pytest.raises(RecipeError, match=r"data.train_split='train_sft': the dataset has no such split; its "
                                          r"splits are \['train', 'validation'\]"):
        load_raw(DataArgs(dataset_name=folder, train_split="train_sft"))
    with pytest.raises(RecipeError, match=r"data.validation_split='dev': the dataset has no such split"):
        load_raw(DataArgs(dataset_name=folder, validation_split="dev"))
    with pytest.raises(RecipeError, match=r"data.train_split names a split of data.dataset_name"):
        load_raw(DataArgs(train_file=write_rows(tmp_path / "t.jsonl", ROWS), train_split="train_sft"))


def test_custom_split_names_are_chosen_by_the_split_keys(tmp_path):
    """HuggingFaceH4/ultrachat_200k's layout: train_sft / test_sft, no 'train' split."""
    folder = hub_folder(tmp_path, {"train_sft": [ROWS[:30]], "test_sft": [ROWS[30:]]})
    with pytest.raises(RecipeError, match=r"data.train_split='train'.*splits are \['test_sft', 'train_sft'\]"):
        load_raw(DataArgs(dataset_name=folder))
    raw = load_raw(DataArgs(dataset_name=folder, train_split="train_sft", validation_split="test_sft"))
    assert (len(raw["train"]), raw["validation"]["text"]) == (30, [r["text"] for r in ROWS[30:]])
    # Without a validation split named, today's fallbacks: "valid", "dev", "test", else a carved-off share.
    carved = load_raw(DataArgs(dataset_name=folder, train_split="train_sft", validation_split_percentage=10))
    assert (len(carved["train"]), len(carved["validation"])) == (27, 3)
    with_test = hub_folder(tmp_path / "t", {"train": [ROWS[:30]], "test": [ROWS[30:]]})
    assert load_raw(DataArgs(dataset_name=with_test))["validation"]["text"] == [r["text"] for r in ROWS[30:]]


def test_a_configuration_is_chosen_by_dataset_config_name_or_its_alias(tmp_path):
    folder = tmp_path / "pairs"
    for config, rows in (("en-fr", ROWS[:10]), ("en-de", ROWS[10:40])):
        write_parquet(folder / config / "train-00000-of-00001.parquet", rows)
    (folder / "README.md").write_text(
        "---\nconfigs:\n" + "".join(f"- config_name: {c}\n  data_files:\n  - split: train\n    path: {c}/train-*\n"
                                    for c in ("en-fr", "en-de")) + "---\n")
    for key in ("dataset_config_name", "dataset_config"):
        raw = load_raw(DataArgs(dataset_name=str(folder), **{key: "en-de"}, validation_split_percentage=10))
        assert len(raw["train"]) + len(raw["validation"]) == 30, key
    assert len(load_raw(DataArgs(dataset_name=str(folder), dataset_config_name="en-fr",
                                 dataset_config="en-fr"))["train"]) == 9
    with pytest.raises(RecipeError, match=r"data.dataset_config_name='en-fr' and data.dataset_config='en-de' name "
                                          r"two configurations; give one"):
        DataArgs(dataset_name=str(folder), dataset_config_name="en-fr", dataset_config="en-de")
    with pytest.raises(RecipeError, match=r"Config name is missing"):
        load_raw(DataArgs(dataset_name=str(folder)))


def test_save_to_disk_folders_load_with_their_splits(tmp_path):
    from datasets import Dataset, DatasetDict, IterableDataset

    DatasetDict(train_sft=Dataset.from_list(ROWS[:30]), test_sft=Dataset.from_list(ROWS[30:])).save_to_disk(
        str(tmp_path / "saved_dict"))
    raw = load_raw(DataArgs(dataset_name=str(tmp_path / "saved_dict"), train_split="train_sft", validation_split="test_sft"))
    assert (len(raw["train"]), len(raw["validation"])) == (30, 10)
    streamed = load_raw(DataArgs(dataset_name=str(tmp_path / "saved_dict"), train_split="train_sft",
                                 validation_split="test_sft", streaming=True))
    assert isinstance(streamed["train"], IterableDataset)
    assert [row["text"] for row in streamed["validation"]] == [r["text"] for r in ROWS[30:]]
    Dataset.from_list(ROWS).save_to_disk(str(tmp_path / "saved_one"))  # one Dataset: its rows are the train split
    raw = load_raw(DataArgs(dataset_name=str(tmp_path / "saved_one"), validation_split_percentage=10))
    assert (len(raw["train"]), len(raw["validation"])) == (36, 4)


def test_a_dataset_that_needs_a_loading_script_is_one_clear_error(tmp_path, monkeypatch):
    """The Hub keeps a script dataset as <name>/<name>.py (iwslt2017/iwslt2017.py); datasets 4 runs none."""
    folder = tmp_path / "iwslt2017"
    folder.mkdir()
    (folder / "iwslt2017.py").write_text("import datasets\n\nclass Iwslt2017(datasets.GeneratorBasedBuilder):\n    pass\n")
    monkeypatch.chdir(tmp_path)
    for streaming in (False, True):
        with pytest.raises(RecipeError, match=r"data.dataset_name='iwslt2017' needs a loading script .*"
                                              r"data.dataset_revision=refs/convert/parquet.*data.train_file"):
            load_raw(DataArgs(dataset_name="iwslt2017", dataset_config_name="iwslt2017-en-fr", streaming=streaming))
