"""Data through `datasets`: local files, Hub datasets, bundled corpora; tokenisation and block slicing.

- `load_raw(data)`: a `DatasetDict` with "train" and "validation" from `data.train_file` /
  `data.validation_file` (text, jsonl/json, csv, parquet), a `data.dataset_name` as datasets reads it — a Hub
  dataset (`data.dataset_config_name`, `data.dataset_revision`), a local folder laid out like one
  (data/train-00000-of-00002.parquet, ...), a `save_to_disk` folder — streamed when `data.streaming`, or a
  bundled dataset "hf_llm:<name>". `data.train_split` / `data.validation_split` pick the splits (any names:
  train_sft / test_sft); without a validation split, `data.validation_split_percentage` of train is carved
  off (seeded). A dataset that needs a loading script (datasets 4 runs none) is a RecipeError saying what
  to use instead.
- `group_texts`: HF's run_clm slicing of the token stream into blocks of `block_size` (each document
  ends with EOS). With `packing=True` each block also carries `position_ids` that restart at 0 at every
  document start, which every family turns into a boundary: no attention across documents for the
  Transformer, a state reset for the RNN, no receptive field across documents for the CNN.
"""

from __future__ import annotations

import os
from itertools import chain

import datasets
from datasets import Dataset, DatasetDict, IterableDataset, IterableDatasetDict

from .recipe_schema import DataArgs, RecipeError

EXTENSIONS = {".txt": "text", ".text": "text", ".json": "json", ".jsonl": "json", ".csv": "csv", ".parquet": "parquet"}


def builder_for(path: str) -> str:
    extension = os.path.splitext(path)[1].lower()
    if extension not in EXTENSIONS:
        raise RecipeError(f"Cannot read {path}: use a .txt, .jsonl/.json, .csv or .parquet file.")
    return EXTENSIONS[extension]


def load_bundled(name: str) -> DatasetDict:
    """Datasets that ship with hf_llm or are built from what the machine has ("hf_llm:<name>")."""
    from . import corpus

    if name == corpus.NAME:
        files = corpus.corpus_files()
        return datasets.load_dataset("json", data_files=files)
    from .demo_data import DEMO_DATASETS, demo_dataset

    if name in DEMO_DATASETS:
        return demo_dataset(name)
    raise RecipeError(f"Unknown bundled dataset 'hf_llm:{name}'; bundled datasets are "
                      f"{['hf_llm:' + corpus.NAME] + ['hf_llm:' + n for n in DEMO_DATASETS]}.")


def load_saved(path: str, streaming: bool = False) -> DatasetDict | IterableDatasetDict | None:
    """A folder written by `DatasetDict.save_to_disk` (it holds dataset_dict.json) or `Dataset.save_to_disk`
    (state.json; its rows become the train split), or None for any other path."""
    if os.path.isfile(os.path.join(path, "dataset_dict.json")):
        raw = datasets.load_from_disk(path)
    elif os.path.isfile(os.path.join(path, "state.json")):
        raw = DatasetDict(train=datasets.load_from_disk(path))
    else:
        return None
    if streaming:
        return IterableDatasetDict({name: split.to_iterable_dataset() for name, split in raw.items()})
    return raw


def load_named(data: DataArgs):
    """`data.dataset_name`: a `save_to_disk` folder, or whatever `datasets.load_dataset` reads (a Hub dataset,
    a local folder laid out like one: data/train-00000-of-00002.parquet, ...)."""
    saved = load_saved(os.path.expanduser(data.dataset_name), data.streaming)
    if saved is not None:
        return saved
    try:
        return datasets.load_dataset(data.dataset_name, data.config_name, revision=data.dataset_revision,
                                     streaming=data.streaming)
    except RuntimeError as error:
        if "scripts are no longer supported" not in str(error):
            raise
        raise RecipeError(
            f"data.dataset_name={data.dataset_name!r} needs a loading script ({error}); datasets "
            f"{datasets.__version__} no longer runs scripts. Use its Parquet conversion where the Hub has one "
            f"(data.dataset_revision=refs/convert/parquet), a copy of the dataset without a script (a Hub dataset of "
            f"Parquet or JSON files), or local files (data.train_file / data.validation_file)."
        ) from None


def select_splits(raw, data: DataArgs, seed: int = 0, validation=None) -> DatasetDict:
    """The recipe's splits under the names the rest of hf_llm uses, "train" and "validation":
    `data.train_split`, and `validation` if given (data.validation_file), else `data.validation_split`
    (default "validation": else the first of "valid", "dev", "test", else `data.validation_split_percentage`
    of train carved off, seeded)."""
    available = list(raw)
    if data.train_split not in raw:
        raise RecipeError(f"data.train_split={data.train_split!r}: the dataset has no such split; its splits are "
                          f"{available}. Set data.train_split (and data.validation_split) to one of them.")
    train = raw[data.train_split]
    if validation is None and data.validation_split in raw:
        validation = raw[data.validation_split]
    elif validation is None and data.validation_split != DataArgs.validation_split:
        raise RecipeError(f"data.validation_split={data.validation_split!r}: the dataset has no such split; its "
                          f"splits are {available}. Set data.validation_split to one of them, or leave it unset to "
                          f"carve data.validation_split_percentage off the train split.")
    elif validation is None:
        alternative = next((name for name in ("valid", "dev", "test") if name in raw and name != data.train_split), None)
        validation = raw[alternative] if alternative is not None else None
    if validation is not None:
        return DatasetDict(train=train, validation=validation)
    if isinstance(train, IterableDataset):
        held_out = max(1, int(data.max_eval_samples or 1000))
        return DatasetDict(train=train.skip(held_out), validation=train.take(held_out))
    if len(train) < 2:
        raise RecipeError("The training data needs at least 2 examples to carve off a validation split.")
    split = train.train_test_split(test_size=data.validation_split_percentage / 100, seed=seed)
    return DatasetDict(train=split["train"], validation=split["test"])


def load_files(paths: list[str], streaming: bool = False):
    """The rows of local files of one format (text, jsonl/json, csv, parquet), all of them, as one split."""
    builders = {builder_for(path) for path in paths}
    if len(builders) > 1:
        raise RecipeError(f"The files {paths} must be of the same format.")
    for path in paths:
        if os.path.isfile(path) and os.path.getsize(path) == 0:
            raise RecipeError(f"{path} is empty: it holds no examples.")
    try:
        return datasets.load_dataset(builders.pop(), data_files={"train": list(paths)}, streaming=streaming)["train"]
    except (ValueError, StopIteration, datasets.exceptions.DatasetGenerationError) as error:
        raise RecipeError(f"Cannot read {paths}: {error}") from None


def load_raw(data: DataArgs, seed: int = 0) -> DatasetDict:
    """Train and validation splits, as the recipe's data section describes them."""
    for key in ("train_file", "validation_file"):
        path = getattr(data, key)
        if path is not None and os.path.isfile(path) and os.path.getsize(path) == 0:
            raise RecipeError(f"data.{key}: {path} is empty: it holds no examples.")
    if data.train_file is not None:
        for key in ("train_split", "validation_split"):
            if getattr(data, key) != getattr(DataArgs, key):
                raise RecipeError(f"data.{key} names a split of data.dataset_name; with data.train_file the files "
                                  f"are the splits (data.validation_file for validation).")
    elif data.validation_file is not None and data.validation_split != DataArgs.validation_split:
        raise RecipeError("data.validation_split and data.validation_file both choose the validation data; give one.")
    validation = None
    try:
        if data.train_file is not None:
            files = {"train": data.train_file}
            if data.validation_file is not None:
                files["validation"] = data.validation_file
            builders = {builder_for(path) for path in files.values()}
            if len(builders) > 1:
                raise RecipeError("data.train_file and data.validation_file must be of the same format.")
            raw = datasets.load_dataset(builders.pop(), data_files=files, streaming=data.streaming)
        elif data.dataset_name.startswith("hf_llm:"):
            raw = load_bundled(data.dataset_name.split(":", 1)[1])
        else:
            raw = load_named(data)
            if data.validation_file is not None:
                validation = datasets.load_dataset(builder_for(data.validation_file),
                                                   data_files={"validation": data.validation_file})["validation"]
    except RecipeError:
        raise
    except (FileNotFoundError, ConnectionError, OSError) as error:
        raise RecipeError(f"Cannot load the data ({data.dataset_name or data.train_file}): {error}") from None
    except (ValueError, StopIteration, datasets.exceptions.DatasetGenerationError) as error:
        raise RecipeError(f"Cannot read the data ({data.train_file or data.dataset_name}): {error}") from None

    raw = select_splits(raw, data, seed, validation)
    if data.max_train_samples is not None:
        raw["train"] = limit(raw["train"], data.max_train_samples)
    if data.max_eval_samples is not None:
        raw["validation"] = limit(raw["validation"], data.max_eval_samples)
    return raw


def limit(split, count: int):
    return split.take(count) if isinstance(split, IterableDataset) else split.select(range(min(count, len(split))))


def column_names(split) -> list[str]:
    names = split.column_names
    if names is None:  # a streamed dataset whose features are unknown until read
        names = list(next(iter(split)).keys())
    return names


def require_columns(raw: DatasetDict, columns: list[str], keys: dict[str, str]) -> None:
    """Every split has the columns; the error names the recipe key that chose the column."""
    for name, split in raw.items():
        available = column_names(split)
        for column in columns:
            if column not in available:
                key = keys.get(column, "data")
                raise RecipeError(
                    f"The {name} data has no column '{column}' (set by {key}); its columns are {available}. "
                    f"Set {key} to one of them."
                )
        if not isinstance(split, IterableDataset) and len(split) == 0:
            raise RecipeError(f"The {name} data is empty: it holds no examples.")


# --------------------------------------------------------------------------------------------------
def group_texts(examples: dict, block_size: int, packing: bool = False) -> dict:
    """Concatenate tokenised documents and cut them into blocks of `block_size` (the remainder is dropped).

    `examples` hold `input_ids` per document (EOS already appended). With `packing`, `position_ids` count
    from 0 inside each document, and the label of each document's first token is -100 (the previous
    document's last token does not learn to predict it).
    """
    ids = list(chain.from_iterable(examples["input_ids"]))
    total = (len(ids) // block_size) * block_size
    blocks = {"input_ids": [ids[i : i + block_size] for i in range(0, total, block_size)]}
    blocks["labels"] = [list(block) for block in blocks["input_ids"]]
    if packing:
        positions = list(chain.from_iterable(range(len(doc)) for doc in examples["input_ids"]))
        blocks["position_ids"] = [positions[i : i + block_size] for i in range(0, total, block_size)]
        for labels, block_positions in zip(blocks["labels"], blocks["position_ids"]):
            for j, position in enumerate(block_positions):
                if position == 0 and j > 0:
                    labels[j] = -100
    return blocks


def tokenize_for_causal_lm(raw: DatasetDict, tokenizer, data: DataArgs) -> DatasetDict:
    """Tokenise the text column (EOS after each document) and slice into blocks; cached by `datasets`."""
    eos = tokenizer.eos_token_id

    def tokenize(batch):
        encoded = tokenizer(batch[data.text_column], add_special_tokens=False)["input_ids"]
        return {"input_ids": [ids + [eos] for ids in encoded]}

    def group(batch):
        return group_texts(batch, data.block_size, data.packing)

    out = {}
    for name, split in raw.items():
        kwargs = {} if isinstance(split, IterableDataset) else {
            "num_proc": data.preprocessing_num_workers, "desc": f"Tokenising {name}"}
        tokenized = split.map(tokenize, batched=True, remove_columns=column_names(split), **kwargs)
        kwargs = {} if isinstance(split, IterableDataset) else {
            "num_proc": data.preprocessing_num_workers, "desc": f"Slicing {name} into blocks of {data.block_size}"}
        out[name] = tokenized.map(group, batched=True, **kwargs)
    blocks = DatasetDict(out)
    for name, split in blocks.items():
        if not isinstance(split, IterableDataset) and len(split) == 0:
            raise RecipeError(
                f"The {name} data holds fewer than data.block_size={data.block_size} tokens, so no block could be "
                "made; lower data.block_size or add text."
            )
    return blocks


def as_dataset(rows: list[dict]) -> Dataset:
    return Dataset.from_list(rows)
