"""Which CPUs train in bf16: only those with bf16 matmul instructions (sae.device.bf16_is_fast)."""

import torch

from sae.device import BF16_FLAGS, bf16_is_fast, cpu_flags

AVX512_ONLY = "processor\t: 0\nvendor_id\t: GenuineIntel\nflags\t\t: fpu sse2 avx2 avx512f avx512bw avx512vl\n"


def test_avx512_without_bf16_instructions_is_not_fast_bf16():
    """AVX-512 alone emulates bf16 matmuls (4x slower than fp32 on such a machine, BENCHMARKS.md): training stays
    fp32 there; AVX512_BF16 or AMX make bf16 the faster."""
    assert cpu_flags(AVX512_ONLY) == {"fpu", "sse2", "avx2", "avx512f", "avx512bw", "avx512vl"}
    assert not cpu_flags(AVX512_ONLY) & BF16_FLAGS
    assert cpu_flags(AVX512_ONLY.replace("avx512vl", "avx512vl avx512_bf16")) & BF16_FLAGS
    assert cpu_flags(AVX512_ONLY.replace("avx512vl", "amx_tile amx_bf16")) & BF16_FLAGS
    assert cpu_flags("processor\t: 0\n") is None


def test_this_machines_choice_follows_its_flags():
    flags = cpu_flags()
    if flags is not None:  # Linux
        assert bf16_is_fast(torch.device("cpu")) == bool(flags & BF16_FLAGS)
