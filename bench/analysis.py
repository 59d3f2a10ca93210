"""Analysis speed: `monoscope analyze` tokens/s next to the bare LM forward + SAE encode over the same tokens.

    .venv/bin/python bench/analysis.py [--run runs/bench-analysis] [--tokens 262144] [--threads 2]

Default work = SAEDashboard's: 4,096 features over 2,048 x 128 tokens; SAEDashboard itself is timed on the same
tokens, LM and SAE in the same run when its venv is built (bash bench/saedashboard/setup.sh; --no-saedashboard: not).
Set-up, once, cached in the run folder: the stdlib corpus, a 1-layer LM (d_mlp 512) trained briefly, and, when the
run has no SAE yet, a random 512 -> 4,096 SAE whose per-feature biases make each feature fire on
30/4096 of tokens (L0 ~ 30, as a trained one): speed depends on sizes and L0, not on training.
Each measurement runs in its own subprocess (its own peak RSS, OMP_WAIT_POLICY=PASSIVE unless set); each analysis
is compared with a bare pass run just before it, so that both see the same load from other jobs on the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SAE_NAME = "bench-random-l0-30"


def setup(run: Path, log=print) -> str:
    """Build (or reuse) corpus, LM and an SAE in `run`; return the SAE name to benchmark."""
    import torch

    from sae import lm, rundir
    from sae.analysis.run import list_saes, load_heldout
    from sae.corpus.build import CorpusConfig, build_corpus
    from sae.dictionary.model import SAEConfig, SparseAutoencoder
    from sae.dictionary.saelens_format import save_sae
    from sae.lm.train import TrainLMConfig, train_lm

    build_corpus(run, CorpusConfig(heldout_fraction=0.12), progress=False, log=log)
    train_lm(run, lm.LMConfig(), TrainLMConfig(tokens=1_000_000), device="cpu", progress=False, log=log)
    saes = list_saes(run)
    if saes:
        return saes[0]
    model = lm.load_lm(run)
    x = lm.mlp_activations(model, torch.from_numpy(load_heldout(run, 1 << 15).astype("int64"))).reshape(-1, 512)
    sae = SparseAutoencoder(SAEConfig(d_in=512, d_sae=4096)).init_weights(torch.Generator().manual_seed(0))
    with torch.no_grad():
        sae.b_dec.copy_(x.mean(0))
        pre = sae.pre_activations(x)  # [n, 4096]
        k = int(len(x) * (1 - 30 / 4096))
        sae.b_enc.copy_(-pre.kthvalue(k, dim=0).values)
    with rundir.write_stage(run / "saes" / SAE_NAME, stage="sae", config={"random_l0": 30},
                            inputs={"lm": rundir.fingerprint(run / "lm")}) as tmp:
        save_sae(sae, tmp)
    return SAE_NAME


def peak_rss_gib() -> float:
    """Return this process's peak resident memory in GiB: VmHWM, which belongs to this process's own memory map.
    (getrusage's ru_maxrss is not: Linux carries it across fork and exec, so a measurement started by a parent that
    peaked higher, the set-up training the LM say, reports the parent's peak.)"""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 2**20  # kB -> GiB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # no /proc: the best there is


def measure(run: Path, mode: str, n_tokens: int, sae_name: str) -> dict:
    """Run one measurement in this process; return seconds, tokens and peak RSS."""
    import numpy as np
    import torch

    from sae import lm
    from sae.analysis.run import load_heldout, run_analysis
    from sae.analysis.shard import AnalysisConfig, Basis, _encode
    from sae.dictionary.saelens_format import load_sae

    tokens = load_heldout(run, n_tokens)
    lm.load_lm  # imports transformer_lens (3-4 s, once a process) outside both timings, as a user's warm session
    cpu0, t0 = time.process_time(), time.perf_counter()
    if mode == "bare":
        model = lm.load_lm(run)
        sae = load_sae(run / "saes" / sae_name)[0].requires_grad_(False)
        basis, buffers = Basis(sae_name, sae.W_enc.shape[1], sae), {}
        t0, cpu0 = time.perf_counter(), time.process_time()  # as for the analysis, loading is not timed...
        with torch.no_grad():
            for s in range(0, len(tokens), 64):
                x = lm.mlp_activations(model, torch.from_numpy(np.asarray(tokens[s:s + 64], dtype=np.int64)))
                _encode(basis, x.reshape(-1, x.shape[-1]), buffers)
    else:
        cfg = AnalysisConfig(n_tokens=n_tokens)
        cfg = replace(cfg, loss_tokens=0) if mode.endswith("-noloss") else cfg
        if mode.endswith("-cold"):  # the first SAE of a run: nothing kept of the clean LM's loss rows
            from sae.analysis.loss_cache import CACHE

            shutil.rmtree(run / CACHE, ignore_errors=True)
        run_analysis(run, sae_names=[sae_name], cfg=cfg, force=True, device="cpu", progress=False,
                     include_neurons=mode.startswith("all"), log=lambda m: None)
    seconds, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    # ...but the analysis's own load (LM, SAE from disk: well under a second) is inside its time: conservative.
    rss = peak_rss_gib()
    return {"mode": mode, "tokens": int(tokens.size), "seconds": seconds, "cpu_seconds": cpu, "peak_rss_gib": rss}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, default=ROOT / "runs" / "bench-analysis")
    parser.add_argument("--tokens", type=int, default=2048 * 128)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-saedashboard", action="store_true", help="leave out SAEDashboard's measurement")
    parser.add_argument("--measure", help=argparse.SUPPRESS)
    parser.add_argument("--sae", help=argparse.SUPPRESS)
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    if args.measure:
        print(json.dumps(measure(args.run, args.measure, args.tokens, args.sae)))
        return
    sae_name = setup(args.run)

    def run(mode: str) -> dict:
        cmd = [sys.executable, __file__, "--run", str(args.run), "--tokens", str(args.tokens),
               "--threads", str(args.threads), "--measure", mode, "--sae", sae_name]
        # Passive OpenMP waits: with other jobs on the cores, spinning threads make torch 2.5-3x slower (BENCHMARKS.md).
        env = {**os.environ, "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "PASSIVE")}
        out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout
        r = json.loads(out.strip().splitlines()[-1])
        print(f"{mode:11s} {r['tokens']:>9,} tokens  {r['seconds']:7.1f} s  {r['tokens'] / r['seconds']:>9,.0f} tok/s  "
              f"cpu {r['cpu_seconds']:6.1f} s  peak RSS {r['peak_rss_gib']:.2f} GiB", flush=True)
        return r

    # sae-cold: the first SAE analysed on a run; sae: the next one, the clean LM's loss rows kept by sae-cold
    # (sae/analysis/loss_cache.py), as every later mode finds them.
    labels = {"sae-cold": "SAE basis (4,096 features), all metrics, first SAE",
              "sae": "SAE basis, all metrics, next SAE (LM's loss rows kept)",
              "sae-noloss": "SAE basis, no LM-loss metrics", "all": "neurons + SAE (the default command)"}
    pairs = {mode: (run("bare"), run(mode)) for mode in labels}  # each analysis next to its own bare pass
    sdb = None
    if not args.no_saedashboard:  # SAEDashboard on the same tokens, LM and SAE, in its own venv (bench/saedashboard/)
        sys.path.insert(0, str(ROOT / "bench"))
        from saedashboard import measure_saedashboard

        sdb = measure_saedashboard(args.run.resolve(), args.tokens, sae_name, args.threads)
        if sdb is not None:
            print(f"{'saedashboard':11s} {sdb['tokens']:>9,} tokens  {sdb['seconds']:7.1f} s  "
                  f"{sdb['tokens'] / sdb['seconds']:>9,.0f} tok/s  cpu {sdb['cpu_seconds']:6.1f} s  "
                  f"peak RSS {sdb['peak_rss_gib']:.2f} GiB", flush=True)
    print(f"\nload average (1, 5, 15 min) at the end: {', '.join(f'{x:.1f}' for x in os.getloadavg())} on "
          f"{os.cpu_count()} cores (other jobs inflate wall times; CPU-time ratios are steadier); "
          f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'PASSIVE')}, {args.threads} threads")
    for mode, (bare, r) in pairs.items():
        wall = bare["seconds"] / r["seconds"]
        cpu = bare["cpu_seconds"] / r["cpu_seconds"]
        line = (f"{labels[mode]:54s} {r['tokens'] / r['seconds']:>7,.0f} tok/s vs bare forward+encode "
                f"{bare['tokens'] / bare['seconds']:>7,.0f}: {wall:5.1%} (CPU time: {cpu:5.1%}); {r['seconds']:.1f} s, "
                f"peak RSS {r['peak_rss_gib']:.2f} GiB")
        if sdb is not None and mode.startswith("sae"):
            line += (f"; SAEDashboard {sdb['seconds']:.1f} s, {sdb['peak_rss_gib']:.2f} GiB: "
                     f"{sdb['seconds'] / r['seconds']:.1f}x faster")
        print(line)


if __name__ == "__main__":
    main()
