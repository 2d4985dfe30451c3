"""Sequence classification (semantic analysis): `text` / `label` columns, accuracy and macro-F1.

Labels (strings or integers) are mapped to ids in sorted order of the training labels and saved in the
config as `id2label` / `label2id`, so predictions come back as names.
"""

from __future__ import annotations

import numpy as np
from transformers import AutoModelForSequenceClassification, DataCollatorWithPadding

from ..data import require_columns
from ..models import build_model
from ..recipe_schema import Recipe, RecipeError
from .base import Task
from .metrics import classification_metrics


def label_mapping(raw, column: str) -> dict[str, int]:
    """`label2id` from the training labels; a validation label never seen in training is an error."""
    train_labels = sorted({str(label) for label in raw["train"][column]}, key=lambda x: (len(x), x))
    if len(train_labels) < 2:
        raise RecipeError(f"data.label_column '{column}' holds a single label ({train_labels}); classification needs two.")
    label2id = {label: i for i, label in enumerate(train_labels)}
    unseen = {str(label) for label in raw["validation"][column]} - set(label2id)
    if unseen:
        raise RecipeError(f"The validation data has labels never seen in training: {sorted(unseen)}.")
    return label2id


def tokenize(raw, tokenizer, recipe: Recipe, label2id: dict[str, int]):
    data = recipe.data
    unknown = {str(label) for label in raw["validation"][data.label_column]} - set(label2id)
    if unknown:
        raise RecipeError(f"The validation data has labels the model does not know: {sorted(unknown)} (it knows "
                          f"{sorted(label2id)}).")

    def preprocess(batch):
        encoded = tokenizer(batch[data.text_column], truncation=True, max_length=data.max_source_length)
        encoded["labels"] = [label2id[str(label)] for label in batch[data.label_column]]
        return encoded

    return raw.map(preprocess, batched=True, remove_columns=raw["train"].column_names, desc="Tokenising")


def compute_metrics_for(num_examples: int):
    def compute(eval_prediction):
        logits = eval_prediction.predictions[0] if isinstance(eval_prediction.predictions, tuple) else eval_prediction.predictions
        predictions = np.argmax(logits[:num_examples], axis=-1)
        return classification_metrics(predictions.tolist(), eval_prediction.label_ids[:num_examples].tolist())

    return compute


class ClassificationTask(Task):
    name = "classification"
    default_dataset = "hf_llm:demo_sentiment"
    is_encoder_decoder = None
    best_metric = "f1"  # macro-F1
    quality = ("eval_accuracy", "validation accuracy", True)
    card_metrics = (("eval_accuracy", "accuracy", "Accuracy"), ("eval_f1", "f1", "Macro-F1"))
    display_name = "Text classification"
    generates_text = False

    def check_data(self, recipe: Recipe, raw) -> None:
        data = recipe.data
        require_columns(raw, [data.text_column, data.label_column],
                        {data.text_column: "data.text_column", data.label_column: "data.label_column"})

    def auto_class(self, config):
        return AutoModelForSequenceClassification

    def build_model(self, recipe: Recipe, tokenizer, raw) -> tuple:
        label2id = label_mapping(raw, recipe.data.label_column)
        id2label = {i: label for label, i in label2id.items()}
        model = build_model(recipe, tokenizer, AutoModelForSequenceClassification, num_labels=len(label2id),
                            id2label=id2label, label2id=label2id)
        return model, None

    def tokenize(self, recipe: Recipe, raw, tokenizer, model):
        return tokenize(raw, tokenizer, recipe, {str(k): v for k, v in model.config.label2id.items()})

    def collator(self, tokenizer, model):
        return DataCollatorWithPadding(tokenizer)

    def compute_metrics(self, recipe: Recipe, tokenizer, eval_dataset):
        return compute_metrics_for(len(eval_dataset))

    def pipeline_tag(self, config) -> str:
        return "text-classification"

    def intended_use(self, config) -> str:
        return f"Labelling texts with {sorted((config.label2id or {}).keys())}."

    def usage_snippet(self, config, repo_id: str) -> str:
        return (f'from transformers import pipeline\n\nclassify = pipeline("text-classification", model="{repo_id}", '
                f'trust_remote_code=True)\nprint(classify("The movie was wonderful."))')
