"""`hf-llm compare`: every landed family on the same data and budget, one report."""

from __future__ import annotations

import json
import os

import pytest
import yaml
from helpers import write_recipe

from hf_llm.cli import main
from hf_llm.compare import parse_budget
from hf_llm.recipes import RecipeError

PNG = b"\x89PNG\r\n\x1a\n"


def table_rows(report_md: str) -> dict[str, list[str]]:
    rows = {}
    for line in report_md.splitlines()[4:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        rows[cells[0]] = cells[1:]
    return rows


def test_a_tiny_compare_over_all_families(docs, tmp_path, capsys):  # noqa: F811
    recipe = write_recipe(tmp_path / "r.yaml", "transformer", tmp_path / "unused", docs, save_strategy="no",
                          logging_steps=2)
    report = tmp_path / "report"
    assert main(["compare", recipe, "--budget", "steps=8", "--match-params", "--output", str(report)]) == 0
    for name in ("report.md", "results.json", "loss_curves.png", "quality_vs_speed.png"):
        assert (report / name).is_file(), name
    for chart in ("loss_curves.png", "quality_vs_speed.png"):
        assert (report / chart).read_bytes()[:8] == PNG
    results = json.loads((report / "results.json").read_text())
    rows = table_rows((report / "report.md").read_text())
    assert set(rows) == set(results["candidates"]) == {"transformer", "rnn", "cnn"}
    first = results["candidates"]["transformer"]["parameters"]
    for family, cells in rows.items():
        assert all(cell not in ("", "None", "-") for cell in cells), (family, cells)
        row = results["candidates"][family]
        assert row["steps"] == 8
        assert abs(row["parameters"] - first) / first < 0.15, "--match-params sizes every family alike"
        # the table's figures are the run's own
        run_dir = row["output_dir"]
        evaluated = json.loads(open(os.path.join(run_dir, "eval_results.json")).read())
        trained = json.loads(open(os.path.join(run_dir, "train_results.json")).read())
        state = json.loads(open(os.path.join(run_dir, "trainer_state.json")).read())
        assert float(cells[5]) == pytest.approx(evaluated["eval_loss"], abs=1e-4)
        assert float(cells[6]) == pytest.approx(evaluated["perplexity"], abs=1e-4)
        assert int(cells[2]) == round(state["num_input_tokens_seen"] / trained["train_runtime"])
        assert int(cells[0].replace(",", "")) == row["parameters"]
    # every candidate used the one shared tokenizer
    tokenizers = {yaml.safe_load(open(os.path.join(r["output_dir"], "recipe.yaml")))["tokenizer"]["name_or_path"]
                  for r in results["candidates"].values()}
    assert tokenizers == {str(report / "tokenizer")}


def test_compare_works_for_a_task_recipe_with_overlay_files(tmp_path):
    from helpers import write_task_recipe

    recipe = write_task_recipe(tmp_path, "classification", "transformer", max_steps=4)
    (tmp_path / "gru.yaml").write_text(yaml.safe_dump({"model": {"backbone": "rnn", "rnn_cell": "gru"}}))
    (tmp_path / "wide.yaml").write_text(yaml.safe_dump({"model": {"hidden_size": 64}}))
    report = tmp_path / "report"
    configs = f"{tmp_path / 'gru.yaml'},{tmp_path / 'wide.yaml'}"
    assert main(["compare", recipe, "--configs", configs, "--output", str(report)]) == 0
    results = json.loads((report / "results.json").read_text())
    assert set(results["candidates"]) == {"gru", "wide"} and results["metric"] == "eval_accuracy"
    assert results["candidates"]["gru"]["inference_unit"] == "examples/s"


@pytest.mark.parametrize("budget", ["steps", "epochs=3", "steps=-1", "minutes=abc"])
def test_bad_budgets_are_clear_errors(budget):
    with pytest.raises(RecipeError, match="--budget"):
        parse_budget(budget)
