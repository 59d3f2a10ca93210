"""One interface to a language model, two backends: a transformers model in this process (`local`) and an
OpenAI-compatible HTTP endpoint (vLLM, llama.cpp's server, Ollama, a hosted API).

The protocol asks a model three things: to write (an explanation), to pick among a few answers (yes/no), and to fill
slots in an answer it is given (the simulator's levels 0-9 after each token). Answers are probabilities read from the
model's logits (local) or log-probabilities (endpoint), never sampled, so scores do not depend on a seed.

A spec string picks the backend (sae/autointerp/backends.py).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass



@dataclass
class Usage:
    """Tokens a model read and wrote, and the requests (or forward passes) that took."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    requests: int = 0

    def add(self, other: Usage) -> Usage:
        self.prompt_tokens += other.prompt_tokens
        self.completion_tokens += other.completion_tokens
        self.requests += other.requests
        return self

    def as_dict(self) -> dict:
        return {"prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens,
                "requests": self.requests}


@dataclass(frozen=True)
class Completion:
    text: str
    usage: Usage


class LLM(ABC):
    """A language model as the protocol uses it. `name` is stored with everything it produces."""

    name: str

    @abstractmethod
    def complete(self, messages: list[dict], *, max_tokens: int) -> Completion:
        """Return the model's greedy answer to a chat (at most `max_tokens` tokens)."""

    @abstractmethod
    def choice_probs(self, prompts: list[list[dict]], choices: tuple[str, ...]) -> tuple[list[list[float]], Usage]:
        """Return, per chat, the probability of each choice as the answer's first word, normalised over the choices
        (case and a leading space ignored)."""

    @abstractmethod
    def slot_probs(self, prompts: list[list[dict]], answers: list[list[str]], choices: tuple[str, ...],
                   ) -> tuple[list[list[list[float]]], Usage]:
        """Return, per chat, the probability of each choice at each slot of its answer, normalised over the choices.

        answers[k] are the segments of chat k's answer: a slot stands between segments i and i+1, so an answer with
        n + 1 segments has n slots. The model reads the answer up to each slot (earlier slots hold a placeholder,
        never its own guesses, so the slots are predicted independently)."""

    def close(self) -> None:
        """Release what the backend holds (connections)."""


def normalised(weights: list[float]) -> list[float]:
    """Weights scaled to sum to 1 (uniform when they are all 0: the model gave none of the choices any mass)."""
    total = sum(weights)
    if total <= 0:
        return [1.0 / len(weights)] * len(weights)
    return [w / total for w in weights]


def choice_variants(choice: str) -> list[str]:
    """The spellings of a choice that count as it: as given, capitalised, each with a leading space."""
    forms = {choice, choice.lower(), choice.capitalize()}
    return sorted(forms | {" " + f for f in forms})
