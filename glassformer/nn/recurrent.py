"""The recurrent encoder–decoder the Transformer replaced: its parts, in the words of its papers.

    Bahdanau, Cho & Bengio 2014, "Neural Machine Translation by Jointly Learning to Align and Translate";
    Luong, Pham & Manning 2015, "Effective Approaches to Attention-based Neural Machine Translation".

    source ─► RecurrentEncoder (bidirectional LSTM/GRU) ─► annotations h̄_s (one per source token)
                                                        └► final states ─► the decoder's initial state
    target ─► RecurrentDecoder: h_t = RNN([y_{t-1}; h̃_{t-1}], h_{t-1})     (input feeding, Luong §3.3)
                                a_t = align(h_t, h̄_s),  c_t = Σ_s a_t(s) h̄_s  (attention over the annotations)
                                h̃_t = tanh(W_c [c_t; h_t])                    (the attentional vector, Luong eq. 5)

* :class:`RecurrentEncoder` — ``torch.nn.LSTM`` / ``torch.nn.GRU`` (cuDNN on a GPU), bidirectional,
  each direction ``hidden_size / 2`` wide so that an annotation [→h_s; ←h_s] is ``hidden_size`` wide.
  The batch goes through as a packed sequence: padding is never read, so a padded source has the same
  annotations and final states as the sentence alone (and the backward direction starts at its last real token).
* :class:`AdditiveAttention` — Bahdanau's score, vᵀ tanh(W_q q + W_k k) (Luong's "concat");
  :class:`MultiplicativeAttention` — Luong's "general" score, qᵀ W k: dot-product attention with scale 1
  over the keys W k, through the one attention core (``attention.scaled_dot_product_attention``, its fused
  path unless the weights are wanted).  Both take the project's masks (boolean, True = may attend),
  give 0 to padding and a row of zeros, not NaN, to a query with nothing to attend to, and compute the
  keys' projection once per source (:meth:`EncoderAttention.project_memory`).
* :class:`RecurrentDecoder` — the decoder above: one architecture (Luong's) with either score, as Luong
  et al. compare them and as OpenNMT builds them; without attention it is Sutskever et al.'s (2014)
  decoder, h̃_t = h_t, which sees the source only through the initial state.
* :class:`RecurrentCache` — the decoding state of a step: the recurrent state and the last
  attentional vector, behind the interface of the Transformer's ``KVCache`` (``position``, ``length``,
  ``check_room``, ``advance``, ``reorder``, ``select_memory``, ``cleared``), so that greedy decoding,
  sampling, beam search and MBR run it unchanged.

Shapes: ``(batch, seq, size)``; a recurrent state is a tuple of ``(layers, batch, hidden_size)`` tensors,
``(h,)`` for a GRU and ``(h, c)`` for an LSTM.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from ..errors import InputError
from .attention import AttentionOutput, masked_softmax, scaled_dot_product_attention
from .masks import AttentionMask, prepare_mask

CELLS = {"lstm": nn.LSTM, "gru": nn.GRU}
State = tuple[Tensor, ...]          # (h,) for a GRU, (h, c) for an LSTM: each (layers, batch, hidden_size)


def _to_rnn(state: State) -> Tensor | tuple[Tensor, Tensor]:
    return state if len(state) == 2 else state[0]


def _from_rnn(state: Tensor | tuple[Tensor, Tensor]) -> State:
    return tuple(state) if isinstance(state, tuple) else (state,)


# -- the encoder ---------------------------------------------------------------------------------
class EncoderStates(NamedTuple):
    annotations: Tensor      # (batch, src_len, hidden_size): [→h_s; ←h_s], zeros at padding
    final: State             # per layer (layers, batch, hidden_size): [→h at the last real token; ←h at the first]


class RecurrentEncoder(nn.Module):
    """A bidirectional LSTM/GRU over the embedded source (Bahdanau §3.2), ``hidden_size / 2`` per direction."""

    def __init__(self, cell: str, input_size: int, hidden_size: int, layers: int, dropout: float = 0.0):
        super().__init__()
        self.rnn = CELLS[cell](input_size, hidden_size // 2, layers, batch_first=True, bidirectional=True,
                               dropout=dropout if layers > 1 else 0.0)

    def forward(self, x: Tensor, lengths: Tensor) -> EncoderStates:
        """x: (batch, src_len, input_size) embedded source, right-padded; lengths: (batch,) real tokens.

        The lengths go to the host (``pack_padded_sequence`` needs them there: one sync per batch)."""
        packed = pack_padded_sequence(x, lengths.clamp_min(1).cpu(), batch_first=True, enforce_sorted=False)
        out, final = self.rnn(packed)
        annotations, _ = pad_packed_sequence(out, batch_first=True, total_length=x.shape[1])
        # (layers · 2, batch, hidden/2), directions alternating -> (layers, batch, hidden): [forward; backward]
        final = tuple(torch.cat([s[0::2], s[1::2]], dim=-1) for s in _from_rnn(final))
        return EncoderStates(annotations, final)


# -- attention over the encoder's annotations ----------------------------------------------------
class EncoderAttention(nn.Module):
    """What both scores share: queries from the decoder, keys and values from the encoder (one head).

    The decoder's rows may be a whole multiple of the encoder's (``batch = batch_m · group``: beams of
    one sentence), as in ``MultiHeadAttention``: a group's queries attend to their shared annotations,
    which are never copied.  Looking inside (``glassformer.explain``): with ``keep_weights`` each call
    keeps its weights, (batch, 1, q_len, src_len), in ``kept_weights``."""

    cross_attention = True          # what explain's capture reads: attention from the target to the source
    n_heads = 1
    keep_weights: bool = False
    kept_weights: Tensor | None = None

    def project_memory(self, memory: Tensor) -> Tensor:
        """The keys as the score reads them, (batch_m, src_len, ·): computed once per source."""
        raise NotImplementedError

    def attend(self, query: Tensor, memory: Tensor, mask: Tensor | AttentionMask | None, keys: Tensor,
               need_weights: bool) -> AttentionOutput:
        """The score's own part.  query: (batch_m, 1, q_len, query_size); memory: (batch_m, 1, src_len, d);
        keys: (batch_m, 1, src_len, ·) -> the context (batch_m, 1, q_len, d) and, if ``need_weights``, the weights."""
        raise NotImplementedError

    def align(self, query: Tensor, memory: Tensor, mask: Tensor | AttentionMask | None, keys: Tensor | None = None,
              need_weights: bool = False) -> AttentionOutput:
        """query: (batch, q_len, query_size) decoder states; memory: (batch_m, src_len, d) the annotations
        (the values); mask: (batch_m, 1, 1, src_len), True = a real source token; keys: the memory's
        :meth:`project_memory` if already computed -> the context c (batch, q_len, d) and, if
        ``need_weights``, the alignment a (batch, q_len, src_len): each row sums to 1 over the real
        source tokens and is 0 at padding.  (:meth:`forward` is this, watched.)"""
        b, t, _ = query.shape
        batch_m = memory.shape[0]
        if b % batch_m:
            raise InputError(f"a decoder batch of {b} rows cannot share an encoder batch of {batch_m}: "
                             "it must be a whole multiple of it (beams of each sentence)")
        keys = self.project_memory(memory) if keys is None else keys
        grouped = query.reshape(batch_m, 1, (b // batch_m) * t, query.shape[-1])   # a sentence's rows together
        context, weights = self.attend(grouped, memory[:, None], mask, keys[:, None], need_weights)
        return AttentionOutput(context.reshape(b, t, memory.shape[-1]),
                               None if weights is None else weights.reshape(b, t, memory.shape[1]))

    def forward(self, query: Tensor, memory: Tensor, mask: Tensor | AttentionMask | None = None, *,
                keys: Tensor | None = None, need_weights: bool = False) -> AttentionOutput:
        """:meth:`align`, keeping the weights (batch, 1, q_len, src_len) in ``kept_weights`` when
        ``keep_weights`` is set."""
        context, weights = self.align(query, memory, mask, keys, need_weights or self.keep_weights)
        if self.keep_weights:
            self.kept_weights = weights[:, None]
        return AttentionOutput(context, weights if need_weights else None)


class AdditiveAttention(EncoderAttention):
    """score(q, k) = vᵀ tanh(W_q q + W_k k)   (Bahdanau eq. 6; Luong's "concat"); a = softmax(score)."""

    def __init__(self, query_size: int, key_size: int, attention_size: int):
        super().__init__()
        self.query_proj = nn.Linear(query_size, attention_size, bias=False)    # W_q
        self.key_proj = nn.Linear(key_size, attention_size, bias=False)        # W_k
        self.v = nn.Linear(attention_size, 1, bias=False)                      # vᵀ

    def project_memory(self, memory: Tensor) -> Tensor:
        return self.key_proj(memory)                                            # (batch_m, src_len, attention)

    def attend(self, query, memory, mask, keys, need_weights):
        # (batch_m, 1, q_len, 1, attention) + (batch_m, 1, 1, src_len, attention) -> scores (batch_m, 1, q_len, src_len)
        scores = self.v(torch.tanh(self.query_proj(query)[:, :, :, None] + keys[:, :, None])).squeeze(-1)
        mask = prepare_mask(mask)
        weights = masked_softmax(scores, mask)
        return AttentionOutput(weights @ memory, weights if need_weights else None)


class MultiplicativeAttention(EncoderAttention):
    """score(q, k) = qᵀ W k   (Luong's "general" score, eq. 8): dot-product attention with scale 1 over the
    keys W k — the attention core itself, fused unless the weights are wanted."""

    def __init__(self, query_size: int, key_size: int):
        super().__init__()
        self.key_proj = nn.Linear(key_size, query_size, bias=False)             # W

    def project_memory(self, memory: Tensor) -> Tensor:
        return self.key_proj(memory)                                            # (batch_m, src_len, query_size)

    def attend(self, query, memory, mask, keys, need_weights):
        return scaled_dot_product_attention(query, keys, memory, mask, scale=1.0, need_weights=need_weights)


def make_attention(kind: str, query_size: int, key_size: int, attention_size: int) -> EncoderAttention | None:
    """``"additive"``, ``"multiplicative"`` or ``"none"`` (None)."""
    if kind == "additive":
        return AdditiveAttention(query_size, key_size, attention_size)
    if kind == "multiplicative":
        return MultiplicativeAttention(query_size, key_size)
    return None


ATTENTION_KINDS = ("additive", "multiplicative", "none")


# -- the decoder ---------------------------------------------------------------------------------
class DecoderOutput(NamedTuple):
    output: Tensor                    # (batch, t, hidden_size): the attentional vectors h̃ (h without attention)
    state: State                      # the recurrent state after the last position
    feed: Tensor | None               # (batch, hidden_size): h̃ of the last position, the next input's feed
    weights: Tensor | None            # (batch, t, src_len) when asked for


class RecurrentDecoder(nn.Module):
    """h_t = RNN([y_{t-1}; h̃_{t-1}], h_{t-1});  c_t = attention(h_t, h̄);  h̃_t = dropout(tanh(W_c [c_t; h_t])).

    ``input_feeding`` (Luong §3.3) gives each step the previous attentional vector, so that the
    alignment decisions are known to the next: the steps then run one at a time, under teacher forcing
    too.  Without it the whole target runs through the RNN in one call and attention reads every
    position at once.  Without ``attention`` (None) h̃_t = dropout(h_t)."""

    def __init__(self, cell: str, input_size: int, hidden_size: int, layers: int, *,
                 attention: EncoderAttention | None, input_feeding: bool, dropout: float = 0.0):
        super().__init__()
        self.hidden_size, self.input_feeding = hidden_size, input_feeding
        self.rnn = CELLS[cell](input_size + (hidden_size if input_feeding else 0), hidden_size, layers,
                               batch_first=True, dropout=dropout if layers > 1 else 0.0)
        self.attention = attention
        self.combine = nn.Linear(2 * hidden_size, hidden_size, bias=False) if attention is not None else None  # W_c
        self.dropout = nn.Dropout(dropout)

    def _attentional(self, h: Tensor, memory: Tensor, mask, keys: Tensor | None, *,
                     need_weights: bool, watched: bool = True) -> tuple[Tensor, Tensor | None]:
        """h: (batch, t, hidden) -> h̃ (batch, t, hidden) and the weights (batch, t, src_len) if asked for.
        ``watched=False``: through ``align``, not the module's call (no hooks run, nothing is kept)."""
        if self.attention is None:
            return self.dropout(h), None
        attend = self.attention if watched else self.attention.align
        context, weights = attend(h, memory, mask, keys=keys, need_weights=need_weights)
        return self.dropout(torch.tanh(self.combine(torch.cat([context, h], dim=-1)))), weights

    def forward(self, x: Tensor, state: State, feed: Tensor | None, memory: Tensor | None = None,
                memory_mask: Tensor | AttentionMask | None = None, *, keys: Tensor | None = None,
                need_weights: bool = False) -> DecoderOutput:
        """x: (batch, t, input_size) embedded decoder inputs; state: the recurrent state before them; feed:
        (batch, hidden_size) the previous h̃ (zeros at the start; None without input feeding); memory:
        (batch_m, src_len, hidden_size) the annotations, memory_mask (batch_m, 1, 1, src_len); keys: their
        projection (:meth:`EncoderAttention.project_memory`, computed here if None)."""
        if self.attention is not None:
            keys = self.attention.project_memory(memory) if keys is None else keys
            memory_mask = prepare_mask(memory_mask)
        hx = _to_rnn(state)
        if not self.input_feeding:
            h, hx = self.rnn(x, hx)                                              # every position in one call
            out, weights = self._attentional(h, memory, memory_mask, keys, need_weights=need_weights)
            return DecoderOutput(out, _from_rnn(hx), None, weights)
        outputs, hs, all_weights = [], [], []
        watched = self.attention is not None and self.attention.keep_weights
        for i in range(x.shape[1]):                                              # one step at a time
            h, hx = self.rnn(torch.cat([x[:, i:i + 1], feed[:, None]], dim=-1), hx)
            out, weights = self._attentional(h, memory, memory_mask, keys, need_weights=need_weights,
                                             watched=False)
            feed = out[:, 0]
            outputs.append(out)
            hs.append(h)
            all_weights.append(weights)
        if watched:
            # Someone watches the attention (explain): one call over every step's query h_t gives the
            # weights the steps used, (batch, 1, t, src_len), as one alignment.
            self.attention(torch.cat(hs, dim=1), memory, memory_mask, keys=keys)
        weights = torch.cat(all_weights, dim=1) if need_weights and self.attention is not None else None
        return DecoderOutput(torch.cat(outputs, dim=1), _from_rnn(hx), feed, weights)


# -- the decoding state ----------------------------------------------------------------------------
class RecurrentCache:
    """The decoding state of a recurrent decoder, with the interface of ``attention.KVCache``.

    What a step needs from the past is not every key and value but the recurrent ``state`` (tuple of
    (layers, batch, hidden_size)) and, with input feeding, ``feed`` (batch, hidden_size), the last
    attentional vector.  A step writes both in place (``update``), so their addresses stay put while a
    batch is decoded.  The encoder side — ``memory`` (batch_m, src_len, hidden_size), ``memory_mask``
    (batch_m, 1, 1, src_len) and ``keys`` (their projection for the score) — is computed once per
    source; its batch may be smaller than the decoder's (beams of one sentence share it).
    ``position`` (a device tensor) and ``length`` (its host twin) count the tokens read; ``max_len``
    bounds them.  ``initial`` keeps the state of position 0 (reordered with the rows), so that
    :meth:`cleared` can re-run a whole prefix: the uncached reference.  ``key_padding`` and
    ``position_offset`` (left-padded prompts) are always None: an encoder–decoder's decoder starts
    every row at its start token.
    """

    key_padding: Tensor | None = None
    position_offset: Tensor | None = None

    def __init__(self, state: State, feed: Tensor | None, max_len: int, *, memory: Tensor | None = None,
                 memory_mask: Tensor | None = None, keys: Tensor | None = None):
        self.state, self.feed = tuple(s.clone() for s in state), None if feed is None else feed.clone()
        self.initial = (state, feed)
        self.memory, self.memory_mask, self.keys = memory, memory_mask, keys
        self.max_len = max_len
        self.position = torch.zeros((), dtype=torch.long, device=state[0].device)
        self.length = 0

    @property
    def batch(self) -> int:
        return self.state[0].shape[1]

    def update(self, state: State, feed: Tensor | None) -> None:
        """Write a step's new state (and feed) into the cache's tensors."""
        for old, new in zip(self.state, state):
            old.copy_(new)
        if feed is not None:
            self.feed.copy_(feed)

    def check_room(self, t: int) -> None:
        if self.length + t > self.max_len:
            raise InputError(f"the decoding state holds {self.max_len} positions; {self.length + t} were needed")

    def advance(self, t: int) -> None:
        """Count ``t`` more positions as read (after a step has run)."""
        self.position.add_(t)
        self.length += t

    def reorder(self, rows: Tensor) -> None:
        """Keep decoder rows ``rows`` (in that order): beams selected, sentences dropped, or rows fanned
        out.  With an unchanged batch size the copy goes into the same tensors (their addresses stay)."""
        def pick(t: Tensor, dim: int) -> Tensor:
            return t.index_select(dim, rows)

        if rows.shape[0] == self.batch:
            self.update(tuple(pick(s, 1) for s in self.state), None if self.feed is None else pick(self.feed, 0))
        else:
            self.state = tuple(pick(s, 1) for s in self.state)
            self.feed = None if self.feed is None else pick(self.feed, 0)
        state, feed = self.initial
        self.initial = (tuple(pick(s, 1) for s in state), None if feed is None else pick(feed, 0))

    def select_memory(self, sources: Tensor) -> None:
        """Keep encoder rows ``sources``: the annotations, their mask and keys."""
        for name in ("memory", "memory_mask", "keys"):
            tensor = getattr(self, name)
            if tensor is not None:
                setattr(self, name, tensor.index_select(0, sources))

    def cleared(self) -> "RecurrentCache":
        """A state of the same rows and encoder side with nothing read: decoding with it re-runs the
        whole prefix from the initial state (the uncached reference)."""
        state, feed = self.initial
        return RecurrentCache(state, feed, self.max_len, memory=self.memory, memory_mask=self.memory_mask,
                              keys=self.keys)

    def long_lived(self) -> list[Tensor]:
        """The tensors whose addresses stay put while a batch is decoded (for a compiled step)."""
        tensors = [*self.state, self.feed, self.position, self.memory, self.memory_mask, self.keys]
        return [t for t in tensors if t is not None]


__all__ = ["CELLS", "State", "EncoderStates", "RecurrentEncoder", "EncoderAttention", "AdditiveAttention",
           "MultiplicativeAttention", "make_attention", "ATTENTION_KINDS", "DecoderOutput", "RecurrentDecoder",
           "RecurrentCache"]
