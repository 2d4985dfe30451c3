"""`hf-llm serve RUN_DIR`: transformers' own OpenAI-compatible server (`transformers serve`'s FastAPI application
and its handlers: `/v1/chat/completions` streamed and not, `/v1/completions`, `/v1/responses`, `/v1/models`,
`/health`) answering for one trained causal LM.

Only the loading differs. transformers' `ModelManager` resolves the model class with
`getattr(transformers, config.architectures[0])`, which no remote-code architecture passes (HTTP 500 for an hf_llm
model, even with `--trust-remote-code`). `RunFolderModelManager` subclasses it and overrides its public
`load_model_and_processor` to load the run folder as `hf-llm generate` does (the Auto class the config names,
safetensors, `--device`, `--dtype`); the application (`build_server`), the handlers, the generation threads and
the streaming are transformers' own, unchanged. The server is pinned to that one model (transformers'
`force_model`): `/v1/models` lists it under the name it was started with, requests name it or leave it out.
"""

from __future__ import annotations

import os
import threading

from .inference import load_model_and_tokenizer
from .recipe_schema import RecipeError
from .tokenizer import ensure_chat_template

try:
    from transformers.cli.serving.chat_completion import ChatCompletionHandler
    from transformers.cli.serving.completion import CompletionHandler
    from transformers.cli.serving.model_manager import ModelManager, TimedModel
    from transformers.cli.serving.response import ResponseHandler
    from transformers.cli.serving.server import build_server
    from transformers.cli.serving.systemone import SystemOneHandler
    from transformers.cli.serving.transcription import TranscriptionHandler
    from transformers.cli.serving.utils import GenerationState
    from transformers.utils.import_utils import is_serve_available
except ImportError:  # an older transformers, without the serving package
    ModelManager = object
    is_serve_available = None

SERVE_EXTRA_HINT = 'install the serving dependencies: pip install "hf_llm[serve]"'


class RunFolderModelManager(ModelManager):
    """transformers' `ModelManager`, pinned to one hf_llm run folder and loading it through the Auto classes.

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


def load_serveable(run_dir: str, device: str | None = None, dtype: str | None = None, quantize: str | None = None):
    """A run folder's causal LM and tokenizer (hf_llm's chat template if it saved none, as `hf-llm chat`), for
    transformers' handlers, which read the reply as what follows the prompt in `generate`'s output."""
    model, tokenizer = load_model_and_tokenizer(run_dir, device=device, dtype=dtype, quantize=quantize)
    if model.config.is_encoder_decoder or not model.can_generate():
        raise RecipeError(f"{run_dir} holds a {type(model).__name__}: `hf-llm serve` serves causal LMs "
                          "(transformers' chat handlers take the reply as what follows the prompt). Use `hf-llm "
                          "generate` for this model.")
    ensure_chat_template(tokenizer)  # as `hf-llm chat` does
    return model, tokenizer


def build_app(run_dir: str, device: str | None = None, dtype: str | None = None, quantize: str | None = None):
    """transformers' serving FastAPI application, as `transformers serve` builds it, answering for `run_dir`."""
    if is_serve_available is None or not is_serve_available():
        raise RecipeError(f"`hf-llm serve` runs transformers' server: {SERVE_EXTRA_HINT}.")
    model_manager = RunFolderModelManager(run_dir, device=device, dtype=dtype, quantize=quantize)
    generation_state = GenerationState()
    handlers = {"model_manager": model_manager, "generation_state": generation_state}
    return build_server(
        model_manager,
        ChatCompletionHandler(**handlers),
        completion_handler=CompletionHandler(**handlers),
        response_handler=ResponseHandler(**handlers),
        transcription_handler=TranscriptionHandler(model_manager, generation_state),
        systemone_handler=SystemOneHandler(**handlers),
        generation_state=generation_state,
    )


def make_server(run_dir: str, host: str = "localhost", port: int = 8000, device: str | None = None,
                dtype: str | None = None, log_level: str = "info", quantize: str | None = None):
    """A uvicorn server for `build_app(run_dir, ...)`; `.run()` serves until interrupted."""
    if not os.path.isdir(run_dir):
        raise RecipeError(f"Model folder not found: {run_dir}")
    app = build_app(run_dir, device=device, dtype=dtype, quantize=quantize)  # checks that the serving dependencies are installed
    import uvicorn

    return uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level=log_level))
