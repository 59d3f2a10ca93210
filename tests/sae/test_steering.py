"""Pinned sampling (sae/steering.py): pinning a unit at its current value changes nothing, to the bit; a pin moves
exactly the unit's share of the activation; sampling is reproducible and common-random-number paired."""

from __future__ import annotations

import pytest
import torch

from sae.conventions import NEURON_BASIS
from sae.dictionary.model import SAEConfig, SparseAutoencoder
from sae.errors import MonoscopeError
from sae.steering import Pin, Sampling, check_pins, pin_splice, sample, steered_logits, unit_activations

SAE = "toy"


@pytest.fixture(scope="module")
def lm_and_saes(tiny_run):
    from sae.lm.model import load_lm

    model = load_lm(tiny_run, "cpu")
    sae = SparseAutoencoder(SAEConfig(d_in=model.cfg.d_mlp, d_sae=96, architecture="topk", k=8))
    sae.init_weights(torch.Generator().manual_seed(0))
    with torch.no_grad():
        sae.b_enc.fill_(0.05)
    return model, {SAE: sae.eval()}


def _tokens(model, n: int = 12) -> torch.Tensor:
    ids = torch.arange(1, n) * 7 % (model.cfg.d_vocab - 1) + 1
    return torch.cat([torch.zeros(1, dtype=torch.long), ids])[None, :]  # [1, n], BOS first


@pytest.mark.parametrize("basis", [SAE, NEURON_BASIS])
def test_pinning_each_position_at_its_current_value_reproduces_the_logits_exactly(lm_and_saes, basis, single_thread):
    model, saes = lm_and_saes
    tokens = _tokens(model)
    clean = steered_logits(model, saes, tokens, [])
    acts = unit_activations(model, saes, tokens, basis)[0]  # [T, U]
    unit = int(acts[1:].gt(0).sum(0).argmax())  # a unit that fires somewhere, so the test is not 0 == 0
    assert acts[1:, unit].gt(0).any()
    pins = [Pin(basis, unit, float(acts[t, unit]), position=t) for t in range(1, tokens.shape[1])]
    pinned = steered_logits(model, saes, tokens, pins)
    assert torch.equal(pinned, clean)  # bit for bit
    moved = steered_logits(model, saes, tokens, [Pin(basis, unit, float(acts[:, unit].max()) + 5.0)])
    assert not torch.allclose(moved, clean)
    assert torch.equal(moved[:, 0], clean[:, 0])  # BOS is never pinned


def test_a_feature_pin_moves_only_its_share_and_keeps_the_error_term(lm_and_saes):
    model, saes = lm_and_saes
    sae = saes[SAE]
    x = torch.randn(2, 5, model.cfg.d_mlp).relu()
    f = sae.encode(x)
    out = pin_splice([Pin(SAE, 3, 2.5)], saes)(x)
    expected = x + (2.5 - f[..., 3:4]) * sae.W_dec[3]
    assert torch.allclose(out[:, 1:], expected[:, 1:], atol=1e-6) and torch.equal(out[:, 0], x[:, 0])
    # the SAE's error term is kept: the pinned x minus the reconstruction of the pinned code is x's own error
    pinned_code = f.clone()
    pinned_code[..., 3] = 2.5
    assert torch.allclose((out - sae.decode(pinned_code))[:, 1:], (x - sae.decode(f))[:, 1:], atol=1e-5)
    added = pin_splice([Pin(SAE, 3, 1.5, mode="add")], saes)(x)
    assert torch.allclose(added[:, 1:], x[:, 1:] + 1.5 * sae.W_dec[3], atol=1e-6)
    neuron = pin_splice([Pin(NEURON_BASIS, 4, -1.0)], saes)(x)
    assert torch.all(neuron[:, 1:, 4] == -1.0) and torch.equal(neuron[..., 5:], x[..., 5:])


def test_sampling_is_paired_and_reproducible(lm_and_saes, single_thread):
    model, saes = lm_and_saes
    prompt = _tokens(model, 4)[0].tolist()
    none = [Pin(NEURON_BASIS, 0, 0.0, mode="add")]  # adds nothing: both continuations must agree everywhere
    a, b = sample(model, saes, prompt, none, Sampling(max_tokens=10, temperature=1.0, seed=3))
    assert a.tokens == b.tokens and a.p_steered == pytest.approx(a.p_unsteered, rel=1e-5)  # rows of one batch
    s1, u1 = sample(model, saes, prompt, [Pin(SAE, 1, 30.0)], Sampling(max_tokens=10, temperature=1.0, seed=3))
    s2, u2 = sample(model, saes, prompt, [Pin(SAE, 1, 30.0)], Sampling(max_tokens=10, temperature=1.0, seed=3))
    assert s1 == s2 and u1 == u2 and u1.tokens == a.tokens  # the unsteered side does not depend on the pins
    assert s1.tokens != u1.tokens
    # each probability is the model's own at temperature 1 on that prefix
    rows = torch.tensor([prompt + s1.tokens])
    probs = torch.softmax(steered_logits(model, saes, rows, [Pin(SAE, 1, 30.0)])[0], -1)
    expect = [float(probs[len(prompt) - 1 + i, t]) for i, t in enumerate(s1.tokens)]
    assert s1.p_steered == pytest.approx(expect, rel=1e-4)
    greedy, _ = sample(model, saes, prompt, none, Sampling(max_tokens=3, temperature=0))
    clean = torch.softmax(steered_logits(model, saes, torch.tensor([prompt]), [])[0, -1], -1)
    assert greedy.tokens[0] == int(clean.argmax())


def test_bad_pins_and_bounds_are_one_line_errors(lm_and_saes):
    model, saes = lm_and_saes
    with pytest.raises(MonoscopeError, match="no basis"):
        check_pins([Pin("nope", 0, 1.0)], {SAE: 96})
    with pytest.raises(MonoscopeError, match="units 0 to 95"):
        check_pins([Pin(SAE, 96, 1.0)], {SAE: 96})


def test_a_text_past_the_context_reads_its_last_window(lm_and_saes, single_thread):
    model, saes = lm_and_saes
    n_ctx = int(model.cfg.n_ctx)
    prompt = _tokens(model, n_ctx - 3)[0].tolist()
    pins = [Pin(SAE, 2, 9.0)]
    steered, _ = sample(model, saes, prompt, pins, Sampling(max_tokens=8, temperature=0))
    text = prompt + steered.tokens
    for i in (5, 7):  # steps 5 and 7 ran past the context: their window is BOS + the last n_ctx - 1 tokens
        window = torch.tensor([[0] + text[len(prompt) + i - n_ctx + 1: len(prompt) + i]])
        logits = steered_logits(model, saes, window, pins)[0, -1]
        assert steered.tokens[i] == int(logits.argmax())
        assert steered.p_steered[i] == pytest.approx(float(torch.softmax(logits, -1).max()), rel=1e-4)
