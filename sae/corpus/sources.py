"""Text sources for the corpus stage: the stdlib, a folder of text files, or a JSONL file with a `text` field.

Bytes that are not UTF-8 are replaced with U+FFFD (one per byte) and counted, never fatal: real folders hold
Latin-1 leftovers. Files with NUL bytes are binary and skipped (counted). Order is deterministic (sorted
relative paths), so the same source always gives the same corpus.
"""

from __future__ import annotations

import json
import re
import sysconfig
from dataclasses import dataclass
from pathlib import Path

from tqdm.auto import tqdm

from sae.errors import MonoscopeError

_ESCAPED = re.compile("[\udc80-\udcff]")  # bytes that surrogateescape could not decode
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")  # JSON can spell these; they are not encodable text
_SKIP_DIRS = {"site-packages", "dist-packages", "__pycache__"}


@dataclass(frozen=True)
class Document:
    """One unit of the held-out split: a file, or a JSONL line (`name` is its relative path or `file:line`)."""

    name: str
    text: str


@dataclass(frozen=True)
class SourceStats:
    """What reading a source met, recorded in corpus/meta.json (field order is the file's key order)."""

    files: int  # documents kept (non-empty files or records)
    bytes: int  # of the kept documents
    replaced_bytes: int  # undecodable bytes turned into U+FFFD
    skipped_binary_files: int


@dataclass(frozen=True)
class Source:
    """The documents of a text source, in its deterministic order, and what reading it met."""

    documents: list[Document]
    stats: SourceStats


def decode_counting(data: bytes) -> tuple[str, int]:
    """Return (text, n_replaced): UTF-8 decoded with every undecodable byte turned into U+FFFD."""
    text = data.decode("utf-8", "surrogateescape")
    replaced = len(_ESCAPED.findall(text))
    if replaced:
        text = _ESCAPED.sub("\ufffd", text)
    return text, replaced


def stdlib_files() -> tuple[Path, list[Path]]:
    """Return (root, .py files) of the running Python's standard library, without site-packages, sorted."""
    root = Path(sysconfig.get_paths()["stdlib"])
    files = [
        p for p in root.rglob("*.py")
        if p.is_file() and not _SKIP_DIRS.intersection(p.relative_to(root).parts)
    ]
    return root, sorted(files, key=lambda p: p.relative_to(root).as_posix())


def folder_files(root: Path) -> list[Path]:
    """Return the regular, non-hidden files under `root`, sorted by relative path."""
    files = [
        p for p in root.rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts)
    ]
    return sorted(files, key=lambda p: p.relative_to(root).as_posix())


def _read_files(root: Path, files: list[Path], progress: bool) -> Source:
    docs, n_bytes, replaced, binary = [], 0, 0, 0
    for path in tqdm(files, desc="read files", unit="file", disable=not progress, leave=False):
        data = path.read_bytes()
        if b"\x00" in data[:8192]:
            binary += 1
            continue
        text, n_bad = decode_counting(data)
        if not text.strip():
            continue
        docs.append(Document(path.relative_to(root).as_posix(), text))
        n_bytes += len(data)
        replaced += n_bad
    return Source(docs, SourceStats(files=len(docs), bytes=n_bytes, replaced_bytes=replaced,
                                    skipped_binary_files=binary))


def _read_jsonl(path: Path) -> Source:
    docs, n_bytes, replaced = [], 0, 0
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, start=1):
            if not raw.strip():
                continue
            line, n_bad = decode_counting(raw)
            try:
                record = json.loads(line)
            except ValueError as e:
                raise MonoscopeError(f"{path}:{lineno}: not valid JSON ({e.msg})") from None
            if not isinstance(record, dict) or not isinstance(record.get("text"), str):
                raise MonoscopeError(f"{path}:{lineno}: expected an object with a string `text` field")
            text = _LONE_SURROGATE.sub("\ufffd", record["text"])  # JSON \udcXX escapes are not text either
            if text.strip():
                docs.append(Document(f"{path.name}:{lineno}", text))
                n_bytes += len(raw)
                replaced += n_bad
    return Source(docs, SourceStats(files=len(docs), bytes=n_bytes, replaced_bytes=replaced, skipped_binary_files=0))


def read_source(source: str, *, progress: bool = True) -> Source:
    """Return the documents of a source: "stdlib", a folder, or a .jsonl file; bad input is one line."""
    if source == "stdlib":
        root, files = stdlib_files()
        found = _read_files(root, files, progress)
    else:
        path = Path(source)
        if not path.exists():
            raise MonoscopeError(f"source {source} does not exist (give a folder, a .jsonl file, or `stdlib`)")
        if path.is_dir():
            found = _read_files(path, folder_files(path), progress)
        elif path.suffix == ".jsonl":
            found = _read_jsonl(path)
        else:
            raise MonoscopeError(f"source {source} is a file but not .jsonl (give a folder, a .jsonl, or `stdlib`)")
    if not found.documents:
        raise MonoscopeError(f"source {source} has no text (no non-empty text files or records)")
    return found
