"""Hand-written SAE gradient steps (bf16 matmuls, sparse decode over active latents), checked against autograd.

`step.loss_and_grads` is the entry point; `gradients` holds the sparse path and shared pieces, `dense` the dense path,
`select` TopK's selection, `kernels` the compiled kernels (numba).
"""

from sae.dictionary.fast.step import LossParts, adam, loss_and_grads

__all__ = ["LossParts", "adam", "loss_and_grads"]
