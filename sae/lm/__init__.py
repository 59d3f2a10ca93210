"""Stage 2, the one-layer language model (the only user of transformer_lens): build, train, load, harvest.

`config` (the configs and the saved config.json reader) is torch-free; the names below load their module on first use.
"""

from sae.lazy import lazy_exports

__all__, __getattr__ = lazy_exports(__name__, {
    "sae.lm.config": ["LMConfig", "TrainLMConfig", "read_lm_config"],
    "sae.lm.model": ["HOOK_POST", "build_model", "final_residual", "lm_logits", "lm_loss", "load_lm",
                     "load_pretrained", "mid_and_post", "mlp_activations", "new_kv_cache",
                     "pretrained_tokenizer_name", "save_lm", "unembed_directions"],
    "sae.lm.heads": ["MLPHead", "Readout", "mlp_head", "readout"],
    "sae.lm.train": ["train_lm", "use_pretrained"],
})
