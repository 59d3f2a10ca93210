"""Live inference: run the LM (and every ingested SAE) on a typed text and report which units fire where.

The one place besides the CLI where the app touches torch. The LM and SAEs are loaded from the run folder recorded in
the model table once per process (`live_model` caches them) and imported lazily, so pages that never call this start
without torch. Texts longer than the model's context are cut into windows of n_ctx - 1 tokens, each after a BOS token,
as the training rows were built.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from app.read import queries
from app.read.infer_schemas import MAX_INFER_CHARS, ActiveUnit, InferResult, InferToken
from app.read.urls import unit_url
from app.read.windows import visible_whitespace
from sae.conventions import NEURON_BASIS
from sae.errors import MonoscopeError

UNITS_PER_BASIS = 10


class Unavailable(MonoscopeError):
    """Live inference needs files this machine does not have (the run folder): the web answers 503."""


@dataclass
class LiveModel:
    """The LM, its tokenizer and the SAEs of one run, ready for inference on CPU."""

    run_dir: Path
    sae_names: tuple[str, ...]
    model: object = None
    saes: dict = field(default_factory=dict)
    tokenizer: object = None
    bos_id: int = 0
    strings: list[str] | None = None

    def load(self) -> "LiveModel":
        import torch

        from sae.corpus.build import read_token_strings
        from sae.dictionary.saelens_format import load_sae
        from sae.lm.model import load_lm

        torch.set_num_threads(min(2, torch.get_num_threads()))
        self.model = load_lm(self.run_dir, "cpu")
        self.saes = {name: load_sae(self.run_dir / "saes" / name)[0].float().eval() for name in self.sae_names}
        corpus = self.run_dir / "corpus"
        if (corpus / "tokenizer.json").is_file():
            from tokenizers import Tokenizer

            self.tokenizer = Tokenizer.from_file(str(corpus / "tokenizer.json"))
            self.bos_id = int(json.loads((corpus / "meta.json").read_text())["bos_id"])
            if (corpus / "token_strings.json").is_file():
                self.strings = read_token_strings(self.run_dir)
        else:  # a pretrained model: its own Hugging Face tokenizer
            self.tokenizer = self.model.tokenizer
            self.bos_id = int(self.tokenizer.bos_token_id)
        return self

    def tokenize(self, text: str) -> list[int]:
        """Return the token ids of `text`, without BOS."""
        if hasattr(self.tokenizer, "encode") and hasattr(self.tokenizer, "token_to_id"):  # tokenizers.Tokenizer
            return list(self.tokenizer.encode(text, add_special_tokens=False).ids)
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def token_text(self, token_id: int) -> str:
        if self.strings is not None and 0 <= token_id < len(self.strings):
            return self.strings[token_id]
        return self.tokenizer.decode([token_id])

    def activations(self, ids: list[int]) -> dict[str, np.ndarray]:
        """Return {basis name: activations [T, n_units] float32} for the T tokens; `neurons` is the MLP itself."""
        import torch

        from sae.lm.model import mlp_activations

        width = int(self.model.cfg.n_ctx) - 1
        windows = [ids[i:i + width] for i in range(0, len(ids), width)]
        rows = torch.full((len(windows), width + 1), self.bos_id, dtype=torch.long)  # [W, n_ctx], BOS-padded
        for row, window in zip(rows, windows):
            row[1:1 + len(window)] = torch.tensor(window)
        with torch.no_grad():
            post = mlp_activations(self.model, rows)[:, 1:]  # [W, n_ctx - 1, d_mlp], BOS column dropped
            post = post.reshape(-1, post.shape[-1])[: len(ids)]  # [T, d_mlp]: padding sits after the last token
            out = {NEURON_BASIS: post.numpy()}
            for name, sae in self.saes.items():
                out[name] = sae.encode(post).numpy()  # [T, d_sae]
        return out


_LOADED: dict[tuple[str, tuple[str, ...]], LiveModel] = {}
_LOCK = threading.Lock()


def live_model(run_dir: Path, sae_names: tuple[str, ...]) -> LiveModel:
    """Return the LiveModel of a run folder and SAE set, loading it on first use in this process."""
    key = (str(Path(run_dir).resolve()), sae_names)
    with _LOCK:
        if key not in _LOADED:
            _LOADED[key] = LiveModel(Path(run_dir), sae_names).load()
        return _LOADED[key]


def _parse_strip(strip: str, sizes: dict[str, int]) -> tuple[str, int] | None:
    """Return (basis, index) of a `basis:index` string (STRIP_PATTERN) checked against the bases' sizes; None for a
    blank one. A malformed one is a 422, a unit the result does not have a 404."""
    if not strip.strip():
        return None
    name, _, index = strip.rpartition(":")
    if not (index.isascii() and index.isdigit() and len(index) < 300):
        raise MonoscopeError(f"strip is `basis:index` of an ingested unit, got {strip!r}")
    if name not in sizes or int(index) >= sizes[name]:
        raise queries.NotFound(f"strip: the text's result has no unit {strip!r}")
    return name, int(index)


def infer_result(session, *, text: str, position: int | None, strip: str, model: str | None) -> InferResult:
    """Return the tokens of `text`, the units most active at `position` (default: the last token) and the
    activation of unit `strip` (default: the most active one there) over every token."""
    if not text.strip():
        raise MonoscopeError("type some text to run the model on")
    if len(text) > MAX_INFER_CHARS:
        raise MonoscopeError(f"the text has {len(text):,} characters; live inference takes at most "
                             f"{MAX_INFER_CHARS:,}")
    ctx = queries.live_context(session=session, model=model)
    run_dir = Path(ctx.run_dir)
    sae_names = tuple(b.name for b in ctx.bases if b.kind == "sae" and (run_dir / "saes" / b.name).is_dir())
    if not (run_dir / "lm").is_dir():
        raise Unavailable(f"live inference needs the run folder {run_dir} of model {ctx.model!r}, "
                          f"which is not on this machine")
    live = live_model(run_dir, sae_names)
    ids = live.tokenize(text)
    if not ids:
        raise MonoscopeError("the text gives no tokens")
    acts = live.activations(ids)  # {basis: [T, U]}
    if position is None:
        position = len(ids) - 1
    if not 0 <= position < len(ids):
        raise queries.NotFound(f"position {position} is beyond the text's {len(ids)} tokens (0 to {len(ids) - 1})")
    bases = [b for b in ctx.bases if b.name in acts]
    active: list[ActiveUnit] = []
    for b in bases:
        row = acts[b.name][position]  # [U]
        top = [int(i) for i in np.argsort(-row)[:UNITS_PER_BASIS] if row[i] > 0]
        labels = queries.labels_for(session=session, basis_id=b.id, indexes=top)
        explained = queries.basis_explanations(session, b.id)
        tokens = queries.top_tokens_for(session=session, basis_id=b.id, indexes=top)
        active += [ActiveUnit(basis=b.name, index=i, activation=float(row[i]), label=labels.get(i),
                              explanation=explained.get(i), top_tokens=tokens.get(i, [])[:3],
                              url=unit_url(b.name, i, ctx.model_param)) for i in top]
    chosen = _parse_strip(strip, {b.name: b.n_units for b in bases})
    if chosen is None and active:
        chosen = (active[0].basis, active[0].index)
    values = acts[chosen[0]][:, chosen[1]].astype(float).tolist() if chosen else []
    texts = [live.token_text(i) for i in ids]
    tokens = [InferToken(position=p, id=i, text=t, shown=s)
              for p, (i, t, s) in enumerate(zip(ids, texts, visible_whitespace(texts, at_line_start=True)))]
    return InferResult(model=ctx.model, text=text, tokens=tokens, position=position, active_units=active,
                       strip_basis=chosen[0] if chosen else None, strip_index=chosen[1] if chosen else None,
                       strip=values, strip_max=max(values, default=0.0))
