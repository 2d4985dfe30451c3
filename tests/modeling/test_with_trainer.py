"""transformers.Trainer trains every family: the loss falls, and gradient accumulation matches a larger batch."""

from __future__ import annotations

import pytest
import torch
from cases import LM_CASES, SEQ2SEQ_CASES, lm_config, seq2seq_config
from datasets import Dataset
from transformers import (
    AutoModelForCausalLM,
    AutoModelForSeq2SeqLM,
    DataCollatorForLanguageModeling,
    DataCollatorForSeq2Seq,
    Seq2SeqTrainer,
    Seq2SeqTrainingArguments,
    Trainer,
    TrainingArguments,
)


def lm_rows(n: int, seed: int = 0) -> list[dict]:
    """Counting sequences with a random start and stride: learnable, varied lengths."""
    generator = torch.Generator().manual_seed(seed)
    rows = []
    for _ in range(n):
        start, stride = torch.randint(0, 57, (2,), generator=generator).tolist()
        length = int(torch.randint(6, 14, (1,), generator=generator))
        rows.append({"input_ids": [4 + (start + i * (stride % 5 + 1)) % 57 for i in range(length)]})
    return rows


def s2s_rows(n: int, seed: int = 0) -> list[dict]:
    """Target = the source followed by </s> (a copy task)."""
    generator = torch.Generator().manual_seed(seed)
    rows = []
    for _ in range(n):
        length = int(torch.randint(3, 9, (1,), generator=generator))
        source = torch.randint(4, 61, (length,), generator=generator).tolist()
        rows.append({"input_ids": source, "labels": source + [2]})
    return rows


def training_args(tmp_path, cls=TrainingArguments, **overrides):
    fields = dict(
        output_dir=str(tmp_path / "out"), per_device_train_batch_size=8, learning_rate=1e-2, max_steps=150, lr_scheduler_type="constant",
        warmup_steps=0, weight_decay=0.0, logging_steps=10, save_strategy="no", report_to=[], use_cpu=True,
        seed=0, data_seed=0, dataloader_num_workers=0, disable_tqdm=True,
    )
    fields.update(overrides)
    return cls(**fields)


@pytest.mark.parametrize("case", LM_CASES)
def test_trainer_lowers_causal_lm_loss(case, tmp_path, tiny_tokenizer):
    tokenizer = tiny_tokenizer
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(lm_config(case))
    train, evaluation = Dataset.from_list(lm_rows(256)), Dataset.from_list(lm_rows(32, seed=1))
    trainer = Trainer(
        model=model, args=training_args(tmp_path), train_dataset=train, eval_dataset=evaluation,
        data_collator=DataCollatorForLanguageModeling(tokenizer, mlm=False), processing_class=tokenizer,
    )
    before = trainer.evaluate()["eval_loss"]
    trainer.train()
    after = trainer.evaluate()["eval_loss"]
    assert after < 0.7 * before, (before, after)


@pytest.mark.parametrize("case", SEQ2SEQ_CASES)
def test_seq2seq_trainer_lowers_loss(case, tmp_path, tiny_tokenizer):
    tokenizer = tiny_tokenizer
    torch.manual_seed(0)
    model = AutoModelForSeq2SeqLM.from_config(seq2seq_config(case))
    train, evaluation = Dataset.from_list(s2s_rows(256)), Dataset.from_list(s2s_rows(32, seed=1))
    trainer = Seq2SeqTrainer(
        model=model, args=training_args(tmp_path, Seq2SeqTrainingArguments), train_dataset=train,
        eval_dataset=evaluation, data_collator=DataCollatorForSeq2Seq(tokenizer, model=model),
        processing_class=tokenizer,
    )
    before = trainer.evaluate()["eval_loss"]
    trainer.train()
    after = trainer.evaluate()["eval_loss"]
    assert after < 0.8 * before, (before, after)


def one_sgd_step(model, rows, tokenizer, collator, tmp_path, batch: int, accumulation: int):
    args = training_args(
        tmp_path, per_device_train_batch_size=batch, gradient_accumulation_steps=accumulation, max_steps=1,
        optim="sgd", learning_rate=1.0, lr_scheduler_type="constant", max_grad_norm=0.0,
    )
    trainer = Trainer(model=model, args=args, train_dataset=Dataset.from_list(rows), data_collator=collator,
                      processing_class=tokenizer)
    trainer.train()
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("kind", ["lm", "seq2seq"])
def test_gradient_accumulation_matches_a_larger_batch(kind, tmp_path, tiny_tokenizer):
    """4 examples of different lengths: one batch of 4 == two accumulated batches of 2 (token-weighted loss)."""
    tokenizer = tiny_tokenizer
    if kind == "lm":
        rows = [{"input_ids": list(range(4, 4 + n))} for n in (3, 12, 5, 9)]
        build = lambda: AutoModelForCausalLM.from_config(lm_config(next(iter(LM_CASES)))).float()
        collator = DataCollatorForLanguageModeling(tokenizer, mlm=False)
    else:
        rows = [{"input_ids": list(range(4, 4 + n)), "labels": list(range(10, 10 + m))} for n, m in ((3, 2), (8, 11), (5, 4), (6, 9))]
        build = lambda: AutoModelForSeq2SeqLM.from_config(seq2seq_config(next(iter(SEQ2SEQ_CASES))))
        collator = None
    states = []
    for batch, accumulation in ((4, 1), (2, 2)):
        torch.manual_seed(0)
        model = build()
        if collator is None:
            collator = DataCollatorForSeq2Seq(tokenizer, model=model)
        states.append(one_sgd_step(model, rows, tokenizer, collator, tmp_path, batch, accumulation))
    torch.manual_seed(0)
    initial = build().state_dict()
    changed = [k for k in initial if not torch.equal(initial[k], states[0][k])]
    assert changed, "the step must change the weights"
    for key in states[0]:
        torch.testing.assert_close(states[1][key], states[0][key], atol=1e-6, rtol=1e-5)
