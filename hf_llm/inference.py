"""Using a trained model: load a run folder, turn a prompt into model inputs, generate, keep only the new text.

One place for what `hf-llm generate`, `hf-llm chat`, `hf-llm compare` (inference speed), the samples printed
at the end of training and the seq2seq pipelines all do:

- a causal LM continues the prompt's tokens (no special tokens added); the text returned is what follows it;
- an encoder-decoder reads the source as in training — the task prefix saved in `config.task_specific_params`,
  the text, then EOS (added by the tokenizer's post-processor, or here for a tokenizer without one) — and the
  text returned is the whole output;
- a model that reads at most `config.max_input_positions` tokens (learned positions) is given the prompt's
  last tokens that fit, with a warning;
- a chat is rendered by the tokenizer's chat template with the generation prompt; the reply is the new text.
"""

from __future__ import annotations

import logging
import os

import torch
from transformers import TextStreamer

from .modeling.weight_layout import decoding_layout
from .recipe_schema import DTYPES, RecipeError, compile_config
from .tokenizer import ends_with_eos

logger = logging.getLogger("hf_llm")


def load_model_and_tokenizer(model_dir: str, device: str | None = None, dtype: str | None = None,
                             quantize: str | None = None):
    """The model (through the Auto class its config names: causal LM, seq2seq or classifier) and tokenizer of a
    folder written by `hf-llm train` (or `save_pretrained`), in eval mode; safetensors only. `device`: where the
    model runs (`cpu`, `cuda`, `cuda:1`, `mps`; `auto`: the GPU if there is one); `dtype`: its weights' dtype
    (float32, bfloat16, float16; default: as saved); `quantize="int8"`: weight-only int8 through transformers'
    torchao integration (`TorchAoConfig`; it quantizes `nn.Linear` weights: most of a Transformer, little of the
    other families, see docs/ARCHITECTURE.md "Fewer bytes per token")."""
    import hf_llm  # noqa: F401  (registers the Auto classes)
    from transformers import (
        AutoConfig,
        AutoModelForCausalLM,
        AutoModelForSeq2SeqLM,
        AutoModelForSequenceClassification,
        AutoTokenizer,
    )

    if not os.path.isdir(model_dir):
        raise RecipeError(f"Model folder not found: {model_dir}")
    if not os.path.isfile(os.path.join(model_dir, "config.json")):
        raise RecipeError(f"{model_dir} holds no config.json: not a saved model (train one with `hf-llm train`).")
    if dtype is not None and dtype not in DTYPES:
        raise RecipeError(f"--dtype must be one of {list(DTYPES)}, got {dtype!r}.")
    try:
        config = AutoConfig.from_pretrained(model_dir)
        if any(name.endswith("ForSequenceClassification") for name in config.architectures or []):
            auto = AutoModelForSequenceClassification  # a classification run (hf-llm eval, averaging)
        else:
            auto = AutoModelForSeq2SeqLM if config.is_encoder_decoder else AutoModelForCausalLM
        options = {"dtype": getattr(torch, dtype)} if dtype else {}
        if quantize is not None:
            options["quantization_config"] = quantization_config(quantize)
        model = auto.from_pretrained(model_dir, use_safetensors=True, **options).eval()  # never unpickle weights
    except (OSError, ValueError) as error:
        raise RecipeError(f"Cannot load the model in {model_dir}: {error}") from None
    if device is not None:
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        try:
            model.to(device)
        except (RuntimeError, AssertionError, ValueError) as error:  # no such device, or torch built without it
            raise RecipeError(f"--device {device}: {error}") from None
    try:
        tokenizer = AutoTokenizer.from_pretrained(model_dir)
    except (OSError, ValueError) as error:
        raise RecipeError(f"{model_dir} holds no usable tokenizer: {error}") from None
    return model, tokenizer


def decodes_one_sequence(model, **generate_kwargs) -> bool:
    """Whether `model.generate(prompt, **generate_kwargs)` decodes one sequence per prompt: one beam and one returned
    sequence, as `generate_kwargs` ask or else as the model's saved generation config says."""
    def setting(name: str) -> int:
        value = generate_kwargs.get(name)
        return (value if value is not None else getattr(model.generation_config, name, None)) or 1

    return setting("num_beams") == 1 and setting("num_return_sequences") == 1


def layout_for_decoding(model, **generate_kwargs) -> None:
    """Lay the weights out for the generations about to run (`hf_llm.decoding_layout`): column-major when each call
    decodes one sequence (`decodes_one_sequence`), row-major otherwise. For `hf-llm generate`, `chat` and `serve`,
    which generate one prompt at a time."""
    decoding_layout(model, column_major=decodes_one_sequence(model, **generate_kwargs))


def quantization_config(quantize: str):
    """transformers' quantization config for a `--quantize` choice."""
    if quantize != "int8":
        raise RecipeError(f"--quantize must be int8, got {quantize!r}.")
    try:
        from torchao.quantization import Int8WeightOnlyConfig
    except ImportError:
        raise RecipeError("--quantize int8 needs torchao: pip install 'hf_llm[quantization]'.") from None
    from transformers import TorchAoConfig

    return TorchAoConfig(Int8WeightOnlyConfig())


def decoding_options(cache_implementation: str | None = None, compile: bool = False) -> dict:
    """`generate` keyword arguments for `--cache-implementation` / `--compile`: a static cache, and with `compile`
    transformers' compiled decoding step (`compile_config`; the step is compiled on the first call and reused)."""
    if compile and cache_implementation == "dynamic":
        raise RecipeError("--compile compiles a fixed-shape decoding step: it needs a static cache, not "
                          "--cache-implementation dynamic.")
    options = {}
    if cache_implementation is not None or compile:
        options["cache_implementation"] = cache_implementation or "static"
    if compile:
        options["compile_config"] = compile_config()
    return options


def encode_sources(tokenizer, texts: list[str], prefix: str = "", max_length: int | None = None) -> list[list[int]]:
    """Token ids of seq2seq sources (and targets), each ending with one EOS, as the seq2seq tasks train: the
    tokenizer's own `tokenizer(prefix + text)` where it ends texts with EOS (an hf_llm tokenizer trained for a
    seq2seq run, Marian's, T5's), else the text's ids and EOS appended (hf_llm tokenizers saved before the
    post-processor, or trained for another task)."""
    texts = [prefix + (t or "") for t in texts]
    if ends_with_eos(tokenizer):
        kwargs = {"truncation": True, "max_length": max_length} if max_length else {}
        return tokenizer(texts, **kwargs)["input_ids"]
    kwargs = {"truncation": True, "max_length": max_length - 1} if max_length else {}
    ids = tokenizer(texts, add_special_tokens=False, **kwargs)["input_ids"]
    return [x + [tokenizer.eos_token_id] for x in ids]


def source_prefix(config, task: str | None = None) -> str:
    """The source prefix a seq2seq model was trained with (`config.task_specific_params[task]["prefix"]`; without
    a task, the first one saved), or ""."""
    params = getattr(config, "task_specific_params", None) or {}
    if task is not None:
        return (params.get(task) or {}).get("prefix", "")
    return next((p.get("prefix", "") for p in params.values() if isinstance(p, dict)), "")


def prompt_inputs(model, tokenizer, prompt: str, max_new_tokens: int = 0, prefix: str | None = None) -> dict:
    """`input_ids` and `attention_mask` (batch of one) for a prompt, encoded as the model was trained to read it.
    A model with learned positions keeps the prompt's last tokens that leave room for `max_new_tokens`."""
    if model.config.is_encoder_decoder:
        ids = torch.tensor(encode_sources(tokenizer, [prompt], source_prefix(model.config) if prefix is None else prefix))
    else:
        ids = tokenizer(prompt, return_tensors="pt", add_special_tokens=False)["input_ids"]
    limit = model.config.max_input_positions
    if limit is not None:
        room = limit - (0 if model.config.is_encoder_decoder else max_new_tokens)
        if room <= 0:
            raise RecipeError(f"max_new_tokens={max_new_tokens} leaves no room for a prompt: this model reads "
                              f"{limit} positions (max_position_embeddings).")
        if ids.shape[1] > room:
            logger.warning("The prompt has %d tokens; this model reads %d positions (max_position_embeddings): its "
                           "last %d tokens are used.", ids.shape[1], limit, room)
            ids = ids[:, -room:]
    return {"input_ids": ids.to(model.device), "attention_mask": torch.ones_like(ids, device=model.device)}


def new_tokens(model, inputs: dict, output: torch.Tensor) -> torch.Tensor:
    """What `generate` added for the first row: a causal LM's output repeats the prompt, a seq2seq output does not."""
    return output[0] if model.config.is_encoder_decoder else output[0, inputs["input_ids"].shape[1]:]


@torch.no_grad()
def generate_texts(model, tokenizer, prompt: str, prefix: str | None = None, streamer=None,
                   **generate_kwargs) -> list[str]:
    """The texts the model generates for a prompt (its generation config, updated by `generate_kwargs`;
    `num_return_sequences` of them): a causal LM's continuations (without the prompt), or a seq2seq model's
    outputs. A `streamer` (transformers' `TextStreamer`, ...) receives the tokens as they come."""
    budget = generate_kwargs.get("max_new_tokens") or model.generation_config.max_new_tokens or 0
    inputs = prompt_inputs(model, tokenizer, prompt, budget, prefix)
    try:
        output = model.generate(**inputs, streamer=streamer, **generate_kwargs)
    except ValueError as error:  # generate's own argument checks
        raise RecipeError(f"generate: {error}") from None
    start = 0 if model.config.is_encoder_decoder else inputs["input_ids"].shape[1]
    return tokenizer.batch_decode(output[:, start:], skip_special_tokens=True)


def generate_text(model, tokenizer, prompt: str, prefix: str | None = None, **generate_kwargs) -> str:
    """The first of `generate_texts`."""
    return generate_texts(model, tokenizer, prompt, prefix, **generate_kwargs)[0]


class ReplyStreamer(TextStreamer):
    """transformers' TextStreamer, printing a reply as `chat_reply` returns it: without leading whitespace."""

    started = False

    def on_finalized_text(self, text: str, stream_end: bool = False):
        if not self.started:
            text = text.lstrip()
            self.started = bool(text)
        super().on_finalized_text(text, stream_end)


@torch.no_grad()
def chat_reply(model, tokenizer, messages: list[dict], streamer=None, **generate_kwargs) -> str:
    """The model's next assistant turn for a conversation (causal LM or encoder-decoder), through the
    tokenizer's chat template; a `streamer` receives its tokens as they come."""
    source = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    inputs = tokenizer(source, return_tensors="pt", add_special_tokens=False).to(model.device)
    output = model.generate(**inputs, streamer=streamer, **generate_kwargs)
    return tokenizer.decode(new_tokens(model, inputs, output), skip_special_tokens=True).strip()
