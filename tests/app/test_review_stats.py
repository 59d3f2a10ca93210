"""The review statistics against numbers worked out by hand or published (Krippendorff 2011)."""

from __future__ import annotations

import math
import warnings

import pytest

from app.store.review_stats import (
    interval_curves,
    krippendorff_alpha,
    mann_whitney,
    median_ci,
    total_histogram,
)
from app.store.rubric import MAX_TOTAL


def test_median_ci_brackets_the_median_and_is_deterministic() -> None:
    values = [0, 1, 2, 10, 11, 12, 12, 13, 14]
    median, low, high = median_ci(values, seed=3)
    assert median == 11
    assert low <= median <= high
    assert 0 <= low < high <= 14  # bootstrap medians of odd-sized samples are data values
    assert median_ci(values, seed=3) == (median, low, high)


def test_median_ci_is_narrower_for_more_data() -> None:
    small = [0, 2, 5, 9, 12, 14]
    _, low_small, high_small = median_ci(small)
    _, low_big, high_big = median_ci(small * 20)
    assert high_big - low_big < high_small - low_small


def test_median_ci_edge_cases() -> None:
    assert median_ci([]) == (None, None, None)
    assert median_ci([7.0]) == (7.0, 7.0, 7.0)
    assert median_ci([12, 12, 12, 12]) == (12.0, 12.0, 12.0)
    assert median_ci([1, 2, 3, 4])[0] == 2.5


def test_mann_whitney_separated_groups() -> None:
    result = mann_whitney([4, 5, 6], [1, 2, 3])
    assert result is not None
    assert result["u"] == 9.0 and result["effect_size"] == 1.0
    assert (result["n_a"], result["n_b"]) == (3, 3)
    # Exact: 1 of the C(6,3) = 20 equally likely splits gives U = 9 and 1 gives U = 0, so p = 2/20.
    assert result["p"] == pytest.approx(0.1)
    reverse = mann_whitney([1, 2, 3], [4, 5, 6])
    assert reverse["u"] == 0.0 and reverse["effect_size"] == 0.0 and reverse["p"] == pytest.approx(0.1)


def test_mann_whitney_counts_ties_as_half() -> None:
    # a=2 vs b=2 ties (0.5); 2>1, 3>2, 3>1 win (3): U = 3.5 of 4 pairs.
    result = mann_whitney([2, 3], [2, 1])
    assert result["u"] == 3.5 and result["effect_size"] == pytest.approx(0.875)
    assert 0.0 < result["p"] <= 1.0


def test_mann_whitney_identical_groups_without_warnings() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = mann_whitney([5, 5, 5], [5, 5])
    assert result == {"u": 3.0, "p": 1.0, "n_a": 3, "n_b": 2, "effect_size": 0.5}


def test_mann_whitney_empty_group() -> None:
    assert mann_whitney([], [1, 2]) is None
    assert mann_whitney([1, 2], []) is None


# Krippendorff (2011), "Computing Krippendorff's Alpha-Reliability", section C: 4 observers, 12 units, missing data.
TEXTBOOK = {
    "A": {1: 1, 2: 2, 3: 3, 4: 3, 5: 2, 6: 1, 7: 4, 8: 1, 9: 2},
    "B": {1: 1, 2: 2, 3: 3, 4: 3, 5: 2, 6: 2, 7: 4, 8: 1, 9: 2, 10: 5, 12: 3},
    "C": {2: 3, 3: 3, 4: 3, 5: 2, 6: 3, 7: 4, 8: 2, 9: 2, 10: 5, 11: 1},
    "D": {1: 1, 2: 2, 3: 3, 4: 3, 5: 2, 6: 4, 7: 4, 8: 1, 9: 2, 10: 5, 11: 1},
}


def test_krippendorff_alpha_textbook_example() -> None:
    assert round(krippendorff_alpha(TEXTBOOK, "nominal"), 3) == 0.743
    assert round(krippendorff_alpha(TEXTBOOK, "ordinal"), 3) == 0.815
    assert round(krippendorff_alpha(TEXTBOOK), 3) == 0.849
    assert round(krippendorff_alpha(TEXTBOOK, "ratio"), 3) == 0.797


def test_krippendorff_alpha_by_hand() -> None:
    # Units (1,1), (1,2), (2,2), (2,2): coincidences o11=2, o12=o21=1, o22=4; n1=3, n2=5, n=8.
    # Nominal: D_o = 2/8, D_e = 2*3*5 / (8*7) = 30/56, alpha = 1 - (2/8) / (30/56) = 8/15.
    ratings = {"r1": {0: 1, 1: 1, 2: 2, 3: 2}, "r2": {0: 1, 1: 2, 2: 2, 3: 2}}
    assert krippendorff_alpha(ratings, "nominal") == pytest.approx(8 / 15)


def test_krippendorff_alpha_degenerate_cases() -> None:
    assert krippendorff_alpha({"r1": {0: 3, 1: 7, 2: 12}, "r2": {0: 3, 1: 7, 2: 12}}) == pytest.approx(1.0)
    assert krippendorff_alpha({"r1": {0: 3, 1: 7, 2: 12}}) is None
    assert krippendorff_alpha({}) is None
    # Only item 0 is rated by both raters: nothing to compare across items.
    assert krippendorff_alpha({"r1": {0: 3, 1: 7}, "r2": {0: 3, 2: 9}}) is None
    # No variation at all: alpha is undefined.
    assert krippendorff_alpha({"r1": {0: 5, 1: 5}, "r2": {0: 5, 1: 5}}) is None


def test_total_histogram() -> None:
    counts = total_histogram([0, 0, 12, 12, 12, 14, 3])
    assert len(counts) == MAX_TOTAL + 1 == 15  # the rubric's totals 0..14
    assert counts[0] == 2 and counts[3] == 1 and counts[12] == 3 and counts[14] == 1
    assert sum(counts) == 7
    assert total_histogram([], max_total=3) == [0, 0, 0, 0]
    with pytest.raises(ValueError):
        total_histogram([MAX_TOTAL + 1])


def test_interval_curves_with_missing_scores() -> None:
    rows = [
        ("features", [3, 2, None]),
        ("features", [1, None, 0, 2]),
        ("neurons", [0, 1]),
        ("neurons", [None, 3]),
    ]
    curves = interval_curves(rows)
    assert set(curves) == {"features", "neurons"}
    assert curves["features"] == {"mean": [2.0, 2.0, 0.0, 2.0], "n": [2, 1, 1, 1]}
    assert curves["neurons"] == {"mean": [0.0, 2.0, None, None], "n": [1, 2, 0, 0]}
    assert interval_curves([]) == {}
    assert math.isclose(interval_curves([("x", [1, 2]), ("x", [2, 2])])["x"]["mean"][0], 1.5)
