"""Held-out rows in one seeded order (DESIGN: every consumer takes rows in that order, never a path-sorted prefix)."""

from __future__ import annotations

import numpy as np
import pytest

from sae.corpus.build import HELDOUT_ORDER_FILENAME, heldout_permutation, load_heldout
from sae.errors import MonoscopeError


def test_the_corpus_records_its_order_and_every_read_follows_it(tiny_run):
    rows = np.load(tiny_run / "corpus" / "heldout.npy")
    order = np.load(tiny_run / "corpus" / HELDOUT_ORDER_FILENAME)
    assert sorted(order.tolist()) == list(range(len(rows)))  # a permutation of every held-out row
    np.testing.assert_array_equal(order, heldout_permutation(len(rows)))
    n_ctx = rows.shape[1]
    few = load_heldout(tiny_run, 10 * n_ctx)
    np.testing.assert_array_equal(few, rows[order[:10]])
    np.testing.assert_array_equal(few, load_heldout(tiny_run, 10 * n_ctx))  # the same rows every time
    np.testing.assert_array_equal(load_heldout(tiny_run, 20 * n_ctx)[:10], few)  # a larger sample extends it
    np.testing.assert_array_equal(load_heldout(tiny_run), rows[order])


def test_a_small_sample_spreads_over_the_whole_split(tiny_run):
    """The first rows of the file are its first files (sorted by path): a sample must not be those."""
    n_rows, n_ctx = np.load(tiny_run / "corpus" / "heldout.npy", mmap_mode="r").shape
    taken = np.load(tiny_run / "corpus" / HELDOUT_ORDER_FILENAME)[: n_rows // 10]
    assert taken.min() < 0.2 * n_rows and taken.max() > 0.8 * n_rows
    assert not np.array_equal(load_heldout(tiny_run, (n_rows // 10) * n_ctx),
                              np.load(tiny_run / "corpus" / "heldout.npy")[: n_rows // 10])


def test_a_corpus_built_before_the_order_file_gets_the_same_order(tiny_run_copy):
    expected = load_heldout(tiny_run_copy)
    (tiny_run_copy / "corpus" / HELDOUT_ORDER_FILENAME).unlink()
    np.testing.assert_array_equal(load_heldout(tiny_run_copy), expected)


def test_a_damaged_order_is_refused_in_one_line(tiny_run_copy):
    np.save(tiny_run_copy / "corpus" / HELDOUT_ORDER_FILENAME, np.zeros(3, dtype=np.int64))
    with pytest.raises(MonoscopeError, match="not a permutation"):
        load_heldout(tiny_run_copy)
