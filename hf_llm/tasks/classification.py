"""Sequence classification (semantic analysis): `text` / `label` columns, accuracy and macro-F1.

Labels (strings or integers) are mapped to ids in sorted order of the training labels and saved in the
config as `id2label` / `label2id`, so predictions come back as names.
"""

from __future__ import annotations

import os

import numpy as np
from transformers import AutoModelForSequenceClassification, DataCollatorWithPadding, Trainer
from transformers.trainer_utils import set_seed

from ..data import load_raw, require_columns
from ..recipes import Recipe, RecipeError
from ..train import (
    HfLlmTrainer,
    build_model,
    finish_run,
    fit_lengths,
    train_and_evaluate,
    get_tokenizer,
    prepare_output_dir,
    trainer_options,
    training_arguments,
)
from .metrics import classification_metrics

# The checkpoint a run keeps (`training.load_best_model_at_end`): the best macro-F1.
BEST_METRIC = "f1"


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


def run(recipe: Recipe, overwrite: bool = False) -> dict:
    data = recipe.data
    resume = prepare_output_dir(recipe.training, overwrite)
    set_seed(recipe.training.get("seed", 42))
    raw = load_raw(data, recipe.training.get("seed", 42))
    require_columns(raw, [data.text_column, data.label_column],
                    {data.text_column: "data.text_column", data.label_column: "data.label_column"})
    label2id = label_mapping(raw, data.label_column)
    id2label = {i: label for label, i in label2id.items()}
    tokenizer = get_tokenizer(recipe, raw["train"], [data.text_column])
    model = build_model(recipe, tokenizer, AutoModelForSequenceClassification, num_labels=len(label2id),
                        id2label=id2label, label2id=label2id)
    fit_lengths(model, data, ("max_source_length",), truncate=True)
    tokenized = tokenize(raw, tokenizer, recipe, label2id)
    args = training_arguments(recipe, eval_on_start=resume is None, metric_for_best_model=BEST_METRIC)
    trainer = HfLlmTrainer(
        model=model, args=args, train_dataset=tokenized["train"], eval_dataset=tokenized["validation"],
        data_collator=DataCollatorWithPadding(tokenizer), processing_class=tokenizer,
        compute_metrics=compute_metrics_for(len(tokenized["validation"])), **trainer_options(recipe),
    )
    os.makedirs(args.output_dir, exist_ok=True)
    train_result, metrics = train_and_evaluate(trainer, resume, with_perplexity=False)
    return finish_run(trainer, tokenizer, recipe, train_result, metrics)


def evaluate(recipe: Recipe, model, tokenizer) -> dict:
    import tempfile

    raw = load_raw(recipe.data, seed=0)
    require_columns(raw, [recipe.data.text_column, recipe.data.label_column],
                    {recipe.data.text_column: "data.text_column", recipe.data.label_column: "data.label_column"})
    label2id = {str(k): v for k, v in model.config.label2id.items()}
    tokenized = tokenize(raw, tokenizer, recipe, label2id)
    with tempfile.TemporaryDirectory() as scratch:
        recipe.training = {**recipe.training, "output_dir": scratch}
        trainer = Trainer(model=model, args=training_arguments(recipe), eval_dataset=tokenized["validation"],
                          data_collator=DataCollatorWithPadding(tokenizer), processing_class=tokenizer,
                          compute_metrics=compute_metrics_for(len(tokenized["validation"])))
        return trainer.evaluate()
