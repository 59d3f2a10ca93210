"""Corpus stage: exact round-trips, row format, split by file, replaced bytes, bad sources, atomic writes."""

import json
import re

import numpy as np
import pytest
from tokenizers import Tokenizer

from sae import rundir
from sae.corpus.build import (
    CorpusConfig,
    build_corpus,
    load_corpus_meta,
    load_tokens,
    pack_rows,
    read_token_strings,
    split_by_file,
)
from sae.corpus.tokenizer import EOT, load_hf_tokenizer, readable_bytes
from sae.errors import MonoscopeError

quiet = lambda message: None  # noqa: E731


TINY_CORPUS = dict(vocab_size=300, n_ctx=32, heldout_fraction=0.2)  # as tiny_run (checked below)


def build(run_dir, source, **overrides):
    cfg = CorpusConfig(**{**TINY_CORPUS, "source": str(source), **overrides})
    return build_corpus(run_dir, cfg, progress=False, log=quiet)


def test_tokenizer_round_trips_whitespace_and_non_ascii_exactly(tiny_run, tiny_spec):
    assert tiny_spec.corpus == TINY_CORPUS
    tokenizer = Tokenizer.from_file(str(tiny_run / "corpus" / "tokenizer.json"))
    hf = load_hf_tokenizer(tiny_run / "corpus" / "hf")
    for text in [tiny_spec.awkward_text, "  \t\n\r\n   x  ", "日本語 🙂 é\u0301 \ufffd", "a\u00a0b\u2028c"]:
        ids = tokenizer.encode(text, add_special_tokens=False).ids
        assert tokenizer.decode(ids) == text
        assert hf.encode(text, add_special_tokens=False) == ids  # the derived folder is the same tokenizer
        assert hf.decode(ids) == text


def test_hf_folder_names_a_class_every_transformers_version_knows(tiny_run):
    config = json.loads((tiny_run / "corpus" / "hf" / "tokenizer_config.json").read_text())
    assert config["tokenizer_class"] == "PreTrainedTokenizerFast"
    assert (tiny_run / "corpus" / "hf" / "tokenizer.json").read_bytes() == (
        tiny_run / "corpus" / "tokenizer.json").read_bytes()


def test_rows_have_shape_dtype_and_bos_and_documents_are_separated(tiny_run):
    meta = load_corpus_meta(tiny_run)
    tokens, heldout = load_tokens(tiny_run, "train"), load_tokens(tiny_run, "heldout")
    assert tokens.dtype == np.uint16 and tokens.shape[1] == 32 and heldout.shape[1] == 32
    assert meta["bos_token"] == EOT and meta["bos_id"] == 0
    assert (tokens[:, 0] == 0).all() and (heldout[:, 0] == 0).all()
    assert meta["train_tokens"] == tokens.size and meta["heldout_tokens"] == heldout.size
    # 19 or so training files -> at least that many end-of-text separators inside the stream
    assert (tokens[:, 1:] == 0).sum() >= len(meta["train_files"]) - 1
    assert tokens.max() < meta["vocab_size"] == 300


def test_heldout_split_shares_no_file_and_keeps_its_text_out_of_training(tiny_run, tiny_source):
    meta = load_corpus_meta(tiny_run)
    train, heldout = set(meta["train_files"]), set(meta["heldout_files"])
    assert train and heldout and not train & heldout
    assert train | heldout == {"awkward.txt", "invalid.txt", "sub/plain.py"} | {
        p.relative_to(tiny_source).as_posix() for p in (tiny_source / "stdlib").rglob("*.py")}
    tokenizer = Tokenizer.from_file(str(tiny_run / "corpus" / "tokenizer.json"))
    train_text = tokenizer.decode(np.asarray(load_tokens(tiny_run, "train")).ravel().tolist())
    for name in heldout - {"invalid.txt", "awkward.txt", "sub/plain.py"}:  # stdlib files are unique text
        lines = [ln for ln in (tiny_source / name).read_text().splitlines() if len(ln.strip()) > 60]
        assert lines and not any(ln in train_text for ln in lines[:5])


def test_split_is_deterministic_and_never_leaves_a_side_empty():
    names = [f"file{i}.py" for i in range(40)]
    assert split_by_file(names, 0.05) == split_by_file(list(reversed(names)), 0.05)
    split = split_by_file(["a", "b"], 0.0)
    assert len(split.train) == len(split.heldout) == 1
    split = split_by_file(["a", "b", "c"], 1.0)
    assert len(split.train) == 1 and len(split.heldout) == 2 and split.train | split.heldout == {"a", "b", "c"}
    with pytest.raises(MonoscopeError, match="at least 2"):
        split_by_file(["only"], 0.05)


def test_pack_rows_puts_bos_first_and_pads_only_a_lone_short_row():
    rows = pack_rows(np.arange(1, 11), n_ctx=4, bos_id=0, dtype=np.dtype(np.int32))
    assert rows.tolist() == [[0, 1, 2, 3], [0, 4, 5, 6], [0, 7, 8, 9]]
    assert pack_rows(np.array([5, 6]), 4, 0, np.dtype(np.int32)).tolist() == [[0, 5, 6, 0]]


def test_invalid_utf8_is_replaced_counted_and_shown(text_folder, tmp_path):
    build(tmp_path / "run", text_folder, vocab_size=280)
    meta = load_corpus_meta(tmp_path / "run")
    assert meta["replaced_bytes"] == 4  # \xe9 and \xff, twice
    assert meta["files"] == 3  # the empty file is not a document
    strings = json.loads((tmp_path / "run" / "corpus" / "token_strings.json").read_text())
    assert len(strings) == meta["vocab_size"] and strings[0] == EOT
    assert {"<", ">", "&", '"', "'"} <= set(strings)
    # A lone byte of a multi-byte character has no text of its own: it shows as its bytes, not as U+FFFD.
    assert {"<80>", "<e2>", "<ff>"} <= set(strings)
    assert readable_bytes(b"a\xe2\x80") == "a<e2 80>" and readable_bytes("é“".encode()) == "é“"
    # A corpus written when such tokens were U+FFFD reads them as bytes too (from its tokenizer).
    spelled = re.compile(r"(.*<[0-9a-f]{2}( [0-9a-f]{2})*>.*)+")
    old = ["\ufffd" if spelled.fullmatch(s) else s for s in strings]
    (tmp_path / "run" / "corpus" / "token_strings.json").write_text(json.dumps(old))
    assert read_token_strings(tmp_path / "run") == strings


def test_jsonl_source_and_its_bad_line_number(tmp_path):
    good = tmp_path / "docs.jsonl"
    good.write_text("\n".join(json.dumps({"text": f"document {i} says <hi> & bye\n" * 20}) for i in range(6)))
    build(tmp_path / "run", good, n_ctx=16)
    assert load_corpus_meta(tmp_path / "run")["files"] == 6
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"text": "fine"}) + "\n" + json.dumps({"text": "ok"}) + "\n{not json\n")
    with pytest.raises(MonoscopeError, match=r"bad\.jsonl:3: not valid JSON"):
        build(tmp_path / "run2", bad)
    no_text = tmp_path / "notext.jsonl"
    no_text.write_text(json.dumps({"body": "x"}) + "\n")
    with pytest.raises(MonoscopeError, match=r"notext\.jsonl:1: .*`text`"):
        build(tmp_path / "run3", no_text)
    assert not (tmp_path / "run2").exists() and not (tmp_path / "run3").exists()


@pytest.mark.parametrize("make, message", [
    (lambda p: p / "missing", "does not exist"),
    (lambda p: (p / "empty").mkdir() or p / "empty", "has no text"),
    (lambda p: (p / "x.csv").write_text("a,b") and p / "x.csv", "not .jsonl"),
])
def test_missing_or_empty_sources_are_one_line_errors(tmp_path, make, message):
    with pytest.raises(MonoscopeError, match=message) as info:
        build(tmp_path / "run", make(tmp_path))
    assert "\n" not in str(info.value)
    assert not (tmp_path / "run").exists()


def test_max_tokens_caps_the_training_rows(tiny_source, tmp_path):
    build(tmp_path / "run", tiny_source, max_tokens=31 * 10)
    assert load_tokens(tmp_path / "run").shape == (10, 32)


def test_rebuild_is_skipped_when_current_and_a_failed_rebuild_keeps_the_old_stage(tiny_source, tmp_path, monkeypatch):
    out = build(tmp_path / "run", tiny_source)
    first = rundir.fingerprint(out)
    mtime = (out / "tokens.npy").stat().st_mtime_ns
    build(tmp_path / "run", tiny_source)
    assert (out / "tokens.npy").stat().st_mtime_ns == mtime

    def die(*args, **kwargs):  # a kill half-way through writing the token files
        raise KeyboardInterrupt

    monkeypatch.setattr(np, "save", die)
    with pytest.raises(KeyboardInterrupt):
        build(tmp_path / "run", tiny_source, vocab_size=290)
    assert rundir.fingerprint(out) == first and (out / "tokens.npy").stat().st_mtime_ns == mtime
    assert [p.name for p in (tmp_path / "run").iterdir()] == ["corpus"]  # no temporary folder left
    assert rundir.read_manifest(out)["config"]["vocab_size"] == 300  # the old stage, still whole


def test_existing_tokenizer_folder_is_used_as_is(tiny_run, text_folder, tmp_path):
    build(tmp_path / "run", text_folder, tokenizer=str(tiny_run / "corpus" / "hf"))
    meta = load_corpus_meta(tmp_path / "run")
    assert (meta["vocab_size"], meta["bos_id"]) == (300, 0)
    ours = Tokenizer.from_file(str(tmp_path / "run" / "corpus" / "tokenizer.json"))
    theirs = Tokenizer.from_file(str(tiny_run / "corpus" / "tokenizer.json"))
    assert ours.get_vocab() == theirs.get_vocab()
    with pytest.raises(MonoscopeError, match="not in the local Hugging Face cache"):
        build(tmp_path / "run2", text_folder, tokenizer="no-such-org/no-such-tokenizer")
