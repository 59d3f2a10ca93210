"""`monoscope sweep` on the tiny run: a grid of SAEs trained, analysed and ingested, drawn on the overview's L0–FVU
frontier (a real server), skipped when up to date, and bad grids refused in one line."""

from __future__ import annotations

import html
import json
import re

import httpx
import numpy as np
import pytest
from webapp_fixtures import monoscope, start_server, stop_server

GRID = ("--architectures", "topk,relu", "--k", "4,8", "--l1", "1", "--d-sae", "64", "--tokens", "8192",
        "--batch-size", "512", "--analysis-tokens", "2048", "--device", "cpu")
NAMES = ["topk-k4-64", "topk-k8-64", "relu-l1-1-64"]
SIZES = ("--architectures", "topk", "--k", "4", "--d-sae", "64,32", "--tokens", "8192", "--batch-size", "512",
         "--analysis-tokens", "2048", "--device", "cpu")


@pytest.mark.usefixtures("single_thread")
def test_sweep_trains_analyses_ingests_and_draws_the_frontier(monkeypatch, capsys, tiny_run_copy, tmp_path):
    db = f"sqlite:///{tmp_path / 'sweep.db'}"
    code, out, err = monoscope(monkeypatch, capsys, "sweep", "--run", tiny_run_copy, *GRID, "--db", db)
    assert code == 0, err
    assert all(f"== sweep {i}/3: {name}" in out for i, name in enumerate(NAMES, 1)), out
    metrics = {n: json.loads((tiny_run_copy / "analysis" / n / "basis.json").read_text())["metrics"] for n in NAMES}
    assert metrics["topk-k4-64"]["l0"] == pytest.approx(4) and metrics["topk-k8-64"]["l0"] == pytest.approx(8)
    for name in NAMES:
        assert f"  {name}: L0 {metrics[name]['l0']:.1f}, FVU {metrics[name]['fvu']:.4f}" in out  # the frontier
    site = start_server(db, tiny_run_copy)
    try:
        overview = httpx.get(site.url + "/api/v1/overview", timeout=30).json()
        assert {b["name"] for b in overview["bases"]} == {"neurons", *NAMES}
        page = httpx.get(site.url + "/", timeout=30).text
        spec = json.loads(html.unescape(re.search(
            r'id="frontier-fvu".*?<script type="application/json" class="plot-spec">(.*?)</script>', page, re.S)[1]))
        assert spec["links"] is True
        points = {url: (x, y) for trace in spec["data"] for url, x, y in zip(trace["customdata"], trace["x"],
                                                                             trace["y"])}
        assert points == {f"/bases/{n}": (pytest.approx(metrics[n]["l0"]), pytest.approx(metrics[n]["fvu"]))
                          for n in NAMES}
        assert {t["name"] for t in spec["data"]} == {"topk", "relu"}
        topk = next(t for t in spec["data"] if t["name"] == "topk")
        assert topk["x"] == sorted(topk["x"])  # each architecture's line runs in L0 order
        for url in points:  # every point links to a real basis page
            assert httpx.get(site.url + url, timeout=30).status_code == 200
    finally:
        stop_server(site)
    code, out, _ = monoscope(monkeypatch, capsys, "sweep", "--run", tiny_run_copy, *GRID, "--db", db)
    assert code == 0 and out.count("up to date") >= 4  # three trainings and the analysis skipped


@pytest.mark.usefixtures("single_thread")
def test_sweep_over_sizes_matches_each_size_with_the_next_smaller(monkeypatch, capsys, tiny_run_copy, tmp_path):
    db = f"sqlite:///{tmp_path / 'sizes.db'}"
    code, out, err = monoscope(monkeypatch, capsys, "sweep", "--run", tiny_run_copy, *SIZES, "--db", db)
    assert code == 0, err
    assert "== sweep 1/2: topk-k4-32" in out and "== splitting: topk-k4-64 against topk-k4-32" in out
    m = dict(np.load(tiny_run_copy / "analysis" / "matches" / f"topk-k4-64--{tiny_run_copy.name}--topk-k4-32"
                     / "matches.npz"))
    assert len(m["a_best"]) == 64 and len(m["b_best"]) == 32 and "a_best_decoder" in m
    site = start_server(db, tiny_run_copy)
    try:
        pairs = httpx.get(site.url + "/api/v1/matches", timeout=30).json()["pairs"]
        split = next(p for p in pairs if p["basis"] == "topk-k4-64")
        assert split["other_basis"] == "topk-k4-32" and sum(split["split_counts"]) == 32
    finally:
        stop_server(site)


@pytest.mark.parametrize("args,fragment", [
    (("--k", "4,x"), "--k takes comma-separated numbers"),
    (("--l1", "-1"), "--l1 needs positive numbers"),
    (("--architectures", "gated"), "--architectures takes relu, topk, batchtopk"),
    (("--k", "100", "--d-sae", "64"), "larger than --d-sae"),
    (("--d-sae", "64,abc"), "--d-sae takes comma-separated numbers"),
])
def test_sweep_refuses_a_bad_grid_in_one_line(monkeypatch, capsys, tiny_run, args, fragment):
    code, out, err = monoscope(monkeypatch, capsys, "sweep", "--run", tiny_run, *args)
    assert code == 2 and err.count("\n") == 1 and fragment in err, err
