"""Activation sources: arrays (validation, held-out split, seeded resumable stream) and the run's LM."""

import itertools
import subprocess
import sys

import numpy as np
import pytest
import torch

from sae.activations import ArrayActivations, LMActivations, check_activations
from sae.errors import MonoscopeError
from sae.lm.model import mlp_activations

pytestmark = pytest.mark.usefixtures("single_thread")  # tiny matmuls: one thread is faster


def numbered(n=1000, d=4):
    """Rows whose first column is their index: lets a test see which rows a batch holds."""
    x = np.zeros((n, d), dtype=np.float32)
    x[:, 0] = np.arange(n)
    x[:, 1:] = 1.0
    return x


def test_array_stream_covers_each_training_row_once_per_pass_and_holds_out_the_tail():
    source = ArrayActivations(numbered(), seed=3)
    assert len(source.train) == 950 and len(source.heldout) == 50  # 5% held out, never streamed
    rows = torch.cat(list(itertools.islice(source.stream(50), 19)))[:, 0].long()  # one pass: 950 rows
    assert sorted(rows.tolist()) == list(range(950))
    assert rows.tolist() != list(range(950))  # shuffled
    assert source.eval_activations(100)[:, 0].tolist() == list(range(950, 1000))


def test_array_stream_resumes_at_any_token_and_crosses_passes_seamlessly():
    source = ArrayActivations(numbered(), seed=1)
    batches = list(itertools.islice(source.stream(64), 40))  # 2560 tokens: crosses two pass boundaries
    resumed = list(itertools.islice(source.stream(64, start_token=64 * 17), 23))
    for a, b in zip(batches[17:], resumed):
        assert torch.equal(a, b)
    next_pass = torch.cat(batches)[950:1900, 0].long()
    assert sorted(next_pass.tolist()) == list(range(950))
    other_seed = next(ArrayActivations(numbered(), seed=2).stream(64))
    assert not torch.equal(other_seed, batches[0])


def test_sample_is_seeded_and_drawn_from_training_rows_without_replacement():
    source = ArrayActivations(numbered(), seed=0)
    a, b, c = source.sample(300, seed=5), source.sample(300, seed=5), source.sample(300, seed=6)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert len(set(a[:, 0].tolist())) == 300 and a[:, 0].max() < 950


@pytest.mark.parametrize("array, message", [
    (np.zeros((10, 3, 3), np.float32), "expected a [N, d_in] array"),
    (np.zeros((1, 3), np.float32), "expected a [N, d_in] array"),
    (np.ones((10, 4), np.int32), "dtype int32"),
    (np.where(np.arange(40).reshape(10, 4) == 22, np.nan, 1.0), "row 5 holds NaN or inf"),
    (np.where(np.arange(40).reshape(10, 4) == 39, np.inf, 1.0).astype(np.float16), "row 9 holds NaN or inf"),
])
def test_bad_arrays_are_refused_in_one_line(array, message):
    with pytest.raises(MonoscopeError, match=message.replace("[", r"\[").replace("]", r"\]")) as info:
        check_activations(array, "acts.npy")
    assert "\n" not in str(info.value)


def test_cli_refuses_a_bad_activations_file_with_exit_2_and_one_line(tmp_path):
    bad = tmp_path / "acts.npy"
    np.save(bad, np.ones((20, 4), np.int64))
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "app.cli", "train-sae", "--activations", str(bad), "--out", str(out)],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "dtype int64" in proc.stderr
    assert not out.exists()
    (tmp_path / "text.npy").write_text("not numpy")
    proc = subprocess.run([sys.executable, "-m", "app.cli", "train-sae", "--activations", str(tmp_path / "text.npy"),
                           "--out", str(out)], capture_output=True, text=True)
    assert proc.returncode == 2 and "not a readable .npy" in proc.stderr


def test_lm_activations_are_the_models_mlp_post_without_bos(tiny_run, tiny_spec):
    source = LMActivations(tiny_run, seed=0, buffer_tokens=310, lm_batch_rows=4)
    per_row = tiny_spec.n_ctx - 1
    assert source.d_in == tiny_spec.lm["d_mlp"] and source.rows_per_buffer == 10
    rows = np.array([5, 2, 9])
    expected = mlp_activations(source.model, torch.from_numpy(source.train[np.sort(rows)].astype(np.int64)))
    torch.testing.assert_close(source.activations(rows), expected[:, 1:].reshape(-1, source.d_in))
    assert source.activations(rows).shape == (3 * per_row, source.d_in)

    # one buffer = the activations of 10 rows of the seeded permutation, shuffled across rows
    stream = source.stream(31)
    first = torch.cat(list(itertools.islice(stream, 10)))  # 310 tokens = exactly one buffer
    buffer_rows = np.random.default_rng([0, 0, 7]).permutation(len(source.train))[:10]
    unshuffled = source.activations(buffer_rows)
    assert torch.equal(first[torch.argsort(first.sum(1))], unshuffled[torch.argsort(unshuffled.sum(1))])
    assert not torch.equal(first, unshuffled)

    resumed = next(source.stream(31, start_token=310 + 62))
    again = list(itertools.islice(stream, 3))[2]
    assert torch.equal(resumed, again)

    held = source.eval_activations(100)
    assert held.shape == (100, source.d_in)
    expected = mlp_activations(source.model, torch.from_numpy(source.heldout[:4].astype(np.int64)))
    torch.testing.assert_close(held, expected[:, 1:].reshape(-1, source.d_in)[:100])
    assert source.heldout_tokens(100).shape == (4, tiny_spec.n_ctx)
