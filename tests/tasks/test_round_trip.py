"""Tokenizer round trip: the tokenizer a run saves frames texts the way the task trained on them, so plain
transformers code — `AutoTokenizer.from_pretrained(run)`, `tokenizer(text)`, `AutoModelFor*.from_pretrained(run)`,
`model.generate` — gives what `hf-llm generate` / `hf_llm.inference` give, and the training features' ids are the
plain tokenizer's ids. Seq2seq sources and targets end with one EOS (the tokenizer's post-processor); causal-LM
prompts, chat prompts and classification texts get none."""

from __future__ import annotations

import pytest
import torch
from helpers import write_task_recipe
from transformers import (
    AutoModelForCausalLM,
    AutoModelForSeq2SeqLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
)

from hf_llm.cli import main
from hf_llm.data import load_raw
from hf_llm.inference import (
    chat_reply,
    encode_sources,
    generate_text,
    load_model_and_tokenizer,
)
from hf_llm.recipes import load_recipe
from hf_llm.tasks import get_task
from hf_llm.tokenizer import ends_with_eos, train_tokenizer

STEPS = {"max_steps": 3, "eval_strategy": "no"}


def train(tmp_path, task: str, model=None, data=None):
    recipe = write_task_recipe(tmp_path, task, "transformer", model=model, data=data, **STEPS)
    assert main(["train", recipe]) == 0
    return load_recipe(recipe), tmp_path / "run"


def features(recipe, run):
    """The training split as the task tokenised it for the run, with the run's own tokenizer and model."""
    task = get_task(recipe.task)
    model, tokenizer = load_model_and_tokenizer(str(run))
    raw = load_raw(recipe.data, seed=recipe.training.get("seed", 42))
    return raw, task.tokenize(recipe, raw, tokenizer, model)


def cli_generate(run, prompt: str, capsys) -> str:
    capsys.readouterr()
    assert main(["generate", str(run), prompt, "--max-new-tokens", "8", "--no-do-sample"]) == 0
    return capsys.readouterr().out.rstrip("\n")


def run_usage_snippet(task: str, config, run, capsys) -> str:
    """What the model card's usage snippet prints for the run folder."""
    capsys.readouterr()
    exec(get_task(task).usage_snippet(config, str(run)), {})  # noqa: S102  (the card's own text, run as a user would)
    return capsys.readouterr().out


@pytest.mark.parametrize("task", ["translation", "summarization"])
def test_seq2seq_plain_tokenizer_and_generate_match_training_and_hf_llm(task, tmp_path, capsys):
    recipe, run = train(tmp_path, task, data={"source_prefix": "go: "})
    tokenizer = AutoTokenizer.from_pretrained(run)
    model = AutoModelForSeq2SeqLM.from_pretrained(run).eval()
    eos = tokenizer.eos_token_id
    text = "We have three small red cars."
    inputs = tokenizer("go: " + text, return_tensors="pt")
    ids = inputs["input_ids"][0].tolist()
    assert ids[-1] == eos and eos not in ids[:-1], "one EOS, from the tokenizer itself"
    assert ids == tokenizer("go: " + text, add_special_tokens=False)["input_ids"] + [eos]
    with torch.no_grad():
        output = model.generate(**inputs, max_new_tokens=8, do_sample=False, num_beams=1)
    plain = tokenizer.decode(output[0], skip_special_tokens=True)
    _, hf_llm_tokenizer = load_model_and_tokenizer(str(run))
    assert generate_text(model, hf_llm_tokenizer, text, max_new_tokens=8, do_sample=False) == plain
    assert cli_generate(run, text, capsys) == plain
    assert run_usage_snippet(task, model.config, run, capsys), "the model card's snippet runs"

    raw, tokenized = features(recipe, run)
    sources, targets = get_task(task).pairs(recipe, raw)(raw["train"][:4])
    for row, source, target in zip(tokenized["train"].select(range(4)), sources, targets):
        assert row["input_ids"] == tokenizer("go: " + source, truncation=True, max_length=64)["input_ids"]
        assert row["labels"] == tokenizer(target, truncation=True, max_length=24)["input_ids"]
        assert row["input_ids"].count(eos) == 1 and row["labels"].count(eos) == 1


def test_causal_lm_prompts_get_no_eos_and_blocks_are_the_documents_joined_by_eos(tmp_path, capsys):
    recipe, run = train(tmp_path, "causal_lm", data={"block_size": 32})
    tokenizer = AutoTokenizer.from_pretrained(run)
    model = AutoModelForCausalLM.from_pretrained(run).eval()
    assert not ends_with_eos(tokenizer)
    prompt = "Return the"
    inputs = tokenizer(prompt, return_tensors="pt")
    assert tokenizer.eos_token_id not in inputs["input_ids"][0].tolist()
    with torch.no_grad():
        output = model.generate(**inputs, max_new_tokens=8, do_sample=False)
    plain = tokenizer.decode(output[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
    assert generate_text(model, tokenizer, prompt, max_new_tokens=8, do_sample=False) == plain
    assert cli_generate(run, prompt, capsys) == (prompt + plain).rstrip("\n")

    raw, tokenized = features(recipe, run)
    stream = [t for doc in raw["train"]["text"][:20] for t in tokenizer(doc)["input_ids"] + [tokenizer.eos_token_id]]
    assert tokenized["train"][0]["input_ids"] == stream[:32]
    assert tokenized["train"][1]["input_ids"] == stream[32:64]


@pytest.mark.parametrize("encoder_decoder", [False, True])
def test_dialogue_chat_prompts_get_no_eos_and_match_training(encoder_decoder, tmp_path, capsys):
    recipe, run = train(tmp_path, "dialogue", model={"is_encoder_decoder": encoder_decoder})
    tokenizer = AutoTokenizer.from_pretrained(run)
    auto = AutoModelForSeq2SeqLM if encoder_decoder else AutoModelForCausalLM
    model = auto.from_pretrained(run).eval()
    assert not ends_with_eos(tokenizer)
    messages = [{"role": "user", "content": "What does json.dumps do?"}]
    inputs = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_dict=True, return_tensors="pt")
    text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert tokenizer(text)["input_ids"] == inputs["input_ids"][0].tolist(), "a plain tokenizer call adds nothing"
    with torch.no_grad():
        output = model.generate(**inputs, max_new_tokens=8, do_sample=False)
    new = output[0] if encoder_decoder else output[0, inputs["input_ids"].shape[1]:]
    plain = tokenizer.decode(new, skip_special_tokens=True).strip()
    assert chat_reply(model, tokenizer, messages, max_new_tokens=8, do_sample=False) == plain
    if encoder_decoder:
        assert run_usage_snippet("dialogue", model.config, run, capsys), "the model card's snippet runs"

    raw, tokenized = features(recipe, run)
    conversation = raw["train"][0][recipe.data.messages_column]
    row = tokenized["train"][0]
    if encoder_decoder:
        context = conversation[: next(i for i, m in enumerate(conversation) if m["role"] == "assistant")]
        source = tokenizer.apply_chat_template(context, add_generation_prompt=True, tokenize=False)
        assert row["input_ids"] == tokenizer(source)["input_ids"][-recipe.data.max_source_length:]
        assert row["labels"][-1] == tokenizer.eos_token_id and row["labels"].count(tokenizer.eos_token_id) == 1
    else:
        chat = tokenizer.apply_chat_template(conversation, return_dict=True)["input_ids"]
        assert row["input_ids"] == chat[: recipe.data.block_size]


def test_classification_features_are_the_plain_tokenizer_ids(tmp_path):
    recipe, run = train(tmp_path, "classification")
    tokenizer = AutoTokenizer.from_pretrained(run)
    model = AutoModelForSequenceClassification.from_pretrained(run).eval()
    raw, tokenized = features(recipe, run)
    for row, text in zip(tokenized["train"].select(range(4)), raw["train"]["text"][:4]):
        assert row["input_ids"] == tokenizer(text, truncation=True, max_length=64)["input_ids"]
        assert tokenizer.eos_token_id not in row["input_ids"]
    with torch.no_grad():
        label = model(**tokenizer("The movie was wonderful.", return_tensors="pt")).logits.argmax(-1).item()
    from transformers import pipeline

    assert pipeline("text-classification", model=str(run))("The movie was wonderful.")[0]["label"] == \
        model.config.id2label[label]


def test_sources_end_with_exactly_one_eos_whatever_the_tokenizer():
    """A tokenizer that ends texts with EOS (a seq2seq run's, like Marian's or T5's) and one that does not (runs
    saved before the post-processor, other tasks' tokenizers) give the same source ids, truncation included."""
    texts = ["we see three red cars", "nous voyons trois voitures rouges"] * 20
    with_eos = train_tokenizer(texts, vocab_size=300, min_frequency=1, end_with_eos=True)
    without = train_tokenizer(texts, vocab_size=300, min_frequency=1)
    assert ends_with_eos(with_eos) and not ends_with_eos(without)
    for max_length in (None, 4):
        a = encode_sources(with_eos, ["we see three red cars", "nous"], "fr: ", max_length)
        b = encode_sources(without, ["we see three red cars", "nous"], "fr: ", max_length)
        assert a == b
        assert all(ids[-1] == 2 and ids.count(2) == 1 for ids in a)
        if max_length:
            assert max(len(ids) for ids in a) == max_length
