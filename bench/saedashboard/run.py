"""SAEDashboard 0.8's `SaeVisRunner` timed on bench/analysis.py's tokens, LM and SAE; prints one JSON line.

    bash bench/saedashboard/setup.sh      # once: SAEDashboard's own venv in bench/saedashboard/.venv
    bench/saedashboard/.venv/bin/python bench/saedashboard/run.py [--run runs/bench-analysis] [--tokens 262144] \
        [--sae bench-random-l0-30] [--threads 2] [--tokens-npy FILE]

Runs in SAEDashboard's venv (transformers < 4.57, transformer-lens 2, sae-lens 6), so it imports nothing of `sae/`:
it reads the run folder's files directly.
- Tokens: --tokens-npy when given (compare.py writes `sae.corpus.build.load_heldout(run, n_tokens)` there, so both
  benches see the very same rows); else the same rows read here: corpus/heldout.npy in the order of
  corpus/heldout_order.npy, the first ceil(n_tokens / T) of them.
- LM: lm/config.json + lm/weights.safetensors as SAELens's `HookedSAETransformer`, corpus/hf as its tokenizer.
- SAE: the SAELens folder saes/NAME, loaded by SAELens itself.
Timed: `SaeVisRunner(cfg).run(...)` on every feature with SAEDashboard's default batch sizes (256 features, 64
sequences); loading is not timed, as in bench/analysis.py's bare pass. Peak RSS is this process's own.
"""

from __future__ import annotations

import dataclasses
import json
import os
import resource
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

def heldout_tokens(run: Path, n_tokens: int) -> np.ndarray:
    """Return the held-out rows [n_seq, T] holding the first n_tokens in the corpus's row order, as load_heldout."""
    import numpy as np

    heldout = np.load(run / "corpus" / "heldout.npy", mmap_mode="r")  # [n_rows, T]
    order = np.load(run / "corpus" / "heldout_order.npy")  # [n_rows], a permutation written with the corpus
    n_rows = min(-(-n_tokens // heldout.shape[1]), len(heldout))
    return np.asarray(heldout[order[:n_rows]])


def load_model(run: Path):
    """Return the run's LM as SAELens's HookedSAETransformer (eval mode), with the run's tokenizer when present."""
    import torch
    from sae_lens import HookedSAETransformer
    from safetensors.torch import load_file
    from transformer_lens import HookedTransformerConfig

    saved = json.loads((run / "lm" / "config.json").read_text())
    if saved.get("pretrained"):
        raise SystemExit(f"{run}/lm is a pretrained LM ({saved['pretrained']}); this bench needs the run's own LM")
    # The LM was saved by transformer-lens 3; its extra config keys are all at their defaults for our model.
    names = {f.name for f in dataclasses.fields(HookedTransformerConfig) if f.init}
    kwargs = {k: v for k, v in saved.items() if k in names and k not in ("n_params", "device")}
    kwargs["dtype"] = getattr(torch, kwargs.get("dtype", "float32"))
    tokenizer = None
    if (run / "corpus" / "hf").is_dir():
        from transformers import PreTrainedTokenizerFast

        tokenizer = PreTrainedTokenizerFast.from_pretrained(str(run / "corpus" / "hf"))
    model = HookedSAETransformer(HookedTransformerConfig(**kwargs, device="cpu"), tokenizer=tokenizer)
    # Parameters only: the attention mask and IGNORE buffers follow from the config (transformer-lens 3 saves the
    # mask as an empty placeholder).
    params = dict(model.named_parameters())
    state = {k: v for k, v in load_file(str(run / "lm" / "weights.safetensors")).items() if k in params}
    missing = sorted(set(params) - set(state))
    if missing:
        raise SystemExit(f"{run}/lm/weights.safetensors lacks parameters {missing}")
    model.load_state_dict(state, strict=False)
    return model.eval()


def patch_histogram_ticks() -> list[int]:
    """Make SAEDashboard's "5 ticks" histograms safe for data within (-0.3, 0.3); return a one-item list counting the
    histograms this changed.

    SAEDashboard 0.8's `HistogramData.from_data` spaces ticks by 0.1 * int(longer side / 0.3) + 1e-6, which is 1e-6 when
    both max and -min are under 0.3: then it lists max / 1e-6 ticks, ~2e5 per feature, kept for every feature. On
    the bench LM (1M training tokens) 2,672 of the 4,096 features' logit vectors are that small, and the run was killed
    for memory at 24 GB. Such histograms get the "ints" mode instead, whose ticks are then [0]: tick labels only; the
    histogram's bins and every other number are SAEDashboard's own.
    """
    from sae_dashboard.utils_fns import HistogramData

    original = HistogramData.from_data.__func__
    changed = [0]

    def from_data(cls, data, n_bins, tickmode, title):
        if tickmode == "5 ticks" and data.numel() and int(1e-4 + max(data.max().item(), -data.min().item()) / 0.3) == 0:
            changed[0] += 1
            tickmode = "ints"
        return original(cls, data, n_bins, tickmode, title)

    HistogramData.from_data = classmethod(from_data)
    return changed


def measure(run: Path, n_tokens: int, sae_name: str, tokens_npy: Path | None) -> dict:
    """Time SaeVisRunner on every feature of saes/sae_name; return seconds, CPU seconds, peak RSS, tokens, features."""
    import numpy as np
    import torch
    from sae_dashboard.sae_vis_data import SaeVisConfig
    from sae_dashboard.sae_vis_runner import SaeVisRunner
    from sae_lens import SAE

    rows = np.load(tokens_npy) if tokens_npy else heldout_tokens(run, n_tokens)  # [n_seq, T]
    tokens = torch.from_numpy(rows.astype(np.int64))
    model = load_model(run)
    sae = SAE.load_from_disk(str(run / "saes" / sae_name), device="cpu")
    d_sae = sae.cfg.d_sae
    cfg = SaeVisConfig(hook_point=sae.cfg.metadata.hook_name, features=list(range(d_sae)), device="cpu",
                       dtype="float32", verbose=False)
    patched = patch_histogram_ticks()
    cpu0, t0 = time.process_time(), time.perf_counter()
    data = SaeVisRunner(cfg).run(encoder=sae, model=model, tokens=tokens)
    seconds, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    if len(data.feature_data_dict) != d_sae:
        raise SystemExit(f"SaeVisRunner returned {len(data.feature_data_dict)} features, expected {d_sae}")
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # GiB (ru_maxrss is in KiB on Linux)
    return {"mode": "saedashboard", "tokens": int(tokens.numel()), "features": d_sae, "seconds": seconds,
            "cpu_seconds": cpu, "peak_rss_gib": rss, "histograms_tick_fixed": patched[0]}


def main() -> None:
    # compare.py lies beside this file and imports only the standard library at its top: fine in either venv.
    from compare import bench_parser

    parser = bench_parser(__doc__.splitlines()[0])
    parser.add_argument("--tokens-npy", type=Path, help="token rows [n_seq, T] to use instead of the run's held-out")
    parser.add_argument("--max-gib", type=float, default=12.0,
                        help="address-space cap: a MemoryError here rather than the kernel killing other jobs")
    args = parser.parse_args()
    cap = int(args.max_gib * 2**30)
    resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    # Before torch loads, as libgomp reads OMP_WAIT_POLICY once (passive, as bench/analysis.py); no hub, no wandb.
    for name, value in [("OMP_WAIT_POLICY", "PASSIVE"), ("HF_HUB_OFFLINE", "1"), ("WANDB_MODE", "disabled")]:
        os.environ.setdefault(name, value)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", message="Using a non-tuple sequence")  # eindex's indexing, on every feature
    import torch

    torch.set_num_threads(args.threads)
    result = measure(args.run.resolve(), args.tokens, args.sae, args.tokens_npy)
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
