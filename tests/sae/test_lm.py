"""Language model: the tiny LM learns, the hook API matches transformer_lens, resume is exact, pretrained is offline."""

import json

import numpy as np
import pytest
import torch

from sae.corpus.build import load_heldout, load_tokens
from sae.errors import MonoscopeError
from sae.lm.model import (
    HOOK_POST,
    LMConfig,
    build_model,
    lm_loss,
    load_lm,
    load_pretrained,
    mlp_activations,
    unembed_directions,
)
from sae.lm.train import (
    TrainLMConfig,
    batch_rows,
    heldout_loss,
    lr_at,
    train_lm,
    unigram_loss,
)

quiet = lambda message: None  # noqa: E731


@pytest.fixture(scope="module")
def model(tiny_run):
    return load_lm(tiny_run)


@pytest.fixture(scope="module")
def heldout_batch(tiny_run):
    return torch.from_numpy(np.asarray(load_tokens(tiny_run, "heldout")[:8], dtype=np.int64))  # [8, 32]


def test_tiny_lm_beats_the_unigram_baseline_on_heldout_text(tiny_run):
    metrics = json.loads((tiny_run / "lm" / "metrics.json").read_text())
    assert metrics["heldout_loss"] < metrics["unigram_loss"] - 0.5
    assert 3.0 < metrics["unigram_loss"] < np.log(300)


def test_saved_model_reloads_to_the_same_heldout_loss(tiny_run, model, single_thread):
    metrics = json.loads((tiny_run / "lm" / "metrics.json").read_text())
    heldout = load_heldout(tiny_run, metrics["heldout_tokens_evaluated"])
    assert heldout_loss(model, heldout) == pytest.approx(metrics["heldout_loss"], abs=1e-5)
    config = json.loads((tiny_run / "lm" / "config.json").read_text())
    assert (config["n_layers"], config["d_model"], config["d_mlp"], config["act_fn"]) == (1, 32, 64, "relu")


def test_mlp_activations_match_run_with_cache(model, heldout_batch):
    acts = mlp_activations(model, heldout_batch)
    _, cache = model.run_with_cache(heldout_batch, names_filter=HOOK_POST)
    assert acts.shape == (8, 32, 64) and acts.dtype == torch.float32
    torch.testing.assert_close(acts, cache[HOOK_POST])
    assert (acts >= 0).all() and 0.05 < (acts > 0).float().mean() < 0.95  # ReLU, neither dead nor dense


def test_lm_loss_splice_identity_is_clean_and_zero_ablation_hurts(model, heldout_batch):
    with torch.no_grad():
        clean = lm_loss(model, heldout_batch)
        same = lm_loss(model, heldout_batch, replace_mlp_post=lambda act: act.clone())
        ablated = lm_loss(model, heldout_batch, replace_mlp_post=torch.zeros_like)
        logits = model(heldout_batch)  # [B, T, V]
    manual = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, 300), heldout_batch[:, 1:].reshape(-1))
    assert clean.item() == pytest.approx(manual.item(), abs=1e-5)
    assert same.item() == pytest.approx(clean.item(), abs=1e-6)
    assert ablated.item() > clean.item() + 0.05
    assert not model.hook_dict[HOOK_POST].fwd_hooks  # the splice hook is gone afterwards


def test_unembed_directions_give_the_direct_logit_path(model):
    w_out, w_u = unembed_directions(model)
    assert w_out.shape == (64, 32) and w_u.shape == (32, 300)
    torch.testing.assert_close(w_out, model.blocks[0].mlp.W_out)
    assert not w_out.requires_grad


def test_model_has_the_corpus_tokenizer(tiny_run, model, tiny_spec):
    ids = model.to_tokens("a < b & c", prepend_bos=True)[0].tolist()
    assert ids[0] == 0 and model.tokenizer.decode(ids[1:]) == "a < b & c"


def test_schedule_data_order_and_unigram_baseline():
    cfg = TrainLMConfig(lr=1.0, warmup_frac=0.1, min_lr_frac=0.1)
    assert lr_at(0, 100, cfg) == pytest.approx(0.1) and lr_at(9, 100, cfg) == pytest.approx(1.0)
    assert lr_at(99, 100, cfg) == pytest.approx(0.1, abs=1e-3)
    epoch = np.concatenate([batch_rows(s, 40, 8, seed=3) for s in range(5)])
    assert sorted(epoch.tolist()) == list(range(40))
    assert not np.array_equal(batch_rows(5, 40, 8, seed=3), batch_rows(0, 40, 8, seed=3))
    train = np.array([[0, 1, 1, 2]])  # next tokens 1, 1, 2 -> add-one counts over vocab 3: [1, 3, 2] / 6
    heldout = np.array([[0, 2, 1]])
    assert unigram_loss(train, heldout, 3) == pytest.approx(-(np.log(2 / 6) + np.log(3 / 6)) / 2)


def test_interrupted_training_resumes_to_the_same_weights(tiny_run, tmp_path, single_thread):
    import shutil

    lm_cfg = LMConfig(d_model=16, d_mlp=32, n_heads=2, d_head=8, n_ctx=32, d_vocab=300, seed=1)
    cfg = TrainLMConfig(tokens=40 * 8 * 32, batch_size=8, autocast="fp32", heldout_tokens=1024)
    runs = {}
    for name in ("straight", "resumed"):
        runs[name] = tmp_path / name
        shutil.copytree(tiny_run / "corpus", runs[name] / "corpus")

    def stop_at_25(step, loss):
        if step == 25:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_lm(runs["resumed"], lm_cfg, cfg, device="cpu", progress=False, log=quiet,
                 checkpoint_every_s=0.0, on_step=stop_at_25)
    assert not (runs["resumed"] / "lm").exists()  # nothing a later stage would trust
    assert (runs["resumed"] / ".lm.work" / "checkpoint.pt").is_file()
    messages = []
    train_lm(runs["resumed"], lm_cfg, cfg, device="cpu", progress=False, log=messages.append)
    assert any("resuming from step 25/40" in m for m in messages)
    train_lm(runs["straight"], lm_cfg, cfg, device="cpu", progress=False, log=quiet)
    a, b = load_lm(runs["straight"]), load_lm(runs["resumed"])
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items()):
        torch.testing.assert_close(x, y, msg=name)
    assert not (runs["resumed"] / ".lm.work").exists()  # scratch removed once the stage is complete


def test_build_model_refuses_a_tokenizer_of_another_size(tiny_run):
    with pytest.raises(MonoscopeError, match="300 tokens"):
        build_model(LMConfig(d_vocab=512, n_ctx=32), tiny_run / "corpus")


def test_train_lm_without_corpus_names_the_command(tmp_path):
    with pytest.raises(MonoscopeError, match="monoscope corpus"):
        train_lm(tmp_path, LMConfig(), TrainLMConfig(), progress=False, log=quiet)


def test_pretrained_is_loaded_from_the_local_cache_only():
    from huggingface_hub import try_to_load_from_cache

    if isinstance(try_to_load_from_cache("NeelNanda/GELU_1L512W_C4_Code", "config.json"), str):
        pytest.skip("gelu-1l is cached on this machine")
    with pytest.raises(MonoscopeError) as info:
        load_pretrained("gelu-1l")
    message = str(info.value)
    assert "\n" not in message and "gelu-1l" in message and "local Hugging Face cache" in message
    assert "from_pretrained('gelu-1l')" in message  # how to get it
    with pytest.raises(MonoscopeError, match="unknown pretrained model"):
        load_pretrained("no-such-model-xyz")


def test_a_forward_in_pieces_gives_each_sequence_its_own_activations(tiny_run, model):
    """activations_at runs FORWARD_SEQUENCES sequences at a time (the analysis's memory): every sequence's activations
    are the ones a forward of that sequence alone gives, to the bit."""
    from sae.lm.model import FORWARD_SEQUENCES, RESID_MID, activations_at

    tokens = torch.from_numpy(np.asarray(load_tokens(tiny_run, "train")[:2 * FORWARD_SEQUENCES + 3], dtype=np.int64))
    assert len(tokens) > 2 * FORWARD_SEQUENCES
    mid, post = activations_at(model, tokens, [RESID_MID, HOOK_POST])
    assert post.shape[:2] == tokens.shape
    for i in [0, FORWARD_SEQUENCES - 1, FORWARD_SEQUENCES, len(tokens) - 1]:
        alone_mid, alone_post = activations_at(model, tokens[i: i + 1], [RESID_MID, HOOK_POST])
        assert torch.equal(mid[i], alone_mid[0]) and torch.equal(post[i], alone_post[0]), i
