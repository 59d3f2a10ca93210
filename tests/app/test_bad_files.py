"""The CLI under bad files: every command that reads a file (activations, token rows, SAE folders, JSONL corpora)
answers an empty, truncated, pickled or wrong-dtype file with one line and exit code 2, never a stack trace or
click's bare "Aborted."."""

from __future__ import annotations

import pickle
import shutil

import numpy as np
import pytest
import torch
from webapp_fixtures import assert_one_line_error, monoscope

from sae import rundir
from sae.dictionary.model import SAEConfig, SparseAutoencoder
from sae.dictionary.saelens_format import save_sae


def damage(path, how: str) -> None:
    """Replace a file by an empty, truncated, pickled or integer/float-swapped version of itself."""
    if how == "empty":
        path.write_bytes(b"")
    elif how == "truncated":
        path.write_bytes(path.read_bytes()[: max(1, path.stat().st_size // 3)])
    elif how == "pickled":
        path.write_bytes(pickle.dumps({"not": "an array"}))
    elif how == "float tokens":
        np.save(path, np.load(path).astype(np.float32))
    elif how == "int activations":
        np.save(path, np.ones((64, 8), np.int64))


@pytest.mark.parametrize("how", ["empty", "truncated", "pickled", "int activations"])
def test_train_sae_activations(monkeypatch, capsys, tmp_path, how):
    path = tmp_path / "acts.npy"
    np.save(path, np.random.default_rng(0).random((256, 8), dtype=np.float32))
    damage(path, how)
    assert_one_line_error(monoscope(monkeypatch, capsys, "train-sae", "--activations", path, "--out", tmp_path / "o"),
                          "acts.npy")


@pytest.mark.parametrize("how", ["empty", "truncated", "pickled", "float tokens"])
def test_analyze_held_out_rows(monkeypatch, capsys, tiny_run_copy, how):
    damage(tiny_run_copy / "corpus" / "heldout.npy", how)
    assert_one_line_error(monoscope(monkeypatch, capsys, "analyze", "--run", tiny_run_copy, "--device", "cpu"),
                          "heldout.npy")


@pytest.mark.parametrize("how", ["pickled", "float tokens"])
def test_train_lm_token_rows(monkeypatch, capsys, tiny_run_copy, how):
    damage(tiny_run_copy / "corpus" / "tokens.npy", how)
    assert_one_line_error(monoscope(monkeypatch, capsys, "train-lm", "--run", tiny_run_copy, "--force",
                                    "--tokens", "4096", "--device", "cpu"), "tokens.npy")


@pytest.mark.parametrize("file,how", [("sae_weights.safetensors", "truncated"), ("sae_weights.safetensors", "empty"),
                                      ("cfg.json", "empty"), ("cfg.json", "truncated")])
def test_add_sae_folder(monkeypatch, capsys, tiny_run_copy, tmp_path, file, how):
    folder = tmp_path / "theirs"
    sae = SparseAutoencoder(SAEConfig(d_in=64, d_sae=32)).init_weights(torch.Generator().manual_seed(0))
    save_sae(sae, folder, meta={"hook_name": "blocks.0.mlp.hook_post"})
    damage(folder / file, how)
    assert_one_line_error(monoscope(monkeypatch, capsys, "add-sae", folder, "--run", tiny_run_copy), file)
    assert not (tiny_run_copy / "saes" / "theirs").exists()  # nothing half-written into the run


@pytest.mark.parametrize("text,fragment", [('{"text": "ok"}\nnot json\n', ":2: not valid JSON"), ("", "has no text"),
                                           ('{"title": "no text field"}\n', "text")])
def test_corpus_jsonl(monkeypatch, capsys, tmp_path, text, fragment):
    source = tmp_path / "c.jsonl"
    source.write_text(text)
    assert_one_line_error(monoscope(monkeypatch, capsys, "corpus", "--run", tmp_path / "run", "--source", source),
                          fragment)


def test_an_analysis_of_a_damaged_sae_folder_is_refused(monkeypatch, capsys, tiny_run_copy):
    sae = SparseAutoencoder(SAEConfig(d_in=64, d_sae=32)).init_weights(torch.Generator().manual_seed(0))
    with rundir.write_stage(tiny_run_copy / "saes" / "s", stage="sae", config={}, inputs={}) as tmp:
        save_sae(sae, tmp)
    damage(tiny_run_copy / "saes" / "s" / "sae_weights.safetensors", "truncated")
    assert_one_line_error(monoscope(monkeypatch, capsys, "analyze", "--run", tiny_run_copy, "--device", "cpu"),
                          "sae_weights.safetensors")
    shutil.rmtree(tiny_run_copy / "saes" / "s")
