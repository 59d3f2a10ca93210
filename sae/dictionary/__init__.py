"""Stage 4, the sparse autoencoder: the module, its losses, resampling, training, metrics and SAELens files.

Reading order: `model` (the SAE), `losses` (the objective), `resample` (the paper's appendix), `config` and
`train` (the loop), `metrics`, `stage` (train, evaluate, write the folder); `fast/` holds hand-written gradient steps that `train` uses for speed.
"""

from sae.dictionary.config import SAETrainConfig, demo_config
from sae.dictionary.model import ARCHITECTURES, SAEConfig, SparseAutoencoder
from sae.dictionary.saelens_format import load_sae, save_sae
from sae.dictionary.stage import train_sae, train_sae_on_run
from sae.dictionary.train import fit_sae

__all__ = ["ARCHITECTURES", "SAEConfig", "SAETrainConfig", "SparseAutoencoder", "demo_config", "fit_sae",
           "load_sae", "save_sae", "train_sae", "train_sae_on_run"]
