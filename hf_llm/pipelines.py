"""`pipeline("translation" | "summarization" | "text2text-generation", model=...)` for seq2seq models.

transformers 5.x removed these pipelines; `import hf_llm` registers them again (for any
`AutoModelForSeq2SeqLM`). Sources are encoded as in training: the task prefix saved in
`config.task_specific_params` (if any), the text, then EOS. `pipeline("text-generation")` needs nothing
from us: it works for hf_llm causal LMs, chat input included, through the saved chat template.
"""

from __future__ import annotations

from transformers import AutoModelForSeq2SeqLM, Pipeline
from transformers.pipelines import PIPELINE_REGISTRY

from .inference import encode_sources, source_prefix


class Text2TextGenerationPipeline(Pipeline):
    """Generate a target text from a source text with an encoder-decoder model."""

    task_name = "text2text-generation"
    output_key = "generated_text"

    def _sanitize_parameters(self, prefix: str | None = None, **generate_kwargs):
        return {"prefix": prefix}, generate_kwargs, {}

    def _default_prefix(self) -> str:
        return source_prefix(self.model.config, self.task_name)

    def preprocess(self, text: str, prefix: str | None = None):
        import torch

        if not isinstance(text, str):
            raise ValueError(f"{self.task_name} expects a text, got {type(text).__name__}.")
        ids = encode_sources(self.tokenizer, [text], self._default_prefix() if prefix is None else prefix)[0]
        input_ids = torch.tensor([ids])
        return {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids)}

    def _forward(self, model_inputs, **generate_kwargs):
        return {"output_ids": self.model.generate(**model_inputs, **generate_kwargs)}

    def postprocess(self, model_outputs):
        return [
            {self.output_key: self.tokenizer.decode(ids, skip_special_tokens=True).strip()}
            for ids in model_outputs["output_ids"]
        ]


class TranslationPipeline(Text2TextGenerationPipeline):
    task_name = "translation"
    output_key = "translation_text"


class SummarizationPipeline(Text2TextGenerationPipeline):
    task_name = "summarization"
    output_key = "summary_text"


def register_pipelines() -> None:
    """Register the three tasks. transformers 5.x also lists their names in `pipelines.REMOVED_TASKS`, which
    `pipeline()` checks before its registry; the names are taken off that list so the registry answers."""
    import transformers.pipelines as hf_pipelines

    for cls in (Text2TextGenerationPipeline, TranslationPipeline, SummarizationPipeline):
        getattr(hf_pipelines, "REMOVED_TASKS", {}).pop(cls.task_name, None)
        PIPELINE_REGISTRY.register_pipeline(cls.task_name, pipeline_class=cls, pt_model=AutoModelForSeq2SeqLM, type="text")
