"""Toy data with known features: the generator's statistics, MMCS, and that an SAE recovers the features."""

import sys

import pytest
import torch

from sae.dictionary.toy import (
    ToyConfig,
    ToyData,
    evaluate,
    firing_probabilities,
    fit_toy_sae,
    format_table,
    mmcs,
    random_dictionary,
    sweep,
)

EASY = ToyConfig(d=32, n_features=48, mean_active=3, decay=0.97)


pytestmark = pytest.mark.usefixtures("single_thread")  # tiny matmuls: one thread is faster


def test_firing_probabilities_decay_geometrically_and_sum_to_mean_active():
    p = firing_probabilities(ToyConfig())
    assert p.shape == (512,)
    assert float(p.sum()) == pytest.approx(5.0, rel=1e-5)
    torch.testing.assert_close(p[1:] / p[:-1], torch.full((511,), 0.99))


def test_probabilities_are_capped_at_one_and_still_sum_to_mean_active():
    p = firing_probabilities(ToyConfig(d=4, n_features=10, mean_active=6, decay=0.5))
    assert float(p.max()) == 1.0 and float(p.sum()) == pytest.approx(6.0, rel=1e-5)


def test_samples_are_sparse_combinations_of_unit_directions():
    data = ToyData(ToyConfig(), seed=3)
    x, c = data.sample(20_000)
    torch.testing.assert_close(data.directions.norm(dim=1), torch.ones(512))
    torch.testing.assert_close(x, c @ data.directions)
    assert 0 <= float(c.min()) and float(c.max()) <= 1
    active = c > 0
    assert float(active.sum(dim=1).float().mean()) == pytest.approx(5.0, abs=0.1)
    assert (active.float().mean(dim=0)[:20] - data.probabilities[:20]).abs().max() < 0.01
    assert float(c[active].mean()) == pytest.approx(0.5, abs=0.01)  # U[0, 1] coefficients


def test_correlated_variant_keeps_marginals_and_correlates_within_groups():
    data = ToyData(ToyConfig(group_size=8), seed=0)
    active = data.active(40_000).float()  # [n, 512]
    assert (active.mean(dim=0) - data.probabilities).abs().max() < 0.01
    assert float(active.sum(dim=1).mean()) == pytest.approx(5.0, abs=0.1)
    first = active[:, :64]  # the most frequent features: enough co-firing to measure
    corr = torch.corrcoef(first.T)
    same = (data.group[:64, None] == data.group[None, :64]) & ~torch.eye(64, dtype=torch.bool)
    different = data.group[:64, None] != data.group[None, :64]
    assert float(corr[same].mean()) > 0.2
    assert abs(float(corr[different].mean())) < 0.01
    independent = torch.corrcoef(ToyData(ToyConfig(), seed=0).active(40_000)[:, :64].float().T)
    assert float(independent[same].mean()) < 0.02  # same pairs, no grouping: no correlation


def test_mmcs_is_one_for_the_truth_and_low_for_random_or_orthogonal_dictionaries():
    data = ToyData(ToyConfig(), seed=0)
    shuffled = data.directions[torch.randperm(512)] * 3.0  # order and scale do not matter
    assert mmcs(torch.cat([shuffled, random_dictionary(100, 256)]), data.directions) == pytest.approx(1.0)
    assert mmcs(random_dictionary(1024, 256), data.directions) < 0.3
    assert mmcs(torch.eye(4)[:2], torch.eye(4)[2:]) == 0.0
    half = torch.cat([data.directions[:256], -data.directions[256:]])  # sign matters: cosine, not |cosine|
    assert mmcs(half, data.directions) < 0.6


def test_sae_recovers_ground_truth_on_an_easy_setting():
    torch.manual_seed(0)
    data = ToyData(EASY, seed=0)
    x, _ = data.sample(10_000)
    heldout, _ = data.sample(2_000)
    sae = fit_toy_sae(x, d_sae=64, l1=3.0, epochs=4, seed=0)
    result = evaluate(sae, data, heldout, l1=3.0)
    baseline = mmcs(random_dictionary(64, EASY.d), data.directions)
    assert result.mmcs >= 0.9
    assert baseline < 0.5 and result.mmcs - baseline > 0.4
    assert result.l0 < 32 and result.fvu < 0.3 and result.dead <= 4
    norms = sae.W_dec.detach().norm(dim=1)  # unit norm during training, then divided by the input scale when folded
    torch.testing.assert_close(norms, torch.full((64,), float(norms.mean())))


def test_sweep_covers_the_grid_and_stronger_l1_gives_sparser_codes():
    results = sweep(EASY, samples=8_000, l1s=[0.3, 10.0], d_saes=[48, 96], epochs=4)
    assert [(r.d_sae, r.l1) for r in results] == [(48, 0.3), (48, 10.0), (96, 0.3), (96, 10.0)]
    for low, high in ((results[0], results[1]), (results[2], results[3])):
        assert high.l0 < low.l0 and high.mse > low.mse
    table = format_table(results, random_mmcs=0.25).splitlines()
    assert table[0].split() == ["d_sae", "l1", "MMCS", "L0", "MSE", "FVU", "dead"]
    assert len(table) == 6 and table[-1] == "random dictionary MMCS: 0.250"


def run_cli(monkeypatch, capsys, *args):
    from app.cli import main

    monkeypatch.setattr(sys, "argv", ["monoscope", "toy", *args])
    try:
        main()
        code = 0
    except SystemExit as e:
        code = e.code
    return code, capsys.readouterr()


def test_toy_command_prints_the_table(monkeypatch, capsys):
    code, out = run_cli(monkeypatch, capsys, "--samples", "2000", "--l1", "3", "--d-sae", "64", "--epochs", "1")
    assert code == 0
    lines = out.out.splitlines()
    header = next(i for i, line in enumerate(lines) if line.split()[:3] == ["d_sae", "l1", "MMCS"])
    row = lines[header + 1].split()
    assert row[:2] == ["64", "3"] and 0 < float(row[2]) <= 1
    assert lines[-1].startswith("random dictionary MMCS:")


@pytest.mark.parametrize("args,message", [(["--l1", "a,b"], "--l1 takes comma-separated numbers"),
                                          (["--d-sae", "0"], "--d-sae needs positive numbers"),
                                          (["--samples", "10"], "--samples must be")])
def test_toy_command_refuses_bad_options_in_one_line(monkeypatch, capsys, args, message):
    code, out = run_cli(monkeypatch, capsys, *args)
    assert code == 2
    assert message in out.err and out.err.count("\n") == 1
