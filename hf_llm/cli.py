"""The `hf-llm` command line: train, generate, chat, serve, eval, harness-tasks, average, compare, push, tokenizer,
recipes.

A problem the user can fix (a bad recipe key, a missing file, a dataset without its column, ...) is
printed as one line starting with "error:" and exits with status 2; no traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import sys

RECIPE_HELP = """\
A recipe is YAML with the sections model, tokenizer, data, generation and training (TrainingArguments
fields, unchanged); `hf-llm recipes` lists the bundled ones. Override any key as section.key=value, e.g.
  hf-llm train quickstart model.backbone=rnn training.max_steps=200 data.block_size=64
"""


def command_train(args) -> int:
    from .recipes import load_recipe
    from .train import run

    recipe = load_recipe(args.recipe, args.overrides)
    result = run(recipe, overwrite=args.overwrite)
    print(f"\nSaved to {result['output_dir']}")
    reported = ("eval_loss", "perplexity", "init_perplexity", "eval_bleu", "eval_chrf", "eval_rouge1", "eval_rougeL",
                "eval_accuracy", "eval_f1")
    for key in reported:
        if key in result:
            print(f"  {key}: {result[key]:.4f}")
    if "best_step" in result:
        print(f"  kept the best checkpoint: step {result['best_step']} of {result['last_step']} "
              f"({result['metric_for_best_model']} {result['best_metric']:.4f}, {result['best_model_checkpoint']})")
    if "averaged_model" in result:
        print(f"  averaged {', '.join(result['averaged_checkpoints'])} into {result['averaged_model']}:")
        for key in reported:
            if f"averaged_{key}" in result:
                print(f"    averaged_{key}: {result[f'averaged_{key}']:.4f}")
    for text in result.get("samples", []):
        print(f"\n--- sample ---\n{text}")
    return 0


def command_generate(args) -> int:
    import torch
    from transformers import TextStreamer

    from .inference import (
        decodes_one_sequence, decoding_options, generate_texts, layout_for_decoding, load_model_and_tokenizer,
    )
    from .recipes import RecipeError

    for name in ("max_new_tokens", "num_beams", "num_return_sequences"):
        if getattr(args, name) is not None and getattr(args, name) <= 0:
            raise RecipeError(f"--{name.replace('_', '-')} must be positive, got {getattr(args, name)}.")
    model, tokenizer = load_model_and_tokenizer(
        args.model_dir, device=args.device, dtype=args.dtype, quantize=args.quantize
    )
    if not model.can_generate():
        raise RecipeError(f"{args.model_dir} holds a {type(model).__name__}, which does not generate text: "
                          "`hf-llm eval` scores a classifier.")
    kwargs = {k: v for k, v in {
        "max_new_tokens": args.max_new_tokens, "num_beams": args.num_beams, "temperature": args.temperature,
        "top_k": args.top_k, "top_p": args.top_p, "repetition_penalty": args.repetition_penalty,
        "num_return_sequences": args.num_return_sequences,
    }.items() if v is not None}
    if args.do_sample is not None:
        kwargs["do_sample"] = args.do_sample
    kwargs.update(decoding_options(args.cache_implementation, args.compile))
    torch.manual_seed(args.seed)
    one = decodes_one_sequence(model, **kwargs)
    if args.stream and not one:
        raise RecipeError("--stream prints one sequence as it is generated: it needs --num-beams 1 and "
                          "--num-return-sequences 1.")
    # One sequence at a time: float32 weights column-major on CPU, the faster layout for one-row products
    # (hf_llm/modeling/weight_layout.py); several (beams, returned sequences) keep the row-major one.
    layout_for_decoding(model, **kwargs)
    prompt = "" if model.config.is_encoder_decoder else args.prompt
    if one and args.stream is not False:  # tokens printed as they come (transformers' TextStreamer)
        print(prompt, end="", flush=True)
        generate_texts(model, tokenizer, args.prompt, streamer=TextStreamer(tokenizer, skip_prompt=True,
                                                                             skip_special_tokens=True), **kwargs)
        return 0
    texts = generate_texts(model, tokenizer, args.prompt, **kwargs)
    for number, text in enumerate(texts, 1):
        if len(texts) > 1:
            print(f"--- {number} ---")
        print(prompt + text)
    return 0


def command_chat(args) -> int:
    """An interactive conversation in the terminal; /reset starts over, /exit or end of input quits. The reply is
    printed as it is generated."""
    from .inference import ReplyStreamer, chat_reply, layout_for_decoding, load_model_and_tokenizer
    from .recipes import RecipeError
    from .tokenizer import ensure_chat_template

    model, tokenizer = load_model_and_tokenizer(
        args.model_dir, device=args.device, dtype=args.dtype, quantize=args.quantize
    )
    if not model.can_generate():
        raise RecipeError(f"{args.model_dir} holds a {type(model).__name__}, which does not generate text: "
                          "`hf-llm eval` scores a classifier.")
    ensure_chat_template(tokenizer)
    kwargs = {k: v for k, v in {"max_new_tokens": args.max_new_tokens, "do_sample": args.do_sample,
                                "repetition_penalty": args.repetition_penalty}.items() if v is not None}
    layout_for_decoding(model, **kwargs)  # one reply at a time (weight_layout.py), unless the model's config beams
    messages = [{"role": "system", "content": args.system}] if args.system else []
    interactive = sys.stdin.isatty()
    print("Chatting with", args.model_dir, "- /reset to start over, /exit to quit.")
    while True:
        try:
            line = input("you> " if interactive else "")
        except EOFError:
            break
        if line.strip() in ("/exit", "/quit"):
            break
        if line.strip() == "/reset":
            messages = messages[:1] if args.system else []
            continue
        if not line.strip():
            continue
        messages.append({"role": "user", "content": line})
        print("assistant> ", end="", flush=True)
        streamer = ReplyStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True) if args.stream else None
        answer = chat_reply(model, tokenizer, messages, streamer=streamer, **kwargs)
        if streamer is None:
            print(answer, flush=True)
        messages.append({"role": "assistant", "content": answer})
    return 0


def command_serve(args) -> int:
    """transformers' OpenAI-compatible server for one run folder, until interrupted (hf_llm.serving)."""
    from .serving import make_server

    server = make_server(args.model_dir, host=args.host, port=args.port, device=args.device, dtype=args.dtype,
                         quantize=args.quantize)
    print(f"Serving {args.model_dir} on http://{args.host}:{args.port}/v1 (model name: {args.model_dir!r})",
          flush=True)
    server.run()
    return 0


def command_eval(args) -> int:
    import contextlib

    from .evaluation import evaluate_target

    with contextlib.redirect_stdout(sys.stderr):  # stdout carries the JSON only; the Trainer's logs go to stderr
        metrics = evaluate_target(args.target, args.overrides)
    print(json.dumps(metrics, indent=2))
    return 0


def command_harness_tasks(args) -> int:
    from .resources import eval_tasks_folder

    print(eval_tasks_folder())
    return 0


def command_average(args) -> int:
    from .averaging import average_checkpoints

    folder = average_checkpoints(args.run_dir, args.last, args.output)
    print(f"Averaged the last {args.last} checkpoints of {args.run_dir} into {folder}")
    return 0


def command_tokenizer_train(args) -> int:
    from datasets import DatasetDict

    from .data import load_files, load_raw, require_columns
    from .recipes import RecipeError, load_recipe
    from .tokenizer import batched_texts, train_tokenizer

    if args.recipe is None and not args.files:
        raise RecipeError("Give a recipe or --files to train the tokenizer on.")
    if args.recipe is not None:
        data = load_recipe(args.recipe, args.overrides).data
        column, key = data.text_column, "data.text_column"
        raw = load_raw(data)
    else:  # every file given, as one training split
        for path in args.files:
            if not os.path.isfile(path):
                raise RecipeError(f"--files: file not found: {path}")
        column, key = args.text_column, "--text-column"
        raw = DatasetDict(train=load_files(args.files))
    require_columns(DatasetDict(train=raw["train"]), [column], {column: key})
    tokenizer = train_tokenizer(batched_texts(raw["train"], column), args.vocab_size, args.min_frequency)
    os.makedirs(args.output, exist_ok=True)
    tokenizer.save_pretrained(args.output)
    print(f"Saved a byte-level BPE tokenizer with {len(tokenizer)} tokens to {args.output}")
    return 0


def command_push(args) -> int:
    from .hub import push

    url = push(args.model_dir, args.repo_id, private=args.private, revision=args.revision,
               commit_message=args.commit_message)
    print(f"Pushed {args.model_dir} to {args.repo_id}: {url}")
    return 0


def command_compare(args) -> int:
    from .compare import run_compare

    report = run_compare(args.recipe, args.overrides, args.backbones, args.configs, args.budget, args.match_params,
                         args.output)
    folder = os.path.dirname(next(iter(report["candidates"].values()))["output_dir"].rstrip("/"))
    folder = os.path.dirname(folder)
    print(f"\nReport: {os.path.join(folder, 'report.md')}\n")
    print(open(os.path.join(folder, "report.md")).read())
    return 0


def command_recipes(args) -> int:
    import yaml

    from .resources import bundled_recipes

    for name, file in bundled_recipes().items():
        description = (yaml.safe_load(file.read_text(encoding="utf-8")) or {}).get("description", "")
        print(f"{name:<28} {description}")
    return 0


def add_device_options(command: argparse.ArgumentParser) -> None:
    command.add_argument("--device", default=None, help="cpu (default), cuda, cuda:1, mps, or auto (the GPU if any)")
    command.add_argument("--dtype", default=None, choices=["float32", "bfloat16", "float16"],
                         help="the weights' dtype (default: as saved)")
    command.add_argument("--quantize", default=None, choices=["int8"],
                         help="weight-only int8 weights (torchao through transformers; needs hf_llm[quantization])")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hf-llm", description="Train, evaluate and use recurrent, convolutional and Transformer language "
        "models with the Hugging Face tools.", formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    train = commands.add_parser("train", help="train a model from a recipe", description=RECIPE_HELP,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    train.add_argument("recipe", help="recipe file, or the name of a bundled recipe (see `hf-llm recipes`)")
    train.add_argument("overrides", nargs="*", metavar="section.key=value", help="override recipe values")
    train.add_argument("--overwrite", action="store_true", help="write over a training.output_dir that holds a run")
    train.set_defaults(handler=command_train)

    generate = commands.add_parser("generate", help="generate text with a trained model")
    generate.add_argument("model_dir", help="folder written by `hf-llm train` (model + tokenizer)")
    generate.add_argument("prompt", help="text to continue (causal LM) or to transform (seq2seq)")
    generate.add_argument("--max-new-tokens", type=int, default=None)
    generate.add_argument("--num-beams", type=int, default=None)
    generate.add_argument("--do-sample", action=argparse.BooleanOptionalAction, default=None)
    generate.add_argument("--temperature", type=float, default=None)
    generate.add_argument("--top-k", type=int, default=None)
    generate.add_argument("--top-p", type=float, default=None)
    generate.add_argument("--seed", type=int, default=0)
    generate.add_argument("--repetition-penalty", type=float, default=None)
    generate.add_argument("--cache-implementation", default=None, choices=["dynamic", "static"],
                          help="static: fixed-size caches (every family); default: the model's generation config")
    generate.add_argument("--compile", action="store_true",
                          help="compile the decoding step (torch.compile, one graph; implies a static cache). It pays "
                               "off for long or repeated generations: compiling takes tens of seconds on a CPU")
    generate.add_argument("--num-return-sequences", type=int, default=None)
    generate.add_argument("--stream", action=argparse.BooleanOptionalAction, default=None,
                          help="print tokens as they come (the default for one sequence without beams)")
    add_device_options(generate)
    generate.set_defaults(handler=command_generate)

    chat = commands.add_parser("chat", help="talk to a dialogue model in the terminal")
    chat.add_argument("model_dir", help="folder written by `hf-llm train` (a dialogue recipe)")
    chat.add_argument("--system", default=None, help="a system message to start the conversation with")
    chat.add_argument("--max-new-tokens", type=int, default=64)
    chat.add_argument("--do-sample", action=argparse.BooleanOptionalAction, default=None)
    chat.add_argument("--repetition-penalty", type=float, default=None)
    chat.add_argument("--stream", action=argparse.BooleanOptionalAction, default=True,
                      help="print the reply as it is generated")
    add_device_options(chat)
    chat.set_defaults(handler=command_chat)

    serve = commands.add_parser(
        "serve", help="serve a causal LM with transformers' OpenAI-compatible server",
        description="Answers /v1/chat/completions (streamed or not), /v1/completions, /v1/responses and /v1/models "
        "with transformers' own server application (`transformers serve`), the model loaded from MODEL_DIR. "
        "Requests name the model as MODEL_DIR is written here (or leave it out). Needs `pip install hf_llm[serve]`.",
    )
    serve.add_argument("model_dir", help="folder written by `hf-llm train` (a causal LM or dialogue recipe)")
    serve.add_argument("--host", default="localhost", help="address to listen on (default localhost)")
    serve.add_argument("--port", type=int, default=8000, help="port to listen on (default 8000)")
    add_device_options(serve)
    serve.set_defaults(handler=command_serve)

    evaluate = commands.add_parser(
        "eval", help="evaluate a model on a recipe's validation data",
        description="TARGET is a recipe (evaluates its training.output_dir, or model.name_or_path) or a model "
        "folder (evaluated on the data of the recipe.yaml saved with it). Overrides change the data, e.g. "
        "data.validation_file=dev.jsonl.",
    )
    evaluate.add_argument("target", help="recipe file/name or model folder")
    evaluate.add_argument("overrides", nargs="*", metavar="section.key=value")
    evaluate.set_defaults(handler=command_eval)

    harness = commands.add_parser(
        "harness-tasks", help="print the folder of hf_llm's lm-evaluation-harness tasks (for --include_path)",
        description="Prints the folder holding hf_llm's own lm-evaluation-harness tasks (hf_llm_pydoc), e.g.\n"
        "  lm_eval --model hf --model_args pretrained=RUN_DIR,trust_remote_code=True --tasks hf_llm_pydoc "
        "--include_path \"$(hf-llm harness-tasks)\"", formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    harness.set_defaults(handler=command_harness_tasks)

    average = commands.add_parser(
        "average", help="average the weights of a run's last checkpoints",
        description="Averages the safetensors weights of the last N checkpoint-* folders of RUN_DIR (as fairseq's "
        "average_checkpoints.py) into a model folder with the run's config, generation config, tokenizer and recipe: "
        "`hf-llm eval` and `hf-llm generate` take it. The run's own model is left alone unless --output RUN_DIR.",
    )
    average.add_argument("run_dir", help="folder written by `hf-llm train`, holding checkpoint-* folders")
    average.add_argument("--last", type=int, required=True, metavar="N", help="how many of the last checkpoints")
    average.add_argument("--output", default=None, help="model folder to write (default RUN_DIR/average-last-N)")
    average.set_defaults(handler=command_average)

    tokenizer = commands.add_parser("tokenizer", help="tokenizer tools")
    tokenizer_commands = tokenizer.add_subparsers(dest="tokenizer_command", required=True, metavar="COMMAND")
    tokenizer_train = tokenizer_commands.add_parser("train", help="train a byte-level BPE tokenizer")
    tokenizer_train.add_argument("recipe", nargs="?", help="recipe whose training data to use")
    tokenizer_train.add_argument("overrides", nargs="*", metavar="section.key=value")
    tokenizer_train.add_argument("--files", nargs="+", help="text/jsonl/csv/parquet files instead of a recipe")
    tokenizer_train.add_argument("--text-column", default="text")
    tokenizer_train.add_argument("--vocab-size", type=int, default=8192)
    tokenizer_train.add_argument("--min-frequency", type=int, default=2)
    tokenizer_train.add_argument("--output", required=True, help="folder to save the tokenizer to")
    tokenizer_train.set_defaults(handler=command_tokenizer_train)

    push = commands.add_parser(
        "push", help="publish a trained model to a model hub",
        description="Uploads weights (safetensors), config, modelling code, tokenizer, generation config and a "
        "model card. Endpoint and token: huggingface_hub's settings (HF_ENDPOINT, HF_TOKEN, `hf auth login`).",
    )
    push.add_argument("model_dir", help="folder written by `hf-llm train`")
    push.add_argument("repo_id", help="namespace/name of the repository (created if needed)")
    push.add_argument("--private", action="store_true", help="create the repository as private")
    push.add_argument("--revision", default=None, help="branch to push to (created if needed)")
    push.add_argument("--commit-message", default=None)
    push.set_defaults(handler=command_push)

    compare = commands.add_parser(
        "compare", help="train the families side by side on the same data and budget",
        description="Trains each candidate (a family, or a recipe overlay file) with the same tokenizer, data, "
        "split and budget, and writes a report folder: report.md, results.json, loss_curves.png, "
        "quality_vs_speed.png.",
    )
    compare.add_argument("recipe", help="recipe file or bundled recipe name (pretraining or any task)")
    compare.add_argument("overrides", nargs="*", metavar="section.key=value", help="applied to every candidate")
    which = compare.add_mutually_exclusive_group()
    which.add_argument("--backbones", default=None, help="comma-separated families (default transformer,rnn,cnn)")
    which.add_argument("--configs", default=None, help="comma-separated YAML overlays, one candidate each")
    compare.add_argument("--budget", default=None, help="steps=N, tokens=N or minutes=N (default: the recipe's)")
    compare.add_argument("--match-params", action="store_true",
                         help="size every candidate (hidden_size) to the first one's parameter count")
    compare.add_argument("--output", default=None, help="report folder (default runs/compare-<recipe>)")
    compare.set_defaults(handler=command_compare)

    recipes = commands.add_parser("recipes", help="list the bundled recipes")
    recipes.set_defaults(handler=command_recipes)
    return parser


OVERRIDE = re.compile(r"^[A-Za-z_]\w*\.[\w.]+=")


def parse_arguments(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """argparse, with `section.key=value` overrides allowed anywhere on the line, also after options
    (`hf-llm compare quickstart --budget steps=40 data.train_file=x.txt`): argparse gives the overrides after an
    option back as extras, and they join the others in order."""
    args, extras = parser.parse_known_args(argv)
    if extras and hasattr(args, "overrides") and all(OVERRIDE.match(extra) for extra in extras):
        args.overrides = [*(args.overrides or []), *extras]
    elif extras:
        parser.error(f"unrecognized arguments: {' '.join(extras)}")
    return args


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    parser = build_parser()
    args = parse_arguments(parser, argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    from .recipes import RecipeError

    try:
        return args.handler(args)
    except RecipeError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
