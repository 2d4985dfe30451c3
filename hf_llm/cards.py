"""Model cards filled from a run with `huggingface_hub`'s `ModelCard` / `ModelCardData`.

The template is `model_cards/hf_llm.md` (shipped in the package: hf_llm.resources) (YAML metadata + markdown). The metadata carries
`library_name`, `pipeline_tag`, tags (hf_llm, the families, the task), datasets, metrics and a
`model-index` with the measured evaluation results; the text carries a usage snippet with
`trust_remote_code=True`, the architecture, the recipe, training hyperparameters and compute, results
before/after training, intended use and limitations.
"""

from __future__ import annotations

import json
import os
import platform

import torch
import yaml
from huggingface_hub import EvalResult, ModelCard, ModelCardData

from .resources import card_template
from .tasks import get_task, task_of_model


def read_json(path: str) -> dict:
    return json.load(open(path)) if os.path.isfile(path) else {}


def architecture_rows(config, parameters: int | None) -> list[tuple[str, str]]:
    rows = [("family", config.describe())]
    if parameters:
        rows.append(("parameters", f"{parameters / 1e6:.2f} M"))
    rows += [("hidden size", str(config.hidden_size)), ("vocabulary", str(config.vocab_size))]
    for side in ["encoder", "decoder"] if config.is_encoder_decoder else ["decoder"]:
        rows.append((f"{side} ({config.side_backbone(side)})", config.describe_side(side)))
    return rows


def data_description(recipe: dict) -> tuple[str, str, str | None]:
    """(long description, short description, Hub dataset id or None)."""
    data = recipe.get("data", {})
    name = data.get("dataset_name")
    if data.get("train_file"):
        return f"local files ({os.path.basename(data['train_file'])})", "its local training files", None
    if name == "hf_llm:python_docs":
        return ("the docstrings and help topics of the Python standard library (hf_llm's embedded corpus, "
                "PSF License v2)", "Python standard-library documentation", None)
    if name and name.startswith("hf_llm:gettext_"):
        long = (f"the user-interface messages of the training machine's gettext catalogs and their translations "
                f"(`{name}`; the programs' translators' work, under each program's licence, mostly GPL / LGPL)")
        return long, "gettext catalog messages", None
    if name and name.startswith("hf_llm:"):
        return f"hf_llm's bundled demo data `{name}`", f"the demo data {name}", None
    if name and os.path.isdir(os.path.expanduser(name)):  # a local dataset folder, not a Hub id
        return f"a local dataset folder ({os.path.basename(os.path.normpath(name))})", "its local dataset", None
    if name:
        return f"[{name}](https://huggingface.co/datasets/{name})", name, name
    return "unknown", "its training data", None


def kept_checkpoint(best: dict) -> str | None:
    """The sentence saying which checkpoint the model is (`best_results.json` of a run that kept its best)."""
    if not best:
        return None
    return (f"These are the weights of step {best['best_step']} of {best['last_step']}, the best of the run's "
            f"evaluations by `{best['metric_for_best_model']}` ({best['best_metric']:.4g}).")


def saved_tokenizer(model_dir: str):
    """The tokenizer saved in a model folder, or None."""
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(model_dir)
    except (OSError, ValueError):
        return None


def build_card(model_dir: str, repo_id: str | None = None, model=None) -> ModelCard:
    """The card of a saved model folder (config, recipe.yaml, *_results.json)."""
    from transformers import AutoConfig

    import hf_llm  # noqa: F401  (registers the config class)

    config = AutoConfig.from_pretrained(model_dir)
    recipe = yaml.safe_load(open(os.path.join(model_dir, "recipe.yaml"))) if os.path.isfile(
        os.path.join(model_dir, "recipe.yaml")) else {}
    task = get_task(recipe["task"]) if "task" in recipe else task_of_model(config)
    metrics = {**read_json(os.path.join(model_dir, "train_results.json")),
               **read_json(os.path.join(model_dir, "eval_results.json"))}
    repo_id = repo_id or os.path.basename(os.path.abspath(model_dir))
    long_data, short_data, dataset_id = data_description(recipe)
    families = sorted(set(config.used_backbones()))
    pipeline_tag = task.pipeline_tag(config)

    eval_results, results, signatures = [], [], []
    for key, metric_type, display in task.card_metrics:
        if key not in metrics:
            continue
        eval_results.append(EvalResult(
            task_type=pipeline_tag, task_name=task.display_name, dataset_type=dataset_id or recipe.get("data", {}).get("dataset_name") or "custom",
            dataset_name=short_data, dataset_split=recipe.get("data", {}).get("validation_split") or "validation", metric_type=metric_type,
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
        tags=["hf_llm", "custom_code", *families, task.name.replace("_", "-")],
        datasets=[dataset_id] if dataset_id else None,
        metrics=sorted({m for _, m, _ in task.card_metrics}),
        model_name=repo_id, eval_results=eval_results or None,
    )
    training = recipe.get("training", {})
    hyperparameters = [(k, training[k]) for k in ("max_steps", "num_train_epochs", "per_device_train_batch_size",
                                                  "gradient_accumulation_steps", "learning_rate", "lr_scheduler_type",
                                                  "warmup_steps", "weight_decay", "seed") if k in training]
    hyperparameters += [(key, recipe["data"][key]) for key in task.length_keys if key in recipe.get("data", {})]
    lora = recipe.get("peft")
    if lora:  # the weights here are the merged ones; the adapter alone is in adapter/
        hyperparameters.append(("LoRA (peft)", f"r={lora.get('r')}, lora_alpha={lora.get('lora_alpha')}, target_modules="
                                f"{lora.get('target_modules')}; merged into these weights, the adapter alone in adapter/"))
    parameters = sum(p.numel() for p in model.parameters()) if model is not None else None
    runtime = metrics.get("train_runtime")
    compute = (f"{platform.processor() or platform.machine()}, torch {torch.__version__}"
               + (f", {torch.get_num_threads()} threads" if not torch.cuda.is_available() else f", {torch.cuda.get_device_name()}")
               + (f"; training took {runtime:.0f} s" if runtime else ""))
    summary = (f"An hf_llm {config.describe()}, trained for {task.display_name.lower()} on {long_data}. "
               "hf_llm makes recurrent, convolutional and Transformer models first-class Hugging Face citizens.")
    return ModelCard.from_template(
        card_data, template_str=card_template(), model_name=repo_id, summary=summary,
        usage=task.usage_snippet(config, repo_id, saved_tokenizer(model_dir)), architecture=architecture_rows(config, parameters),
        task=task.display_name, data_description=long_data, data_short=short_data, compute=compute,
        hyperparameters=hyperparameters, recipe_yaml=yaml.safe_dump(recipe, sort_keys=False) if recipe else "# not recorded\n",
        results=results, signatures=signatures, validation_size=None, intended_use=task.intended_use(config),
        kept=kept_checkpoint(read_json(os.path.join(model_dir, "best_results.json"))),
        learned_positions=config.max_input_positions is not None, max_positions=config.max_input_positions,
    )


def write_card(model_dir: str, repo_id: str | None = None, model=None) -> str:
    path = os.path.join(model_dir, "README.md")
    build_card(model_dir, repo_id, model).save(path)
    return path
