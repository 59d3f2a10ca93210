"""Bulk insert of many plain rows inside the caller's transaction: PostgreSQL COPY, SQLite executemany.

Ingest writes ~5 rows per unit (its row, four of packed example windows) and the links: ~300k for 16,384 features.
Through the ORM or Core `insert`, SQLAlchemy spends most of the time building and processing one parameter dict per
row (measured on 2.5M rows: ~11 s of which the driver needed ~1.5 s); handing tuples to the driver directly removes
that overhead. The rows go through the same connection, so they commit or roll back with
the rest of the basis.
"""

from __future__ import annotations

import json
from itertools import islice
from typing import Iterable, Sequence

from psycopg.types.json import Json
from sqlalchemy import JSON, BigInteger, Connection, Float, Integer, LargeBinary, String, Table

BATCH = 20_000  # rows per executemany call: bounded memory for any row iterator
_BINARY = ((LargeBinary, "bytea"), (BigInteger, "int8"), (Integer, "int4"), (Float, "float8"),
           (String, "text"), (JSON, "json"))  # column type -> binary COPY's (the first that matches)


def insert_rows(connection: Connection, table: Table, columns: Sequence[str], rows: Iterable[tuple]) -> int:
    """Insert `rows` (tuples in `columns` order) into `table`; return how many were written."""
    unknown = set(columns) - set(table.columns.keys())
    if unknown:
        raise ValueError(f"{table.name} has no column(s) {sorted(unknown)}")
    names = ", ".join(f'"{c}"' for c in columns)
    if connection.dialect.name == "postgresql":
        written, types = 0, _binary_types(table, columns)
        binary = " (FORMAT BINARY)" if types else ""
        with connection.connection.driver_connection.cursor() as cursor:  # psycopg 3, the session's transaction
            with cursor.copy(f'COPY "{table.name}" ({names}) FROM STDIN{binary}') as copy:
                if types:
                    copy.set_types(types)
                as_json = [i for i, t in enumerate(types or ()) if t == "json"]
                for row in rows:
                    if as_json:  # JSON columns come as their JSON text: sent as it is
                        row = list(row)
                        for i in as_json:
                            row[i] = None if row[i] is None else Json(row[i], dumps=_as_is)
                    copy.write_row(row)
                    written += 1
        return written
    sql = f'INSERT INTO "{table.name}" ({names}) VALUES ({", ".join("?" * len(columns))})'
    written, rows = 0, iter(rows)
    while batch := list(islice(rows, BATCH)):
        connection.exec_driver_sql(sql, batch)
        written += len(batch)
    return written


def _as_is(value) -> str:
    """A JSON column's value as JSON text: ingest's rows hold it as text already."""
    return value if isinstance(value, str) else json.dumps(value)


def _binary_types(table: Table, columns: Sequence[str]) -> list[str] | None:
    """Return the PostgreSQL types of `columns` for a binary COPY when each is bytes, a number, text or JSON (given as
    its JSON text), else None (text COPY). Binary spares the hex text of every bytea value (an ingest of 4,608 units
    with their packed example rows: 22.3-22.8 s -> 19.6-21.4 s; 17,000 unit rows with 10 kB of sections: 1.74 ->
    1.0 s)."""
    types = []
    for c in columns:
        found = [name for kind, name in _BINARY if isinstance(table.columns[c].type, kind)]
        if not found:
            return None
        types.append(found[0])
    return types
