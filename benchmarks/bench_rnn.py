"""Recurrent family benchmark (issue 3).

1. Training tokens/s of the hf_llm LSTM LM against a bare `nn.LSTM` LM of the same size in plain PyTorch.
2. Greedy decoding tokens/s at context 512 divided by context 16 (the per-token cost must not grow).
3. Training step cost of each seq2seq attention variant (fused vs stepped).

    python benchmarks/bench_rnn.py [--quick] [--out benchmarks/results/rnn.json]
"""

from __future__ import annotations

import argparse
import os
import sys

import torch
from torch import nn

sys.path.insert(0, os.path.dirname(__file__))
from common import alternate, decode_tokens_per_second, dump, train_step_fn  # noqa: E402

import hf_llm  # noqa: E402
from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM  # noqa: E402
from transformers.modeling_outputs import CausalLMOutput  # noqa: E402


class BareLSTMLM(nn.Module):
    """The plain-PyTorch reference: embedding -> nn.LSTM -> tied output projection, same dropout."""

    def __init__(self, vocab: int, hidden: int, layers: int, dropout: float):
        super().__init__()
        self.embed = nn.Embedding(vocab, hidden)
        self.drop = nn.Dropout(dropout)
        self.lstm = nn.LSTM(hidden, hidden, layers, batch_first=True, dropout=dropout if layers > 1 else 0.0)
        self.head = nn.Linear(hidden, vocab, bias=False)
        self.head.weight = self.embed.weight

    def forward(self, input_ids, labels=None, **kwargs):
        out, _ = self.lstm(self.drop(self.embed(input_ids)))
        logits = self.head(self.drop(out))
        # Shift the labels, not the logits (as transformers does): no copy of the logits.
        shifted = nn.functional.pad(labels, (0, 1), value=-100)[:, 1:]
        loss = nn.functional.cross_entropy(logits.view(-1, logits.shape[-1]), shifted.reshape(-1))
        return CausalLMOutput(loss=loss, logits=logits)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer repeats (a smoke run)")
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "rnn.json"))
    args = parser.parse_args()
    repeats = 3 if args.quick else 7
    torch.manual_seed(0)
    vocab, hidden, layers, batch, length = 8192, 256, 2, 8, 256

    # 1. training throughput
    config = hf_llm.HfLlmConfig(backbone="rnn", rnn_cell="lstm", vocab_size=vocab, hidden_size=hidden,
                                num_hidden_layers=layers, dropout=0.1)
    ours = AutoModelForCausalLM.from_config(config)
    bare = BareLSTMLM(vocab, hidden, layers, 0.1)
    n_ours, n_bare = (sum(p.numel() for p in m.parameters()) for m in (ours, bare))
    ids = torch.randint(3, vocab, (batch, length))
    data = dict(input_ids=ids, labels=ids)
    seconds = alternate({"hf_llm": train_step_fn(ours, data), "bare": train_step_fn(bare, data)}, repeats=repeats)
    tokens = batch * length
    training = {
        "params": {"hf_llm": n_ours, "bare": n_bare},
        "tokens_per_s": {k: tokens / v for k, v in seconds.items()},
        "ratio_hf_llm_over_bare": seconds["bare"] / seconds["hf_llm"],
    }

    # 2. decoding speed vs context
    decode = {ctx: decode_tokens_per_second(ours, ctx, 256, vocab, repeats=repeats) for ctx in (16, 512)}
    decoding = {"tokens_per_s": decode, "ratio_ctx512_over_ctx16": decode[512] / decode[16]}

    # 3. seq2seq variants: one training step, batch 8, source 64, target 64
    variants = {
        "none": dict(rnn_attention="none"),
        "luong_dot (fused)": dict(rnn_attention="luong_dot", rnn_input_feeding=False),
        "luong_general (fused)": dict(rnn_attention="luong_general", rnn_input_feeding=False),
        "luong_general + input feeding (stepped)": dict(rnn_attention="luong_general", rnn_input_feeding=True),
        "bahdanau (stepped)": dict(rnn_attention="bahdanau"),
    }
    src = torch.randint(3, vocab, (batch, 64))
    tgt = torch.randint(3, vocab, (batch, 64))
    steps = {}
    for name, fields in variants.items():
        cfg = hf_llm.HfLlmConfig(is_encoder_decoder=True, decoder_start_token_id=1, backbone="rnn", vocab_size=vocab,
                                 hidden_size=hidden, num_hidden_layers=layers, **fields)
        steps[name] = train_step_fn(AutoModelForSeq2SeqLM.from_config(cfg), dict(input_ids=src, labels=tgt))
    step_seconds = alternate(steps, repeats=repeats)

    results = {
        "shape": dict(vocab=vocab, hidden=hidden, layers=layers, batch=batch, length=length),
        "threads": torch.get_num_threads(),
        "training_lm": training,
        "decoding_lm": decoding,
        "seq2seq_train_step_ms": {k: 1000 * v for k, v in step_seconds.items()},
    }
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    dump(args.out, results)
    print(f"RNN LM training: hf_llm {training['tokens_per_s']['hf_llm']:.0f} tok/s, bare nn.LSTM "
          f"{training['tokens_per_s']['bare']:.0f} tok/s, ratio {training['ratio_hf_llm_over_bare']:.3f} (goal >= 0.9)")
    print(f"RNN LM greedy decoding: ctx16 {decode[16]:.0f} tok/s, ctx512 {decode[512]:.0f} tok/s, "
          f"ratio {decoding['ratio_ctx512_over_ctx16']:.3f} (goal >= 0.95)")
    for name, ms in results["seq2seq_train_step_ms"].items():
        print(f"seq2seq train step, {name}: {ms:.1f} ms")


if __name__ == "__main__":
    main()
