"""Files of what people wrote, for spreadsheets and pandas: CSV that a spreadsheet opens as text, never formulas."""

from __future__ import annotations

import csv
from typing import IO, Iterable

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_safe(value):
    """Return a cell that a spreadsheet shows as typed: text starting like a formula gets a leading quote."""
    return "'" + value if isinstance(value, str) and value.startswith(FORMULA_STARTS) else value


def write_csv(target: IO[str], fields: list[str], rows: Iterable[dict]) -> int:
    """Write a header and the rows (text cells made spreadsheet-safe); return the number of rows."""
    writer = csv.DictWriter(target, fieldnames=fields)
    writer.writeheader()
    n = 0
    for row in rows:
        writer.writerow({key: spreadsheet_safe(value) for key, value in row.items()})
        n += 1
    return n
