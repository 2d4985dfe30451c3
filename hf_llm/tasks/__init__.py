"""The tasks a recipe can name, each a `Task` (tasks/base.py) saying what its run needs:

- `causal_lm`: pretraining on text sliced into blocks (perplexity);
- `translation`, `summarization`: `Seq2SeqTrainer`, generated text scored with sacreBLEU/chrF and ROUGE;
- `dialogue`: chats, loss on the assistant turns only (perplexity);
- `classification`: accuracy and macro-F1.
"""

from __future__ import annotations

from ..recipe_schema import RecipeError
from .base import Task
from .causal_lm import CausalLMTask
from .classification import ClassificationTask
from .dialogue import DialogueTask
from .seq2seq import SummarizationTask, TranslationTask

TASKS: dict[str, Task] = {task.name: task for task in (CausalLMTask(), TranslationTask(), SummarizationTask(),
                                                       DialogueTask(), ClassificationTask())}


DEFAULT_TASK = "causal_lm"  # a recipe without `task:`


def get_task(name: str) -> Task:
    """The task of a recipe's `task:` key, or RecipeError listing the tasks."""
    if name not in TASKS:
        raise RecipeError(f"Unknown task {name!r}; tasks are {list(TASKS)}.")
    return TASKS[name]


def task_of_model(config) -> Task:
    """The task a model folder without a recipe was most likely trained for (its model card needs one)."""
    return TASKS["translation"] if config.is_encoder_decoder else TASKS[DEFAULT_TASK]


__all__ = ["DEFAULT_TASK", "TASKS", "Task", "get_task", "task_of_model"]
