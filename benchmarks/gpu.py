"""The GPU check: correctness on CUDA, bf16, SDPA / flash attention and throughput of every family.

    python benchmarks/gpu.py [--out DIR] [--budget SECONDS]      # or: bash benchmarks/gpu.sh

One short run (a few minutes on one accelerator), sections in order of importance, each written to
DIR/gpu.json as soon as it is done (a run cut short keeps what it measured); optional sections are skipped
once `--budget` seconds have passed.

1. Correctness on CUDA (fp32, TF32 off): for every tiny test configuration of tests/cases.py, the cached
   incremental forward against the full forward, greedy and beam generation with and without the cache,
   and left-padded batched generation against each row alone. SDPA against eager attention in bf16, and
   the Transformer's training step with SDPA restricted to the flash kernel.
2. Training tokens/s and peak memory, fp32 (TF32) and bf16 autocast, SDPA and eager attention: hf_llm's
   three families against GPT2LMHeadModel and LlamaForCausalLM at the bench shapes of benchmarks/run.py
   scaled for a GPU; model FLOPs utilisation against the bf16 matmul peak measured in the same run.
3. Greedy decoding tokens/s at context 16 and 512 (batch 1, bf16 weights, prefill excluded); seq2seq training and
   beam-4 generation against BART; gradient checkpointing's memory saving; torch.compile per family.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "tests"))
from cases import LM_CASES, SEQ2SEQ_CASES, lm_config, seq2seq_config  # noqa: E402
import run  # noqa: E402
from common import decode_tokens_per_second  # noqa: E402
from run import flops_per_token, params, seq2seq_models  # noqa: E402

from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM  # noqa: E402
from transformers.utils import logging as hf_logging  # noqa: E402

DEVICE = torch.device("cuda")
SHAPES = {  # benchmarks/run.py's shapes, grown until a step is more than kernel-launch overhead
    "base": dict(vocab=8192, hidden=512, layers=8, heads=8, seq=512, batch=16),
    "large": dict(vocab=32000, hidden=1024, layers=12, heads=16, seq=1024, batch=16),
}
TRANSFORMERS = ["hf_llm transformer", "GPT-2", "Llama"]
FAMILIES = ["hf_llm transformer", "hf_llm rnn", "hf_llm cnn"]


def synchronize() -> None:
    if DEVICE.type == "cuda":
        torch.cuda.synchronize()


def sync_time(fn) -> float:
    synchronize()
    start = time.perf_counter()
    fn()
    synchronize()
    return time.perf_counter() - start


def matmul_peak_tflops(dtype: torch.dtype, size: int = 8192) -> float:
    a = torch.randn(size, size, device=DEVICE, dtype=dtype)
    b = torch.randn(size, size, device=DEVICE, dtype=dtype)
    for _ in range(3):
        a @ b
    best = min(sync_time(lambda: [a @ b for _ in range(10)]) / 10 for _ in range(3))
    return 2 * size**3 / best / 1e12


# --------------------------------------------------------------------------------------------------
# 1. correctness
@torch.no_grad()
def check_lm(config) -> dict:
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config).to(DEVICE).eval()
    ids = torch.randint(3, config.vocab_size, (3, 12), device=DEVICE)
    full = model(ids).logits
    prefix = model(ids[:, :6], use_cache=True)
    cache, steps = prefix.past_key_values, [prefix.logits]
    for t in range(6, 12):
        out = model(ids[:, t : t + 1], past_key_values=cache, use_cache=True)
        cache = out.past_key_values
        steps.append(out.logits)
    incremental = torch.cat(steps, dim=1)
    kwargs = dict(max_new_tokens=10, min_new_tokens=10, pad_token_id=0, eos_token_id=None)
    greedy = model.generate(ids, do_sample=False, **kwargs)
    greedy_nocache = model.generate(ids, do_sample=False, use_cache=False, **kwargs)
    beam = model.generate(ids, num_beams=3, do_sample=False, **kwargs)
    beam_nocache = model.generate(ids, num_beams=3, do_sample=False, use_cache=False, **kwargs)
    # left padding: row 0 shortened by 4 tokens and padded on the left must generate what it does alone
    padded = ids.clone()
    padded[0, :4] = 0
    mask = (padded != 0).long()
    mask[1:] = 1
    batch = model.generate(padded, attention_mask=mask, do_sample=False, **kwargs)
    alone = model.generate(ids[:1, 4:], do_sample=False, **kwargs)
    return {
        "cached_vs_full_logits_max_abs_diff": float((incremental - full).abs().max()),
        "greedy_cache_equal": bool(torch.equal(greedy, greedy_nocache)),
        "beam_cache_equal": bool(torch.equal(beam, beam_nocache)),
        "left_padding_equal": bool(torch.equal(batch[0, 12:], alone[0, 8:])),
    }


@torch.no_grad()
def check_seq2seq(config) -> dict:
    torch.manual_seed(0)
    model = AutoModelForSeq2SeqLM.from_config(config).to(DEVICE).eval()
    src = torch.randint(3, config.vocab_size, (3, 10), device=DEVICE)
    mask = torch.ones_like(src)
    mask[0, 7:] = 0  # right-padded source row
    src = src.masked_fill(mask == 0, 0)
    tgt = torch.randint(3, config.vocab_size, (3, 8), device=DEVICE)
    full = model(input_ids=src, attention_mask=mask, decoder_input_ids=tgt).logits
    encoder_outputs = model.get_encoder()(input_ids=src, attention_mask=mask)
    out = model(encoder_outputs=encoder_outputs, attention_mask=mask, decoder_input_ids=tgt[:, :1], use_cache=True)
    cache, steps = out.past_key_values, [out.logits]
    for t in range(1, 8):
        out = model(encoder_outputs=encoder_outputs, attention_mask=mask, decoder_input_ids=tgt[:, t : t + 1],
                    past_key_values=cache, use_cache=True)
        cache = out.past_key_values
        steps.append(out.logits)
    kwargs = dict(attention_mask=mask, max_new_tokens=8, min_new_tokens=8, pad_token_id=0, eos_token_id=None)
    beam = model.generate(src, num_beams=3, do_sample=False, **kwargs)
    beam_nocache = model.generate(src, num_beams=3, do_sample=False, use_cache=False, **kwargs)
    greedy = model.generate(src, do_sample=False, **kwargs)
    greedy_nocache = model.generate(src, do_sample=False, use_cache=False, **kwargs)
    return {
        "cached_vs_full_logits_max_abs_diff": float((torch.cat(steps, dim=1) - full).abs().max()),
        "greedy_cache_equal": bool(torch.equal(greedy, greedy_nocache)),
        "beam_cache_equal": bool(torch.equal(beam, beam_nocache)),
    }


def attention_checks() -> dict:
    """SDPA vs eager in bf16, and a training step whose SDPA may use the flash kernel only."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    results = {}
    torch.manual_seed(0)
    config = lm_config("transformer", hidden_size=128, num_attention_heads=4, initializer_range=0.02)
    model = AutoModelForCausalLM.from_config(config).to(DEVICE).eval()
    ids = torch.randint(3, config.vocab_size, (4, 64), device=DEVICE)
    mask = torch.ones_like(ids)
    mask[0, :10] = 0
    with torch.no_grad(), torch.autocast(DEVICE.type, dtype=torch.bfloat16):
        for name, m in (("no padding", None), ("left padding", mask)):
            model.set_attn_implementation("sdpa")
            sdpa = model(ids, attention_mask=m).logits.float()
            model.set_attn_implementation("eager")
            eager = model(ids, attention_mask=m).logits.float()
            keep = (mask if m is not None else torch.ones_like(ids)).bool()
            results[f"bf16 sdpa vs eager logits max abs diff ({name})"] = float((sdpa - eager)[keep].abs().max())
    model.set_attn_implementation("sdpa")
    model.train()
    try:
        with sdpa_kernel(SDPBackend.FLASH_ATTENTION), torch.autocast(DEVICE.type, dtype=torch.bfloat16):
            loss = model(ids, labels=ids).loss
            loss.backward()
        results["flash kernel training step"] = f"ok, loss {loss.item():.3f}"
    except RuntimeError as error:  # no usable flash kernel for our call: that is a finding, not a crash
        results["flash kernel training step"] = f"failed: {str(error).splitlines()[0]}"
    return results


# --------------------------------------------------------------------------------------------------
# 2-3. speed
def train_tokens_per_s(model, shape: dict, dtype: torch.dtype, steps: int = 10, windows: int = 3):
    model = model.to(DEVICE).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
    ids = torch.randint(3, shape["vocab"], (shape["batch"], shape["seq"]), device=DEVICE)

    def step():
        with torch.autocast(DEVICE.type, dtype=dtype, enabled=dtype != torch.float32):
            loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for _ in range(3):
        step()
    torch.cuda.reset_peak_memory_stats()
    seconds = statistics.median(sync_time(lambda: [step() for _ in range(steps)]) / steps for _ in range(windows))
    return shape["batch"] * shape["seq"] / seconds, torch.cuda.max_memory_allocated() / 2**20


def markdown(results: dict) -> str:
    """The tables of gpu.md, from gpu.json."""
    lines = [f"Device: {results['device']}, torch {results['torch']}, transformers {results['transformers']}; "
             f"matmul peak {results['matmul_peak_tflops']['bf16']} TFLOP/s bf16, "
             f"{results['matmul_peak_tflops']['tf32']} TF32.", ""]
    checks = results["correctness_fp32"]
    failed = [f"{case}: {key}" for case, row in checks.items() for key, ok in row.items()
              if isinstance(ok, bool) and not ok]
    worst = max(row["cached_vs_full_logits_max_abs_diff"] for row in checks.values())
    lines += [f"Correctness on CUDA (fp32): {len(checks)} configurations, cached vs full forward max |diff| "
              f"{worst:.1e}; greedy and beam generation with and without the cache, left padding: "
              + ("all equal." if not failed else "FAILED " + ", ".join(failed)), ""]
    lines += [f"{key}: {value}" for key, value in results["attention"].items()] + [""]
    for section, title in (("training_base", "base"), ("training_large", "large")):
        shape = results["shapes"][title]
        lines += [f"| training, {title} shape (vocab {shape['vocab']}, hidden {shape['hidden']}, {shape['layers']} "
                  f"layers, seq {shape['seq']}, batch {shape['batch']}) | precision | attention | parameters | "
                  "tokens/s | MFU | peak MiB |", "|---|---|---|---|---|---|---|"]
        for key, row in results[section].items():
            name, precision, attention = key.split(" | ")
            attention = attention if "mfu" in row else "-"
            mfu = f"{row['mfu']:.0%}" if "mfu" in row else ""
            lines.append(f"| {name} | {precision} | {attention} | {row['params']:,} | {row['train_tokens_per_s']} | "
                         f"{mfu} | {row['peak_memory_mib']} |")
        lines.append("")
    lines += ["| greedy decoding, bf16, batch 1 | context 16 | context 512 | 512 / 16 |", "|---|---|---|---|"]
    lines += [f"| {name} | {row['16']} | {row['512']} | {row['512 / 16']} |"
              for name, row in results["decode_bf16_batch1"].items()] + [""]
    lines += ["| seq2seq, bf16 | parameters | training tokens/s (target side) | beam-4 tokens/s |", "|---|---|---|---|"]
    lines += [f"| {name} | {row['params']:,} | {row['train_tokens_per_s_target_side']} | {row['beam4_tokens_per_s']} |"
              for name, row in results["seq2seq_bf16"].items()] + [""]
    lines += ["| gradient checkpointing, bf16 peak MiB | without | with |", "|---|---|---|"]
    lines += [f"| {name} | {row['without']} | {row['with']} |"
              for name, row in results["checkpointing_peak_memory_mib_bf16"].items()] + [""]
    lines += ["| torch.compile, bf16 training | eager tokens/s | compiled tokens/s |", "|---|---|---|"]
    lines += [f"| {name} | {row['eager_tokens_per_s']} | {row['compiled_tokens_per_s']} |"
              for name, row in results.get("torch_compile_bf16", {}).items()]
    if results.get("skipped"):
        lines += ["", "Skipped (time budget): " + "; ".join(results["skipped"])]
    return "\n".join(lines) + "\n"


def build(shape: dict, name: str):
    return run.build(shape, [name])[name]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=os.path.join(HERE, "results"))
    parser.add_argument("--budget", type=float, default=300, help="seconds after which optional sections are skipped")
    args = parser.parse_args()
    assert torch.cuda.is_available(), "no GPU visible"
    hf_logging.set_verbosity_error()
    os.makedirs(args.out, exist_ok=True)
    start = time.perf_counter()
    elapsed = lambda: time.perf_counter() - start  # noqa: E731
    import transformers

    results: dict = {"device": torch.cuda.get_device_name(), "torch": torch.__version__,
                     "transformers": transformers.__version__, "shapes": SHAPES, "skipped": []}

    def save(section: str, value) -> None:
        results[section] = value
        results["elapsed_s"] = round(elapsed(), 1)
        with open(os.path.join(args.out, "gpu.json"), "w") as f:
            json.dump(results, f, indent=2)
        print(f"[{elapsed():6.1f} s] {section}: {json.dumps(value)}", flush=True)

    # 1. correctness, fp32 without TF32 so that cached and full forwards are comparable
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    correctness = {f"lm {case}": check_lm(lm_config(case)) for case in LM_CASES}
    correctness.update({f"seq2seq {case}": check_seq2seq(seq2seq_config(case)) for case in SEQ2SEQ_CASES})
    save("correctness_fp32", correctness)
    save("attention", attention_checks())

    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    peaks = {"bf16": matmul_peak_tflops(torch.bfloat16), "tf32": matmul_peak_tflops(torch.float32)}
    save("matmul_peak_tflops", {k: round(v, 1) for k, v in peaks.items()})

    # 2. training throughput
    training: dict = {}
    shape = SHAPES["base"]
    for name in TRANSFORMERS + ["hf_llm rnn", "bare nn.LSTM", "hf_llm cnn"]:
        for dtype in (torch.float32, torch.bfloat16):
            for attn in (["sdpa", "eager"] if name in TRANSFORMERS else ["-"]):
                model = build(shape, name)
                if attn != "-":
                    model.set_attn_implementation(attn)
                tokens, memory = train_tokens_per_s(model, shape, dtype)
                key = f"{name} | {'bf16' if dtype == torch.bfloat16 else 'fp32 (tf32)'} | {attn}"
                row = {"params": params(model), "train_tokens_per_s": round(tokens), "peak_memory_mib": round(memory)}
                if name in TRANSFORMERS:
                    peak = peaks["bf16" if dtype == torch.bfloat16 else "tf32"]
                    row["mfu"] = round(tokens * flops_per_token(model, shape) / (peak * 1e12), 3)
                training[key] = row
                del model
                torch.cuda.empty_cache()
    save("training_base", training)

    large = SHAPES["large"]
    training = {}
    for name in TRANSFORMERS + ["hf_llm transformer (fused_loss=False)"] + FAMILIES[1:]:
        model = build(large, name.split(" (")[0])
        model.config.fused_loss = "fused_loss=False" not in name
        tokens, memory = train_tokens_per_s(model, large, torch.bfloat16, steps=5)
        row = {"params": params(model), "train_tokens_per_s": round(tokens), "peak_memory_mib": round(memory)}
        if name.split(" (")[0] in TRANSFORMERS:
            row["mfu"] = round(tokens * flops_per_token(model, large) / (peaks["bf16"] * 1e12), 3)
        training[f"{name} | bf16 | {'sdpa' if 'mfu' in row else '-'}"] = row
        del model
        torch.cuda.empty_cache()
    save("training_large", training)

    # 3. decoding, seq2seq, checkpointing, compile
    decode: dict = {}
    for name in TRANSFORMERS + FAMILIES[1:]:
        model = build(shape, name).to(DEVICE, torch.bfloat16).eval()
        decode[name] = {str(c): round(decode_tokens_per_second(model, c, 64, shape["vocab"])) for c in (16, 512)}
        decode[name]["512 / 16"] = round(decode[name]["512"] / decode[name]["16"], 2)
        del model
    save("decode_bf16_batch1", decode)

    s2s = {name: m.to(DEVICE) for name, m in seq2seq_models(shape).items()}
    seq2seq: dict = {}
    src = torch.randint(3, shape["vocab"], (4, 64), device=DEVICE)
    beam = dict(num_beams=4, max_new_tokens=32, min_new_tokens=32, do_sample=False, eos_token_id=None, pad_token_id=0)
    for name, model in s2s.items():
        tokens, memory = train_tokens_per_s(model, shape, torch.bfloat16)
        model.eval()
        with torch.no_grad(), torch.autocast(DEVICE.type, dtype=torch.bfloat16):
            model.generate(src, **beam)
            seconds = statistics.median(sync_time(lambda m=model: m.generate(src, **beam)) for _ in range(3))
        seq2seq[name] = {"params": params(model), "train_tokens_per_s_target_side": round(tokens),
                         "beam4_tokens_per_s": round(4 * 32 / seconds)}
    del s2s
    torch.cuda.empty_cache()
    save("seq2seq_bf16", seq2seq)

    checkpointing: dict = {}
    for name in FAMILIES:
        row = {}
        for flag in (False, True):
            model = build(shape, name)
            if flag:
                model.gradient_checkpointing_enable()
            _, memory = train_tokens_per_s(model, shape, torch.bfloat16, steps=2, windows=1)
            row["with" if flag else "without"] = round(memory)
            del model
            torch.cuda.empty_cache()
        checkpointing[name] = row
    save("checkpointing_peak_memory_mib_bf16", checkpointing)

    compiled: dict = {}
    for name in FAMILIES:
        if elapsed() > args.budget:
            results["skipped"].append(f"torch.compile {name} (budget)")
            continue
        model = build(shape, name)
        eager, _ = train_tokens_per_s(model, shape, torch.bfloat16)
        begin = time.perf_counter()
        model = torch.compile(model)
        tokens, _ = train_tokens_per_s(model, shape, torch.bfloat16)
        compiled[name] = {"eager_tokens_per_s": round(eager), "compiled_tokens_per_s": round(tokens),
                          "compile_and_measure_s": round(time.perf_counter() - begin, 1)}
        del model
        torch.cuda.empty_cache()
        save("torch_compile_bf16", compiled)
    save("skipped", results["skipped"])
    with open(os.path.join(args.out, "gpu.md"), "w") as f:
        f.write(markdown(results))
    print(f"done in {elapsed():.0f} s")


if __name__ == "__main__":
    main()
