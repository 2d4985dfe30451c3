"""`hf-llm compare`: the families side by side on the same data, tokenizer, split and budget.

    hf-llm compare quickstart --backbones transformer,rnn,cnn --budget minutes=2 [--match-params]
    hf-llm compare translation_tiny --configs a.yaml,b.yaml --budget steps=300 [section.key=value ...]

Each candidate is the recipe with one family (or one overlay file) applied, trained by the same `run`
as `hf-llm train` into `<report>/runs/<name>`; the tokenizer is trained once and shared. The report folder
holds `report.md` (a table), `results.json` (the raw figures), `loss_curves.png` and `quality_vs_speed.png`.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import pathlib
import time

import torch
import yaml

from .data import load_raw
from .inference import load_model_and_tokenizer, prompt_inputs
from .modeling.configuration_hf_llm import BACKBONES
from .modeling.weight_layout import decoding_layout
from .recipes import Recipe, RecipeError, build_config, load_recipe, load_yaml, resolve_recipe_path
from .tasks import get_task
from .tokenizer import tokenizer_for
from .train import run


def parse_budget(text: str | None) -> tuple[str, float] | None:
    if text is None:
        return None
    kind, _, value = text.partition("=")
    if kind not in ("steps", "tokens", "minutes") or not value:
        raise RecipeError(f"--budget {text!r} must be steps=N, tokens=N or minutes=N.")
    try:
        amount = float(value)
    except ValueError:
        raise RecipeError(f"--budget {text!r}: {value!r} is not a number.") from None
    if amount <= 0:
        raise RecipeError(f"--budget {text!r} must be positive.")
    return kind, amount


def apply_budget(recipe: Recipe, budget: tuple[str, float] | None) -> Recipe:
    """A copy of the recipe with the budget's training keys (the recipe given is unchanged)."""
    if budget is None:
        return recipe
    kind, amount = budget
    training = dict(recipe.training)
    if kind == "steps":
        training["max_steps"] = int(amount)
    elif kind == "tokens":
        per_step = (training.get("per_device_train_batch_size", 8) * training.get("gradient_accumulation_steps", 1)
                    * get_task(recipe.task).tokens_per_example(recipe))
        training["max_steps"] = max(1, math.ceil(amount / per_step))
    else:  # minutes: the same wall time for everyone, steps as many as fit
        training["max_minutes"] = amount
        training["max_steps"] = 10**7
        training["save_strategy"] = "no"
        # No checkpoints, so none to keep or average: every candidate ends on its last step.
        training["load_best_model_at_end"] = False
        for key in ("early_stopping_patience", "average_last_checkpoints"):
            training.pop(key, None)
        # The number of steps is unknown in advance: a schedule over 10**7 steps would barely move, so the
        # learning rate is held constant after warmup, for every candidate alike.
        training["lr_scheduler_type"] = "constant_with_warmup"
    return dataclasses.replace(recipe, training=training)


def candidate_overlays(recipe: Recipe, backbones: str | None, configs: str | None) -> dict[str, dict]:
    """name -> raw overlay (section -> key -> value) applied on top of the base recipe."""
    if configs:
        overlays = {}
        for path in configs.split(","):
            if not os.path.isfile(path):
                raise RecipeError(f"--configs: file not found: {path}")
            try:
                overlay = load_yaml(pathlib.Path(path).read_text(encoding="utf-8")) or {}
            except yaml.YAMLError as error:
                raise RecipeError(f"--configs: {path} is not valid YAML: {error}") from None
            if not isinstance(overlay, dict):
                raise RecipeError(f"--configs: {path} must be a mapping of recipe sections.")
            overlays[os.path.splitext(os.path.basename(path))[0]] = overlay
        return overlays
    families = backbones.split(",") if backbones else list(BACKBONES)
    for family in families:
        if family not in BACKBONES:
            raise RecipeError(f"--backbones: unknown family {family!r}; families are {', '.join(BACKBONES)}.")
    # One family on every side: the recipe's per-side choices are cleared.
    return {f: {"model": {"backbone": f, "encoder_backbone": None, "decoder_backbone": None}} for f in families}


def count_parameters(recipe: Recipe, vocab_size: int) -> int:
    task = get_task(recipe.task)
    config = build_config(recipe, vocab_size=vocab_size, is_encoder_decoder=task.is_encoder_decoder)
    with torch.device("meta"):
        model = task.auto_class(config).from_config(config)
    return sum(p.numel() for p in model.parameters())


def match_parameters(recipe: Recipe, target: int, vocab_size: int) -> tuple[Recipe, int]:
    """A copy of the recipe whose `hidden_size` (a multiple of what the model allows, `intermediate_size` 4x)
    gives about `target` parameters, and its parameter count."""
    task = get_task(recipe.task)
    step = build_config(recipe, vocab_size=vocab_size, is_encoder_decoder=task.is_encoder_decoder).hidden_size_multiple
    step = step * 2 // math.gcd(step, 2)  # even
    best = None
    for hidden in range(step, 2049, step):
        trial = sized(recipe, hidden)
        count = count_parameters(trial, vocab_size)
        if best is None or abs(count - target) < abs(best[1] - target):
            best = (trial, count)
        if count > target:
            break
    return best


def sized(recipe: Recipe, hidden: int) -> Recipe:
    config = {**recipe.model.config, "hidden_size": hidden, "intermediate_size": 4 * hidden}
    return dataclasses.replace(recipe, model=dataclasses.replace(recipe.model, config=config))


def peak_rss_reset() -> int | None:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return _status_kib("VmRSS")
    except OSError:
        return None


def _status_kib(field: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith(field + ":"))
    except (OSError, StopIteration):
        return None


@torch.no_grad()
def inference_speed(output_dir: str, recipe: Recipe) -> tuple[float, str]:
    """Greedy generation tokens/s of the saved model (batch 1, 64 new tokens, prefill included), or
    examples/s for a model that does not generate (a classifier)."""
    model, tokenizer = load_model_and_tokenizer(output_dir)
    if not get_task(recipe.task).generates_text:
        batch = tokenizer(["The movie was wonderful, I would gladly go again."] * 32, return_tensors="pt")
        start = time.perf_counter()
        for _ in range(5):
            model(**batch)
        return 5 * 32 / (time.perf_counter() - start), "examples/s"
    prompt = (recipe.generation.prompts or ["Return the"])[0]
    decoding_layout(model)  # as `hf-llm generate` decodes one sequence (hf_llm/modeling/weight_layout.py)
    inputs = prompt_inputs(model, tokenizer, prompt, max_new_tokens=64)
    kwargs = dict(max_new_tokens=64, min_new_tokens=64, do_sample=False, num_beams=1, eos_token_id=None,
                  pad_token_id=tokenizer.pad_token_id)
    model.generate(**inputs, **{**kwargs, "max_new_tokens": 4, "min_new_tokens": 4})
    start = time.perf_counter()
    model.generate(**inputs, **kwargs)
    return 64 / (time.perf_counter() - start), "tokens/s"


def run_compare(recipe_name: str, overrides: list[str], backbones: str | None, configs: str | None,
                budget_text: str | None, match_params: bool, output: str | None) -> dict:
    base = load_recipe(recipe_name, overrides)
    budget = parse_budget(budget_text)
    report_dir = output or os.path.join("runs", f"compare-{os.path.splitext(os.path.basename(base.path or 'recipe'))[0]}")
    if os.path.isdir(report_dir) and os.listdir(report_dir):
        raise RecipeError(f"--output {report_dir} already holds files; choose another folder.")
    overlays = candidate_overlays(base, backbones, configs)
    text = resolve_recipe_path(recipe_name).read_text(encoding="utf-8")
    recipes: dict[str, Recipe] = {}
    for name, overlay in overlays.items():
        raw = load_yaml(text)
        for section, values in overlay.items():
            if isinstance(values, dict):
                raw.setdefault(section, {}).update(values)
            else:
                raw[section] = values
        candidate = load_recipe(None, overrides, raw=raw)
        candidate.path = base.path
        candidate.training["output_dir"] = os.path.join(report_dir, "runs", name)
        recipes[name] = apply_budget(candidate, budget)

    # One tokenizer, trained on the shared training split, for every candidate.
    os.makedirs(report_dir, exist_ok=True)
    first = next(iter(recipes.values()))
    if first.tokenizer.name_or_path is None:
        raw_data = load_raw(first.data, first.training.get("seed", 42))
        task = get_task(first.task)
        task.check_data(first, raw_data)
        tokenizer = tokenizer_for(first, raw_data["train"], task.training_texts(first, raw_data),
                                  task.tokenizer_ends_with_eos)
        tokenizer.save_pretrained(os.path.join(report_dir, "tokenizer"))
        for candidate in recipes.values():
            candidate.tokenizer.name_or_path = os.path.join(report_dir, "tokenizer")
        vocab = len(tokenizer)
    else:
        from transformers import AutoTokenizer

        vocab = len(AutoTokenizer.from_pretrained(first.tokenizer.name_or_path))

    parameters = {}
    for i, (name, candidate) in enumerate(recipes.items()):
        if match_params and i > 0 and candidate.model.name_or_path is None:
            recipes[name], parameters[name] = match_parameters(candidate, parameters[next(iter(recipes))], vocab)
        else:
            parameters[name] = count_parameters(candidate, vocab) if candidate.model.name_or_path is None else None

    rows = {}
    task = first.task
    metric_key, metric_name, higher_is_better = get_task(task).quality
    for name, candidate in recipes.items():
        print(f"\n=== {name} ===", flush=True)
        baseline = peak_rss_reset()
        started = time.perf_counter()
        run(candidate)
        wall = time.perf_counter() - started
        peak = _status_kib("VmHWM")
        state = json.load(open(os.path.join(candidate.training["output_dir"], "trainer_state.json")))
        train_results = json.load(open(os.path.join(candidate.training["output_dir"], "train_results.json")))
        eval_results = json.load(open(os.path.join(candidate.training["output_dir"], "eval_results.json")))
        tokens = state.get("num_input_tokens_seen") or 0
        speed, unit = inference_speed(candidate.training["output_dir"], candidate)
        if parameters[name] is None:  # started from a checkpoint: count what was saved
            from safetensors import safe_open

            with safe_open(os.path.join(candidate.training["output_dir"], "model.safetensors"), "pt") as weights:
                parameters[name] = sum(math.prod(weights.get_slice(k).get_shape()) for k in weights.keys())
        rows[name] = {
            "parameters": parameters[name],
            "steps": state["global_step"],
            "train_runtime_s": round(train_results["train_runtime"], 2),
            "train_tokens_per_s": round(tokens / train_results["train_runtime"]) if train_results["train_runtime"] else 0,
            "wall_time_s": round(wall, 1),
            "peak_memory_mib": round((peak - baseline) / 1024, 1) if peak and baseline else None,
            "eval_loss": round(eval_results["eval_loss"], 4),
            metric_key: round(eval_results[metric_key], 4),
            "inference_speed": round(speed, 1),
            "inference_unit": unit,
            "loss_curve": [(e["step"], e["loss"]) for e in state["log_history"] if "loss" in e],
            "output_dir": candidate.training["output_dir"],
        }
    report = {"task": task, "budget": budget_text, "match_params": match_params, "metric": metric_key,
              "metric_name": metric_name, "higher_is_better": higher_is_better, "candidates": rows}
    write_report(report, report_dir)
    return report


def write_report(report: dict, folder: str) -> None:
    with open(os.path.join(folder, "results.json"), "w") as f:
        json.dump(report, f, indent=2)
    metric, name = report["metric"], report["metric_name"]
    unit = next(iter(report["candidates"].values()))["inference_unit"]
    lines = [
        f"Task: {report['task']}; budget: {report['budget'] or 'the recipe'}"
        + ("; parameters matched to the first candidate" if report["match_params"] else "") + ".",
        "",
        f"| candidate | parameters | steps | training tokens/s | wall time (s) | peak memory (MiB) | validation loss | {name} | inference {unit} |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for candidate, row in report["candidates"].items():
        lines.append(
            f"| {candidate} | {row['parameters']:,} | {row['steps']} | {row['train_tokens_per_s']} | {row['wall_time_s']} | "
            f"{row['peak_memory_mib']} | {row['eval_loss']} | {row[metric]} | {row['inference_speed']} |"
        )
    with open(os.path.join(folder, "report.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    charts(report, folder)


def charts(report: dict, folder: str) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise RecipeError("hf-llm compare draws charts with matplotlib: pip install 'hf_llm[plot]'.") from None
    figure, axis = plt.subplots(figsize=(6, 4))
    for candidate, row in report["candidates"].items():
        # a run shorter than logging_steps logged no training loss: its curve is its final evaluation loss
        curve = row["loss_curve"] or [(row["steps"], row["eval_loss"])]
        axis.plot(*zip(*curve), marker="." if len(curve) == 1 else None, label=candidate)
    axis.set_xlabel("step")
    axis.set_ylabel("training loss")
    axis.legend()
    axis.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(os.path.join(folder, "loss_curves.png"), dpi=100)
    plt.close(figure)

    figure, axis = plt.subplots(figsize=(6, 4))
    for candidate, row in report["candidates"].items():
        axis.scatter(row["train_tokens_per_s"], row[report["metric"]], s=60)
        axis.annotate(candidate, (row["train_tokens_per_s"], row[report["metric"]]), textcoords="offset points",
                      xytext=(5, 5))
    axis.set_xlabel("training tokens/s")
    axis.set_ylabel(report["metric_name"] + (" (higher is better)" if report["higher_is_better"] else " (lower is better)"))
    axis.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(os.path.join(folder, "quality_vs_speed.png"), dpi=100)
    plt.close(figure)
