"""Small timing helpers shared by the benchmarks: A/B alternation, medians, decode-only generation speed."""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable

import torch


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def alternate(candidates: dict[str, Callable[[], object]], repeats: int, warmup: int = 1) -> dict[str, float]:
    """Median seconds per call of each candidate, calls interleaved (A B A B ...) so drift hits all alike."""
    for fn in candidates.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {name: [] for name in candidates}
    for _ in range(repeats):
        for name, fn in candidates.items():
            times[name].append(timed(fn))
    return {name: statistics.median(values) for name, values in times.items()}


def train_step_fn(model: torch.nn.Module, batch: dict, lr: float = 1e-4) -> Callable[[], None]:
    """One forward + backward + AdamW step on a fixed batch."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    model.train()

    def step() -> None:
        loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


@torch.no_grad()
def decode_tokens_per_second(model, context: int, new_tokens: int, vocab: int, repeats: int = 3) -> float:
    """Greedy decoding speed with the prefill excluded: (time for 1 + N tokens - time for 1 token) / N.
    (generate() reads its stopping flags on the host every step, so its wall time includes the device's work.)"""
    model.eval()
    ids = torch.randint(3, vocab, (1, context), generator=torch.Generator().manual_seed(0)).to(model.device)
    kwargs = dict(do_sample=False, pad_token_id=0, eos_token_id=None)
    one = lambda: model.generate(ids, max_new_tokens=1, min_new_tokens=1, **kwargs)
    many = lambda: model.generate(ids, max_new_tokens=new_tokens + 1, min_new_tokens=new_tokens + 1, **kwargs)
    result = alternate({"one": one, "many": many}, repeats=repeats)
    return new_tokens / max(result["many"] - result["one"], 1e-9)


def dump(path: str, payload: dict) -> None:
    with open(path, "w") as f:
        json.dump(payload, f, indent=2)
