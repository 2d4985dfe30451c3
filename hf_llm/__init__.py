"""hf_llm: recurrent, convolutional and Transformer language models as Hugging Face citizens.

`import hf_llm` registers model_type "hf_llm" with the Auto classes and the seq2seq pipelines that
transformers 5.x removed; nothing else happens at import.
"""

from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForCausalLM,
    AutoModelForSeq2SeqLM,
    AutoModelForSequenceClassification,
)

from .modeling.configuration_hf_llm import HfLlmConfig
from .modeling.modeling_hf_llm import (
    HfLlmForCausalLM,
    HfLlmForSeq2SeqLM,
    HfLlmForSequenceClassification,
    HfLlmModel,
    HfLlmPreTrainedModel,
)
from .modeling.weight_layout import decoding_layout

from .presets import PRESETS, parse_layer_spec, preset_config

__version__ = "0.1.0"

AutoConfig.register(HfLlmConfig.model_type, HfLlmConfig, exist_ok=True)
for _auto, _model in (
    (AutoModel, HfLlmModel),
    (AutoModelForCausalLM, HfLlmForCausalLM),
    (AutoModelForSeq2SeqLM, HfLlmForSeq2SeqLM),
    (AutoModelForSequenceClassification, HfLlmForSequenceClassification),
):
    _auto.register(HfLlmConfig, _model, exist_ok=True)
    # save_pretrained copies the exported folder's code into the checkpoint for trust_remote_code loads.
    _model.register_for_auto_class(_auto.__name__)
HfLlmConfig.register_for_auto_class("AutoConfig")

from .pipelines import register_pipelines  # noqa: E402

register_pipelines()  # "translation", "summarization", "text2text-generation" (removed in transformers 5.x)

__all__ = [
    "PRESETS",
    "parse_layer_spec",
    "preset_config",
    "HfLlmConfig",
    "HfLlmPreTrainedModel",
    "HfLlmModel",
    "HfLlmForCausalLM",
    "HfLlmForSeq2SeqLM",
    "HfLlmForSequenceClassification",
    "decoding_layout",
]
