"""Ingest's batch of windows (app/present/window_batch.py) against the one-window definitions it stands for: every
window's Example JSON (decode_window -> pydantic) and HTML (window_html), byte for byte, on awkward tokens and
windows; and a whole ingested unit's stored UnitData and sections against the read model's live rendering of it."""

import numpy as np
from sqlalchemy import select

from app.present.unit_sections import fill_windows, render_sections, without_windows
from app.present.window_batch import windows_html, windows_json
from app.present.window_pieces import Vocabulary
from app.present.windows import window_html
from app.read.queries.unit import unit_view
from app.read.unit_data import example, proxy_stats_of, unit_data
from app.read.unit_proxies import unit_proxy_stats
from app.store.proxy_columns import STATS, hists, proxy_columns, stats_array
from app.store.db import session_factory, upgrade
from app.read.windows import Batch
from app.store.example_rows import OPEN, PAGE_ORDER, WINDOW_COLUMNS, unpack_rows
from app.store.ingest import ingest_run
from app.store.models import Basis, Example, Model, Unit
from app.store.vocabulary import token_strings

STRINGS = ["\n", "    ", " ", "\t", "\r\n", "<", ">", "&", '"', "'", "</span>", "\x00", "\u2028é", "  x", "a\n  ",
           "\\", "Δ", "def", " \n", "\t\t"]
BEFORE, W = 4, 9
VOCAB = Vocabulary(STRINGS)


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
    acts[8, 1], effects[8, 1] = -0.0, 0.5  # an effect where the activation is -0.0: Python colours it "-0.00"
    acts[8, 2], effects[8, 2] = -1.5, -0.25  # a negative activation with an effect
    acts[9, 0], acts[9, 1], effects[9, 1] = np.nan, np.inf, 2.0  # not finite
    return ids, acts, effects, rng.random(m, dtype=np.float32) * 4


def test_batch_is_the_one_window_json_and_html_byte_for_byte():
    rng = np.random.default_rng(0)
    ids, acts, effects, values = _windows(rng, 60)
    units = np.repeat(np.arange(6), 10)
    groups = np.tile(np.array([0, 0, 0, 1, 1, 3, 3, 3, 3, 4]), 6)
    scales = {0: (2.5, 1.7), 1: (0.0, None), 2: (3.0, 0.0), 3: (1.0, 2.0), 4: (2.5, 1.7), 5: (1e-30, 1e-30)}
    for with_effects in (True, False):
        batch = Batch(ids, acts, effects if with_effects else None, values, units, groups)
        made_json = windows_json(batch, VOCAB, BEFORE)
        made_html = windows_html(batch, scales, VOCAB, BEFORE)
        expected: dict[tuple[int, int], tuple[list, list]] = {}
        for i in range(len(ids)):
            e = example(float(values[i]), ids[i].tobytes(), acts[i].tobytes(),
                        effects[i].tobytes() if with_effects else None, STRINGS, BEFORE)
            scale, effect_scale = scales[int(units[i])]
            json_parts, html_parts = expected.setdefault((int(units[i]), int(groups[i])), ([], []))
            json_parts.append(e.model_dump_json())
            html_parts.append(window_html(e.value, e.shown, e.acts, e.effects, e.max_position, scale, effect_scale))
        assert made_json.keys() == made_html.keys() == expected.keys()
        for key, (json_parts, html_parts) in expected.items():
            assert made_json[key].decode() == ",".join(json_parts), key
            assert made_html[key].decode() == "".join(html_parts), key
    assert "&lt;/span&gt;" in made_html[(0, 0)].decode() + made_html[(1, 0)].decode() + made_html[(2, 3)].decode()


def test_colours_near_rounding_ties_are_the_definitions():
    """Activations and effects whose colours (`.2f` of act / scale) fall on or within a few ulps of a half-hundredth
    come out as token_span writes them, by the table or by the definition itself."""
    rng = np.random.default_rng(1)
    m = 400
    ids = rng.integers(0, len(STRINGS), (m, W)).astype(np.int32)
    acts = ((rng.integers(0, 100, (m, W)) + 0.5) / 100 * 2.5).astype(np.float32)  # k + 0.5 hundredths of 2.5
    for _ in range(2):  # and up to two float32 steps either way
        acts = np.nextafter(acts, acts + rng.integers(-1, 2, (m, W)).astype(np.float32))
    effects = np.where(rng.random((m, W)) < 0.5, acts * np.float32(-0.7), 0).astype(np.float32)
    batch = Batch(ids, acts, effects, np.ones(m, np.float32), np.zeros(m, int), np.repeat(np.arange(8), m // 8))
    made = windows_html(batch, {0: (2.5, 1.75)}, VOCAB, BEFORE)
    for g in range(8):
        expected = "".join(window_html(1.0, e.shown, e.acts, e.effects, e.max_position, 2.5, 1.75)
                           for i in range(g * m // 8, (g + 1) * m // 8)
                           for e in [example(1.0, ids[i].tobytes(), acts[i].tobytes(), effects[i].tobytes(),
                                             STRINGS, BEFORE)])
        assert made[(0, g)].decode() == expected


def test_numbers_of_every_magnitude_are_the_definitions():
    """Titles of activations and effects from 1e-9 to 1e9, either sign, powers of ten and rounding edges (9999.5,
    0.99995, 1e-4), whether written from the tables or by the definition."""
    rng = np.random.default_rng(2)
    m = 300
    ids = rng.integers(0, len(STRINGS), (m, W)).astype(np.int32)
    magnitudes = 10.0 ** rng.integers(-9, 10, (m, W))
    acts = (rng.random((m, W)) * magnitudes * np.where(rng.random((m, W)) < 0.2, -1, 1)).astype(np.float32)
    edges = np.float32([9999.5, 0.99995, 1e-4, 9.9995e-5, 1000, 10, 1, 0.1, 0.001, 1e4, 99.995, 0.5, 3.0])
    acts[: len(edges), 0], acts[: len(edges), 1] = edges, -edges
    effects = (acts * rng.choice(np.float32([-1, 1, 1e-3, 1e5]), (m, W))).astype(np.float32)
    batch = Batch(ids, acts, effects, np.ones(m, np.float32), np.zeros(m, int), np.zeros(m, int))
    made = windows_html(batch, {0: (7.5, 0.3)}, VOCAB, BEFORE)
    expected = "".join(window_html(1.0, e.shown, e.acts, e.effects, e.max_position, 7.5, 0.3) for i in range(m)
                       for e in [example(1.0, ids[i].tobytes(), acts[i].tobytes(), effects[i].tobytes(), STRINGS,
                                         BEFORE)])
    assert made[(0, 0)].decode() == expected


def test_packed_proxy_columns_hold_the_analysis_statistics():
    """A unit row's proxy columns give back the analysis's arrays exactly (NaN where a statistic is undefined), and
    an analysis without proxies packs none."""
    rng = np.random.default_rng(0)
    arrays = {name: rng.normal(size=(5, 3)).astype(np.float32) for name in STATS.values()}
    arrays["proxy_corr"][1, 2] = arrays["proxy_recall"][4, 0] = np.nan
    arrays["proxy_hist_counts"] = rng.integers(0, 1000, (5, 3, 11, 4)).astype(np.int32)
    arrays["proxy_hist_acts"] = rng.random((5, 3, 11, 4), dtype=np.float32) * 1e4
    arrays["proxy_names"] = np.array(["a", "b", "c"])
    packed = proxy_columns(arrays, 1, 5)
    stats = stats_array([s for s, _ in packed])
    expected = np.stack([arrays[name][1:5] for name in STATS.values()], axis=-1)  # the definition, spelt out
    assert np.array_equal(stats, expected, equal_nan=True)
    for u, (_, blob) in enumerate(packed, start=1):
        unpacked = hists(blob)
        assert np.array_equal(unpacked.counts, arrays["proxy_hist_counts"][u])
        assert np.array_equal(unpacked.acts, arrays["proxy_hist_acts"][u].astype(np.float64))
    assert proxy_stats_of(arrays, 1, 2)[0][2].corr is None and proxy_stats_of(arrays, 4, 5)[0][0].recall is None
    assert proxy_columns({"proxy_corr": arrays["proxy_corr"]}, 0, 2) == [(None, None), (None, None)]


def test_ingested_units_are_what_the_read_model_renders_from_their_rows(analysed_run, tmp_path):
    """Every unit's page sections and twin, as the read model assembles them (the UnitData and sections stored at
    ingest without windows, the windows rendered from the example rows), are the bytes the one-unit definitions make
    from the unit's stored rows (app.read.unit_data.unit_data, render_sections, window_html)."""
    url = f"sqlite:///{tmp_path / 'batch.db'}"
    upgrade(url)
    ingest_run(analysed_run, url=url, log=lambda m: None)
    with session_factory(url)() as session:
        checked = 0
        for basis in session.scalars(select(Basis)):
            strings = token_strings(session, basis.model_id)
            model_name = session.get(Model, basis.model_id).name
            units = session.scalars(select(Unit).where(Unit.basis_id == basis.id).order_by(Unit.index)).all()
            proxies = unit_proxy_stats(session, basis.id, [u.index for u in units])
            for unit in units:
                rows = unpack_rows(session.execute(select(*WINDOW_COLUMNS).where(Example.unit_id == unit.id, OPEN)
                                                   .order_by(*PAGE_ORDER)))
                data = unit_data(unit, rows, strings, int(basis.config["context_before"]),
                                 {"proxies": proxies.get(unit.index, [])})
                view = unit_view(session=session, basis=basis.name, index=unit.index, model=None)
                assert view.data_json == without_windows(data).model_dump_json().encode()
                around = view.around.model_dump_json().encode()
                assert view.json() == around[:-1] + b"," + data.model_dump_json().encode()[1:], (basis.name, unit)
                effect_scale = data.max_abs_effect or None
                html = lambda examples: "".join(window_html(e.value, e.shown, e.acts, e.effects, e.max_position,  # noqa
                                                            data.max_activation, effect_scale) for e in examples)
                made = {0: html(data.top_examples), **{1 + iv.index: html(iv.samples) for iv in data.intervals}}
                groups = {g for g, text in made.items() if text}
                stats, body, frame = render_sections(without_windows(data), model_name, groups)
                expected = (stats.encode(), body.encode(),
                            fill_windows(frame.encode(), {g: text.encode() for g, text in made.items()}))
                assert view.page_sections() == expected, (basis.name, unit.index)
                checked += 1
        assert checked > 100
