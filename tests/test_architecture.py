"""Data flows one way: the research library sae/ never imports the product layer (app/, the web and database stack),
app/'s layers import only downward (store and presentation below the read model, all below the web app), no module
imports itself back;
within app/, only the command line and live inference use torch, so the web path starts without it; only the LM
package sae/lm/ uses transformer_lens."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SAE_FILES = sorted((ROOT / "sae").rglob("*.py"))
APP_FILES = sorted((ROOT / "app").rglob("*.py"))
PRODUCT_LAYER = {"app", "fastapi", "starlette", "sqlalchemy", "alembic", "jinja2", "uvicorn"}
TORCH_ALLOWED_IN_APP = ("app/cli/", "app/web/infer.py")  # the command line, and live inference
TRANSFORMER_LENS_ALLOWED = "sae/lm/"


def rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def imported_modules(path: Path) -> set[str]:
    """Return the top-level module names a file imports (anywhere in it, lazily or not)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def torch_allowed(path: Path) -> bool:
    return rel(path).startswith(TORCH_ALLOWED_IN_APP)


def test_the_checks_see_the_current_layout():
    """The globs find the packages, every allowed path exists, and the allowances are used (not stale)."""
    assert {"sae/lm/model.py", "sae/analysis/run.py", "sae/dictionary/train.py"} <= {rel(p) for p in SAE_FILES}
    assert {"app/cli/__init__.py", "app/web/infer.py", "app/web/pages.py", "app/store/ingest.py"} <= {
        rel(p) for p in APP_FILES}
    for allowed in (*TORCH_ALLOWED_IN_APP, TRANSFORMER_LENS_ALLOWED):
        assert (ROOT / allowed).exists(), allowed
    assert "torch" in imported_modules(ROOT / "app/web/infer.py")  # lazily, inside its functions: still seen
    assert any("torch" in imported_modules(p) for p in APP_FILES if rel(p).startswith("app/cli/"))
    assert "transformer_lens" in imported_modules(ROOT / "sae/lm/model.py")
    assert len([p for p in APP_FILES if not torch_allowed(p)]) >= 20  # the web and store layers are checked


@pytest.mark.parametrize("path", SAE_FILES, ids=rel)
def test_sae_never_imports_the_product_layer(path):
    assert not imported_modules(path) & PRODUCT_LAYER


@pytest.mark.parametrize("path", [p for p in APP_FILES if not torch_allowed(p)], ids=rel)
def test_only_cli_and_live_inference_import_torch(path):
    assert "torch" not in imported_modules(path)


def test_the_web_and_store_layers_load_without_torch():
    """Importing every app/ module outside the allowed ones pulls in no torch, not even through sae/."""
    modules = [".".join(Path(rel(p)).with_suffix("").parts).removesuffix(".__init__")
               for p in APP_FILES if not torch_allowed(p)]
    assert "app.web.pages" in modules and "app.store.ingest" in modules
    script = ("import importlib, sys\n"
              f"for m in {modules!r}: importlib.import_module(m)\n"
              "print(sorted(m for m in ('torch', 'transformer_lens') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_transformer_lens_only_in_the_lm_package():
    users = {rel(p) for p in SAE_FILES + APP_FILES if "transformer_lens" in imported_modules(p)}
    assert users and all(u.startswith(TRANSFORMER_LENS_ALLOWED) for u in users), users


def module_name(path: Path) -> str:
    return ".".join(Path(rel(path)).with_suffix("").parts).removesuffix(".__init__")


def imported_names(path: Path) -> set[str]:
    """Return the dotted names of the modules a file imports (anywhere in it), `from a import b` as both a and a.b."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names |= {node.module} | {f"{node.module}.{alias.name}" for alias in node.names}
    return names


# Who may import whom inside app/: the read model (queries and view models) and the presentation code never import
# the web app; the store never imports the web app or the read model's queries (it builds view models at ingest).
LAYERS = {"app.store": ("app.web", "app.read.queries", "app.cli"), "app.read": ("app.web", "app.cli"),
          "app.present": ("app.web", "app.store", "app.read.queries", "app.cli"), "app.web": ("app.cli",)}


@pytest.mark.parametrize("path", [p for p in APP_FILES if any(module_name(p).startswith(layer) for layer in LAYERS)],
                         ids=rel)
def test_each_layer_imports_only_what_is_below_it(path):
    layer = next(layer for layer in LAYERS if module_name(path).startswith(layer))
    banned = {name for name in imported_names(path) for below in LAYERS[layer]
              if name == below or name.startswith(below + ".")}
    assert not banned, f"{rel(path)} ({layer}) imports {sorted(banned)}"


def test_no_import_cycle():
    """No module of app/ or sae/ imports, directly or through others, a module that imports it back (lazy imports
    inside functions included: a cycle is a cycle whenever it is taken)."""
    modules = {module_name(p): p for p in APP_FILES + SAE_FILES}
    graph = {m: {n for n in imported_names(p) if n in modules and n != m} for m, p in modules.items()}
    state: dict[str, int] = {}

    def visit(m: str, path: list[str]) -> None:
        state[m] = 1
        for n in sorted(graph[m]):
            if state.get(n) == 1:
                raise AssertionError("import cycle: " + " -> ".join(path[path.index(n):] + [m, n]))
            if n not in state:
                visit(n, path + [m])
        state[m] = 2

    for m in sorted(modules):
        if m not in state:
            visit(m, [])
