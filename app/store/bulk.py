"""Bulk insert of many plain rows inside the caller's transaction: PostgreSQL COPY, SQLite executemany.

Ingest writes ~150 example rows per unit (the open page's 75 and the review sample's 75: 2.5M for 16,384 features). Through the ORM or Core `insert`, SQLAlchemy
spends most of the time building and processing one parameter dict per row (measured: ~11 s of which the driver
needed ~1.5 s); handing tuples to the driver directly removes that overhead. The rows go through the same
connection, so they commit or roll back with the rest of the basis.
"""

from __future__ import annotations

from itertools import islice
from typing import Iterable, Sequence

from sqlalchemy import Connection, Table

BATCH = 20_000  # rows per executemany call: bounded memory for any row iterator


def insert_rows(connection: Connection, table: Table, columns: Sequence[str], rows: Iterable[tuple]) -> int:
    """Insert `rows` (tuples in `columns` order) into `table`; return how many were written."""
    unknown = set(columns) - set(table.columns.keys())
    if unknown:
        raise ValueError(f"{table.name} has no column(s) {sorted(unknown)}")
    names = ", ".join(f'"{c}"' for c in columns)
    if connection.dialect.name == "postgresql":
        written = 0
        with connection.connection.driver_connection.cursor() as cursor:  # psycopg 3, the session's transaction
            with cursor.copy(f'COPY "{table.name}" ({names}) FROM STDIN') as copy:
                for row in rows:
                    copy.write_row(row)
                    written += 1
        return written
    sql = f'INSERT INTO "{table.name}" ({names}) VALUES ({", ".join("?" * len(columns))})'
    written, rows = 0, iter(rows)
    while batch := list(islice(rows, BATCH)):
        connection.exec_driver_sql(sql, batch)
        written += len(batch)
    return written


def copy_binary(connection: Connection, table: Table, columns: Sequence[str], data: bytes) -> None:
    """Write PostgreSQL binary COPY `data` (header, rows in `columns` order, trailer) into `table`, inside the
    caller's transaction."""
    names = ", ".join(f'"{c}"' for c in columns)
    with connection.connection.driver_connection.cursor() as cursor:
        with cursor.copy(f'COPY "{table.name}" ({names}) FROM STDIN (FORMAT BINARY)') as copy:
            copy.write(data)
