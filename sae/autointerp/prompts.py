"""Every prompt of the protocol, in chat messages. PROMPT_VERSION is stored with each explanation and score: change
any text here and bump it, and `monoscope autointerp` redoes what the old prompts made."""

from __future__ import annotations

from sae.autointerp.windows import Window, highlighted, one_line, plain, with_levels

PROMPT_VERSION = "1"
YES_NO = ("yes", "no")
SLOT = "unknown"  # what the simulator's listing holds where a level is to be predicted (OpenAI's all-at-once form)
LEVELS = tuple(str(d) for d in range(10))

_UNIT = ("We study the units (MLP neurons and sparse-autoencoder features) of a small language model trained on "
         "Python source code. A unit has an activation on every token.")


def _messages(system: str, user: str) -> list[dict]:
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]


def explain(windows: list[Window], max_activation: float, top_logits: list[str],
            bottom_logits: list[str]) -> list[dict]:
    """The explainer's prompt: each example on one line with active tokens as «token»(level), levels 0-9 relative to
    the unit's max, then the tokens the unit's output promotes and suppresses; asks for a short phrase."""
    lines = [f"{i}. {with_levels(w, max_activation)}" for i, w in enumerate(windows, start=1)]
    user = ("Examples of text, with each token where the unit is active written «token»(level), level 1 to 9 "
            "(9 = its strongest):\n" + "\n".join(lines) +
            "\n\nTokens its output makes more likely next: " + ", ".join(repr(one_line(t)) for t in top_logits) +
            "\nTokens it makes less likely: " + ", ".join(repr(one_line(t)) for t in bottom_logits) +
            "\n\nIn a few words, what does this unit respond to? Answer with one short phrase.")
    return _messages(_UNIT + " Explain a unit from examples of where it is active.", user)


def simulate(explanation: str, w: Window) -> tuple[list[dict], list[str]]:
    """The simulator's prompt for one window and its answer as segments around the slots: the answer lists every
    token, a tab and its level; the level of token i is read where slot i stands (between segments i and i+1)."""
    user = (f"Explanation of a unit: {explanation}\n\nFor each token of the text below, write the token, a tab, and "
            "the unit's activation on it from 0 (silent) to 9 (strongest), one token per line.\n\n"
            f"Text: {plain(w)}")
    segments = [""] + ["" for _ in w.texts]
    for i, text in enumerate(w.texts):
        segments[i] += f"{one_line(text)}\t"
        segments[i + 1] += "\n"
    return _messages(_UNIT + " Predict a unit's activations from its explanation.", user), segments


def detect(explanation: str, w: Window) -> list[dict]:
    """Detection (delphi): is the unit active anywhere in this window? yes or no."""
    user = (f"Explanation of a unit: {explanation}\n\nText: {plain(w)}\n\n"
            "Is the unit active anywhere in this text? Answer yes or no.")
    return _messages(_UNIT + " Judge whether texts activate a unit, from its explanation.", user)


def fuzz(explanation: str, w: Window, marked: set[int]) -> list[dict]:
    """Fuzzing (delphi): are the «marked» tokens those where the unit is active? yes or no."""
    user = (f"Explanation of a unit: {explanation}\n\nText with some tokens marked «like this»: "
            f"{highlighted(w, marked)}\n\nIs the unit active on the marked tokens? Answer yes or no.")
    return _messages(_UNIT + " Judge whether marked tokens are where a unit is active, from its explanation.", user)


def logit(explanation: str, token: str) -> list[dict]:
    """The logit test (the paper's): where the unit is active, would this token come next? yes or no."""
    user = (f"Explanation of a unit: {explanation}\n\nWhere this unit is active, would the next token likely be "
            f"{one_line(token)!r}? Answer yes or no.")
    return _messages(_UNIT + " Judge which tokens a unit makes likely to come next, from its explanation.", user)
