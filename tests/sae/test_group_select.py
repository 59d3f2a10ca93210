"""GroupSelect (sae/analysis/state.py): the k first entries per group by (key, token), compiled and in numpy, against
sorting everything offered."""

import numpy as np
import pytest

from sae.analysis.state import GroupSelect


@pytest.mark.parametrize("compiled", [True, False], ids=["numba", "numpy"])
def test_the_selection_equals_a_stable_sort_of_every_entry_offered(compiled, monkeypatch):
    if not compiled:
        monkeypatch.setattr("sae.analysis.state.kernels", lambda *args: None)  # what numba's absence gives
    gen = np.random.default_rng(0)
    n_groups, k, per_batch, batches = 40, 6, 500, 7
    select = GroupSelect(n_groups, k)
    seen = []
    for b in range(batches):  # tokens ascend across batches (the stream order); keys with many ties
        token = np.sort(gen.integers(b * 10_000, (b + 1) * 10_000, per_batch))
        group, key = gen.integers(0, n_groups, per_batch), gen.integers(0, 30, per_batch)
        value = gen.random(per_batch).astype(np.float32)
        select.update(group, key, token, value)
        seen.append((group, key, token, value))
    group, key, token, value = (np.concatenate(x) for x in zip(*seen))
    order = np.lexsort((token, key, group))
    for g in range(n_groups):
        mine = order[group[order] == g][:k]
        n = len(mine)
        assert select.key[g, :n].tolist() == key[mine].tolist()
        assert select.token[g, :n].tolist() == token[mine].tolist()
        assert select.value[g, :n].tolist() == value[mine].tolist()
        assert (select.token[g, n:] == -1).all() and (select.key[g, n:] == GroupSelect.PAD).all()
    assert select.count().sum() == n_groups * k  # every group filled: the comparison above is not vacuous
