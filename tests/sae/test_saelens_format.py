"""Our SAE folders against the real sae_lens package, both ways, and the errors a user sees for broken folders."""

import json
import warnings

import numpy as np
import pytest
import torch

from sae.dictionary.model import SAEConfig, SparseAutoencoder
from sae.dictionary.saelens_format import load_density, load_sae, save_sae
from sae.errors import MonoscopeError

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    import sae_lens
    from sae_lens import SAE

D_IN, D_SAE = 24, 64
REQUIRED_V5_KEYS = {
    "architecture": str, "d_in": int, "d_sae": int, "dtype": str, "device": str, "model_name": str,
    "hook_name": str, "hook_layer": int, "hook_head_index": type(None), "activation_fn_str": str,
    "activation_fn_kwargs": dict, "apply_b_dec_to_input": bool, "finetuning_scaling_factor": bool,
    "sae_lens_training_version": type(None), "prepend_bos": bool, "dataset_path": str,
    "dataset_trust_remote_code": bool, "context_size": int, "normalize_activations": str,
    "neuronpedia_id": type(None), "model_from_pretrained_kwargs": dict, "seqpos_slice": list,
}


def ours(architecture: str, seed: int = 0) -> SparseAutoencoder:
    """A random SAE of ours with non-trivial biases (and thresholds), so every term of the forward pass counts."""
    g = torch.Generator().manual_seed(seed)
    sae = SparseAutoencoder(SAEConfig(D_IN, D_SAE, architecture, k=5 if architecture == "topk" else None))
    sae.init_weights(g)
    with torch.no_grad():
        sae.b_enc.copy_(torch.randn(D_SAE, generator=g) * 0.3)
        sae.b_dec.copy_(torch.randn(D_IN, generator=g))
        if architecture == "jumprelu":
            sae.threshold.copy_(torch.rand(D_SAE, generator=g) * 0.5)
    return sae


def randomise_(their_sae, seed: int = 1) -> None:
    """Give a SAELens SAE random weights of every parameter it has (threshold >= 0 where present)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in their_sae.named_parameters():
            p.copy_(torch.rand(p.shape, generator=g) * 0.5 if name == "threshold" else torch.randn(p.shape, generator=g))


def inputs(seed: int = 2) -> torch.Tensor:
    return torch.randn(64, D_IN, generator=torch.Generator().manual_seed(seed)) * 2  # [64, d_in]


def assert_same_forward(ours_sae, their_sae, x):
    with torch.no_grad():
        f_ours, f_theirs = ours_sae.encode(x), their_sae.encode(x)
        assert (f_ours > 0).float().mean() > 0.02, "test SAE is degenerate: nothing fires"
        torch.testing.assert_close(f_ours, f_theirs, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(ours_sae.decode(f_ours), their_sae.decode(f_theirs), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(ours_sae(x), their_sae(x), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("architecture,their_class", [
    ("relu", "StandardSAE"), ("topk", "TopKSAE"), ("jumprelu", "JumpReLUSAE")])
def test_sae_lens_loads_ours_with_the_same_forward_pass(tmp_path, architecture, their_class):
    sae = ours(architecture)
    save_sae(sae, tmp_path, meta={"model_name": "tiny", "context_size": 64, "lambda": 5.0})
    cfg = json.loads((tmp_path / "cfg.json").read_text())
    for key, kind in REQUIRED_V5_KEYS.items():
        assert isinstance(cfg[key], kind), (key, cfg[key])
    assert "sae_lens_version" not in cfg  # its absence is what makes SAELens 6 read the flat v5 layout
    assert cfg["normalize_activations"] == "none" and cfg["hook_layer"] == 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = SAE.load_from_disk(tmp_path)
    assert type(theirs).__name__ == their_class
    assert theirs.cfg.metadata.hook_name == "blocks.0.mlp.hook_post"
    assert theirs.cfg.metadata.model_name == "tiny" and theirs.cfg.metadata.context_size == 64
    if architecture == "topk":
        assert theirs.cfg.k == 5
    assert_same_forward(sae, theirs, inputs())


@pytest.mark.parametrize("their_class,config_class,kw", [
    ("StandardSAE", "StandardSAEConfig", {}),
    ("TopKSAE", "TopKSAEConfig", {"k": 7}),
    ("JumpReLUSAE", "JumpReLUSAEConfig", {}),
])
def test_we_load_what_sae_lens_saved(tmp_path, their_class, config_class, kw):
    theirs = getattr(sae_lens, their_class)(getattr(sae_lens, config_class)(d_in=D_IN, d_sae=D_SAE, **kw))
    randomise_(theirs)
    theirs.save_model(tmp_path)
    sae, meta = load_sae(tmp_path)
    assert sae.cfg.k == kw.get("k")
    assert_same_forward(sae, theirs, inputs())


@pytest.mark.parametrize("export", ["save_model", "save_inference_model"])
def test_topk_training_sae_with_decoder_norm_rescaling(tmp_path, export):
    # SAELens 6 trains TopK with rescale_acts_by_decoder_norm; save_model keeps it (we fold it on load),
    # save_inference_model folds it itself. Both must load to the same function.
    cfg = sae_lens.TopKTrainingSAEConfig(d_in=D_IN, d_sae=D_SAE, k=6, rescale_acts_by_decoder_norm=True)
    theirs = sae_lens.TopKTrainingSAE(cfg)
    randomise_(theirs)
    getattr(theirs, export)(tmp_path)
    sae, _ = load_sae(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reloaded = SAE.load_from_disk(tmp_path)
    with torch.no_grad():
        torch.testing.assert_close(sae(inputs()), theirs(inputs()), atol=1e-5, rtol=1e-5)
    assert_same_forward(sae, reloaded, inputs())


def test_v5_cfg_without_b_dec_on_input_is_folded(tmp_path):
    save_sae(ours("relu"), tmp_path)
    cfg = json.loads((tmp_path / "cfg.json").read_text())
    cfg["apply_b_dec_to_input"] = False
    cfg["hook_point"] = cfg.pop("hook_name")  # an old key name SAELens still reads
    (tmp_path / "cfg.json").write_text(json.dumps(cfg))
    sae, meta = load_sae(tmp_path)
    assert meta["hook_name"] == "blocks.0.mlp.hook_post"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = SAE.load_from_disk(tmp_path)
    assert theirs.cfg.apply_b_dec_to_input is False
    assert_same_forward(sae, theirs, inputs())


def test_round_trip_keeps_weights_meta_and_density(tmp_path):
    sae = ours("jumprelu")
    density = np.array([0.0, 1e-7, 0.5, 1.0] * (D_SAE // 4))
    save_sae(sae, tmp_path, meta={"model_name": "m", "train": {"l1": 5.0, "steps": 10}}, density=density)
    back, meta = load_sae(tmp_path)
    for name, p in sae.named_parameters():
        assert torch.equal(p, getattr(back, name)), name
    assert meta["model_name"] == "m" and meta["train"] == {"l1": 5.0, "steps": 10}
    assert meta["hook_name"] == "blocks.0.mlp.hook_post" and meta["hook_layer"] == 0
    np.testing.assert_allclose(load_density(tmp_path), density, rtol=1e-5, atol=1e-9)
    from safetensors.torch import load_file
    assert load_file(tmp_path / "sparsity.safetensors")["sparsity"][0] == pytest.approx(-10.0)  # log10(0 + eps)
    assert load_density(tmp_path.parent) is None


def test_saving_a_negative_jumprelu_threshold_stores_what_sae_lens_computes(tmp_path):
    sae = ours("jumprelu")
    with torch.no_grad():
        sae.threshold[:8] = -0.2
    save_sae(sae, tmp_path)
    back, _ = load_sae(tmp_path)
    assert (back.threshold >= 0).all() and torch.equal(back.threshold[8:], sae.threshold[8:])


def test_wrong_density_length_is_refused(tmp_path):
    with pytest.raises(MonoscopeError, match="density has 3 entries"):
        save_sae(ours("relu"), tmp_path, density=np.ones(3))


def break_weights(tmp_path):
    from safetensors.torch import load_file, save_file

    weights = load_file(tmp_path / "sae_weights.safetensors")
    weights["W_dec"] = weights["W_dec"][:, :-1].contiguous()
    save_file(weights, tmp_path / "sae_weights.safetensors")


@pytest.mark.parametrize("damage,message", [
    (lambda d: (d / "cfg.json").unlink(), "no cfg.json"),
    (lambda d: (d / "cfg.json").write_text("{not json"), "not valid JSON"),
    (lambda d: (d / "sae_weights.safetensors").unlink(), "no sae_weights.safetensors"),
    (lambda d: (d / "sae_weights.safetensors").write_bytes(b"garbage"), "unreadable"),
    (break_weights, r"W_dec has shape \(64, 23\)"),
    (lambda d: d.joinpath("cfg.json").write_text(
        d.joinpath("cfg.json").read_text().replace('"standard"', '"gated"')), "architecture 'gated'"),
    (lambda d: d.joinpath("cfg.json").write_text(
        d.joinpath("cfg.json").read_text().replace('"none"', '"layer_norm"')), "normalize_activations"),
])
def test_broken_folders_give_one_line_errors(tmp_path, damage, message):
    save_sae(ours("relu"), tmp_path)
    damage(tmp_path)
    with pytest.raises(MonoscopeError, match=message) as info:
        load_sae(tmp_path)
    assert "\n" not in str(info.value)


def test_missing_folder(tmp_path):
    with pytest.raises(MonoscopeError, match="no such SAE folder"):
        load_sae(tmp_path / "nope")
