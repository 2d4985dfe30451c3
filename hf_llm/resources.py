"""The files hf_llm ships besides its code: the bundled recipes, the model-card template and the
lm-evaluation-harness tasks.

They live at the top of the repository (`recipes/`, `model_cards/`), where the project's layout puts them, and
setuptools maps those folders into the package as `hf_llm.recipe_files` and `hf_llm.card_templates`
(pyproject.toml, `[tool.setuptools.package-dir]`), so a wheel or `pip install .` carries them and they are read
with `importlib.resources`, wherever the package is installed. A source checkout used without installing
(`PYTHONPATH=.`) has no such packages; then the folders next to the `hf_llm/` directory are read. The harness
tasks live inside the package (`hf_llm/eval_tasks/`), since lm-eval reads them from a folder on disk.
"""

from __future__ import annotations

import importlib.resources
import pathlib
from importlib.resources.abc import Traversable

_CHECKOUT = pathlib.Path(__file__).resolve().parent.parent  # the repository, for an uninstalled checkout


def _folder(package: str, checkout_folder: str) -> Traversable:
    try:
        return importlib.resources.files(package)
    except ModuleNotFoundError:
        return _CHECKOUT / checkout_folder


def recipes_folder() -> Traversable:
    """The bundled recipes (`recipes/*.yaml`, and `accelerate/` launch configs)."""
    return _folder("hf_llm.recipe_files", "recipes")


def bundled_recipes() -> dict[str, Traversable]:
    """Bundled recipe name -> file, sorted by name (`quickstart` -> recipes/quickstart.yaml)."""
    folder = recipes_folder()
    files = [f for f in folder.iterdir() if f.is_file() and f.name.endswith(".yaml")] if folder.is_dir() else []
    return {f.name[: -len(".yaml")]: f for f in sorted(files, key=lambda f: f.name)}


def card_template() -> str:
    """The model-card template's text (`model_cards/hf_llm.md`)."""
    return _folder("hf_llm.card_templates", "model_cards").joinpath("hf_llm.md").read_text(encoding="utf-8")


def eval_tasks_folder() -> pathlib.Path:
    """The folder of hf_llm's lm-evaluation-harness tasks, for `lm_eval --include_path` (`hf_llm/eval_tasks/`)."""
    return pathlib.Path(__file__).resolve().parent / "eval_tasks"
