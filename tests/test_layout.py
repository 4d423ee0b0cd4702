"""The layout recbole_ext/__init__.py describes: each sub-package imports only the layers its __init__ names."""

import ast
import re

import pytest

from bench.layout import PACKAGE, imports

SUB_PACKAGES = sorted(p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file())
MAX_LINES = 350


def allowed(package):
    """The packages its __init__'s `May import:` line names."""
    found = re.search(
        r"^May import: (.*)\.$",
        ast.get_docstring(ast.parse((PACKAGE / package / "__init__.py").read_text())) or "",
        re.M,
    )
    assert found, f"recbole_ext/{package}/__init__.py: its docstring has no `May import: ...` line"
    named = {name.strip() for name in found.group(1).split(",")}
    return set() if named == {"nothing of recbole_ext but ConfigError"} else named


@pytest.mark.parametrize("package", SUB_PACKAGES)
def test_a_package_imports_only_the_layers_it_names(package):
    named = allowed(package)
    assert named <= set(SUB_PACKAGES), f"{package} names unknown packages: {named - set(SUB_PACKAGES)}"
    permitted = named | {package, "(root)"}  # (root): ConfigError
    wrong = [
        f"{path.relative_to(PACKAGE.parent)}:{line} imports recbole_ext.{target}"
        for path in sorted((PACKAGE / package).rglob("*.py"))
        for line, target in imports(path)
        if target not in permitted
    ]
    assert not wrong, "\n".join(wrong)


def test_the_named_layers_have_no_cycle():
    below = {package: allowed(package) for package in SUB_PACKAGES}
    order = []
    while below:
        ready = sorted(p for p, needs in below.items() if needs <= set(order))
        assert ready, f"a cycle among {sorted(below)}"
        order += ready
        for package in ready:
            del below[package]


def test_no_sub_package_imports_a_top_level_command():
    commands = {path.stem for path in PACKAGE.glob("*.py")} - {"__init__"}
    assert commands, "no top-level command modules found"
    wrong = [
        f"{path.relative_to(PACKAGE.parent)}:{line}"
        for package in SUB_PACKAGES
        for path in (PACKAGE / package).rglob("*.py")
        for line, target in imports(path)
        if target in commands
    ]
    assert not wrong, wrong


def test_no_module_is_over_the_line_limit():
    long = [
        f"{path.relative_to(PACKAGE.parent)} ({n})"
        for path in sorted(PACKAGE.rglob("*.py"))
        if (n := len(path.read_text().splitlines())) > MAX_LINES
    ]
    assert not long, f"over {MAX_LINES} lines: {', '.join(long)}"
