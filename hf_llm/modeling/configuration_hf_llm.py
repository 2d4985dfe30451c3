"""HfLlmConfig: one `model_type` ("hf_llm") for the recurrent, convolutional and Transformer families.

The fields are flat and HF-style so that every Hugging Face tool finds what it expects (`vocab_size`,
`hidden_size`, `num_hidden_layers`, token ids, `tie_word_embeddings`, `is_encoder_decoder`, ...).
`backbone` picks the family; `encoder_backbone` / `decoder_backbone` and `encoder_layers` /
`decoder_layers` override it per side (BART's naming). Invalid values raise `ValueError` naming the
field and what is allowed, at construction, so a bad `config.json` fails when it is loaded.

This file is part of the exported folder: it imports only the standard library and transformers.
"""

from __future__ import annotations

import copy
import math

from transformers import PretrainedConfig

BACKBONES = ("transformer", "rnn", "cnn")
RNN_CELLS = ("lstm", "gru")
RNN_ATTENTIONS = ("bahdanau", "luong_dot", "luong_general", "none")
RNN_INIT_STATES = ("encoder", "zeros")
# How each family is named in descriptions (model cards).
FAMILY_NAMES = {"transformer": "Transformer (pre-norm, rotary positions)", "rnn": "recurrent (LSTM/GRU)",
                "cnn": "convolutional (gated convolutions, ConvS2S)"}
ACTIVATIONS = ("gelu", "gelu_new", "gelu_pytorch_tanh", "relu", "silu", "swish")
# Written into every config so that a saved checkpoint loads through every Auto class with
# trust_remote_code=True (save_pretrained alone records only the class that was saved).
AUTO_MAP = {
    "AutoConfig": "configuration_hf_llm.HfLlmConfig",
    "AutoModel": "modeling_hf_llm.HfLlmModel",
    "AutoModelForCausalLM": "modeling_hf_llm.HfLlmForCausalLM",
    "AutoModelForSeq2SeqLM": "modeling_hf_llm.HfLlmForSeq2SeqLM",
    "AutoModelForSequenceClassification": "modeling_hf_llm.HfLlmForSequenceClassification",
}


class HfLlmConfig(PretrainedConfig):
    r"""Configuration of every hf_llm model.

    Args:
        vocab_size: size of the (shared) vocabulary.
        hidden_size: width of the embeddings and of every block.
        num_hidden_layers: number of blocks per side, unless `encoder_layers` / `decoder_layers` say otherwise.
        num_attention_heads: attention heads of the Transformer family.
        intermediate_size: inner width of the Transformer feed-forward block (default `4 * hidden_size`).
        hidden_act: activation of the feed-forward block.
        max_position_embeddings: longest sequence the model is meant for. A hard limit only for the
            convolutional family (learned positions: longer inputs are an error); the Transformer's rotary
            positions and the recurrent family have no length limit.
        dropout: dropout on embeddings, residual branches and feed-forward blocks.
        attention_dropout: dropout on attention probabilities.
        initializer_range: standard deviation of the normal initialisation. Default (None): `hidden_size ** -0.5`
            for a Transformer encoder-decoder (as fairseq's Transformer initialises its embeddings), else 0.02. 0.02 (BERT/GPT-2's value, tuned for widths near 1000)
            is ~4x too small at width 128: there the Transformer encoder-decoder (and HF's Marian) ignored its
            source on the small summarization set (one summary for every input); with 1/sqrt(width) it uses it
            (benchmarks/results/real/README.md, issue 19). A saved config records the number it resolved to.
        norm_eps: epsilon of the layer norms.
        rope_theta: base of the rotary position embedding.
        backbone: default family, one of "transformer", "rnn", "cnn".
        encoder_backbone / decoder_backbone: per-side family (encoder-decoder models), default `backbone`.
        encoder_layers / decoder_layers: per-side number of blocks, default `num_hidden_layers`.
        is_encoder_decoder: build an encoder-decoder (seq2seq) model instead of a decoder-only LM.
        pad_token_id / bos_token_id / eos_token_id: special tokens.
        decoder_start_token_id: first decoder token of an encoder-decoder; required when `is_encoder_decoder`.
        tie_word_embeddings: share the input embeddings (of both sides) with the output projection.
        use_cache: return a cache from `forward` for fast generation.
        classifier_dropout: dropout before the classification head (default `dropout`).
        fused_loss: in training forwards with labels, compute the LM loss chunk by chunk without materialising
            the `(tokens, vocab)` logits (faster, far less memory); `logits` is then None in those outputs.
            Not with `copy_attention`, whose loss needs the mixed distribution.
        copy_attention: copy attention / pointer-generator (See et al. 2017, "Get To The Point"; OpenNMT-py's copy
            generator) for encoder-decoders of every decoder family: the output distribution mixes the vocabulary
            distribution (weight p_gen) with the decoder's attention over the source tokens (weight 1 - p_gen),
            scattered onto the source ids; `logits` are then the log-probabilities of that mixture.
        coverage_loss_weight: weight of See et al.'s coverage loss, sum_i min(a_t,i, c_t,i) per target token
            (c_t the sum of the earlier attention distributions of the attention that copies), added to the loss
            of an encoder-decoder; 0 turns it off. Works with or without `copy_attention`.
        coverage_attention: feed the coverage vector c_t (the sum of the earlier attention distributions) to the
            attention scorer (See et al. 2017, eq. 11; Tu et al. 2016), for the decoders with one attention that
            copies: RNN decoders with attention (all variants) and ConvS2S decoders (their last layer's
            attention). Not for Transformer decoders (several heads per layer; their coverage is the loss only).

    Recurrent family (`rnn_*`; width `hidden_size`, depth per side as above, `dropout` between layers):
        rnn_cell: "lstm" or "gru".
        rnn_bidirectional_encoder: bidirectional encoder, `hidden_size / 2` units per direction (OpenNMT-py's "brnn"),
            so its states are `hidden_size` wide; needs an even `hidden_size`.
        rnn_attention: attention of an RNN decoder over the encoder, "bahdanau" (additive, Bahdanau et al.
            2015), "luong_dot" / "luong_general" (Luong et al. 2015) or "none". A decoder-only RNN LM has no
            encoder and ignores it.
        rnn_input_feeding: Luong input feeding (the previous attentional vector joins the next input). Default off
            since issue 20: on the real gettext en->fr demo it cost 2.2x the training step of the fused Luong
            decoder (a loop over target positions) for no BLEU (11.8 with, 12.5 without; docs/ARCHITECTURE.md).
            Every saved config.json carries the field, so models trained with it load with it.
        rnn_init_state: "encoder" (the decoder starts from the bridged encoder final state; the masked mean
            of the source states for non-recurrent encoders) or "zeros".
        rnn_residual: residual connections between stacked recurrent layers, x_{l+1} = RNN_l(x_l) + x_l from the
            second layer up (Wu et al. 2016, "Google's Neural Machine Translation System", section 3.1), in the
            encoder and the language model / attention-free decoder stacks. Default on for new configs; a
            config.json saved before the field existed (it carries `transformers_version` but no `rnn_residual`)
            loads with it off, as those models were trained (docs/ARCHITECTURE.md, "Recurrent family").

    Convolutional family (`cnn_*`; embeddings `hidden_size` wide, learned positions up to
    `max_position_embeddings`):
        cnn_kernel_size: kernel width of every block when no spec is given.
        cnn_encoder_spec / cnn_decoder_spec: fairseq-style layer spec, a list of `[channels, kernel_size]`
            per block, e.g. `[[256, 3]] * 4`; default `[[hidden_size, cnn_kernel_size]] * layers`. A spec
            sets the number of blocks of its side.
        cnn_weight_norm: weight normalisation on every convolution and projection (as in fairseq's fconv).
        cnn_attention_scaling: divide multi-step attention scores by sqrt(hidden_size), as scaled dot-product
            attention does. fairseq's fconv does not, but its embeddings are N(0, 0.1) and unnormalised; ours are
            LayerNormed (unit scale), so unscaled scores start with std ~sqrt(hidden_size): a saturated softmax,
            gradient norms of 100-1000 and no learning of where to look. ConvS2S models saved before this field
            existed were trained without it: load them with `cnn_attention_scaling=False`.
    """

    model_type = "hf_llm"
    keys_to_ignore_at_inference = ["cache"]

    def __init__(
        self,
        vocab_size: int = 8192,
        hidden_size: int = 256,
        num_hidden_layers: int = 4,
        num_attention_heads: int = 4,
        intermediate_size: int | None = None,
        hidden_act: str = "gelu_pytorch_tanh",
        max_position_embeddings: int = 2048,
        dropout: float = 0.1,
        attention_dropout: float = 0.0,
        initializer_range: float | None = None,
        norm_eps: float = 1e-5,
        rope_theta: float = 10000.0,
        backbone: str = "transformer",
        encoder_backbone: str | None = None,
        decoder_backbone: str | None = None,
        encoder_layers: int | None = None,
        decoder_layers: int | None = None,
        is_encoder_decoder: bool = False,
        pad_token_id: int | None = 0,
        bos_token_id: int | None = 1,
        eos_token_id: int | list[int] | None = 2,
        decoder_start_token_id: int | None = None,
        tie_word_embeddings: bool = True,
        use_cache: bool = True,
        classifier_dropout: float | None = None,
        fused_loss: bool = True,
        rnn_cell: str = "lstm",
        rnn_bidirectional_encoder: bool = True,
        rnn_attention: str = "luong_general",
        rnn_input_feeding: bool = False,
        rnn_init_state: str = "encoder",
        rnn_residual: bool | None = None,
        cnn_kernel_size: int = 3,
        cnn_encoder_spec: list[list[int]] | None = None,
        cnn_decoder_spec: list[list[int]] | None = None,
        cnn_weight_norm: bool = False,
        cnn_attention_scaling: bool = True,
        copy_attention: bool = False,
        coverage_loss_weight: float = 0.0,
        coverage_attention: bool = False,
        **kwargs,
    ):
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.intermediate_size = intermediate_size if intermediate_size is not None else 4 * hidden_size
        self.hidden_act = hidden_act
        self.max_position_embeddings = max_position_embeddings
        self.dropout = dropout
        self.attention_dropout = attention_dropout
        self.initializer_range = initializer_range
        self.norm_eps = norm_eps
        self.rope_theta = rope_theta
        self.backbone = backbone
        self.encoder_backbone = encoder_backbone
        self.decoder_backbone = decoder_backbone
        self.encoder_layers = encoder_layers
        self.decoder_layers = decoder_layers
        self.pad_token_id = pad_token_id
        self.bos_token_id = bos_token_id
        self.eos_token_id = eos_token_id
        self.decoder_start_token_id = decoder_start_token_id
        self.tie_word_embeddings = tie_word_embeddings
        self.use_cache = use_cache
        self.classifier_dropout = classifier_dropout
        self.fused_loss = fused_loss
        self.rnn_cell = rnn_cell
        self.rnn_bidirectional_encoder = rnn_bidirectional_encoder
        self.rnn_attention = rnn_attention
        self.rnn_input_feeding = rnn_input_feeding
        self.rnn_init_state = rnn_init_state
        if rnn_residual is None:  # a saved config.json without the field predates it: those models had none
            rnn_residual = "transformers_version" not in kwargs
        self.rnn_residual = rnn_residual
        self.cnn_kernel_size = cnn_kernel_size
        self.cnn_encoder_spec = [list(block) for block in cnn_encoder_spec] if isinstance(cnn_encoder_spec, (list, tuple)) else cnn_encoder_spec
        self.cnn_decoder_spec = [list(block) for block in cnn_decoder_spec] if isinstance(cnn_decoder_spec, (list, tuple)) else cnn_decoder_spec
        self.cnn_weight_norm = cnn_weight_norm
        self.cnn_attention_scaling = cnn_attention_scaling
        self.copy_attention = copy_attention
        self.coverage_loss_weight = coverage_loss_weight
        self.coverage_attention = coverage_attention
        super().__init__(is_encoder_decoder=is_encoder_decoder, **kwargs)
        if self.initializer_range is None:  # needs is_encoder_decoder, which PretrainedConfig sets
            transformer_pair = self.is_encoder_decoder and all(b == "transformer" for b in self.used_backbones())
            width = hidden_size if isinstance(hidden_size, int) and hidden_size > 0 else 1
            self.initializer_range = width**-0.5 if transformer_pair else 0.02
        self.auto_map = {**AUTO_MAP, **(getattr(self, "auto_map", None) or {})}
        self.check_fields()

    # ----------------------------------------------------------------------------------------------
    # Per-side views used by the modeling code.
    def side_backbone(self, side: str) -> str:
        """Family of the "encoder" or "decoder" side."""
        own = self.encoder_backbone if side == "encoder" else self.decoder_backbone
        return own if own is not None else self.backbone

    def side_layers(self, side: str) -> int:
        """Number of blocks of the "encoder" or "decoder" side."""
        spec = self.cnn_encoder_spec if side == "encoder" else self.cnn_decoder_spec
        if self.side_backbone(side) == "cnn" and spec is not None:
            return len(spec)
        own = self.encoder_layers if side == "encoder" else self.decoder_layers
        return own if own is not None else self.num_hidden_layers

    def cnn_spec(self, side: str) -> list[tuple[int, int]]:
        """`(channels, kernel_size)` of each convolutional block of the "encoder" or "decoder" side."""
        spec = self.cnn_encoder_spec if side == "encoder" else self.cnn_decoder_spec
        if spec is None:
            own = self.encoder_layers if side == "encoder" else self.decoder_layers
            layers = own if own is not None else self.num_hidden_layers
            return [(self.hidden_size, self.cnn_kernel_size)] * layers
        return [(int(channels), int(kernel)) for channels, kernel in spec]

    def get_text_config(self, decoder: bool | None = None, encoder: bool | None = None) -> "HfLlmConfig":
        """The config itself, or for one side of an encoder-decoder (`decoder=True` / `encoder=True`) a copy whose
        `num_hidden_layers` is that side's layer count. (transformers' default for flat encoder-decoder configs
        renames every `decoder_*` field, which would turn `decoder_backbone` into `backbone` and a default
        `decoder_layers=None` into `num_hidden_layers=None`.)"""
        side = "decoder" if decoder and not encoder else "encoder" if encoder and not decoder else None
        if side is None or not self.is_encoder_decoder or self.side_layers(side) == self.num_hidden_layers:
            return self
        view = copy.deepcopy(self)
        view.encoder_layers, view.decoder_layers = self.side_layers("encoder"), self.side_layers("decoder")
        view.num_hidden_layers = self.side_layers(side)
        return view

    # What transformers' caches read about the decoder's per-token state: a Transformer caches keys/values per head;
    # the recurrent and convolutional families cache one per-token vector per block, as a single "head"
    # (cache_layers.py).
    @property
    def num_key_value_heads(self) -> int:
        return self.num_attention_heads if self.side_backbone("decoder") == "transformer" else 1

    @property
    def head_dim(self) -> int:
        heads = self.num_attention_heads
        if self.side_backbone("decoder") == "transformer" and isinstance(heads, int) and heads > 0:
            return self.hidden_size // heads
        return self.hidden_size  # (an invalid head count is reported by validate())

    def used_backbones(self) -> list[str]:
        sides = ["encoder", "decoder"] if self.is_encoder_decoder else ["decoder"]
        return [self.side_backbone(side) for side in sides]

    @property
    def uses_source_attention(self) -> bool:
        """Whether the decoder returns the attention over the source that copies (`copy_attention`) and whose
        coverage is penalised (`coverage_loss_weight`)."""
        return bool(self.is_encoder_decoder and (self.copy_attention or self.coverage_loss_weight))

    # ----------------------------------------------------------------------------------------------
    # What code outside the models needs to know, so that it never tests a family's name.
    @property
    def max_input_positions(self) -> int | None:
        """The longest sequence the model reads: `max_position_embeddings` where a stack has learned positions
        (the convolutional family), None where nothing bounds it (rotary Transformer, recurrent)."""
        return self.max_position_embeddings if "cnn" in self.used_backbones() else None

    @property
    def hidden_size_multiple(self) -> int:
        """`hidden_size` must be a multiple of this (the Transformer's head count, 2 for a bidirectional RNN encoder)."""
        multiple = self.num_attention_heads if "transformer" in self.used_backbones() else 1
        if self.is_encoder_decoder and self.side_backbone("encoder") == "rnn" and self.rnn_bidirectional_encoder:
            multiple = multiple * 2 // math.gcd(multiple, 2)
        return multiple

    def describe(self) -> str:
        """One line naming the model's families, e.g. for a model card."""
        if self.is_encoder_decoder:
            return (f"encoder-decoder: {FAMILY_NAMES[self.side_backbone('encoder')]} encoder, "
                    f"{FAMILY_NAMES[self.side_backbone('decoder')]} decoder")
        return f"decoder-only {FAMILY_NAMES[self.side_backbone('decoder')]} language model"

    def describe_side(self, side: str) -> str:
        """The architecture of one side in a few words ("2 layers, LSTM, bidirectional"), e.g. for a model card."""
        family = self.side_backbone(side)
        detail = f"{self.side_layers(side)} layers"
        if family == "transformer":
            detail += f", {self.num_attention_heads} heads, FFN {self.intermediate_size}"
        elif family == "rnn":
            detail += f", {self.rnn_cell.upper()}"
            if side == "encoder":
                detail += ", bidirectional" if self.rnn_bidirectional_encoder else ", unidirectional"
            elif self.is_encoder_decoder:
                detail += f", {self.rnn_attention} attention" + (" + input feeding" if self.rnn_input_feeding else "")
        else:
            detail += f", blocks {self.cnn_spec(side)}"
        return detail

    def encoder_decoder_fields(self) -> dict:
        """The fields of an encoder-decoder whose encoder and decoder both have this decoder-only model's stack
        (a warm start: the decoder-only model's weights then fit both sides). Token ids and anything that is not
        architecture are left out."""
        not_architecture = {"architectures", "auto_map", "_name_or_path", "transformers_version", "model_type",
                            "dtype", "torch_dtype", "is_encoder_decoder", "decoder_start_token_id", "id2label",
                            "label2id", "problem_type", "num_labels"}
        fields = {k: v for k, v in self.to_dict().items() if k not in not_architecture}
        family = self.side_backbone("decoder")
        fields.update(is_encoder_decoder=True, backbone=family, encoder_backbone=family, decoder_backbone=family,
                      decoder_layers=None, encoder_layers=None, num_hidden_layers=self.side_layers("decoder"),
                      cnn_encoder_spec=self.cnn_decoder_spec)
        return fields

    # ----------------------------------------------------------------------------------------------
    def check_fields(self) -> None:
        """Raise `ValueError` naming the first invalid field, what it holds and what is allowed. (Not `validate`:
        that name is transformers' own validation hook, which runs at save time.)"""
        for name in ("backbone", "encoder_backbone", "decoder_backbone"):
            value = getattr(self, name)
            if value is None and name != "backbone":
                continue
            if value not in BACKBONES:
                raise ValueError(f"{name}={value!r} is not a backbone; allowed values are {list(BACKBONES)}.")
        if not self.is_encoder_decoder:
            for name in ("encoder_backbone", "encoder_layers"):
                if getattr(self, name) is not None:
                    raise ValueError(
                        f"{name}={getattr(self, name)!r} is set but is_encoder_decoder=False: a decoder-only model "
                        f"has no encoder. Set is_encoder_decoder=True or leave {name} unset."
                    )

        positive = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
                    "max_position_embeddings", "encoder_layers", "decoder_layers")
        for name in positive:
            value = getattr(self, name)
            if value is None and name in ("encoder_layers", "decoder_layers"):
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"{name}={value!r} must be a positive integer.")
        if "transformer" in self.used_backbones() and self.hidden_size % self.num_attention_heads != 0:
            raise ValueError(
                f"hidden_size={self.hidden_size} is not divisible by num_attention_heads={self.num_attention_heads}; "
                "choose num_attention_heads among the divisors of hidden_size."
            )
        for name in ("dropout", "attention_dropout", "classifier_dropout"):
            value = getattr(self, name)
            if value is None and name == "classifier_dropout":
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
                raise ValueError(f"{name}={value!r} must be a number in [0, 1).")
        if self.hidden_act not in ACTIVATIONS:
            raise ValueError(f"hidden_act={self.hidden_act!r} is not supported; allowed values are {list(ACTIVATIONS)}.")
        for name in ("tie_word_embeddings", "fused_loss", "rnn_bidirectional_encoder", "rnn_input_feeding", "rnn_residual",
                     "cnn_weight_norm", "cnn_attention_scaling", "copy_attention", "coverage_attention"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name}={getattr(self, name)!r} must be true or false.")
        if (self.is_encoder_decoder and self.side_backbone("encoder") == "rnn" and self.rnn_bidirectional_encoder
                and self.hidden_size % 2):
            raise ValueError(
                f"rnn_bidirectional_encoder=True splits hidden_size={self.hidden_size} between two directions: choose an "
                "even hidden_size or set rnn_bidirectional_encoder=False."
            )
        for name, allowed in (("rnn_cell", RNN_CELLS), ("rnn_attention", RNN_ATTENTIONS), ("rnn_init_state", RNN_INIT_STATES)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name}={getattr(self, name)!r} is not supported; allowed values are {list(allowed)}.")
        if isinstance(self.cnn_kernel_size, bool) or not isinstance(self.cnn_kernel_size, int) or self.cnn_kernel_size <= 0:
            raise ValueError(f"cnn_kernel_size={self.cnn_kernel_size!r} must be a positive integer.")
        for side in ("encoder", "decoder"):
            name = f"cnn_{side}_spec"
            spec = getattr(self, name)
            if spec is None:
                continue
            if not isinstance(spec, list) or not spec or not all(
                isinstance(block, list) and len(block) == 2
                and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in block)
                for block in spec
            ):
                raise ValueError(
                    f"{name}={spec!r} must be a non-empty list of [channels, kernel_size] pairs of positive "
                    "integers, e.g. [[256, 3], [256, 3], [512, 3]]."
                )
            own = self.encoder_layers if side == "encoder" else self.decoder_layers
            if own is not None and own != len(spec):
                raise ValueError(
                    f"{side}_layers={own} disagrees with {name}, which has {len(spec)} blocks; drop one of them."
                )
        if (
            self.is_encoder_decoder
            and self.side_backbone("decoder") == "rnn"
            and self.rnn_attention == "none"
            and self.rnn_init_state == "zeros"
        ):
            raise ValueError(
                "rnn_attention='none' with rnn_init_state='zeros' gives an RNN decoder that never sees the source; "
                "use an attention or rnn_init_state='encoder'."
            )
        weight = self.coverage_loss_weight
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not 0.0 <= weight < math.inf:
            raise ValueError(f"coverage_loss_weight={weight!r} must be a number >= 0 (0 turns the coverage loss off).")
        if self.coverage_attention and self.is_encoder_decoder and self.side_backbone("decoder") == "transformer":
            raise ValueError(
                "coverage_attention=True is for decoders with one attention over the source (rnn, cnn); a Transformer "
                "decoder has several heads per layer. Leave coverage_attention unset and use coverage_loss_weight."
            )
        for name in ("copy_attention", "coverage_loss_weight", "coverage_attention"):
            if getattr(self, name) and not self.is_encoder_decoder:
                raise ValueError(
                    f"{name}={getattr(self, name)!r} needs an encoder-decoder (is_encoder_decoder=True): a decoder-only "
                    f"model has no source to attend to. Set is_encoder_decoder=True or leave {name} unset."
                )
            if (getattr(self, name) and self.is_encoder_decoder and self.side_backbone("decoder") == "rnn"
                    and self.rnn_attention == "none"):
                raise ValueError(
                    f"{name}={getattr(self, name)!r} needs the decoder's attention over the source, but "
                    "rnn_attention='none'; choose 'luong_general', 'luong_dot' or 'bahdanau'."
                )

        eos = self.eos_token_id if isinstance(self.eos_token_id, list) else [self.eos_token_id]
        ids = [("pad_token_id", self.pad_token_id), ("bos_token_id", self.bos_token_id),
               ("decoder_start_token_id", self.decoder_start_token_id)] + [("eos_token_id", e) for e in eos]
        for name, value in ids:
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < self.vocab_size:
                raise ValueError(
                    f"{name}={value!r} is outside the vocabulary: it must be an integer in [0, {self.vocab_size}) "
                    "(vocab_size)."
                )
        if self.is_encoder_decoder and self.decoder_start_token_id is None:
            raise ValueError(
                "decoder_start_token_id is required for an encoder-decoder (is_encoder_decoder=True): it is the first "
                "token fed to the decoder; set it, usually to bos_token_id."
            )


__all__ = ["HfLlmConfig"]
