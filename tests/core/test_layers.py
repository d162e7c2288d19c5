"""The layers of wemoe_core import one way (see ``wemoe_core/__init__.py`` and the README's
Architecture section). Parsed, not grepped: every import statement of every module, including
those inside functions and ``TYPE_CHECKING`` blocks, relative ones resolved."""
from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CORE = ROOT / "wemoe_core"
LAYERS = ("model", "merging", "sources", "pools", "running")
# layer -> the layers it may import (its own included); "_version" is a leaf anyone may import
ALLOWED = {
    "model": {"model"},
    "merging": {"model", "merging"},
    "sources": {"model", "merging", "sources"},
    "pools": {"model", "sources", "pools"},
    "running": {"model", "merging", "sources", "pools", "running"},
}
FORBIDDEN_EVERYWHERE = ("app", "gradio", "gradio_client", "plotly")


def module_name(path: Path) -> tuple[str, bool]:
    """(dotted module name, is a package) of a file under the repository root."""
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        return ".".join(parts[:-1]), True
    return ".".join(parts), False


def imports_of(tree: ast.AST, module: str, is_package: bool) -> list[tuple[str, int]]:
    """Every module an AST imports, as absolute dotted names with line numbers. ``from X import
    a`` yields ``X`` and ``X.a`` (``a`` may be a submodule: the stricter reading)."""
    package = module if is_package else module.rpartition(".")[0]
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(a.name, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            out.append((target, node.lineno))
            out += [(f"{target}.{a.name}", node.lineno) for a in node.names if a.name != "*"]
    return out


def layer_of(module: str) -> str | None:
    """The layer of a wemoe_core module; "top" for the package itself, its cli and __main__."""
    parts = module.split(".")
    if parts[0] != "wemoe_core":
        return None
    if len(parts) == 1 or parts[1] in ("cli", "__main__"):
        return "top"
    if parts[1] == "_version":
        return "_version"
    return parts[1] if parts[1] in LAYERS else "top"


def violations(sources: dict[str, tuple[str, bool]]) -> list[str]:
    """Broken rules in {module name: (source text, is package)}."""
    bad = []
    for module, (text, is_package) in sources.items():
        own = layer_of(module)
        for target, line in imports_of(ast.parse(text), module, is_package):
            where = f"{module}:{line} imports {target}"
            if target.split(".")[0] in FORBIDDEN_EVERYWHERE:
                bad.append(f"{where}: the core never imports the app, gradio or plotly")
                continue
            other = layer_of(target)
            if other is None or other == "_version":
                continue
            if target.startswith("wemoe_core.cli") and not module.startswith("wemoe_core.__main__"):
                bad.append(f"{where}: nothing in the core imports the command line")
            elif own in ALLOWED and other not in ALLOWED[own]:
                bad.append(f"{where}: {own} may import only {', '.join(sorted(ALLOWED[own]))}")
    return bad


def core_sources() -> dict[str, tuple[str, bool]]:
    out = {}
    for path in sorted(CORE.rglob("*.py")):
        name, is_package = module_name(path)
        out[name] = (path.read_text(), is_package)
    return out


def test_every_layer_is_a_package_that_says_what_it_may_import():
    for layer in LAYERS:
        init = CORE / layer / "__init__.py"
        doc = ast.get_docstring(ast.parse(init.read_text()))
        assert doc and "May import" in doc, f"{init} needs a docstring saying what it owns and may import"


def test_the_core_imports_one_way():
    sources = core_sources()
    assert len(sources) > 30 and all(layer_of(m) for m in sources)
    assert not violations(sources)


def test_the_checker_catches_bad_imports():
    """The rules can fail: each synthetic module below breaks one."""
    cases = {
        "wemoe_core.model.towers": "from ..merging import wemoe",                    # model -> merging
        "wemoe_core.merging.wemoe": "def f():\n    from ..sources.files import x",  # inside a function
        "wemoe_core.pools.clip": "from ..running.workbench import build_model",     # pools -> running
        "wemoe_core.pools.base": "import wemoe_core.merging.registry",              # pools -> merging
        "wemoe_core.sources.hub": "from ..pools import load_pool",                  # sources -> pools
        "wemoe_core.running.suite": "from ..cli import main",                       # the CLI
        "wemoe_core.merging.static": "import gradio as gr",                         # the UI
        "wemoe_core.running.export": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from app import ui",
        "wemoe_core.sources.files": "from .. import merge",                         # the top package
    }
    for module, text in cases.items():
        found = violations({module: (text, False)})
        assert len(found) >= 1, (module, text)
    fine = {"wemoe_core.running.suite": ("from ..pools.base import Pool\nfrom .._version import __version__", False),
            "wemoe_core.pools.clip": ("from ..sources import hub\nfrom ..model.keys import StateDict", False),
            "wemoe_core.pools": ("from .base import Pool", True)}
    assert not violations(fine)


@pytest.mark.parametrize("layer", ["model", "merging"])
def test_importing_a_lower_layer_loads_no_higher_one(layer):
    """At run time too: the package's public names are imported lazily, so importing a layer
    (here every module of it) loads nothing above it."""
    mods = [m for m, _ in core_sources().items() if m.startswith(f"wemoe_core.{layer}")]
    code = ("import importlib, json, sys\n"
            f"for m in {mods!r}: importlib.import_module(m)\n"
            "print(json.dumps(sorted({m.split('.')[1] for m in sys.modules if m.startswith('wemoe_core.')})))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    loaded = set(json.loads(out.stdout.strip().splitlines()[-1])) - {"_version"}
    assert loaded <= ALLOWED[layer], loaded


def test_the_public_api_of_the_readme_works():
    import wemoe_core as wc

    promised = ["merge", "upscale", "adapt", "evaluate", "explain", "load_pool", "load_vision", "METHODS",
                "AdaptParams", "PRESETS", "AdaptationError", "StepInfo", "Explanation", "Heads", "MultiTaskModel",
                "VisionConfig", "WEMoE", "WEMoEParams", "build", "build_vision", "get_method", "routing_share"]
    for name in promised:
        value = getattr(wc, name)
        assert name in wc.__all__ and (callable(value) or isinstance(value, dict)), name
    assert set(dir(wc)) >= set(promised)
    with pytest.raises(AttributeError):
        wc.no_such_name  # noqa: B018
