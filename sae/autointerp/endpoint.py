"""The endpoint backend: any server that speaks OpenAI's chat completions (vLLM, llama.cpp's server, Ollama, a hosted
API), through the `openai` client. Requests run `concurrency` at a time; the client retries 429 and 5xx answers with
exponential back-off (honouring Retry-After) up to `retries` times and gives up on a request after `timeout` seconds.
An endpoint that cannot be reached, or that refuses, is one line naming it.

Answer probabilities come from the returned log-probabilities (`logprobs`, `top_logprobs`): yes/no questions ask for
one token; the simulator asks for the listing "token<TAB>level" and reads each level's alternatives. A server that
returns no log-probabilities still works, at probability 1 for the answer it wrote.
"""

from __future__ import annotations

import math
import threading
from concurrent.futures import ThreadPoolExecutor

from sae.autointerp.llm import LLM, Completion, Usage, choice_variants, normalised
from sae.errors import MonoscopeError

TOP_LOGPROBS = 20  # the most alternatives OpenAI's API returns per token


class EndpointLLM(LLM):
    def __init__(self, base_url: str, model: str, key: str | None, *, concurrency: int = 8, timeout: float = 120.0,
                 retries: int = 4):
        from openai import OpenAI

        if concurrency < 1:
            raise MonoscopeError(f"LLM concurrency is at least 1, got {concurrency}")
        self.base_url, self.model, self.concurrency = base_url.rstrip("/"), model, concurrency
        self.name = f"openai:{model}@{self.base_url}"
        # the key may be absent: local servers take any
        self.client = OpenAI(base_url=self.base_url, api_key=key or "none", timeout=timeout, max_retries=retries)
        self._lock = threading.Lock()
        self._in_flight = 0
        self.peak_concurrency = 0  # the most requests this backend had open at once

    def close(self) -> None:
        self.client.close()

    def _chat(self, messages: list[dict], max_tokens: int, logprobs: bool):
        import openai

        with self._lock:
            self._in_flight += 1
            self.peak_concurrency = max(self.peak_concurrency, self._in_flight)
        try:
            extra = dict(logprobs=True, top_logprobs=TOP_LOGPROBS) if logprobs else {}
            return self.client.chat.completions.create(model=self.model, messages=messages, max_tokens=max_tokens,
                                                       temperature=0, **extra)
        except openai.APIConnectionError as e:  # includes timeouts
            raise MonoscopeError(f"cannot reach the LLM endpoint {self.base_url}: {e}") from None
        except openai.APIStatusError as e:
            raise MonoscopeError(f"the LLM endpoint {self.base_url} answered {e.status_code}: "
                                 f"{' '.join(str(e.message).split())[:200]}") from None
        finally:
            with self._lock:
                self._in_flight -= 1

    def _map(self, fn, items: list) -> list:
        if len(items) <= 1 or self.concurrency == 1:
            return [fn(item) for item in items]
        with ThreadPoolExecutor(max_workers=min(self.concurrency, len(items))) as pool:
            return list(pool.map(fn, items))

    @staticmethod
    def _usage(response) -> Usage:
        u = response.usage
        return Usage(getattr(u, "prompt_tokens", 0) or 0, getattr(u, "completion_tokens", 0) or 0, 1)

    def complete(self, messages: list[dict], *, max_tokens: int) -> Completion:
        response = self._chat(messages, max_tokens, logprobs=False)
        return Completion((response.choices[0].message.content or "").strip(), self._usage(response))

    def choice_probs(self, prompts, choices):
        def ask(messages):
            response = self._chat(messages, 1, logprobs=True)
            return _first_word_probs(response.choices[0], choices), self._usage(response)

        answers = self._map(ask, prompts)
        usage = Usage()
        for _, u in answers:
            usage.add(u)
        return [p for p, _ in answers], usage

    def slot_probs(self, prompts, answers, choices):
        def ask(job):
            messages, segments = job
            n_slots = len(segments) - 1
            response = self._chat(messages, max(16, 8 * n_slots), logprobs=True)
            return _listing_probs(response.choices[0], n_slots, choices), self._usage(response)

        results = self._map(ask, list(zip(prompts, answers)))
        usage = Usage()
        for _, u in results:
            usage.add(u)
        return [p for p, _ in results], usage


def _alternatives(token_logprob) -> dict[str, float]:
    """{token text: probability} of one returned token's alternatives (itself included)."""
    found = {alt.token: math.exp(alt.logprob) for alt in (token_logprob.top_logprobs or [])}
    found.setdefault(token_logprob.token, math.exp(token_logprob.logprob))
    return found


def _mass(alternatives: dict[str, float], choice: str) -> float:
    spellings = set(choice_variants(choice))
    return sum(p for text, p in alternatives.items() if text in spellings)


def _first_word_probs(choice, choices: tuple[str, ...]) -> list[float]:
    """Each choice's probability as the first answer token, from its log-probabilities, else from the text."""
    content = choice.logprobs.content if choice.logprobs is not None else None
    if content:
        return normalised([_mass(_alternatives(content[0]), c) for c in choices])
    text = (choice.message.content or "").strip().lower()
    return normalised([1.0 if text.startswith(c.lower()) else 0.0 for c in choices])


def _listing_probs(choice, n_slots: int, choices: tuple[str, ...]) -> list[list[float]]:
    """The distribution over the choices at each level the model wrote after a tab (slot i is the i-th such level).
    A slot it did not write gets a uniform distribution (it said nothing about it)."""
    uniform = [1.0 / len(choices)] * len(choices)
    found: list[list[float]] = []
    content = choice.logprobs.content if choice.logprobs is not None else None
    if content:
        after_tab = False
        for token in content:
            if after_tab and token.token.strip() in choices:
                found.append(normalised([_mass(_alternatives(token), c) for c in choices]))
            after_tab = token.token.endswith("\t")
    else:
        for line in (choice.message.content or "").splitlines():
            level = line.rpartition("\t")[2].strip()
            if "\t" in line and level in choices:
                found.append([1.0 if c == level else 0.0 for c in choices])
    return (found + [uniform] * n_slots)[:n_slots]
