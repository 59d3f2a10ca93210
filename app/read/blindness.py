"""Is a blind review blind? Two attacks on review items' JSON, used by the test suite (tests/app/test_blindness.py)
and by bench/blind_review.py on a real database. Plain functions of JSON objects: no database, no web.

- Separation: for every number an item holds (by its path, list positions included, and the length of every list),
  except the windows' own activations, how well it tells the items of one basis from those of another: the area
  under the ROC curve, either direction (0.5: chance; 1: separates them perfectly).
- Lookup: an attacker who holds every unit's open JSON twin looks each item's windows up in it. An item is found when
  one unit holds more of its windows than any other, and that unit is the item's. Three ways to match a window:
  `window`, the same window (its whole text; the same activations follow from it): what the review guarantees
  against; and two that find a unit by what it does rather than by the same window, reported beside it: `phrase`,
  the LOOKUP_NGRAM tokens around its max token anywhere in an open window (a feature of a code idiom fires on it in
  many files), and `value`, the max token's text with its activation relative to the unit's max as the item rounds
  it (a feature firing on one token at a typical strength).
- The logit lookup (not guarded, see the README): the item's promoted tokens, in order, against each open twin's.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable, Iterable, Mapping

import numpy as np

LOOKUP_NGRAM = 9  # tokens around a window's max token that an attacker searches the open windows for
CHANNELS = ("window", "phrase", "value")  # how the lookup matches a window (see the docstring)
WINDOW_NUMBERS = ("acts", "value")  # a window's own activations: what the separation leaves out


def numeric_fields(item: Mapping) -> dict[str, float]:
    """Return every number of an item's JSON by path (`top_logits[3].value`), every list's length (`path#`), and the
    number of windows (`windows#`), leaving out each window's activations (WINDOW_NUMBERS)."""
    out: dict[str, float] = {}

    def walk(x, path: str) -> None:
        if isinstance(x, Mapping):
            window = "texts" in x and "acts" in x
            for key, value in x.items():
                if not (window and key in WINDOW_NUMBERS):
                    walk(value, f"{path}.{key}" if path else key)
        elif isinstance(x, list):
            out[f"{path}#"] = len(x)
            for i, value in enumerate(x):
                walk(value, f"{path}[{i}]")
        elif isinstance(x, (int, float)) and x is not None:
            out[path] = float(x)

    walk(item, "")
    out["windows#"] = len(list(windows(item)))
    return out


def auc(a: Iterable[float], b: Iterable[float]) -> float:
    """Return the area under the ROC curve of telling a from b by one number, in the better direction."""
    x, y = np.asarray(list(a), dtype=float), np.asarray(list(b), dtype=float)
    greater = float((x[:, None] > y[None, :]).mean() + 0.5 * (x[:, None] == y[None, :]).mean())
    return max(greater, 1.0 - greater)


def separation(a: list[Mapping], b: list[Mapping], min_items: int = 5) -> dict[str, float]:
    """Return the AUC of every numeric field (numeric_fields) held by at least `min_items` items of each group."""
    fa, fb = [numeric_fields(i) for i in a], [numeric_fields(i) for i in b]
    result = {}
    for path in sorted({p for f in fa for p in f} | {p for f in fb for p in f}):
        xa, xb = [f[path] for f in fa if path in f], [f[path] for f in fb if path in f]
        if len(xa) >= min_items and len(xb) >= min_items:
            result[path] = auc(xa, xb)
    return result


def windows(unit: Mapping) -> Iterable[Mapping]:
    """Yield every window of an item or of a unit's twin: top examples, then interval samples."""
    yield from unit.get("top_examples", [])
    for interval in unit.get("intervals", []):
        yield from interval.get("samples", [])


def _ngram(window: Mapping) -> tuple[str, ...] | None:
    half = LOOKUP_NGRAM // 2
    at = window["max_position"]
    texts = window["texts"]
    return tuple(texts[at - half: at + half + 1]) if at >= half and at + half < len(texts) else None


class OpenTwins:
    """The index an attacker builds from every unit's open JSON twin, by unit key (e.g. (basis, index))."""

    def __init__(self, twins: Mapping[Hashable, Mapping]) -> None:
        self.index: dict[tuple, set] = {}  # (channel, key) -> the units whose open windows have it
        self.by_logits: dict[tuple, set] = {}
        for key, twin in twins.items():
            scale = twin.get("max_activation") or 1.0
            for w in windows(twin):
                texts = w["texts"]
                self.index.setdefault(("window", tuple(texts)), set()).add(key)
                for i in range(len(texts) - LOOKUP_NGRAM + 1):
                    self.index.setdefault(("phrase", tuple(texts[i: i + LOOKUP_NGRAM])), set()).add(key)
                self.index.setdefault(("value", texts[w["max_position"]], round(w["value"] / scale, 3)),
                                      set()).add(key)
            self.by_logits.setdefault(tuple(t["text"] for t in twin.get("top_logits", [])), set()).add(key)

    def guess(self, item: Mapping, channels: Iterable[str] = ("window",)) -> Hashable | None:
        """Return the unit holding more of the item's windows (matched by `channels`) than any other, or None."""
        votes: Counter = Counter()
        for w in windows(item):
            keys = {"window": ("window", tuple(w["texts"])), "phrase": ("phrase", _ngram(w)),
                    "value": ("value", w["texts"][w["max_position"]], round(w["value"], 3))}
            votes.update(set().union(*(self.index.get(keys[c], set()) for c in channels)))
        return _unique_best(votes)

    def guess_by_logits(self, item: Mapping) -> Hashable | None:
        """Return the one unit whose twin lists the item's promoted tokens in the same order, or None."""
        found = self.by_logits.get(tuple(t["text"] for t in item.get("top_logits", [])), set())
        return next(iter(found)) if len(found) == 1 else None


def _unique_best(votes: Counter) -> Hashable | None:
    top = votes.most_common(2)
    if not top or (len(top) == 2 and top[1][1] == top[0][1]):
        return None
    return top[0][0]


def found_share(twins: OpenTwins, items: Mapping[Hashable, Mapping], channels: Iterable[str] = ("window",)) -> float:
    """Return the share of items (by their unit's key) the lookup finds by `channels`: its guess is the item's own
    unit. Channel "logits" is the logit lookup."""
    channels = tuple(channels)
    guess = twins.guess_by_logits if channels == ("logits",) else lambda item: twins.guess(item, channels)
    return sum(guess(item) == key for key, item in items.items()) / max(len(items), 1)
