"""A small Transformer encoder-decoder in plain PyTorch (pre-norm, the attention of
``torch.nn.functional.scaled_dot_product_attention``), the translation task's members and
students. Shapes: ``B`` sentences, ``S`` source and ``T`` target positions, ``D`` the model
width, ``V`` the target vocabulary (the number of classes K of every target token).

Padding (id 0, :data:`pipeline.tasks.translation.vocab.PAD`) is masked everywhere: no position
attends to a padded key, and a padded query's output is never used, so a batch gives every
sentence the logits it would get alone (tested). The decoder's input and output embeddings are
tied (fairseq's ``share_decoder_input_output_embed``).

Decoding runs the decoder one position at a time with its state (:class:`DecoderState`: each
layer's self-attention keys and values so far, and the cross-attention keys and values of the
source, computed once), so a step costs one position, not the whole prefix again (tested equal to
the full forward pass).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pipeline.io import load_weights
from pipeline.tasks.translation.vocab import BOS, PAD

__all__ = [
    "DecoderState",
    "Seq2Seq",
    "build",
    "decoder_inputs",
    "load_members",
    "load_model",
    "pack",
    "unpack",
]


class Attention(nn.Module):
    """Multi-head attention of queries ``[B, T, D]`` over keys/values ``[B, S, D]``."""

    def __init__(self, dim: int, heads: int, dropout: float):
        super().__init__()
        if dim % heads:
            raise ValueError(f"model dim {dim} is not a multiple of heads {heads}")
        self.heads, self.dropout = heads, dropout
        self.q, self.k, self.v, self.out = (nn.Linear(dim, dim) for _ in range(4))

    def split(self, x: Tensor) -> Tensor:
        """``[B, L, D] -> [B, H, L, D / H]``."""
        b, n, d = x.shape
        return x.view(b, n, self.heads, d // self.heads).transpose(1, 2)

    def attend(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None) -> Tensor:
        """Heads ``q [B, H, T, E]`` over ``k, v [B, H, S, E]`` with ``mask`` (bool, True = may
        attend, broadcast to ``[B, H, T, S]``) -> ``[B, T, D]``."""
        p = self.dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p)
        b, h, t, e = y.shape
        return self.out(y.transpose(1, 2).reshape(b, t, h * e))


class Layer(nn.Module):
    """A pre-norm layer: self-attention, cross-attention (decoder only), feed-forward."""

    def __init__(self, dim: int, heads: int, ffn: int, dropout: float, cross: bool):
        super().__init__()
        self.self_norm, self.self_attn = nn.LayerNorm(dim), Attention(dim, heads, dropout)
        self.cross_norm = nn.LayerNorm(dim) if cross else None
        self.cross_attn = Attention(dim, heads, dropout) if cross else None
        self.ffn_norm = nn.LayerNorm(dim)
        self.ffn = nn.Sequential(
            nn.Linear(dim, ffn), nn.ReLU(), nn.Dropout(dropout), nn.Linear(ffn, dim)
        )
        self.drop = nn.Dropout(dropout)


@dataclass
class DecoderState:
    """What incremental decoding keeps per layer: the self-attention keys and values of the
    positions decoded so far (``[N, H, t, E]``), and the cross-attention keys and values of the
    source with its mask (computed once). ``N`` rows: sentences (x beams)."""

    self_kv: list[tuple[Tensor, Tensor] | None]
    cross_kv: list[tuple[Tensor, Tensor]]
    src_mask: Tensor  # [N, 1, 1, S] bool
    steps: int = 0

    def select(self, rows: Tensor) -> DecoderState:
        """The state of rows ``rows`` (a beam reordered or pruned)."""
        return DecoderState(
            [None if kv is None else (kv[0][rows], kv[1][rows]) for kv in self.self_kv],
            [(k[rows], v[rows]) for k, v in self.cross_kv],
            self.src_mask[rows],
            self.steps,
        )


class Seq2Seq(nn.Module):
    """The encoder-decoder: ``forward(src [B, S], tgt_in [B, T]) -> logits [B, T, V]``."""

    def __init__(
        self,
        src_vocab: int,
        tgt_vocab: int,
        dim: int = 128,
        heads: int = 4,
        enc_layers: int = 2,
        dec_layers: int = 2,
        ffn: int = 512,
        dropout: float = 0.1,
        max_len: int = 512,
    ):
        super().__init__()
        self.dim, self.max_len = dim, max_len
        self.src_embed = nn.Embedding(src_vocab, dim, padding_idx=PAD)
        self.tgt_embed = nn.Embedding(tgt_vocab, dim, padding_idx=PAD)
        self.pos = nn.Embedding(max_len, dim)
        self.encoder = nn.ModuleList(
            Layer(dim, heads, ffn, dropout, False) for _ in range(enc_layers)
        )
        self.decoder = nn.ModuleList(
            Layer(dim, heads, ffn, dropout, True) for _ in range(dec_layers)
        )
        self.enc_norm, self.dec_norm = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.drop = nn.Dropout(dropout)
        self.bias = nn.Parameter(torch.zeros(tgt_vocab))  # the output layer's bias (tied weight)
        nn.init.normal_(self.src_embed.weight, std=dim**-0.5)
        nn.init.normal_(self.tgt_embed.weight, std=dim**-0.5)
        with torch.no_grad():
            self.src_embed.weight[PAD].zero_()
            self.tgt_embed.weight[PAD].zero_()

    @property
    def output_bias(self) -> Tensor:
        """The output layer's bias ``[V]`` (``init_bias: log_marginal`` sets it)."""
        return self.bias

    def _embed(self, table: nn.Embedding, ids: Tensor, start: int = 0) -> Tensor:
        if start + ids.shape[1] > self.max_len:
            raise ValueError(
                f"sequence of {start + ids.shape[1]} positions > max_len {self.max_len}"
            )
        pos = torch.arange(start, start + ids.shape[1], device=ids.device)
        return self.drop(table(ids) * math.sqrt(self.dim) + self.pos(pos))

    def encode(self, src: Tensor) -> tuple[Tensor, Tensor]:
        """``(memory [B, S, D], src_mask [B, 1, 1, S])`` of source ids ``[B, S]``."""
        mask = (src != PAD)[:, None, None, :]
        x = self._embed(self.src_embed, src)
        for layer in self.encoder:
            h = layer.self_norm(x)
            a = layer.self_attn
            x = x + layer.drop(a.attend(a.split(a.q(h)), a.split(a.k(h)), a.split(a.v(h)), mask))
            x = x + layer.drop(layer.ffn(layer.ffn_norm(x)))
        return self.enc_norm(x), mask

    def _logits(self, x: Tensor) -> Tensor:
        return F.linear(self.dec_norm(x), self.tgt_embed.weight, self.bias)

    def hidden(self, src: Tensor, tgt_in: Tensor) -> Tensor:
        """The decoder's output ``[B, T, D]`` (before the final norm) for decoder inputs
        ``tgt_in [B, T]`` (BOS, then the target shifted right, padded with 0)."""
        memory, src_mask = self.encode(src)
        t = tgt_in.shape[1]
        causal = torch.ones(t, t, dtype=torch.bool, device=src.device).tril()
        self_mask = causal[None, None] & (tgt_in != PAD)[:, None, None, :]
        self_mask = self_mask | torch.eye(
            t, dtype=torch.bool, device=src.device
        )  # a pad sees itself
        x = self._embed(self.tgt_embed, tgt_in)
        for layer in self.decoder:
            h = layer.self_norm(x)
            a = layer.self_attn
            x = x + layer.drop(
                a.attend(a.split(a.q(h)), a.split(a.k(h)), a.split(a.v(h)), self_mask)
            )
            h, c = layer.cross_norm(x), layer.cross_attn
            kv = c.split(c.k(memory)), c.split(c.v(memory))
            x = x + layer.drop(c.attend(c.split(c.q(h)), *kv, src_mask))
            x = x + layer.drop(layer.ffn(layer.ffn_norm(x)))
        return x

    def forward(self, src: Tensor, tgt_in: Tensor | None = None) -> Tensor:
        """Teacher-forced logits ``[B, T, V]`` of ``src [B, S]`` and decoder inputs
        ``tgt_in [B, T]``; or, given one packed batch ``src [B, 2, W]`` (:func:`pack`: sources
        in ``[:, 0]``, decoder inputs in ``[:, 1]``), the logits ``[R, V]`` of its ``R``
        non-padding target positions in row-major order (the training engine's rows: the
        output layer never runs on padding)."""
        if tgt_in is not None:
            return self._logits(self.hidden(src, tgt_in))
        src, tgt_in = unpack(src)
        h = self.hidden(src, tgt_in)
        return self._logits(h[tgt_in != PAD])

    def start(self, src: Tensor) -> DecoderState:
        """The decoder state before the first step, for source ids ``[N, S]``."""
        memory, src_mask = self.encode(src)
        cross = []
        for layer in self.decoder:
            c = layer.cross_attn
            cross.append((c.split(c.k(memory)), c.split(c.v(memory))))
        return DecoderState([None] * len(self.decoder), cross, src_mask)

    def step(self, tokens: Tensor, state: DecoderState) -> tuple[Tensor, DecoderState]:
        """Logits ``[N, V]`` of the next position after input ``tokens [N]`` (the previous
        output, BOS first), and the state with this position added."""
        x = self._embed(self.tgt_embed, tokens[:, None], state.steps)
        new_kv = []
        for i, layer in enumerate(self.decoder):
            h = layer.self_norm(x)
            a = layer.self_attn
            k, v = a.split(a.k(h)), a.split(a.v(h))
            if state.self_kv[i] is not None:
                k = torch.cat([state.self_kv[i][0], k], dim=2)
                v = torch.cat([state.self_kv[i][1], v], dim=2)
            new_kv.append((k, v))
            x = x + layer.drop(a.attend(a.split(a.q(h)), k, v, None))
            h, c = layer.cross_norm(x), layer.cross_attn
            x = x + layer.drop(c.attend(c.split(c.q(h)), *state.cross_kv[i], state.src_mask))
            x = x + layer.drop(layer.ffn(layer.ffn_norm(x)))
        return self._logits(x)[:, 0], DecoderState(
            new_kv, state.cross_kv, state.src_mask, state.steps + 1
        )


def build(cfg: dict, src_vocab: int, tgt_vocab: int) -> Seq2Seq:
    """The model of a ``model`` config slice (``name: transformer``; ``dim``, ``heads``,
    ``enc_layers``, ``dec_layers``, ``ffn``, ``dropout``, ``max_len``)."""
    if cfg.get("name") != "transformer":
        raise ValueError(f"unknown translation model {cfg.get('name')!r}; use transformer")
    keys = ("dim", "heads", "enc_layers", "dec_layers", "ffn", "dropout", "max_len")
    return Seq2Seq(src_vocab, tgt_vocab, **{k: cfg[k] for k in keys if k in cfg})


def decoder_inputs(targets: list[Tensor]) -> list[Tensor]:
    """The decoder's input of each target ``[T_i]`` (EOS last): BOS, then the target without its
    last token, ``[T_i]``."""
    return [torch.cat([torch.tensor([BOS]), t[:-1].long()]) for t in targets]


def pack(sources: list[Tensor], targets: list[Tensor]) -> Tensor:
    """One ``[B, 2, W]`` int64 batch of sources and the decoder inputs of their targets, each
    right-padded with 0 to ``W`` (the longer of the two): the training engine's single input
    tensor (:meth:`Seq2Seq.forward`)."""
    width = max(max(len(s) for s in sources), max(len(t) for t in targets))
    out = torch.full((len(sources), 2, width), PAD, dtype=torch.int64)
    for i, (s, t) in enumerate(zip(sources, decoder_inputs(targets), strict=True)):
        out[i, 0, : len(s)] = s
        out[i, 1, : len(t)] = t
    return out


def unpack(x: Tensor) -> tuple[Tensor, Tensor]:
    """``(src [B, S], tgt_in [B, T])`` of a packed batch ``x [B, 2, W]``, each cut to its
    longest row."""
    if x.ndim != 3 or x.shape[1] != 2:
        raise ValueError(f"a packed batch has shape [B, 2, W], got {tuple(x.shape)}")
    widths = (x != PAD).sum(-1).amax(0)  # [2]
    return x[:, 0, : int(widths[0])], x[:, 1, : int(widths[1])]


def load_model(path: str | Path) -> tuple[Seq2Seq, dict]:
    """A trained member or student and its metadata (verified by
    :func:`pipeline.io.load_weights`)."""
    state, meta = load_weights(path)
    model = build(meta["config"]["model"], int(meta["source_vocab"]), int(meta["vocab_size"]))
    model.load_state_dict(state)
    return model.eval(), meta


def load_members(paths: list, vocab: int, device: torch.device) -> list[Seq2Seq]:
    """The frozen members, each checked to predict ``vocab`` target classes."""
    members = []
    for p in paths:
        model, meta = load_model(p)
        if int(meta["vocab_size"]) != vocab:
            raise ValueError(f"member {p} has V={meta['vocab_size']}, expected V={vocab}")
        members.append(model.to(device).requires_grad_(False))
    return members
