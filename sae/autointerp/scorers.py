"""The explainer and the four scorers. Each scorer takes an explanation (a model's, or a person's hypothesis from a
blind review: the same code scores both) and examples it was not written from, and returns one number:

- simulation (the paper's): the model predicts a level 0-9 on every token of held-out windows; the prediction is the
  expected level under its probabilities; the score is Spearman's correlation with the true activations over all
  tokens (BOS left out). A simulator that predicts one constant scores 0.
- detection (delphi's): does this window activate the unit? Active windows against silent random ones.
- fuzzing (delphi's): are the «marked» tokens the active ones? Each active window is shown once, with its active
  tokens marked or, for every other window, as many silent tokens marked instead.
- logits (the paper's logit test): would this token come next? The unit's promoted tokens ranked 10 to 60 against
  random ones.
The last three are balanced accuracies of "yes" at probability > 0.5, with the AUROC of P(yes) in the details.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np

from sae.autointerp import prompts
from sae.autointerp.evidence import Evidence, unit_rng
from sae.autointerp.llm import LLM, Usage
from sae.autointerp.metrics import auroc, balanced_accuracy, spearman
from sae.autointerp.windows import Window, quantise

SCORERS = ("simulation", "detection", "fuzzing", "logits")
SCORER_VERSION = "1"
MAX_EXPLANATION_CHARS = 200


@dataclass(frozen=True)
class Scored:
    scorer: str
    score: float | None
    details: dict
    usage: Usage


def explain(llm: LLM, ev: Evidence, max_tokens: int) -> tuple[str, Usage]:
    """Return the model's explanation of the unit (its answer's first non-empty line, unquoted, at most
    MAX_EXPLANATION_CHARS) and the tokens it took."""
    answer = llm.complete(prompts.explain(ev.explain, ev.max_activation, ev.top_logits, ev.bottom_logits),
                          max_tokens=max_tokens)
    line = next((s for s in (x.strip() for x in answer.text.splitlines()) if s), "")
    line = line.strip("\"'` ").removeprefix("Explanation:").strip()
    return (line[:MAX_EXPLANATION_CHARS] or "(no answer)"), answer.usage


def simulation(llm: LLM, explanation: str, windows: list[Window], max_activation: float) -> Scored:
    jobs = [prompts.simulate(explanation, w) for w in windows]
    probs, usage = llm.slot_probs([m for m, _ in jobs], [s for _, s in jobs], prompts.LEVELS)
    levels = np.arange(len(prompts.LEVELS))
    predicted, actual, shown = [], [], []
    for w, p in zip(windows, probs):
        expected = (np.asarray(p).reshape(-1, len(levels)) @ levels).tolist()  # [tokens]
        truth = quantise(w.acts, max_activation)
        keep = [i for i, s in enumerate(w.scored) if s]
        predicted += [expected[i] for i in keep]
        actual += [w.acts[i] for i in keep]
        shown.append({"kind": w.kind, "predicted": [round(expected[i], 2) for i in keep],
                      "actual": [truth[i] for i in keep]})
    details = {"n_examples": len(windows), "n_tokens": len(actual),
               "examples_by_kind": dict(Counter(w.kind for w in windows)),
               "examples": shown}
    return Scored("simulation", spearman(predicted, actual) if actual else None, details, usage)


def _yes_no(name: str, llm: LLM, chats: list[list[dict]], truth: list[bool], extra: dict) -> Scored:
    if not chats:
        return Scored(name, None, {"n": 0, **extra}, Usage())
    probs, usage = llm.choice_probs(chats, prompts.YES_NO)
    p_yes = [p[0] for p in probs]
    details = {"n": len(truth), "n_positive": sum(truth), "auroc": auroc(p_yes, truth),
               "p_yes": [round(p, 4) for p in p_yes], "truth": truth, **extra}
    return Scored(name, balanced_accuracy([p > 0.5 for p in p_yes], truth), details, usage)


def detection(llm: LLM, explanation: str, active: list[Window], silent: list[Window]) -> Scored:
    windows = active + silent
    return _yes_no("detection", llm, [prompts.detect(explanation, w) for w in windows],
                   [True] * len(active) + [False] * len(silent), {})


def fuzzing(llm: LLM, explanation: str, windows: list[Window], max_activation: float, rng: np.random.Generator,
            ) -> Scored:
    chats, truth = [], []
    for k, w in enumerate(windows):
        levels = quantise(w.acts, max_activation)
        active = {i for i, (q, s) in enumerate(zip(levels, w.scored)) if q > 0 and s}
        silent = [i for i, (q, s) in enumerate(zip(levels, w.scored)) if q == 0 and s]
        correct = k % 2 == 0 or len(silent) < len(active)
        marked = active if correct else {int(i) for i in rng.choice(silent, size=len(active), replace=False)}
        chats.append(prompts.fuzz(explanation, w, marked))
        truth.append(correct)
    return _yes_no("fuzzing", llm, chats, truth, {})


def logit_test(llm: LLM, explanation: str, positive: list[str], negative: list[str]) -> Scored:
    tokens = positive + negative
    return _yes_no("logits", llm, [prompts.logit(explanation, t) for t in tokens],
                   [True] * len(positive) + [False] * len(negative), {"tokens": tokens})


def score_all(llm: LLM, explanation: str, ev: Evidence, seed: int, only: tuple[str, ...] = SCORERS) -> list[Scored]:
    """Every scorer in `only` on one explanation of the unit `ev` describes."""
    run = {
        "simulation": lambda: simulation(llm, explanation, ev.simulate, ev.max_activation),
        "detection": lambda: detection(llm, explanation, ev.detect_active, ev.detect_silent),
        "fuzzing": lambda: fuzzing(llm, explanation, ev.fuzz, ev.max_activation,
                                   unit_rng(seed, ev.basis, ev.index, "fuzz-marks")),
        "logits": lambda: logit_test(llm, explanation, ev.logit_positive, ev.logit_negative),
    }
    return [run[name]() for name in only]
