"""The package's layout stays readable (README, "Architecture"): read from the source, without importing it.

- no module imports more than MAX_IMPORTS of the package's others (imports inside functions count too);
- no class is longer than MAX_CLASS_LINES;
- imports go one way: no two modules reach each other;
- each concept is defined in one file named for it, and nowhere else;
- the objective and the tiling know nothing of Lightning, and tiling.py never imports the objective.
"""

from __future__ import annotations

import ast

import pytest
from helpers import REPO

PACKAGE = REPO / "nst_pl"
MAX_IMPORTS = 7
MAX_CLASS_LINES = 250
# concept -> (its file, names defined there and in no other file)
CONCEPTS = {
    "config lookup": ("config_files.py", ["resolve_config", "bundled_configs", "config_values", "CONFIGS_DIR"]),
    "signals": ("signals.py", ["stopped_by_signals"]),
    "schedule": ("schedule.py", ["Schedule"]),
    "tiling": ("tiling.py", ["plan_tiles", "tiles_of", "measure_tiles", "two_pass"]),
    "weights": ("extractors/weights.py", ["load_weights", "weights_member", "guess_architecture"]),
    "errors": ("errors.py", ["NSTError", "debug", "error_paragraph"]),
}


def _modules() -> dict[str, ast.Module]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        name = ".".join(path.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__")
        out[name] = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    return out


def _imports(name: str, tree: ast.Module) -> set[str]:
    """The package's modules that `name` imports anywhere in its source (relative imports resolved)."""
    package = name if name.count(".") and (PACKAGE / f"{name.split('.', 1)[1]}/__init__.py").exists() else None
    base = (package or name.rsplit(".", 1)[0]).split(".")
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                parts = base[: len(base) - node.level + 1] + ([node.module] if node.module else [])
                found.add(".".join(parts))
            elif node.module == "nst_pl":  # `from nst_pl import losses`
                found |= {f"nst_pl.{a.name}" for a in node.names}
            elif node.module and node.module.split(".")[0] == "nst_pl":
                found.add(node.module)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "nst_pl"}
    return found - {name}


def _circles(imports: dict[str, set[str]]) -> list[str]:
    """Every pair of modules that reach each other through their imports."""

    def reach(start: str) -> set[str]:
        seen, todo = set(), [start]
        while todo:
            for dep in imports.get(todo.pop(), ()):
                if dep not in seen:
                    seen.add(dep)
                    todo.append(dep)
        return seen

    reached = {name: reach(name) for name in imports}
    return sorted(f"{a} <-> {b}" for a in imports for b in reached[a] if a < b and a in reached.get(b, ()))


MODULES = _modules()
IMPORTS = {name: _imports(name, tree) for name, tree in MODULES.items()}


def test_the_measure_sees_the_packages_imports():
    assert IMPORTS["nst_pl.fit"] >= {"nst_pl.module", "nst_pl.signals"}
    assert "nst_pl.extractors.base" in IMPORTS["nst_pl.extractors.vgg"]  # `from .base import …`
    assert "nst_pl.extractors.reach" in IMPORTS["nst_pl.extractors.base"]


@pytest.mark.parametrize("name", sorted(MODULES))
def test_no_module_imports_more_than_a_few_others(name):
    assert len(IMPORTS[name]) <= MAX_IMPORTS, sorted(IMPORTS[name])


def test_no_class_is_long():
    sizes = {
        f"{name}.{node.name}": node.end_lineno - node.lineno + 1
        for name, tree in MODULES.items()
        for node in ast.walk(tree)
        if isinstance(node, ast.ClassDef)
    }
    assert max(sizes.values()) <= MAX_CLASS_LINES, sorted(sizes.items(), key=lambda kv: -kv[1])[:3]


def test_imports_go_one_way():
    assert not _circles(IMPORTS), _circles(IMPORTS)


@pytest.mark.parametrize("concept", sorted(CONCEPTS))
def test_each_concept_lives_in_one_file_named_for_it(concept):
    home, names = CONCEPTS[concept]
    defined = {
        (name, target.id if isinstance(target, ast.Name) else getattr(target, "name", None))
        for name, tree in MODULES.items()
        for node in tree.body
        for target in (node.targets if isinstance(node, ast.Assign) else [node])
    }
    module = "nst_pl." + home.removesuffix(".py").replace("/", ".")
    for wanted in names:
        homes = sorted(name for name, defined_name in defined if defined_name == wanted)
        assert homes == [module], (wanted, homes)


@pytest.mark.parametrize("name", ["nst_pl.objective", "nst_pl.tiling", "nst_pl.losses"])
def test_the_maths_knows_nothing_of_lightning(name):
    libraries = {
        (node.module or "").split(".")[0] if isinstance(node, ast.ImportFrom) else alias.name.split(".")[0]
        for node in ast.walk(MODULES[name])
        if isinstance(node, (ast.Import, ast.ImportFrom))
        for alias in node.names
    }
    assert not libraries & {"pytorch_lightning", "lightning", "lightning_fabric"}, libraries
    assert "nst_pl.objective" not in IMPORTS["nst_pl.tiling"]


def test_the_measures_can_fail():
    # An import inside a function, a relative one and eight others are all seen; a circle through a third module too.
    source = "def f():\n    from nst_pl.fit import make_cli\n" + "".join(f"import nst_pl.m{i}\n" for i in range(8))
    found = _imports("nst_pl.extractors.vgg", ast.parse(source + "from .base import FeatureExtractor\n"))
    assert {"nst_pl.fit", "nst_pl.extractors.base"} <= found and len(found) > MAX_IMPORTS
    assert _circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a <-> b", "a <-> c", "b <-> c"]
