"""Sharing: push to a model hub (a real `huggingface_hub` client talking HTTP to a hub on 127.0.0.1), then
load from it with `trust_remote_code=True` in a process that cannot import hf_llm."""

from __future__ import annotations

import json
import os
import shutil
import re
import subprocess
import sys

import pytest
import torch
import yaml
from helpers import corpus_sample, write_recipe, write_task_recipe
from hub_server import LocalHub
from huggingface_hub import ModelCard
from huggingface_hub.repocard_data import model_index_to_eval_results
from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer

from hf_llm.cli import main

FAMILIES = ["transformer", "rnn", "cnn"]
PROMPT = "Return the number"


def hub_env(hub: LocalHub, tmp_path) -> dict:
    return {**os.environ, "HF_ENDPOINT": hub.endpoint, "HF_TOKEN": "hf_test_token", "HF_HUB_OFFLINE": "0",
            "HF_HOME": str(tmp_path / "hf_home"), "HF_MODULES_CACHE": str(tmp_path / "modules")}


def run_python(code: str, env: dict, *args: str) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    return result


PUSH_SCRIPT = r"""
import json, sys
from hf_llm.cli import main
for folder, repo_id in json.loads(sys.argv[1]):
    assert main(["push", folder, repo_id]) == 0
"""

LOAD_SCRIPT = r"""
import json, sys
sys.modules["hf_llm"] = None  # only the repositories' own code may run
import torch
from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer
out = {}
for repo_id, kind, prompt in json.loads(sys.argv[1]):
    auto = AutoModelForCausalLM if kind == "lm" else AutoModelForSeq2SeqLM
    model = auto.from_pretrained(repo_id, trust_remote_code=True).eval()
    tokenizer = AutoTokenizer.from_pretrained(repo_id)
    ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    if kind == "s2s":
        ids = ids + [tokenizer.eos_token_id]
        decoder = torch.tensor([[model.config.decoder_start_token_id] + ids[:3]])
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([ids]), decoder_input_ids=decoder).logits
    else:
        with torch.no_grad():
            logits = model(torch.tensor([ids])).logits
    with torch.no_grad():
        generated = model.generate(torch.tensor([ids]), max_new_tokens=6, num_beams=2, do_sample=False)
    out[repo_id] = {"module": type(model).__module__, "logits": logits.tolist(), "generated": generated.tolist(),
                    "chat_template": tokenizer.chat_template is not None}
print("RESULT " + json.dumps(out))
"""


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny causal LM and a tiny translation model of every family, trained with `hf-llm train`."""
    root = tmp_path_factory.mktemp("trained")
    docs = corpus_sample(root, 200, 30)
    folders = {}
    for family in FAMILIES:
        lm_root = root / f"lm-{family}"
        lm_root.mkdir()
        assert main(["train", write_recipe(lm_root / "r.yaml", family, lm_root / "run", docs, max_steps=4,
                                            save_strategy="no")]) == 0
        folders[(family, "lm")] = lm_root / "run"
        s2s_root = root / f"s2s-{family}"
        s2s_root.mkdir()
        assert main(["train", write_task_recipe(s2s_root, "translation", family, max_steps=4,
                                                data={"max_train_samples": 100, "max_eval_samples": 8})]) == 0
        folders[(family, "s2s")] = s2s_root / "run"
    return folders


def test_push_then_load_with_remote_code_gives_identical_logits_and_generations(trained, tmp_path):
    with LocalHub() as hub:
        env = hub_env(hub, tmp_path)
        pushes = [(str(folder), f"tester/{kind}-{family}") for (family, kind), folder in trained.items()]
        run_python(PUSH_SCRIPT, env, json.dumps(pushes))
        assert all(token for method, path, token in hub.state.requests if method == "POST"), "HF_TOKEN is sent"

        for (family, kind), folder in trained.items():
            files = hub.files(f"tester/{kind}-{family}")
            for name in ("model.safetensors", "config.json", "generation_config.json", "tokenizer.json",
                         "tokenizer_config.json", "chat_template.jinja", "README.md", "modeling_hf_llm.py",
                         "configuration_hf_llm.py", "shared_layers.py", f"{family}_backbone.py", "recipe.yaml"):
                assert name in files, (family, kind, name)
            assert not [p for p in files if p.startswith("checkpoint-") or p.endswith((".bin", ".pt", ".pth"))]
            config = json.loads(files["config.json"])
            assert set(config["auto_map"]) == {"AutoConfig", "AutoModel", "AutoModelForCausalLM",
                                               "AutoModelForSeq2SeqLM", "AutoModelForSequenceClassification"}

        requests = [(f"tester/{kind}-{family}", kind, "We have three small red cars." if kind == "s2s" else PROMPT)
                    for (family, kind) in trained]
        stdout = run_python(LOAD_SCRIPT, env, json.dumps(requests)).stdout
        assert "RESULT " in stdout, stdout[-3000:]
        remote = json.loads(stdout.rsplit("RESULT ", 1)[-1])  # progress bars may share the line

    for (family, kind), folder in trained.items():
        result = remote[f"tester/{kind}-{family}"]
        assert result["module"].startswith("transformers_modules."), result["module"]
        assert result["chat_template"]
        auto = AutoModelForCausalLM if kind == "lm" else AutoModelForSeq2SeqLM
        model = auto.from_pretrained(folder).eval()
        tokenizer = AutoTokenizer.from_pretrained(folder)
        prompt = "We have three small red cars." if kind == "s2s" else PROMPT
        ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            if kind == "s2s":
                ids = ids + [tokenizer.eos_token_id]
                decoder = torch.tensor([[model.config.decoder_start_token_id] + ids[:3]])
                logits = model(input_ids=torch.tensor([ids]), decoder_input_ids=decoder).logits
            else:
                logits = model(torch.tensor([ids])).logits
            generated = model.generate(torch.tensor([ids]), max_new_tokens=6, num_beams=2, do_sample=False)
        torch.testing.assert_close(torch.tensor(result["logits"]), logits, atol=1e-5, rtol=0)
        assert result["generated"] == generated.tolist(), (family, kind)


def test_the_card_metadata_validates_and_holds_the_run_metrics(trained):
    for (family, kind), folder in trained.items():
        card = ModelCard.load(folder / "README.md")  # written at the end of the training run
        data = card.data.to_dict()
        assert data["library_name"] == "transformers"
        assert data["pipeline_tag"] == ("text-generation" if kind == "lm" else "translation")
        assert {"hf_llm", family, "custom_code"} <= set(data["tags"])
        name, results = model_index_to_eval_results(data["model-index"])
        measured = json.loads((folder / "eval_results.json").read_text())
        values = {r.metric_type: r.metric_value for r in results}
        if kind == "lm":
            assert values["perplexity"] == pytest.approx(measured["perplexity"], rel=1e-3)
        else:
            assert values["bleu"] == pytest.approx(measured["eval_bleu"], abs=1e-3)
            assert values["chrf"] == pytest.approx(measured["eval_chrf"], abs=1e-3)
        text = card.text
        assert "trust_remote_code=True" in text and "## Intended use and limitations" in text
        assert "max_steps" in text and "```yaml" in text, "hyperparameters and the recipe are in the card"


def test_push_options_and_errors(trained, tmp_path, capsys):
    folder = str(trained[("transformer", "lm")])
    with LocalHub() as hub:
        env = hub_env(hub, tmp_path)
        code = ("import sys; from hf_llm.cli import main; "
                "sys.exit(main(['push', sys.argv[1], 'tester/options', '--private', '--revision', 'dev', "
                "'--commit-message', 'first upload']))")
        run_python(code, env, folder)
        repo = hub.state.repos["tester/options"]
        assert repo["private"] and "model.safetensors" in repo["branches"]["dev"]["files"]
        assert "model.safetensors" not in repo["branches"]["main"]["files"], "pushed to the branch only"
    assert main(["push", str(tmp_path), "tester/empty"]) == 2
    assert "holds no config.json" in capsys.readouterr().err
    # A hub that cannot be reached is one clear error.
    env = {**os.environ, "HF_ENDPOINT": "http://127.0.0.1:9", "HF_TOKEN": "x", "HF_HUB_OFFLINE": "0"}
    result = subprocess.run([sys.executable, "-m", "hf_llm.cli", "push", folder, "tester/nowhere"], env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 2 and "error: Cannot reach the hub at http://127.0.0.1:9" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_push_cut_off_mid_upload_leaves_the_remote_repo_as_it_was(trained, tmp_path):
    """The hub drops the connection while the commit is being sent, on every attempt huggingface_hub makes: one
    clear error, and the remote repository is the previous push, whole (no file of the new one, no extra commit);
    the same command then completes it. The folder holds more than 20 files, so `upload_folder`'s pipeline would
    retry it as several smaller commits (half a model on the hub if one of them gets through)."""
    folder = tmp_path / "model"
    shutil.copytree(trained[("cnn", "lm")], folder)
    push = [sys.executable, "-m", "hf_llm.cli", "push", str(folder), "tester/cut"]
    with LocalHub() as hub:
        env = hub_env(hub, tmp_path)
        assert subprocess.run(push, env=env, capture_output=True, timeout=300).returncode == 0
        before, commits = dict(hub.files("tester/cut")), hub.state.commits
        (folder / "notes").mkdir()
        for i in range(25):
            (folder / "notes" / f"part-{i}.txt").write_text(f"a second version, part {i}\n")
        assert len(list(folder.rglob("*.*"))) > 40
        hub.state.drop_commits = 6  # the commit request and huggingface_hub's 5 retries of it; then the hub recovers
        result = subprocess.run(push, env=env, capture_output=True, text=True, timeout=300)
        assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-3000:]
        assert re.search(r"error: The upload to .*tester/cut was cut off .* as it was before this push .* never half "
                         r"a model\. Run the same hf-llm push again\.", result.stderr), result.stderr[-2000:]
        assert hub.files("tester/cut") == before and hub.state.commits == commits, "the remote repository is untouched"
        hub.state.drop_commits = 0
        assert subprocess.run(push, env=env, capture_output=True, timeout=300).returncode == 0
        assert hub.files("tester/cut")["notes/part-24.txt"] == b"a second version, part 24\n"
        assert hub.state.commits == commits + 1, "the whole folder went up as one commit"


def test_loading_from_the_hub_never_runs_code_without_trust_remote_code(trained, tmp_path):
    folder = str(trained[("rnn", "lm")])
    with LocalHub() as hub:
        env = hub_env(hub, tmp_path)
        run_python(PUSH_SCRIPT, env, json.dumps([(folder, "tester/careful")]))
        code = ("import sys; sys.modules['hf_llm'] = None\n"
                "from transformers import AutoModelForCausalLM\n"
                "AutoModelForCausalLM.from_pretrained('tester/careful')\n")
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode != 0 and "trust_remote_code" in result.stderr
    assert not (tmp_path / "modules" / "transformers_modules").exists() or not list(
        (tmp_path / "modules" / "transformers_modules").rglob("modeling_hf_llm.py"))


TRAINER_PUSH_SCRIPT = r"""
import sys
from hf_llm.cli import main
sys.exit(main(["train", sys.argv[1]]))
"""


def test_the_trainers_own_push_to_hub_uploads_everything_with_our_card(tmp_path):
    recipe = write_task_recipe(tmp_path, "translation", "cnn", max_steps=4, push_to_hub=True,
                               hub_model_id="tester/trainer-push", hub_strategy="end",
                               data={"max_train_samples": 100, "max_eval_samples": 8})
    with LocalHub() as hub:
        run_python(TRAINER_PUSH_SCRIPT, hub_env(hub, tmp_path), recipe)
        files = hub.files("tester/trainer-push")
    for name in ("model.safetensors", "config.json", "modeling_hf_llm.py", "cnn_backbone.py", "tokenizer.json",
                 "generation_config.json", "README.md", "eval_results.json"):
        assert name in files, name
    card = files["README.md"].decode()
    assert "library_name: transformers" in card and "- hf_llm" in card and "model-index" in card
    metrics = json.loads((tmp_path / "run" / "eval_results.json").read_text())
    assert f"value: {round(metrics['eval_bleu'], 4)}" in card
    assert yaml.safe_load(files["recipe.yaml"])["training"]["push_to_hub"] is True
