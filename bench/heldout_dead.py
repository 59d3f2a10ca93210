"""Dead latents, L0 and FVU of trained SAEs on the first 1,048,576 held-out tokens (one JSON line per SAE).

    python bench/heldout_dead.py --run runs/demo NAME [NAME ...]

Dead = never fired on those tokens (BOS excluded, sae/conventions.py), the measure issue 10 §1 asks for: training's
own "dead" (silent for the last dead window of training) counts merely rare latents as dead in short runs.
The LM activations of each held-out chunk are computed once and fed to every SAE named. Loss recovered and wall
time come from the SAE's metrics.json (training's evaluation, 16,384 held-out tokens).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from sae.conventions import DENSE_DENSITY
from sae.dictionary import metrics
from sae.dictionary.model import sparse_decode
from sae.dictionary.saelens_format import load_sae

HELDOUT_TOKENS = 1 << 20


@torch.no_grad()
def heldout_stats(run_dir: Path, names: list[str], n_tokens: int = HELDOUT_TOKENS, rows_per_chunk: int = 64) -> list[dict]:
    """Return, per SAE name, {name, tokens, l0, fvu, dead, dead_pct, dense} over the first n_tokens held-out tokens."""
    from sae.activations import LMActivations

    source = LMActivations(run_dir)
    saes = [load_sae(run_dir / "saes" / name)[0].eval() for name in names]
    fired = [torch.zeros(s.cfg.d_sae, dtype=torch.int64) for s in saes]
    sums = [metrics.ReconstructionSums() for _ in saes]
    seen, row = 0, 0
    while seen < n_tokens and row < len(source.heldout):
        rows = np.arange(row, min(row + rows_per_chunk, len(source.heldout)))
        row = int(rows[-1]) + 1
        x = source.activations(rows, split="heldout")[: n_tokens - seen].float()  # [b, d_in], BOS dropped
        seen += len(x)
        for sae, count, acc in zip(saes, fired, sums):
            f = sae.encode(x)  # [b, d_sae]
            rows, cols = f.nonzero(as_tuple=True)  # by row
            offsets = torch.zeros(len(x), dtype=torch.long)
            torch.cumsum(torch.bincount(rows, minlength=len(x))[:-1], 0, out=offsets[1:])
            x_hat = sparse_decode(sae.W_dec, cols, offsets, f[rows, cols]) + sae.b_dec  # [b, d_in]
            count += torch.bincount(cols, minlength=sae.cfg.d_sae)
            acc.add(len(x), float(len(cols)), x=x, sq_err=float((x_hat - x).double().pow(2).sum()))
    out = []
    for name, sae, count, acc in zip(names, saes, fired, sums):
        m = acc.metrics()
        density = count.double() / max(seen, 1)
        dead = int((count == 0).sum())
        out.append({"name": name, "heldout_tokens": seen, "l0": round(m["l0"], 2), "fvu": round(m["fvu"], 4),
                    "dead": dead, "dead_pct": round(100 * dead / sae.cfg.d_sae, 2),
                    "dense": int((density > DENSE_DENSITY).sum())})
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--run", type=Path, required=True)
    parser.add_argument("--tokens", type=int, default=HELDOUT_TOKENS)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("names", nargs="+")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    started = time.time()
    for row in heldout_stats(args.run, args.names, args.tokens):
        trained = json.loads((args.run / "saes" / row["name"] / "metrics.json").read_text())
        row |= {"loss_recovered": round(trained["loss_recovered"], 4), "train_dead": trained["dead"],
                "resampled": trained.get("resampled_total"), "train_s": trained.get("seconds")}
        print(json.dumps(row), flush=True)
    print(json.dumps({"heldout_s": round(time.time() - started, 1)}), flush=True)


if __name__ == "__main__":
    main()
