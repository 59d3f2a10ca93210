"""The run directory contract: every stage writes atomically and records what it was built from.

A stage writes into a temporary sibling folder and renames it into place only when complete, so a killed
stage leaves nothing a later stage would trust. `manifest.json` (written last, inside the folder) holds the
stage's config, the fingerprints of the stages it read, and digests of its files; a re-run whose config and
inputs are unchanged is skipped. Fingerprints chain: redoing a stage changes its fingerprint, which makes
every stage downstream of it out of date.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from sae.errors import MonoscopeError

MANIFEST = "manifest.json"
FORMAT_VERSION = 1

# The command that (re)builds each stage, for error messages.
STAGE_COMMANDS = {
    "corpus": "monoscope corpus",
    "lm": "monoscope train-lm",
    "sae": "monoscope train-sae",
    "analysis": "monoscope analyze",
}


def file_digest(path: Path) -> str:
    """Return the blake2b hex digest of a file's bytes (chunked: token files are tens of MB)."""
    h = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_manifest(out_dir: Path) -> dict[str, Any] | None:
    """Return a completed stage's manifest, or None when the stage is absent or unreadable."""
    try:
        return json.loads((Path(out_dir) / MANIFEST).read_text())
    except (OSError, ValueError):
        return None


def _canonical(obj: Any) -> Any:
    """Round-trip through JSON so tuples, paths and floats compare the way they are stored."""
    return json.loads(json.dumps(obj, sort_keys=True, default=str))


def is_current(out_dir: Path, *, config: dict[str, Any], inputs: dict[str, str]) -> bool:
    """Return True when `out_dir` holds a complete stage built from this config and these inputs."""
    manifest = read_manifest(out_dir)
    return (
        manifest is not None
        and manifest.get("format_version") == FORMAT_VERSION
        and manifest.get("config") == _canonical(config)
        and manifest.get("inputs") == _canonical(inputs)
    )


def fingerprint(out_dir: Path, stage: str | None = None) -> str:
    """Return a completed stage's fingerprint; a clear error names the command to run when it is missing."""
    manifest = read_manifest(out_dir)
    if manifest is None:
        hint = f": run `{STAGE_COMMANDS[stage]}` first" if stage in STAGE_COMMANDS else ""
        raise MonoscopeError(f"no completed {stage or 'stage'} at {out_dir}{hint}")
    return manifest["fingerprint"]


def work_dir(out_dir: Path) -> Path:
    """Return (and create) a scratch folder for checkpoints that survives a crash of the stage."""
    path = Path(out_dir).parent / f".{Path(out_dir).name}.work"
    path.mkdir(parents=True, exist_ok=True)
    return path


def check_run_dir(run_dir: Path) -> Path:
    """Return the run folder, created if needed; a path that is a file is bad input."""
    run_dir = Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise MonoscopeError(f"--run {run_dir} is a file, not a folder")
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise MonoscopeError(f"cannot create run folder {run_dir}: {e.strerror}") from None
    return run_dir


def _remove_stale(out_dir: Path) -> None:
    """Remove temporary folders left behind by killed writers of this stage."""
    for stale in out_dir.parent.glob(f".{out_dir.name}.tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)
    for stale in out_dir.parent.glob(f".{out_dir.name}.old-*"):
        shutil.rmtree(stale, ignore_errors=True)


@contextmanager
def write_stage(
    out_dir: Path, *, stage: str, config: dict[str, Any], inputs: dict[str, str]
) -> Iterator[Path]:
    """Yield a temporary folder to write a stage into; on success it replaces `out_dir` with a manifest.

    On any exception (or KeyboardInterrupt) the temporary folder is removed and `out_dir` is untouched.
    """
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale(out_dir)
    tmp = out_dir.parent / f".{out_dir.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        yield tmp
        files = {
            str(p.relative_to(tmp)): file_digest(p)
            for p in sorted(tmp.rglob("*"))
            if p.is_file() and p.name != MANIFEST
        }
        body = {
            "format_version": FORMAT_VERSION,
            "stage": stage,
            "config": _canonical(config),
            "inputs": _canonical(inputs),
            "files": files,
        }
        fp = hashlib.blake2b(json.dumps(body, sort_keys=True).encode(), digest_size=16).hexdigest()
        manifest = {**body, "fingerprint": fp, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True))
        old = None
        if out_dir.exists():
            old = out_dir.parent / f".{out_dir.name}.old-{uuid.uuid4().hex[:8]}"
            os.replace(out_dir, old)
        os.replace(tmp, out_dir)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        scratch = out_dir.parent / f".{out_dir.name}.work"
        if scratch.exists():
            shutil.rmtree(scratch, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
