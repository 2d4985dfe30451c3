"""The package as a user installs it: a wheel built from the repository carries the recipes, the card template and
the lm-eval tasks, and hf_llm run from that wheel (not from this checkout) finds them. `.ci/run` also installs the
wheel into a fresh virtual environment and trains the quickstart from it."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys
import zipfile

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent


def setuptools_is_new_enough() -> bool:
    try:
        import setuptools
    except ImportError:
        return False
    return int(setuptools.__version__.split(".")[0]) >= 77  # pyproject's build requirement


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> pathlib.Path:
    out = tmp_path_factory.mktemp("wheel")
    command = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(out), str(ROOT)]
    if setuptools_is_new_enough():  # else pip builds in isolation, fetching setuptools from the registry
        command.insert(4, "--no-build-isolation")
    build = subprocess.run(command, capture_output=True, text=True, cwd=out)
    assert build.returncode == 0, build.stderr[-3000:]
    (path,) = out.glob("hf_llm-*.whl")
    return path


def test_the_wheel_holds_every_recipe_and_the_card_template(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    recipes = {p.relative_to(ROOT / "recipes").as_posix() for p in (ROOT / "recipes").rglob("*.yaml")}
    assert {f"hf_llm/recipe_files/{r}" for r in recipes} <= names
    assert "hf_llm/card_templates/hf_llm.md" in names
    tasks = {f"hf_llm/eval_tasks/{p.name}" for p in (ROOT / "hf_llm" / "eval_tasks").iterdir() if p.suffix in
             (".yaml", ".jsonl", ".py")}
    assert "hf_llm/eval_tasks/hf_llm_pydoc.yaml" in tasks and tasks <= names, "the lm-eval tasks and their data"
    assert "hf_llm/modeling/modeling_hf_llm.py" in names and "hf_llm/tasks/base.py" in names
    metadata = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("METADATA"))).decode()
    requires = [line for line in metadata.splitlines() if line.startswith("Requires-Dist:")]
    assert any(" numpy" in line for line in requires), "numpy is imported, so it is declared"
    assert not any(" evaluate" in line for line in requires), "evaluate is not imported, so it is not required"


def test_hf_llm_run_from_the_wheel_lists_and_loads_its_recipes(wheel, tmp_path):
    unpacked = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(unpacked)
    script = (
        "import hf_llm, hf_llm.resources as r, hf_llm.recipes as recipes;"
        "print(hf_llm.__file__);"
        "print(','.join(r.bundled_recipes()));"
        "print(recipes.load_recipe('translation_tiny').task);"
        "print(r.card_template().splitlines()[1])"
    )
    env = {**os.environ, "PYTHONPATH": str(unpacked)}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    where, names, task, card_line = result.stdout.splitlines()
    assert where.startswith(str(unpacked)), "the wheel's hf_llm ran, not this checkout's"
    assert names.split(",") == sorted(p.stem for p in (ROOT / "recipes").glob("*.yaml"))
    assert task == "translation" and card_line == "{{ card_data }}"
