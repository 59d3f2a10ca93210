"""The fast SAE step (sae/dictionary/fast/step.py, sae/dictionary/fast/gradients.py) must give dense autograd's losses and gradients."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sae.dictionary.fast.step import loss_and_grads
from sae.dictionary.model import SAEConfig, SparseAutoencoder
from sae.errors import MonoscopeError

D_IN, D_SAE, BATCH = 32, 256, 64


def make_sae(architecture="relu", k=None, *, b_enc_shift=0.0, seed=0, d_sae=D_SAE) -> SparseAutoencoder:
    """A random SAE with nonzero biases (so the b_dec path through the encoder is exercised)."""
    gen = torch.Generator().manual_seed(seed)
    sae = SparseAutoencoder(SAEConfig(D_IN, d_sae, architecture, k=k)).init_weights(gen)
    with torch.no_grad():
        sae.b_enc.copy_(torch.randn(d_sae, generator=gen) * 0.5 + b_enc_shift)
        sae.b_dec.copy_(torch.randn(D_IN, generator=gen) * 0.1)
        sae.W_dec.mul_(1 + torch.rand(d_sae, 1, generator=gen))  # not unit norm: the grads must not assume it
    return sae


def batch(seed=1) -> torch.Tensor:
    return torch.randn(BATCH, D_IN, generator=torch.Generator().manual_seed(seed))


def run(sae, x, method, **kw):
    parts = loss_and_grads(sae, x, method=method, **kw)
    # autograd leaves a jumprelu threshold (unused by batchtopk training) without grad; the fast path zeroes it
    return parts, {name: p.grad.clone() if p.grad is not None else torch.zeros_like(p)
                   for name, p in sae.named_parameters()}


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm().clamp_min(1e-12))


CASES = {
    "relu": dict(arch=("relu", None), shift=-1.0, kw=dict(l1_coefficient=0.3)),
    "topk": dict(arch=("topk", 8), shift=0.0, kw=dict()),
    "topk_l1_auxk": dict(arch=("topk", 8), shift=0.0, kw=dict(
        l1_coefficient=0.1, dead_mask=torch.arange(D_SAE) % 3 == 0, aux_coefficient=0.5, aux_k=16)),
    "relu_all_active": dict(arch=("relu", None), shift=50.0, kw=dict(l1_coefficient=0.3)),
    "topk_all_active": dict(arch=("topk", D_SAE), shift=50.0, kw=dict()),
    "batchtopk_auxk": dict(arch=("jumprelu", None), shift=0.0, kw=dict(
        architecture="batchtopk", k=8, dead_mask=torch.arange(D_SAE) % 3 == 0, aux_coefficient=0.5, aux_k=16)),
}


@pytest.mark.parametrize("method", ["sparse", "dense"])
@pytest.mark.parametrize("case", list(CASES))
def test_fp32_grads_and_parts_equal_autograd(case, method):
    c = CASES[case]
    sae = make_sae(*c["arch"], b_enc_shift=c["shift"])
    x = batch()
    ref, ref_grads = run(sae, x, "autograd", **c["kw"])
    out, grads = run(sae, x, method, **c["kw"])
    assert out.method == method
    for name, g in ref_grads.items():
        assert rel_err(grads[name], g) < 1e-5, name
    for part in ("loss", "mse", "l1", "aux", "l0"):
        assert torch.allclose(getattr(out, part), getattr(ref, part), rtol=1e-5, atol=1e-6), part
    assert torch.equal(out.fired, ref.fired)
    if case.endswith("all_active"):
        assert out.l0.item() == D_SAE
    if "auxk" in case:
        assert out.aux.item() > 0 and ref.aux.item() > 0


def test_dead_latents_get_zero_gradient_and_zero_count():
    sae = make_sae("relu", b_enc_shift=-1.0)
    dead = torch.arange(D_SAE) < 40
    with torch.no_grad():
        sae.b_enc[dead] = -1e3  # these can never fire
    x = batch()
    ref, ref_grads = run(sae, x, "autograd", l1_coefficient=0.3)
    out, grads = run(sae, x, "sparse", l1_coefficient=0.3)
    assert out.fired[dead].sum() == 0 and out.fired[~dead].sum() > 0
    assert torch.equal(out.fired, ref.fired)
    for name in ("W_enc", "b_enc"):
        assert grads[name][..., dead].abs().max() == 0
    assert grads["W_dec"][dead].abs().max() == 0
    for name, g in ref_grads.items():
        assert rel_err(grads[name], g) < 1e-5, name


@pytest.mark.parametrize("method", ["sparse", "dense"])
@pytest.mark.parametrize("arch", [("relu", None), ("topk", 8)])
def test_bf16_close_to_autocast(arch, method):
    # Tie-free bf16 pre-activations, so that both sides keep the same latents: inputs are one-hot rows times a power
    # of two and each encoder row a permutation of distinct small multiples of 1/16 (all exact in bf16), zero biases.
    # What remains is rounding: autocast runs the decoder in bf16, the sparse path in fp32.
    sae = make_sae(*arch)
    gen = torch.Generator().manual_seed(2)
    with torch.no_grad():
        levels = (torch.arange(D_SAE, dtype=torch.float32) - D_SAE * 0.75) / 16
        sae.W_enc.copy_(torch.stack([levels[torch.randperm(D_SAE, generator=gen)] for _ in range(D_IN)]))
        sae.W_dec.copy_(sae.W_dec.bfloat16().float())
        sae.b_enc.zero_()
        sae.b_dec.zero_()
    x = torch.eye(D_IN).repeat(2, 1) * 2.0 ** torch.randint(-1, 2, (2 * D_IN, 1), generator=gen)  # [64, d_in]
    kw = dict(l1_coefficient=0.3, precision="bf16")
    ref, ref_grads = run(sae, x, "autograd", **kw)
    out, grads = run(sae, x, method, **kw)
    assert torch.equal(out.fired, ref.fired)
    for name, g in ref_grads.items():
        assert rel_err(grads[name], g) < 1e-2, name
    assert abs(out.loss.item() - ref.loss.item()) < 1e-2 * ref.loss.item()


def test_grads_are_overwritten_in_reused_buffers():
    sae = make_sae("topk", 8)
    x = batch()
    loss_and_grads(sae, x, method="sparse")
    first = {n: (p.grad.data_ptr(), p.grad.clone()) for n, p in sae.named_parameters()}
    loss_and_grads(sae, x, method="sparse")
    for n, p in sae.named_parameters():
        assert p.grad.data_ptr() == first[n][0]  # no fresh allocation
        assert torch.equal(p.grad, first[n][1])  # overwritten, not accumulated


def test_auto_goes_sparse_once_l0_is_small():
    sae = make_sae("relu", b_enc_shift=5.0)  # nearly all latents fire
    x = batch()
    assert loss_and_grads(sae, x).method == "dense"
    assert loss_and_grads(sae, x).method == "dense"
    with torch.no_grad():
        sae.b_enc.fill_(-3.0)
    assert loss_and_grads(sae, x).method == "dense"  # decided on the previous batch's L0
    parts = loss_and_grads(sae, x)
    assert parts.method == "sparse" and 0 < parts.l0.item() < D_SAE / 16
    assert loss_and_grads(make_sae("topk", 8), x).method == "sparse"


def test_adam_training_matches_autograd():
    """Twenty Adam steps through each path end at the same weights (fp32)."""
    x = torch.relu(torch.randn(512, D_IN, generator=torch.Generator().manual_seed(3)))
    finals = {}
    for method in ("autograd", "sparse"):
        sae = make_sae("relu", b_enc_shift=-0.5)
        opt = torch.optim.Adam(sae.parameters(), lr=1e-3)
        for step in range(20):
            parts = loss_and_grads(sae, x[step % 8 * BATCH:(step % 8 + 1) * BATCH], l1_coefficient=0.1, method=method)
            opt.step()
        finals[method] = (parts.loss.item(), sae.W_enc.detach().clone())
    assert finals["sparse"][0] == pytest.approx(finals["autograd"][0], rel=1e-4)
    assert rel_err(finals["sparse"][1], finals["autograd"][1]) < 1e-4


def test_bad_input_is_refused():
    sae = make_sae()
    with pytest.raises(MonoscopeError, match=r"\[batch, 32\]"):
        loss_and_grads(sae, torch.zeros(4, 7))
    with pytest.raises(MonoscopeError, match="precision"):
        loss_and_grads(sae, batch(), precision="fp8")
    with pytest.raises(MonoscopeError, match="method"):
        loss_and_grads(sae, batch(), method="magic")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_topk_select_picks_the_k_largest(dtype):
    from sae.dictionary.fast.gradients import Workspace, topk_select

    gen = torch.Generator().manual_seed(5)
    pre = (torch.randn(64, 1024, generator=gen) + torch.randn(1024, generator=gen)).to(dtype)
    pre[3] = 0.0  # a row of ties
    pre[5, :200] = 9.0  # many equal maxima in one row
    values, cols = topk_select(pre, 16, Workspace(64, False, torch.device("cpu")))
    reference = pre.topk(16, dim=-1).values
    assert torch.equal(values.sort(-1).values, reference.sort(-1).values)
    assert torch.equal(pre.gather(1, cols), values)
    assert all(len(set(row.tolist())) == 16 for row in cols)  # no latent picked twice


def test_positive_topk_is_topk_after_relu_in_bf16():
    """The int16 selection keeps each row's largest positive entries exactly; where a row has fewer than k positive
    ones (here row 1 has 3, row 2 none, row 3 only -0.0 and negatives) its other picks are non-positive, so ReLU
    gives torch.topk's values, and the columns of the positive picks are torch.topk's."""
    from sae.dictionary.fast.select import positive_topk

    gen = torch.Generator().manual_seed(6)
    pre = torch.randn(8, 512, generator=gen).to(torch.bfloat16)
    pre[1] = -torch.rand(512, generator=gen).to(torch.bfloat16) - 0.5
    pre[1, [7, 100, 300]] = torch.tensor([0.25, 3.0, 1.5], dtype=torch.bfloat16)
    pre[2] = -torch.rand(512, generator=gen).to(torch.bfloat16) - 0.5
    pre[3] = -pre[3].abs()
    pre[3, :4] = -0.0
    values, cols = positive_topk(pre, 16)
    reference = pre.topk(16, dim=-1)
    assert torch.equal(pre.gather(1, cols), values)
    assert torch.equal(values.relu().sort(-1).values, reference.values.relu().sort(-1).values)
    for row in range(8):
        picked = {c for c, v in zip(cols[row].tolist(), values[row].tolist()) if v > 0}
        assert picked == {c for c, v in zip(reference.indices[row].tolist(), reference.values[row].tolist()) if v > 0}
    assert values[2].max() < 0 and (values[1] > 0).sum() == 3


def test_fused_adam_matches_default_adam():
    from sae.dictionary.fast.step import adam

    x = batch()
    weights = []
    for make in (lambda params: adam(params, lr=1e-2), lambda params: torch.optim.Adam(params, lr=1e-2)):
        sae = make_sae("topk", 8)
        opt = make(sae.parameters())
        for _ in range(5):
            loss_and_grads(sae, x, method="sparse")
            opt.step()
        weights.append(sae.W_dec.detach().clone())
    assert rel_err(weights[0], weights[1]) < 1e-5


def test_fast_path_agrees_with_the_training_reference():
    """sae/dictionary/losses.py (the training loop's autograd reference) and the fast path share one convention."""
    from sae.dictionary.losses import sae_loss

    dead = torch.arange(D_SAE) % 4 == 0
    for arch, module_arch, k in (("relu", "relu", None), ("topk", "topk", 8), ("batchtopk", "jumprelu", 8)):
        sae = make_sae(module_arch, k if arch == "topk" else None, b_enc_shift=-1.0 if arch == "relu" else 0.0)
        x = batch()
        l1 = 0.3 if arch == "relu" else 0.0
        aux = dict(aux_coefficient=0.0) if arch == "relu" else dict(dead_mask=dead, aux_coefficient=0.5, aux_k=16)
        for p in sae.parameters():
            p.grad = None
        loss, parts = sae_loss(sae, x, architecture=arch, k=k, l1_coefficient=l1, dead=aux.get("dead_mask"),
                               aux_coefficient=aux["aux_coefficient"], aux_k=aux.get("aux_k"))
        loss.backward()
        ref_grads = {n: p.grad.clone() for n, p in sae.named_parameters() if p.grad is not None}
        out, grads = run(sae, x, "sparse", l1_coefficient=l1, architecture=arch, k=k, **aux)
        assert out.loss.item() == pytest.approx(loss.item(), rel=1e-5), arch
        assert torch.equal(out.fired, parts["fired"]), arch
        for name, g in ref_grads.items():
            assert rel_err(grads[name], g) < 1e-5, (arch, name)


@pytest.mark.parametrize("method", ["sparse", "dense"])
@pytest.mark.parametrize("arch", [("topk", 8, None), ("jumprelu", None, "batchtopk")])
def test_normalised_auxk_is_openais_form_and_fast_equals_autograd(arch, method):
    """aux = Σ‖ê − e‖² / Σ‖e‖² (a normalised MSE), weighted by aux_coefficient alone, on both paths."""
    module_arch, k, train_arch = arch
    sae = make_sae(module_arch, k, b_enc_shift=0.0)
    x = batch()
    dead = torch.arange(D_SAE) % 3 == 0
    kw = dict(architecture=train_arch, k=8, dead_mask=dead, aux_coefficient=0.5, aux_k=16)
    plain, _ = run(sae, x, "autograd", **kw)
    ref, ref_grads = run(sae, x, "autograd", aux_normalised=True, **kw)
    out, grads = run(sae, x, method, aux_normalised=True, **kw)
    with torch.no_grad():
        pre = sae.pre_activations(x)
        f = sae.activate(pre) if train_arch is None else None
        if f is None:
            from sae.dictionary.losses import batchtopk_activate
            f = batchtopk_activate(pre, 8)
        e = x - sae.decode(f)
        masked = torch.where(dead, pre, torch.full_like(pre, float("-inf")))
        values, index = masked.topk(16, dim=-1)
        e_hat = torch.zeros_like(pre).scatter_(-1, index, torch.relu(values)) @ sae.W_dec
        expected = (e_hat - e).pow(2).sum() / e.pow(2).sum()
    assert ref.aux.item() == pytest.approx(expected.item(), rel=1e-5)
    assert plain.aux.item() == pytest.approx(expected.item() * e.pow(2).sum(-1).mean().item(), rel=1e-5)
    assert ref.loss.item() == pytest.approx((ref.mse + 0.5 * ref.aux).item(), rel=1e-6)  # no n_dead / aux_k factor
    for name, g in ref_grads.items():
        assert rel_err(grads[name], g) < 1e-5, name
    assert out.aux.item() == pytest.approx(ref.aux.item(), rel=1e-5)
    assert out.loss.item() == pytest.approx(ref.loss.item(), rel=1e-5)


def test_normalised_auxk_is_zero_without_dead_latents():
    sae = make_sae("topk", 8)
    out, _ = run(sae, batch(), "sparse", dead_mask=torch.zeros(D_SAE, dtype=torch.bool), aux_coefficient=0.5,
                 aux_normalised=True)
    assert out.aux.item() == 0.0 and out.loss.item() == pytest.approx(out.mse.item())


@pytest.mark.parametrize("width,k", [(128, 1), (128, 128), (512, 16), (1024, 32), (4096, 32)])
def test_the_compiled_selection_keeps_the_keys_torch_topk_keeps(width, k):
    """kernels.rows_topk (positive_topk's CPU path) against torch.topk of the same int16 keys, rows built to
    break a bound-and-scan selection: all ties, many equal maxima, all negative, NaN and inf, -0.0, a lone spike."""
    from sae.dictionary.fast.select import kernels, positive_topk

    assert kernels(torch.device("cpu")) is not None, "numba is a dependency: the compiled selection must load"
    gen = torch.Generator().manual_seed(width + k)
    pre = (torch.randn(40, width, generator=gen) * torch.rand(40, 1, generator=gen) * 4).to(torch.bfloat16)
    pre[0] = 0.0
    pre[1] = 2.5
    pre[2, :: 3] = 7.0
    pre[3] = -pre[3].abs() - 1
    pre[4, 5], pre[4, 6], pre[4, 7] = float("nan"), float("inf"), -float("inf")
    pre[5] = -0.0
    pre[6] = -1.0
    pre[6, width - 1] = 3.0
    pre[7] = torch.arange(width, dtype=torch.float32).to(torch.bfloat16)  # ascending: every entry a new maximum
    values, cols = positive_topk(pre, k)
    keys = pre.view(torch.int16)
    reference = keys.topk(k, dim=-1).values
    assert torch.equal(values.view(torch.int16).sort(-1).values, reference.sort(-1).values)
    assert torch.equal(keys.gather(1, cols), values.view(torch.int16))
    # The tie flag (the analysis redoes those rows by torch.topk): more keys equal the k-th than places left for them
    top, at = np.empty((40, k), np.int16), np.empty((40, k), np.int64)
    tied = np.empty(40, dtype=bool)
    kernels(torch.device("cpu")).rows_topk(keys.numpy(), k, top, at, tied, 4)
    kth = reference[:, -1:]
    expected = (keys == kth).sum(-1) > k - (keys > kth).sum(-1)
    assert tied.tolist() == expected.tolist() and (k == width or tied[:3].all())  # all ties, all equal, thirds
    assert all(len(set(row.tolist())) == k for row in cols)  # no column twice


def test_entries_group_by_latent_and_their_gradient_matches_the_dense_product_both_ways():
    """make_entries' grouping by latent (stable: rows in their order within a latent), and entry_grads (the compiled
    kernel on CPU) and its torch fallback against the dense g W_decᵀ at each entry:
    + shift where the entry is active, 0 where TopK kept a non-positive value; entries of unequal latents' counts."""
    from sae.dictionary.fast.gradients import entry_grads, make_entries, sddmm_entry_grads

    gen = torch.Generator().manual_seed(3)
    B, S, d = 50, 40, 24
    rows = torch.arange(B).repeat_interleave(5)
    cols = torch.cat([torch.randperm(S, generator=gen)[:5] % (1 + r % S) for r in range(B)])  # low latents favoured
    values = torch.randn(B * 5, generator=gen).clamp_min(0)  # about half inactive
    e = make_entries(rows, cols, values, B, S)
    entries = list(zip(rows.tolist(), cols.tolist(), values.tolist()))
    by_latent = [(j, r, v) for j in range(S) for r, c, v in entries if c == j]
    assert list(zip(e.lat_cols.tolist(), e.lat_rows.tolist(), e.lat_values.tolist())) == by_latent  # stable grouping
    assert e.lat_counts.tolist() == torch.bincount(cols, minlength=S).tolist()
    W_dec, g = torch.randn(S, d, generator=gen), torch.randn(B, d, generator=gen)
    dense = g @ W_dec.t()  # [B, S]
    expected = torch.where(e.lat_values > 0, dense[e.lat_rows, e.lat_cols] + 0.25, torch.zeros(()))
    for found in (entry_grads(e, e.lat_offsets(), W_dec, g, 0.25), sddmm_entry_grads(e, W_dec, g, 0.25)):
        assert torch.allclose(found, expected, rtol=1e-5, atol=1e-5)
        assert torch.equal(found == 0, e.lat_values <= 0)
