"""PEFT (LoRA) benchmark (issue 17): the cost of a training step with a LoRA adapter, per family.

For each language model (Transformer, LSTM, GCNN) and one stepped seq2seq model (LSTM + Luong attention with input
feeding): a training step (forward, backward, AdamW) of
- `full`: the base model, every weight trained;
- `lora all-linear`: `get_peft_model(model, LoraConfig(target_modules="all-linear"))` (for the recurrent family
  the LSTM weights through their nn.Linear views, `HfLlmGateProjection`; the fused kernel runs with W + BA);
and for the LSTM LM two other ways to adapt the recurrent weights:
- `lora target_parameters`: peft's `ParamWrapper` on `rnn.weight_ih_l0` / `rnn.weight_hh_l0` (a parametrization
  around each call of the fused nn.LSTM);
- `loop + lora`: an LSTM LM whose gates are plain nn.Linear layers run in a Python loop over time (the layer
  peft could target without any help, but not fused), LoRA on all of them.

    python benchmarks/bench_peft.py [--quick] [--out benchmarks/results/peft.json]
"""

from __future__ import annotations

import argparse
import os
import sys

import torch
from torch import nn

sys.path.insert(0, os.path.dirname(__file__))
from common import alternate, dump, train_step_fn  # noqa: E402

import hf_llm  # noqa: E402
from peft import LoraConfig, get_peft_model  # noqa: E402
from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM  # noqa: E402
from transformers.modeling_outputs import CausalLMOutput  # noqa: E402


class LoopLSTMLM(nn.Module):
    """An LSTM LM with its gates as nn.Linear layers, stepped in Python: what a recurrent layer that peft can
    target without help costs when it gives up the fused kernel (input projections for all steps at once)."""

    def __init__(self, vocab: int, hidden: int, layers: int):
        super().__init__()
        self.embed = nn.Embedding(vocab, hidden)
        self.ih = nn.ModuleList([nn.Linear(hidden, 4 * hidden) for _ in range(layers)])
        self.hh = nn.ModuleList([nn.Linear(hidden, 4 * hidden, bias=False) for _ in range(layers)])
        self.head = nn.Linear(hidden, vocab, bias=False)

    def forward(self, input_ids, labels=None, **kwargs):
        x = self.embed(input_ids)  # (B, T, H)
        for ih, hh in zip(self.ih, self.hh):
            gates_x = ih(x)  # (B, T, 4H)
            h = c = x.new_zeros(x.shape[0], x.shape[-1])
            outputs = []
            for t in range(x.shape[1]):
                i, f, g, o = (gates_x[:, t] + hh(h)).chunk(4, dim=-1)
                c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
                h = torch.sigmoid(o) * torch.tanh(c)
                outputs.append(h)
            x = torch.stack(outputs, dim=1)
        logits = self.head(x)
        loss = nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1), labels[:, 1:].flatten())
        return CausalLMOutput(loss=loss, logits=logits)


def lora(model, **fields):
    return get_peft_model(model, LoraConfig(r=8, lora_alpha=16, **fields))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", default="benchmarks/results/peft.json")
    args = parser.parse_args()
    vocab, hidden, layers = 2000, 256, 2
    batch, length, repeats = (8, 32, 3) if args.quick else (8, 64, 5)
    torch.manual_seed(0)
    torch.set_num_threads(1)  # one thread: steadier figures on a shared CPU
    common = dict(vocab_size=vocab, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=4,
                  intermediate_size=4 * hidden, dropout=0.0, pad_token_id=0, bos_token_id=1, eos_token_id=2)
    ids = torch.randint(3, vocab, (batch, length))
    lm_batch = dict(input_ids=ids, labels=ids)
    s2s_batch = dict(input_ids=ids, labels=ids[:, : length // 2])

    def lm(backbone: str, **extra):
        return AutoModelForCausalLM.from_config(hf_llm.HfLlmConfig(backbone=backbone, **common, **extra))

    def s2s():
        return AutoModelForSeq2SeqLM.from_config(hf_llm.HfLlmConfig(
            is_encoder_decoder=True, decoder_start_token_id=1, backbone="rnn", rnn_attention="luong_general",
            rnn_input_feeding=True, **common))

    groups = {
        "transformer LM": (lambda: lm("transformer"), lm_batch, {}),
        "LSTM LM": (lambda: lm("rnn", rnn_cell="lstm"), lm_batch, {
            "lora target_parameters": lambda: lora(lm("rnn", rnn_cell="lstm"), target_modules=[],
                                                   target_parameters=["rnn.weight_ih_l0", "rnn.weight_hh_l0"]),
            "loop + lora": lambda: lora(LoopLSTMLM(vocab, hidden, layers), target_modules=r"(ih|hh)\.\d+"),
        }),
        "GCNN LM": (lambda: lm("cnn"), lm_batch, {}),
        "LSTM seq2seq (Luong, input feeding: stepped)": (s2s, s2s_batch, {}),
    }
    results = {}
    for group, (build, inputs, others) in groups.items():
        builders = {"full": build, "lora all-linear": lambda build=build: lora(build(), target_modules="all-linear"),
                    **others}
        steps = {}
        for name, make in builders.items():
            torch.manual_seed(0)
            steps[name] = train_step_fn(make(), inputs)
        seconds = alternate(steps, repeats=repeats)
        results[group] = {name: round(1000 * s, 1) for name, s in seconds.items()}
        print(group, {name: f"{ms} ms" for name, ms in results[group].items()}, flush=True)
    payload = dict(shape=dict(batch=batch, length=length, hidden=hidden, layers=layers, vocab=vocab),
                   torch=torch.__version__, threads=torch.get_num_threads(), ms_per_training_step=results)
    dump(args.out, payload)


if __name__ == "__main__":
    main()
