"""Resampling of dead latents, checked entry by entry against the paper's appendix."""

import numpy as np
import pytest
import torch

from sae.activations import ArrayActivations
from sae.dictionary.model import SAEConfig, SparseAutoencoder
from sae.dictionary.resample import ENCODER_SCALE, resample_dead
from sae.dictionary.train import SAETrainConfig, fit_sae

D_IN, D_SAE = 8, 16
DEAD = [2, 5, 11]
PICKED = [7, 19, 33]  # the only inputs with non-zero loss: the three dead latents must take exactly these


pytestmark = pytest.mark.usefixtures("single_thread")  # tiny matmuls: one thread is faster


def trained_sae_and_adam(seed=0):
    """Return an SAE and an Adam whose moments are non-zero everywhere (a few real steps)."""
    g = torch.Generator().manual_seed(seed)
    sae = SparseAutoencoder(SAEConfig(d_in=D_IN, d_sae=D_SAE)).init_weights(g)
    with torch.no_grad():
        sae.b_enc.normal_(0, 0.1, generator=g)
        sae.W_enc.mul_(torch.rand(1, D_SAE, generator=g) + 0.5)  # encoder columns of different norms
    adam = torch.optim.Adam(sae.parameters(), lr=1e-3)
    for _ in range(3):
        x = torch.randn(64, D_IN, generator=g)
        adam.zero_grad()
        ((sae(x) - x).pow(2).sum(-1).mean() + sae.encode(x).sum(-1).mean()).backward()
        adam.step()
    return sae, adam


def test_resample_sets_exactly_the_dead_latents_to_the_papers_formula_and_resets_only_their_adam_state():
    sae, adam = trained_sae_and_adam()
    before = {name: p.detach().clone() for name, p in sae.named_parameters()}
    state_before = {name: {k: adam.state[p][k].clone() for k in ("exp_avg", "exp_avg_sq")}
                    for name, p in sae.named_parameters()}
    dead = torch.zeros(D_SAE, dtype=torch.bool)
    dead[DEAD] = True
    inputs = torch.randn(50, D_IN, generator=torch.Generator().manual_seed(1)) * 3
    losses = torch.zeros(50)
    losses[PICKED] = torch.tensor([1.0, 2.0, 3.0])
    mean_alive = float(before["W_enc"].norm(dim=0)[~dead].mean())

    index = resample_dead(sae, adam, dead, inputs, losses, torch.Generator().manual_seed(0))

    assert sorted(index.tolist()) == DEAD
    unit = inputs / inputs.norm(dim=1, keepdim=True)
    rows = sae.W_dec.detach()[DEAD]  # [3, d_in]
    matches = [int(torch.argmax(unit[PICKED] @ r)) for r in rows]
    assert sorted(matches) == [0, 1, 2]  # three distinct inputs, one per dead latent
    for j, m in zip(DEAD, matches):
        torch.testing.assert_close(sae.W_dec.detach()[j], unit[PICKED[m]])
        torch.testing.assert_close(sae.W_enc.detach()[:, j], unit[PICKED[m]] * ENCODER_SCALE * mean_alive)
        assert float(sae.b_enc.detach()[j]) == 0.0
    alive = [j for j in range(D_SAE) if j not in DEAD]
    assert torch.equal(sae.W_dec.detach()[alive], before["W_dec"][alive])
    assert torch.equal(sae.W_enc.detach()[:, alive], before["W_enc"][:, alive])
    assert torch.equal(sae.b_enc.detach()[alive], before["b_enc"][alive])
    assert torch.equal(sae.b_dec.detach(), before["b_dec"])

    slices = {"W_enc": lambda t, ix: t[:, ix], "b_enc": lambda t, ix: t[ix], "W_dec": lambda t, ix: t[ix]}
    for name, p in sae.named_parameters():
        for key in ("exp_avg", "exp_avg_sq"):
            now, old = adam.state[p][key], state_before[name][key]
            if name == "b_dec":
                assert torch.equal(now, old)
                continue
            assert torch.count_nonzero(slices[name](now, DEAD)) == 0
            assert torch.equal(slices[name](now, alive), slices[name](old, alive))
            assert torch.count_nonzero(slices[name](old, alive)) > 0  # there was state to keep


def test_inputs_are_drawn_with_probability_proportional_to_squared_loss():
    dead = torch.zeros(D_SAE, dtype=torch.bool)
    dead[3] = True
    inputs = torch.eye(D_IN)[:4] + 0.0
    losses = torch.tensor([1.0, 2.0, 0.0, 0.0])  # ∝ loss²: 1/5 vs 4/5 (∝ loss would give 1/3 vs 2/3)
    picks = []
    for trial in range(1500):
        sae = SparseAutoencoder(SAEConfig(d_in=D_IN, d_sae=D_SAE))
        with torch.no_grad():
            sae.W_enc.fill_(1.0)
        resample_dead(sae, torch.optim.Adam(sae.parameters()), dead, inputs, losses,
                      torch.Generator().manual_seed(trial))
        picks.append(int(torch.argmax(sae.W_dec.detach()[3])))
    assert set(picks) == {0, 1}
    assert np.mean(np.array(picks) == 1) == pytest.approx(0.8, abs=0.035)


def test_nothing_dead_changes_nothing():
    sae, adam = trained_sae_and_adam()
    before = [p.detach().clone() for p in sae.parameters()]
    index = resample_dead(sae, adam, torch.zeros(D_SAE, dtype=torch.bool), torch.randn(10, D_IN), torch.ones(10))
    assert index.numel() == 0
    assert all(torch.equal(a, b.detach()) for a, b in zip(before, sae.parameters()))


def test_training_resamples_latents_killed_mid_run_and_logs_the_counts():
    torch.manual_seed(0)
    x = torch.relu(torch.randn(6000, D_IN)).numpy()
    cfg = SAETrainConfig(d_sae=D_SAE, tokens=128 * 60, batch_size=128, l1_coefficient=0.1, lr=3e-3,
                         resample_at=(0.5,), dead_window_frac=0.2, precision="fp32", init_sample_tokens=1000,
                         resample_sample_tokens=2000, log_every=10)

    def kill(step, sae):  # latents 0..5 stop firing from step 5 on: dead by the resample at step 30
        if step == 5:
            with torch.no_grad():
                sae.b_enc[:6] = -1e4

    sae, summary, records = fit_sae(cfg, ArrayActivations(x), device="cpu", progress=False, log=lambda m: None,
                                    on_step=kill)
    assert summary["resamples"] == [{"step": 30, "count": 6}]
    assert summary["resampled_total"] == 6
    assert (sae.b_enc.detach()[:6] > -100).all()  # b_enc reset to 0, then trained: alive again
    assert summary["dead"] == 0


def test_resampling_from_x_minus_b_dec_uses_the_centred_input():
    sae, adam = trained_sae_and_adam()
    with torch.no_grad():
        sae.b_dec.copy_(torch.linspace(1.0, 2.0, D_IN))  # far from 0: x and x − b_dec point differently
    dead = torch.zeros(D_SAE, dtype=torch.bool)
    dead[5] = True
    inputs = torch.randn(20, D_IN, generator=torch.Generator().manual_seed(1)) + 3
    losses = torch.zeros(20)
    losses[7] = 1.0  # the only input that can be drawn
    mean_alive = float(sae.W_enc.detach().norm(dim=0)[~dead].mean())
    resample_dead(sae, adam, dead, inputs, losses, torch.Generator().manual_seed(0), centre=sae.b_dec.detach())
    centred = inputs[7] - sae.b_dec.detach()
    unit = centred / centred.norm()
    torch.testing.assert_close(sae.W_dec.detach()[5], unit)
    torch.testing.assert_close(sae.W_enc.detach()[:, 5], unit * ENCODER_SCALE * mean_alive)


@pytest.mark.parametrize("resample_from", [None, "x_minus_b_dec", "x"])
def test_training_resamples_from_x_minus_b_dec_by_default(monkeypatch, resample_from):
    """The default follows BENCHMARKS.md ("ReLU recipe and AuxK study"): from x, the MLP's large common mean made
    every resampled latent fire on nearly every token (FVU spike 1.51 against 0.52 from x − b_dec)."""
    from sae.dictionary import resample

    centres = []

    def spy(*args, centre=None, **kw):
        centres.append(centre)
        return resample_dead(*args, centre=centre, **kw)

    monkeypatch.setattr(resample, "resample_dead", spy)
    torch.manual_seed(0)
    x = torch.relu(torch.randn(3000, D_IN)).numpy() + 1.0
    cfg = SAETrainConfig(d_sae=D_SAE, tokens=128 * 20, batch_size=128, l1_coefficient=0.1, lr=3e-3,
                         resample_at=(0.5,), dead_window_frac=0.2, precision="fp32", init_sample_tokens=1000,
                         resample_sample_tokens=500, log_every=10,
                         **({} if resample_from is None else {"resample_from": resample_from}))

    def kill(step, sae):
        if step == 2:
            with torch.no_grad():
                sae.b_enc[:3] = -1e4

    sae, _, _ = fit_sae(cfg, ArrayActivations(x), device="cpu", progress=False, log=lambda m: None, on_step=kill)
    assert len(centres) == 1
    if resample_from == "x":
        assert centres[0] is None
    else:
        assert centres[0] is not None and centres[0].abs().sum() > 0  # b_dec, the geometric median of x
    with pytest.raises(Exception, match="resample_from"):
        SAETrainConfig(resample_from="b_dec")
