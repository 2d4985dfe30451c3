"""Data through `datasets`: local files, Hub datasets, bundled corpora; tokenisation and block slicing.

- `load_raw(data)`: a `DatasetDict` with "train" and "validation" from `data.train_file` /
  `data.validation_file` (text, jsonl/json, csv, parquet), a Hub `data.dataset_name` (streamed when
  `data.streaming`), or a bundled dataset "hf_llm:<name>". Without a validation split,
  `data.validation_split_percentage` of train is carved off (seeded).
- `group_texts`: HF's run_clm slicing of the token stream into blocks of `block_size` (each document
  ends with EOS). With `packing=True` each block also carries `position_ids` that restart at 0 at every
  document start, which every family turns into a boundary: no attention across documents for the
  Transformer, a state reset for the RNN, no receptive field across documents for the CNN.
"""

from __future__ import annotations

import os
from itertools import chain

import datasets
from datasets import Dataset, DatasetDict, IterableDataset

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


def load_raw(data: DataArgs, seed: int = 0) -> DatasetDict:
    """Train and validation splits, as the recipe's data section describes them."""
    for key in ("train_file", "validation_file"):
        path = getattr(data, key)
        if path is not None and os.path.isfile(path) and os.path.getsize(path) == 0:
            raise RecipeError(f"data.{key}: {path} is empty: it holds no examples.")
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
            raw = datasets.load_dataset(data.dataset_name, data.dataset_config, streaming=data.streaming)
            if data.validation_file is not None:
                validation = datasets.load_dataset(builder_for(data.validation_file), data_files={"validation": data.validation_file})
                raw["validation"] = validation["validation"]
    except RecipeError:
        raise
    except (FileNotFoundError, ConnectionError, OSError) as error:
        raise RecipeError(f"Cannot load the data ({data.dataset_name or data.train_file}): {error}") from None
    except (ValueError, StopIteration, datasets.exceptions.DatasetGenerationError) as error:
        raise RecipeError(f"Cannot read the data ({data.train_file or data.dataset_name}): {error}") from None

    if "train" not in raw:
        raise RecipeError(f"The dataset has no 'train' split (splits: {list(raw)}).")
    if "validation" not in raw:
        for alternative in ("valid", "dev", "test"):
            if alternative in raw:
                raw["validation"] = raw[alternative]
                break
    if "validation" not in raw:
        if isinstance(raw["train"], IterableDataset):
            held_out = max(1, int(data.max_eval_samples or 1000))
            raw = DatasetDict(train=raw["train"].skip(held_out), validation=raw["train"].take(held_out))
        else:
            if len(raw["train"]) < 2:
                raise RecipeError("The training data needs at least 2 examples to carve off a validation split.")
            split = raw["train"].train_test_split(test_size=data.validation_split_percentage / 100, seed=seed)
            raw = DatasetDict(train=split["train"], validation=split["test"])
    raw = DatasetDict(train=raw["train"], validation=raw["validation"])
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
