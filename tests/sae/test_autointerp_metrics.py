"""The autointerp scores against hand computations, and a constant simulator scoring 0 (no language model here)."""

import numpy as np
import pytest

from sae.autointerp import prompts, scorers
from sae.autointerp.backends import open_llm
from sae.autointerp.llm import LLM, Usage
from sae.autointerp.metrics import auroc, balanced_accuracy, spearman
from sae.autointerp.windows import Window, quantise, with_levels
from sae.errors import MonoscopeError


def test_spearman_matches_hand_computations():
    # ranks 1 2 3 4 against 1 2 4 3: 1 - 6 * (0 + 0 + 1 + 1) / (4 * 15) = 0.8
    assert spearman([1, 2, 3, 4], [10, 20, 40, 30]) == pytest.approx(0.8)
    # ties take average ranks: (1.5, 1.5, 3) against (1, 2, 3): 1.5 / sqrt(1.5 * 2)
    assert spearman([1, 1, 2], [1, 2, 3]) == pytest.approx(1.5 / np.sqrt(3.0))
    assert spearman([3, 2, 1], [1, 2, 3]) == pytest.approx(-1.0)
    assert spearman([5, 5, 5], [1, 2, 3]) == 0.0  # a constant prediction predicts nothing
    assert spearman([1, 2, 3], [0, 0, 0]) == 0.0


def test_balanced_accuracy_and_auroc_match_hand_computations():
    # positives 0 and 4 both said yes (TPR 1); negatives 1, 2, 3: one wrongly said yes (TNR 2/3)
    assert balanced_accuracy([1, 1, 0, 0, 1], [1, 0, 0, 0, 1]) == pytest.approx((1 + 2 / 3) / 2)
    assert balanced_accuracy([1, 1], [1, 1]) is None  # one class only: undefined
    # pairs (0.9 > 0.8), (0.9 > 0.1), (0.3 < 0.8), (0.3 > 0.1): 3 of 4
    assert auroc([0.9, 0.8, 0.3, 0.1], [1, 0, 1, 0]) == pytest.approx(0.75)
    assert auroc([0.5, 0.5], [1, 0]) == pytest.approx(0.5)  # a tie counts half


class Constant(LLM):
    """A simulator that gives every level the same probability at every slot, and says yes half the time."""

    name = "constant"

    def complete(self, messages, *, max_tokens):
        raise AssertionError("not used")

    def choice_probs(self, prompts_, choices):
        return [[1.0 / len(choices)] * len(choices) for _ in prompts_], Usage(requests=len(prompts_))

    def slot_probs(self, prompts_, answers, choices):
        return ([[[1.0 / len(choices)] * len(choices) for _ in segments[1:]] for segments in answers],
                Usage(requests=len(prompts_)))


def test_a_constant_simulator_scores_zero():
    windows = [Window("top", ("a", "b", "c"), (0.0, 2.0, 1.0), (True, True, True)),
               Window("random", ("d", "e"), (0.0, 0.5), (True, True))]
    result = scorers.simulation(Constant(), "anything", windows, max_activation=2.0)
    assert result.score == 0.0
    assert result.details["n_tokens"] == 5
    assert [e["predicted"] for e in result.details["examples"]] == [[4.5, 4.5, 4.5], [4.5, 4.5]]
    detect = scorers.detection(Constant(), "anything", windows[:1], windows[1:])
    assert detect.score == pytest.approx(0.5)  # p(yes) = 0.5 is not > 0.5: always "no"


def test_levels_and_the_simulator_answer_format():
    assert quantise([0.0, -1.0, 0.25, 1.0, 2.0], 2.0) == [0, 0, 1, 4, 9]  # round(9 a / max)
    w = Window("top", ("x", " <", "\n"), (0.0, 2.0, 0.0), (True, True, True))
    assert with_levels(w, 2.0) == "x« <»(9)↵"
    messages, segments = prompts.simulate("less-than signs", w)
    assert segments == ["x\t", "\n <\t", "\n↵\t", "\n"]  # slot i between segments i and i + 1
    assert "less-than signs" in messages[1]["content"]


def test_a_bad_llm_spec_is_one_line():
    for spec in ("", "gpt", "openai:", "openai:@http://x"):
        with pytest.raises(MonoscopeError, match="--llm"):
            open_llm(spec)
