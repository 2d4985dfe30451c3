"""The recurrent family: (bi)LSTM/GRU encoders, attention decoders and recurrent language models.

- Encoder: embeddings -> multi-layer (bidirectional) LSTM/GRU, the fused `nn.LSTM` / `nn.GRU` over packed
  sequences, so padding never enters a state and there is no Python loop over time.
- Decoder without attention (a recurrent LM, or Sutskever et al. 2014's seq2seq that starts from the
  encoder state): the fused RNN over the whole sequence.
- Luong et al. 2015, "Effective Approaches to Attention-based Neural Machine Translation": global
  attention ("dot" or "general" score) applied *after* the RNN, so training runs the RNN fused over the
  whole target and attends for all steps at once; with input feeding (the previous attentional vector is
  part of the next input) it needs a loop over target steps.
- Bahdanau et al. 2015, "Neural Machine Translation by Jointly Learning to Align and Translate": additive
  attention queried by the previous state, the context fed into the RNN: a loop over target steps.

Every attention is a masked softmax over the source padding. The encoder states are projected for
attention once per source and kept in the cross-attention part of an `EncoderDecoderCache`; each layer's
state after every token (h and c for an LSTM, and the input-feed vector) lives, batch first, in one
`HfLlmRecurrentCacheLayer` per layer, so `generate()` reorders it for beam search and crops it for assisted
decoding like any other cache. A cached forward (generation) steps through its tokens to record those
states; training and uncached forwards run the fused kernels over the whole sequence.

Part of the exported folder: imports only the standard library, torch, transformers and siblings.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence
from transformers.cache_utils import Cache, StaticLayer
from transformers.modeling_layers import GradientCheckpointingLayer

from .cache_layers import (
    STATIC_COVERAGE_ERROR, HfLlmRecurrentCacheLayer, HfLlmStaticFeedLayer, decoder_cache, is_static, source_memory,
    static_position,
)
from .copy_layers import HfLlmCoverageGate, covered_attention
from .shared_layers import (
    DocumentSplit, HfLlmDecoderOutput, HfLlmEncoderOutput, document_starts, embed, masked_softmax, new_token_mask,
)

RNNState = torch.Tensor | tuple[torch.Tensor, torch.Tensor]  # GRU: h; LSTM: (h, c); each (L * dirs, B, H)



class PackedPadding:
    """Real tokens of each row gathered to the front and packed (`pack_padded_sequence`), and back.

    Padding may sit anywhere (left or right): the final state of each row is then the state after its last
    real token, and the outputs go back to their positions with zeros at the pads.
    """

    def __init__(self, mask: torch.Tensor):
        self.length = mask.shape[1]
        self.lengths = mask.sum(-1).clamp(min=1).cpu()
        self.order = torch.argsort((mask == 0).to(torch.int8), dim=1, stable=True)  # real tokens first, in order

    def pack(self, x: torch.Tensor) -> PackedSequence:
        front = x.gather(1, self.order.unsqueeze(-1).expand_as(x))
        return pack_padded_sequence(front, self.lengths, batch_first=True, enforce_sorted=False)

    def unpack(self, packed: PackedSequence) -> torch.Tensor:
        front, _ = pad_packed_sequence(packed, batch_first=True, total_length=self.length)  # (B, T, D)
        return torch.zeros_like(front).scatter(1, self.order.unsqueeze(-1).expand_as(front), front)


class HfLlmGateProjection(nn.Linear):
    """One weight matrix of a fused `nn.LSTM` / `nn.GRU` (`weight_ih_l0`: layer 0's input-to-gates projection,
    `weight_hh_l0`: its hidden-to-gates one, ...) seen as a bias-free `nn.Linear`, `(.., in) -> (.., gates * H)`.

    The view owns no parameter: the recurrent module keeps its weights (their names in the checkpoint) and its
    fused kernel. It is there so that tools which adapt linear layers find the recurrent weights: peft's LoRA
    with `target_modules="all-linear"` (or `["ih_l0", "hh_l0"]`) wraps the views, and the recurrence then runs
    the fused kernel with the wrapped maps' matrices (`HfLlmGateProjections.adapted_weights`). peft's merge
    writes into the recurrent module's own weights through `weight`.
    """

    def __init__(self, rnn: nn.RNNBase, parameter_name: str):
        nn.Module.__init__(self)  # no weight of its own: `weight` reads the recurrent module's
        self.__dict__["rnn"] = rnn  # a plain reference, not a submodule: the parameters keep their names
        self.parameter_name = parameter_name
        self.out_features, self.in_features = getattr(rnn, parameter_name).shape
        self.register_parameter("bias", None)

    @property
    def weight(self) -> nn.Parameter:
        return getattr(self.__dict__["rnn"], self.parameter_name)


class HfLlmGateProjections(nn.Module):
    """A view (`HfLlmGateProjection`) of every weight matrix of a fused recurrent module, named after it without
    the `weight_` prefix: `ih_l0`, `hh_l0`, `ih_l0_reverse`, `hh_l0_reverse`, `ih_l1`, ..."""

    def __init__(self, rnn: nn.RNNBase):
        super().__init__()
        self.__dict__["rnn"] = rnn  # a plain reference, not a submodule
        for name, _ in rnn.named_parameters(recurse=False):
            if name.startswith("weight_"):
                self.add_module(name.removeprefix("weight_"), HfLlmGateProjection(rnn, name))

    def adapted_weights(self) -> dict[str, torch.Tensor] | None:
        """The matrices `(out, in)` of the views a tool has wrapped (peft's `lora.Linear`, ...), by the recurrent
        module's parameter names; None when no view is wrapped (the kernel then runs on its own weights).

        A wrapped view is a linear map of its input (LoRA, DoRA, IA3, ... add to or scale the matrix), so
        applying it to the identity gives its matrix exactly, gradients to the adapter included; it costs one
        `in x in x out` product per forward, a small share of a batch's `B x T x in x out`. (With
        `lora_dropout` the dropout falls on the identity's rows, i.e. on the columns of the update, once per
        forward rather than per token.)"""
        adapted = {}
        for name, view in self.named_children():
            if isinstance(view, HfLlmGateProjection):
                continue
            stored = getattr(self.__dict__["rnn"], f"weight_{name}")  # (out, in)
            identity = torch.eye(stored.shape[1], dtype=stored.dtype, device=stored.device)
            adapted[f"weight_{name}"] = view(identity).T.to(stored.dtype)  # (out, in)
        return adapted or None


def step_rnn(rnn: nn.RNNBase, x: torch.Tensor, state: RNNState | None,
             weights: dict[str, torch.Tensor] | None) -> tuple[torch.Tensor, RNNState]:
    """One token `x (B, 1, D)` through a unidirectional multi-layer LSTM/GRU from `state (L, B, H)` [LSTM: (h, c)],
    written out with PyTorch's gate equations (LSTM: Hochreiter & Schmidhuber 1997, gates i, f, g, o; GRU: Cho et al.
    2014, gates r, z, n), `weights` (adapted matrices) in place of the module's own where given.

    torch.compile cannot trace `nn.LSTM` / `nn.GRU` (dynamo breaks the graph there), so a compiled decoding step
    runs this instead, and so does an eager one on CPU (faster than the fused kernel's call for one token,
    `forward_rnn`); it equals the fused kernel to float rounding."""
    weights = weights or {}
    h0, c0 = split_state(state) if state is not None else (None, None)
    lstm = isinstance(rnn, nn.LSTM)
    inputs = x[:, 0]  # (B, D)
    hiddens, cells = [], []
    for layer in range(rnn.num_layers):
        w_ih = weights.get(f"weight_ih_l{layer}", getattr(rnn, f"weight_ih_l{layer}"))
        w_hh = weights.get(f"weight_hh_l{layer}", getattr(rnn, f"weight_hh_l{layer}"))
        b_ih, b_hh = getattr(rnn, f"bias_ih_l{layer}", None), getattr(rnn, f"bias_hh_l{layer}", None)
        h = h0[layer] if h0 is not None else inputs.new_zeros(inputs.shape[0], rnn.hidden_size)  # (B, H)
        gates_x, gates_h = nn.functional.linear(inputs, w_ih, b_ih), nn.functional.linear(h, w_hh, b_hh)  # (B, k * H)
        if lstm:
            c = c0[layer] if c0 is not None else torch.zeros_like(h)
            i, f, g, o = (gates_x + gates_h).chunk(4, dim=-1)
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            h = torch.sigmoid(o) * torch.tanh(c)
            cells.append(c)
        else:
            r_x, z_x, n_x = gates_x.chunk(3, dim=-1)
            r_h, z_h, n_h = gates_h.chunk(3, dim=-1)
            r, z = torch.sigmoid(r_x + r_h), torch.sigmoid(z_x + z_h)
            h = (1 - z) * torch.tanh(n_x + r * n_h) + z * h
        hiddens.append(h)
        inputs = h
    hidden = torch.stack(hiddens)  # (L, B, H)
    return h.unsqueeze(1), ((hidden, torch.stack(cells)) if lstm else hidden)


def forward_rnn(rnn: nn.RNNBase, x: torch.Tensor | PackedSequence, state: RNNState | None,
                weights: dict[str, torch.Tensor] | None):
    """`rnn(x, state)`, with `weights` (adapted matrices, by parameter name) in place of its own where given.

    One token of a decoding step goes through `step_rnn` under torch.compile (dynamo cannot trace the fused call),
    and on CPU without autograd: there its two products per layer beat the fused kernel's call for one token 2x
    (eager batch-1 decoding of the 6-layer LSTM LM of the base shape: 372 vs 183 tokens/s, `bench_layout.py`,
    2026-12-07; not measured on a GPU, where the fused call is one cuDNN kernel). The fused kernel runs whole
    sequences and every step that trains."""
    single = (not isinstance(x, PackedSequence) and x.shape[1] == 1 and rnn.batch_first and not rnn.bidirectional
              and not (rnn.training and rnn.dropout))
    if torch.compiler.is_compiling():
        return step_rnn(rnn, x, state, weights) if single else opaque_rnn(rnn, x, state, weights)
    if single and not torch.is_grad_enabled() and x.device.type == "cpu":
        return step_rnn(rnn, x, state, weights)
    return fused_rnn(rnn, x, state, weights)


def fused_rnn(rnn: nn.RNNBase, x: torch.Tensor | PackedSequence, state: RNNState | None,
              weights: dict[str, torch.Tensor] | None):
    """The fused kernel over a whole sequence; `opaque_rnn`, the same left out of any compiled graph (a graph
    break): with `allow_rnn` (set for `step_rnn`) dynamo would trace
    `nn.LSTM` and inductor unroll it step by step: 40 minutes of compiling and half the eager speed for one
    training step of sequence 256 (benchmarks/run.py, 2026-12-02)."""
    if not weights:
        return rnn(x, state)
    return torch.func.functional_call(rnn, weights, (x, state))


opaque_rnn = torch.compiler.disable(fused_rnn)


def call_rnn(rnn: nn.RNNBase, x: torch.Tensor | PackedSequence, state: RNNState | None,
             weights: dict[str, torch.Tensor] | None = None):
    """`rnn(x, state)` (with adapted `weights`, `HfLlmGateProjections.adapted_weights`); under CPU autocast in
    float32: oneDNN's bfloat16 LSTM/GRU needs a CPU with AVX512-BF16 or AMX and fails elsewhere ("could not
    create a primitive descriptor"), and the recurrence is a small share of the FLOPs."""
    if not (torch.is_autocast_enabled("cpu") and (x.data if isinstance(x, PackedSequence) else x).device.type == "cpu"):
        return forward_rnn(rnn, x, state, weights)
    with torch.autocast("cpu", enabled=False):
        x = x._replace(data=x.data.float()) if isinstance(x, PackedSequence) else x.float()
        if state is not None:
            state = tuple(part.float() for part in state) if isinstance(state, tuple) else state.float()
        weights = {name: w.float() for name, w in weights.items()} if weights else None
        return forward_rnn(rnn, x, state, weights)


def needs_packing(mask: torch.Tensor | None) -> bool:
    """Whether padding must be packed away: a single token never is (a padding step holds the state instead, by
    `torch.where`: no device sync, no graph break in a compiled decoding step)."""
    return mask is not None and mask.shape[1] > 1 and not bool(mask.all())


def hold_padding(mask: torch.Tensor | None, new: RNNState, old: RNNState | None) -> RNNState:
    """After one token, per row the new state, or the old one (zeros before the first) where the token is padding."""
    if mask is None or mask.shape[1] != 1:
        return new
    if old is None:
        old = tuple(torch.zeros_like(n) for n in new) if isinstance(new, tuple) else torch.zeros_like(new)
    return keep_where(mask[:, 0].bool(), new, old)


def run_rnn(rnn: nn.RNNBase, x: torch.Tensor, mask: torch.Tensor | None, state: RNNState | None,
            weights: dict[str, torch.Tensor] | None = None):
    """Run a fused RNN over `x (B, T, D)` from `state`, skipping padding wherever it is (left or right)."""
    if not needs_packing(mask):
        out, final = call_rnn(rnn, x, state, weights)
        return out, hold_padding(mask, final, state)
    padding = PackedPadding(mask)
    packed_out, final = call_rnn(rnn, padding.pack(x), state, weights)
    return padding.unpack(packed_out), final


def split_state(state: RNNState) -> tuple[torch.Tensor, torch.Tensor | None]:
    return state if isinstance(state, tuple) else (state, None)


def keep_where(keep: torch.Tensor, new: RNNState, old: RNNState) -> RNNState:
    """Per row (`keep (B,)`), the new state or the old one."""
    if isinstance(new, tuple):
        return tuple(torch.where(keep[None, :, None], n, o) for n, o in zip(new, old))
    return torch.where(keep[None, :, None], new, old)


def forward_fill(outputs: torch.Tensor, mask: torch.Tensor | None, initial: torch.Tensor) -> torch.Tensor:
    """Each position's state `(B, T, H)`: its output, or at a padding position the last real one's (`initial (B, H)`
    before the first), as a recurrence that skips padding holds its state."""
    if mask is None:
        return outputs
    positions = torch.arange(mask.shape[1], device=mask.device).expand_as(mask)
    last_real = torch.where(mask.bool(), positions, -1).cummax(dim=1).values  # (B, T)
    filled = outputs.gather(1, last_real.clamp(min=0).unsqueeze(-1).expand_as(outputs))
    return torch.where((last_real >= 0).unsqueeze(-1), filled, initial.unsqueeze(1))


def lstm_cells(lstm: nn.LSTM, inputs: torch.Tensor, hidden: torch.Tensor, h0: torch.Tensor, c0: torch.Tensor,
               mask: torch.Tensor | None, weights: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
    """The cell state after every token `(B, T, H)` of a one-layer LSTM whose inputs `(B, T, D)` and hidden states
    `(B, T, H)` (from the fused kernel, which returns only the last cell) are known: the gates of all steps at once,
    then the linear recurrence c_t = f_t * c_{t-1} + i_t * g_t solved by a parallel prefix scan in log2(T) steps
    (Hillis & Steele 1986; products of forget gates in (0, 1) only shrink, so the scan is stable). `weights`: the
    adapted matrices the kernel ran with (`HfLlmGateProjections.adapted_weights`)."""
    weights = weights or {}
    weight_ih, weight_hh = weights.get("weight_ih_l0", lstm.weight_ih_l0), weights.get("weight_hh_l0", lstm.weight_hh_l0)
    previous = torch.cat([h0.unsqueeze(1), hidden[:, :-1]], dim=1)  # (B, T, H): h_{t-1}
    gates = nn.functional.linear(inputs, weight_ih, lstm.bias_ih_l0) + \
        nn.functional.linear(previous, weight_hh, lstm.bias_hh_l0)  # (B, T, 4H): input, forget, cell, output
    i, f, g, _ = gates.chunk(4, dim=-1)
    a, b = torch.sigmoid(f), torch.sigmoid(i) * torch.tanh(g)
    if mask is not None:  # a padding step holds the cell: c_t = c_{t-1}
        real = mask.bool().unsqueeze(-1)
        a, b = torch.where(real, a, torch.ones_like(a)), torch.where(real, b, torch.zeros_like(b))
    b = torch.cat([b[:, :1] + a[:, :1] * c0.unsqueeze(1), b[:, 1:]], dim=1)
    step = 1
    while step < b.shape[1]:  # after the pass with offset k every c_t sums the last 2k terms
        b = torch.cat([b[:, :step], b[:, step:] + a[:, step:] * b[:, :-step]], dim=1)
        a = torch.cat([a[:, :step], a[:, step:] * a[:, :-step]], dim=1)
        step *= 2
    return b


class HfLlmRNNLayer(GradientCheckpointingLayer):
    """One (bidirectional) LSTM/GRU layer, on a padded batch or a packed sequence: the unit that gradient
    checkpointing recomputes (so the backward pass holds one layer's activations at a time)."""

    def __init__(self, cell: str, input_size: int, hidden_size: int, bidirectional: bool):
        super().__init__()
        rnn_class = nn.LSTM if cell == "lstm" else nn.GRU
        self.rnn = rnn_class(input_size, hidden_size, 1, batch_first=True, bidirectional=bidirectional)
        self.gates = HfLlmGateProjections(self.rnn)  # the weights as nn.Linear views, for peft (no parameters)

    def forward(self, data, batch_sizes=None, sorted_indices=None, unsorted_indices=None, h0=None, c0=None):
        """`data` is a padded batch `(B, T, D)` or the data of a packed sequence whose other fields follow. Every
        tensor comes positionally (and goes out flat), so that reentrant gradient checkpointing sees it."""
        packed = batch_sizes is not None
        x = PackedSequence(data, batch_sizes, sorted_indices, unsorted_indices) if packed else data
        state = None if h0 is None else (h0 if c0 is None else (h0, c0))
        out, final = call_rnn(self.rnn, x, state, self.gates.adapted_weights())
        return (out.data if packed else out), *split_state(final)  # outputs, h_n, c_n (None for a GRU)


class HfLlmRecurrence(nn.Module):
    """A multi-layer (bidirectional) LSTM/GRU over a padded batch: layer by layer (as the fused multi-layer
    kernel runs internally), packed once when there is padding, dropout between layers.

    With `residual`, every layer above the first adds its input to its outputs, x_{l+1} = RNN_l(drop(x_l)) + x_l
    (Wu et al. 2016, GNMT, section 3.1): a deep stack then trains like a shallow one (docs/ARCHITECTURE.md,
    "Recurrent family", for the measurement). The layers' own states (what a cache holds) are unchanged."""

    def __init__(self, cell: str, input_size: int, hidden_size: int, num_layers: int, dropout: float,
                 bidirectional: bool = False, residual: bool = False):
        super().__init__()
        directions = 2 if bidirectional else 1
        self.directions = directions
        self.dropout = dropout
        self.residual = residual
        self.layers = nn.ModuleList(
            [HfLlmRNNLayer(cell, input_size if i == 0 else directions * hidden_size, hidden_size, bidirectional)
             for i in range(num_layers)]
        )

    def layer_state(self, state: RNNState | None, i: int) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        if state is None:
            return None, None
        rows = slice(i * self.directions, (i + 1) * self.directions)
        h, c = split_state(state)
        return h[rows], (c[rows] if c is not None else None)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None, state: RNNState | None = None,
                output_hidden_states: bool = False, output_states: bool = False):
        """`x (B, T, D)` -> outputs `(B, T, dirs * H)`, the final state `(L * dirs, B, H)` [LSTM: (h, c)], with
        `output_hidden_states` every layer's outputs `[(B, T, dirs * H)] * L` (else None), and with `output_states`
        (unidirectional stacks; what a cache records) each layer's state after every token: hidden `(L, B, T, H)`
        and LSTM cell (or None), padding positions holding the previous state."""
        padding = PackedPadding(mask) if needs_packing(mask) else None
        h = padding.pack(x) if padding is not None else x
        finals, per_layer = [], [] if output_hidden_states or output_states else None
        hiddens, cells = [], []
        own = [] if output_states else None  # each layer's own outputs (its hidden states), residual or not
        for i, layer in enumerate(self.layers):
            skip = (h.data if padding is not None else h) if self.residual and i > 0 else None
            if i > 0 and self.dropout and self.training:
                h = h._replace(data=nn.functional.dropout(h.data, self.dropout)) if padding is not None else \
                    nn.functional.dropout(h, self.dropout)
            h0, c0 = self.layer_state(state, i)
            if padding is not None:
                data, h_n, c_n = layer(h.data, h.batch_sizes, h.sorted_indices, h.unsorted_indices, h0, c0)
                if own is not None:
                    own.append(padding.unpack(h._replace(data=data)))
                h = h._replace(data=data if skip is None else data + skip)
            else:
                h, h_n, c_n = layer(h, None, None, None, h0, c0)
                if own is not None:
                    own.append(h)
                h = h if skip is None else h + skip
            if padding is None and mask is not None and mask.shape[1] == 1:  # one token: padding holds the state
                h_n, c_n = split_state(hold_padding(mask, h_n if c_n is None else (h_n, c_n),
                                                    None if h0 is None else (h0 if c0 is None else (h0, c0))))
            elif padding is not None and not bool(mask.any(-1).all()):
                # A row of padding only (packed as one token) holds its state.
                real = mask.any(-1)[None, :, None]
                h_n = torch.where(real, h_n, torch.zeros_like(h_n) if h0 is None else h0)
                c_n = None if c_n is None else torch.where(real, c_n, torch.zeros_like(c_n) if c0 is None else c0)
            finals.append(h_n if c_n is None else (h_n, c_n))
            if per_layer is not None:
                per_layer.append(padding.unpack(h) if padding is not None else h)
            if output_states and x.shape[1] == 1:  # one token (a decoding step): the final state is all there is
                hiddens.append(h_n[0].unsqueeze(1))
                if c_n is not None:
                    cells.append(c_n[0].unsqueeze(1))
            elif output_states:
                layer_inputs = x if i == 0 else per_layer[i - 1]
                zeros = layer_inputs.new_zeros(x.shape[0], h_n.shape[-1])
                hidden = forward_fill(own[i], mask, zeros if h0 is None else h0[0])
                hidden = torch.cat([hidden[:, :-1], h_n[0].unsqueeze(1)], dim=1)  # the kernel's own final state
                hiddens.append(hidden)
                if c_n is not None:
                    c_start = zeros if c0 is None else c0[0]
                    cell = lstm_cells(layer.rnn, layer_inputs, hidden, zeros if h0 is None else h0[0], c_start, mask,
                                      layer.gates.adapted_weights())
                    cells.append(torch.cat([cell[:, :-1], c_n[0].unsqueeze(1)], dim=1))
        if isinstance(finals[0], tuple):
            final = tuple(torch.cat(parts, dim=0) for parts in zip(*finals))
        else:
            final = torch.cat(finals, dim=0)
        states = (torch.stack(hiddens), torch.stack(cells) if cells else None) if output_states else None
        outputs = per_layer[-1] if per_layer is not None else (padding.unpack(h) if padding is not None else h)
        return outputs, final, per_layer if output_hidden_states else None, states


class HfLlmAttentionRecurrence(GradientCheckpointingLayer):
    """An RNN decoder's recurrence with its attention over the encoder (keys/values prepared outside).

    - Luong without input feeding: the fused RNN over all steps, then attention for all steps at once (with
      coverage in the scorer, the scores for all steps at once and a loop of `(B, S)` updates for the coverage).
    - Luong with input feeding, Bahdanau: one fused multi-layer RNN step per target position.
    """

    def __init__(self, config, num_layers: int):
        super().__init__()
        hidden = config.hidden_size
        self.attention = config.rnn_attention
        self.stepped = config.rnn_input_feeding or self.attention == "bahdanau"
        rnn_class = nn.LSTM if config.rnn_cell == "lstm" else nn.GRU
        # Bahdanau feeds the context into the RNN; Luong input feeding feeds the previous attentional vector.
        input_size = 2 * hidden if self.stepped else hidden
        self.rnn = rnn_class(input_size, hidden, num_layers, batch_first=True,
                             dropout=config.dropout if num_layers > 1 else 0.0)
        self.gates = HfLlmGateProjections(self.rnn)  # the weights as nn.Linear views, for peft (no parameters)
        if self.attention == "bahdanau":
            self.query_proj = nn.Linear(hidden, hidden, bias=False)  # W_a s_{t-1}
            self.score_proj = nn.Linear(hidden, 1, bias=False)  # v_a
        self.combine = nn.Linear(2 * hidden, hidden, bias=False)  # tanh(W_c [context; state])
        # See et al.'s w_c: the coverage joins the keys (Bahdanau) or gates the bilinear score (Luong).
        self.coverage_gate = HfLlmCoverageGate(hidden) if config.coverage_attention else None

    def luong_attend(self, states: torch.Tensor, keys, values, source_mask, mask=None, coverage=None):
        """Global attention for states `(B, T, H)` at once: tanh(W_c [context; h_t]), the weights `(B, T, S)`, and
        with coverage (`coverage (B, S)` before the first step) the coverage after each step `(B, T, S)`."""
        scores = torch.bmm(states, keys.transpose(1, 2))  # (B, T, S)
        coverages = None
        if coverage is None:
            probs = masked_softmax(scores, source_mask)  # (B, T, S)
        else:
            probs, coverages = covered_attention(scores, self.coverage_gate(states).squeeze(-1), source_mask, mask,
                                                 coverage)
        context = torch.bmm(probs, values)  # (B, T, H)
        return torch.tanh(self.combine(torch.cat([context, states], dim=-1))), probs, coverages

    def step(self, x, state, feed, coverage, keys, values, source_mask, weights=None):
        """One target token `x (B, H)` -> attentional vector `(B, H)`, new state, attention weights `(B, S)` and the
        coverage after it (or None); `weights`: the adapted recurrent matrices, read once per forward
        (`HfLlmGateProjections.adapted_weights`)."""
        if self.attention == "bahdanau":
            top = split_state(state)[0][-1]  # (B, H) previous top-layer state
            scored = keys if coverage is None else self.coverage_gate.keys(keys, coverage)  # (B, S, H)
            energy = self.score_proj(torch.tanh(scored + self.query_proj(top).unsqueeze(1))).squeeze(-1)  # (B, S)
            probs = masked_softmax(energy, source_mask)
            context = torch.bmm(probs.unsqueeze(1), values).squeeze(1)  # (B, H)
            out, state = call_rnn(self.rnn, torch.cat([x, context], dim=-1).unsqueeze(1), state, weights)
            attentional = torch.tanh(self.combine(torch.cat([context, out.squeeze(1)], dim=-1)))
            return attentional, state, probs, None if coverage is None else coverage + probs
        rnn_input = torch.cat([x, feed], dim=-1) if self.stepped else x
        out, state = call_rnn(self.rnn, rnn_input.unsqueeze(1), state, weights)
        attentional, probs, coverages = self.luong_attend(out, keys, values, source_mask, None, coverage)
        return attentional.squeeze(1), state, probs.squeeze(1), None if coverages is None else coverages[:, 0]

    def forward(self, x, mask, h0, c0, feed, coverage, keys, values, source_mask, stepwise: bool = False):
        """`x (B, T, H)` from the state `h0` [, `c0` (LSTM)] `(L, B, H)`, `feed (B, H)` the previous attentional vector
        (Luong input feeding; for Bahdanau it only carries the output over padding steps), `coverage (B, S)` the
        coverage so far (with `coverage_attention`, else None) -> `(B, T, H)`, final state, last attentional vector,
        attention weights `(B, T, S)`, and with `stepwise` the states after every token (`run_steps`). Every tensor
        comes positionally, so that reentrant gradient checkpointing sees it."""
        state = h0 if c0 is None else (h0, c0)
        weights = self.gates.adapted_weights()
        if not self.stepped and not stepwise:
            states, state = run_rnn(self.rnn, x, mask, state, weights)
            outputs, probs, _ = self.luong_attend(states, keys, values, source_mask, mask, coverage)
            return outputs, state, feed, probs, None
        steps = run_steps(lambda x_t, s, f, c: self.step(x_t, s, f, c, keys, values, source_mask, weights), x, mask,
                          state, feed, coverage)
        return steps.outputs, steps.state, steps.feed, steps.probs, steps


class Steps:
    """What `run_steps` records: outputs `(B, T, H)`, the final state and feed, and after every token each layer's
    hidden state `(L, B, T, H)`, its LSTM cell (or None), the fed vector `(B, T, H)`, attention weights `(B, T, S)`
    and the coverage `(B, T, S)` (or None)."""

    def __init__(self, outputs, state, feed, hidden, cell, feeds, probs, coverages=None):
        self.outputs, self.state, self.feed = outputs, state, feed
        self.hidden, self.cell, self.feeds, self.probs, self.coverages = hidden, cell, feeds, probs, coverages


def run_steps(step, x: torch.Tensor, mask: torch.Tensor | None, state: RNNState, feed: torch.Tensor | None,
              coverage: torch.Tensor | None = None) -> Steps:
    """Run `step(x_t, state, feed, coverage) -> (output, state, attention, coverage)` token by token, a padding token
    keeping the previous state and coverage (its output is the previous feed, or zeros without one), recording the
    states after every token."""
    outputs, hiddens, cells, feeds, probs, coverages = [], [], [], [], [], []
    for t in range(x.shape[1]):
        out, new_state, attention, new_coverage = step(x[:, t], state, feed, coverage)
        if mask is not None:  # a padding step keeps the previous state
            keep = mask[:, t].bool()
            new_state = keep_where(keep, new_state, state)
            out = torch.where(keep[:, None], out, feed if feed is not None else torch.zeros_like(out))
            if coverage is not None:
                new_coverage = torch.where(keep[:, None], new_coverage, coverage)
        state, coverage = new_state, new_coverage
        feed = out if feed is not None else None
        h, c = split_state(state)
        outputs.append(out)
        hiddens.append(h)
        cells.append(c)
        feeds.append(feed)
        probs.append(attention)
        coverages.append(coverage)
    return Steps(
        outputs=torch.stack(outputs, dim=1),
        state=state,
        feed=feed,
        hidden=torch.stack(hiddens, dim=2),  # (L, B, T, H)
        cell=torch.stack(cells, dim=2) if cells[0] is not None else None,
        feeds=torch.stack(feeds, dim=1) if feeds[0] is not None else None,
        probs=torch.stack(probs, dim=1),
        coverages=torch.stack(coverages, dim=1) if coverages[0] is not None else None,
    )


class HfLlmRNNEncoder(nn.Module):
    """Embeddings -> multi-layer (bidirectional) LSTM/GRU over packed sequences: `(B, S) -> (B, S, H)`.

    A bidirectional encoder gives each direction `H / 2` units, so that every layer's states are `H` wide like
    every other hidden state of the model (OpenNMT-py's "brnn"). `final_state` is the last layer-wise hidden
    state `(B, L, H)` (directions concatenated), from which an RNN decoder may start.
    """

    def __init__(self, config, num_layers: int):
        super().__init__()
        self.config = config
        self.num_layers = num_layers
        self.num_directions = 2 if config.rnn_bidirectional_encoder else 1
        self.output_size = config.hidden_size
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size, config.pad_token_id)
        self.embed_norm = nn.LayerNorm(config.hidden_size, eps=config.norm_eps, bias=False)
        self.dropout = nn.Dropout(config.dropout)
        self.recurrence = HfLlmRecurrence(
            config.rnn_cell, config.hidden_size, config.hidden_size // self.num_directions, num_layers, config.dropout,
            bidirectional=config.rnn_bidirectional_encoder, residual=config.rnn_residual,
        )

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        output_hidden_states: bool = False,
        **kwargs,
    ) -> HfLlmEncoderOutput:
        x = self.dropout(self.embed_norm(embed(input_ids, inputs_embeds, self.embed_tokens)))  # (B, S, H)
        outputs, final, per_layer, _ = self.recurrence(x, attention_mask, output_hidden_states=output_hidden_states)
        hidden = split_state(final)[0]  # (L * dirs, B, H / dirs)
        batch = hidden.shape[1]
        hidden = hidden.view(self.num_layers, self.num_directions, batch, -1).permute(2, 0, 1, 3)
        final_state = hidden.reshape(batch, self.num_layers, self.output_size)  # (B, L, H)
        outputs = self.dropout(outputs)  # (B, S, H)
        all_hidden = None
        if per_layer is not None:
            all_hidden = (x, *per_layer[:-1], outputs)  # embeddings, then each layer's states (the last as returned)
        return HfLlmEncoderOutput(
            last_hidden_state=outputs, final_state=final_state, hidden_states=all_hidden,
            source_ids=input_ids if self.config.copy_attention else None,
        )


class HfLlmRNNDecoder(nn.Module):
    """Multi-layer LSTM/GRU decoder: a recurrent LM, or, with `encoder_hidden_size`, an attention decoder.

    `(input_ids | inputs_embeds, attention_mask, encoder outputs, cache) -> (B, T, H)`. LayerNorms on the
    embeddings and on the outputs (the LM head is tied to the small-init embeddings): without them a
    2-layer LSTM LM did not get below the unigram loss in 200 steps (docs/ARCHITECTURE.md).
    """

    def __init__(self, config, num_layers: int, encoder_hidden_size: int | None = None):
        super().__init__()
        # torch.compile's dynamo refuses to look at an nn.LSTM / nn.GRU at all (even to read its weights for
        # `step_rnn`) unless this flag is set; it changes nothing for code that is not compiled.
        torch._dynamo.config.allow_rnn = True
        hidden = config.hidden_size
        self.config = config
        self.cell = config.rnn_cell
        self.num_layers = num_layers
        self.output_size = hidden
        self.state_parts = 2 if self.cell == "lstm" else 1
        self.attention = config.rnn_attention if encoder_hidden_size is not None else "none"

        self.embed_tokens = nn.Embedding(config.vocab_size, hidden, config.pad_token_id)
        self.embed_norm = nn.LayerNorm(hidden, eps=config.norm_eps, bias=False)
        self.dropout = nn.Dropout(config.dropout)
        self.norm = nn.LayerNorm(hidden, eps=config.norm_eps, bias=False)
        if self.attention == "none":
            self.recurrence = HfLlmRecurrence(self.cell, hidden, hidden, num_layers, config.dropout,
                                              residual=config.rnn_residual)
        else:
            self.recurrence = HfLlmAttentionRecurrence(config, num_layers)
            # Attention values live in the decoder's width; a projection bridges a wider/narrower encoder.
            self.value_proj = nn.Linear(encoder_hidden_size, hidden, bias=False) if encoder_hidden_size != hidden else None
            if self.attention != "luong_dot":
                self.key_proj = nn.Linear(hidden, hidden, bias=False)  # Luong W_a h_s, Bahdanau U_a h_s
        self.bridge = None
        if encoder_hidden_size is not None and config.rnn_init_state == "encoder":
            # Encoder final state (any width, layer count or direction count) -> initial h [and c].
            self.bridge = nn.Linear(encoder_hidden_size, self.state_parts * hidden)

    def initial_state(
        self, batch: int, reference: torch.Tensor, encoder_outputs: HfLlmEncoderOutput | None,
        encoder_attention_mask: torch.Tensor | None,
    ) -> RNNState:
        hidden = self.output_size
        if self.bridge is None or encoder_outputs is None:
            zeros = reference.new_zeros(self.num_layers, batch, hidden)
            return (zeros, zeros.clone()) if self.cell == "lstm" else zeros
        encoder_final_state = encoder_outputs.final_state
        if encoder_final_state is None:
            # Encoders without a recurrent state (Transformer, CNN): start from the mean of the source states.
            states = encoder_outputs.last_hidden_state  # (B, S, E)
            weights = (
                encoder_attention_mask.to(states.dtype).unsqueeze(-1)
                if encoder_attention_mask is not None
                else torch.ones_like(states[..., :1])
            )
            pooled = (states * weights).sum(1) / weights.sum(1).clamp(min=1.0)  # (B, E)
            encoder_final_state = pooled.unsqueeze(1)  # (B, 1, E)
        if encoder_final_state.shape[1] != self.num_layers:
            # Different layer counts: every decoder layer starts from the encoder's top layer.
            encoder_final_state = encoder_final_state[:, -1:].expand(-1, self.num_layers, -1)
        bridged = torch.tanh(self.bridge(encoder_final_state))  # (B, L, k * H)
        parts = bridged.view(batch, self.num_layers, self.state_parts, hidden).permute(2, 1, 0, 3)  # (k, L, B, H)
        return (parts[0].contiguous(), parts[1].contiguous()) if self.cell == "lstm" else parts[0].contiguous()

    def feeds(self) -> bool:
        """Whether the top layer's cache also keeps the fed attentional vector (Luong input feeding, Bahdanau)."""
        return self.attention != "none" and self.recurrence.stepped

    def static_state(self, cache: Cache, initial: RNNState) -> tuple[RNNState, torch.Tensor | None]:
        """The state after the last cached token and the fed vector, from a static cache: each layer keeps its state
        after every token in its cache slot (keys: h; values: the LSTM cell, or h again for a GRU; the top layer of a
        feeding decoder the fed vector as `feeds`), read at slot `position - 1` by index (no device sync, no graph
        break); before the first token, `initial` and zeros."""
        position = static_position(cache.layers[0])
        if not cache.layers[0].is_initialized:
            return initial, None
        slot = (position - 1).clamp(min=0).view(1)
        read = [(layer.keys[:, 0].index_select(1, slot)[:, 0], layer.values[:, 0].index_select(1, slot)[:, 0])
                for layer in cache.layers]  # (B, H), (B, V) per layer
        h = torch.stack([k for k, _ in read])  # (L, B, H)
        state = (h, torch.stack([v for _, v in read])) if self.cell == "lstm" else h
        feed = cache.layers[-1].feeds[:, 0].index_select(1, slot)[:, 0] if self.feeds() else None
        started = position > 0  # a cache emptied by crop / reset starts again from `initial`
        state = keep_where(started.view(1).expand(h.shape[1]), state, initial)
        if feed is not None:
            feed = torch.where(started, feed, torch.zeros_like(feed))
        return state, feed

    def cached_state(self, cache: Cache) -> tuple[RNNState, torch.Tensor | None] | None:
        """The state after the last cached token, and the input-feed vector (or None), from the cache layers."""
        states = [layer.last_states() for layer in cache.layers]
        if states[0] is None:
            return None
        h = torch.stack([s[0] for s in states])  # (L, B, H)
        state = (h, torch.stack([s[1] for s in states])) if self.cell == "lstm" else h
        return state, states[-1][2]

    def attention_memory(self, encoder_hidden_states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values `(B, S, H)` for attention (once per source; `source_memory` caches them)."""
        values = encoder_hidden_states if self.value_proj is None else self.value_proj(encoder_hidden_states)
        keys = values if self.attention == "luong_dot" else self.key_proj(values)
        return keys, values

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        encoder_outputs: HfLlmEncoderOutput | None = None,
        encoder_attention_mask: torch.Tensor | None = None,
        cache: Cache | None = None,
        use_cache: bool = False,
        output_attentions: bool = False,
        output_hidden_states: bool = False,
        **kwargs,
    ) -> HfLlmDecoderOutput:
        """A recurrence knows where it is: `position_ids` only mark packed documents (a position that does not
        follow the previous one starts a new document, from a fresh state). Attention keys and values are
        projected from `encoder_outputs.last_hidden_state`, whatever the encoder's family."""
        inputs_embeds = embed(input_ids, inputs_embeds, self.embed_tokens)  # (B, T, H)
        batch, length, _ = inputs_embeds.shape
        # Packed documents (position ids restarting inside a row) each start from a fresh state; no cache then.
        starts = document_starts(position_ids, attention_mask) if cache is None and self.attention == "none" else None
        cache, self_cache = decoder_cache(
            cache, use_cache and starts is None, encoder_outputs is not None, self.num_layers, HfLlmRecurrentCacheLayer,
            HfLlmStaticFeedLayer if self.feeds() else StaticLayer,
        )
        static = self_cache is not None and is_static(self_cache.layers[0])
        # The mask covers past + new tokens (2-D), or is generate's 4-D mask for a static cache: the new tokens' part.
        mask = new_token_mask(attention_mask, length, static_position(self_cache.layers[0]) if static else 0)

        if static:
            state, feed = self.static_state(
                self_cache, self.initial_state(batch, inputs_embeds, encoder_outputs, encoder_attention_mask))
        else:
            cached = self.cached_state(self_cache) if self_cache is not None else None
            state, feed = cached if cached is not None else (
                self.initial_state(batch, inputs_embeds, encoder_outputs, encoder_attention_mask), None)
        x = self.dropout(self.embed_norm(inputs_embeds))

        steps = probs = per_layer = None
        if starts is not None:
            # Packed documents: one row per document, each from the initial (zero) state.
            documents = DocumentSplit(starts)
            outputs, _, _, _ = self.recurrence(documents.split(x), documents.mask)
            hidden_states = documents.merge(outputs)
        elif self.attention == "none":
            # Fused over the whole sequence; a cached forward also gets every layer's state after every token.
            hidden_states, state, per_layer, recorded = self.recurrence(
                x, mask, state, output_hidden_states, output_states=self_cache is not None
            )
            if recorded is not None:
                steps = Steps(hidden_states, state, None, recorded[0], recorded[1], None, None)
        else:
            keys, values = source_memory(cache, lambda: self.attention_memory(encoder_outputs.last_hidden_state))
            if self.recurrence.stepped and feed is None:
                feed = inputs_embeds.new_zeros(batch, self.output_size)
            coverage = None
            if self.config.coverage_attention:  # the coverage so far (B, S): from the cache, or none yet
                if static:
                    raise ValueError(STATIC_COVERAGE_ERROR)
                coverage = self_cache.layers[-1].last_coverage() if self_cache is not None else None
                coverage = coverage if coverage is not None else keys.new_zeros(keys.shape[:2])
            stepwise = self_cache is not None or output_hidden_states
            hidden_states, state, feed, probs, steps = self.recurrence(
                x, mask, *split_state(state), feed, coverage, keys, values, encoder_attention_mask, stepwise
            )

        if self_cache is not None:
            for i, layer in enumerate(self_cache.layers):
                feeds = steps.feeds if i == self.num_layers - 1 else None
                cell = steps.cell[i] if steps.cell is not None else None
                if static:
                    if feeds is not None:
                        layer.update_feeds(feeds.unsqueeze(1))  # before `update`, which moves the position on
                    layer.update(steps.hidden[i].unsqueeze(1), (steps.hidden[i] if cell is None else cell).unsqueeze(1))
                else:
                    layer.update_states(steps.hidden[i], cell, feeds)
            if steps.coverages is not None:
                self_cache.layers[-1].update_coverage(steps.coverages)
        last_hidden_state = self.norm(self.dropout(hidden_states))
        all_hidden = None
        if output_hidden_states:
            lower = per_layer[:-1] if per_layer is not None else list(steps.hidden[:-1]) if steps is not None else []
            all_hidden = (x, *lower, last_hidden_state)
        return HfLlmDecoderOutput(
            last_hidden_state=last_hidden_state,
            cache=cache,
            hidden_states=all_hidden,
            cross_attentions=(probs.unsqueeze(1),) if output_attentions and probs is not None else None,
            source_attention=probs if self.config.uses_source_attention else None,  # (B, T, S)
        )
