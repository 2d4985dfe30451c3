"""LoRA (peft) on every family (issue 17): a user's first try, `LoraConfig(target_modules="all-linear")`, adapts each
family (the recurrent family's LSTM/GRU weights included, through their nn.Linear views), the adapter changes the
outputs, trains, survives a save and a reload on a `trust_remote_code` checkpoint in a process that cannot import
hf_llm, and merges to the same logits; the fused loss stays exact when the head is adapted; a recipe's `peft:`
section trains an adapter through the real driver."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys

import pytest
import torch
import yaml
from helpers import assert_logits_close, make_lm, make_seq2seq, random_ids, write_task_recipe

peft = pytest.importorskip("peft")
from peft import LoraConfig, get_peft_model  # noqa: E402

from hf_llm.cli import main  # noqa: E402
from hf_llm.recipes import RecipeError, load_recipe  # noqa: E402

LM = ["transformer", "rnn-lstm", "rnn-gru", "cnn"]
SEQ2SEQ = ["rnn-rnn[lstm,luong_general,bi,feed]", "rnn-rnn[lstm,luong_dot,uni]", "transformer-transformer"]
RECURRENT_TARGETS = {"ih_l0", "hh_l0"}  # the views of weight_ih_l0 / weight_hh_l0 (HfLlmGateProjection)


def build(case: str, **overrides):
    return make_lm(case, **overrides) if case in LM else make_seq2seq(case, **overrides)


def inputs_for(case: str) -> dict:
    ids = random_ids(2, 7, seed=40)
    if case in LM:
        return dict(input_ids=ids, attention_mask=torch.tensor([[0, 0, 1, 1, 1, 1, 1], [1] * 7]))
    return dict(input_ids=ids, attention_mask=torch.tensor([[0, 1, 1, 1, 1, 1, 1], [1] * 7]),
                decoder_input_ids=random_ids(2, 5, seed=41))


def nonzero_lora(model, **fields):
    """`get_peft_model` with a random (not zero) B, so that the adapter changes the outputs from the start."""
    return get_peft_model(model, LoraConfig(r=4, lora_alpha=8, init_lora_weights=False, **fields))


def adapted_names(model) -> set[str]:
    return {name.rsplit(".", 1)[-1] for name, module in model.named_modules() if hasattr(module, "lora_A")
            and isinstance(module.lora_A, torch.nn.ModuleDict)}


@pytest.mark.parametrize("case", LM + SEQ2SEQ)
def test_all_linear_adapts_every_family_changes_the_outputs_and_trains_only_the_adapter(case):
    model = build(case)
    inputs = inputs_for(case)
    with torch.no_grad():
        before = model(**inputs).logits
    adapted = nonzero_lora(model, target_modules="all-linear")
    if case.startswith("rnn"):
        assert RECURRENT_TARGETS <= adapted_names(adapted), "the LSTM/GRU weights are adapted"
    with torch.no_grad():
        after = adapted(**inputs).logits
    assert (after - before).abs().max() > 1e-2

    adapted.train()
    labels = inputs["input_ids"] if case in LM else inputs["decoder_input_ids"]
    adapted(**inputs, labels=labels).loss.backward()
    for name, param in adapted.named_parameters():
        if "lora_" in name:
            assert param.grad is not None and param.grad.abs().sum() > 0, name
        else:
            assert not param.requires_grad, f"{name}: the base stays frozen"


@pytest.mark.parametrize("case", ["rnn-lstm", "rnn-rnn[lstm,luong_dot,uni]"])
def test_an_adapted_recurrent_model_generates_the_same_with_and_without_the_cache(case):
    """The cached forward steps (and records the LSTM cells from the adapted weights the kernel ran with), the
    uncached one runs the fused kernel over the whole sequence: both with the adapted weights."""
    adapted = nonzero_lora(build(case), target_modules="all-linear").eval()
    inputs = {k: v for k, v in inputs_for(case).items() if k != "decoder_input_ids"}
    options = dict(max_new_tokens=5, do_sample=False, pad_token_id=0)
    cached = adapted.generate(**inputs, use_cache=True, **options)
    uncached = adapted.generate(**inputs, use_cache=False, **options)
    assert torch.equal(cached, uncached)


REMOTE_SCRIPT = r"""
import json, sys
sys.modules["hf_llm"] = None  # only the checkpoints' own code may run
import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM

out = {}
for case, request in json.loads(sys.argv[1]).items():
    auto = AutoModelForCausalLM if request["kind"] == "lm" else AutoModelForSeq2SeqLM
    base = auto.from_pretrained(request["base"], trust_remote_code=True)
    model = PeftModel.from_pretrained(base, request["adapter"]).eval()
    inputs = {k: torch.tensor(v) for k, v in request["inputs"].items()}
    with torch.no_grad():
        adapted = model(**inputs).logits
        merged = model.merge_and_unload()(**inputs).logits
    out[case] = {"module": type(base).__module__, "adapted": adapted.tolist(), "merged": merged.tolist()}
print("RESULT " + json.dumps(out))
"""


def run_without_hf_llm(script: str, requests: dict, modules) -> dict:
    env = {**os.environ, "HF_MODULES_CACHE": str(modules), "HF_HUB_OFFLINE": "1"}
    result = subprocess.run([sys.executable, "-c", script, json.dumps(requests)], capture_output=True, text=True,
                            env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    line = next(line for line in result.stdout.splitlines() if line.startswith("RESULT "))
    return json.loads(line.removeprefix("RESULT "))


REMOTE_CASES = ["transformer", "rnn-lstm", "cnn", "rnn-rnn[lstm,luong_general,bi,feed]"]


@pytest.fixture(scope="module")
def reloaded(tmp_path_factory):
    """Per case: a base model saved with save_pretrained, an adapter with non-zero weights on it saved by peft,
    the adapted logits here; then base + adapter loaded by peft on the trust_remote_code checkpoint elsewhere."""
    root = tmp_path_factory.mktemp("peft")
    expected, requests = {}, {}
    for i, case in enumerate(REMOTE_CASES):
        base = build(case)
        base.save_pretrained(root / f"base{i}")
        adapted = nonzero_lora(base, target_modules="all-linear").eval()
        adapted.save_pretrained(root / f"adapter{i}")
        inputs = inputs_for(case)
        with torch.no_grad():
            logits = adapted(**inputs).logits
            merged = copy.deepcopy(adapted).merge_and_unload()(**inputs).logits
            # the copy's views read the copy's LSTM: merging it left this model as it was
            assert_logits_close(adapted(**inputs).logits, logits)
        expected[case] = (logits, merged)
        requests[case] = {"base": str(root / f"base{i}"), "adapter": str(root / f"adapter{i}"),
                          "kind": "lm" if case in LM else "s2s", "inputs": {k: v.tolist() for k, v in inputs.items()}}
    return expected, run_without_hf_llm(REMOTE_SCRIPT, requests, root / "modules")


@pytest.mark.parametrize("case", REMOTE_CASES)
def test_a_saved_adapter_reloads_on_the_trust_remote_code_checkpoint_and_merges_to_the_same_logits(case, reloaded):
    expected, results = reloaded
    logits, merged_here = expected[case]
    remote = results[case]
    assert remote["module"].startswith("transformers_modules."), remote["module"]
    assert_logits_close(torch.tensor(remote["adapted"]), logits)
    assert_logits_close(torch.tensor(remote["merged"]), logits)
    assert_logits_close(merged_here, logits)


@pytest.mark.parametrize("case", ["rnn-lstm", "transformer-transformer"])
def test_the_fused_loss_stays_exact_when_the_head_is_adapted(case):
    """`config.fused_loss` computes the loss from the head's weight without logits. With LoRA on the head the
    weight is not the whole map, so the loss comes from the logits then: it equals the fused loss of the merged
    model (whose head is a plain nn.Linear again). With the head not adapted (all-linear) the fused path runs."""
    model = build(case, fused_loss=True, tie_word_embeddings=False, dropout=0.0)
    inputs = inputs_for(case)
    labels = inputs["input_ids"] if case in LM else inputs["decoder_input_ids"]

    head_adapted = nonzero_lora(copy.deepcopy(model), target_modules=["lm_head"]).train()
    out = head_adapted(**inputs, labels=labels)
    merged = copy.deepcopy(head_adapted).merge_and_unload().train()
    fused = merged(**inputs, labels=labels)
    assert fused.logits is None, "the merged model's head is a plain nn.Linear: the fused loss runs"
    torch.testing.assert_close(out.loss, fused.loss, atol=1e-5, rtol=1e-5)
    assert (out.loss - model.train()(**inputs, labels=labels).loss).abs() > 1e-3, "the adapted head counts"

    body_adapted = nonzero_lora(copy.deepcopy(model), target_modules="all-linear").train()
    fused = body_adapted(**inputs, labels=labels)
    assert fused.logits is None
    body_adapted.eval()  # an evaluation forward computes logits, and its loss from them
    unfused = body_adapted(**inputs, labels=labels)
    torch.testing.assert_close(fused.loss, unfused.loss, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("case", ["cnn", "cnn-cnn"])
def test_a_weight_normalised_model_merges_to_the_same_logits(case):
    """peft's own merge adds to `weight.data`, lost on a weight-normalised layer; `hf_llm.adapters.merged` (what a
    run saves) assigns the merged matrix through the parametrization."""
    from hf_llm.adapters import merged

    adapted = nonzero_lora(build(case, cnn_weight_norm=True), target_modules=["conv", "fc_in", "fc_out"]).eval()
    inputs = inputs_for(case)
    with torch.no_grad():
        expected = adapted(**inputs).logits
        assert_logits_close(merged(adapted)(**inputs).logits, expected)
        with adapted.disable_adapter():
            assert (adapted(**inputs).logits - expected).abs().max() > 1e-2, "the adapter counts"


def test_peft_recipe_sections_are_checked(tmp_path):
    recipe = write_task_recipe(tmp_path, "causal_lm", "rnn")
    with pytest.raises(RecipeError, match=r"Unknown key 'peft.rank'"):
        load_recipe(recipe, ["peft.rank=4", f"model.name_or_path={tmp_path}"])
    with pytest.raises(RecipeError, match=r"peft: a LoRA adapter adapts a trained model: set model.name_or_path"):
        load_recipe(recipe, ["peft.r=4"])
    with pytest.raises(RecipeError, match=r"'peft.bias' must be .*'lora_only'"):
        load_recipe(recipe, ["peft.bias=sometimes", f"model.name_or_path={tmp_path}"])
    with pytest.raises(RecipeError, match=r"peft.r .* must be at least 1, got 0"):
        load_recipe(recipe, ["peft.r=0", f"model.name_or_path={tmp_path}"])
    assert load_recipe(recipe).peft is None
    assert load_recipe(recipe, ["peft.r=4", f"model.name_or_path={tmp_path}"]).peft.target_modules == "all-linear"


RUN_SCRIPT = r"""
import json, sys
sys.modules["hf_llm"] = None
import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM

base_dir, run_dir, ids = sys.argv[1], sys.argv[2], torch.tensor(json.loads(sys.argv[3]))
adapted = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base_dir, trust_remote_code=True),
                                    run_dir + "/adapter").eval()
merged = AutoModelForCausalLM.from_pretrained(run_dir, trust_remote_code=True).eval()
with torch.no_grad():
    print("RESULT " + json.dumps({"adapted": adapted(ids).logits.tolist(), "merged": merged(ids).logits.tolist()}))
"""


def test_a_peft_recipe_trains_an_adapter_through_the_driver_and_the_saved_adapter_reloads(tmp_path):
    """A tiny recurrent LM run, then a `peft:` run on it (keeping its best checkpoint, as the bundled recipes do):
    the adapter (LSTM weights included) trains, the run folder holds the merged model that hf-llm's commands load,
    and adapter/ the adapter that peft loads on the base."""
    recipe = write_task_recipe(tmp_path, "causal_lm", "rnn", data={"max_train_samples": 200, "max_eval_samples": 16},
                               max_steps=1, per_device_train_batch_size=8)
    base_dir, run_dir = tmp_path / "base", tmp_path / "lora"
    assert main(["train", recipe, f"training.output_dir={base_dir}"]) == 0
    assert main(["train", recipe, f"training.output_dir={run_dir}", f"model.name_or_path={base_dir}",
                 f"tokenizer.name_or_path={base_dir}", "peft.r=4", "peft.lora_alpha=8", "training.max_steps=12",
                 "training.learning_rate=1e-2", "training.save_strategy=steps", "training.save_steps=6",
                 "training.load_best_model_at_end=true"]) == 0
    assert (run_dir / "checkpoint-12" / "adapter_model.safetensors").is_file(), "checkpoints hold the adapter"
    config = json.loads((run_dir / "adapter" / "adapter_config.json").read_text())
    assert RECURRENT_TARGETS <= {name.rsplit(".", 1)[-1] for name in config["target_modules"]}
    assert config["base_model_name_or_path"] == str(base_dir)
    assert yaml.safe_load((run_dir / "recipe.yaml").read_text())["peft"]["r"] == 4
    assert "LoRA (peft) | r=4" in (run_dir / "README.md").read_text(), "the model card says how it was trained"
    results = json.loads((run_dir / "all_results.json").read_text())
    assert results["eval_loss"] < results["init_eval_loss"], "the adapter learned"

    from safetensors.torch import load_file

    base, merged = load_file(base_dir / "model.safetensors"), load_file(run_dir / "model.safetensors")
    assert base.keys() == merged.keys()
    lstm = next(k for k in base if k.endswith("weight_hh_l0"))
    assert not torch.equal(base[lstm], merged[lstm]), "the recurrent weights were adapted (and merged)"
    assert torch.equal(base[next(k for k in base if k.endswith("bias_hh_l0"))],
                       merged[next(k for k in base if k.endswith("bias_hh_l0"))]), "the base stayed frozen"

    ids = random_ids(1, 8, seed=3).tolist()
    env = {**os.environ, "HF_MODULES_CACHE": str(tmp_path / "modules"), "HF_HUB_OFFLINE": "1"}
    result = subprocess.run([sys.executable, "-c", RUN_SCRIPT, str(base_dir), str(run_dir), json.dumps(ids)],
                            capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    got = json.loads(next(line for line in result.stdout.splitlines() if line.startswith("RESULT "))[7:])
    assert_logits_close(torch.tensor(got["adapted"]), torch.tensor(got["merged"]))
    assert main(["generate", str(run_dir), "Return the", "--max-new-tokens", "3"]) == 0
