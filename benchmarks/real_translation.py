"""Real-data seq2seq comparison: English->French gettext catalogs (and a summarization set) with Seq2SeqTrainer.

    python benchmarks/real_translation.py data                      # builds benchmarks/real_data/*.jsonl
    python benchmarks/real_translation.py train --model cnn:cnn --steps 600 --out results/x.json \
        --config '{"cnn_weight_norm": true}'
    python benchmarks/real_translation.py train --model marian ...

Data: msgid -> msgstr pairs of /usr/share/locale/fr/LC_MESSAGES/*.mo (singular entries, no header, deduplicated,
no pairs that are mostly format codes, markup or very long), built by the package's hf_llm/gettext_corpus.py (the
bundled dataset `hf_llm:gettext_en_fr`). Validation and test are whole catalogs (held out BY CATALOG, never random
rows), so no sentence of a test catalog was seen in training. mt_test300.jsonl (the 300 pairs recipe_table.py
validated on) is `hf_llm:gettext_en_fr`'s validation split: 300 pairs of mt_test.jsonl, shuffled with seed 0.
Summarization (`--task summarization`): Python standard-library docstrings, body -> first line (what the
bundled demo does, but built from this machine's stdlib so it is real text), held out by module.

Every run: one thread, AdamW, inverse-sqrt schedule, label smoothing 0.1, beam 4 on the test set; the Trainer's
logged loss and gradient norm (before clipping) are kept in the output JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
DATA = os.path.join(HERE, "real_data")


def build_translation() -> dict:
    """The package's gettext corpus (hf_llm/gettext_corpus.py) as whole-catalog splits: test = the seven catalogs
    that `hf_llm:gettext_en_fr` draws its validation from, validation = gnupg2 and coreutils, train = the rest;
    test300 = 300 pairs of test (seed 0), the validation split of `hf_llm:gettext_en_fr` and of recipe_table.py."""
    sys.path.insert(0, os.path.dirname(HERE))
    from hf_llm.gettext_corpus import held_out_splits, pick_validation

    first, second, train = held_out_splits("fr")
    return {"test": first, "validation": second, "train": train,
            "test300": pick_validation(first, second)[0]}  # hf_llm:gettext_en_fr's validation split


def build_summarization() -> dict:
    import importlib
    import inspect
    import pkgutil

    names = sorted(m.name for m in pkgutil.iter_modules() if not m.name.startswith("_") and m.name not in
                   ("antigravity", "this", "idlelib", "tkinter", "turtle", "turtledemo", "test", "lib2to3"))
    by_module = {}
    for name in names:
        try:
            module = importlib.import_module(name)
        except BaseException:
            continue
        rows = []
        for attr, obj in list(vars(module).items())[:400]:
            if attr.startswith("_") or getattr(obj, "__module__", name) != name:
                continue
            for member in [obj] + ([v for k, v in vars(obj).items() if not k.startswith("_")] if inspect.isclass(obj) else []):
                doc = inspect.getdoc(member) if callable(member) or inspect.isclass(member) else None
                if not doc:
                    continue
                parts = doc.strip().split("\n\n", 1)
                summary, body = parts[0].replace("\n", " ").strip(), (parts[1] if len(parts) > 1 else "").strip()
                if 10 <= len(summary) <= 150 and len(body) >= 40 and not summary.endswith(":"):
                    rows.append({"document": re.sub(r"\s+", " ", body)[:1200], "summary": summary, "module": name})
        by_module[name] = rows
    rng = random.Random(0)
    modules = [m for m in by_module if by_module[m]]
    rng.shuffle(modules)
    splits = {"train": [], "validation": [], "test": []}
    total = sum(len(by_module[m]) for m in modules)
    seen = set()
    for module in modules:
        split = "test" if len(splits["test"]) < 0.1 * total else "validation" if len(splits["validation"]) < 0.05 * total else "train"
        for row in by_module[module]:
            if row["document"] in seen:
                continue
            seen.add(row["document"])
            splits[split].append(row)
    return splits


def write(splits: dict, prefix: str) -> None:
    os.makedirs(DATA, exist_ok=True)
    for split, rows in splits.items():
        with open(os.path.join(DATA, f"{prefix}_{split}.jsonl"), "w") as f:
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
        print(prefix, split, len(rows), "pairs", sorted({r.get("catalog", r.get("module")) for r in rows})[:12])


def read(prefix: str, split: str) -> list[dict]:
    with open(os.path.join(DATA, f"{prefix}_{split}.jsonl")) as f:
        return [json.loads(line) for line in f]


def main_train(args) -> dict:
    import torch

    torch.set_num_threads(1)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    from datasets import Dataset
    from transformers import (DataCollatorForSeq2Seq, GenerationConfig, MarianConfig, MarianMTModel,
                              Seq2SeqTrainer, Seq2SeqTrainingArguments, TrainerCallback, set_seed)

    sys.path.insert(0, os.path.dirname(HERE))
    import hf_llm  # noqa: F401  (registers the model type)
    from hf_llm.modeling.configuration_hf_llm import HfLlmConfig
    from hf_llm.modeling.modeling_hf_llm import HfLlmForSeq2SeqLM
    from hf_llm.tasks.metrics import summarization_metrics, translation_metrics
    from hf_llm.tokenizer import train_tokenizer

    set_seed(args.seed)
    prefix = args.data or ("sum" if args.task == "summarization" else "mt")
    src_key, tgt_key = ("document", "summary") if args.task == "summarization" else ("source", "target")
    train_rows, test_rows = read(prefix, "train"), read(prefix, "test")
    if args.test_size:
        test_rows = random.Random(0).sample(test_rows, min(args.test_size, len(test_rows)))
    tok_dir = os.path.join(DATA, f"tokenizer_{prefix}_{args.vocab}")
    if os.path.isdir(tok_dir):
        from transformers import AutoTokenizer
        tokenizer = AutoTokenizer.from_pretrained(tok_dir)
    else:
        texts = [r[k] for r in train_rows for k in (src_key, tgt_key)]
        tokenizer = train_tokenizer((texts[i:i + 1000] for i in range(0, len(texts), 1000)), args.vocab)
        tokenizer.save_pretrained(tok_dir)
    pad, bos, eos = tokenizer.pad_token_id, tokenizer.bos_token_id, tokenizer.eos_token_id

    def encode(rows):
        out = []
        for r in rows:
            s = tokenizer(r[src_key], add_special_tokens=False)["input_ids"][: args.max_source - 1] + [eos]
            t = tokenizer(r[tgt_key], add_special_tokens=False)["input_ids"][: args.max_target - 1] + [eos]
            out.append({"input_ids": s, "attention_mask": [1] * len(s), "labels": t})
        return Dataset.from_list(out)

    train_set = encode(train_rows)
    layers, hidden = args.layers, args.hidden
    if args.model == "marian":
        config = MarianConfig(
            vocab_size=len(tokenizer), d_model=hidden, encoder_layers=layers, decoder_layers=layers,
            encoder_attention_heads=args.heads, decoder_attention_heads=args.heads, encoder_ffn_dim=4 * hidden,
            decoder_ffn_dim=4 * hidden, max_position_embeddings=max(args.max_source, args.max_target) + 2,
            pad_token_id=pad, eos_token_id=eos, bos_token_id=bos, decoder_start_token_id=bos, forced_eos_token_id=eos,
            dropout=args.dropout, attention_dropout=0.0, activation_dropout=0.0, scale_embedding=True,
            share_encoder_decoder_embeddings=True, tie_word_embeddings=True,
        )
        model = MarianMTModel(config)
    else:
        encoder, decoder = args.model.split(":")
        fields = dict(
            vocab_size=len(tokenizer), hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=args.heads,
            intermediate_size=4 * hidden, dropout=args.dropout, encoder_backbone=encoder, decoder_backbone=decoder,
            is_encoder_decoder=True, pad_token_id=pad, bos_token_id=bos, eos_token_id=eos, decoder_start_token_id=bos,
            max_position_embeddings=max(args.max_source, args.max_target) + 2,
        )
        fields.update(json.loads(args.config))
        model = HfLlmForSeq2SeqLM(HfLlmConfig(**fields))
    model.generation_config = GenerationConfig(
        num_beams=args.beams, max_length=args.max_target + 1, do_sample=False, pad_token_id=pad, eos_token_id=eos,
        bos_token_id=bos, decoder_start_token_id=bos,
    )
    log = []

    class Keep(TrainerCallback):
        def on_log(self, a, state, control, logs=None, **kw):
            if logs and "loss" in logs:
                log.append({"step": state.global_step, "loss": round(logs["loss"], 4),
                            "grad_norm": round(float(logs.get("grad_norm", float("nan"))), 3)})
                print(log[-1], flush=True)

    training = Seq2SeqTrainingArguments(
        output_dir=os.path.join("/tmp", "real_mt_" + str(os.getpid())), max_steps=args.steps,
        per_device_train_batch_size=args.batch, learning_rate=args.lr, warmup_steps=args.warmup,
        lr_scheduler_type=args.schedule, label_smoothing_factor=args.label_smoothing, weight_decay=0.0,
        max_grad_norm=args.clip, logging_steps=args.log_every, save_strategy="no", report_to=[], seed=args.seed,
        use_cpu=True, dataloader_num_workers=0, disable_tqdm=True, adam_beta2=0.98,
    )
    trainer = Seq2SeqTrainer(model=model, args=training, train_dataset=train_set,
                             data_collator=DataCollatorForSeq2Seq(tokenizer, model=model), callbacks=[Keep()])
    start = time.time()
    trainer.train()
    train_seconds = time.time() - start

    model.eval()
    predictions = []
    tokenizer.padding_side = "right"
    with torch.no_grad():
        for i in range(0, len(test_rows), 50):
            chunk = test_rows[i:i + 50]
            ids = [tokenizer(r[src_key], add_special_tokens=False)["input_ids"][: args.max_source - 1] + [eos] for r in chunk]
            batch = tokenizer.pad({"input_ids": ids}, return_tensors="pt")
            out = model.generate(**batch, generation_config=model.generation_config)
            predictions += [t.strip() for t in tokenizer.batch_decode(out, skip_special_tokens=True)]
    references = [r[tgt_key] for r in test_rows]
    # How much the model uses its source: teacher-forced test loss with each row's own source and with the
    # source of another row (rolled by one in the batch). Equal losses: the decoder is an LM of the targets.
    collator = DataCollatorForSeq2Seq(tokenizer, model=model)
    test_set = encode(test_rows[:300])

    def source_losses(dataset) -> dict:
        losses = {"own": [], "other": []}
        with torch.no_grad():
            for i in range(0, len(dataset), 50):
                rows = [dataset[j] for j in range(i, min(i + 50, len(dataset)))]
                if len(rows) < 2:
                    continue
                for kind, sources in (("own", rows), ("other", rows[1:] + rows[:1])):
                    mixed = [{"input_ids": s["input_ids"], "attention_mask": s["attention_mask"], "labels": r["labels"]}
                             for s, r in zip(sources, rows)]
                    batch = collator(mixed)
                    losses[kind].append(float(model(**batch).loss))
        return losses

    losses = source_losses(test_set)
    # The same on 300 training rows: a gap there but none on test means the source is used to memorise
    # training pairs, not ignored.
    train_losses = source_losses(train_set.select(range(min(300, len(train_set)))))
    # Weight norms of the paths that carry the source (cross-attention) and of the decoder's own self-attention.
    weight_norms = {n: round(float(p.norm()), 4) for n, p in model.named_parameters()
                    if "cross_attn" in n or "encoder_attn" in n or ("decoder" in n and "self_attn.o_proj" in n)}
    probe = {}
    if args.model != "marian" and "transformer" in args.model.split(":")[1]:
        # Does the source reach the decoder? Encoder output spread across sources, and the size of each
        # cross-attention output next to the residual stream it is added to.
        rows = [test_set[j] for j in range(min(32, len(test_set)))]
        batch = collator(rows)
        sizes = []
        hooks = [layer.cross_attn.register_forward_hook(lambda m, i, o: sizes.append(float(o[0].norm(dim=-1).mean())))
                 for layer in model.model.decoder.layers]
        residual = []
        hooks += [layer.cross_attn_norm.register_forward_hook(lambda m, i, o: residual.append(float(i[0].norm(dim=-1).mean())))
                  for layer in model.model.decoder.layers]
        with torch.no_grad():
            enc = model.model.encoder(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
            model(**batch)
        for h in hooks:
            h.remove()
        first = enc[:, 0]  # (B, H) first source token's state
        probe = {"encoder_first_state_spread": round(float(first.std(0).mean()), 4),
                 "cross_attn_output_norm": [round(x, 3) for x in sizes], "residual_norm": [round(x, 3) for x in residual]}
        print("probe", probe, flush=True)
    source_use = {f"loss_{k}_source": round(sum(v) / max(1, len(v)), 4) for k, v in losses.items()}
    source_use.update({f"train_loss_{k}_source": round(sum(v) / max(1, len(v)), 4) for k, v in train_losses.items()})
    metrics = (translation_metrics if args.task == "translation" else summarization_metrics)(predictions, references)
    metrics = {k: v for k, v in metrics.items() if not k.endswith("signature")}
    distinct = len(set(predictions)) / max(1, len(predictions))
    result = {
        "model": args.model, "config": args.config, "task": args.task, "steps": args.steps, "lr": args.lr,
        "clip": args.clip, "warmup": args.warmup, "hidden": hidden, "layers": layers, "train_pairs": len(train_rows),
        "test_pairs": len(test_rows), "metrics": metrics, "distinct_outputs": round(distinct, 3), **source_use, "weight_norms": weight_norms, "probe": probe,
        "train_seconds": round(train_seconds, 1), "parameters": sum(p.numel() for p in model.parameters()),
        "log": log, "samples": [(r[src_key][:120], p, r[tgt_key]) for r, p in zip(test_rows[:6], predictions[:6])],
        "label": args.label,
    }
    if args.save_model:
        model.save_pretrained(args.save_model)
        tokenizer.save_pretrained(args.save_model)
    print(json.dumps({k: result[k] for k in ("model", "config", "metrics", "distinct_outputs", "loss_own_source", "loss_other_source", "train_loss_own_source", "train_loss_other_source", "train_seconds")}))
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as f:
            json.dump(result, f, indent=1, ensure_ascii=False)
    return result


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("command", choices=["data", "train"])
    parser.add_argument("--task", default="translation", choices=["translation", "summarization"])
    parser.add_argument("--data", default=None, help="file prefix in real_data/: mt, sum (stdlib docstrings) or "
                        "demo (hf_llm:demo_summarization, written by the data command; its validation split as test)")
    parser.add_argument("--model", default="transformer:transformer", help="encoder:decoder, or marian")
    parser.add_argument("--config", default="{}", help="extra HfLlmConfig fields as JSON")
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--schedule", default="inverse_sqrt")
    parser.add_argument("--clip", type=float, default=1.0)
    parser.add_argument("--label-smoothing", type=float, default=0.1)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=3)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--dropout", type=float, default=0.1)
    parser.add_argument("--vocab", type=int, default=8000)
    parser.add_argument("--max-source", type=int, default=48)
    parser.add_argument("--max-target", type=int, default=64)
    parser.add_argument("--beams", type=int, default=4)
    parser.add_argument("--test-size", type=int, default=500)
    parser.add_argument("--log-every", type=int, default=25)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--label", default="")
    parser.add_argument("--out", default=None)
    parser.add_argument("--save-model", default=None, help="save the trained model and tokenizer to this folder")
    args = parser.parse_args()
    if args.command == "data":
        write(build_summarization(), "sum")  # first: it imports every module it finds, and what was imported before
        write(build_translation(), "mt")     # (hf_llm, torch) would change its rows
        from hf_llm.demo_data import demo_summarization

        demo = demo_summarization()
        write({"train": list(demo["train"]), "test": list(demo["validation"])}, "demo")
    else:
        main_train(args)


if __name__ == "__main__":
    main()
