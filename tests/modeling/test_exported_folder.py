"""The exported folder hf_llm/modeling/ is copied flat into checkpoints: it may import only the standard
library, torch, transformers and its siblings (`from .sibling import X`), outside `try:` blocks."""

from __future__ import annotations

import ast
import pathlib
import sys

import hf_llm

MODELING = pathlib.Path(hf_llm.__file__).parent / "modeling"
ALLOWED = {"torch", "transformers", "__future__"} | set(sys.stdlib_module_names)


def import_problems(folder: pathlib.Path) -> list[str]:
    problems = []
    siblings = {f.stem for f in folder.glob("*.py")}
    for path in sorted(folder.glob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        guarded = {id(sub) for node in ast.walk(tree) if isinstance(node, ast.Try) for sub in ast.walk(node)}
        for node in ast.walk(tree):
            if id(node) in guarded:
                continue
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.split(".")[0] not in ALLOWED:
                        problems.append(f"{path.name}:{node.lineno} imports {alias.name}")
            elif isinstance(node, ast.ImportFrom):
                if node.level == 0:
                    if (node.module or "").split(".")[0] not in ALLOWED:
                        problems.append(f"{path.name}:{node.lineno} imports from {node.module}")
                elif node.level != 1 or not node.module or "." in node.module or node.module not in siblings:
                    problems.append(f"{path.name}:{node.lineno} relative import '{'.' * node.level}{node.module or ''}'")
    return problems


def test_exported_folder_imports_only_stdlib_torch_transformers_and_siblings():
    assert sorted(f.name for f in MODELING.glob("*.py"))  # the folder is where we think it is
    assert import_problems(MODELING) == []


def test_the_checker_catches_forbidden_imports(tmp_path):
    (tmp_path / "good.py").write_text("import os\nimport torch\nfrom .other import x\ntry:\n    import numpy\nexcept ImportError:\n    pass\n")
    (tmp_path / "other.py").write_text("x = 1\n")
    (tmp_path / "bad.py").write_text("import numpy\nfrom hf_llm.data import y\nfrom . import other\nfrom ..pkg import z\n")
    problems = import_problems(tmp_path)
    assert len(problems) == 4 and all(p.startswith("bad.py") for p in problems), problems
