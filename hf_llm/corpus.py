"""The embedded default corpus: documentation text of the installed Python standard library.

Every machine that runs hf_llm has Python, so the default pretraining data need no download: the
docstrings of the standard library's modules, classes and functions (test suites, GUI demos and
`site-packages` excluded) plus the help topics of `pydoc_data`. Documents are exact-deduplicated
(first occurrence wins, files in sorted order) and the validation split is held out *by module*
(modules whose CRC-32 is 0 mod 10: about 7% of the characters), so no module's text is in both splits.

Licence: the text is part of CPython, distributed under the Python Software Foundation License
Version 2 (https://docs.python.org/3/license.html); a model trained on it is not a copy of it, but the
corpus files themselves keep that licence.

The corpus is built on first use (a few seconds) and cached as JSON lines under
`$HF_LLM_CACHE` (default `~/.cache/hf_llm`), one folder per Python version.
"""

from __future__ import annotations

import ast
import json
import os
import pathlib
import sys
import sysconfig
import tempfile
import zlib

NAME = "python_docs"
SKIPPED_PARTS = {"site-packages", "dist-packages", "test", "tests", "idlelib", "tkinter", "turtledemo", "lib2to3",
                 "ensurepip", "venv", "__pycache__"}
MIN_CHARS = 40


def cache_root() -> pathlib.Path:
    return pathlib.Path(os.environ.get("HF_LLM_CACHE", pathlib.Path.home() / ".cache" / "hf_llm"))


def is_validation_module(module: str) -> bool:
    return zlib.crc32(module.encode()) % 10 == 0


def iter_documents():
    """Yield `{"text", "module", "name", "kind"}` for every docstring of the standard library, then pydoc topics."""
    root = pathlib.Path(sysconfig.get_paths()["stdlib"])
    for path in sorted(root.rglob("*.py")):
        relative = path.relative_to(root)
        if SKIPPED_PARTS & set(relative.parts):
            continue
        module = ".".join(relative.with_suffix("").parts).removesuffix(".__init__")
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError, ValueError):
            continue
        yield from _docstrings(tree, module)
    try:
        from pydoc_data.topics import topics
    except ImportError:  # some distributions strip pydoc_data
        topics = {}
    for name in sorted(topics):
        yield {"text": topics[name].strip(), "module": "pydoc_data.topics", "name": name, "kind": "topic"}


def _docstrings(tree: ast.Module, module: str):
    def visit(node, prefix: str):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                name = f"{prefix}.{child.name}" if prefix else child.name
                text = ast.get_docstring(child, clean=True)
                if text:
                    kind = "class" if isinstance(child, ast.ClassDef) else "function"
                    yield {"text": text, "module": module, "name": name, "kind": kind}
                yield from visit(child, name)

    text = ast.get_docstring(tree, clean=True)
    if text:
        yield {"text": text, "module": module, "name": module, "kind": "module"}
    yield from visit(tree, "")


def build() -> dict[str, list[dict]]:
    """All documents of at least MIN_CHARS characters, deduplicated, split by module."""
    seen: set[str] = set()
    splits: dict[str, list[dict]] = {"train": [], "validation": []}
    for document in iter_documents():
        text = document["text"]
        if len(text) < MIN_CHARS or text in seen:
            continue
        seen.add(text)
        splits["validation" if is_validation_module(document["module"]) else "train"].append(document)
    return splits


def corpus_files() -> dict[str, str]:
    """Paths of the cached `train.jsonl` / `validation.jsonl`, building them on first use (atomically)."""
    folder = cache_root() / f"{NAME}-py{sys.version_info.major}.{sys.version_info.minor}"
    files = {split: folder / f"{split}.jsonl" for split in ("train", "validation")}
    if not all(path.exists() for path in files.values()):
        folder.mkdir(parents=True, exist_ok=True)
        for split, documents in build().items():
            with tempfile.NamedTemporaryFile("w", dir=folder, delete=False, suffix=".tmp", encoding="utf-8") as tmp:
                for document in documents:
                    tmp.write(json.dumps(document, ensure_ascii=False) + "\n")
            os.replace(tmp.name, files[split])
    return {split: str(path) for split, path in files.items()}


def load_splits() -> dict[str, list[dict]]:
    """The cached corpus as lists of documents (built on first use)."""
    splits = {}
    for split, path in corpus_files().items():
        with open(path, encoding="utf-8") as f:
            splits[split] = [json.loads(line) for line in f]
    return splits


def describe() -> dict:
    """Sizes of the embedded corpus (documents and characters per split)."""
    splits = build()
    return {
        split: {"documents": len(docs), "characters": sum(len(d["text"]) for d in docs)}
        for split, docs in splits.items()
    }
