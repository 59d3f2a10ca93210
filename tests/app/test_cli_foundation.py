"""CLI of the foundation stages: bad input is one line on stderr with exit code 2; up-to-date stages are skipped."""

import json
from dataclasses import asdict

import httpx
import pytest
from webapp_fixtures import assert_one_line_error, monoscope, start_server, stop_server

from sae import rundir
from sae.dictionary.config import control_config, demo_config

TINY_LM_ARGS = ["--d-model", "16", "--d-mlp", "32", "--n-heads", "2", "--batch-size", "8", "--tokens", "2560"]


def test_run_that_is_a_file(monkeypatch, capsys, tmp_path):
    (tmp_path / "file").write_text("x")
    assert_one_line_error(monoscope(monkeypatch, capsys, "corpus", "--run", tmp_path / "file"), "is a file")
    assert_one_line_error(monoscope(monkeypatch, capsys, "train-lm", "--run", tmp_path / "file"), "is a file")


def test_missing_and_empty_sources(monkeypatch, capsys, tmp_path):
    run = tmp_path / "run"
    assert_one_line_error(monoscope(monkeypatch, capsys, "corpus", "--run", run, "--source", tmp_path / "nope"),
                          "does not exist")
    (tmp_path / "empty").mkdir()
    assert_one_line_error(monoscope(monkeypatch, capsys, "corpus", "--run", run, "--source", tmp_path / "empty"),
                          "has no text")
    assert not run.exists()


def test_unreadable_jsonl_line_leaves_nothing(monkeypatch, capsys, tmp_path):
    source = tmp_path / "docs.jsonl"
    source.write_text('{"text": "one"}\n{"text": "two"}\n{"text": 3}\n')
    result = monoscope(monkeypatch, capsys, "corpus", "--run", tmp_path / "run", "--source", source)
    assert_one_line_error(result, "docs.jsonl:3")
    assert not (tmp_path / "run").exists()


def test_train_lm_before_corpus_and_bad_numbers(monkeypatch, capsys, tmp_path):
    assert_one_line_error(monoscope(monkeypatch, capsys, "train-lm", "--run", tmp_path), "monoscope corpus")
    assert_one_line_error(monoscope(monkeypatch, capsys, "train-lm", "--run", tmp_path, "--d-model", "30",
                                    "--n-heads", "4"), "multiple of --n-heads")
    assert_one_line_error(monoscope(monkeypatch, capsys, "train-lm", "--run", tmp_path, "--device", "cuda:0"
                                    if not __import__("torch").cuda.is_available() else "tpu"), "device")


def test_pretrained_not_cached_is_one_line(monkeypatch, capsys, tmp_path):
    from huggingface_hub import try_to_load_from_cache

    if isinstance(try_to_load_from_cache("NeelNanda/GELU_1L512W_C4_Code", "config.json"), str):
        pytest.skip("gelu-1l is cached on this machine")
    result = monoscope(monkeypatch, capsys, "train-lm", "--run", tmp_path / "run", "--pretrained", "gelu-1l")
    assert_one_line_error(result, "gelu-1l", "not in the local Hugging Face cache")
    assert not (tmp_path / "run" / "lm").exists()
    result = monoscope(monkeypatch, capsys, "corpus", "--run", tmp_path / "run", "--tokenizer", "gelu-1l")
    assert_one_line_error(result, "not in the local Hugging Face cache")


def test_corpus_and_lm_skip_when_current_and_force_redoes(monkeypatch, capsys, tmp_path, tiny_source, single_thread):
    run = tmp_path / "run"
    corpus = ["corpus", "--run", run, "--source", tiny_source, "--vocab-size", "280", "--n-ctx", "32",
              "--max-tokens", "20000"]
    lm = ["train-lm", "--run", run, *TINY_LM_ARGS, "--device", "cpu"]
    code, out, _ = monoscope(monkeypatch, capsys, *corpus)
    assert code == 0 and "train +" in out
    code, out, _ = monoscope(monkeypatch, capsys, *lm)
    assert code == 0 and "held-out loss" in out
    stamps = {stage: json.loads((run / stage / "manifest.json").read_text())["fingerprint"] for stage in ("corpus", "lm")}
    created = {stage: (run / stage / "manifest.json").stat().st_mtime_ns for stage in ("corpus", "lm")}

    code, out, _ = monoscope(monkeypatch, capsys, *corpus)
    assert code == 0 and "up to date" in out
    code, out, _ = monoscope(monkeypatch, capsys, *lm)
    assert code == 0 and "up to date" in out
    assert created == {stage: (run / stage / "manifest.json").stat().st_mtime_ns for stage in ("corpus", "lm")}

    code, out, _ = monoscope(monkeypatch, capsys, *corpus, "--force")
    assert code == 0 and "up to date" not in out
    assert (run / "corpus" / "manifest.json").stat().st_mtime_ns != created["corpus"]
    # the rebuilt corpus is identical (deterministic), so its fingerprint and the LM stay valid
    assert json.loads((run / "corpus" / "manifest.json").read_text())["fingerprint"] == stamps["corpus"]
    code, out, _ = monoscope(monkeypatch, capsys, *lm)
    assert "up to date" in out
    code, out, _ = monoscope(monkeypatch, capsys, *lm, "--seed", "1")  # a changed config retrains
    assert code == 0 and "held-out loss" in out


def test_demo_runs_every_stage_and_reports(monkeypatch, capsys, tmp_path, tiny_source, single_thread):
    run, db = tmp_path / "demo", f"sqlite:///{tmp_path / 'demo.db'}"
    tiny = ("demo", "--run", run, "--source", tiny_source, "--max-tokens", "20000", "--tokens", "8192",
            "--d-sae", "128", "--sae-tokens", "8192", "--sae-batch-size", "512", "--analysis-tokens", "2048",
            "--db", db, "--no-serve", "--device", "cpu")
    code, out, _ = monoscope(monkeypatch, capsys, *tiny)
    assert code == 0, out
    stages = ["== corpus", "== lm", "== sae", "== analysis", "== database", "demo: built"]
    assert [out.index(s) for s in stages] == sorted(out.index(s) for s in stages)
    assert "held-out loss" in out and (run / "saes" / "topk-128" / "sae_weights.safetensors").is_file()
    assert "topk-128: " in out and "neurons: " in out and "ingested topk-128" in out
    trained = rundir.read_manifest(run / "saes" / "topk-128")["config"]["train"]
    expected = demo_config(d_sae=128, tokens=8192, batch_size=512)  # the demo trains exactly the sweep's pick
    assert trained == json.loads(json.dumps(asdict(expected)))
    code, out, _ = monoscope(monkeypatch, capsys, *tiny)
    assert code == 0 and out.count("up to date") >= 4  # corpus, lm, sae, analysis skipped; ingest re-reads


def test_full_demo_adds_sizes_a_second_seed_and_their_matches(monkeypatch, capsys, tmp_path, tiny_source,
                                                               single_thread):
    run, db = tmp_path / "demo", f"sqlite:///{tmp_path / 'demo.db'}"
    tiny = ("demo", "--run", run, "--source", tiny_source, "--max-tokens", "20000", "--tokens", "8192",
            "--d-sae", "128", "--sae-tokens", "8192", "--sae-batch-size", "512", "--analysis-tokens", "2048",
            "--db", db, "--no-serve", "--device", "cpu", "--control-tokens", "16384", "--full", "--sizes", "64")
    code, out, err = monoscope(monkeypatch, capsys, *tiny)
    assert code == 0, err
    for stage in ("== sae topk-64", "== seed control topk-128-seed1", "== splitting topk-128 / topk-64",
                  "== seed control: topk-128 / topk-128-seed1", "== second LM (seed 1)",
                  "== universality: neurons", "== universality: topk-128", "== feature map",
                  "== database, with the matches and the map"):
        assert stage in out, stage
    second = tmp_path / "demo-seed1"
    assert rundir.read_manifest(second / "lm")["config"]["lm"]["seed"] == 1
    epoch = json.loads((run / "corpus" / "meta.json").read_text())["train_tokens"]
    assert epoch > 8192  # --tokens asked for less than one epoch: --full trains both LMs on a whole one
    assert [rundir.read_manifest(r / "lm")["config"]["train"]["tokens"] for r in (run, second)] == [epoch, epoch]
    trained = {(r.name, n): rundir.read_manifest(r / "saes" / n)["config"]["train"]
               for r, n in ((run, "topk-128"), (run, "topk-128-seed1"), (second, "topk-128"), (run, "topk-64"))}
    control = json.loads(json.dumps(asdict(control_config(d_sae=128, tokens=16384, batch_size=512))))
    assert trained[("demo", "topk-128")] == control == {**trained[("demo", "topk-128-seed1")], "seed": 0}
    assert trained[("demo-seed1", "topk-128")] == control  # the seed control and universality: one recipe
    assert trained[("demo", "topk-64")] == json.loads(json.dumps(asdict(demo_config(d_sae=64, tokens=8192,
                                                                                   batch_size=512))))
    assert (second / "corpus" / "heldout.npy").read_bytes() == (run / "corpus" / "heldout.npy").read_bytes()
    site = start_server(db, run)
    try:
        pairs = httpx.get(site.url + "/api/v1/matches", timeout=30).json()["pairs"]
    finally:
        stop_server(site)
    found = {(p["model"], p["basis"], p["other_model"], p["other_basis"]) for p in pairs}
    assert {("demo", "neurons", "demo-seed1", "neurons"), ("demo-seed1", "topk-128", "demo", "topk-128"),
            ("demo", "topk-128", "demo", "topk-64")} <= found
    assert next(p for p in pairs if p["other_basis"] == "topk-64")["split_counts"] is not None
    relation = {(p["model"], p["basis"], p["other_model"], p["other_basis"]): p["relation"] for p in pairs}
    assert relation[("demo", "topk-128", "demo", "topk-128-seed1")] == "seed control"
    universal = next(p for p in pairs if (p["model"], p["basis"], p["other_model"]) == ("demo", "topk-128", "demo-seed1"))
    assert universal["control"]["other_basis"] == "topk-128-seed1" and universal["relation"] == "universality"
    assert (run / "analysis" / "map" / "map.json").is_file()
    assert_one_line_error(monoscope(monkeypatch, capsys, *tiny[:-1], "64,x"), "--sizes")


def test_serve_listens_on_monoscope_port_without_flags(tmp_path):
    site = start_server(f"sqlite:///{tmp_path / 'empty.db'}", None, port_from_env=True)
    try:  # start_server waited for an answer on the environment's port: no --port was given
        answer = httpx.get(site.url + "/api/v1/overview", timeout=30)
        assert answer.status_code == 200 and answer.json() == {"bases": []}
    finally:
        stop_server(site)


def test_serve_flags_beat_the_environment_and_bad_settings_are_one_line(monkeypatch, capsys, tmp_path):
    db = f"sqlite:///{tmp_path / 'db.sqlite'}"
    monkeypatch.setenv("MONOSCOPE_PORT", "8123")
    assert_one_line_error(monoscope(monkeypatch, capsys, "serve", "--db", db, "--port", "70000"), "70000")
    monkeypatch.setenv("MONOSCOPE_PORT", "70001")
    assert_one_line_error(monoscope(monkeypatch, capsys, "serve", "--db", db), "70001")
    monkeypatch.setenv("MONOSCOPE_PORT", "eighty")
    assert_one_line_error(monoscope(monkeypatch, capsys, "serve", "--db", db), "MONOSCOPE_PORT")


def test_option_defaults_are_the_configs_defaults_and_bad_values_are_the_configs_one_line(monkeypatch, capsys,
                                                                                          tmp_path):
    """A default lives in its config dataclass only; the CLI refuses what the config refuses, before any work."""
    import inspect

    from app.cli import stages
    from sae.analysis.config import AnalysisConfig
    from sae.corpus.config import CorpusConfig
    from sae.dictionary.config import SAETrainConfig
    from sae.lm.config import LMConfig, TrainLMConfig

    def defaults(command) -> dict:
        return {name: p.default for name, p in inspect.signature(command).parameters.items()}

    assert {k: v for k, v in defaults(stages.corpus).items() if k not in ("run", "force")} == asdict(CorpusConfig())
    lm, train = defaults(stages.train_lm), asdict(TrainLMConfig())
    assert all(lm[k] == v for k, v in asdict(LMConfig()).items() if k in lm) and lm["d_model"] == 128
    assert all(lm[k] == train[k] for k in ("tokens", "batch_size", "lr"))
    sae, cfg = defaults(stages.train_sae), asdict(SAETrainConfig())
    assert (sae["architecture"], sae["d_sae"], sae["l1"], sae["lr"], sae["tokens"], sae["batch_size"]) == (
        cfg["architecture"], cfg["d_sae"], cfg["l1_coefficient"], cfg["lr"], cfg["tokens"], cfg["batch_size"])
    assert tuple(float(f) for f in sae["resample_at"].split(",")) == cfg["resample_at"]
    analyze, analysis = defaults(stages.analyze), AnalysisConfig()
    assert (analyze["tokens"], analyze["batch"], analyze["loss_tokens"]) == (
        analysis.n_tokens, analysis.batch_sequences, analysis.loss_tokens)
    run = tmp_path / "run"
    assert_one_line_error(monoscope(monkeypatch, capsys, "corpus", "--run", run, "--heldout-fraction", "1.5"),
                          "--heldout-fraction must be between 0 and 1")
    assert_one_line_error(monoscope(monkeypatch, capsys, "train-lm", "--run", run, "--lr", "0"), "lr")
    assert_one_line_error(monoscope(monkeypatch, capsys, "train-lm", "--run", run, "--act-fn", "tanh"), "--act-fn")
    assert_one_line_error(monoscope(monkeypatch, capsys, "analyze", "--run", run, "--tokens", "0"), "n_tokens")
    assert_one_line_error(monoscope(monkeypatch, capsys, "train-sae", "--run", run, "--name", "x", "--architecture",
                                    "jumprelu"), "relu, topk, batchtopk")
    assert not run.exists()
