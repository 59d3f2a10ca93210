"""Write streams of row batches as files, one per table: JSON lines (always) or Parquet (with pyarrow, the
`export` extra). Each file is written under a temporary name and renamed when every table is complete, so a
killed export leaves no file that looks finished.
"""

from __future__ import annotations

import json
import os
from datetime import datetime
from pathlib import Path
from typing import Iterable, Iterator

from sae.errors import MonoscopeError

FORMATS = ("parquet", "jsonl")


def _pyarrow():
    try:
        import pyarrow
        import pyarrow.parquet  # noqa: F401
    except ImportError:
        raise MonoscopeError("--format parquet needs pyarrow: pip install 'monoscope[export]' "
                             "(or use --format jsonl)") from None
    return pyarrow


def check_format(format: str) -> str:
    """Return the format if this installation can write it; refuse it in one line otherwise."""
    if format not in FORMATS:
        raise MonoscopeError(f"--format must be parquet or jsonl, got {format!r}")
    if format == "parquet":
        _pyarrow()
    return format


def out_folder(out: Path) -> Path:
    """Return the output folder, created if missing; refuse, in one line, one that cannot be written to."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".monoscope-write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise MonoscopeError(f"cannot write to {out}: {e.strerror or e}") from None
    return out


def _arrow_schema(columns: dict[str, str]):
    pa = _pyarrow()
    scalar = {"int": pa.int64(), "float": pa.float64(), "str": pa.string(), "bool": pa.bool_(),
              "time": pa.timestamp("us", tz="UTC")}
    return pa.schema([(name, pa.list_(scalar[kind[5:-1]]) if kind.startswith("list<") else scalar[kind])
                      for name, kind in columns.items()])


def _json_value(value):
    return value.isoformat() if isinstance(value, datetime) else value


# Characters that str.splitlines() and some JSON-lines readers take for line ends; JSON leaves them raw.
LINE_BREAKS = str.maketrans({"\x85": "\\u0085", "\u2028": "\\u2028", "\u2029": "\\u2029"})


def json_line(row: dict) -> str:
    """Return one row as a line of JSON: UTF-8 text as is, except what could end a line, which is escaped."""
    line = json.dumps({k: _json_value(v) for k, v in row.items()}, ensure_ascii=False, allow_nan=False)
    return line.translate(LINE_BREAKS) + "\n"


def _write_jsonl(path: Path, batches: Iterable[list[dict]]) -> int:
    n = 0
    with path.open("w", encoding="utf-8", newline="\n") as f:
        for batch in batches:
            f.writelines(json_line(row) for row in batch)
            n += len(batch)
    return n


def _write_parquet(path: Path, columns: dict[str, str], batches: Iterable[list[dict]]) -> int:
    pa = _pyarrow()
    schema = _arrow_schema(columns)
    n = 0
    with pa.parquet.ParquetWriter(path, schema) as writer:
        for batch in batches:
            if batch:  # one row group per batch: readers can stream it back the same way
                writer.write_table(pa.Table.from_pylist(batch, schema=schema))
            n += len(batch)
    return n


def write_tables(out: Path, format: str, tables: dict[str, tuple[dict[str, str], Iterator[list[dict]]]]) -> dict:
    """Write each table (columns, row batches) to out/<table>.<format>; return {table: rows written}."""
    written, done = {}, []
    try:
        for name, (columns, batches) in tables.items():
            tmp = out / f".{name}.{format}.tmp"
            done.append((tmp, out / f"{name}.{format}"))
            written[name] = (_write_parquet(tmp, columns, batches) if format == "parquet"
                             else _write_jsonl(tmp, batches))
    except BaseException as e:
        for tmp, _ in done:
            tmp.unlink(missing_ok=True)
        if isinstance(e, OSError):  # the disk filled, the folder vanished
            raise MonoscopeError(f"cannot write to {out}: {e.strerror or e}") from None
        raise
    for tmp, final in done:
        os.replace(tmp, final)
    return written
