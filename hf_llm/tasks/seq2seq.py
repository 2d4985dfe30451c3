"""Translation and summarization with `Seq2SeqTrainer`, scored on generated text.

- Translation: rows `{"translation": {src: ..., tgt: ...}}` with `data.source_lang` / `data.target_lang`,
  or plain `source` / `target` columns; optional `data.source_prefix`; sacreBLEU and chrF (+ signatures).
- Summarization: `data.text_column` (default `document`) -> `data.summary_column` (default `summary`);
  ROUGE-1/2/L/Lsum.
Sources and targets are truncated to `data.max_source_length` / `data.max_target_length` and end with EOS.
The final model's validation outputs are written to `generated_predictions.txt`, one line per example.
"""

from __future__ import annotations

import copy
import json
import os

import numpy as np
from transformers import DataCollatorForSeq2Seq
from transformers.trainer_utils import set_seed

from ..data import column_names, load_raw, require_columns
from ..pipelines import encode_sources
from ..recipes import Recipe, RecipeError
from ..train import (
    HfLlmSeq2SeqTrainer,
    fit_lengths,
    finish_run,
    train_and_evaluate,
    get_tokenizer,
    perplexity,
    prepare_output_dir,
    set_generation_config,
    trainer_options,
    training_arguments,
)
from .metrics import summarization_metrics, translation_metrics
from .warm_start import build_seq2seq

# The checkpoint a run keeps (`training.load_best_model_at_end`), unless the recipe names another metric.
BEST_METRIC = {"translation": "bleu", "summarization": "rougeL"}
PREDICTIONS_FILE = "generated_predictions.txt"


def pair_extractor(recipe: Recipe, raw) -> tuple:
    """Check the data's columns and return `pairs(batch) -> (sources, targets)`."""
    data = recipe.data
    columns = column_names(raw["train"])
    if recipe.task == "summarization":
        require_columns(raw, [data.text_column, data.summary_column],
                        {data.text_column: "data.text_column", data.summary_column: "data.summary_column"})
        return lambda batch: (batch[data.text_column], batch[data.summary_column])
    if "translation" in columns:
        if data.source_lang is None or data.target_lang is None:
            raise RecipeError("Translation rows {'translation': {lang: text}} need data.source_lang and data.target_lang.")
        languages = sorted(raw["train"][0]["translation"])
        for key in ("source_lang", "target_lang"):
            if getattr(data, key) not in languages:
                raise RecipeError(f"data.{key}={getattr(data, key)!r} is not a language of the translation pairs; "
                                  f"they hold {languages}.")
        if data.source_lang == data.target_lang:
            raise RecipeError(f"data.source_lang and data.target_lang are both {data.source_lang!r}; pick a pair.")
        source, target = data.source_lang, data.target_lang
        return lambda batch: ([p[source] for p in batch["translation"]], [p[target] for p in batch["translation"]])
    if "source" in columns and "target" in columns:
        return lambda batch: (batch["source"], batch["target"])
    raise RecipeError(f"Translation data needs a 'translation' column (with data.source_lang / data.target_lang) or "
                      f"'source' and 'target' columns; the data has {columns}.")


def tokenize_pairs(raw, pairs, tokenizer, recipe: Recipe):
    data = recipe.data
    prefix = data.source_prefix or ""

    def preprocess(batch):
        sources, targets = pairs(batch)
        inputs = encode_sources(tokenizer, sources, prefix, data.max_source_length)
        return {"input_ids": inputs, "attention_mask": [[1] * len(x) for x in inputs],
                "labels": encode_sources(tokenizer, targets, "", data.max_target_length)}

    return raw.map(preprocess, batched=True, remove_columns=column_names(raw["train"]), desc="Tokenising pairs")


def decode(tokenizer, token_ids, num_examples: int) -> list[str]:
    """Generated (or label) token ids as stripped texts, one per example. Distributed evaluation can pad the
    last batch with duplicates: only the first `num_examples` rows count."""
    if isinstance(token_ids, tuple):
        token_ids = token_ids[0]
    token_ids = np.where(token_ids[:num_examples] != -100, token_ids[:num_examples], tokenizer.pad_token_id)
    return [t.strip() for t in tokenizer.batch_decode(token_ids, skip_special_tokens=True)]


def make_compute_metrics(recipe: Recipe, tokenizer, num_examples: int):
    pad = tokenizer.pad_token_id
    score = translation_metrics if recipe.task == "translation" else summarization_metrics

    def compute(eval_prediction):
        predictions = eval_prediction.predictions
        predictions = (predictions[0] if isinstance(predictions, tuple) else predictions)[:num_examples]
        metrics = score(decode(tokenizer, predictions, num_examples),
                        decode(tokenizer, eval_prediction.label_ids, num_examples))
        metrics["gen_len"] = float(np.mean([np.count_nonzero((p != pad) & (p != -100)) for p in predictions]))
        return metrics

    return compute


def evaluate_and_write_predictions(trainer: HfLlmSeq2SeqTrainer) -> dict:
    """The final evaluation, as `trainer.evaluate()` would log it, keeping the generated texts: written to
    `generated_predictions.txt` in `output_dir`, one line per validation example (a line break inside an
    output becomes a space), as transformers' run_summarization example does."""
    output = trainer.predict(trainer.eval_dataset, metric_key_prefix="eval")
    trainer.log(output.metrics)
    if trainer.args.should_save:
        texts = decode(trainer.processing_class, output.predictions, len(trainer.eval_dataset))
        with open(os.path.join(trainer.args.output_dir, PREDICTIONS_FILE), "w", encoding="utf-8") as f:
            f.writelines(" ".join(text.splitlines()) + "\n" for text in texts)
    return output.metrics


def make_trainer(recipe: Recipe, model, tokenizer, tokenized, **argument_overrides) -> HfLlmSeq2SeqTrainer:
    # Generation length comes from the model's generation config (max_new_tokens = max_target_length).
    args = training_arguments(
        recipe, predict_with_generate=True, generation_num_beams=recipe.generation.num_beams,
        metric_for_best_model=BEST_METRIC[recipe.task], **argument_overrides,
    )
    return HfLlmSeq2SeqTrainer(
        model=model, args=args, train_dataset=tokenized.get("train"), eval_dataset=tokenized["validation"],
        data_collator=DataCollatorForSeq2Seq(tokenizer, model=model), processing_class=tokenizer,
        compute_metrics=make_compute_metrics(recipe, tokenizer, len(tokenized["validation"])),
        **trainer_options(recipe),
    )


def run(recipe: Recipe, overwrite: bool = False) -> dict:
    data = recipe.data
    resume = prepare_output_dir(recipe.training, overwrite)
    set_seed(recipe.training.get("seed", 42))
    raw = load_raw(data, recipe.training.get("seed", 42))
    pairs = pair_extractor(recipe, raw)
    tokenizer = get_tokenizer(recipe, raw["train"], texts_of=lambda batch: [t for side in pairs(batch) for t in side if t])
    model, warm_report = build_seq2seq(recipe, tokenizer)
    fit_lengths(model, data, ("max_source_length", "max_target_length"), truncate=True)
    set_generation_config(model, recipe, tokenizer)
    # Target length as max_length (decoder start + tokens): Seq2SeqTrainer fills max_length into the config
    # during evaluation, which with max_new_tokens would warn at every batch.
    model.generation_config.max_new_tokens = None
    model.generation_config.max_length = data.max_target_length + 1
    # Pipelines and `hf-llm generate` encode sources as training did, prefix included.
    model.config.task_specific_params = {recipe.task: {"prefix": data.source_prefix or ""}}
    intended_generation = copy.deepcopy(model.generation_config)
    tokenized = tokenize_pairs(raw, pairs, tokenizer, recipe)
    trainer = make_trainer(recipe, model, tokenizer, tokenized, eval_on_start=resume is None)
    output_dir = trainer.args.output_dir
    os.makedirs(output_dir, exist_ok=True)
    if warm_report is not None and trainer.args.should_save:
        with open(os.path.join(output_dir, "warm_start.json"), "w") as f:
            json.dump(warm_report, f, indent=2)

    train_result, metrics = train_and_evaluate(trainer, resume, final_evaluation=evaluate_and_write_predictions)
    return {**finish_run(trainer, tokenizer, recipe, train_result, metrics, intended_generation), "warm_start": warm_report}


def evaluate(recipe: Recipe, model, tokenizer) -> dict:
    raw = load_raw(recipe.data, seed=0)
    pairs = pair_extractor(recipe, raw)
    tokenized = tokenize_pairs(raw, pairs, tokenizer, recipe)
    import tempfile

    with tempfile.TemporaryDirectory() as scratch:
        recipe.training = {**recipe.training, "output_dir": scratch}
        metrics = make_trainer(recipe, model, tokenizer, tokenized).evaluate()
    metrics["perplexity"] = perplexity(metrics["eval_loss"])
    return metrics
