"""hf_llm models: one PreTrainedModel family over recurrent, convolutional and Transformer backbones.

- `HfLlmModel` (AutoModel): hidden states of a decoder-only stack, or of an encoder-decoder.
- `HfLlmForCausalLM` (AutoModelForCausalLM): decoder-only language model.
- `HfLlmForSeq2SeqLM` (AutoModelForSeq2SeqLM): any encoder with any decoder.
- `HfLlmForSequenceClassification`: last non-pad token pooling (decoder-only) or masked mean pooling
  (encoder of an encoder-decoder config); single-label, multi-label and regression losses as in HF's heads.

Backbones are picked by name from the plain dicts `ENCODERS` / `DECODERS`. Every encoder maps
`(input_ids | inputs_embeds, attention_mask) -> HfLlmEncoderOutput (B, S, H_enc)`; every decoder maps
`(input_ids | inputs_embeds, attention_mask, encoder states, cache) -> (B, T, H)` and owns its incremental
state in the HF `Cache` passed as `cache` (the transformers 5.x name), which is what makes `generate()`
cached, beam-reorderable and left-padding safe for every family.

Part of the exported folder: imports only the standard library, torch, transformers and siblings.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from transformers import initialization as init
from transformers.cache_utils import Cache
from transformers.generation import GenerationMixin
from transformers.modeling_outputs import (
    BaseModelOutputWithPast,
    CausalLMOutputWithPast,
    Seq2SeqLMOutput,
    Seq2SeqModelOutput,
    SequenceClassifierOutputWithPast,
)
from transformers.modeling_utils import PreTrainedModel
from transformers.utils.deprecation import deprecate_kwarg
from transformers.utils.generic import can_return_tuple

from .configuration_hf_llm import HfLlmConfig
from .copy_layers import HfLlmCopyGenerator, HfLlmCoverageGate, coverage_loss
from .shared_layers import HfLlmEncoderOutput, fused_cross_entropy, shift_tokens_right, token_cross_entropy
from .cnn_backbone import HfLlmCNNDecoder, HfLlmCNNEncoder
from .rnn_backbone import HfLlmGateProjection, HfLlmRNNDecoder, HfLlmRNNEncoder
from .transformer_backbone import HfLlmRotaryEmbedding, HfLlmTransformerDecoder, HfLlmTransformerEncoder
from .weight_layout import decoding_layout

ENCODERS = {"transformer": HfLlmTransformerEncoder, "rnn": HfLlmRNNEncoder, "cnn": HfLlmCNNEncoder}
DECODERS = {"transformer": HfLlmTransformerDecoder, "rnn": HfLlmRNNDecoder, "cnn": HfLlmCNNDecoder}


class CheckpointMismatchError(ValueError, RuntimeError):
    """Weights that do not fit their config. A `RuntimeError`, as transformers raises for tensors of other shapes,
    and a `ValueError`, like every other invalid-configuration error of hf_llm."""


@dataclass
class HfLlmSeq2SeqModelOutput(Seq2SeqModelOutput):
    """`Seq2SeqModelOutput` and `source_attention (B, T, S)`: the decoder's attention over the source that copies
    and whose coverage is penalised (`config.uses_source_attention`, else None)."""

    source_attention: torch.Tensor | None = None


class HfLlmPreTrainedModel(PreTrainedModel):
    config: HfLlmConfig
    config_class = HfLlmConfig
    base_model_prefix = "model"
    main_input_name = "input_ids"
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_attention_backend = True
    # Every family decodes through transformers' StaticCache and a decoding step compiles without graph breaks
    # (`generate(cache_implementation="static")`, transformers' compile path; docs/ARCHITECTURE.md, issue 15).
    _can_compile_fullgraph = True
    _no_split_modules = [
        "HfLlmTransformerEncoderLayer", "HfLlmTransformerDecoderLayer", "HfLlmRecurrence", "HfLlmAttentionRecurrence",
        "HfLlmConvBlock",
    ]

    def train(self, mode: bool = True):
        """`nn.Module.train`; training puts back the row-major weights that `decoding_layout` may have laid out
        column-major for decoding one sequence (`weight_layout.py`): the faster layout for many rows, and contiguous."""
        if mode:
            decoding_layout(self, column_major=False)
        return super().train(mode)

    def post_init(self) -> None:
        super().post_init()
        # A tied weight is saved once, under the name it is tied to; declaring the others as not saved lets the
        # Trainer tie them again when it loads the best checkpoint, instead of warning that they are missing.
        self._keys_to_ignore_on_save = set(getattr(self, "all_tied_weights_keys", None) or {})

    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, HfLlmGateProjection):
            return  # a view of an LSTM/GRU weight, which that module's initialisation below draws
        if isinstance(module, HfLlmCoverageGate):
            init.zeros_(module.weight)  # coverage starts with no say in the scores: the model without it
            return
        if getattr(module, "init_std", None) is not None:
            # A std chosen per layer (the convolutional family's ConvS2S initialisation, the Transformer's
            # cross-attention projections), zero bias; with weight normalisation the direction v gets the draw
            # and the magnitude g its norm, so w = v at start.
            if module.bias is not None:
                init.zeros_(module.bias)
            parametrizations = getattr(module, "parametrizations", None)
            if parametrizations is None:
                init.normal_(module.weight, mean=0.0, std=module.init_std)
            else:
                magnitude, direction = parametrizations.weight.original0, parametrizations.weight.original1
                init.normal_(direction, mean=0.0, std=module.init_std)
                init.copy_(magnitude, direction.detach().norm(dim=tuple(range(1, direction.dim())), keepdim=True))
            return
        if isinstance(module, (nn.LSTM, nn.GRU)):
            # transformers' default knows nn.LSTM (Xavier) but not nn.GRU. Both: Xavier input weights,
            # orthogonal recurrent weights per gate (Saxe et al. 2014), zero biases, and an LSTM forget-gate
            # bias of 1 (Jozefowicz et al. 2015).
            for name, param in module.named_parameters():
                if name.startswith("weight_ih"):
                    init.xavier_uniform_(param)
                elif name.startswith("weight_hh") and not getattr(param, "_is_hf_initialized", False):
                    blocks = param.detach().chunk(4 if isinstance(module, nn.LSTM) else 3)
                    init.copy_(param, torch.cat([torch.nn.init.orthogonal_(torch.empty_like(b)) for b in blocks]))
                elif name.startswith("bias"):
                    bias = torch.zeros_like(param)
                    if isinstance(module, nn.LSTM) and name.startswith("bias_hh"):
                        bias[module.hidden_size : 2 * module.hidden_size] = 1.0  # gates: input, forget, cell, output
                    init.copy_(param, bias)
            return
        super()._init_weights(module)
        if isinstance(module, HfLlmRotaryEmbedding):
            init.copy_(module.inv_freq, module.compute_inv_freq())

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *model_args, **kwargs):
        """`PreTrainedModel.from_pretrained`, strict about a checkpoint that only partly fits the config.

        transformers only warns when some of a checkpoint's tensors fit the model and others are missing or left
        over (a config whose family or layer count differs from the saved weights: the rest would silently be
        initialised at random); here that is an error. A checkpoint with none of the model's tensors (a fresh
        initialisation, `state_dict={}`) loads as in transformers, and so do new head tensors (`lm_head`, `score`)
        and the tensors of another head that this one does not use (a seq2seq checkpoint loaded for
        classification, or without copy attention; the coverage gates of `coverage_attention`, which start at zero,
        so a plain checkpoint loaded with coverage turned on starts as the same model). Tensors of other shapes are an error unless `ignore_mismatched_sizes=True`
        re-initialises them.
        """
        output_loading_info = kwargs.pop("output_loading_info", False)
        try:
            model, info = super().from_pretrained(
                pretrained_model_name_or_path, *model_args, output_loading_info=True, **kwargs
            )
        except RuntimeError as error:
            if "ignore_mismatched_sizes" not in str(error):
                raise
            raise CheckpointMismatchError(
                f"The weights in {pretrained_model_name_or_path} do not fit its config: some tensors have other "
                "shapes (was vocab_size or hidden_size edited in config.json?). Use the config saved with the "
                "weights, or pass ignore_mismatched_sizes=True to re-initialise the mismatched tensors."
            ) from None
        heads = ("lm_head.", "score.", "copy_generator.")
        mismatched = {key for key, *_ in info.get("mismatched_keys", [])}
        missing = sorted(k for k in info["missing_keys"]
                         if not k.startswith(heads) and ".coverage_gate." not in k and k not in mismatched)
        loaded = set(model.state_dict()) - set(info["missing_keys"]) - mismatched
        same_head = cls.__name__ in (getattr(model.config, "architectures", None) or [cls.__name__])
        unexpected = sorted(info["unexpected_keys"]) if same_head else []
        if loaded and (missing or unexpected):
            config = model.config
            sides = ["encoder", "decoder"] if config.is_encoder_decoder else ["decoder"]
            described = ", ".join(f"{side}: {config.side_backbone(side)} x {config.side_layers(side)}" for side in sides)
            raise CheckpointMismatchError(
                f"The weights in {pretrained_model_name_or_path} do not fit its config ({described}): "
                + (f"{len(missing)} tensors are missing (e.g. {missing[0]}) " if missing else "")
                + (f"{len(unexpected)} tensors are not used (e.g. {unexpected[0]}) " if unexpected else "")
                + "- the config's family or layer count differs from the saved model's. Use the config saved "
                "with the weights."
            )
        return (model, info) if output_loading_info else model

    def _fused_loss(self, logits_to_keep, skip_logits: bool | None = None) -> bool:
        """Whether a forward with labels computes the loss without materialising logits: as `skip_logits` says
        when given, else in training forwards (`config.fused_loss`). The fused loss reads the head's weight, so it
        runs only while the head is a plain `nn.Linear` (an adapted head, e.g. peft's LoRA on `lm_head`, computes
        more than its `weight`: the loss then comes from its logits, whatever `skip_logits` says), and never with copy
        attention, whose loss needs the mixed distribution."""
        every_position = isinstance(logits_to_keep, int) and logits_to_keep == 0
        if skip_logits and not every_position:
            raise ValueError("skip_logits=True computes no logits, so logits_to_keep has nothing to keep: "
                             "leave logits_to_keep at 0, or pass skip_logits=False.")
        if type(self.get_output_embeddings()) is not nn.Linear or self.config.copy_attention:
            return False
        if skip_logits is not None:
            return skip_logits
        return self.config.fused_loss and self.training and torch.is_grad_enabled() and every_position

    def _use_cache(self, use_cache: bool | None) -> bool:
        # HF semantics (None -> config.use_cache), but never build a cache while training.
        if use_cache is None:
            use_cache = self.config.use_cache and not self.training
        return bool(use_cache)

    def _output_flags(self, output_attentions: bool | None, output_hidden_states: bool | None) -> tuple[bool, bool]:
        """HF semantics: a flag left at None takes the config's value."""
        if output_attentions is None:
            output_attentions = self.config.output_attentions
        if output_hidden_states is None:
            output_hidden_states = self.config.output_hidden_states
        return bool(output_attentions), bool(output_hidden_states)


class HfLlmModel(HfLlmPreTrainedModel):
    """Bare hf_llm stack returning hidden states: a decoder-only stack, or an encoder plus a decoder."""

    def __init__(self, config: HfLlmConfig, with_decoder: bool = True):
        super().__init__(config)
        self.encoder = None
        self.decoder = None
        encoder_size = None
        if config.is_encoder_decoder:
            self.encoder = ENCODERS[config.side_backbone("encoder")](config, config.side_layers("encoder"))
            encoder_size = self.encoder.output_size
        if with_decoder:
            self.decoder = DECODERS[config.side_backbone("decoder")](
                config, config.side_layers("decoder"), encoder_hidden_size=encoder_size
            )
        if self.encoder is not None and self.decoder is not None:
            # One vocabulary: encoder and decoder share the input embeddings when tie_word_embeddings is set.
            # The encoder's copy is the one saved, so an encoder-only classifier finds it in the checkpoint.
            self._tied_weights_keys = {"decoder.embed_tokens.weight": "encoder.embed_tokens.weight"}
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return (self.decoder or self.encoder).embed_tokens

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        for stack in (self.encoder, self.decoder):
            if stack is not None:
                stack.embed_tokens = value

    def get_encoder(self):
        return self.encoder

    @deprecate_kwarg("past_key_values", "6.0.0", new_name="cache")
    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        decoder_input_ids: torch.LongTensor | None = None,
        decoder_attention_mask: torch.Tensor | None = None,
        decoder_position_ids: torch.LongTensor | None = None,
        encoder_outputs: HfLlmEncoderOutput | tuple | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        decoder_inputs_embeds: torch.Tensor | None = None,
        use_cache: bool | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        **kwargs,
    ) -> BaseModelOutputWithPast | HfLlmSeq2SeqModelOutput:
        use_cache = self._use_cache(use_cache)
        output_attentions, output_hidden_states = self._output_flags(output_attentions, output_hidden_states)
        flags = dict(output_attentions=output_attentions, output_hidden_states=output_hidden_states)
        if not self.config.is_encoder_decoder:
            outputs = self.decoder(
                input_ids=input_ids,
                attention_mask=attention_mask,
                position_ids=position_ids,
                inputs_embeds=inputs_embeds,
                cache=cache,
                use_cache=use_cache,
                **flags,
            )
            return BaseModelOutputWithPast(
                last_hidden_state=outputs.last_hidden_state, cache=outputs.cache,
                hidden_states=outputs.hidden_states, attentions=outputs.attentions,
            )

        if encoder_outputs is None:
            encoder_outputs = self.encoder(
                input_ids=input_ids, attention_mask=attention_mask, inputs_embeds=inputs_embeds, position_ids=position_ids,
                **flags,
            )
        elif not isinstance(encoder_outputs, HfLlmEncoderOutput):
            # A plain tuple or another ModelOutput (e.g. from a user's own encoder call).
            encoder_outputs = HfLlmEncoderOutput(last_hidden_state=encoder_outputs[0])
        if decoder_input_ids is None and decoder_inputs_embeds is None:
            raise ValueError(
                "An encoder-decoder needs decoder_input_ids (or labels, from which they are derived by shifting "
                "right with decoder_start_token_id)."
            )
        decoder_outputs = self.decoder(
            input_ids=decoder_input_ids,
            attention_mask=decoder_attention_mask,
            position_ids=decoder_position_ids,
            inputs_embeds=decoder_inputs_embeds,
            encoder_outputs=encoder_outputs,
            encoder_attention_mask=attention_mask,
            cache=cache,
            use_cache=use_cache,
            **flags,
        )
        return HfLlmSeq2SeqModelOutput(
            last_hidden_state=decoder_outputs.last_hidden_state,
            cache=decoder_outputs.cache,
            decoder_hidden_states=decoder_outputs.hidden_states,
            decoder_attentions=decoder_outputs.attentions,
            cross_attentions=decoder_outputs.cross_attentions,
            encoder_last_hidden_state=encoder_outputs.last_hidden_state,
            encoder_hidden_states=encoder_outputs.hidden_states,
            encoder_attentions=encoder_outputs.attentions,
            source_attention=decoder_outputs.source_attention,
        )


class HfLlmForCausalLM(HfLlmPreTrainedModel, GenerationMixin):
    """Decoder-only language model of any family, with tied input/output embeddings by default."""

    _tied_weights_keys = {"lm_head.weight": "model.decoder.embed_tokens.weight"}

    def __init__(self, config: HfLlmConfig):
        if config.is_encoder_decoder:
            raise ValueError(
                "HfLlmForCausalLM is a decoder-only model but the config has is_encoder_decoder=True; use "
                "HfLlmForSeq2SeqLM (AutoModelForSeq2SeqLM) or set is_encoder_decoder=False."
            )
        super().__init__(config)
        self.model = HfLlmModel(config)
        self.lm_head = nn.Linear(self.model.decoder.output_size, config.vocab_size, bias=False)
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.model.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.model.set_input_embeddings(value)

    def get_output_embeddings(self) -> nn.Linear:
        return self.lm_head

    def set_output_embeddings(self, value: nn.Linear) -> None:
        self.lm_head = value

    @deprecate_kwarg("past_key_values", "6.0.0", new_name="cache")
    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        skip_logits: bool | None = None,
        **kwargs,
    ) -> CausalLMOutputWithPast:
        r"""`labels` are the input ids (pads as -100); the loss shifts them. `logits_to_keep=k` computes
        logits for the last k positions only (0: all). `skip_logits` (the name Liger's fused heads use): True
        computes the loss without logits (`logits=None`), False always returns the logits; None (default) skips
        them in training forwards with labels when `config.fused_loss` is set."""
        if skip_logits and labels is None:
            raise ValueError("skip_logits=True returns only the loss, which needs labels: pass labels, or leave "
                             "skip_logits at None (logits without labels).")
        outputs = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=cache,
            inputs_embeds=inputs_embeds,
            use_cache=use_cache,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
            return_dict=True,
        )
        hidden_states = outputs.last_hidden_state  # (B, T, H)
        extras = {key: value for key, value in outputs.items() if key != "last_hidden_state"}  # cache, hidden states, ...
        if labels is not None and self._fused_loss(logits_to_keep, skip_logits):
            shift_labels = kwargs.get("shift_labels")
            loss = fused_cross_entropy(
                hidden_states, self.lm_head.weight, labels if shift_labels is None else shift_labels,
                kwargs.get("num_items_in_batch"), shift=shift_labels is None,
            )
            return CausalLMOutputWithPast(loss=loss, logits=None, **extras)
        keep = slice(-logits_to_keep, None) if isinstance(logits_to_keep, int) else logits_to_keep
        logits = self.lm_head(hidden_states[:, keep, :])  # (B, T', V)

        loss = None
        if labels is not None:
            loss = self.loss_function(logits=logits, labels=labels, vocab_size=self.config.vocab_size, **kwargs)
        return CausalLMOutputWithPast(loss=loss, logits=logits, **extras)


class HfLlmForSeq2SeqLM(HfLlmPreTrainedModel, GenerationMixin):
    """Encoder-decoder with any encoder family and any decoder family (translation, summarization, dialogue)."""

    _tied_weights_keys = {"lm_head.weight": "model.encoder.embed_tokens.weight"}

    def __init__(self, config: HfLlmConfig):
        if not config.is_encoder_decoder:
            raise ValueError(
                "HfLlmForSeq2SeqLM needs an encoder-decoder config: set is_encoder_decoder=True and "
                "decoder_start_token_id (usually bos_token_id)."
            )
        super().__init__(config)
        self.model = HfLlmModel(config)
        self.lm_head = nn.Linear(self.model.decoder.output_size, config.vocab_size, bias=False)
        self.copy_generator = None
        if config.copy_attention:
            self.copy_generator = HfLlmCopyGenerator(self.model.decoder.output_size, self.model.encoder.output_size)
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.model.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.model.set_input_embeddings(value)

    def get_output_embeddings(self) -> nn.Linear:
        return self.lm_head

    def set_output_embeddings(self, value: nn.Linear) -> None:
        self.lm_head = value

    def get_encoder(self):
        return self.model.encoder

    def prepare_decoder_input_ids_from_labels(self, labels: torch.Tensor) -> torch.Tensor:
        """Used by `DataCollatorForSeq2Seq(model=...)`."""
        return shift_tokens_right(labels, self.config.pad_token_id, self.config.decoder_start_token_id)

    @deprecate_kwarg("past_key_values", "6.0.0", new_name="cache")
    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        decoder_input_ids: torch.LongTensor | None = None,
        decoder_attention_mask: torch.Tensor | None = None,
        encoder_outputs: HfLlmEncoderOutput | tuple | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        decoder_inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        **kwargs,
    ) -> Seq2SeqLMOutput:
        r"""`labels (B, T)` are the target ids (pads as -100), not shifted: the decoder inputs are the labels
        shifted right behind `decoder_start_token_id` when `decoder_input_ids` are not given.

        With `config.copy_attention` the logits are the log-probabilities of the pointer-generator's mixture
        (copy_layers.py) and the loss is their negative log-likelihood; the source ids come from `input_ids` or,
        in `generate()`, from `encoder_outputs.source_ids`. `config.coverage_loss_weight` adds the coverage loss."""
        if labels is not None and decoder_input_ids is None and decoder_inputs_embeds is None:
            decoder_input_ids = self.prepare_decoder_input_ids_from_labels(labels)
        outputs = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            decoder_input_ids=decoder_input_ids,
            decoder_attention_mask=decoder_attention_mask,
            encoder_outputs=encoder_outputs,
            cache=cache,
            inputs_embeds=inputs_embeds,
            decoder_inputs_embeds=decoder_inputs_embeds,
            use_cache=use_cache,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
            return_dict=True,
        )
        hidden_states = outputs.last_hidden_state  # (B, T, H)
        # cache, decoder/encoder hidden states and attentions: Seq2SeqLMOutput has every field of Seq2SeqModelOutput
        extras = {key: value for key, value in outputs.items() if key not in ("last_hidden_state", "source_attention")}
        if labels is not None and self._fused_loss(logits_to_keep):
            loss = fused_cross_entropy(hidden_states, self.lm_head.weight, labels, kwargs.get("num_items_in_batch"))
            loss = loss + self.coverage_penalty(outputs.source_attention, labels, kwargs.get("num_items_in_batch"))
            return Seq2SeqLMOutput(loss=loss, logits=None, **extras)
        keep = slice(-logits_to_keep, None) if isinstance(logits_to_keep, int) else logits_to_keep
        logits = self.lm_head(hidden_states[:, keep, :])  # (B, T', V)
        if self.copy_generator is not None:
            source_ids = input_ids if input_ids is not None else getattr(encoder_outputs, "source_ids", None)
            if source_ids is None:
                raise ValueError(
                    "copy_attention=True copies source tokens and needs their ids: pass input_ids (not only "
                    "inputs_embeds), or encoder_outputs from this model's encoder called with input_ids."
                )
            if decoder_inputs_embeds is None:
                decoder_inputs_embeds = self.get_input_embeddings()(decoder_input_ids)
            logits = self.copy_generator(
                logits, hidden_states[:, keep, :], outputs.source_attention[:, keep, :],
                outputs.encoder_last_hidden_state, decoder_inputs_embeds[:, keep, :], source_ids,
            )  # (B, T', V) log-probabilities

        loss = None
        if labels is not None:
            loss = token_cross_entropy(logits, labels, kwargs.get("num_items_in_batch"))
            loss = loss + self.coverage_penalty(outputs.source_attention, labels, kwargs.get("num_items_in_batch"))
        return Seq2SeqLMOutput(loss=loss, logits=logits, **extras)

    def coverage_penalty(
        self, source_attention: torch.Tensor | None, labels: torch.Tensor, num_items_in_batch=None
    ) -> torch.Tensor | float:
        """`config.coverage_loss_weight` times the coverage loss of the attention that copies (0 when off)."""
        if not self.config.coverage_loss_weight:
            return 0.0
        return self.config.coverage_loss_weight * coverage_loss(source_attention, labels, num_items_in_batch)


class HfLlmForSequenceClassification(HfLlmPreTrainedModel):
    """Sequence classification / regression head.

    Decoder-only configs pool the last non-pad token (as GPT-2 / Llama heads do); encoder-decoder configs
    run the encoder only and pool the mean of its non-pad states. `problem_type` is inferred as in HF's
    heads: regression for `num_labels == 1`, single-label for integer labels, multi-label for float labels.
    """

    def __init__(self, config: HfLlmConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.model = HfLlmModel(config, with_decoder=not config.is_encoder_decoder)
        stack = self.model.encoder if config.is_encoder_decoder else self.model.decoder
        dropout = config.classifier_dropout if config.classifier_dropout is not None else config.dropout
        self.dropout = nn.Dropout(dropout)
        self.score = nn.Linear(stack.output_size, config.num_labels, bias=False)
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.model.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.model.set_input_embeddings(value)

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        **kwargs,
    ) -> SequenceClassifierOutputWithPast:
        output_attentions, output_hidden_states = self._output_flags(output_attentions, output_hidden_states)
        reference = input_ids if input_ids is not None else inputs_embeds
        batch, length = reference.shape[:2]
        if attention_mask is None:
            if input_ids is not None and self.config.pad_token_id is not None:
                attention_mask = (input_ids != self.config.pad_token_id).long()
            else:
                attention_mask = torch.ones(batch, length, dtype=torch.long, device=reference.device)

        stack = self.model.encoder if self.config.is_encoder_decoder else self.model.decoder
        outputs = stack(
            input_ids=input_ids, attention_mask=attention_mask, inputs_embeds=inputs_embeds, position_ids=position_ids,
            output_attentions=output_attentions, output_hidden_states=output_hidden_states,
        )
        hidden = outputs.last_hidden_state  # (B, T, H)
        if self.config.is_encoder_decoder:
            weights = attention_mask.to(hidden.dtype).unsqueeze(-1)  # (B, S, 1)
            pooled = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1.0)  # (B, H)
        else:
            # Last non-pad token; works for left and right padding alike.
            positions = torch.arange(length, device=hidden.device)
            last = (attention_mask.to(hidden.device).long() * positions).argmax(-1)  # (B,)
            pooled = hidden[torch.arange(batch, device=hidden.device), last]  # (B, H)
        logits = self.score(self.dropout(pooled))  # (B, num_labels)

        loss = None
        if labels is not None:
            loss = self.loss_function(labels=labels, pooled_logits=logits, config=self.config)
        return SequenceClassifierOutputWithPast(
            loss=loss, logits=logits, hidden_states=outputs.hidden_states, attentions=outputs.attentions
        )


__all__ = [
    "CheckpointMismatchError",
    "HfLlmPreTrainedModel",
    "HfLlmModel",
    "HfLlmForCausalLM",
    "HfLlmForSeq2SeqLM",
    "HfLlmForSequenceClassification",
]
