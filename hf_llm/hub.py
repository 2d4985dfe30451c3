"""`hf-llm push`: publish a trained model folder to a model hub with `huggingface_hub`.

The endpoint and the token are huggingface_hub's own settings (`HF_ENDPOINT`, `HF_TOKEN`, `hf auth login`).
What goes up: safetensors weights, the config (complete `auto_map`), the exported modelling code, tokenizer
files (chat template included), the generation config, the model card (regenerated for the repo id) and
the run's recipe and results. Pickled weights, optimizer states and checkpoints never leave the machine.
"""

from __future__ import annotations

import glob
import os
import shutil

from .recipe_schema import RecipeError

IGNORED = ["checkpoint-*", "checkpoint-*/**", "*.bin", "*.pt", "*.pth", "*.pkl", "*.ckpt", "optimizer*", "scheduler*",
           "rng_state*", ".final-*", ".final-*/**", "runs/**", "_*", ".git/**", ".cache/**"]


def folder_operations(model_dir: str) -> list:
    """One `CommitOperationAdd` per file of the folder that goes up (IGNORED left out), in a stable order."""
    from huggingface_hub import CommitOperationAdd
    from huggingface_hub.utils import filter_repo_objects

    paths = sorted(os.path.relpath(os.path.join(root, name), model_dir).replace(os.sep, "/")
                   for root, _, names in os.walk(model_dir) for name in names)
    return [CommitOperationAdd(path_in_repo=path, path_or_fileobj=os.path.join(model_dir, path))
            for path in filter_repo_objects(paths, ignore_patterns=IGNORED)]


def check_folder(model_dir: str) -> None:
    if not os.path.isdir(model_dir):
        raise RecipeError(f"Model folder not found: {model_dir}")
    if not os.path.isfile(os.path.join(model_dir, "config.json")):
        raise RecipeError(f"{model_dir} holds no config.json: not a saved model.")
    if not glob.glob(os.path.join(model_dir, "*.safetensors")):
        raise RecipeError(f"{model_dir} holds no safetensors weights; save the model with save_pretrained() "
                          "(pickled .bin weights are never pushed).")


def ensure_code(model_dir: str) -> None:
    """A folder saved without hf_llm's registration lacks the modelling code: copy the exported folder in."""
    import hf_llm.modeling

    if not os.path.isfile(os.path.join(model_dir, "modeling_hf_llm.py")):
        folder = os.path.dirname(hf_llm.modeling.__file__)
        for path in glob.glob(os.path.join(folder, "*.py")):
            if not path.endswith("__init__.py"):
                shutil.copy(path, model_dir)


def push(model_dir: str, repo_id: str, private: bool = False, revision: str | None = None,
         commit_message: str | None = None) -> str:
    """Create the repo (if needed) and upload the folder; returns the commit URL."""
    from huggingface_hub import HfApi

    from .cards import write_card

    check_folder(model_dir)
    ensure_code(model_dir)
    write_card(model_dir, repo_id)
    api = HfApi()
    try:
        api.create_repo(repo_id, private=private, exist_ok=True)
        if revision is not None and revision != "main":
            api.create_branch(repo_id, branch=revision, exist_ok=True)
    except Exception as error:
        raise hub_error(api.endpoint, error) from None
    # One commit, which the hub applies whole or not at all. Not `upload_folder`: with hf_xet installed it uploads
    # through a pipeline that, when a commit fails, retries the folder in chunks of 20 files as *separate* commits,
    # so a connection that recovers half-way leaves the repo with half a model (config of the new run, weights of
    # the old). `create_commit` is one commit request (retried as a whole by huggingface_hub's backoff).
    try:
        commit = api.create_commit(
            repo_id=repo_id, operations=folder_operations(model_dir), revision=revision,
            commit_message=commit_message or f"Upload {os.path.basename(os.path.abspath(model_dir))} with hf-llm",
        )
    except Exception as error:
        if not is_network_error(error):
            raise hub_error(api.endpoint, error) from None
        raise RecipeError(
            f"The upload to {api.endpoint}/{repo_id} was cut off ({error}). Everything goes up as one commit, which the "
            f"hub applies whole or not at all: {repo_id} is as it was before this push (or, if the hub received the "
            "commit before the connection dropped, complete) — never half a model. Run the same hf-llm push again."
        ) from None
    return str(commit)


def hub_error(endpoint: str, error: Exception) -> Exception:
    """The one-line error for a hub that refused or could not be reached (other errors are returned as they are)."""
    from huggingface_hub.errors import HfHubHTTPError

    if isinstance(error, HfHubHTTPError):
        return RecipeError(f"The hub at {endpoint} refused the upload: {error}")
    if isinstance(error, ValueError):  # the hub rejected the model card's metadata
        return RecipeError(f"The hub at {endpoint} rejected README.md: {error}")
    if is_network_error(error):
        return RecipeError(f"Cannot reach the hub at {endpoint}: {error}. Check HF_ENDPOINT, HF_TOKEN and your "
                           "network (HF_HUB_OFFLINE must not be set).")
    return error


def is_network_error(error: Exception) -> bool:
    """Connection refused, DNS failure, timeout, offline mode: OSError or the HTTP client's transport errors."""
    package = type(error).__module__.split(".")[0]
    return isinstance(error, (ConnectionError, TimeoutError)) or type(error).__name__ == "OfflineModeIsEnabled" \
        or package in ("httpx", "httpx2", "httpcore", "httpcore2", "requests", "urllib3")
