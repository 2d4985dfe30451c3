"""trl on every family's decoder-only LM: SFT (conversational with assistant-only loss, prompt/completion with
completion-only loss) and DPO on a tiny preference set, with the metrics trl logs recomputed by hand.

trl (>= 1.15) patches its own fused LM head onto the model (`trl.trainer.utils.add_fused_lm_head`): it runs the
backbone (`model.base_model`), projects the hidden states through `model.get_output_embeddings()` and computes
log-probabilities, entropy and top-1 hits itself, so our fused loss is never in its way. These tests check that this
path gives, for our models, the numbers the model's own logits give: every logged step is recomputed from a copy
of the weights taken when the step began (`on_step_begin`), on the same examples (one batch holds them all).
"""

from __future__ import annotations

import copy

import pytest
import torch
from cases import lm_config
from datasets import Dataset
from transformers import AutoModelForCausalLM, TrainerCallback

trl = pytest.importorskip("trl")

from hf_llm.tokenizer import train_tokenizer  # noqa: E402

FAMILIES = ["transformer", "rnn-lstm", "cnn"]
WORDS = "the cat sat on a mat dog ran far away hello how are you fine thanks what is your name".split()
ROWS = 4  # one batch holds every example, so each step sees all of them
# trl's configs default to bf16=True, which on a CPU means bf16 autocast: the logged numbers then differ from the
# float32 ones by ~1e-4. The tests train in float32 (bf16=False) to compare exactly, and without trl's default
# gradient checkpointing (gradient_checkpointing=False), which only costs time here.


@pytest.fixture(scope="module")
def chat_tokenizer():
    """A small byte-level BPE with hf_llm's chat template (ChatML, `{% generation %}` around assistant replies)."""
    texts = [" ".join(WORDS[i:] + WORDS[:i]) for i in range(len(WORDS))]
    return train_tokenizer(texts * 3, vocab_size=300, min_frequency=1)


def phrase(start: int, length: int) -> str:
    return " ".join(WORDS[(start + k) % len(WORDS)] for k in range(length))


def warmed_up_model(family: str, tokenizer, texts: list[str]):
    """A tiny LM trained for a few steps on the texts (through its own fused loss), so that token accuracies
    are far from 0 and an accuracy logged as 0 (or computed from the wrong positions) shows."""
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(lm_config(family, vocab_size=len(tokenizer))).train()
    encoded = tokenizer(texts, padding=True, return_tensors="pt")
    labels = encoded["input_ids"].masked_fill(encoded["attention_mask"] == 0, -100)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for _ in range(10):
        model(**encoded, labels=labels).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    return model


class WeightsAtEachStep(TrainerCallback):
    """The weights each optimisation step starts from: what the metrics logged at that step were computed with."""

    def __init__(self):
        self.weights: list[dict[str, torch.Tensor]] = []

    def on_step_begin(self, args, state, control, model=None, **kwargs):
        self.weights.append({name: tensor.detach().clone() for name, tensor in model.state_dict().items()})


def model_with(blank, weights):
    """`blank` with the given weights. It must be a copy taken before the trainer was built: trl replaces the
    instance's `forward` by a closure over the original model's bound forward, so a copy taken afterwards would
    still run the original model's weights."""
    blank.load_state_dict(weights)
    return blank.eval()


def logged(trainer, key: str) -> list[float]:
    return [entry[key] for entry in trainer.state.log_history if key in entry and "train_runtime" not in entry]


def right_padded(rows: list[list[int]], fill: int) -> torch.Tensor:
    width = max(len(row) for row in rows)
    return torch.tensor([row + [fill] * (width - len(row)) for row in rows])


@torch.no_grad()
def sft_metrics_by_hand(model, input_ids: list[list[int]], labels: list[list[int]]) -> dict[str, float]:
    """Token accuracy, entropy and loss over the labelled positions, from the model's own logits (eval forward)."""
    ids = right_padded(input_ids, 0)
    targets = right_padded(labels, -100)
    attention_mask = right_padded([[1] * len(row) for row in input_ids], 0)
    logits = model(input_ids=ids, attention_mask=attention_mask).logits[:, :-1]  # (B, T-1, V)
    targets = targets[:, 1:]
    mask = targets != -100
    log_probs = logits.log_softmax(-1)
    entropy = -(log_probs.exp() * log_probs).sum(-1)
    picked = log_probs.gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return {
        "mean_token_accuracy": (logits.argmax(-1) == targets)[mask].float().mean().item(),
        "entropy": entropy[mask].mean().item(),
        "loss": -picked[mask].mean().item(),
    }


def sft_config(tmp_path, **overrides):
    return trl.SFTConfig(
        output_dir=str(tmp_path), max_steps=2, per_device_train_batch_size=ROWS, logging_steps=1, learning_rate=3e-3,
        max_length=48, report_to=[], save_strategy="no", use_cpu=True, seed=0, bf16=False, gradient_checkpointing=False,
        **overrides,
    )


def assert_sft_metrics_are_the_models(trainer, blank, callback):
    rows = trainer.train_dataset
    accuracies = []
    assert not torch.equal(callback.weights[0]["lm_head.weight"], callback.weights[-1]["lm_head.weight"]), "trained"
    for step, weights in enumerate(callback.weights):
        expected = sft_metrics_by_hand(model_with(blank, weights), rows["input_ids"], rows["labels"])
        for key, value in expected.items():
            assert logged(trainer, key)[step] == pytest.approx(value, rel=1e-4, abs=1e-5), f"{key} at step {step + 1}"
        accuracies.append(expected["mean_token_accuracy"])
    assert min(accuracies) > 0.2, "the warmed-up model predicts many of the labelled tokens"


@pytest.mark.parametrize("family", FAMILIES)
def test_sft_assistant_only_loss_on_conversations_logs_the_models_token_accuracy(family, chat_tokenizer, tmp_path):
    chats = [
        [{"role": "user", "content": phrase(i, 3)}, {"role": "assistant", "content": phrase(i + 3, 4)}]
        for i in range(ROWS)
    ]
    model = warmed_up_model(family, chat_tokenizer, [chat_tokenizer.apply_chat_template(c, tokenize=False) for c in chats])
    blank, callback = copy.deepcopy(model), WeightsAtEachStep()
    trainer = trl.SFTTrainer(
        model=model, args=sft_config(tmp_path, assistant_only_loss=True), processing_class=chat_tokenizer,
        train_dataset=Dataset.from_list([{"messages": chat} for chat in chats]), callbacks=[callback],
    )
    # The labels are the assistant reply and its <|im_end|>, nothing else (the template's generation markers).
    for chat, ids, labels in zip(chats, trainer.train_dataset["input_ids"], trainer.train_dataset["labels"]):
        learnt = [token for token in labels if token != -100]
        assert chat_tokenizer.decode(learnt) == chat[1]["content"] + "<|im_end|>"
        assert all(label in (-100, token) for label, token in zip(labels, ids))
    trainer.train()

    assert len(callback.weights) == 2
    assert_sft_metrics_are_the_models(trainer, blank, callback)


@pytest.mark.parametrize("family", FAMILIES)
def test_sft_on_prompt_completion_pairs_learns_the_completion_only(family, chat_tokenizer, tmp_path):
    pairs = [{"prompt": phrase(i, 3), "completion": " " + phrase(i + 3, 3)} for i in range(ROWS)]
    model = warmed_up_model(family, chat_tokenizer, [p["prompt"] + p["completion"] + "</s>" for p in pairs])
    blank, callback = copy.deepcopy(model), WeightsAtEachStep()
    trainer = trl.SFTTrainer(
        model=model, args=sft_config(tmp_path), processing_class=chat_tokenizer,
        train_dataset=Dataset.from_list(pairs), callbacks=[callback],
    )
    for pair, labels in zip(pairs, trainer.train_dataset["labels"]):
        assert chat_tokenizer.decode([t for t in labels if t != -100]) == pair["completion"] + "</s>"
    trainer.train()

    assert_sft_metrics_are_the_models(trainer, blank, callback)


@torch.no_grad()
def completion_logps(model, prompts: list[list[int]], completions: list[list[int]]) -> torch.Tensor:
    """Summed log-probability of each completion after its prompt, row by row from the model's logits."""
    sums = []
    for prompt, completion in zip(prompts, completions):
        ids = torch.tensor([prompt + completion])
        log_probs = model(input_ids=ids).logits[0, :-1].log_softmax(-1)  # (T-1, V)
        targets = ids[0, 1:]
        per_token = log_probs.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
        sums.append(per_token[len(prompt) - 1 :].sum())
    return torch.stack(sums)


@pytest.mark.parametrize("family", FAMILIES)
def test_dpo_logs_the_models_log_probabilities_and_rewards(family, chat_tokenizer, tmp_path):
    preferences = [
        {"prompt": phrase(i, 3), "chosen": " " + phrase(i + 3, 3), "rejected": " " + phrase(i + 9, 2)}
        for i in range(ROWS)
    ]
    model = warmed_up_model(family, chat_tokenizer, [p["prompt"] + p["chosen"] for p in preferences])
    reference, blank, callback = copy.deepcopy(model).eval(), copy.deepcopy(model), WeightsAtEachStep()
    beta = 0.1
    args = trl.DPOConfig(
        output_dir=str(tmp_path), max_steps=2, per_device_train_batch_size=ROWS, logging_steps=1, learning_rate=1e-2,
        beta=beta, max_length=48, report_to=[], save_strategy="no", use_cpu=True, seed=0, bf16=False,
        gradient_checkpointing=False,
    )
    trainer = trl.DPOTrainer(
        model=model, ref_model=reference, args=args, processing_class=chat_tokenizer,
        train_dataset=Dataset.from_list(preferences), callbacks=[callback],
    )
    trainer.train()

    rows = trainer.train_dataset
    prompts = rows["prompt_ids"]
    reference_chosen = completion_logps(reference, prompts, rows["chosen_ids"])
    reference_rejected = completion_logps(reference, prompts, rows["rejected_ids"])
    margins = []
    for step, weights in enumerate(callback.weights):
        policy = model_with(blank, weights)
        chosen = completion_logps(policy, prompts, rows["chosen_ids"])
        rejected = completion_logps(policy, prompts, rows["rejected_ids"])
        chosen_rewards = beta * (chosen - reference_chosen)
        rejected_rewards = beta * (rejected - reference_rejected)
        expected = {
            "logps/chosen": chosen.mean(),
            "logps/rejected": rejected.mean(),
            "rewards/chosen": chosen_rewards.mean(),
            "rewards/rejected": rejected_rewards.mean(),
            "rewards/margins": (chosen_rewards - rejected_rewards).mean(),
            "loss": -torch.nn.functional.logsigmoid(chosen_rewards - rejected_rewards).mean(),
        }
        for key, value in expected.items():
            assert logged(trainer, key)[step] == pytest.approx(value.item(), rel=1e-4, abs=1e-4), f"{key} at step {step + 1}"
        margins.append(expected["rewards/margins"].item())
    assert margins[0] == 0, "the policy starts as the reference"
    assert margins[-1] > 0.01, "DPO moved the policy towards the chosen completions"
