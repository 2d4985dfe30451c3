"""A saved checkpoint loads with trust_remote_code=True in a process that cannot import hf_llm (and generates the
same with transformers' static cache)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from cases import LM_CASES, SEQ2SEQ_CASES
from helpers import make_lm, make_seq2seq, random_ids

REMOTE_SCRIPT = r"""
import json, sys
sys.modules["hf_llm"] = None  # hf_llm must not be importable here: only the checkpoints' own code may run
import torch
from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoModelForSeq2SeqLM

results = {}
for case, request in json.loads(sys.argv[1]).items():
    path = request["path"]
    auto = AutoModelForCausalLM if request["kind"] == "lm" else AutoModelForSeq2SeqLM
    model = auto.from_pretrained(path, trust_remote_code=True).eval()
    config = AutoConfig.from_pretrained(path, trust_remote_code=True)
    base = AutoModel.from_pretrained(path, trust_remote_code=True)
    inputs = {k: torch.tensor(v) for k, v in request["inputs"].items()}
    with torch.no_grad():
        logits = model(**inputs).logits
        generated = model.generate(inputs["input_ids"], max_new_tokens=5, num_beams=2, do_sample=False, pad_token_id=0)
        static = model.generate(inputs["input_ids"], max_new_tokens=5, num_beams=2, do_sample=False, pad_token_id=0,
                                cache_implementation="static")
    results[case] = {
        "module": type(model).__module__,
        "config_module": type(config).__module__,
        "base_class": type(base).__name__,
        "logits": logits.tolist(),
        "generated": generated.tolist(),
        "static_generated": static.tolist(),
    }
print(json.dumps(results))
"""

# Copy attention (issue 21): one encoder-decoder per decoder family, with copying and coverage on.
COPY_CASES = {f"{case}+copy": case for case in ("transformer-transformer", "rnn-rnn[lstm,bahdanau,bi]", "cnn-cnn")}
CASES = list(LM_CASES) + list(SEQ2SEQ_CASES) + list(COPY_CASES)


def make_case(case: str):
    if case in COPY_CASES:
        return make_seq2seq(COPY_CASES[case], copy_attention=True, coverage_loss_weight=0.1)
    return make_lm(case) if case in LM_CASES else make_seq2seq(case)


def case_inputs(case: str) -> dict:
    ids = random_ids(2, 6, seed=30)
    return dict(input_ids=ids) if case in LM_CASES else dict(input_ids=ids, decoder_input_ids=random_ids(2, 4, seed=31))


@pytest.fixture(scope="module")
def remote_results(tmp_path_factory):
    """Save every case's model, then load them all in one process that cannot import hf_llm."""
    root = tmp_path_factory.mktemp("remote")
    models, requests = {}, {}
    for i, case in enumerate(CASES):
        model = make_case(case)
        path = root / f"checkpoint{i}"
        model.save_pretrained(path)
        assert (path / "modeling_hf_llm.py").exists() and (path / "configuration_hf_llm.py").exists()
        models[case] = model
        requests[case] = {
            "path": str(path),
            "kind": "lm" if case in LM_CASES else "s2s",
            "inputs": {k: v.tolist() for k, v in case_inputs(case).items()},
        }
    env = {**os.environ, "HF_MODULES_CACHE": str(root / "modules"), "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(
        [sys.executable, "-c", REMOTE_SCRIPT, json.dumps(requests)], capture_output=True, text=True, env=env,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return models, json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("case", CASES)
def test_trust_remote_code_load_gives_identical_logits_and_generations(case, remote_results):
    models, results = remote_results
    model, remote = models[case], results[case]
    assert remote["module"].startswith("transformers_modules."), remote["module"]
    assert remote["config_module"].startswith("transformers_modules.")
    assert remote["base_class"] == "HfLlmModel"
    inputs = case_inputs(case)
    with torch.no_grad():
        logits = model(**inputs).logits
        generated = model.generate(inputs["input_ids"], max_new_tokens=5, num_beams=2, do_sample=False, pad_token_id=0)
    torch.testing.assert_close(torch.tensor(remote["logits"]), logits, atol=1e-6, rtol=0)
    assert remote["generated"] == generated.tolist()
    assert remote["static_generated"] == generated.tolist()  # static caches work from the checkpoint's own code


def test_loading_without_trust_remote_code_refuses_to_run_code(tmp_path):
    make_lm("transformer").save_pretrained(tmp_path / "checkpoint")
    script = (
        "import sys; sys.modules['hf_llm'] = None\n"
        "from transformers import AutoModelForCausalLM\n"
        f"AutoModelForCausalLM.from_pretrained({str(tmp_path / 'checkpoint')!r})\n"
    )
    env = {**os.environ, "HF_MODULES_CACHE": str(tmp_path / "modules")}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode != 0
    assert "trust_remote_code" in result.stderr
    assert not (tmp_path / "modules" / "transformers_modules" / "checkpoint").exists()
