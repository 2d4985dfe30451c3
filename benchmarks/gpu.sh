#!/usr/bin/env bash
# One short GPU check (a few minutes on one accelerator): bf16 training, SDPA / flash attention and the
# throughput of the three families, written to benchmarks/results/gpu.json.
#   pip install torch==<a CUDA build> && pip install -e . && bash benchmarks/gpu.sh
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p benchmarks/results
python - <<'PY'
import json, time, torch
import hf_llm
from transformers import AutoModelForCausalLM, GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

assert torch.cuda.is_available(), "no GPU visible"
device = torch.device("cuda")
V, H, L, NH, T, B = 8192, 512, 8, 8, 512, 16
results = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "shape": dict(vocab=V, hidden=H, layers=L, heads=NH, seq=T, batch=B)}

def step_time(model, dtype, steps=20):
    model = model.to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
    ids = torch.randint(3, V, (B, T), device=device)
    def step():
        with torch.autocast("cuda", dtype=dtype, enabled=dtype != torch.float32):
            loss = model(input_ids=ids, labels=ids).loss
        loss.backward(); opt.step(); opt.zero_grad(set_to_none=True)
    for _ in range(3): step()
    torch.cuda.synchronize(); torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for _ in range(steps): step()
    torch.cuda.synchronize()
    return B * T * steps / (time.perf_counter() - start), torch.cuda.max_memory_allocated() / 2**20

def build(name, attn):
    torch.manual_seed(0)
    if name == "hf_llm transformer":
        return AutoModelForCausalLM.from_config(hf_llm.HfLlmConfig(vocab_size=V, hidden_size=H, num_hidden_layers=L, num_attention_heads=NH, dropout=0.0, attn_implementation=attn))
    if name == "hf_llm rnn":
        return AutoModelForCausalLM.from_config(hf_llm.HfLlmConfig(backbone="rnn", vocab_size=V, hidden_size=H, num_hidden_layers=L * 3 // 2, dropout=0.0))
    if name == "hf_llm cnn":
        return AutoModelForCausalLM.from_config(hf_llm.HfLlmConfig(backbone="cnn", vocab_size=V, hidden_size=H, cnn_decoder_spec=[[H, 3]] * (2 * L), dropout=0.0))
    if name == "GPT-2":
        return GPT2LMHeadModel(GPT2Config(vocab_size=V, n_embd=H, n_layer=L, n_head=NH, n_positions=2048, attn_implementation=attn))
    return LlamaForCausalLM(LlamaConfig(vocab_size=V, hidden_size=H, num_hidden_layers=L, num_attention_heads=NH, intermediate_size=int(8 * H / 3) // 8 * 8, tie_word_embeddings=True, attn_implementation=attn))

rows = {}
for name in ["hf_llm transformer", "GPT-2", "Llama", "hf_llm rnn", "hf_llm cnn"]:
    for dtype in (torch.float32, torch.bfloat16):
        for attn in (["sdpa", "eager"] if name in ("hf_llm transformer", "GPT-2", "Llama") else ["sdpa"]):
            tokens, memory = step_time(build(name, attn), dtype)
            rows[f"{name} {str(dtype).split('.')[-1]} {attn}"] = {"train_tokens_per_s": round(tokens), "peak_memory_mib": round(memory)}
            print(name, dtype, attn, rows[f"{name} {str(dtype).split('.')[-1]} {attn}"], flush=True)
            torch.cuda.empty_cache()
results["training"] = rows
json.dump(results, open("benchmarks/results/gpu.json", "w"), indent=2)
PY
