"""Package exports loaded on first use (PEP 562), so importing one light module of a package (its torch-free
config, say) does not import the package's torch or transformer_lens modules too."""

from __future__ import annotations

from importlib import import_module
from typing import Any, Callable


def lazy_exports(package: str, homes: dict[str, list[str]]) -> tuple[list[str], Callable[[str], Any]]:
    """Return (__all__, __getattr__) for `package` exporting each name of homes {module: [names]} from its module."""
    home_of = {name: module for module, names in homes.items() for name in names}

    def __getattr__(name: str) -> Any:
        if name not in home_of:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(import_module(home_of[name]), name)

    return sorted(home_of), __getattr__
