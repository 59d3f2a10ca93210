"""The architecture table and the torch-free stage configs: one record per SAE architecture, one check per config."""

import subprocess
import sys

import pytest

from sae.analysis.config import AnalysisConfig
from sae.corpus.config import CorpusConfig
from sae.dictionary.architectures import ARCHITECTURES, MODULES, TRAINABLE, Activation, architecture, from_saelens
from sae.dictionary.config import SAETrainConfig, ToyConfig
from sae.errors import MonoscopeError
from sae.lm.config import LMConfig, TrainLMConfig


def test_the_table_is_consistent():
    assert TRAINABLE == ("relu", "topk", "batchtopk") and MODULES == ("relu", "topk", "jumprelu")
    for arch in ARCHITECTURES.values():
        assert arch.saved.name in MODULES and arch.saved.saved_as == arch.saved.name  # a saved module stays itself
        assert arch.trainable == (arch.sparsity is not None)
        assert arch.l1_penalty != arch.uses_k or arch.sparsity is None
        assert (arch.saelens is None) == (arch.name not in MODULES)
    assert [a.name for a in ARCHITECTURES.values() if a.fits_threshold] == ["batchtopk"]
    assert [a.name for a in ARCHITECTURES.values() if a.auxk] == ["topk", "batchtopk"]
    assert architecture("batchtopk").activation is Activation.BATCHTOPK and architecture("relu").l1_penalty
    assert from_saelens("standard").name == "relu" and from_saelens("gated") is None


@pytest.mark.parametrize("name,trainable", [("gated", False), ("jumprelu", True)])
def test_lookup_refuses_in_one_line_naming_the_valid_ones(name, trainable):
    with pytest.raises(MonoscopeError, match="relu, topk, batchtopk") as info:
        architecture(name, trainable=trainable)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("arch,k,saved", [("relu", None, ("relu", None)), ("topk", 8, ("topk", 8)),
                                          ("batchtopk", 8, ("jumprelu", None))])
def test_training_config_saves_the_records_module(arch, k, saved):
    cfg = SAETrainConfig(architecture=arch, k=k, d_sae=64).sae_config(16)
    assert (cfg.architecture, cfg.k) == saved and cfg.arch.name == saved[0]


@pytest.mark.parametrize("make", [
    lambda: CorpusConfig(heldout_fraction=1.0), lambda: CorpusConfig(n_ctx=1), lambda: CorpusConfig(vocab_size=100),
    lambda: LMConfig(act_fn="tanh"), lambda: LMConfig(d_mlp=0), lambda: TrainLMConfig(lr=0),
    lambda: TrainLMConfig(autocast="fp8"), lambda: AnalysisConfig(n_tokens=0), lambda: AnalysisConfig(loss_tokens=-1),
    lambda: ToyConfig(group_size=0), lambda: SAETrainConfig(architecture="jumprelu"),
])
def test_configs_refuse_bad_values_in_one_line(make):
    """The checks the command line made are the configs' own, so a notebook gets them too."""
    with pytest.raises(MonoscopeError) as info:
        make()
    assert "\n" not in str(info.value)


def test_configs_and_the_table_load_without_torch():
    """The command line reads its option defaults from these modules, so they must not pull in torch."""
    modules = ["sae.dictionary.architectures", "sae.dictionary.config", "sae.lm.config", "sae.corpus.config",
               "sae.analysis.config", "sae.lm", "sae.dictionary", "sae.analysis", "sae.corpus"]
    script = (f"import importlib, sys\nfor m in {modules!r}: importlib.import_module(m)\n"
              "print(sorted(m for m in ('torch', 'transformer_lens', 'numpy') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
