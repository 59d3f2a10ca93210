"""Sharded analysis: one shard or several, in this process or on a local two-worker Ray, gives the same files to the
bit: every array of units.npz and links.npz and every number of basis.json, LM-loss metrics included.

The tiny run analyses 63 sequences of 32 tokens in batches of 16 (4 batches); the LM-loss metrics cover the first 700
tokens, i.e. the first 2 batches, so with 3 shards (batches 0 | 1 | 2-3) the loss region and its mean-ablation
vector span two shards, and with 2 shards (0-1 | 2-3) the second shard has no loss batch at all.
"""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from sae import rundir
from sae.analysis.executor import LocalExecutor, shard_ranges
from sae.analysis.run import ShardJob, run_analysis, run_shard
from sae.analysis.shard import AnalysisConfig
from sae.dictionary.model import SAEConfig, SparseAutoencoder
from sae.dictionary.saelens_format import save_sae
from sae.errors import MonoscopeError

N_TOKENS, BATCH, LOSS_TOKENS = 2000, 16, 700
CFG = AnalysisConfig(n_tokens=N_TOKENS, batch_sequences=BATCH, loss_tokens=LOSS_TOKENS)  # what the CLI flags below give
CLI_FLAGS = ["--tokens", str(N_TOKENS), "--batch", str(BATCH), "--loss-tokens", str(LOSS_TOKENS), "--device", "cpu"]


@pytest.fixture(scope="module")
def run_with_sae(tiny_run, tmp_path_factory) -> Path:
    """The tiny run plus a random SAE (firing like a trained one: b_enc -0.3), not yet analysed (read-only)."""
    import shutil

    run_dir = tmp_path_factory.mktemp("executors") / "run"
    shutil.copytree(tiny_run, run_dir)
    g = torch.Generator().manual_seed(0)
    sae = SparseAutoencoder(SAEConfig(d_in=64, d_sae=96)).init_weights(g)
    with torch.no_grad():
        sae.b_enc.fill_(-0.3)
    with rundir.write_stage(run_dir / "saes" / "tiny", stage="sae", config={"seed": 0}, inputs={}) as tmp:
        save_sae(sae, tmp)
    return run_dir


@pytest.fixture(scope="module")
def one_shard(run_with_sae, tmp_path_factory) -> Path:
    """The reference: the default in-process analysis, one shard, one torch thread."""
    return analysed_copy(run_with_sae, tmp_path_factory.mktemp("one"), LocalExecutor())


def analysed_copy(run_dir: Path, folder: Path, executor) -> Path:
    import shutil

    copy = folder / "run"
    shutil.copytree(run_dir, copy)
    return analysed_in_place(copy, executor)


def analysed_in_place(run_dir: Path, executor) -> Path:
    """(Re)do the analysis of run_dir at one torch thread and return run_dir."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        run_analysis(run_dir, cfg=CFG, device="cpu", progress=False, log=lambda m: None, executor=executor, force=True)
    finally:
        torch.set_num_threads(threads)
    return run_dir


def assert_same_analysis(a: Path, b: Path) -> None:
    """Assert two analysed runs hold the same files: every array equal (NaN where NaN), basis.json equal."""
    for basis in ("neurons", "tiny"):
        fa, fb = a / "analysis" / basis, b / "analysis" / basis
        assert sorted(p.name for p in fa.iterdir()) == sorted(p.name for p in fb.iterdir())
        for name in ("units.npz", "links.npz"):
            if not (fa / name).exists():
                continue
            x, y = np.load(fa / name), np.load(fb / name)
            assert set(x) == set(y)
            for key in x:
                assert x[key].dtype == y[key].dtype
                np.testing.assert_array_equal(x[key], y[key], err_msg=f"{basis}/{name}:{key}", strict=True)
        meta_a, meta_b = (json.loads((f / "basis.json").read_text()) for f in (fa, fb))
        assert meta_a == meta_b, basis  # floats compared exactly
    assert not list((b / "analysis").glob(".spill-*"))  # spills removed


def test_shards_are_whole_batches_as_even_as_they_can_be():
    assert shard_ranges(63, 16, 2) == [(0, 32), (32, 63)]
    assert shard_ranges(63, 16, 3) == [(0, 16), (16, 32), (32, 63)]
    assert shard_ranges(63, 16, 9) == [(0, 16), (16, 32), (32, 48), (48, 63)]  # no more shards than batches
    assert shard_ranges(10, 16, 4) == [(0, 10)]
    assert shard_ranges(640, 64, 3) == [(0, 192), (192, 384), (384, 640)]


def test_three_local_shards_equal_one(run_with_sae, one_shard, tmp_path):
    meta = json.loads((one_shard / "analysis" / "tiny" / "basis.json").read_text())["metrics"]
    assert meta["loss_tokens"] == 2 * BATCH * 31  # two whole batches of 16 sequences, 31 predicted tokens each
    assert meta["loss_mean_ablation"] is not None and meta["kl_div_with_sae"] is not None
    assert_same_analysis(one_shard, analysed_copy(run_with_sae, tmp_path, LocalExecutor(3)))


@pytest.fixture(scope="session")
def ray_cluster():
    """A local Ray of two CPUs for the session; yields its address; shut down at the end."""
    # Token authentication on, as Ray >= 2.59 has it for a local cluster, and said in the environment (read when ray
    # is imported), so that the CLI's driver, a subprocess that inherits it, sends the token too.
    if importlib.util.find_spec("ray") is None:
        message = "Ray is not installed (pip install 'monoscope[ray]')"
        pytest.fail(message) if os.environ.get("CI") == "true" else pytest.skip(message)
    before = os.environ.get("RAY_AUTH_MODE")
    os.environ["RAY_AUTH_MODE"] = "token"
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()
    if before is None:
        del os.environ["RAY_AUTH_MODE"]
    else:
        os.environ["RAY_AUTH_MODE"] = before


def monoscope(*args: str) -> subprocess.CompletedProcess:
    """Run the CLI in a subprocess at one torch thread (as the reference analysis)."""
    return subprocess.run([sys.executable, *args], capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})


def test_ray_with_two_workers_equals_in_process(run_with_sae, one_shard, ray_cluster, tmp_path):
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(run_with_sae, copy)
    out = monoscope("-m", "app.cli", "analyze", "--run", str(copy), *CLI_FLAGS, "--executor", "ray",
                    "--address", ray_cluster, "--shards", "2")
    assert out.returncode == 0, out.stderr
    assert "pass 1 in 2 shards" in out.stdout
    assert_same_analysis(one_shard, copy)


@pytest.mark.parametrize("flags,message", [
    (["--executor", "spark"], "unknown executor 'spark': choose one of local, ray"),
    (["--address", "10.0.0.1:6379"], "--address is for --executor ray"),
    (["--executor", "ray", "--shards", "0"], "--shards must be positive"),
])
def test_bad_executor_options_are_one_line(tiny_run, flags, message):
    out = monoscope("-m", "app.cli", "analyze", "--run", str(tiny_run), *flags)
    assert out.returncode == 2
    assert out.stderr.strip().count("\n") == 0 and message in out.stderr, out.stderr


def test_without_ray_installed_the_ray_executor_names_the_extra(tiny_run):
    hide_ray = "import sys; sys.modules['ray'] = None; from app.cli import main; main()"  # `import ray` fails
    out = monoscope("-c", hide_ray, "analyze", "--run", str(tiny_run), "--executor", "ray")
    assert out.returncode == 2
    assert out.stderr.strip() == "monoscope: error: the Ray executor needs Ray: pip install 'monoscope[ray]'"


def test_a_worker_that_cannot_see_the_run_folder_says_so(tmp_path):
    job = ShardJob(tmp_path / "elsewhere" / "run", [], CFG, (0, 16), tmp_path / "spill", "cpu", None)
    with pytest.raises(MonoscopeError, match="cannot see the run folder .*elsewhere/run: workers need it on a "
                                             "shared filesystem, at the same path") as err:
        run_shard(job)
    assert "\n" not in str(err.value)


def test_a_second_analysis_reads_the_clean_rows_kept_and_gives_the_same_files(one_shard, tmp_path):
    """The clean LM's loss rows and mean-ablation vector are kept per loss batch under the run's .cache/lm-losses/;
    the next analysis (here in 3 shards) reads them and writes the same files to the bit. That it reads them and
    does not recompute: a kept kappa raised by 1 raises the SAE's KL by 1 at every counted position of that batch."""
    import shutil

    from sae.analysis.loss_cache import CACHE

    (kept,) = (one_shard / CACHE).glob("*/*")  # one key, one device, thread count and build
    names = sorted(p.name for p in kept.iterdir())  # the two loss batches of 16 sequences, 31 predicted positions each
    assert kept.name.startswith("cpu-1-") and [n.split("-")[:2] for n in names] == [["0", "496"], ["16", "496"],
                                                                                   ["mean.npy"]]
    copy = tmp_path / "run"
    shutil.copytree(one_shard, copy)
    again = analysed_in_place(copy, LocalExecutor(3))
    assert_same_analysis(one_shard, again)
    before = json.loads((one_shard / "analysis" / "tiny" / "basis.json").read_text())["metrics"]
    (entry,) = (copy / kept.relative_to(one_shard)).glob("0-*.npz")
    with np.load(entry) as rows:
        doctored = dict(rows)
    doctored["kappa"] = doctored["kappa"] + np.float32(1.0)
    np.savez(entry, **doctored)
    after = json.loads((analysed_in_place(copy, LocalExecutor()) / "analysis" / "tiny" / "basis.json")
                       .read_text())["metrics"]
    counted = BATCH * 30  # batch 0's predicted positions after BOS: 31 a sequence, BOS's own KL stays 0
    assert after["kl_div_with_sae"] - before["kl_div_with_sae"] == pytest.approx(counted / before["loss_tokens"],
                                                                                rel=1e-4)
    for unchanged in ("loss_clean", "loss_reconstructed", "kl_div_with_ablation"):  # kappa is the splice's KL's alone
        assert after[unchanged] == before[unchanged], unchanged
    no_loss = AnalysisConfig(n_tokens=N_TOKENS, batch_sequences=BATCH, loss_tokens=0)
    run_analysis(copy, cfg=no_loss, device="cpu", progress=False, log=lambda m: None, force=True)
    assert entry.is_file()  # an analysis without loss metrics leaves the kept rows alone



def test_the_effects_read_the_final_residual_pass_1_kept_and_equal_a_forwards(run_with_sae, one_shard, tmp_path,
                                                                              monkeypatch):
    """Pass 1 keeps every token's final residual for the ablation effects (sae/analysis/residuals.py), read back
    across 3 shards here; the effects then run no forward of their own (one would fail now), and equal those of the
    analysis whose effects ran their own forward (the residual kept over MAX_BYTES), to the bit."""
    from sae import lm

    def no_forward(*args):
        raise AssertionError("the effects ran a forward of their own")

    monkeypatch.setattr(lm, "final_residual", no_forward)
    assert_same_analysis(one_shard, analysed_copy(run_with_sae, tmp_path / "kept", LocalExecutor(3)))
    monkeypatch.undo()
    monkeypatch.setattr("sae.analysis.run.keeps", lambda *args: False)
    assert_same_analysis(one_shard, analysed_copy(run_with_sae, tmp_path / "forward", LocalExecutor()))
