"""Stage 4, the sparse autoencoder: the module, its losses, resampling, training, metrics and SAELens files.

Reading order: `architectures` (what each SAE architecture is), `model` (the SAE), `losses` (the objective),
`resample` (the paper's appendix), `config` and `train` (the loop), `metrics`, `stage` (train, evaluate, write the
folder); `fast/` holds hand-written gradient steps that `train` uses for speed. `architectures` and `config` are
torch-free; the names below load their module on first use.
"""

from sae.lazy import lazy_exports

__all__, __getattr__ = lazy_exports(__name__, {
    "sae.dictionary.architectures": ["ARCHITECTURES", "Architecture", "architecture"],
    "sae.dictionary.config": ["SAETrainConfig", "demo_config"],
    "sae.dictionary.model": ["SAEConfig", "SparseAutoencoder"],
    "sae.dictionary.saelens_format": ["load_sae", "save_sae"],
    "sae.dictionary.stage": ["train_sae", "train_sae_on_run"],
    "sae.dictionary.train": ["fit_sae"],
})
