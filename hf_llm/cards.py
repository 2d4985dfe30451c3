"""Model cards filled from a run with `huggingface_hub`'s `ModelCard` / `ModelCardData`.

The template is `model_cards/hf_llm.md` (YAML metadata + markdown). The metadata carries
`library_name`, `pipeline_tag`, tags (hf_llm, the families, the task), datasets, metrics and a
`model-index` with the measured evaluation results; the text carries a usage snippet with
`trust_remote_code=True`, the architecture, the recipe, training hyperparameters and compute, results
before/after training, intended use and limitations.
"""

from __future__ import annotations

import json
import os
import pathlib
import platform

import torch
import yaml
from huggingface_hub import EvalResult, ModelCard, ModelCardData

TEMPLATE = pathlib.Path(__file__).resolve().parent.parent / "model_cards" / "hf_llm.md"

PIPELINE_TAGS = {"causal_lm": "text-generation", "dialogue": "text-generation", "translation": "translation",
                 "summarization": "summarization", "classification": "text-classification"}
TASK_NAMES = {"causal_lm": "Causal language modeling", "dialogue": "Dialogue", "translation": "Translation",
              "summarization": "Summarization", "classification": "Text classification"}
# metric key in eval_results.json -> (model-index metric type, display name)
METRICS = {
    "causal_lm": [("perplexity", "perplexity", "Perplexity"), ("eval_loss", "loss", "Loss")],
    "dialogue": [("perplexity", "perplexity", "Perplexity (assistant tokens)"), ("eval_loss", "loss", "Loss")],
    "translation": [("eval_bleu", "bleu", "sacreBLEU"), ("eval_chrf", "chrf", "chrF")],
    "summarization": [("eval_rouge1", "rouge", "ROUGE-1"), ("eval_rouge2", "rouge", "ROUGE-2"),
                      ("eval_rougeL", "rouge", "ROUGE-L"), ("eval_rougeLsum", "rouge", "ROUGE-Lsum")],
    "classification": [("eval_accuracy", "accuracy", "Accuracy"), ("eval_f1", "f1", "Macro-F1")],
}
FAMILY_NAMES = {"transformer": "Transformer (pre-norm, rotary positions)",
                "rnn": "recurrent (LSTM/GRU)", "cnn": "convolutional (gated convolutions, ConvS2S)"}


def read_json(path: str) -> dict:
    return json.load(open(path)) if os.path.isfile(path) else {}


def family_description(config) -> str:
    if config.is_encoder_decoder:
        return (f"encoder-decoder: {FAMILY_NAMES[config.side_backbone('encoder')]} encoder, "
                f"{FAMILY_NAMES[config.side_backbone('decoder')]} decoder")
    return f"decoder-only {FAMILY_NAMES[config.side_backbone('decoder')]} language model"


def architecture_rows(config, parameters: int | None) -> list[tuple[str, str]]:
    rows = [("family", family_description(config))]
    if parameters:
        rows.append(("parameters", f"{parameters / 1e6:.2f} M"))
    rows += [("hidden size", str(config.hidden_size)), ("vocabulary", str(config.vocab_size))]
    sides = ["encoder", "decoder"] if config.is_encoder_decoder else ["decoder"]
    for side in sides:
        family = config.side_backbone(side)
        detail = f"{config.side_layers(side)} layers"
        if family == "transformer":
            detail += f", {config.num_attention_heads} heads, FFN {config.intermediate_size}"
        elif family == "rnn":
            detail += f", {config.rnn_cell.upper()}"
            if side == "encoder":
                detail += ", bidirectional" if config.rnn_bidirectional_encoder else ", unidirectional"
            elif config.is_encoder_decoder:
                detail += f", {config.rnn_attention} attention" + (" + input feeding" if config.rnn_input_feeding else "")
        else:
            detail += f", blocks {config.cnn_spec(side)}"
        rows.append((f"{side} ({family})", detail))
    return rows


def usage_snippet(config, repo_id: str, task: str) -> str:
    if task == "classification":
        return (f'from transformers import pipeline\n\nclassify = pipeline("text-classification", model="{repo_id}", '
                f'trust_remote_code=True)\nprint(classify("The movie was wonderful."))')
    if config.is_encoder_decoder:
        name = {"translation": "translation", "summarization": "summarization"}.get(task, "text2text-generation")
        return (f'import torch\nfrom transformers import AutoModelForSeq2SeqLM, AutoTokenizer\n\n'
                f'tokenizer = AutoTokenizer.from_pretrained("{repo_id}")\n'
                f'model = AutoModelForSeq2SeqLM.from_pretrained("{repo_id}", trust_remote_code=True)\n'
                f'# sources end with EOS, as in training (with hf_llm installed: pipeline("{name}", model=...))\n'
                f'ids = tokenizer("Your text", add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]\n'
                f'output = model.generate(torch.tensor([ids]), num_beams=4)\n'
                f'print(tokenizer.decode(output[0], skip_special_tokens=True))')
    if task == "dialogue":
        return (f'from transformers import pipeline\n\nchat = pipeline("text-generation", model="{repo_id}", '
                f'trust_remote_code=True)\nprint(chat([{{"role": "user", "content": "Hello!"}}], max_new_tokens=40))')
    return (f'from transformers import AutoModelForCausalLM, AutoTokenizer\n\n'
            f'tokenizer = AutoTokenizer.from_pretrained("{repo_id}")\n'
            f'model = AutoModelForCausalLM.from_pretrained("{repo_id}", trust_remote_code=True)\n'
            f'inputs = tokenizer("Return the", return_tensors="pt")\n'
            f'print(tokenizer.decode(model.generate(**inputs, max_new_tokens=40)[0]))')


def data_description(recipe: dict) -> tuple[str, str, str | None]:
    """(long description, short description, Hub dataset id or None)."""
    data = recipe.get("data", {})
    name = data.get("dataset_name")
    if data.get("train_file"):
        return f"local files ({os.path.basename(data['train_file'])})", "its local training files", None
    if name == "hf_llm:python_docs":
        return ("the docstrings and help topics of the Python standard library (hf_llm's embedded corpus, "
                "PSF License v2)", "Python standard-library documentation", None)
    if name and name.startswith("hf_llm:"):
        return f"hf_llm's bundled demo data `{name}`", f"the demo data {name}", None
    if name:
        return f"[{name}](https://huggingface.co/datasets/{name})", name, name
    return "unknown", "its training data", None


def kept_checkpoint(best: dict) -> str | None:
    """The sentence saying which checkpoint the model is (`best_results.json` of a run that kept its best)."""
    if not best:
        return None
    return (f"These are the weights of step {best['best_step']} of {best['last_step']}, the best of the run's "
            f"evaluations by `{best['metric_for_best_model']}` ({best['best_metric']:.4g}).")


def build_card(model_dir: str, repo_id: str | None = None, model=None) -> ModelCard:
    """The card of a saved model folder (config, recipe.yaml, *_results.json)."""
    from transformers import AutoConfig

    import hf_llm  # noqa: F401  (registers the config class)

    config = AutoConfig.from_pretrained(model_dir)
    recipe = yaml.safe_load(open(os.path.join(model_dir, "recipe.yaml"))) if os.path.isfile(
        os.path.join(model_dir, "recipe.yaml")) else {}
    task = recipe.get("task", "causal_lm" if not config.is_encoder_decoder else "translation")
    metrics = {**read_json(os.path.join(model_dir, "train_results.json")),
               **read_json(os.path.join(model_dir, "eval_results.json"))}
    repo_id = repo_id or os.path.basename(os.path.abspath(model_dir))
    long_data, short_data, dataset_id = data_description(recipe)
    families = sorted(set(config.used_backbones()))
    pipeline_tag = PIPELINE_TAGS[task]
    if config.is_encoder_decoder and task == "dialogue":
        pipeline_tag = "text2text-generation"

    eval_results, results, signatures = [], [], []
    for key, metric_type, display in METRICS[task]:
        if key not in metrics:
            continue
        eval_results.append(EvalResult(
            task_type=pipeline_tag, task_name=TASK_NAMES[task], dataset_type=dataset_id or recipe.get("data", {}).get("dataset_name") or "custom",
            dataset_name=short_data, dataset_split="validation", metric_type=metric_type,
            metric_value=round(float(metrics[key]), 4), metric_name=display,
        ))
        before_key = "init_perplexity" if key == "perplexity" else key.replace("eval_", "init_eval_", 1)
        before = metrics.get(before_key)
        results.append((display, f"{before:.4g}" if isinstance(before, (int, float)) else "-", f"{metrics[key]:.4g}"))
    for key in ("eval_bleu_signature", "eval_chrf_signature"):
        if key in metrics:
            signatures.append((key.removeprefix("eval_").removesuffix("_signature"), metrics[key]))

    card_data = ModelCardData(
        library_name="transformers", pipeline_tag=pipeline_tag,
        tags=["hf_llm", "custom_code", *families, task.replace("_", "-")],
        datasets=[dataset_id] if dataset_id else None,
        metrics=sorted({m for _, m, _ in METRICS[task]}),
        model_name=repo_id, eval_results=eval_results or None,
    )
    training = recipe.get("training", {})
    hyperparameters = [(k, training[k]) for k in ("max_steps", "num_train_epochs", "per_device_train_batch_size",
                                                  "gradient_accumulation_steps", "learning_rate", "lr_scheduler_type",
                                                  "warmup_steps", "weight_decay", "seed") if k in training]
    if "block_size" in recipe.get("data", {}) and task == "causal_lm":
        hyperparameters.append(("block_size", recipe["data"]["block_size"]))
    parameters = sum(p.numel() for p in model.parameters()) if model is not None else None
    runtime = metrics.get("train_runtime")
    compute = (f"{platform.processor() or platform.machine()}, torch {torch.__version__}"
               + (f", {torch.get_num_threads()} threads" if not torch.cuda.is_available() else f", {torch.cuda.get_device_name()}")
               + (f"; training took {runtime:.0f} s" if runtime else ""))
    summary = (f"An hf_llm {family_description(config)}, trained for {TASK_NAMES[task].lower()} on {long_data}. "
               "hf_llm makes recurrent, convolutional and Transformer models first-class Hugging Face citizens.")
    intended = {
        "causal_lm": "Text continuation in the style of its training data; a starting point for fine-tuning.",
        "dialogue": "Short assistant replies in the style of its training conversations.",
        "translation": "Translating sentences like those it was trained on.",
        "summarization": "One-line summaries of texts like those it was trained on.",
        "classification": f"Labelling texts with {sorted((config.label2id or {}).keys())}.",
    }[task]
    return ModelCard.from_template(
        card_data, template_path=str(TEMPLATE), model_name=repo_id, summary=summary,
        usage=usage_snippet(config, repo_id, task), architecture=architecture_rows(config, parameters),
        task=TASK_NAMES[task], data_description=long_data, data_short=short_data, compute=compute,
        hyperparameters=hyperparameters, recipe_yaml=yaml.safe_dump(recipe, sort_keys=False) if recipe else "# not recorded\n",
        results=results, signatures=signatures, validation_size=None, intended_use=intended,
        kept=kept_checkpoint(read_json(os.path.join(model_dir, "best_results.json"))),
        learned_positions="cnn" in families, max_positions=config.max_position_embeddings,
    )


def write_card(model_dir: str, repo_id: str | None = None, model=None) -> str:
    path = os.path.join(model_dir, "README.md")
    build_card(model_dir, repo_id, model).save(path)
    return path
