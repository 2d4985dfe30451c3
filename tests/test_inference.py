"""Using a trained model from the command line: `hf-llm generate` / `hf-llm chat` print tokens as they come
(transformers' TextStreamer) and print the same text as without streaming; sampling options, several sequences,
the weights' dtype and the device are the user's to choose. Run folders: tests/data/run_v1 (a recurrent LM and a
ConvS2S translation model)."""

from __future__ import annotations

import io
import pathlib

import pytest
import torch
from transformers.generation.streamers import BaseStreamer

from hf_llm.cli import main
from hf_llm.inference import generate_texts, load_model_and_tokenizer

RUNS = pathlib.Path(__file__).parent / "data" / "run_v1"
PROMPTS = {"lm": "Return the", "translation": "We have three small red cars."}


class Recorder(BaseStreamer):
    """What a streamer receives from generate: the prompt first (causal LM) or the decoder start, then a token at a time."""

    def __init__(self):
        self.puts: list[list[int]] = []
        self.ended = False

    def put(self, value):
        self.puts.append(value.flatten().tolist())

    def end(self):
        self.ended = True


@pytest.mark.parametrize("run", PROMPTS)
def test_streamed_output_is_the_output_and_arrives_a_token_at_a_time(run, capsys):
    folder = str(RUNS / run)
    assert main(["generate", folder, PROMPTS[run], "--max-new-tokens", "6", "--no-stream"]) == 0
    whole = capsys.readouterr().out
    assert main(["generate", folder, PROMPTS[run], "--max-new-tokens", "6", "--stream"]) == 0
    assert capsys.readouterr().out == whole

    model, tokenizer = load_model_and_tokenizer(folder)
    recorder = Recorder()
    (text,) = generate_texts(model, tokenizer, PROMPTS[run], streamer=recorder, max_new_tokens=6, do_sample=False)
    tokens = recorder.puts[1:]  # after the prompt / decoder start
    assert recorder.ended and 1 <= len(tokens) <= 6 and all(len(t) == 1 for t in tokens)
    assert tokenizer.decode(sum(tokens, []), skip_special_tokens=True) == text


def test_several_sequences_sampling_options_dtype_and_device(capsys):
    folder = str(RUNS / "lm")
    assert main(["generate", folder, "Return the", "--max-new-tokens", "5", "--num-beams", "3",
                 "--num-return-sequences", "3", "--no-do-sample"]) == 0
    printed = capsys.readouterr().out
    beams = [block.strip() for block in printed.split("---") if block.strip() and not block.strip().isdigit()]
    assert printed.count("--- ") == 3 and len(set(beams)) == 3, printed
    assert main(["generate", folder, "Return the", "--num-beams", "3", "--stream"]) == 2
    assert "--stream prints one sequence" in capsys.readouterr().err

    model, tokenizer = load_model_and_tokenizer(folder)
    prompt = tokenizer("Return the", add_special_tokens=False)["input_ids"]
    inputs = {"input_ids": torch.tensor([prompt]), "attention_mask": torch.ones(1, len(prompt), dtype=torch.long)}
    new = model.generate(**inputs, max_new_tokens=8, do_sample=False, repetition_penalty=1e6)[0, len(prompt):].tolist()
    assert len(set(new)) == len(new) and not set(new) & set(prompt), "a seen token is never chosen again"
    assert main(["generate", folder, "Return the", "--max-new-tokens", "8", "--repetition-penalty", "1e6",
                 "--no-stream"]) == 0
    assert capsys.readouterr().out == "Return the" + tokenizer.decode(new, skip_special_tokens=True) + "\n"

    model, _ = load_model_and_tokenizer(folder, device="cpu", dtype="bfloat16")
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16} and model.device.type == "cpu"
    assert main(["generate", folder, "Return the", "--max-new-tokens", "3", "--dtype", "bfloat16"]) == 0
    assert capsys.readouterr().out.startswith("Return the")
    assert main(["generate", folder, "Return the", "--device", "nowhere"]) == 2
    assert "error: --device nowhere:" in capsys.readouterr().err


def record_layouts(monkeypatch) -> list[set[str]]:
    """The layout ("column", "row") of the decoding weights after each `decoding_layout` call."""
    from hf_llm import inference
    from hf_llm.modeling.weight_layout import decoding_weights, is_column_major

    seen = []
    real = inference.decoding_layout

    def recorded(model, column_major=True):
        real(model, column_major)
        seen.append({"column" if is_column_major(w) else "row" for w in decoding_weights(model)})

    monkeypatch.setattr(inference, "decoding_layout", recorded)
    return seen


def test_one_sequence_at_a_time_is_decoded_on_column_major_weights(monkeypatch, capsys):
    """`hf-llm generate`, `chat` and `serve` lay the weights out for one sequence (hf_llm/modeling/weight_layout.py),
    not for beams or several returned sequences, asked for or saved in the model's generation config."""
    seen = record_layouts(monkeypatch)
    folder = str(RUNS / "lm")
    assert main(["generate", folder, "Return the", "--max-new-tokens", "3", "--no-stream", "--no-do-sample"]) == 0
    one = capsys.readouterr().out
    assert main(["generate", folder, "Return the", "--max-new-tokens", "3", "--num-beams", "2"]) == 0
    assert main(["generate", folder, "Return the", "--max-new-tokens", "3", "--num-return-sequences", "2",
                 "--do-sample"]) == 0
    assert seen == [{"column"}, {"row"}, {"row"}]
    model, tokenizer = load_model_and_tokenizer(folder)  # as loaded: row-major
    assert one.strip() == "Return the" + generate_texts(model, tokenizer, "Return the", max_new_tokens=3,
                                                        do_sample=False)[0]

    from hf_llm.inference import layout_for_decoding
    from hf_llm.serving import load_serveable

    load_serveable(folder)
    assert seen[-1] == {"column"}, "the served model"
    model.generation_config.num_beams = 3  # a recipe's generation.num_beams, saved with the model
    layout_for_decoding(model)
    assert seen[-1] == {"row"}
    layout_for_decoding(model, num_beams=1)
    assert seen[-1] == {"column"}


def test_generate_refuses_a_classifier_clearly(tmp_path, tiny_tokenizer, capsys):
    from cases import lm_config
    from transformers import AutoModelForSequenceClassification

    AutoModelForSequenceClassification.from_config(lm_config("transformer", num_labels=2)).save_pretrained(tmp_path)
    tiny_tokenizer.save_pretrained(tmp_path)
    for command in ("generate", "chat"):
        assert main([command, str(tmp_path), "w5 w9"] if command == "generate" else [command, str(tmp_path)]) == 2
        assert "does not generate text" in capsys.readouterr().err


def test_chat_streams_the_reply(monkeypatch, capsys):
    folder = str(RUNS / "lm")  # any causal LM renders a chat through the saved chat template
    answers = {}
    for stream in ("--stream", "--no-stream"):
        monkeypatch.setattr("sys.stdin", io.StringIO("What does len do?\n/exit\n"))
        assert main(["chat", folder, "--max-new-tokens", "6", "--no-do-sample", stream]) == 0
        answers[stream] = capsys.readouterr().out.split("assistant> ", 1)[1]
    lines = {k: [line.rstrip() for line in v.splitlines()] for k, v in answers.items()}
    assert lines["--stream"] == lines["--no-stream"] and lines["--stream"][0], answers


def test_int8_weights_from_the_command_line(capsys):
    pytest.importorskip("torchao")
    folder = str(RUNS / "translation")  # ConvS2S: its attention projections are nn.Linear, quantized
    model, _ = load_model_and_tokenizer(folder, quantize="int8")
    assert any(type(p.data) is not torch.Tensor for p in model.parameters()), "no weight was quantized"
    assert main(["generate", folder, PROMPTS["translation"], "--max-new-tokens", "4", "--quantize", "int8"]) == 0
    assert capsys.readouterr().out.strip()
    with pytest.raises(SystemExit):
        main(["generate", folder, "x", "--quantize", "int4"])
    assert "invalid choice: 'int4'" in capsys.readouterr().err


def test_static_cache_and_compiled_decoding_from_the_command_line(capsys, monkeypatch):
    """`--cache-implementation static` prints what the default cache prints; `--compile` hands generate a static cache
    and a fullgraph compile config (the compile itself is tested in tests/modeling/test_static_cache.py)."""
    from hf_llm import inference

    folder = str(RUNS / "lm")
    assert main(["generate", folder, "Return the", "--max-new-tokens", "6", "--no-do-sample", "--no-stream"]) == 0
    default = capsys.readouterr().out
    assert main(["generate", folder, "Return the", "--max-new-tokens", "6", "--no-do-sample", "--no-stream",
                 "--cache-implementation", "static"]) == 0
    assert capsys.readouterr().out == default
    seen = {}
    monkeypatch.setattr(inference, "generate_texts", lambda model, tokenizer, prompt, **kwargs: seen.update(kwargs) or [""])
    assert main(["generate", folder, "Return the", "--max-new-tokens", "2", "--no-stream", "--compile"]) == 0
    assert seen["cache_implementation"] == "static" and seen["compile_config"].fullgraph
    assert main(["generate", folder, "x", "--compile", "--cache-implementation", "dynamic"]) == 2
    assert "--compile compiles a fixed-shape decoding step" in capsys.readouterr().err
