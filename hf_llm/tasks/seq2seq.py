"""Translation and summarization with `Seq2SeqTrainer`, scored on generated text.

- Translation: rows `{"translation": {src: ..., tgt: ...}}` with `data.source_lang` / `data.target_lang`,
  or plain `source` / `target` columns; optional `data.source_prefix`; sacreBLEU and chrF (+ signatures).
- Summarization: `data.text_column` (default `document`) -> `data.summary_column` (default `summary`);
  ROUGE-1/2/L/Lsum.
Sources and targets are truncated to `data.max_source_length` / `data.max_target_length` and end with EOS: a
tokenizer trained for the run adds it itself (its post-processor), so `tokenizer(text)` in plain transformers
code gives the ids training used; for a tokenizer that adds none, `encode_sources` appends it.
The final model's validation outputs are written to `generated_predictions.txt`, one line per example.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import numpy as np
from transformers import AutoModelForSeq2SeqLM, DataCollatorForSeq2Seq, Seq2SeqTrainingArguments

from ..data import column_names, require_columns
from ..inference import encode_sources
from ..models import build_seq2seq, set_generation_config
from ..recipe_schema import Recipe, RecipeError
from ..tokenizer import ends_with_eos
from ..trainers import HfLlmSeq2SeqTrainer
from .base import Task
from .metrics import summarization_metrics, translation_metrics

PREDICTIONS_FILE = "generated_predictions.txt"


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


def make_compute_metrics(score, tokenizer, num_examples: int):
    """`compute_metrics` for generated ids: `score(predictions, references)` on the decoded texts, plus `gen_len`."""
    pad = tokenizer.pad_token_id

    def compute(eval_prediction):
        predictions = eval_prediction.predictions
        predictions = (predictions[0] if isinstance(predictions, tuple) else predictions)[:num_examples]
        metrics = score(decode(tokenizer, predictions, num_examples),
                        decode(tokenizer, eval_prediction.label_ids, num_examples))
        metrics["gen_len"] = float(np.mean([np.count_nonzero((p != pad) & (p != -100)) for p in predictions]))
        return metrics

    return compute


def seq2seq_usage(repo_id: str, pipeline_name: str, tokenizer_adds_eos: bool = True) -> str:
    """The model card's usage snippet of an encoder-decoder: the source framed as in training (the text, then EOS:
    by the tokenizer's post-processor, or appended where the saved tokenizer has none)."""
    encode = ('inputs = tokenizer("Your text", return_tensors="pt")  # the tokenizer ends the source with EOS, as '
              'in training' if tokenizer_adds_eos else
              'inputs = tokenizer("Your text" + tokenizer.eos_token, add_special_tokens=False, return_tensors="pt")  '
              '# the source ends with EOS, as in training')
    return (f'from transformers import AutoModelForSeq2SeqLM, AutoTokenizer\n\n'
            f'tokenizer = AutoTokenizer.from_pretrained("{repo_id}")\n'
            f'model = AutoModelForSeq2SeqLM.from_pretrained("{repo_id}", trust_remote_code=True)\n'
            f'# with hf_llm installed: pipeline("{pipeline_name}", model=...)\n'
            f'{encode}\n'
            f'output = model.generate(**inputs, num_beams=4)\n'
            f'print(tokenizer.decode(output[0], skip_special_tokens=True))')


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


class Seq2SeqTask(Task):
    """What translation and summarization share: pairs of texts, a seq2seq model, scores on generated text."""

    is_encoder_decoder = True
    tokenizer_ends_with_eos = True  # sources and targets end with EOS
    arguments_class = Seq2SeqTrainingArguments
    trainer_class = HfLlmSeq2SeqTrainer
    reports_perplexity = True
    length_keys = ("max_source_length", "max_target_length")

    def pairs(self, recipe: Recipe, raw) -> Callable[[dict], tuple[list[str], list[str]]]:
        """Check the data's columns and return `pairs(batch) -> (sources, targets)`."""
        raise NotImplementedError

    def score(self, predictions: list[str], references: list[str]) -> dict:
        raise NotImplementedError

    def check_data(self, recipe: Recipe, raw) -> None:
        self.pairs(recipe, raw)

    def training_texts(self, recipe: Recipe, raw):
        pairs = self.pairs(recipe, raw)
        return lambda batch: [t for side in pairs(batch) for t in side]

    def auto_class(self, config):
        return AutoModelForSeq2SeqLM

    def build_model(self, recipe: Recipe, tokenizer, raw) -> tuple:
        return build_seq2seq(recipe, tokenizer)

    def prepare_model(self, recipe: Recipe, model, tokenizer) -> None:
        set_generation_config(model, recipe, tokenizer, self.samples_by_default)
        # Target length as max_length (decoder start + tokens): Seq2SeqTrainer fills max_length into the config
        # during evaluation, which with max_new_tokens would warn at every batch.
        model.generation_config.max_new_tokens = None
        model.generation_config.max_length = recipe.data.max_target_length + 1
        # Pipelines and `hf-llm generate` encode sources as training did, prefix included.
        model.config.task_specific_params = {self.name: {"prefix": recipe.data.source_prefix or ""}}

    def tokenize(self, recipe: Recipe, raw, tokenizer, model):
        return tokenize_pairs(raw, self.pairs(recipe, raw), tokenizer, recipe)

    def collator(self, tokenizer, model):
        return DataCollatorForSeq2Seq(tokenizer, model=model)

    def argument_defaults(self, recipe: Recipe) -> dict:
        # Generation length comes from the model's generation config (max_length = max_target_length + 1).
        return {"predict_with_generate": True, "generation_num_beams": recipe.generation.num_beams}

    def compute_metrics(self, recipe: Recipe, tokenizer, eval_dataset):
        return make_compute_metrics(self.score, tokenizer, len(eval_dataset))

    def final_evaluation(self, trainer) -> dict:
        return evaluate_and_write_predictions(trainer)

    def tokens_per_example(self, recipe: Recipe) -> int:
        return recipe.data.max_source_length

    def pipeline_tag(self, config) -> str:
        return self.name

    def usage_snippet(self, config, repo_id: str, tokenizer=None) -> str:
        return seq2seq_usage(repo_id, self.name, tokenizer is None or ends_with_eos(tokenizer))


class TranslationTask(Seq2SeqTask):
    name = "translation"
    default_dataset = "hf_llm:demo_translation"
    best_metric = "bleu"
    quality = ("eval_bleu", "validation BLEU", True)
    card_metrics = (("eval_bleu", "bleu", "sacreBLEU"), ("eval_chrf", "chrf", "chrF"))
    display_name = "Translation"

    def pairs(self, recipe: Recipe, raw):
        data = recipe.data
        columns = column_names(raw["train"])
        if "translation" in columns:
            if data.source_lang is None or data.target_lang is None:
                raise RecipeError("Translation rows {'translation': {lang: text}} need data.source_lang and "
                                  "data.target_lang.")
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
        raise RecipeError(f"Translation data needs a 'translation' column (with data.source_lang / data.target_lang) "
                          f"or 'source' and 'target' columns; the data has {columns}.")

    def score(self, predictions: list[str], references: list[str]) -> dict:
        return translation_metrics(predictions, references)

    def intended_use(self, config) -> str:
        return "Translating sentences like those it was trained on."


class SummarizationTask(Seq2SeqTask):
    name = "summarization"
    default_dataset = "hf_llm:demo_summarization"
    default_text_column = "document"
    best_metric = "rougeL"
    quality = ("eval_rouge1", "validation ROUGE-1", True)
    card_metrics = (("eval_rouge1", "rouge", "ROUGE-1"), ("eval_rouge2", "rouge", "ROUGE-2"),
                    ("eval_rougeL", "rouge", "ROUGE-L"), ("eval_rougeLsum", "rouge", "ROUGE-Lsum"))
    display_name = "Summarization"

    def pairs(self, recipe: Recipe, raw):
        data = recipe.data
        require_columns(raw, [data.text_column, data.summary_column],
                        {data.text_column: "data.text_column", data.summary_column: "data.summary_column"})
        return lambda batch: (batch[data.text_column], batch[data.summary_column])

    def score(self, predictions: list[str], references: list[str]) -> dict:
        return summarization_metrics(predictions, references)

    def intended_use(self, config) -> str:
        return "One-line summaries of texts like those it was trained on."
