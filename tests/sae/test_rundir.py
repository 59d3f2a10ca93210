"""The run directory contract: atomic stage writes, manifests, up-to-date checks and fingerprint chaining."""

import pytest

from sae.errors import MonoscopeError
from sae.rundir import (
    check_run_dir,
    fingerprint,
    is_current,
    read_manifest,
    work_dir,
    write_stage,
)


def test_stage_written_atomically_with_manifest(tmp_path):
    out = tmp_path / "run" / "corpus"
    with write_stage(out, stage="corpus", config={"vocab": 300}, inputs={"source": "abc"}) as tmp:
        (tmp / "tokens.npy").write_bytes(b"x" * 10)
        assert not out.exists()  # nothing visible until complete
    manifest = read_manifest(out)
    assert manifest["config"] == {"vocab": 300}
    assert set(manifest["files"]) == {"tokens.npy"}
    assert is_current(out, config={"vocab": 300}, inputs={"source": "abc"})
    assert not is_current(out, config={"vocab": 301}, inputs={"source": "abc"})
    assert not is_current(out, config={"vocab": 300}, inputs={"source": "abd"})
    assert [p.name for p in out.parent.iterdir()] == ["corpus"]


def test_failed_stage_leaves_previous_version_intact(tmp_path):
    out = tmp_path / "lm"
    with write_stage(out, stage="lm", config={"a": 1}, inputs={}) as tmp:
        (tmp / "weights").write_text("good")
    good = fingerprint(out, "lm")
    with pytest.raises(RuntimeError):
        with write_stage(out, stage="lm", config={"a": 2}, inputs={}) as tmp:
            (tmp / "weights").write_text("half")
            raise RuntimeError("killed mid-write")
    assert (out / "weights").read_text() == "good"
    assert fingerprint(out, "lm") == good
    assert [p.name for p in tmp_path.iterdir()] == ["lm"]


def test_redo_changes_fingerprint_and_clears_scratch(tmp_path):
    out = tmp_path / "sae"
    with write_stage(out, stage="sae", config={}, inputs={}) as tmp:
        (tmp / "w").write_text("1")
    first = fingerprint(out)
    scratch = work_dir(out)
    (scratch / "checkpoint.pt").write_text("ckpt")
    with write_stage(out, stage="sae", config={}, inputs={}) as tmp:
        (tmp / "w").write_text("2")
    assert fingerprint(out) != first  # downstream stages that recorded `first` are now out of date
    assert not scratch.exists()


def test_missing_stage_and_bad_run_dir_are_clear_errors(tmp_path):
    with pytest.raises(MonoscopeError, match="monoscope train-lm"):
        fingerprint(tmp_path / "lm", "lm")
    (tmp_path / "afile").write_text("")
    with pytest.raises(MonoscopeError, match="is a file"):
        check_run_dir(tmp_path / "afile")
    (tmp_path / "corrupt").mkdir()
    (tmp_path / "corrupt" / "manifest.json").write_text("{not json")
    assert read_manifest(tmp_path / "corrupt") is None
