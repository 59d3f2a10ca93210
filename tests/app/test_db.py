"""Migrations build and remove the whole schema on SQLite and PostgreSQL (no create_all anywhere)."""

from sqlalchemy import inspect

from app.store.db import downgrade, make_engine, upgrade
from app.store.models import Base

TABLES = {"model", "token", "basis", "unit", "example", "unit_link", "label", "review", "review_unit", "review_score",
          "user", "app_secret", "browser_session"}


def test_migrations_upgrade_from_empty_and_downgrade(database_url):
    upgrade(database_url)
    inspector = inspect(make_engine(database_url))
    assert TABLES <= set(inspector.get_table_names())
    for table in Base.metadata.sorted_tables:  # the migrations make exactly what the ORM maps
        assert {c["name"] for c in inspector.get_columns(table.name)} == set(table.columns.keys())
    downgrade(database_url)
    assert set(inspect(make_engine(database_url)).get_table_names()) <= {"alembic_version"}
    upgrade(database_url)  # and up again: downgrade left nothing behind that would collide
    assert TABLES <= set(inspect(make_engine(database_url)).get_table_names())


def _model_and_basis(c) -> None:
    """Insert model 1 with its neuron basis 1 (4 units), in SQL every revision accepts."""
    from sqlalchemy import text

    c.execute(text("INSERT INTO model (id, name, run_dir, config, metrics) VALUES (1, 'm', '/r', '{}', '{}')"))
    c.execute(text("INSERT INTO basis (id, model_id, name, kind, hook_name, n_units, d_in, metrics, "
                   "density_histogram, config, status, version) VALUES (1, 1, 'neurons', 'neuron', 'h', 4, 4, "
                   "'{}', '{}', '{}', 'ready', 1)"))


def _unit(c, unit_id: int) -> None:
    """Insert unit `unit_id` (index unit_id - 1) of basis 1, in SQL every revision accepts."""
    from sqlalchemy import text

    c.execute(text("INSERT INTO unit (id, basis_id, \"index\", firing_count, density, max_activation, "
                   "mean_activation, top_tokens, act_hist, logit_hist, top_logits, bottom_logits, interval_edges, "
                   "interval_counts) VALUES (:id, 1, :id - 1, 3, 0.5, 2.0, 1.0, 'a', '{}', '{}', '[]', '[]', '[]', "
                   "'[]')"), {"id": unit_id})


def test_upgrade_keeps_what_the_first_schema_held(database_url):
    """A database made by the first migration keeps its labels and users through the second."""
    from sqlalchemy import text

    upgrade(database_url, "0001")
    engine = make_engine(database_url)
    with engine.begin() as c:
        _model_and_basis(c)
        c.execute(text("INSERT INTO \"user\" (id, name, token_hash) VALUES (1, 'alice', 'abc')"))
        c.execute(text("INSERT INTO label (basis_id, unit_index, author_id, text) VALUES (1, 2, 1, 'commas')"))
    upgrade(database_url)
    with engine.connect() as c:
        assert c.execute(text("SELECT unit_index, text, note FROM label")).all() == [(2, "commas", None)]
        assert c.execute(text("SELECT name, revoked_at FROM \"user\"")).all() == [("alice", None)]


def test_an_app_refuses_a_schema_behind_the_code_and_names_the_command(database_url, tmp_path):
    """`monoscope serve` upgrades first; an app started any other way (a uvicorn factory, a container whose
    migrations did not run) must refuse an older schema rather than fail on its first query."""
    import subprocess
    import sys

    upgrade(database_url, "0002")
    import os

    # the code under test: a checkout run with PYTHONPATH (not the installed package) passes it on
    env = {"MONOSCOPE_DATABASE_URL": database_url, "PATH": "/usr/bin:/bin",
           **{k: v for k, v in os.environ.items() if k == "PYTHONPATH"}}
    code = "from app.web import create_app; create_app()"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert out.returncode != 0 and "has schema 0002, this code needs 0" in out.stderr
    assert "monoscope db upgrade" in out.stderr
    upgrade(database_url)
    ok = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr


def test_downgrades_and_upgrades_keep_units_examples_and_links(database_url):
    """Columns come and go in place: a table rebuild on SQLite (foreign keys on) would delete a unit's examples and
    links by cascade."""
    from sqlalchemy import text

    upgrade(database_url, "0010")  # the last revision with one example row per window
    engine = make_engine(database_url)
    with engine.begin() as c:
        _model_and_basis(c)
        _unit(c, 1)
        c.execute(text("INSERT INTO example (unit_id, kind, rank, value, token_ids, activations) "
                       "VALUES (1, 'top', 0, 2.0, :b, :b)"), {"b": b"\x00" * 8})
        c.execute(text("INSERT INTO unit_link (unit_id, kind, rank, target_basis_id, target_index, weight) "
                       "VALUES (1, 'neuron_feature', 0, 1, 0, 0.9)"))

    def counts() -> tuple:
        with engine.connect() as c:
            return tuple(c.execute(text(f"SELECT count(*) FROM {t}")).scalar() for t in ("unit", "example", "unit_link"))

    assert counts() == (1, 1, 1)
    downgrade(database_url, "0004")
    assert counts() == (1, 1, 1)
    upgrade(database_url)
    assert counts() == (1, 1, 1)


def test_packing_the_examples_keeps_every_window_and_unpacking_gives_them_back(database_url):
    """Revision 0011 packs one row per window into one row per (unit, kind) in page order; its downgrade restores the
    rows as they were (values are float32, as the analysis writes them)."""
    import numpy as np
    from sqlalchemy import text

    from app.store.example_rows import WINDOW_COLUMNS, unpack_rows
    from app.store.models import Example
    from app.store.db import session_factory
    from sqlalchemy import select

    upgrade(database_url, "0010")
    engine = make_engine(database_url)
    rng = np.random.default_rng(0)
    windows = []  # (unit_id, kind, bucket, rank, value, ids, acts, effects), inserted out of order
    for unit_id in (1, 2):
        for kind, buckets in (("top", [None, None, None]), ("interval", [2, 0, 0, 5]), ("review_top", [None]),
                              ("review_interval", [1, 1])):
            for i, bucket in enumerate(buckets):
                rank = buckets[:i].count(bucket)
                ids = rng.integers(-1, 50, 5).astype("<i4").tobytes()
                acts = rng.random(5, dtype=np.float32).astype("<f4").tobytes()
                effects = None if kind.startswith("review") else rng.random(5, dtype=np.float32).tobytes()
                windows.append((unit_id, kind, bucket, rank, float(np.float32(rng.random())), ids, acts, effects))
    with engine.begin() as c:
        _model_and_basis(c)
        _unit(c, 1), _unit(c, 2)
        for w in reversed(windows):
            c.execute(text("INSERT INTO example (unit_id, kind, bucket, rank, value, token_ids, activations, effects) "
                           "VALUES (:u, :k, :b, :r, :v, :i, :a, :e)"),
                      dict(zip("ukbrviae", w)))
    upgrade(database_url)
    with session_factory(database_url)() as session:
        for unit_id in (1, 2):
            rows = session.execute(select(*WINDOW_COLUMNS).where(Example.unit_id == unit_id)
                                   .order_by(Example.kind)).all()
            assert [(r.kind, r.n, r.width) for r in rows] == [("interval", 4, 5), ("review_interval", 2, 5),
                                                               ("review_top", 1, 5), ("top", 3, 5)]
            got = [(unit_id, w.kind, w.bucket, w.rank, w.value, w.token_ids, w.activations, w.effects)
                   for w in unpack_rows(rows)]
            page_order = sorted((w for w in windows if w[0] == unit_id),
                                key=lambda w: (w[1], -1 if w[2] is None else w[2], w[3]))
            assert got == page_order
    downgrade(database_url, "0010")
    with engine.connect() as c:
        back = c.execute(text("SELECT unit_id, kind, bucket, rank, value, token_ids, activations, effects "
                              "FROM example")).all()
    as_bytes = [tuple(bytes(v) if isinstance(v, memoryview) else v for v in row) for row in back]
    assert sorted(as_bytes, key=repr) == sorted(windows, key=repr)


def test_examples_are_stored_compressed_and_the_downgrade_decompresses_them(analysed_run, database_url):
    """Ingest writes every example row's window arrays as zstd frames (codec 1), read back as the analysis wrote
    them; revision 0012's downgrade leaves the same windows as plain arrays, which the code reads again (codec 0)."""
    import numpy as np
    from sqlalchemy import select, text

    from app.store.db import session_factory
    from app.store.example_rows import WINDOW_COLUMNS, ZSTD, unpack_rows
    from app.store.ingest import ingest_run
    from app.store.models import Basis, Example, Unit

    upgrade(database_url)
    ingest_run(analysed_run, url=database_url, log=lambda m: None, workers=1)
    with np.load(analysed_run / "analysis" / "neurons" / "units.npz") as z:
        n_top = int(z["top_count"][3])
        expected_ids, expected_acts = z["top_token_ids"][3, :n_top], z["top_acts"][3, :n_top]

    def windows() -> tuple[list, set[int]]:
        with session_factory(database_url)() as session:
            rows = session.execute(select(Example.unit_id, *WINDOW_COLUMNS).order_by(Example.id)).all()
            unit_id = session.scalar(select(Unit.id).join(Basis).where(Basis.name == "neurons", Unit.index == 3))
        top = [w for w in unpack_rows([r[1:] for r in rows if r[0] == unit_id]) if w.kind == "top"]
        assert np.array_equal(np.frombuffer(b"".join(w.token_ids for w in top), "<i4").reshape(n_top, -1),
                              expected_ids)
        assert np.array_equal(np.frombuffer(b"".join(w.activations for w in top), "<f4").reshape(n_top, -1),
                              expected_acts)
        return [(r[0], unpack_rows([r[1:]])) for r in rows], {r.codec for r in rows}

    stored, codecs = windows()
    assert codecs == {ZSTD} and len(stored) > 100
    downgrade(database_url, "0011")
    with make_engine(database_url).begin() as c:  # plain arrays again, as revision 0011 reads them
        sizes = c.execute(text("SELECT n, width, length(token_ids) FROM example")).all()
        assert all(length == 4 * n * width for n, width, length in sizes)
    upgrade(database_url)
    again, codecs = windows()
    assert codecs == {0} and again == stored


def test_proxy_rows_become_unit_columns_and_the_downgrade_restores_them(database_url):
    """Revision 0013 packs a unit's `unit_proxy` rows (one per proxy) into its row's two proxy columns, which the read
    model unpacks to the same ProxyStat values; its downgrade restores the rows as they were (NULL stays NULL, the
    activation sums keep their stored decimals)."""
    import json

    import numpy as np
    from sqlalchemy import text

    from app.read.unit_proxies import unit_proxy_stats
    from app.store.db import session_factory

    upgrade(database_url, "0012")
    engine = make_engine(database_url)
    rows = []  # (unit_index, position, proxy, corr, corr_pos, fire_share, act_share, recall, counts, acts)
    for index in (0, 2):
        for position, proxy in enumerate(("comment", "digits")):
            stats = [0.25 * (index + 1), None if position else -0.5, 0.125, 1.0, 3e-8]
            counts = [[index, position, 7, 0], [1, 2, 3, 4]]
            acts = [[0.125, 12345.679, 0.0, 1.5], [2.0, 0.001, 7.25, 99999.999]]
            rows.append((index, position, proxy, *stats, counts, acts))
    with engine.begin() as c:
        _model_and_basis(c)
        c.execute(text("UPDATE basis SET config = :c"),
                  {"c": json.dumps({"proxies": [{"name": "comment"}, {"name": "digits"}]})})
        for unit_id in (1, 2, 3):
            _unit(c, unit_id)
        for r in rows:
            c.execute(text("INSERT INTO unit_proxy (basis_id, unit_index, position, proxy, corr, corr_pos, "
                           "fire_share, act_share, recall, hist_counts, hist_acts) VALUES (1, :u, :p, :n, :c, :cp, "
                           ":f, :a, :r, :hc, :ha)"),
                      dict(zip(("u", "p", "n", "c", "cp", "f", "a", "r"), r[:8]), hc=json.dumps(r[8]),
                           ha=json.dumps(r[9])))
    upgrade(database_url)
    with session_factory(database_url)() as session:
        stats = unit_proxy_stats(session, 1, [0, 1, 2])
    assert sorted(stats) == [0, 2]  # unit 1 had no rows: no proxies
    got = [(i, k, p.name, p.corr, p.corr_pos, p.fire_share, p.act_share, p.recall, p.hist_counts, p.hist_acts)
           for i in (0, 2) for k, p in enumerate(stats[i])]
    assert got == [(*r[:3], *(None if v is None else float(np.float32(v)) for v in r[3:8]), *r[8:]) for r in rows]
    downgrade(database_url, "0012")
    with engine.connect() as c:
        back = c.execute(text("SELECT unit_index, position, proxy, corr, corr_pos, fire_share, act_share, recall, "
                              "hist_counts, hist_acts FROM unit_proxy ORDER BY unit_index, position")).all()
    assert [(*r[:8], json.loads(r[8]) if isinstance(r[8], str) else r[8],
             json.loads(r[9]) if isinstance(r[9], str) else r[9]) for r in back] == \
        [(*r[:3], *(None if v is None else float(np.float32(v)) for v in r[3:8]), *r[8:]) for r in rows]
