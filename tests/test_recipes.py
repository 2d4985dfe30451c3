"""Recipes: every bundled recipe validates; every mistake is one clear error that names the key or path."""

from __future__ import annotations

import pathlib
import re
import subprocess
import sys

import pytest
import yaml

from transformers.integrations import is_tensorboard_available

from hf_llm.cli import build_parser, parse_arguments
from hf_llm.recipes import RecipeError, load_recipe
from hf_llm.resources import bundled_recipes

TENSORBOARD = is_tensorboard_available()
BUNDLED = sorted(pathlib.Path(__file__).resolve().parent.parent.joinpath("recipes").glob("*.yaml"))


def test_there_are_bundled_recipes():
    assert {p.stem for p in BUNDLED} >= {"quickstart", "pretrain_small"}


def test_the_installed_package_reads_every_recipe_of_the_repository():
    """recipes/ at the top of the repository is what the package ships (hf_llm.recipe_files)."""
    shipped = bundled_recipes()
    assert sorted(shipped) == [p.stem for p in BUNDLED]
    assert all(shipped[p.stem].read_text() == p.read_text() for p in BUNDLED)


@pytest.mark.parametrize("path", BUNDLED, ids=lambda p: p.stem)
def test_every_bundled_recipe_parses_and_validates(path):
    recipe = load_recipe(str(path))
    assert recipe.description, "every recipe says what it is (shown by `hf-llm recipes`)"
    assert recipe.training["output_dir"] and recipe.training["max_steps"] > 0


def test_the_required_keys_exist_and_overrides_use_them():
    recipe = load_recipe("quickstart", [
        "model.backbone=rnn", "model.preset=lstm_lm_small", "data.text_column=body", "data.block_size=64",
        "training.output_dir=/tmp/x", "training.max_steps=7", "model.hidden_size=96",
    ])
    assert recipe.model.backbone == "rnn" and recipe.model.preset == "lstm_lm_small"
    assert recipe.model.config["hidden_size"] == 96
    assert (recipe.data.text_column, recipe.data.block_size) == ("body", 64)
    assert recipe.training["max_steps"] == 7 and recipe.training["output_dir"] == "/tmp/x"


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["modle.backbone=rnn"], r"Unknown section 'modle'"),
        (["model.hiden_size=3"], r"Unknown key 'model.hiden_size'"),
        (["training.max_step=3"], r"Unknown key 'training.max_step'"),
        (["data.block_size=big"], r"'data.block_size' must be int, got 'big'"),
        (["training.max_steps=ten"], r"'training.max_steps' must be int, got 'ten'"),
        (["training.learning_rate=fast"], r"'training.learning_rate' must be float"),
        (["data.packing=maybe"], r"'data.packing' must be bool"),
        (["data.train_file=/no/such/file.jsonl"], r"data.train_file: file not found: /no/such/file.jsonl"),
        (["data.validation_file=missing.csv"], r"data.validation_file: file not found: missing.csv"),
        (["model.name_or_path=./no/such/model"], r"model.name_or_path: folder not found: ./no/such/model"),
        (["model.preset=lstm_huge"], r"model.preset: unknown preset 'lstm_huge'"),
        (["model.backbone=lstm"], r"model: backbone='lstm' is not a backbone"),
        (["model.rnn_cell=rnn"], r"rnn_cell='rnn' is not supported"),
        (["data.block_size=0"], r"data.block_size must be a positive integer"),
        (["training.eval_strategy=sometimes"], r"'training.eval_strategy' must be"),
        (["blocksize=3"], r"must look like section.key=value"),
        (["training.early_stopping_patience=2", "training.load_best_model_at_end=false"],
         r"training.early_stopping_patience needs training.load_best_model_at_end=true"),
        (["training.early_stopping_patience=0"], r"training.early_stopping_patience must be at least 1"),
        (["training.average_last_checkpoints=3"], r"average_last_checkpoints=3 needs training.save_total_limit of "
                                                   r"at least 4 \(or null\), got 1"),
        (["training.average_last_checkpoints=3", "training.save_strategy='no'", "training.load_best_model_at_end=false"],
         r"average_last_checkpoints needs checkpoints"),
        (["data.streaming=true", "training.num_train_epochs=1"], r"data.streaming=true .* give training.max_steps"),
        (["training.save_steps=300"], r"saving steps to be a round multiple of the evaluation steps"),
        (["model.vocab_size=500"], r"'model.vocab_size' is not set by a recipe: .* set tokenizer.vocab_size"),
        (["model.dtype=float64"], r"model.dtype must be one of \['float32', 'bfloat16', 'float16'\]"),
        (["generation.cache_implementation=paged"], r"generation.cache_implementation must be one of \[None, "
                                                    r"'dynamic', 'static'\], got 'paged'"),
        (["generation.compile=true", "generation.cache_implementation=dynamic"],
         r"generation.compile compiles a fixed-shape decoding step: it needs cache_implementation static"),
        pytest.param(["training.report_to=tensorboard"], r"training.report_to=tensorboard needs the tensorboard "
                     r"package: pip install tensorboard \(pip install 'hf_llm\[tensorboard\]'\)",
                     marks=pytest.mark.skipif(TENSORBOARD, reason="tensorboard is installed")),
    ],
)
def test_bad_recipes_fail_with_a_message_naming_the_problem(overrides, message):
    with pytest.raises(RecipeError, match=message):
        load_recipe("quickstart", overrides)


def test_keeping_the_best_aligns_evaluation_with_saving_and_a_command_line_budget_replaces_the_recipes():
    from hf_llm.recipes import training_arguments_fields

    fields = training_arguments_fields({"load_best_model_at_end": True, "save_steps": 50, "logging_steps": 20,
                                        "early_stopping_patience": 3})
    assert (fields["eval_strategy"], fields["eval_steps"]) == ("steps", 50) and "early_stopping_patience" not in fields
    assert training_arguments_fields({"load_best_model_at_end": True, "save_strategy": "epoch"})["eval_strategy"] == "epoch"
    assert "eval_steps" not in training_arguments_fields({"save_steps": 50})
    recipe = load_recipe("translation_tiny", ["training.num_train_epochs=3"])
    assert recipe.training["num_train_epochs"] == 3 and "max_steps" not in recipe.training
    assert load_recipe("translation_tiny", ["training.max_steps=9"]).training["max_steps"] == 9


def test_values_keep_the_type_their_field_declares(tmp_path):
    """HF's own `no` (YAML 1.1 would read False), a number where text is wanted, in overrides and in files."""
    recipe = load_recipe("quickstart", ["training.eval_strategy=no", "training.save_strategy=no",
                                        "training.load_best_model_at_end=false", "training.run_name=2024",
                                        "training.learning_rate=1e-3"])
    assert (recipe.training["eval_strategy"], recipe.training["save_strategy"]) == ("no", "no")
    assert recipe.training["run_name"] == "2024" and recipe.training["learning_rate"] == 0.001
    path = tmp_path / "r.yaml"
    path.write_text("training:\n  eval_strategy: no\n  save_strategy: no\n  load_best_model_at_end: false\n"
                    "  max_steps: 5\n  output_dir: out\ndata:\n  packing: yes\n")
    with pytest.raises(RecipeError, match=r"'data.packing' must be bool, got 'yes' \(str\) \(booleans are true / false\)"):
        load_recipe(str(path))  # only true / false are booleans: `yes` is not silently True
    path.write_text(path.read_text().replace("packing: yes", "packing: true"))
    recipe = load_recipe(str(path))
    assert recipe.training["eval_strategy"] == "no" and recipe.data.packing is True


@pytest.mark.parametrize("argv", [
    ["compare", "quickstart", "--budget", "steps=40", "data.block_size=64", "model.backbone=rnn"],
    ["compare", "quickstart", "data.block_size=64", "--budget", "steps=40", "model.backbone=rnn"],
    ["compare", "quickstart", "data.block_size=64", "model.backbone=rnn", "--budget", "steps=40"],
])
def test_overrides_may_stand_before_or_after_options(argv):
    args = parse_arguments(build_parser(), argv)
    assert args.recipe == "quickstart" and args.budget == "steps=40"
    assert args.overrides == ["data.block_size=64", "model.backbone=rnn"]


def test_an_unknown_option_is_still_refused(capsys):
    with pytest.raises(SystemExit):
        parse_arguments(build_parser(), ["train", "quickstart", "training.max_steps=3", "--bogus"])
    assert "unrecognized arguments: --bogus" in capsys.readouterr().err


def test_bad_files_fail_clearly(tmp_path):
    with pytest.raises(RecipeError, match="Recipe file not found: nope.yaml"):
        load_recipe("nope.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("model: [unclosed\n")
    with pytest.raises(RecipeError, match="is not valid YAML"):
        load_recipe(str(broken))
    odd = tmp_path / "odd.yaml"
    odd.write_text(yaml.safe_dump({"model": {"backbone": "rnn"}, "optimizer": {"lr": 1}}))
    with pytest.raises(RecipeError, match="Unknown section 'optimizer'"):
        load_recipe(str(odd))
    task = tmp_path / "task.yaml"
    task.write_text(yaml.safe_dump({"task": "poetry"}))
    with pytest.raises(RecipeError, match="Unknown task 'poetry'"):
        load_recipe(str(task))


def test_the_cli_reports_errors_in_one_line_with_exit_status_2(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "hf_llm.cli", "train", "quickstart", "training.max_step=3"],
        capture_output=True, text=True, cwd=tmp_path, timeout=120,
    )
    assert result.returncode == 2
    # hf_llm's own output is one line; installed packages may log at import before it (torchao 0.18 on a CPU
    # machine: "Failed to load .../_C_cutlass_90a.abi3.so", its CUDA kernels)
    # and torch's log lines ("W1201 17:54:14.453000 ... _pytree.py:630] ...")
    ours = [line for line in result.stderr.splitlines()
            if not line.startswith("Failed to load ") and not re.match(r"[WI]\d{4} \d\d:\d\d:\d\d", line)]
    assert len(ours) == 1 and ours[0].startswith("error: Unknown key 'training.max_step'"), result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "runs").exists(), "nothing is written for a bad recipe"


@pytest.mark.parametrize("command", [[], ["train"], ["generate"], ["eval"], ["tokenizer"], ["tokenizer", "train"], ["recipes"]])
def test_help_everywhere(command, capsys):
    from hf_llm.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main([*command, "--help"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.startswith("usage: hf-llm")


def test_recipes_command_lists_each_bundled_recipe(capsys):
    from hf_llm.cli import main

    assert main(["recipes"]) == 0
    out = capsys.readouterr().out
    for path in BUNDLED:
        line = next(line for line in out.splitlines() if line.startswith(path.stem))
        assert len(line.split(None, 1)) == 2, f"{path.stem} has a description"


@pytest.mark.parametrize("family", ["transformer", "rnn", "cnn"])
def test_a_recipe_chooses_the_attention_implementation_and_the_weights_dtype(family, tiny_tokenizer):
    import torch

    from hf_llm.models import build_model

    size = ["model.hidden_size=32", "model.num_hidden_layers=1", "model.num_attention_heads=2",
            "model.intermediate_size=64", f"model.backbone={family}"]
    built = {}
    for implementation in ("eager", "sdpa"):
        torch.manual_seed(0)
        recipe = load_recipe("quickstart", [*size, f"model.attn_implementation={implementation}"])
        built[implementation] = build_model(recipe, tiny_tokenizer).eval()
        assert built[implementation].config._attn_implementation == implementation
    ids = torch.tensor([[5, 9, 11, 7, 20, 6]])
    torch.testing.assert_close(built["eager"](ids).logits, built["sdpa"](ids).logits, atol=1e-5, rtol=1e-5)
    model = build_model(load_recipe("quickstart", [*size, "model.dtype=bfloat16"]), tiny_tokenizer)
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    with pytest.raises(RecipeError, match=r"model: .*attn_implementation=\"bogus\"|model: .*bogus"):
        build_model(load_recipe("quickstart", [*size, "model.attn_implementation=bogus"]), tiny_tokenizer)


def test_every_recipe_key_the_readme_names_is_accepted():
    """The README's claims match the code: each `section.key` it names is a key of that section."""
    import re
    import typing

    from hf_llm.recipe_schema import SECTIONS, config_field_types, training_field_types
    from hf_llm.tasks import TASKS

    readme = (pathlib.Path(__file__).resolve().parent.parent / "README.md").read_text()
    named = set(re.findall(r"\b(model|data|tokenizer|training|generation)\.([a-z_0-9]+)\b(?!\()", readme))
    allowed = {name: set(typing.get_type_hints(cls)) for name, cls in SECTIONS.items()}
    allowed["model"] |= set(config_field_types())
    allowed["training"] = set().union(*(training_field_types(task.arguments_class) for task in TASKS.values()))
    assert len(named) > 30, "the README names the keys users set"
    assert sorted(f"{s}.{k}" for s, k in named if k not in allowed[s]) == []


def test_the_generation_section_chooses_static_caches_and_a_compiled_decoding_step():
    from hf_llm.recipe_schema import generation_fields

    assert "cache_implementation" not in generation_fields(load_recipe("quickstart").generation, False)
    static = load_recipe("quickstart", ["generation.cache_implementation=static"]).generation
    assert generation_fields(static, False)["cache_implementation"] == "static" and not static.compile
    compiled = load_recipe("quickstart", ["generation.compile=true"]).generation
    assert compiled.compile and generation_fields(compiled, False)["cache_implementation"] == "static"
