"""The data of the `hf_llm_pydoc` task, read from the jsonl file next to this one (lm-evaluation-harness's
`custom_dataset` hook: a task shipped in a package cannot name its data file by a path relative to the
working directory, which is what `dataset_path: json` + `data_files` would need).

Each line: `{"source": "os.path.join", "query": <first half of the docstring's first sentence>, "choices":
[4 endings], "gold": <index of the right one>}`. Made once from the docstrings of 44 functions of Python 3.11's
standard library (the other three choices: endings of other items, drawn with a fixed seed).
"""

from __future__ import annotations

import json
import pathlib

DATA = pathlib.Path(__file__).with_name("pydoc_endings.jsonl")


def load(**metadata):
    """{"test": the items} as a `datasets.DatasetDict` (lm-eval passes the task's metadata; none is used)."""
    import datasets

    rows = [json.loads(line) for line in DATA.read_text(encoding="utf-8").splitlines() if line.strip()]
    return datasets.DatasetDict({"test": datasets.Dataset.from_list(rows)})
