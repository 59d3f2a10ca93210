"""Stage 2, the one-layer language model (the only user of transformer_lens): build, train, load, harvest."""

from sae.lm.model import (
                          HOOK_POST,
                          LMConfig,
                          build_model,
                          final_residual,
                          lm_logits,
                          lm_loss,
                          load_lm,
                          load_pretrained,
                          mlp_activations,
                          readout,
                          pretrained_tokenizer_name,
                          save_lm,
                          unembed_directions,
)
from sae.lm.train import TrainLMConfig, train_lm, use_pretrained

__all__ = ["HOOK_POST", "LMConfig", "TrainLMConfig", "build_model", "final_residual", "lm_logits", "lm_loss", "load_lm",
           "load_pretrained", "mlp_activations", "pretrained_tokenizer_name", "readout", "save_lm", "train_lm",
           "unembed_directions", "use_pretrained"]
