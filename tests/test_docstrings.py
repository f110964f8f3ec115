"""Every public function, class and method of harness/ and backends/ has a docstring.

Public: a module-level function or class whose name does not start with "_" (definitions inside a top-level
``if``/``try`` count too), and the methods and properties of a public class whose names do not start with "_".
Nested functions are implementation details. Dunder methods (``__init__``, ``__call__``) are covered by their
class's docstring, which is required. The check reads the sources with ``ast`` and imports nothing, so it
needs no framework.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("harness", "backends")

_DEF = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)


def _public(name: str) -> bool:
    return not name.startswith("_")


def _top_level(body: list[ast.stmt]):
    """Definitions at module level, including those inside top-level ``if``/``try`` blocks."""
    for node in body:
        if isinstance(node, _DEF):
            yield node
        elif isinstance(node, ast.If):
            yield from _top_level(node.body + node.orelse)
        elif isinstance(node, ast.Try):
            yield from _top_level(node.body + node.orelse + node.finalbody)
            for handler in node.handlers:
                yield from _top_level(handler.body)


def undocumented(source: str, filename: str = "<source>") -> list[str]:
    """``file:line qualname`` of every public definition in ``source`` without a docstring."""
    missing = []
    for node in _top_level(ast.parse(source, filename).body):
        if not _public(node.name):
            continue
        if ast.get_docstring(node) is None:
            missing.append(f"{filename}:{node.lineno} {node.name}")
        if isinstance(node, ast.ClassDef):
            for member in node.body:
                if isinstance(member, _DEF) and _public(member.name) and ast.get_docstring(member) is None:
                    missing.append(f"{filename}:{member.lineno} {node.name}.{member.name}")
    return missing


def _sources() -> list[Path]:
    return sorted(p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py") if "__pycache__" not in p.parts)


def test_every_public_function_class_and_method_has_a_docstring():
    files = _sources()
    assert len(files) > 30, f"found only {len(files)} source files under {PACKAGES}: is ROOT right?"
    missing = [m for p in files for m in undocumented(p.read_text(encoding="utf-8"), str(p.relative_to(ROOT)))]
    assert not missing, f"{len(missing)} public definition(s) without a docstring:\n" + "\n".join(missing)


def test_the_check_flags_what_it_should_and_nothing_else():
    source = '''
def bare(x):
    return x

def documented(x):
    """Has one."""
    return x

def _private(x):
    return x

def outer():
    """Has one; its nested helper is not public API."""
    def inner():
        return 1
    return inner

class Bare:
    def method(self):
        return 1

    @property
    def prop(self):
        return 1

class Documented:
    """Has one; its dunder methods need none."""

    def __init__(self):
        self.x = 1

    def __call__(self):
        return 1

    def _helper(self):
        return 1

    def public(self):
        """Has one."""

class _Private:
    def method(self):
        return 1

try:
    import json
except ImportError:
    def fallback():
        return None
'''
    found = undocumented(source, "m.py")
    assert [f.split(" ", 1)[1] for f in found] == ["bare", "Bare", "Bare.method", "Bare.prop", "fallback"]
    assert found[0] == "m.py:2 bare"  # file and line, so a failure says where to look
    assert undocumented('"""Module."""\n\ndef f():\n    """Doc."""\n') == []
