"""Fine-tuning tasks end to end for every family, with the metrics people report, plus the pieces users
rely on: assistant-only labels, the chat template, warm start, label mapping, pipelines, clear errors."""

from __future__ import annotations

import io
import json

import pytest
import torch
import yaml
from helpers import TINY_MODEL, results, write_task_recipe
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoModelForSeq2SeqLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    pipeline,
)

import hf_llm
from hf_llm.cli import main
from hf_llm.inference import chat_reply, load_model_and_tokenizer
from hf_llm.recipes import RecipeError, load_recipe
from hf_llm.tasks.dialogue import assistant_labels
from hf_llm.tasks.metrics import (
    classification_metrics,
    summarization_metrics,
    translation_metrics,
)
from hf_llm.tokenizer import CHAT_TEMPLATE, ensure_chat_template, train_tokenizer

FAMILIES = ["transformer", "rnn", "cnn"]






# --------------------------------------------------------------------------------------------------
# End to end, every task x every family: the metric on held-out examples beats the untrained model.
@pytest.mark.parametrize("family", FAMILIES)
def test_translation_fine_tune_beats_the_untrained_model(family, tmp_path):
    assert main(["train", write_task_recipe(tmp_path, "translation", family, max_steps=240)]) == 0
    metrics = results(tmp_path)
    assert metrics["eval_bleu"] > metrics["init_eval_bleu"] + 5, metrics
    assert metrics["eval_chrf"] > metrics["init_eval_chrf"] + 10, metrics
    assert metrics["eval_bleu_signature"].startswith("nrefs:1|case:mixed|eff:no|tok:13a")
    assert json.loads((tmp_path / "run" / "eval_results.json").read_text())["eval_bleu"] == metrics["eval_bleu"]


@pytest.mark.parametrize("family", FAMILIES)
def test_summarization_fine_tune_beats_the_untrained_model(family, tmp_path):
    assert main(["train", write_task_recipe(tmp_path, "summarization", family)]) == 0
    metrics = results(tmp_path)
    for kind in ("rouge1", "rouge2", "rougeL", "rougeLsum"):
        assert f"eval_{kind}" in metrics
    assert metrics["eval_rouge1"] > metrics["init_eval_rouge1"] + 2, metrics


@pytest.mark.parametrize("family", FAMILIES)
def test_dialogue_fine_tune_lowers_assistant_perplexity(family, tmp_path):
    assert main(["train", write_task_recipe(tmp_path, "dialogue", family)]) == 0
    metrics = results(tmp_path)
    assert metrics["perplexity"] < 0.5 * metrics["init_perplexity"], metrics
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "run")
    assert tokenizer.chat_template == CHAT_TEMPLATE, "the chat template is saved with the tokenizer"


def test_dialogue_encoder_decoder_variant(tmp_path):
    recipe = write_task_recipe(tmp_path, "dialogue", "transformer", model={"is_encoder_decoder": True})
    assert main(["train", recipe]) == 0
    metrics = results(tmp_path)
    assert metrics["perplexity"] < 0.5 * metrics["init_perplexity"], metrics
    assert AutoConfig.from_pretrained(tmp_path / "run").is_encoder_decoder


@pytest.mark.parametrize("family", FAMILIES)
def test_classification_fine_tune_beats_the_untrained_model(family, tmp_path):
    # Last-token pooling: a causal CNN classifies from its receptive field (here 2 * (5 - 1) + 1 = 9 tokens).
    recipe = write_task_recipe(tmp_path, "classification", family, model={"num_hidden_layers": 2, "cnn_kernel_size": 5})
    assert main(["train", recipe]) == 0
    metrics = results(tmp_path)
    assert metrics["eval_accuracy"] > max(75.0, metrics["init_eval_accuracy"]), metrics
    assert metrics["eval_f1"] > metrics["init_eval_f1"], metrics


# --------------------------------------------------------------------------------------------------
def chat_tokenizer():
    texts = ["What does json.dumps do?", "Serialize obj to a JSON formatted str.", "It is in the json module."] * 20
    tokenizer = train_tokenizer(texts, vocab_size=300, min_frequency=1)
    ensure_chat_template(tokenizer)
    return tokenizer


CHAT = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "What does json.dumps do?"},
    {"role": "assistant", "content": "Serialize obj to a JSON formatted str."},
    {"role": "user", "content": "Which module is it in?"},
    {"role": "assistant", "content": "It is in the json module."},
]


def test_labels_cover_the_assistant_turns_only():
    tokenizer = chat_tokenizer()
    row = assistant_labels(tokenizer, CHAT, max_length=512)
    ids, labels = row["input_ids"], row["labels"]
    learned = tokenizer.decode([t for t, l in zip(ids, labels) if l != -100])
    assert learned == "Serialize obj to a JSON formatted str.<|im_end|>It is in the json module.<|im_end|>"
    assert all(l in (-100, t) for t, l in zip(ids, labels))
    prompt = tokenizer.decode([t for t, l in zip(ids, labels) if l == -100])
    assert "What does json.dumps do?" in prompt and "Be brief." in prompt and "Serialize" not in prompt


def test_chat_template_round_trip(tmp_path):
    tokenizer = chat_tokenizer()
    text = tokenizer.apply_chat_template(CHAT[:2], tokenize=False, add_generation_prompt=True)
    assert text == ("<s><|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nWhat does json.dumps do?"
                    "<|im_end|>\n<|im_start|>assistant\n")
    tokenizer.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    assert loaded.chat_template == tokenizer.chat_template
    assert loaded.apply_chat_template(CHAT, tokenize=False) == tokenizer.apply_chat_template(CHAT, tokenize=False)
    ids = loaded.apply_chat_template(CHAT, tokenize=True, return_dict=True)["input_ids"]
    assert loaded.decode(ids) == tokenizer.apply_chat_template(CHAT, tokenize=False)


@pytest.mark.parametrize("family", FAMILIES)
def test_warm_start_loads_the_causal_lm_weights(family, tmp_path):
    lm_dir = tmp_path / "lm"
    torch.manual_seed(0)
    config = hf_llm.HfLlmConfig(backbone=family, vocab_size=500, **{k: v for k, v in TINY_MODEL.items() if k != "rnn_attention"})
    lm = AutoModelForCausalLM.from_config(config)
    lm.save_pretrained(lm_dir)
    train_tokenizer(["hello world"] * 10, vocab_size=500).save_pretrained(lm_dir)

    recipe = write_task_recipe(tmp_path, "translation", family, model={"name_or_path": str(lm_dir)}, max_steps=1)
    for key in ("encoder_backbone", "decoder_backbone"):  # the family comes from the checkpoint
        recipe_data = yaml.safe_load(open(recipe))
        recipe_data["model"].pop(key)
        yaml.safe_dump(recipe_data, open(recipe, "w"))
    recipe_obj = load_recipe(recipe)
    from hf_llm.models import build_seq2seq

    tokenizer = AutoTokenizer.from_pretrained(lm_dir)
    model, report = build_seq2seq(recipe_obj, tokenizer)
    source = lm.model.decoder.state_dict()
    for side in ("encoder", "decoder"):
        own = getattr(model.model, side).state_dict()
        assert report[side]["loaded"], side
        for name in report[side]["loaded"]:
            assert torch.equal(own[name], source[name]), (side, name)
        assert set(report[side]["loaded"]) | set(report[side]["new"]) == set(own)
    if family == "transformer":
        assert any("cross_attn" in name for name in report["decoder"]["new"])
        assert not [n for n in report["encoder"]["new"]], "a Transformer encoder is the LM stack minus nothing"

    # Through the CLI: the run records what was loaded.
    assert main(["train", recipe]) == 0
    saved = json.loads((tmp_path / "run" / "warm_start.json").read_text())
    assert saved["decoder"]["loaded"] == report["decoder"]["loaded"]


def test_label_mapping_round_trip(tmp_path):
    assert main(["train", write_task_recipe(tmp_path, "classification", "transformer", max_steps=60)]) == 0
    model = AutoModelForSequenceClassification.from_pretrained(tmp_path / "run").eval()
    assert model.config.id2label == {0: "negative", 1: "positive"}
    assert model.config.label2id == {"negative": 0, "positive": 1}
    classify = pipeline("text-classification", model=str(tmp_path / "run"))
    assert classify("The movie was wonderful.")[0]["label"] in ("negative", "positive")


def test_seq2seq_pipelines_come_back(tmp_path):
    assert main(["train", write_task_recipe(tmp_path, "translation", "transformer", max_steps=200)]) == 0
    model = AutoModelForSeq2SeqLM.from_pretrained(tmp_path / "run")
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "run")

    def expected(text: str) -> str:  # the model's own generate on the source as training encoded it
        ids = torch.tensor([tokenizer(text, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]])
        output = model.generate(ids, attention_mask=torch.ones_like(ids))
        return tokenizer.decode(output[0], skip_special_tokens=True).strip()

    sources = ["We have three small red cars.", "I see two black dogs."]
    out = pipeline("translation", model=str(tmp_path / "run"))(sources)
    assert [(o[0] if isinstance(o, list) else o)["translation_text"] for o in out] == [expected(s) for s in sources]
    assert expected(sources[0]) != expected(sources[1])
    text2text = pipeline("text2text-generation", model=str(tmp_path / "run"))
    assert text2text(sources[0])[0]["generated_text"] == expected(sources[0])
    summarize = pipeline("summarization", model=str(tmp_path / "run"))
    assert summarize("We have three cars.")[0]["summary_text"] == expected("We have three cars.")


def test_eval_command_scores_a_task_model_like_training_did(tmp_path, capsys):
    assert main(["train", write_task_recipe(tmp_path, "translation", "rnn", max_steps=60)]) == 0
    trained = results(tmp_path)
    capsys.readouterr()
    assert main(["eval", str(tmp_path / "run")]) == 0
    evaluated = json.loads(capsys.readouterr().out)
    assert evaluated["eval_bleu"] == pytest.approx(trained["eval_bleu"])
    assert evaluated["eval_chrf"] == pytest.approx(trained["eval_chrf"])


def test_text_generation_pipeline_takes_chat_input(tmp_path):
    assert main(["train", write_task_recipe(tmp_path, "dialogue", "transformer", max_steps=20)]) == 0
    chat = pipeline("text-generation", model=str(tmp_path / "run"))
    out = chat([{"role": "user", "content": "What does json.dumps do?"}], max_new_tokens=8, do_sample=False)
    conversation = out[0]["generated_text"]
    assert conversation[-1]["role"] == "assistant"
    # the reply is what the model generates after the chat template's generation prompt
    model, tokenizer = load_model_and_tokenizer(str(tmp_path / "run"))
    messages = [{"role": "user", "content": "What does json.dumps do?"}]
    assert conversation[-1]["content"].strip() == chat_reply(model, tokenizer, messages, max_new_tokens=8, do_sample=False)


def test_chat_command_holds_a_conversation(tmp_path, monkeypatch, capsys):
    assert main(["train", write_task_recipe(tmp_path, "dialogue", "transformer", max_steps=20)]) == 0
    capsys.readouterr()
    monkeypatch.setattr("sys.stdin", io.StringIO("What does json.dumps do?\nWhich module is it in?\n/exit\n"))
    assert main(["chat", str(tmp_path / "run"), "--max-new-tokens", "8"]) == 0
    replies = [line for line in capsys.readouterr().out.splitlines() if line.startswith("assistant> ")]
    assert len(replies) == 2


# --------------------------------------------------------------------------------------------------
def test_metrics_match_the_reference_libraries():
    perfect = translation_metrics(["Je vois trois chats."], ["Je vois trois chats."])
    assert perfect["bleu"] == pytest.approx(100) and perfect["chrf"] == pytest.approx(100)
    assert translation_metrics(["a b c d"], ["w x y z"])["bleu"] == 0
    assert summarization_metrics(["the cat sat"], ["the cat sat"])["rougeLsum"] == pytest.approx(100)
    assert classification_metrics([0, 1, 1, 0], [0, 1, 0, 0]) == pytest.approx({"accuracy": 75.0, "f1": (0.8 + 2 / 3) / 2 * 100})


@pytest.mark.parametrize(
    "task, overrides, message",
    [
        ("translation", ["data.source_lang=de"], r"data.source_lang='de' is not a language of the translation pairs; "
                                                  r"they hold \['en', 'fr'\]"),
        ("translation", ["data.target_lang=null"], r"need data.source_lang and data.target_lang"),
        ("summarization", ["data.summary_column=abstract"], r"no column 'abstract' \(set by data.summary_column\)"),
        ("summarization", ["data.text_column=article"], r"no column 'article' \(set by data.text_column\)"),
        ("classification", ["data.label_column=sentiment"], r"no column 'sentiment' \(set by data.label_column\)"),
        ("dialogue", ["data.messages_column=turns"], r"no column 'turns' \(set by data.messages_column\)"),
    ],
)
def test_task_errors_name_the_problem(task, overrides, message, tmp_path, capsys):
    recipe = write_task_recipe(tmp_path, task, "transformer")
    assert main(["train", recipe, *overrides]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "Traceback" not in err
    import re

    assert re.search(message, err), err
    assert not (tmp_path / "run").exists()


def test_unknown_task_and_translation_without_pairs(tmp_path, capsys):
    with pytest.raises(RecipeError, match="Unknown task 'poetry'"):
        load_recipe(None, [], raw={"task": "poetry"})
    rows = tmp_path / "rows.jsonl"
    rows.write_text("".join(json.dumps({"english": "a", "french": "b"}) + "\n" for _ in range(10)))
    recipe = write_task_recipe(tmp_path, "translation", "transformer", data={"train_file": str(rows)})
    assert main(["train", recipe, "data.dataset_name=null"]) == 2
    assert "needs a 'translation' column" in capsys.readouterr().err
