"""Direct logit effects go through the final LayerNorm as TransformerLens's fold_ln + center_unembed would:
checked against the model itself by a finite difference in the residual stream."""

from __future__ import annotations

import pytest
import torch

from sae.lm.model import LMConfig, build_model, unembed_directions


def _model():
    torch.manual_seed(0)
    model = build_model(LMConfig(d_model=32, d_mlp=64, n_heads=2, d_head=16, n_ctx=16, d_vocab=50)).float()
    with torch.no_grad():  # a gain and bias far from the initial 1 and 0, so a missing fold shows
        model.ln_final.w.copy_(torch.rand(32) * 2 + 0.2)
        model.ln_final.b.copy_(torch.randn(32))
        model.b_U.copy_(torch.randn(50))
    return model.eval()


def test_adding_a_direction_moves_the_logits_by_its_direct_effect():
    model = _model()
    tokens = torch.randint(0, 50, (1, 12))
    position, eps = 7, 1e-2
    direction = torch.randn(32, dtype=torch.float64).float()
    _, W_eff = unembed_directions(model)
    effect = direction @ W_eff  # [d_vocab]

    clean_logits, cache = model.run_with_cache(tokens, names_filter="ln_final.hook_scale")
    scale = cache["ln_final.hook_scale"]  # [1, T, 1]

    def push(resid, hook):  # resid [1, T, d_model]
        resid[:, position] += eps * direction
        return resid

    def same_scale(value, hook):  # the direct effect holds the LayerNorm's scale fixed
        return scale

    with torch.no_grad():
        moved = model.run_with_hooks(tokens, fwd_hooks=[("blocks.0.hook_resid_post", push),
                                                        ("ln_final.hook_scale", same_scale)])
    delta = (moved - clean_logits)[0]  # [T, d_vocab]
    delta = delta - delta.mean(dim=-1, keepdim=True)  # logits that move together change nothing
    expected = eps * effect / scale[0, position, 0]
    torch.testing.assert_close(delta[position], expected, rtol=1e-3, atol=1e-6)
    assert delta[position].abs().max() > 1e-3  # the check is not vacuous
    others = torch.cat([delta[:position], delta[position + 1:]])
    assert others.abs().max() < 1e-6  # a one-layer model after the last block: other positions do not move

    # Without the gain (today's W_U alone) the same check fails: the fold matters on this model.
    naive = direction @ (model.W_U - model.W_U.mean(dim=1, keepdim=True))
    assert not torch.allclose(delta[position], eps * naive / scale[0, position, 0], rtol=1e-2, atol=1e-5)


def test_a_model_with_its_layernorm_folded_gives_the_same_effects():
    model = _model()
    _, unfolded = unembed_directions(model)
    folded = _model()
    folded.process_weights_(fold_ln=True, center_writing_weights=False, center_unembed=False)
    assert not hasattr(folded.ln_final, "w")  # LNPre: the gain lives in W_U now
    _, from_folded = unembed_directions(folded)
    direction = torch.randn(32)
    torch.testing.assert_close(direction @ from_folded, direction @ unfolded, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("norm", ["LN", "LNPre", "RMS", "RMSPre", None])
def test_the_readout_is_the_models_own_final_norm_and_unembedding(norm):
    """sae.lm.heads.Readout (what the ablation effects compute with) equals the model's ln_final + unembed."""
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    from sae.lm.heads import readout

    torch.manual_seed(0)
    cfg = HookedTransformerConfig(n_layers=1, d_model=16, d_head=8, n_heads=2, d_mlp=32, n_ctx=8, d_vocab=40,
                                  act_fn="relu", normalization_type=norm)
    model = HookedTransformer(cfg).eval()
    with torch.no_grad():
        for name in ("w", "b"):
            if hasattr(getattr(model, "ln_final", None), name):
                getattr(model.ln_final, name).copy_(torch.randn(16) * 0.5 + (1.0 if name == "w" else 0.0))
        model.b_U.copy_(torch.randn(40))
        resid = torch.randn(5, 16) * 3 + 1
        expected = model.unembed(model.ln_final(resid[:, None, :]) if norm else resid[:, None, :])[:, 0]
        r = readout(model)
        centred, projected = r.project(resid)
        torch.testing.assert_close(projected / r.scale(centred) + r.bias, expected, rtol=1e-5, atol=1e-5)
