"""Project files agree with each other: pins, CI entry point, README, .gitignore, the import rule, JupyterLab."""
from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
KEY_PINS = {"torch": "2.14.1", "torchvision": "0.29.1", "jupyter-book": "1.0.4.post1"}


def normalise(requirement: str) -> str:
    return requirement.replace(" ", "").lower()


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pins(requirements) -> dict[str, str]:
    """{canonical name: version} of ``name==version`` lines (comments, options and blanks skipped)."""
    found = {}
    for line in requirements:
        line = line.split("#", 1)[0].strip()
        match = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)(\[[^\]]*\])?\s*==\s*([^\s;]+)", line)
        if match:
            found[canonical(match.group(1))] = match.group(3)
    return found


def pyproject_requirements() -> list[str]:
    return PYPROJECT["project"]["dependencies"] + PYPROJECT["project"]["optional-dependencies"]["dev"]


def environment_requirements() -> list[str]:
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip = [d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d]
    assert len(pip) == 1, "environment.yml needs exactly one pip: list"
    return pip[0]


def test_environment_yml_matches_pyproject():
    ours = {normalise(r) for r in pyproject_requirements()}
    theirs = {normalise(r) for r in environment_requirements()}
    assert ours == theirs, (f"only in pyproject.toml: {sorted(ours - theirs)}; "
                            f"only in environment.yml: {sorted(theirs - ours)}")


@pytest.mark.parametrize("source", ["pyproject.toml", "environment.yml", "constraints.txt"])
def test_key_pins(source: str):
    requirements = {"pyproject.toml": pyproject_requirements, "environment.yml": environment_requirements,
                    "constraints.txt": lambda: (ROOT / "constraints.txt").read_text().splitlines()}[source]()
    found = pins(requirements)
    for name, version in KEY_PINS.items():
        assert found.get(name) == version, f"{source}: {name}=={found.get(name)}, expected {version}"


def test_every_pin_is_in_constraints():
    constraints = pins((ROOT / "constraints.txt").read_text().splitlines())
    top = pins(pyproject_requirements())
    assert len(top) == len(pyproject_requirements()), "every dependency in pyproject.toml is pinned with =="
    wrong = {name: (version, constraints.get(name)) for name, version in top.items()
             if constraints.get(name) != version}
    assert not wrong, f"pyproject pin != constraints.txt (pyproject, constraints): {wrong}"


def test_python_version_matches():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    assert "python=3.11" in env["dependencies"]
    assert PYPROJECT["project"]["requires-python"].startswith(">=3.11")
    assert sys.version_info[:2] == (3, 11)


def test_ci_runs_make_test():
    script = (ROOT / ".ci" / "run").read_text()
    commands = [line.split("#", 1)[0].strip() for line in script.splitlines()]
    assert any(re.fullmatch(r"(exec\s+)?make\s+test(\s.*)?", c) for c in commands), ".ci/run must call `make test`"


def test_readme_names_the_commands():
    readme = ROOT / "README.md"
    assert readme.is_file(), "README.md is missing"
    text = readme.read_text(encoding="utf-8")
    for command in ("make book", "make test", "make lab"):
        assert command in text, f"README.md does not mention `{command}`"


@pytest.mark.parametrize("path", ["runs/abc/metrics.json", "_build/site/index.html", ".venv/bin/python",
                                  "book/part0/distillation.ipynb", "scratch.ipynb"])
def test_gitignore(path: str):
    result = subprocess.run(["git", "check-ignore", "--no-index", "-q", path], cwd=ROOT)
    assert result.returncode == 0, f".gitignore does not ignore {path}"


def test_gitignore_lines():
    lines = {line.strip() for line in (ROOT / ".gitignore").read_text().splitlines()}
    for pattern in ("runs/", "_build/", ".venv/", "*.ipynb"):
        assert pattern in lines or pattern.rstrip("/") in lines or "/" + pattern in lines, pattern


# ------------------------------------------------------------------------------------------------ imports

FORBIDDEN = ("kdnb.distill", "kdnb.explain", "kdnb.concepts", "kdnb.runs", "kdnb.train")


def package_of(path: Path) -> str:
    """The package a module file's relative imports start from (``kdnb.data`` for kdnb/data/x.py)."""
    module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
    return module.removesuffix(".__init__") if path.name == "__init__.py" else module.rsplit(".", 1)[0]


def imported_modules(source: str, package: str) -> list[tuple[int, str]]:
    """Absolute names of every module ``source`` imports, relative imports resolved from ``package``; for
    ``from X import a`` both ``X`` and ``X.a``; also ``importlib.import_module("...")`` with a literal."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = parts[:len(parts) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            found.append((node.lineno, module))
            found += [(node.lineno, f"{module}.{alias.name}") for alias in node.names]
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) \
                == "import_module" and node.args and isinstance(node.args[0], ast.Constant):
            found.append((node.lineno, str(node.args[0].value)))
    return found


def test_import_checker_resolves_relative_imports():
    source = "from ..distill import KD\nfrom .. import runs\nfrom . import subsets\nimport kdnb.train\n"
    names = {name for _, name in imported_modules(source, "kdnb.data")}
    assert {"kdnb.distill", "kdnb.runs", "kdnb.data.subsets", "kdnb.train"} <= names
    assert package_of(ROOT / "kdnb" / "data" / "__init__.py") == "kdnb.data"
    assert package_of(ROOT / "kdnb" / "data" / "files.py") == "kdnb.data"


def assert_imports_none_of(package: str, forbidden: tuple[str, ...]) -> None:
    """No module under kdnb/<package> imports any of ``forbidden`` (or their submodules), anywhere in its source."""
    files = sorted((ROOT / "kdnb" / package).rglob("*.py"))
    assert files
    bad = [f"{f.relative_to(ROOT)}:{line}: {name}" for f in files
           for line, name in imported_modules(f.read_text(encoding="utf-8"), package_of(f))
           if any(name == m or name.startswith(m + ".") for m in forbidden)]
    assert not bad, f"kdnb/{package} must not import {', '.join(forbidden)}:\n" + "\n".join(bad)


@pytest.mark.parametrize("layer", ["data", "models"])
def test_lower_layers_do_not_import_upper_ones(layer: str):
    assert_imports_none_of(layer, FORBIDDEN)


# ---------------------------------------------------------------------------------------------- JupyterLab

def jupytext_labextension() -> Path:
    found = sorted((Path(sys.prefix) / "share" / "jupyter" / "labextensions").glob("jupyterlab-jupytext*"))
    assert found, "the jupytext labextension is not installed in this environment"
    return found[0]


def test_lab_overrides_open_markdown_as_notebooks():
    overrides = json.loads((ROOT / ".jupyter-lab-overrides.json").read_text())
    viewers = overrides["@jupyterlab/docmanager-extension:plugin"]["defaultViewers"]
    assert viewers.get("markdown") == "Jupytext Notebook"

    # The same setting `jupytext-config set-default-viewer` writes for these document types.
    from jupytext_config.labconfig import LabConfig

    config = LabConfig(settings_file=Path("/nonexistent/overrides.json"))
    config.set_default_viewers(list(viewers))
    assert config.config == {"@jupyterlab/docmanager-extension:plugin": {"defaultViewers": viewers}}
    assert set(viewers) <= set(LabConfig.DOCTYPES)


def test_lab_viewer_name_is_registered_by_jupytext():
    """The labextension registers its widget factory under this name (``FACTORY = "Jupytext Notebook"`` in
    its bundled JavaScript); a renamed factory would make the override point at nothing."""
    overrides = json.loads((ROOT / ".jupyter-lab-overrides.json").read_text())
    names = set(overrides["@jupyterlab/docmanager-extension:plugin"]["defaultViewers"].values())
    factories = set()
    for script in (jupytext_labextension() / "static").glob("*.js"):
        factories |= set(re.findall(r'FACTORY\s*=\s*"([^"]+)"', script.read_text(encoding="utf-8",
                                                                                    errors="replace")))
    assert factories, "no FACTORY name found in the jupytext labextension"
    assert names <= factories, f"viewers {names} not among the jupytext factories {factories}"


def test_make_lab_installs_the_overrides_where_lab_reads_them():
    makefile = (ROOT / "Makefile").read_text()
    assert "cp .jupyter-lab-overrides.json $(VENV)/share/jupyter/lab/settings/overrides.json" in makefile


def kdnb_import_graph() -> dict[str, set[str]]:
    """Module -> the kdnb modules it imports anywhere in its source (function-level imports included): a package
    stands for its ``__init__``; ``from P import x`` names the module P.x where that is a module, else P."""
    files = {".".join(f.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__"): f
             for f in (ROOT / "kdnb").rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for module, path in files.items():
        names = {name for _, name in imported_modules(path.read_text(encoding="utf-8"), package_of(path))}
        targets = set()
        for name in names:
            while name and name not in files:
                name = name.rpartition(".")[0]
            if name and name != module:
                targets.add(name)
        # "from P import x" yields both P and P.x: keep P only when no x of it is a module.
        graph[module] = {t for t in targets if not any(o.startswith(t + ".") for o in targets)
                         or t == "kdnb"}
    return graph


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module, except a package looping with its own
    submodules (its __init__ gathers them)."""
    index, low, stack, on_stack, cycles = {}, {}, [], set(), []

    def visit(node: str) -> None:  # Tarjan's strongly connected components
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for succ in graph.get(node, ()):
            if succ not in index:
                visit(succ)
                low[node] = min(low[node], low[succ])
            elif succ in on_stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            component = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.add(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)

    def own_package_loop(component: list[str]) -> bool:
        packages = [m for m in component if any(o.startswith(m + ".") for o in component)]
        return len(packages) == 1 and all(m == packages[0] or m.startswith(packages[0] + ".") for m in component) \
            and packages[0] != "kdnb"

    return [c for c in cycles if not own_package_loop(c)]


def test_cycle_finder_on_a_made_up_graph():
    graph = {"kdnb.a": {"kdnb.b"}, "kdnb.b": {"kdnb.a"}, "kdnb.p": {"kdnb.p.x"}, "kdnb.p.x": {"kdnb.p"},
             "kdnb.c": {"kdnb.d"}, "kdnb.d": {"kdnb.e"}, "kdnb.e": {"kdnb.c"}, "kdnb.f": {"kdnb.a"}}
    assert sorted(import_cycles(graph)) == [["kdnb.a", "kdnb.b"], ["kdnb.c", "kdnb.d", "kdnb.e"]]


def test_no_import_cycles_between_kdnb_modules():
    """The import graph is one-directional (chapters -> public API -> internals): no module reaches itself
    (e.g. the runner and the generated pages: both read kdnb.book_layout; only the runner imports the pages)."""
    bad = import_cycles(kdnb_import_graph())
    assert not bad, "import cycles: " + "; ".join(" <-> ".join(c) for c in bad)
    graph = kdnb_import_graph()
    assert "kdnb.book_pages" in graph["kdnb.notebooks"] and "kdnb.notebooks" not in graph["kdnb.book_pages"]


@pytest.mark.parametrize("library", ["distill", "explain", "concepts", "analysis"])
def test_libraries_know_nothing_of_chapters_or_studies(library: str):
    """Issue 13: the libraries know nothing of chapters; each part's study lives in kdnb/studies/ and calls them."""
    assert_imports_none_of(library, ("kdnb.studies", "kdnb.recipes", "kdnb.notebooks", "kdnb.book_pages",
                                      "kdnb.book_layout"))
