"""Examples as plain data: one window of text with one unit's activation on every token, and how prompts show it.

Activations are quantised to 0-9 relative to the unit's max activation (the paper's and OpenAI's convention: the
explainer and the simulator both speak in these digits). Token texts are shown on one line: a newline as ↵ and a tab
as →, so one window is one line of the prompt.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass

import numpy as np

KINDS = ("top", "interval", "random", "top_token")  # where an example comes from (the paper's mix)
MARK_OPEN, MARK_CLOSE = "«", "»"  # around a highlighted token: rare in code, so never confused with the text


@dataclass(frozen=True)
class Window:
    """One example: `texts[i]` is token i's display string, `acts[i]` the unit's activation there, `scored[i]` False
    for tokens every statistic leaves out (BOS); `kind` is one of KINDS and `bucket` the activation interval of an
    interval sample."""

    kind: str
    texts: tuple[str, ...]
    acts: tuple[float, ...]
    scored: tuple[bool, ...]
    bucket: int | None = None

    def __post_init__(self):
        if not len(self.texts) == len(self.acts) == len(self.scored):
            raise ValueError("a window needs one activation and one flag per token")

    @property
    def peak(self) -> float:
        """The largest activation on a scored token (0.0 when there is none)."""
        return max([a for a, s in zip(self.acts, self.scored) if s], default=0.0)

    def as_record(self, max_activation: float) -> dict:
        """The window as stored with an explanation: kind, bucket, token texts and the quantised activations."""
        return {"kind": self.kind, "bucket": self.bucket, "texts": list(self.texts),
                "levels": quantise(self.acts, max_activation)}


def quantise(acts, max_activation: float) -> list[int]:
    """Return each activation as a digit 0-9: round(9 a / max), 0 for a <= 0 (and for every token of a dead unit)."""
    a = np.asarray(acts, float)
    if max_activation <= 0:
        return [0] * a.size
    return np.clip(np.rint(9 * np.maximum(a, 0) / max_activation), 0, 9).astype(int).tolist()


def one_line(text: str) -> str:
    """A token's text for a one-line rendering: newline as ↵, carriage return as ␍, tab as →."""
    return text.replace("\r", "␍").replace("\n", "↵").replace("\t", "→")


def plain(w: Window) -> str:
    """The window's text on one line, nothing marked (detection)."""
    return "".join(one_line(t) for t in w.texts)


def with_levels(w: Window, max_activation: float) -> str:
    """The window's text with every active token followed by its level: `«tok»(7)` (explanation)."""
    levels = quantise(w.acts, max_activation)
    return "".join(f"{MARK_OPEN}{one_line(t)}{MARK_CLOSE}({q})" if q > 0 and s else one_line(t)
                   for t, q, s in zip(w.texts, levels, w.scored))


def highlighted(w: Window, marked: set[int]) -> str:
    """The window's text with the tokens at positions `marked` between « and » (fuzzing)."""
    return "".join(f"{MARK_OPEN}{one_line(t)}{MARK_CLOSE}" if i in marked else one_line(t)
                   for i, t in enumerate(w.texts))


def fingerprint(records: list[dict], *parts: str) -> str:
    """A short hash of JSON records and extra strings: an explanation (or score) is redone when this changes."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(json.dumps(records, sort_keys=True, ensure_ascii=False).encode())
    for part in parts:
        digest.update(b"\x00" + part.encode())
    return digest.hexdigest()


def records(windows: list[Window]) -> list[dict]:
    """Raw (unquantised) records of windows, for fingerprints of the scorers' examples."""
    return [asdict(w) for w in windows]
