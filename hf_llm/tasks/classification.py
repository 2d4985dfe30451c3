"""Sequence classification (semantic analysis): `text` / `label` columns, accuracy and macro-F1.

A `ClassLabel` column keeps the dataset's own ids and names (`id2label` = its names); other labels (strings
or integers) are mapped to ids in sorted order of the training labels. Either way the mapping is saved in the
config as `id2label` / `label2id`, so predictions come back as names.
"""

from __future__ import annotations

import numpy as np
from datasets import ClassLabel, DatasetDict
from transformers import AutoModelForSequenceClassification, DataCollatorWithPadding

from ..data import require_columns
from ..models import build_model
from ..recipe_schema import Recipe, RecipeError
from .base import Task
from .metrics import classification_metrics


def class_label(split, column: str) -> ClassLabel | None:
    """The column's `ClassLabel` feature (integer ids with names), or None."""
    feature = (getattr(split, "features", None) or {}).get(column)
    return feature if isinstance(feature, ClassLabel) else None


def label_names(raw, column: str) -> dict[str, list[str]]:
    """The labels of each split as names: a ClassLabel's ids become its names (an id outside them, such as the
    -1 of unlabelled test splits, is an error), other values their text."""
    names = {}
    for split_name, split in raw.items():
        feature = class_label(split, column)
        values = split[column]
        if feature is None:
            names[split_name] = [str(label) for label in values]
            continue
        bad = sorted({label for label in values if not 0 <= label < feature.num_classes})
        if bad:
            raise RecipeError(f"The {split_name} data's data.label_column '{column}' holds {bad}, outside its "
                              f"ClassLabel ids 0..{feature.num_classes - 1} (-1 marks an unlabelled row, as in test "
                              f"splits); choose a labelled split (data.validation_split).")
        names[split_name] = [feature.names[label] for label in values]
    return names


def label_mapping(raw, column: str) -> dict[str, int]:
    """`label2id`: a ClassLabel column's own names and ids, else the training labels in sorted order; a
    validation label never seen in training is an error."""
    feature = class_label(raw["train"], column)
    labels = label_names(raw, column)
    if feature is not None:
        if feature.num_classes < 2:
            raise RecipeError(f"data.label_column '{column}' holds a single label ({feature.names}); classification "
                              "needs two.")
        return {name: i for i, name in enumerate(feature.names)}
    train_labels = sorted(set(labels["train"]), key=lambda x: (len(x), x))
    if len(train_labels) < 2:
        raise RecipeError(f"data.label_column '{column}' holds a single label ({train_labels}); classification needs two.")
    label2id = {label: i for i, label in enumerate(train_labels)}
    unseen = set(labels["validation"]) - set(label2id)
    if unseen:
        raise RecipeError(f"The validation data has labels never seen in training: {sorted(unseen)}.")
    return label2id


def tokenize(raw, tokenizer, recipe: Recipe, label2id: dict[str, int]):
    data = recipe.data
    unknown = set(label_names(raw, data.label_column)["validation"]) - set(label2id)
    if unknown:
        raise RecipeError(f"The validation data has labels the model does not know: {sorted(unknown)} (it knows "
                          f"{sorted(label2id)}).")
    features = {name: class_label(split, data.label_column) for name, split in raw.items()}

    def as_name(label, feature: ClassLabel | None) -> str:
        return feature.names[label] if feature is not None else str(label)

    def preprocess(batch, split_name: str):
        encoded = tokenizer(batch[data.text_column], truncation=True, max_length=data.max_source_length)
        encoded["labels"] = [label2id[as_name(label, features[split_name])] for label in batch[data.label_column]]
        return encoded

    return DatasetDict({name: split.map(preprocess, batched=True, fn_kwargs={"split_name": name},
                                        remove_columns=split.column_names, desc=f"Tokenising {name}")
                        for name, split in raw.items()})


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

    def usage_snippet(self, config, repo_id: str, tokenizer=None) -> str:
        return (f'from transformers import pipeline\n\nclassify = pipeline("text-classification", model="{repo_id}", '
                f'trust_remote_code=True)\nprint(classify("The movie was wonderful."))')
