"""The house rules that a reader relies on: modules short enough to read in one sitting, objects whole after their
constructor."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "pipelearn"
MODULES = sorted(p for p in SRC.rglob("*.py") if not p.name.endswith("_pb2.py"))
MOST_LINES = 350
"""Past this, a module's docstring says why it is one module ("long because ...")."""


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(SRC)))
def test_a_module_is_short_or_says_why_not(path: Path) -> None:
    lines = len(path.read_text().splitlines())
    doc = ast.get_docstring(ast.parse(path.read_text())) or ""
    assert lines <= MOST_LINES or "long because" in doc, f"{lines} lines and no reason in the docstring"


def _assigned_to_self(function: ast.AST) -> set[str]:
    names = set()
    for node in ast.walk(function):
        targets = node.targets if isinstance(node, ast.Assign) else [getattr(node, "target", None)]
        for target in targets:
            for one in target.elts if isinstance(target, ast.Tuple) else [target]:
                if isinstance(one, ast.Attribute) and isinstance(one.value, ast.Name) and one.value.id == "self":
                    names.add(one.attr)
    return names


def _late_attributes(cls: ast.ClassDef) -> set[str]:
    """Attributes a class's methods set that neither its constructor nor its body declares."""
    declared = {n.target.id for n in cls.body if isinstance(n, ast.AnnAssign) and isinstance(n.target, ast.Name)}
    declared |= {t.id for n in cls.body if isinstance(n, ast.Assign) for t in n.targets if isinstance(t, ast.Name)}
    methods = [n for n in cls.body if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)]
    constructed = set().union(*(_assigned_to_self(m) for m in methods if m.name == "__init__"))
    later = set().union(*(_assigned_to_self(m) for m in methods if m.name != "__init__"))
    return later - constructed - declared


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(SRC)))
def test_every_attribute_is_first_set_in_the_constructor(path: Path) -> None:
    classes = [n for n in ast.walk(ast.parse(path.read_text())) if isinstance(n, ast.ClassDef)]
    late = {c.name: sorted(names) for c in classes if (names := _late_attributes(c))}
    assert not late, f"attributes first set outside __init__: {late}"


def test_the_rule_sees_an_attribute_set_late() -> None:
    code = (
        "class Half:\n    def __init__(self):\n        self.a = 1\n    def run(self):\n        self.a, self.b = 2, 3\n"
    )
    tree = ast.parse(code)
    assert _late_attributes(next(n for n in ast.walk(tree) if isinstance(n, ast.ClassDef))) == {"b"}
