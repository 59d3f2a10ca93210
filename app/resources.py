"""Where the root `templates/`, `static/` and `migrations/` folders are, in a checkout and in an installed wheel."""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


def resource(name: str) -> Path:
    """Return the folder `name`: inside the package in a wheel (force-included there), else the repository root."""
    inside = _PACKAGE / name
    return inside if inside.exists() else _PACKAGE.parent / name
