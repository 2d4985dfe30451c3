"""The package's floor plan (docs/ARCHITECTURE.md, "Package layout"): every import points to the same floor or
below, no import circle, no family name tested outside hf_llm/modeling/, no task name tested outside
hf_llm/tasks/. Imports inside functions count like the others."""

from __future__ import annotations

import ast
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / "hf_llm"

# Module -> floor. A module may import from its own floor or a lower one.
FLOORS = {
    "modeling": 0,
    "presets": 1, "corpus": 1, "gettext_corpus": 1, "demo_data": 1, "recipe_schema": 1, "data": 1, "tokenizer": 1,
    "models": 1, "trainers": 1, "outputs": 1, "inference": 1, "averaging": 1, "pipelines": 1, "resources": 1,
    "eval_tasks": 1, "eval_tasks.pydoc_data": 1, "adapters": 1, "hf_llm": 1,
    "tasks": 2, "tasks.base": 2, "tasks.causal_lm": 2, "tasks.seq2seq": 2, "tasks.dialogue": 2,
    "tasks.classification": 2, "tasks.metrics": 2,
    "recipes": 3, "cards": 3, "train": 3,
    "evaluation": 4, "hub": 4, "compare": 4, "serving": 4,
    "cli": 5,
}
FAMILIES = {"transformer", "rnn", "cnn"}
TASK_NAMES = {"causal_lm", "translation", "summarization", "dialogue", "classification"}


def module_name(path: pathlib.Path, package: pathlib.Path) -> str:
    parts = list(path.relative_to(package).with_suffix("").parts)
    if parts[0] == "modeling":
        return "modeling"
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts) or "hf_llm"


def imports_of(path: pathlib.Path, package: pathlib.Path) -> set[str]:
    """The hf_llm modules a file imports (as FLOORS names), at module level or inside functions."""
    name = module_name(path, package)
    here = path.relative_to(package).parent.parts  # the file's package, below hf_llm
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = list(here[: len(here) - node.level + 1])
                targets = [".".join(base + [node.module])] if node.module else [".".join(base + [a.name]) for a in node.names]
            elif node.module and node.module.startswith("hf_llm"):
                targets = [node.module.removeprefix("hf_llm").lstrip(".")]
            else:
                continue
        elif isinstance(node, ast.Import):
            targets = [a.name.removeprefix("hf_llm").lstrip(".") for a in node.names if a.name.startswith("hf_llm")]
        else:
            continue
        for target in targets:
            target = "modeling" if target.startswith("modeling") else (target or "hf_llm")
            if target != name:
                found.add(target)
    return found


def import_graph(package: pathlib.Path = PACKAGE) -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for path in sorted(package.rglob("*.py")):
        graph.setdefault(module_name(path, package), set()).update(imports_of(path, package))
    return graph


def cycles(graph: dict[str, set[str]]) -> list[tuple[str, str]]:
    """Import edges a -> b from which a is reachable again (the package __init__, imported only so that the Auto
    classes are registered, is left out)."""
    def reaches(start: str, goal: str) -> bool:
        seen, todo = set(), [start]
        while todo:
            node = todo.pop()
            for nxt in graph.get(node, ()):
                if nxt == goal:
                    return True
                if nxt not in seen and nxt != "hf_llm":
                    seen.add(nxt)
                    todo.append(nxt)
        return False

    return sorted((a, b) for a, deps in graph.items() for b in deps if "hf_llm" not in (a, b) and reaches(b, a))


def name_tests(package: pathlib.Path, names: set[str], outside: str) -> list[str]:
    """`file:line` of every comparison (==, !=, in, not in) with one of `names` as a string literal, in the
    package's files outside the folder `outside` (and presets.py)."""
    hits = []
    for path in sorted(package.rglob("*.py")):
        relative = path.relative_to(package)
        if relative.parts[0] == outside or relative.name == "presets.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Compare):
                continue
            for operand in [node.left, *node.comparators]:
                values = operand.elts if isinstance(operand, (ast.Tuple, ast.List, ast.Set)) else [operand]
                if any(isinstance(v, ast.Constant) and v.value in names for v in values):
                    hits.append(f"{relative}:{node.lineno}")
    return hits


def test_every_module_has_a_floor():
    assert sorted(set(import_graph()) - set(FLOORS)) == []


def test_imports_point_down_or_sideways():
    upward = [f"{a} (floor {FLOORS[a]}) imports {b} (floor {FLOORS[b]})" for a, deps in import_graph().items()
              for b in deps if FLOORS.get(b, 0) > FLOORS.get(a, 0)]
    assert upward == []


def test_no_import_circle():
    assert cycles(import_graph()) == []


def test_no_family_name_tested_outside_the_models():
    assert name_tests(PACKAGE, FAMILIES, "modeling") == []


def test_no_task_name_tested_outside_the_tasks():
    assert name_tests(PACKAGE, TASK_NAMES, "tasks") == []


@pytest.mark.parametrize("check", ["cycle", "family", "task"])
def test_the_checks_find_what_they_look_for(tmp_path, check):
    """Each check fails on a small package that breaks its rule (so a pass above means something)."""
    package = tmp_path / "hf_llm"
    (package / "tasks").mkdir(parents=True)
    (package / "tasks" / "__init__.py").write_text("from ..train import run\n")
    (package / "train.py").write_text(
        "from .tasks import TASKS\n"
        "def run(recipe, config):\n"
        "    if recipe.task == 'translation':\n        pass\n"
        "    if 'cnn' in config.used_backbones() or config.backbone in ('rnn', 'x'):\n        pass\n"
    )
    if check == "cycle":
        assert cycles(import_graph(package)) == [("tasks", "train"), ("train", "tasks")]
    elif check == "family":
        assert name_tests(package, FAMILIES, "modeling") == ["train.py:5", "train.py:5"]
    else:
        assert name_tests(package, TASK_NAMES, "tasks") == ["train.py:3"]
