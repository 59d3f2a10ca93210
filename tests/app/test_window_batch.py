"""Ingest's batch of windows (app/present/window_batch.py) against the one-window definitions it stands for: every
window's Example JSON (decode_window -> pydantic) and HTML (window_html), byte for byte, on awkward tokens and
windows; and a whole ingested unit's stored UnitData and sections against the read model's live rendering of it."""

import numpy as np
from sqlalchemy import select

from app.present.unit_sections import render_sections, unpack
from app.present.window_batch import render, vocabulary
from app.present.windows import window_html
from app.read.unit_data import PROXY_ARRAYS, example, unit_data
from app.read.unit_proxies import unit_proxy_stats
from app.store.chunks import PROXY_COLUMNS
from app.store.db import session_factory, upgrade
from app.store.example_rows import OPEN, PAGE_ORDER, WINDOW_COLUMNS, unpack_rows
from app.store.ingest import ingest_run
from app.store.models import Basis, Example, Model, Unit
from app.store.vocabulary import token_strings

STRINGS = ["\n", "    ", " ", "\t", "\r\n", "<", ">", "&", '"', "'", "</span>", "\x00", "\u2028é", "  x", "a\n  ",
           "\\", "Δ", "def", " \n", "\t\t"]
BEFORE, W = 4, 9


def _windows(rng: np.random.Generator, m: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    ids = rng.integers(0, len(STRINGS), (m, W)).astype(np.int32)
    acts = np.where(rng.random((m, W)) < 0.4, rng.random((m, W), dtype=np.float32) * 3, 0).astype(np.float32)
    effects = np.where(acts > 0, rng.standard_normal((m, W)).astype(np.float32), 0).astype(np.float32)
    effects[:, -1] = np.nan
    ids[0, :BEFORE + 2] = -1  # padding over the max token: the next kept one is the max
    ids[1, :] = -1  # nothing kept
    ids[2, BEFORE:] = -1  # no kept token at or after the max: the largest activation is
    ids[3, 2] = len(STRINGS) + 7  # outside the vocabulary: shown as "", its id kept
    acts[4, 3] = -0.0  # negative zero is not silent
    acts[5, :] = 0.0  # silent but for the max token
    effects[5, :] = 0.0
    acts[6, 1], effects[6, 1] = 1e-7, 1e-5  # numbers pydantic and Python write differently
    acts[7, 2] = np.float32(0.125) / np.float32(2.5)  # colour on a rounding tie
    return ids, acts, effects, rng.random(m, dtype=np.float32) * 4


def test_batch_is_the_one_window_json_and_html_byte_for_byte():
    rng = np.random.default_rng(0)
    ids, acts, effects, values = _windows(rng, 60)
    units = np.repeat(np.arange(6), 10)
    groups = np.tile(np.array([0, 0, 0, 1, 1, 3, 3, 3, 3, 4]), 6)
    scales = {0: (2.5, 1.7), 1: (0.0, None), 2: (3.0, 0.0), 3: (1.0, 2.0), 4: (2.5, 1.7), 5: (1e-30, 1e-30)}
    for with_effects in (True, False):
        made = render(ids, acts, effects if with_effects else None, values, units, groups, scales,
                      vocabulary(tuple(STRINGS)), BEFORE)
        expected: dict[tuple[int, int], tuple[list, list]] = {}
        for i in range(len(ids)):
            e = example(float(values[i]), ids[i].tobytes(), acts[i].tobytes(),
                        effects[i].tobytes() if with_effects else None, STRINGS, BEFORE)
            scale, effect_scale = scales[int(units[i])]
            json_parts, html_parts = expected.setdefault((int(units[i]), int(groups[i])), ([], []))
            json_parts.append(e.model_dump_json())
            html_parts.append(window_html(e.value, e.shown, e.acts, e.effects, e.max_position, scale, effect_scale))
        assert made.keys() == expected.keys()
        for key, (json_parts, html_parts) in expected.items():
            assert made[key][0].decode() == ",".join(json_parts), key
            assert made[key][1].decode() == "".join(html_parts), key
    assert "&lt;/span&gt;" in made[(0, 0)][1].decode() + made[(1, 0)][1].decode() + made[(2, 3)][1].decode()


def test_proxy_rows_have_the_proxy_statistics_columns():
    assert PROXY_COLUMNS == ("basis_id", "unit_index", "position", "proxy", *PROXY_ARRAYS, "hist_counts", "hist_acts")


def test_ingested_units_are_what_the_read_model_renders_from_their_rows(analysed_run, tmp_path):
    """Every unit's stored UnitData JSON and page sections (made in batches at ingest) are the bytes the read model
    makes from the unit's stored rows one at a time (app.read.unit_data.unit_data, render_sections)."""
    url = f"sqlite:///{tmp_path / 'batch.db'}"
    upgrade(url)
    ingest_run(analysed_run, url=url, log=lambda m: None)
    with session_factory(url)() as session:
        checked = 0
        for basis in session.scalars(select(Basis)):
            strings = token_strings(session, basis.model_id)
            units = session.scalars(select(Unit).where(Unit.basis_id == basis.id).order_by(Unit.index)).all()
            proxies = unit_proxy_stats(session, basis.id, [u.index for u in units])
            for unit in units:
                rows = unpack_rows(session.execute(select(*WINDOW_COLUMNS).where(Example.unit_id == unit.id, OPEN)
                                                   .order_by(*PAGE_ORDER)))
                data = unit_data(unit, rows, strings, int(basis.config["context_before"]),
                                 {"proxies": proxies.get(unit.index, [])})
                stored = unpack(unit.sections)
                assert stored.data_json == data.model_dump_json().encode(), (basis.name, unit.index)
                sections = render_sections(data, session.get(Model, basis.model_id).name)
                assert stored.sections == tuple(s.encode() for s in sections), (basis.name, unit.index)
                checked += 1
        assert checked > 100

