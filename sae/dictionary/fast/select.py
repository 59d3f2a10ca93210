"""TopK's selection of a bf16 pre-activation (training's default): each row's k largest entries, on its bit patterns
read as int16, by the compiled kernel of kernels.py where it applies (CPU), else by torch.topk of those keys.
An fp32 pre-activation goes to sae.dictionary.fast.gradients.topk_select.
"""

from __future__ import annotations

import numpy as np
import torch

from sae import compiled


def positive_topk(pre: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (values, cols) [B, k] for pre [B, S]: each row's k largest entries wherever they are positive; where a
    row has fewer than k positive entries, the rest are some of its non-positive ones. For a selection followed by
    ReLU (TopK, AuxK) that is torch.topk's result: the non-positive picks become 0 with zero gradient.

    In bf16 it selects the bit patterns read as int16, which order non-negative values as floats (+NaN above +inf,
    as topk takes NaN) and put every value with the sign bit below them: on CPU by kernels.rows_topk where the
    row width is a multiple of its LANES and k at most LANES (6.1 ms against 20.8 ms for torch.topk of the keys on a
    [4,096, 4,096] pre, k 32, 2 threads; BENCHMARKS.md), else torch.topk of the keys (31 ms on the bf16 values,
    whose comparisons convert bf16 to float). Other dtypes: torch.topk.
    """
    if pre.dtype != torch.bfloat16:
        return pre.topk(k, dim=-1, sorted=False)
    keys = pre.view(torch.int16)
    kernel = kernels(pre.device)
    if kernel is None or pre.shape[-1] % kernel.LANES or not 0 < k <= kernel.LANES or pre.dim() != 2:
        top, cols = keys.topk(k, dim=-1, sorted=False)
        return top.view(torch.bfloat16), cols
    keys = keys.contiguous()
    top = torch.empty(keys.shape[0], k, dtype=torch.int16)
    cols = torch.empty(keys.shape[0], k, dtype=torch.int64)
    tied = np.empty(keys.shape[0], dtype=bool)  # ties are broken by scan order here: training needs no flag
    kernel.rows_topk(keys.numpy(), k, top.numpy(), cols.numpy(), tied, 8 * torch.get_num_threads())
    return top.view(torch.bfloat16), cols


def kernels(device: torch.device):
    """The compiled kernels of sae/dictionary/fast/kernels.py for tensors on `device` (sae.compiled.kernels)."""
    return compiled.kernels("sae.dictionary.fast.kernels", device)
