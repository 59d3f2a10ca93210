"""Statistics of a blind monosemanticity review: medians with confidence intervals, group tests, rater agreement.

"Towards Monosemanticity" has raters score units blind on a rubric (app/store/rubric.py: total 0-14) and reports
the median score of features (12) against neurons (0). A bare median hides how sure we are, so this module adds a
bootstrap CI of the median, a Mann-Whitney U test with its effect size for features vs neurons, Krippendorff's alpha
for how well the raters agree, a histogram of totals and mean score per activation interval. Pure functions over
plain lists and dicts: the database and the web pages gather the scores, this module only computes.
"""

from __future__ import annotations

import math
import warnings

import krippendorff
import numpy as np
from scipy.stats import mannwhitneyu

from app.store.rubric import MAX_TOTAL


def median_ci(
    values: list[float], *, level: float = 0.95, n_boot: int = 10_000, seed: int = 0
) -> tuple[float | None, float | None, float | None]:
    """(median, low, high): the median and a percentile-bootstrap confidence interval of it at `level`.

    Empty input gives (None, None, None); the same seed gives the same interval.
    """
    if not values:
        return None, None, None
    data = np.asarray(values, dtype=float)
    median = float(np.median(data))
    if data.size == 1:
        return median, median, median
    rng = np.random.default_rng(seed)
    resampled = data[rng.integers(0, data.size, size=(n_boot, data.size))]
    medians = np.median(resampled, axis=1)
    tail = (1.0 - level) / 2.0
    low, high = np.quantile(medians, [tail, 1.0 - tail])
    return median, float(low), float(high)


def mann_whitney(a: list[float], b: list[float]) -> dict | None:
    """{"u", "p", "n_a", "n_b", "effect_size"} of a two-sided Mann-Whitney U test of `a` against `b`; None if either is empty.

    `u` is the U of `a`; `effect_size` is U / (n_a * n_b), the probability that a random `a` exceeds a random `b`
    (ties count half). When every value of both groups is the same there is no evidence of a difference: p = 1.0.
    """
    if not a or not b:
        return None
    n_a, n_b = len(a), len(b)
    if len(set(a) | set(b)) == 1:
        u, p = n_a * n_b / 2.0, 1.0
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            result = mannwhitneyu(a, b, alternative="two-sided")
        u, p = float(result.statistic), float(result.pvalue)
        if math.isnan(p):
            p = 1.0
    return {"u": u, "p": p, "n_a": n_a, "n_b": n_b, "effect_size": u / (n_a * n_b)}


def krippendorff_alpha(ratings: dict[str, dict[int, float]], level: str = "interval") -> float | None:
    """Krippendorff's alpha of the raters' scores at `level` ("nominal", "ordinal", "interval", "ratio"), or None.

    `ratings` maps rater -> {item: value}; a missing score is simply absent. None when fewer than 2 raters, fewer
    than 2 items scored by at least 2 raters, or when alpha is undefined (e.g. every score is the same).
    """
    if len(ratings) < 2:
        return None
    items = sorted({item for scores in ratings.values() for item in scores})
    matrix = np.array(
        [[scores.get(item, np.nan) for item in items] for scores in ratings.values()], dtype=float
    )
    if int((np.sum(~np.isnan(matrix), axis=0) >= 2).sum()) < 2:
        return None
    try:
        with warnings.catch_warnings(), np.errstate(divide="ignore", invalid="ignore"):
            warnings.simplefilter("ignore", RuntimeWarning)
            alpha = float(krippendorff.alpha(reliability_data=matrix, level_of_measurement=level))
    except ValueError:  # the library refuses data with a single value in the domain
        return None
    return None if math.isnan(alpha) else alpha


def total_histogram(totals: list[int], max_total: int = MAX_TOTAL) -> list[int]:
    """Counts of each rubric total 0..max_total (list of length max_total + 1); totals outside the range raise."""
    counts = [0] * (max_total + 1)
    for total in totals:
        if not 0 <= total <= max_total:
            raise ValueError(f"total {total} is outside 0..{max_total}")
        counts[total] += 1
    return counts


def interval_curves(rows: list[tuple[str, list[int | None]]]) -> dict[str, dict]:
    """{group: {"mean": [mean score or None per interval], "n": [scores per interval]}} over all rows.

    Each row is (group, scores by interval index, None where not scored); every curve is as long as the longest
    row, so an interval no row of a group scored has mean None and n 0.
    """
    width = max((len(scores) for _, scores in rows), default=0)
    sums: dict[str, list[float]] = {}
    counts: dict[str, list[int]] = {}
    for group, scores in rows:
        group_sums = sums.setdefault(group, [0.0] * width)
        group_counts = counts.setdefault(group, [0] * width)
        for i, score in enumerate(scores):
            if score is not None:
                group_sums[i] += score
                group_counts[i] += 1
    return {
        group: {
            "mean": [s / c if c else None for s, c in zip(sums[group], counts[group])],
            "n": counts[group],
        }
        for group in sums
    }
