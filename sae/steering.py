"""Pinned sampling and steering: force a unit to a value at `blocks.0.mlp.hook_post` while the LM writes.

A pin is plain data (`Pin`); one splice applies every pin of a run (sae.conventions' pinning convention):
  feature i of an SAE, "pin" mode:  x <- x + (v - f_i(x)) d_i at every position, f_i(x) the SAE's own encoding of x
      and d_i its decoder row, so only the feature's share of x changes and the SAE's error term is kept;
  feature, "add" mode (Neuronpedia's steering):  x <- x + v d_i;
  neuron i:  x_i <- v ("pin"), x_i <- x_i + v ("add").
Every pin reads f(x) of the unpinned x, so pins of one run do not see each other. BOS (position 0) is left as it is,
as in every splice of this project. A pin may name one position instead of all (circuit-tracer's interventions).

Sampling runs the steered and the unsteered continuations side by side from one uniform draw per step (common
random numbers: where both distributions agree, both pick the same token), and scores each sampled token under both
models on the same prefix, all four rows in one batched forward per step. A text longer than the context is read
through its last n_ctx - 1 tokens after BOS.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from sae.conventions import BOS_POSITION, NEURON_BASIS
from sae.errors import MonoscopeError

Mode = Literal["pin", "add"]
MODES = ("pin", "add")


@dataclass(frozen=True)
class Pin:
    """Force unit `index` of `basis` to `value` (mode "pin") or add `value` times its direction (mode "add"), at
    every position after BOS, or only at `position` when given."""

    basis: str
    index: int
    value: float
    mode: Mode = "pin"
    position: int | None = None


@dataclass(frozen=True)
class Sampling:
    """How to continue: greedy when temperature is 0, else softmax(logits / temperature) sampled with `seed`."""

    max_tokens: int = 32
    temperature: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.max_tokens <= 0 or self.temperature < 0:
            raise MonoscopeError(f"sampling needs max_tokens > 0 and temperature >= 0, got {self.max_tokens} and "
                                 f"{self.temperature}")


@dataclass(frozen=True)
class Continuation:
    """One continuation: its tokens [n] and each token's probability under the steered and the unsteered model,
    given this continuation's own prefix."""

    tokens: list[int]
    p_steered: list[float]
    p_unsteered: list[float]


def check_pins(pins: list[Pin], sizes: dict[str, int]) -> None:
    """Refuse, in one line, a pin of an unknown basis, unit, or mode."""
    for pin in pins:
        if pin.basis not in sizes:
            raise MonoscopeError(f"pin {pin.basis}:{pin.index}: no basis {pin.basis!r} (have: {', '.join(sizes)})")
        if not 0 <= pin.index < sizes[pin.basis]:
            raise MonoscopeError(f"pin {pin.basis}:{pin.index}: {pin.basis} has units 0 to {sizes[pin.basis] - 1}")
        if pin.mode not in MODES:
            raise MonoscopeError(f"pin mode is one of {', '.join(MODES)}, got {pin.mode!r}")


def pin_splice(pins: list[Pin], saes: dict, rows: slice | None = None, offset: int = 0):
    """Return the splice (x [B, T, d_mlp] -> pinned x) that applies `pins`, to the batch rows `rows` (all: None);
    x's first column is position `offset` of the text (incremental decoding feeds one new position at a time).

    saes: {basis name: SparseAutoencoder} of every SAE basis the pins name."""
    def splice(x: torch.Tensor) -> torch.Tensor:
        if not pins:
            return x
        x = x.clone()
        part = x if rows is None else x[rows]  # a view: writes land in x
        original = part.clone()
        encoded = {name: saes[name].encode(original) for name in {p.basis for p in pins} if name != NEURON_BASIS}
        after_bos = slice(max(BOS_POSITION + 1 - offset, 0), None)
        for pin in pins:
            local = None if pin.position is None else pin.position - offset
            if local is not None and not 0 <= local < x.shape[1]:
                continue
            where = after_bos if local is None else slice(local, local + 1)
            if pin.basis == NEURON_BASIS:
                column = part[:, where, pin.index]
                column.copy_(torch.full_like(column, pin.value) if pin.mode == "pin" else column + pin.value)
                continue
            direction = saes[pin.basis].W_dec[pin.index]  # [d_mlp]
            current = encoded[pin.basis][:, where, pin.index]  # [b, t]
            scale = (pin.value - current) if pin.mode == "pin" else torch.full_like(current, pin.value)
            part[:, where] += scale[..., None] * direction
        return x

    return splice


@torch.no_grad()
def steered_logits(model, saes: dict, tokens: torch.Tensor, pins: list[Pin]) -> torch.Tensor:
    """Return the logits [B, T, d_vocab] of tokens [B, T] with `pins` applied (none: the clean model's)."""
    from sae.lm.model import lm_logits

    return lm_logits(model, tokens, pin_splice(pins, saes) if pins else None).float()


@torch.no_grad()
def unit_activations(model, saes: dict, tokens: torch.Tensor, basis: str) -> torch.Tensor:
    """Return the activations [B, T, U] of every unit of `basis` on tokens [B, T] (what a pin compares against)."""
    from sae.lm.model import mlp_activations

    x = mlp_activations(model, tokens)
    return x if basis == NEURON_BASIS else saes[basis].encode(x)


@torch.no_grad()
def sample(model, saes: dict, prompt: list[int], pins: list[Pin],
           sampling: Sampling) -> tuple[Continuation, Continuation]:
    """Return (steered, unsteered) continuations of `prompt` (token ids, BOS first), sampled side by side."""
    from sae.lm.model import lm_logits, new_kv_cache

    n_ctx = int(model.cfg.n_ctx)
    generator = torch.Generator().manual_seed(sampling.seed)
    # Rows: 0 steered text, pinned; 1 steered text, clean; 2 unsteered text, pinned; 3 unsteered text, clean. While
    # the text fits the context, a key-value cache feeds each step only the new tokens (the pins have already acted
    # on the cached positions); past it, each step reads a window of BOS and the last n_ctx - 1 tokens, as the
    # training rows were built.
    texts = [list(prompt), list(prompt)]
    cache, offset = new_kv_cache(model, 4), 0
    step = torch.tensor(prompt, dtype=torch.long).repeat(4, 1)  # [4, T]
    picked: list[list[int]] = [[], []]
    probs_of: list[list[list[float]]] = [[[], []], [[], []]]  # [continuation][model][step]
    for _ in range(sampling.max_tokens):
        if offset + step.shape[1] <= n_ctx:
            splice = pin_splice(pins, saes, rows=slice(0, 4, 2), offset=offset) if pins else None
            logits = lm_logits(model, step, splice, kv_cache=cache)[:, -1].float()  # [4, d_vocab]
            offset += step.shape[1]
        else:
            window = torch.tensor([[prompt[0]] + t[len(t) - n_ctx + 1:] for t in texts]).repeat_interleave(2, 0)
            splice = pin_splice(pins, saes, rows=slice(0, 4, 2)) if pins else None
            logits = lm_logits(model, window, splice)[:, -1].float()
        probs = torch.softmax(logits, dim=-1)
        u = torch.rand((), generator=generator)
        for text, row in ((0, 0), (1, 3)):
            token = _choose(logits[row], probs[row], sampling.temperature, u)
            picked[text].append(token)
            texts[text].append(token)
            probs_of[text][0].append(float(probs[2 * text, token]))
            probs_of[text][1].append(float(probs[2 * text + 1, token]))
        step = torch.tensor([picked[0][-1], picked[0][-1], picked[1][-1], picked[1][-1]])[:, None]  # [4, 1]
    return tuple(Continuation(picked[i], probs_of[i][0], probs_of[i][1]) for i in (0, 1))


def _choose(logits: torch.Tensor, probs: torch.Tensor, temperature: float, u: torch.Tensor) -> int:
    """Return the token picked by inverse-CDF sampling of softmax(logits / temperature) at u (greedy at 0)."""
    if temperature == 0:
        return int(torch.argmax(logits))
    p = probs if temperature == 1 else torch.softmax(logits / temperature, dim=-1)
    cdf = torch.cumsum(p.double(), dim=0)
    return int(min(torch.searchsorted(cdf, u.double() * cdf[-1]).item(), len(p) - 1))
