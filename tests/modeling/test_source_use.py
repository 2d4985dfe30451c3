"""Encoder-decoders use their source early: after a short Seq2SeqTrainer run on a tiny copy task, two different
sources give different outputs, and the output follows the source (not one memorised target for every input).

A decoder that ignores its source learns an LM of the targets and gives the same output for every input (the
failure of issue 19 on small summarization data). Default initialisation (`initializer_range` unset: 1/sqrt(width)
for a Transformer encoder-decoder, 0.02 otherwise; not the 0.2 of the other tiny tests), so what is tested is what a
recipe builds.
"""

from __future__ import annotations

import pytest
import torch
from cases import TINY
from datasets import Dataset
from transformers import (
    AutoModelForSeq2SeqLM,
    DataCollatorForSeq2Seq,
    Seq2SeqTrainer,
    Seq2SeqTrainingArguments,
)

import hf_llm

PAIRS = {
    "transformer-transformer": ("transformer", "transformer"),
    "cnn-cnn": ("cnn", "cnn"),
    "transformer-cnn": ("transformer", "cnn"),
    "rnn-cnn": ("rnn", "cnn"),
}


def copy_rows(n: int, seed: int) -> list[dict]:
    generator = torch.Generator().manual_seed(seed)
    rows = []
    for _ in range(n):
        length = int(torch.randint(3, 7, (1,), generator=generator))
        source = torch.randint(4, 61, (length,), generator=generator).tolist()
        rows.append({"input_ids": source, "labels": source + [2]})
    return rows


@pytest.mark.parametrize("pair", PAIRS)
def test_outputs_depend_on_the_source_after_short_training(pair, tmp_path, tiny_tokenizer):
    encoder, decoder = PAIRS[pair]
    fields = {**{k: v for k, v in TINY.items() if k != "initializer_range"}, "hidden_size": 64, "intermediate_size": 128}
    config = hf_llm.HfLlmConfig(**fields, is_encoder_decoder=True, decoder_start_token_id=1,
                                encoder_backbone=encoder, decoder_backbone=decoder)
    torch.manual_seed(0)
    model = AutoModelForSeq2SeqLM.from_config(config)
    tokenizer = tiny_tokenizer
    args = Seq2SeqTrainingArguments(
        output_dir=str(tmp_path / "out"), per_device_train_batch_size=16, learning_rate=2e-3, max_steps=150,
        warmup_steps=20, lr_scheduler_type="constant_with_warmup", weight_decay=0.0, save_strategy="no",
        report_to=[], use_cpu=True, seed=0, dataloader_num_workers=0, disable_tqdm=True,
    )
    Seq2SeqTrainer(model=model, args=args, train_dataset=Dataset.from_list(copy_rows(1024, 0)),
                   data_collator=DataCollatorForSeq2Seq(tokenizer, model=model)).train()
    model.eval()
    sources = torch.tensor([[10, 20, 30, 40, 2], [50, 15, 45, 25, 2]])
    with torch.no_grad():
        out = model.generate(input_ids=sources, attention_mask=torch.ones_like(sources), max_new_tokens=6,
                             do_sample=False, num_beams=1)
    first, second = out[0].tolist(), out[1].tolist()
    assert first != second, f"the same output {first} for two different sources"
