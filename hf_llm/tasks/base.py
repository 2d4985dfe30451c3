"""The Task interface: everything in which one task's run differs from another's.

`hf_llm.train.run` drives every task through one outline — output folder, data, tokenizer, model, lengths,
generation settings, tokenised data, trainer, training, final evaluation, final save — and asks the task at
each step where tasks differ. `hf-llm compare`, the model cards and the recipe checks ask it too, so no code
outside `hf_llm/tasks/` tests a task's name. A task is a plain class with attributes and small methods;
`hf_llm.tasks.TASKS` lists one instance of each.
"""

from __future__ import annotations

from collections.abc import Callable

from transformers import AutoModelForCausalLM, TrainingArguments

from ..models import build_model
from ..recipe_schema import Recipe, RecipeError
from ..trainers import HfLlmTrainer


class Task:
    name: str
    # The recipe: bundled data (runs offline), the default `data.text_column`, the `training` section's class.
    default_dataset: str
    default_text_column = "text"
    arguments_class: type = TrainingArguments
    # True: always an encoder-decoder; False: always decoder-only; None: as the recipe (or checkpoint) says.
    is_encoder_decoder: bool | None = False
    # A tokenizer trained for the run ends every text with EOS (its post-processor), as the task's training
    # sequences do, so that `tokenizer(text)` gives the training ids; False: it adds nothing.
    tokenizer_ends_with_eos = False
    # Trains on a streamed dataset (`data.streaming`: an IterableDataset, read once, no length).
    streams = False
    # `generation.do_sample` when the recipe does not say.
    samples_by_default = False
    # Training: the Trainer class and the checkpoint kept by `load_best_model_at_end` (`metric_for_best_model`).
    trainer_class: type = HfLlmTrainer
    best_metric = "loss"
    reports_perplexity = False  # add `perplexity` (and `init_perplexity`) from the evaluation loss
    # The `data` lengths a model with learned positions must fit; `truncates`: longer inputs are cut (else an error).
    length_keys: tuple[str, ...] = ("max_source_length",)
    truncates = True
    # Reporting: the headline metric (key in the results, display name, higher is better), the model card's
    # metrics (results key, model-index metric type, display name), the card's task name.
    quality: tuple[str, str, bool] = ("eval_loss", "validation loss", False)
    card_metrics: tuple[tuple[str, str, str], ...] = ()
    display_name = ""
    generates_text = True  # inference speed in tokens/s (else examples/s)

    # ---- the run outline, step by step ----
    def check_recipe(self, recipe: Recipe) -> None:
        """Task-specific checks of a recipe, before anything runs (RecipeError)."""
        if recipe.data.streaming and not self.streams:
            raise RecipeError(
                f"data.streaming=true: the {self.name} task reads its training data whole (its columns, labels or "
                f"conversations are checked and mapped in memory), so it cannot stream; set data.streaming=false "
                f"(data.max_train_samples bounds a large dataset). Pretraining (task causal_lm) streams.")

    def check_data(self, recipe: Recipe, raw) -> None:
        """The data has what the task reads (columns, rows), or RecipeError naming the fix."""

    def training_texts(self, recipe: Recipe, raw) -> Callable[[dict], list[str]]:
        """`texts(batch) -> list[str]`: the text of a batch of training rows, for training a tokenizer."""
        column = recipe.data.text_column
        return lambda batch: batch[column]

    def auto_class(self, config):
        """The Auto class of this task's model for a config."""
        return AutoModelForCausalLM

    def build_model(self, recipe: Recipe, tokenizer, raw) -> tuple:
        """(model, warm-start report or None): fresh, from `model.name_or_path`, or warm-started."""
        return build_model(recipe, tokenizer, AutoModelForCausalLM, is_encoder_decoder=self.is_encoder_decoder), None

    def prepare_model(self, recipe: Recipe, model, tokenizer) -> None:
        """Settings saved with the model before training (its generation config, ...)."""

    def tokenize(self, recipe: Recipe, raw, tokenizer, model):
        """The raw splits as model inputs (`input_ids`, `attention_mask`, `labels`)."""
        raise NotImplementedError

    def collator(self, tokenizer, model):
        raise NotImplementedError

    def argument_defaults(self, recipe: Recipe) -> dict:
        """TrainingArguments fields the task sets unless the recipe does (besides `metric_for_best_model`)."""
        return {}

    def compute_metrics(self, recipe: Recipe, tokenizer, eval_dataset) -> Callable | None:
        """The Trainer's `compute_metrics`, or None (loss only)."""
        return None

    def final_evaluation(self, trainer) -> dict:
        """The evaluation of the final (or best) model at the end of a run."""
        return trainer.evaluate()

    def samples(self, recipe: Recipe, model, tokenizer) -> list[str] | None:
        """Texts generated at the end of a run from `generation.prompts` (saved as samples.json), or None."""
        return None

    # ---- reporting ----
    def tokens_per_example(self, recipe: Recipe) -> int:
        """Tokens one training example holds at most (a `--budget tokens=N` counts steps with it)."""
        return getattr(recipe.data, self.length_keys[0])

    def pipeline_tag(self, config) -> str:
        return "text-generation"

    def intended_use(self, config) -> str:
        return ""

    def usage_snippet(self, config, repo_id: str, tokenizer=None) -> str:
        return (f'from transformers import AutoModelForCausalLM, AutoTokenizer\n\n'
                f'tokenizer = AutoTokenizer.from_pretrained("{repo_id}")\n'
                f'model = AutoModelForCausalLM.from_pretrained("{repo_id}", trust_remote_code=True)\n'
                f'inputs = tokenizer("Return the", return_tensors="pt")\n'
                f'print(tokenizer.decode(model.generate(**inputs, max_new_tokens=40)[0]))')

