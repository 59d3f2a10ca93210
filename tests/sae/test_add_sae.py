"""`monoscope add-sae`: an SAE saved by sae_lens itself joins a run, is analysed like one trained here, and
mismatches are refused in one line."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from sae.analysis.run import list_saes, run_analysis
from sae.analysis.shard import AnalysisConfig
from sae.dictionary.saelens_format import load_sae
from sae.dictionary.stage import add_sae
from sae.errors import MonoscopeError

sae_lens = pytest.importorskip("sae_lens")  # a dev dependency: always there in CI
QUIET = dict(log=lambda m: None)


def saved_by_sae_lens(folder, d_in: int, kind: str = "TopK", **kw):
    theirs = getattr(sae_lens, f"{kind}SAE")(getattr(sae_lens, f"{kind}SAEConfig")(d_in=d_in, d_sae=96, **kw))
    with torch.no_grad():
        g = torch.Generator().manual_seed(0)
        for p in theirs.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    theirs.save_model(folder)
    return theirs


def test_an_sae_lens_folder_joins_the_run_and_is_analysed(tiny_run_copy, tiny_spec, tmp_path):
    theirs = saved_by_sae_lens(tmp_path / "theirs", tiny_spec.lm["d_mlp"], k=6)
    out = add_sae(tiny_run_copy, tmp_path / "theirs", name="outside", **QUIET)
    assert list_saes(tiny_run_copy) == ["outside"]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["stage"] == "sae" and manifest["inputs"].keys() == {"corpus", "lm"}
    ours, meta = load_sae(out)
    x = torch.randn(50, tiny_spec.lm["d_mlp"])
    with torch.no_grad():
        torch.testing.assert_close(ours.encode(x), theirs.encode(x), rtol=1e-5, atol=1e-5)
    assert meta["hook_name"] == "blocks.0.mlp.hook_post"
    again = []
    add_sae(tiny_run_copy, tmp_path / "theirs", name="outside", log=again.append)
    assert "up to date" in again[0]
    metrics = run_analysis(tiny_run_copy, cfg=AnalysisConfig(n_tokens=2048, batch_sequences=16, loss_tokens=0),
                           device="cpu", progress=False, log=lambda m: None)
    assert set(metrics) == {"neurons", "outside"} and metrics["outside"]["l0"] <= 6


@pytest.mark.parametrize("change, message", [
    ({"d_in": 10}, "d_mlp"),
    ({"hook": "blocks.0.hook_resid_pre"}, "blocks.0.hook_resid_pre"),
    ({"name": "neurons"}, "plain folder name"),
])
def test_mismatches_are_refused_in_one_line(tiny_run_copy, tiny_spec, tmp_path, change, message):
    folder = tmp_path / "theirs"
    saved_by_sae_lens(folder, change.get("d_in", tiny_spec.lm["d_mlp"]), kind="Standard")
    if "hook" in change:
        cfg = json.loads((folder / "cfg.json").read_text())
        cfg.setdefault("metadata", {})["hook_name"] = change["hook"]
        cfg["hook_name"] = change["hook"]
        (folder / "cfg.json").write_text(json.dumps(cfg))
    with pytest.raises(MonoscopeError, match=message) as info:
        add_sae(tiny_run_copy, folder, name=change.get("name", "x"), **QUIET)
    assert "\n" not in str(info.value)
    assert list_saes(tiny_run_copy) == []


def test_the_command_answers_bad_folders_with_exit_code_2(tiny_run_copy, tmp_path):
    done = subprocess.run([sys.executable, "-m", "app.cli", "add-sae", str(tmp_path / "nothing"), "--run",
                           str(tiny_run_copy)], capture_output=True, text=True)
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "monoscope: error:" in done.stderr
