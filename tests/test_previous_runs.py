"""Run folders written before the task/driver restructuring (issue 18; `hf-llm train` at commit 8fa2f1f: a
ConvS2S translation run with a source prefix, and a recurrent LM) still work with today's commands: `hf-llm eval`
reproduces the scores the run saved, `hf-llm generate` prints what it printed then."""

from __future__ import annotations

import json
import pathlib

import pytest

from hf_llm.cli import main

RUNS = pathlib.Path(__file__).parent / "data" / "run_v1"


@pytest.mark.parametrize("run, prompt, extra", [
    ("translation", "We have three small red cars.", []),
    ("lm", "Return the", ["--max-new-tokens", "6"]),
])
def test_a_run_folder_of_the_previous_layout_evaluates_and_generates_as_before(run, prompt, extra, capsys):
    folder = RUNS / run
    saved = json.loads((folder / "eval_results.json").read_text())
    assert main(["eval", str(folder)]) == 0
    evaluated = json.loads(capsys.readouterr().out)
    for key in ("eval_loss", "eval_bleu", "eval_chrf", "perplexity"):
        if key in saved:
            assert evaluated[key] == pytest.approx(saved[key], rel=1e-4), key
    assert main(["generate", str(folder), prompt, *extra]) == 0
    assert capsys.readouterr().out == (folder / "expected_generate.txt").read_text()
