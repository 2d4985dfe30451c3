"""`hf-llm serve`: transformers' own OpenAI-compatible server answering for a run folder, on a loopback port, asked
with a real HTTP client. `/v1/models` lists the model; a chat completion, streamed or not, is the reply greedy
`chat_reply` (what `hf-llm chat` prints) gives; the streamed deltas add up to the whole reply; after transformers'
`/reset` the model is loaded again the same way."""

from __future__ import annotations

import json
import socket
import threading
import time

import pytest
import torch
from cases import lm_config
from transformers import AutoModelForCausalLM

from hf_llm.cli import main
from hf_llm.inference import chat_reply, load_model_and_tokenizer
from hf_llm.tokenizer import ensure_chat_template
from test_inference import RUNS

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
from hf_llm.serving import make_server  # noqa: E402

CONVERSATION = [
    {"role": "system", "content": "w40 w41"},
    {"role": "user", "content": "w5 w9 w11"},
    {"role": "assistant", "content": "w12 w13"},
    {"role": "user", "content": "w20 w21"},
]
MAX_TOKENS = 12


def run_folder(tmp_path, case: str, tokenizer) -> str:
    """A causal LM run folder of one family: random, untied weights (a reply of varied tokens, special ones among
    them, that training would not give a tiny model) and the tiny word-level tokenizer with hf_llm's chat template."""
    folder = tmp_path / case
    ensure_chat_template(tokenizer)
    tokenizer.save_pretrained(folder)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(lm_config(case, vocab_size=len(tokenizer) + 1, tie_word_embeddings=False))
    model.generation_config.max_new_tokens = 8  # the server asks for 1024 unless told: requests say max_tokens
    model.save_pretrained(folder)
    return str(folder)


class LoopbackServer:
    """`hf-llm serve`'s uvicorn server in a thread, on a free loopback port; ready once uvicorn says it started."""

    def __init__(self, run_dir: str):
        self.server = make_server(run_dir, host="127.0.0.1", log_level="warning")
        self.socket = socket.socket()
        self.socket.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.socket.getsockname()[1]}"
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.socket]}, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        deadline = time.monotonic() + 60
        while not self.server.started:
            assert self.thread.is_alive() and time.monotonic() < deadline, "the server did not start"
            time.sleep(0.01)
        return self.url

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)
        self.socket.close()
        assert not self.thread.is_alive(), "the server did not stop"


@pytest.mark.parametrize("case", ["transformer", "rnn-lstm", "cnn"])
def test_served_chat_is_the_greedy_chat_reply_streamed_or_not(tmp_path, tiny_tokenizer, case):
    folder = run_folder(tmp_path, case, tiny_tokenizer)
    model, tokenizer = load_model_and_tokenizer(folder)
    expected = chat_reply(model, tokenizer, CONVERSATION, max_new_tokens=MAX_TOKENS, do_sample=False)
    assert len(set(expected.split())) >= 2, expected  # a reply with something to get wrong

    request = {"model": folder, "messages": CONVERSATION, "max_tokens": MAX_TOKENS, "temperature": 0}
    with LoopbackServer(folder) as url, httpx.Client(base_url=url, timeout=60) as client:
        listed = client.get("/v1/models").json()["data"]
        assert [m["id"] for m in listed] == [folder]

        answer = client.post("/v1/chat/completions", json=request)
        assert answer.status_code == 200, answer.text
        whole = answer.json()["choices"][0]["message"]["content"]
        assert whole.strip() == expected

        deltas, finish = [], None
        with client.stream("POST", "/v1/chat/completions", json={**request, "stream": True}) as events:
            assert events.status_code == 200
            for line in events.iter_lines():
                if line.startswith("data: ") and line != "data: [DONE]":
                    choice = json.loads(line[len("data: "):])["choices"][0]
                    deltas.append(choice["delta"].get("content") or "")
                    finish = choice.get("finish_reason") or finish
        assert len([d for d in deltas if d]) > 1, "the reply came in pieces"
        assert "".join(deltas) == whole
        assert finish in ("stop", "length")

        other = client.post("/v1/chat/completions", json={**request, "model": "someone/else"})
        assert other.status_code == 400 and "pinned" in other.text
        assert client.post("/reset").status_code == 200  # unloads the model: the next request loads it again
        again = client.post("/v1/chat/completions", json=request)
        assert again.status_code == 200 and again.json()["choices"][0]["message"]["content"] == whole


def test_serve_refuses_what_it_cannot_serve(capsys, tmp_path):
    assert main(["serve", str(tmp_path / "nowhere")]) == 2
    assert "Model folder not found" in capsys.readouterr().err
    assert main(["serve", str(RUNS / "translation")]) == 2
    assert "serves causal LMs" in capsys.readouterr().err

