"""The scores of automated interpretability, as plain functions of numbers: Spearman correlation (the paper's
simulation score), balanced accuracy and AUROC (delphi's detection and fuzzing, and the logit test)."""

from __future__ import annotations

import numpy as np
from scipy.stats import rankdata


def spearman(predicted, actual) -> float:
    """Spearman's rank correlation of two equally long sequences (average ranks for ties); 0.0 when either is constant
    (a simulator that says the same number everywhere has predicted nothing) or when there are fewer than 2 values."""
    p, a = np.asarray(predicted, float), np.asarray(actual, float)
    if p.shape != a.shape:
        raise ValueError(f"spearman: {p.shape} predictions for {a.shape} activations")
    if p.size < 2 or np.ptp(p) == 0 or np.ptp(a) == 0:
        return 0.0
    rp, ra = rankdata(p) - (p.size + 1) / 2, rankdata(a) - (a.size + 1) / 2
    return float(np.dot(rp, ra) / np.sqrt(np.dot(rp, rp) * np.dot(ra, ra)))


def balanced_accuracy(predicted, truth) -> float | None:
    """(true positive rate + true negative rate) / 2 of boolean predictions; None without both classes in `truth`."""
    p, t = np.asarray(predicted, bool), np.asarray(truth, bool)
    if not t.any() or t.all():
        return None
    return float((p[t].mean() + (~p[~t]).mean()) / 2)


def auroc(scores, truth) -> float | None:
    """Area under the ROC curve of `scores` for `truth` (ties count half: the Mann-Whitney statistic / (n+ n-));
    None without both classes."""
    s, t = np.asarray(scores, float), np.asarray(truth, bool)
    n_pos, n_neg = int(t.sum()), int((~t).sum())
    if not n_pos or not n_neg:
        return None
    ranks = rankdata(s)
    return float((ranks[t].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))
