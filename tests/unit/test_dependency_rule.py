"""The folder rule: each room of the package imports only the rooms below it, and only the
pytest layer (``hooks/``) imports pytest.

The module list is derived from the package itself, so a new module is checked the day it
is added; every import counts, at module level, inside functions and under TYPE_CHECKING.
"""

from __future__ import annotations

import ast
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import pytest_tpw

PACKAGE = Path(pytest_tpw.__file__).parent

#: What each room may import from the package, besides itself and the shared modules
#: (``errors``, ``verdict``, ``stats``: the vocabulary and the arithmetic every room uses),
#: which import only what their own rule lists. An entry with a dot is one module of a room.
ALLOWED: dict[str, set[str]] = {
    "errors": set(),
    "verdict": set(),
    "stats": {"verdict", "config"},
    "config": set(),
    "host": set(),
    "sensors": {"host"},
    "load": set(),
    "measure": {"host", "sensors", "load"},
    "store": {"config"},
    "judging": {"config", "measure", "store", "load"},
    "present": {"config", "measure", "judging", "store", "load"},
    "serving": {"host", "sensors"},
    "run": {
        "config",
        "host",
        "sensors",
        "load",
        "measure",
        "store",
        "judging",
        "present",
        "serving",
    },
    "hooks": {
        "config",
        "host",
        "sensors",
        "load",
        "measure",
        "store",
        "judging",
        "present",
        "serving",
        "run",
    },
    "cli": {"config", "host", "load", "sensors", "measure", "store", "judging", "present"},
    # the public modules users import; count warns with the plugin's typed warning, which
    # subclasses pytest's and is imported only when pytest is there
    "count": {"hooks.warning_types"},
    "prefill_decode": set(),
    "testing": {"host", "sensors", "measure"},
    "__init__": {"*"},
}
SHARED = {"errors", "verdict", "stats"}


def modules() -> list[str]:
    """Every module of the package, as dotted names."""
    found = ["pytest_tpw"]
    for info in pkgutil.walk_packages([str(PACKAGE)], prefix="pytest_tpw."):
        found.append(info.name)
    return sorted(found)


def room(module: str) -> str:
    parts = module.split(".")
    return "__init__" if len(parts) == 1 else parts[1]


def source(module: str) -> Path:
    rel = Path(*module.split(".")[1:])
    package = PACKAGE / rel / "__init__.py"
    return package if package.exists() else (PACKAGE / rel).with_suffix(".py")


def imports(module: str) -> set[str]:
    """Every module of the package, or pytest, that ``module`` imports (absolute names)."""
    tree = ast.parse(source(module).read_text(encoding="utf-8"))
    is_package = source(module).name == "__init__.py"
    here = module.split(".") if is_package else module.split(".")[:-1]
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = here[: len(here) - (node.level - 1)]
                name = ".".join([*base, *([node.module] if node.module else [])])
            else:
                name = node.module or ""
            out.add(name)
            out.update(f"{name}.{a.name}" for a in node.names)  # `from pkg import module`
    return {n for n in out if n.split(".")[0] in ("pytest_tpw", "pytest", "_pytest")}


MODULES = modules()


def test_every_module_belongs_to_a_known_room() -> None:
    unknown = sorted({room(m) for m in MODULES} - set(ALLOWED))
    assert unknown == [], f"rooms without a rule in this test: {unknown}"
    assert len(MODULES) > 40  # the walk found the package


@pytest.mark.parametrize("module", MODULES)
def test_module_imports_only_the_rooms_below_it(module: str) -> None:
    mine = room(module)
    allowed = ALLOWED[mine]
    bad = []
    for name in sorted(imports(module)):
        if name.split(".")[0] in ("pytest", "_pytest"):
            if mine != "hooks":
                bad.append(f"{name} (only hooks/ imports pytest)")
            continue
        if name == "pytest_tpw":
            continue
        target = room(name)
        if name.count(".") == 1 and target not in ALLOWED:
            continue  # an attribute of the package (`from pytest_tpw import __version__`)
        module = ".".join(name.split(".")[1:3])
        if target == mine or "*" in allowed or target in allowed or module in allowed:
            continue
        if target in SHARED and mine not in SHARED:
            continue
        bad.append(f"{name} ({mine} may import {sorted(allowed | SHARED) or 'nothing'})")
    assert bad == [], f"{module} imports: " + "; ".join(bad)


def test_the_rules_have_no_cycle() -> None:
    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        for nxt in {r.split(".")[0] for r in ALLOWED.get(start, set())} - {"*"}:
            if nxt == goal or (nxt not in seen and reaches(nxt, goal, seen | {nxt})):
                return True
        return False

    cycles = [r for r in ALLOWED if reaches(r, r, {r})]
    assert cycles == []


def test_no_module_outside_hooks_loads_pytest_when_imported() -> None:
    """Imported one after the other in a fresh interpreter: the first module whose import
    brings pytest in is named (the static check above also sees imports of third parties)."""
    plain = [m for m in MODULES if room(m) != "hooks" and not m.endswith("__main__")]
    code = (
        "import importlib, sys\n"
        f"for name in {plain!r}:\n"
        "    importlib.import_module(name)\n"
        "    bad = sorted(m for m in sys.modules if m.split('.')[0] in ('pytest', '_pytest'))\n"
        "    if bad:\n"
        "        print(name, bad[:3]); break\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_plugin_off_mode_does_not_load_the_measuring_modules() -> None:
    code = (
        "import sys, pytest, pytest_tpw.hooks.plugin; "
        "heavy = [m for m in sys.modules if m in ('numpy', 'scipy') or m.startswith("
        "('pytest_tpw.measure', 'pytest_tpw.load', 'pytest_tpw.judging', 'pytest_tpw.run', "
        "'pytest_tpw.store', "
        "'pytest_tpw.present', 'pytest_tpw.config.settings'))]; print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
