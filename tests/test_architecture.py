"""Data flows one way (DESIGN.md §1): sae/ never imports the product layer; app/ keeps torch out of its web path."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TORCH_ALLOWED_IN_APP = ("app/cli/", "app/web/infer.py")  # the command line, and live inference


def imported_modules(path: Path) -> set[str]:
    """Return the top-level module names a file imports (anywhere in it, lazily or not)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("path", sorted((ROOT / "sae").rglob("*.py")), ids=lambda p: p.name)
def test_sae_never_imports_the_product_layer(path):
    assert not imported_modules(path) & {"app", "fastapi", "sqlalchemy", "alembic", "jinja2"}


@pytest.mark.parametrize("path", sorted((ROOT / "app").rglob("*.py")), ids=lambda p: p.name)
def test_only_cli_and_live_inference_import_torch(path):
    if str(path.relative_to(ROOT)).startswith(TORCH_ALLOWED_IN_APP):
        return
    assert "torch" not in imported_modules(path)


def test_transformer_lens_only_in_lm_module():
    users = {
        str(p.relative_to(ROOT))
        for p in list((ROOT / "sae").rglob("*.py")) + list((ROOT / "app").rglob("*.py"))
        if "transformer_lens" in imported_modules(p)
    }
    assert users <= {"sae/lm/model.py"}
