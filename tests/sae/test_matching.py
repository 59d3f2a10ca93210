"""`monoscope match` on two tiny LMs of one corpus (seeds 0 and 1): best matches equal a brute-force correlation
of both models' activations on the same tokens; decoder matches between two SAEs of one LM; bad pairs of runs are
refused in one line."""

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

from sae import lm, rundir
from sae.analysis.matching import match_bases
from sae.conventions import ULTRALOW_DENSITY
from sae.corpus.build import load_heldout
from sae.dictionary.model import SAEConfig, SparseAutoencoder
from sae.dictionary.saelens_format import save_sae

QUIET = dict(progress=False, log=lambda m: None)
pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")  # np.corrcoef on units that never fire


@pytest.fixture(scope="module")
def two_runs(tiny_run, tiny_spec, tmp_path_factory):
    """Run A = the tiny run; run B = its corpus with an LM trained from seed 1."""
    from sae.lm.model import LMConfig
    from sae.lm.train import TrainLMConfig, train_lm

    root = tmp_path_factory.mktemp("match")
    run_a, run_b = root / "a", root / "b"
    shutil.copytree(tiny_run, run_a)
    shutil.copytree(tiny_run / "corpus", run_b / "corpus")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train_lm(run_b, LMConfig(**{**tiny_spec.lm, "seed": 1}), TrainLMConfig(**tiny_spec.train), device="cpu",
                 progress=False, log=lambda m: None)
    finally:
        torch.set_num_threads(threads)
    for run, seed in ((run_a, 0), (run_b, 1)):
        for name, d_sae in (("small", 48), ("large", 96)):
            sae = SparseAutoencoder(SAEConfig(d_in=64, d_sae=d_sae)).init_weights(torch.Generator().manual_seed(seed))
            with torch.no_grad():
                sae.b_enc.fill_(-0.2)
            with rundir.write_stage(run / "saes" / name, stage="sae", config={"seed": seed}, inputs={}) as tmp:
                save_sae(sae, tmp)
    return run_a, run_b


def activations(run, tokens, basis):
    model = lm.load_lm(run)
    with torch.no_grad():
        x = lm.mlp_activations(model, tokens)[:, 1:].reshape(-1, 64)  # BOS left out
        if basis == "neurons":
            return x.numpy()
        from sae.dictionary.saelens_format import load_sae

        return load_sae(run / "saes" / basis)[0].float().encode(x).numpy()


@pytest.mark.parametrize("basis", ["neurons", "small"])
def test_universality_matches_equal_brute_force(two_runs, basis):
    run_a, run_b = two_runs
    summary = match_bases(run_a, basis, run_b, basis, n_tokens=1500, batch_sequences=7, device="cpu", **QUIET)
    folder = run_a / "analysis" / "matches" / f"{basis}--b--{basis}"
    m = dict(np.load(folder / "matches.npz"))
    tokens = torch.from_numpy(load_heldout(run_a, 1500).astype(np.int64))
    a, b = activations(run_a, tokens, basis), activations(run_b, tokens, basis)
    corr = np.corrcoef(a.T.astype(np.float64), b.T.astype(np.float64))[: a.shape[1], a.shape[1]:]
    for i in range(a.shape[1]):
        if np.isnan(corr[i]).all():
            assert m["a_best"][i] == -1 and np.isnan(m["a_corr"][i])
        else:
            assert m["a_corr"][i] == pytest.approx(np.nanmax(corr[i]), abs=1e-5)
            assert corr[i, m["a_best"][i]] == pytest.approx(np.nanmax(corr[i]), abs=1e-5)
    live_b = ~np.isnan(corr).all(0)
    np.testing.assert_allclose(m["b_corr"][live_b], np.nanmax(corr[:, live_b], 0), atol=1e-5)
    assert summary["tokens_correlated"] == a.shape[0] and summary["median_a"] == pytest.approx(
        float(np.median(m["a_corr"][~np.isnan(m["a_corr"])])))
    assert "a_best_decoder" not in m  # decoders of two different LMs are not comparable
    for side, acts, corr_of, best, back in (("a", a, m["a_corr"], m["a_best"], m["b_best"]),
                                            ("b", b, m["b_corr"], m["b_best"], m["a_best"])):
        fired = (acts > 0).sum(0)
        np.testing.assert_array_equal(m[f"fired_{side}"], fired)
        population = (fired > 0) & (fired / acts.shape[0] >= ULTRALOW_DENSITY)
        mutual = [back[best[i]] == i for i in np.flatnonzero(population)]
        assert summary[f"n_population_{side}"] == population.sum() > 0
        assert summary[f"median_population_{side}"] == pytest.approx(float(np.median(corr_of[population])))
        assert summary[f"mutual_share_{side}"] == pytest.approx(float(np.mean(mutual)))
    assert json.loads((folder / "match.json").read_text())["median_b"] == summary["median_b"]


def test_two_dictionaries_of_one_lm_get_decoder_matches_and_a_rerun_is_skipped(two_runs):
    run_a, _ = two_runs
    match_bases(run_a, "large", run_a, "small", n_tokens=1000, device="cpu", **QUIET)
    m = dict(np.load(run_a / "analysis" / "matches" / "large--a--small" / "matches.npz"))
    from sae.dictionary.saelens_format import load_sae

    w_large, w_small = (torch.nn.functional.normalize(load_sae(run_a / "saes" / n)[0].W_dec.detach(), dim=1)
                        for n in ("large", "small"))
    cos = (w_large @ w_small.T).numpy()
    np.testing.assert_array_equal(m["a_best_decoder"], cos.argmax(1))
    np.testing.assert_allclose(m["b_decoder_cos"], cos.max(0), rtol=1e-5)
    assert len(m["a_best"]) == 96 and len(m["b_best"]) == 48
    out = subprocess.run([sys.executable, "-m", "app.cli", "match", "--run", str(run_a), "--basis", "large",
                          "--other-basis", "small", "--tokens", "1000", "--device", "cpu"], capture_output=True, text=True)
    assert out.returncode == 0 and "up to date" in out.stdout, out.stderr  # the same match: skipped
    medians = json.loads((run_a / "analysis" / "matches" / "large--a--small" / "match.json").read_text())
    assert f"large -> small: median best correlation {medians['median_a']:.3f}" in out.stdout
    assert (f"large, neither dead nor ultralow (n = {medians['n_population_a']:,}): median "
            f"{medians['median_population_a']:.3f}, mutual best matches {medians['mutual_share_a']:.0%}") in out.stdout


def test_runs_that_cannot_be_matched_are_refused_in_one_line(two_runs, tmp_path):
    run_a, run_b = two_runs
    other_tokenizer = tmp_path / "c"
    shutil.copytree(run_b, other_tokenizer)
    path = other_tokenizer / "corpus" / "token_strings.json"
    strings = json.loads(path.read_text())
    path.write_text(json.dumps(strings[:-1] + ["another token"]))  # one id now means other text
    wider = tmp_path / "d"
    shutil.copytree(run_b, wider)
    cfg = json.loads((wider / "lm" / "config.json").read_text())
    (wider / "lm" / "config.json").write_text(json.dumps({**cfg, "d_mlp": 128}))
    cases = [(["--other-run", other_tokenizer], "different tokenizer"), (["--other-run", wider], "d_mlp"),
             ([], "against itself"), (["--other-run", run_b, "--tokens", "0"], "--tokens")]
    for args, fragment in cases:
        out = subprocess.run([sys.executable, "-m", "app.cli", "match", "--run", str(run_a), "--basis", "neurons",
                              "--other-basis", "neurons", *map(str, args)], capture_output=True, text=True)
        assert out.returncode == 2 and out.stderr.count("\n") == 1 and fragment in out.stderr, (args, out.stderr)
