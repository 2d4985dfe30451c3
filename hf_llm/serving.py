"""`hf-llm serve RUN_DIR`: transformers' own OpenAI-compatible server (`transformers serve`'s FastAPI application
and its handlers: `/v1/chat/completions` streamed and not, `/v1/completions`, `/v1/responses`, `/v1/models`,
`/health`) answering for one trained causal LM.

Only the loading differs. transformers resolves the model class with `getattr(transformers,
config.architectures[0])`, which no hf_llm architecture passes (HTTP 500, even with `--trust-remote-code`; still so
in 5.25). hf_llm hands transformers a loader that loads the run folder as `hf-llm generate` does (the Auto class the
config names, safetensors, `--device`, `--dtype`, `--quantize`), through the public hook each version offers:

- transformers 5.25 and later run each model in a process of its own (its "engine", started with `spawn`), which
  loads it with a copy of the server's `ModelLoader`: `RunFolderLoader` subclasses it, replacing its public
  `load_model_and_processor`, `load_config` and `load_processor`, and is handed to transformers' `ModelManager`.
- transformers 5.24 loads models in the server's process, in its `ModelManager`: `RunFolderModelManager`
  subclasses it, replacing its public `load_model_and_processor`.

The application (`build_server`), the handlers, the generation and the streaming are transformers' own, unchanged.
The server is pinned to that one model (transformers' `force_model`, which also loads it at start): `/v1/models`
lists it under the name it was started with, requests name it or leave it out.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NoReturn

from .inference import layout_for_decoding, load_model_and_tokenizer
from .recipe_schema import RecipeError
from .tokenizer import ensure_chat_template

if TYPE_CHECKING:
    from transformers import GenerationConfig, PretrainedConfig, PreTrainedModel, PreTrainedTokenizerBase

try:
    from transformers.cli.serving.chat_completion import ChatCompletionHandler
    from transformers.cli.serving.completion import CompletionHandler
    from transformers.cli.serving.model_manager import ModelManager
    from transformers.cli.serving.response import ResponseHandler
    from transformers.cli.serving.server import build_server
    from transformers.cli.serving.systemone import SystemOneHandler
    from transformers.cli.serving.transcription import TranscriptionHandler
    from transformers.cli.serving.utils import GenerationState
    from transformers.utils.import_utils import is_serve_available

    SERVING_IMPORT_ERROR: ImportError | None = None
except ImportError as error:  # no serving package, or one whose pieces hf_llm does not know
    ModelManager = object
    is_serve_available = None
    SERVING_IMPORT_ERROR = error

try:  # transformers >= 5.25: a model runs and loads in a process of its own, with a copy of the server's loader
    from transformers.cli.serving.model_manager import ModelLoader
except ImportError:
    ModelLoader = None
try:  # transformers 5.24: models load in the server's process, kept in the `ModelManager` as `TimedModel`s
    from transformers.cli.serving.model_manager import TimedModel
except ImportError:
    TimedModel = None

SERVE_EXTRA_HINT = 'install the serving dependencies: pip install "hf_llm[serve]"'
SUPPORTED_SERVING = "transformers 5.24 (models in the server's process) or 5.25 (a process per model)"


class RunFolderModelManager(ModelManager):
    """transformers 5.24's `ModelManager`, pinned to one hf_llm run folder and loading it through the Auto classes.

    `load_model_and_processor` (public) is the only method replaced: whatever name a handler asks for (the
    server is pinned, so it is always the run folder's), it returns the run folder's model and tokenizer, loaded
    once and kept (no idle unloading) until `shutdown()` (transformers' `/reset`); a later request loads it again.
    """

    def __init__(self, run_dir: str, device: str | None = None, dtype: str | None = None,
                 quantize: str | None = None):
        self.run_dir = run_dir
        self.run_device = device
        self.run_dtype = dtype
        self.run_quantize = quantize
        self.load_lock = threading.Lock()
        # force_model pins the server and preloads: ModelManager.__init__ calls load_model_and_processor below.
        super().__init__(device=device or "cpu", dtype=dtype or "auto", force_model=run_dir, model_timeout=-1)

    def load_model_and_processor(self, model_id_and_revision: str, progress_callback=None, tqdm_class=None,
                                 gguf_file=None):
        """The run folder's model and tokenizer (transformers' signature; the name is the pinned one)."""
        with self.load_lock:
            timed = self.loaded_models.get(model_id_and_revision)
            if timed is None or timed.model is None:
                if progress_callback is not None:
                    progress_callback({"status": "loading", "model": model_id_and_revision, "stage": "processor"})
                model, tokenizer = load_serveable(self.run_dir, self.run_device, self.run_dtype, self.run_quantize)
                timed = TimedModel(model, timeout_seconds=-1, processor=tokenizer,
                                   on_unload=lambda key=model_id_and_revision: self.loaded_models.pop(key, None))
                self.loaded_models[model_id_and_revision] = timed
                cached = False
            else:
                cached = True
            if progress_callback is not None:
                progress_callback({"status": "ready", "model": model_id_and_revision, "cached": cached})
            return timed.model, timed.processor


class RunFolderLoader(ModelLoader or object):
    """transformers 5.25's `ModelLoader`, loading one hf_llm run folder through the Auto classes.

    transformers' `ModelManager` reads the model's configs (`load_config`) and tokenizer (`load_processor`) in the
    server's process, and the model's process, which `spawn` starts, loads model and tokenizer with a pickled copy
    of this loader (`load_model_and_processor`): hence a module-level class holding only the run folder and the
    `--device`/`--dtype`/`--quantize` choices. The three public methods are replaced; the name they are given is
    the pinned one (`force_model`), the run folder's.
    """

    def __init__(self, run_dir: str, device: str | None = None, dtype: str | None = None,
                 quantize: str | None = None):
        # transformers' settings, read by nothing that runs here (its own loading is replaced); hf_llm's choices,
        # kept apart, are what load_serveable takes (None: as saved).
        super().__init__(device=device or "cpu", dtype=dtype or "auto")
        self.run_dir = run_dir
        self.run_device = device
        self.run_dtype = dtype
        self.run_quantize = quantize

    def load_model_and_processor(self, model_id: str, on_progress: Callable[[dict], None] | None = None
                                 ) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
        """The run folder's model and tokenizer, in the model's process (transformers' signature)."""
        if on_progress is not None:
            on_progress({"status": "loading", "model": model_id, "stage": "processor"})
        return load_serveable(self.run_dir, self.run_device, self.run_dtype, self.run_quantize)

    def load_config(self, model_id: str) -> tuple[PretrainedConfig, GenerationConfig]:
        """The run folder's config and generation config, which the server's process reads (transformers' way:
        hf_llm's config class is registered with `AutoConfig` once hf_llm is imported)."""
        return super().load_config(self.run_dir)

    def load_processor(self, model_id: str) -> PreTrainedTokenizerBase:
        """The run folder's tokenizer as the model's process gets it, for the handlers in the server's process (the
        chat template, the decoding)."""
        return load_serveable_tokenizer(self.run_dir)


def check_serveable(run_dir: str) -> None:
    """Refuse, before any weights load, what `hf-llm serve` cannot serve: not a saved model, or not a causal LM
    (the Auto class `load_model_and_tokenizer` picks from the config)."""
    from transformers import AutoConfig  # which knows hf_llm's config: importing hf_llm registered it

    if not os.path.isdir(run_dir):
        raise RecipeError(f"Model folder not found: {run_dir}")
    if not os.path.isfile(os.path.join(run_dir, "config.json")):
        raise RecipeError(f"{run_dir} holds no config.json: not a saved model (train one with `hf-llm train`).")
    try:
        config = AutoConfig.from_pretrained(run_dir)
    except (OSError, ValueError) as error:
        raise RecipeError(f"Cannot load the model in {run_dir}: {error}") from None
    architectures = config.architectures or []
    if config.is_encoder_decoder or any(name.endswith("ForSequenceClassification") for name in architectures):
        refuse_non_causal(run_dir, architectures[0] if architectures else type(config).__name__)


def refuse_non_causal(run_dir: str, what: str) -> NoReturn:
    """The error for a run folder holding something else than a causal LM."""
    raise RecipeError(f"{run_dir} holds a {what}: `hf-llm serve` serves causal LMs (transformers' chat handlers "
                      "take the reply as what follows the prompt). Use `hf-llm generate` for this model.")


def load_serveable(run_dir: str, device: str | None = None, dtype: str | None = None, quantize: str | None = None
                   ) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """A run folder's causal LM and tokenizer (hf_llm's chat template if it saved none, as `hf-llm chat`), for
    transformers' handlers, which read the reply as what follows the prompt in `generate`'s output."""
    model, tokenizer = load_model_and_tokenizer(run_dir, device=device, dtype=dtype, quantize=quantize)
    if model.config.is_encoder_decoder or not model.can_generate():
        refuse_non_causal(run_dir, type(model).__name__)
    ensure_chat_template(tokenizer)  # as `hf-llm chat` does
    layout_for_decoding(model)  # one request at a time (weight_layout.py), unless the model's config beams
    return model, tokenizer


def load_serveable_tokenizer(run_dir: str) -> PreTrainedTokenizerBase:
    """The tokenizer `load_serveable` gives, without the model."""
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(run_dir)
    except (OSError, ValueError) as error:
        raise RecipeError(f"{run_dir} holds no usable tokenizer: {error}") from None
    ensure_chat_template(tokenizer)
    return tokenizer


def build_app(run_dir: str, device: str | None = None, dtype: str | None = None, quantize: str | None = None):
    """transformers' serving FastAPI application, as `transformers serve` builds it, answering for `run_dir`.

    The model is loaded before it returns (in a process of its own from transformers 5.25 on). Its
    `ModelManager` is `app.state.model_manager` (`make_server` watches its engine)."""
    if SERVING_IMPORT_ERROR is not None or not is_serve_available():
        raise RecipeError(f"`hf-llm serve` runs transformers' server, which did not import "
                          f"({SERVING_IMPORT_ERROR or 'fastapi or uvicorn missing'}): {SERVE_EXTRA_HINT}, with "
                          f"{SUPPORTED_SERVING}.")
    check_serveable(run_dir)
    generation_state = GenerationState()
    if ModelLoader is not None:  # 5.25+
        try:
            model_manager = ModelManager(RunFolderLoader(run_dir, device=device, dtype=dtype, quantize=quantize),
                                         generation_state, model_timeout=-1, force_model=run_dir)
        except RuntimeError as error:  # the model's process failed to load it: the error comes as text
            raise RecipeError(f"Cannot serve {run_dir}: {error}") from None
        extra = {}
        transcription_handler = TranscriptionHandler(model_manager)
    elif TimedModel is not None:  # 5.24
        model_manager = RunFolderModelManager(run_dir, device=device, dtype=dtype, quantize=quantize)
        extra = {"generation_state": generation_state}
        transcription_handler = TranscriptionHandler(model_manager, generation_state)
    else:
        raise RecipeError(f"`hf-llm serve` does not know this transformers' serving package (neither "
                          f"`ModelLoader` nor `TimedModel`): install {SUPPORTED_SERVING}.")
    handlers = {"model_manager": model_manager, "generation_state": generation_state}
    app = build_server(
        model_manager,
        ChatCompletionHandler(**handlers),
        completion_handler=CompletionHandler(**handlers),
        response_handler=ResponseHandler(**handlers),
        transcription_handler=transcription_handler,
        systemone_handler=SystemOneHandler(**handlers),
        **extra,
    )
    app.state.model_manager = model_manager
    return app


def make_server(run_dir: str, host: str = "localhost", port: int = 8000, device: str | None = None,
                dtype: str | None = None, log_level: str = "info", quantize: str | None = None):
    """A uvicorn server for `build_app(run_dir, ...)`; `.run()` serves until interrupted. From transformers 5.25
    on, it also stops, as `transformers serve` does, once the model's process died (`/health` answers 503 from
    then on), and `.run()` then raises a `RecipeError`."""
    if not os.path.isdir(run_dir):
        raise RecipeError(f"Model folder not found: {run_dir}")
    # build_app checks that the serving dependencies are installed, and loads the model.
    app = build_app(run_dir, device=device, dtype=dtype, quantize=quantize)
    import uvicorn

    model_manager: Any = app.state.model_manager

    def engine_died() -> bool:
        return getattr(model_manager, "is_dead", False)  # 5.25+: the model's process crashed

    class RunFolderServer(uvicorn.Server):
        """uvicorn's server, which raises once it stopped for the model's process having died."""

        def run(self, sockets=None) -> None:
            super().run(sockets=sockets)
            if engine_died():
                raise RecipeError(f"The process serving {run_dir} died (its error is above): the server stopped. "
                                  "Start `hf-llm serve` again.")

    async def stop_if_the_engine_died() -> None:  # uvicorn calls it every `timeout_notify` seconds
        if engine_died():
            server.should_exit = True

    server = RunFolderServer(uvicorn.Config(app, host=host, port=port, log_level=log_level,
                                            callback_notify=stop_if_the_engine_died, timeout_notify=5))
    return server
